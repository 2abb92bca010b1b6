"""A search interrupted after its first trial resumes, instead of starting over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import make_table


def completed_trials(out: Path) -> dict[str, float]:
    done = {}
    for path in (out / "tuner").glob("trial_*/trial.json"):
        try:
            trial = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue  # being written
        if trial.get("status") == "COMPLETED":
            done[trial["trial_id"]] = path.stat().st_mtime_ns
    return done


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "crash"])
def test_interrupted_search_resumes_to_the_asked_number_of_trials(tmp_path, sig):
    data = tmp_path / "data.csv"
    make_table(600, "binary").to_csv(data, index=False)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "autodl.cli", "fit", str(data), "--target", "y", "--out", str(out),
        "--max-trials", "3", "--max-epochs", "30", "--cv", "0", "--ensemble", "1", "--quiet",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # A shell that started pytest in the background may have set SIGINT to "ignore", and
    # children inherit that; give the fit the default disposition a terminal user has.
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not completed_trials(out):
        time.sleep(0.05)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    first = completed_trials(out)
    assert len(first) >= 1 and len(first) < 3
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] in ("running", "interrupted")  # SIGKILL leaves "running"
    assert not (out / "model.keras").exists()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and manifest["status"] == "interrupted"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["search"]["trials"] == 3 and manifest["search"]["completed"] == 3
    # The trials finished before the interruption were kept, not run again.
    after = completed_trials(out)
    for trial_id, mtime in first.items():
        assert after[trial_id] == mtime

"""The run directory: one folder per fit, described by ``run.json``.

Layout::

    runs/<name>/
      run.json            manifest: status, schema, split, search, metrics, timings, versions
      model.keras         the final model (written last, atomically)
      leaderboard.csv     one row per trial, best first
      test_predictions.csv
      split.npz           row indices of train / valid / test (what a resume reuses)
      tuner/              keras-tuner's project: oracle state and trial checkpoints

``model.keras`` only ever appears complete: it is written to a temporary file
and renamed, and ``run.json`` says ``"status": "complete"`` only after it, so a
crashed fit never leaves a model that ``predict`` would load.

Example:

>>> import tempfile
>>> run = RunDir(tempfile.mkdtemp())
>>> run.write_manifest({"status": "running"})
>>> run.read_manifest()["status"]
'running'
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from autodl.errors import RunError

MANIFEST = "run.json"
MODEL = "model.keras"
LEADERBOARD = "leaderboard.csv"
TEST_PREDICTIONS = "test_predictions.csv"
VALID_PREDICTIONS = "valid_predictions.csv"
SPLIT = "split.npz"
TUNER = "tuner"


class RunDir:
    """Paths and safe writes for one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    manifest_path = property(lambda self: self.path / MANIFEST)
    model_path = property(lambda self: self.path / MODEL)
    leaderboard_path = property(lambda self: self.path / LEADERBOARD)
    predictions_path = property(lambda self: self.path / TEST_PREDICTIONS)
    # The shipped configuration's held-out predictions (validation rows, or out-of-fold under CV).
    valid_predictions_path = property(lambda self: self.path / VALID_PREDICTIONS)
    split_path = property(lambda self: self.path / SPLIT)
    tuner_dir = property(lambda self: self.path / TUNER)

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Removes everything a previous fit left (``--overwrite``)."""
        if self.path.exists():
            shutil.rmtree(self.path)
        self.create()

    def read_manifest(self) -> dict[str, Any]:
        if not self.path.is_dir():
            raise RunError(f"run directory '{self.path}' does not exist; pass the folder that 'autodl fit' wrote")
        if not self.manifest_path.exists():
            raise RunError(f"'{self.path}' is not an autodl run (no {MANIFEST}); pass the folder that 'autodl fit' wrote")
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(
                f"{self.manifest_path} is corrupted ({e.__class__.__name__}: {str(e).splitlines()[0]}); "
                "re-run 'autodl fit' with --overwrite"
            ) from None
        if not isinstance(manifest, dict) or "status" not in manifest:
            raise RunError(f"{self.manifest_path} is not an autodl manifest; re-run 'autodl fit' with --overwrite")
        return manifest

    def read_complete_manifest(self) -> dict[str, Any]:
        """The manifest of a finished run, or a RunError saying why it is not usable."""
        manifest = self.read_manifest()
        if manifest["status"] != "complete":
            raise RunError(
                f"run '{self.path}' did not finish (status: {manifest['status']}); "
                "run the same 'autodl fit' command again to resume it"
            )
        for key in ("schema", "task", "final_model"):
            if key not in manifest:
                raise RunError(f"{self.manifest_path} lacks '{key}'; re-run 'autodl fit' with --overwrite")
        if not self.model_path.exists():
            raise RunError(f"run '{self.path}' has no {MODEL}; re-run 'autodl fit' with --overwrite")
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_path, manifest)

    def record_stop(self, manifest: dict[str, Any], exc: BaseException) -> None:
        """Writes why a run stopped (``interrupted`` after Ctrl-C, else ``failed``) into ``manifest`` and ``run.json``."""
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        manifest.update(status=status, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        self.write_manifest(manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.read_manifest() if self.exists() else {}
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


def write_json(path: Path, obj: Any) -> None:
    """Atomically writes ``obj`` as indented JSON (numpy scalars and arrays, paths allowed)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Calls ``write(tmp_path)`` then renames into place, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays appear in metrics and configs.
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__}")

"""``autodl fit --sensitive`` and ``autodl audit``: audit.json, the verdict, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autodl.cli import main
from tests.conftest import make_table


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit")
    df = make_table(600, seed=3)
    rng = np.random.default_rng(3)
    # "group" follows x1 (which drives the target): a disparity planted through a proxy;
    # "coin" is independent of everything.
    df["group"] = np.where(df["x1"] + rng.normal(scale=0.3, size=len(df)) > 0, "g1", "g2")
    df["coin"] = rng.choice(["h", "t"], size=len(df))
    csv = tmp / "data.csv"
    df.to_csv(csv, index=False)
    run = tmp / "run"
    code = main(["fit", str(csv), "--target", "y", "--max-trials", "1", "--max-epochs", "5", "--cv", "0",
                 "--out", str(run), "--sensitive", "group,coin", "--quiet"])
    assert code == 0
    return run, csv


def test_fit_writes_the_audit_and_keeps_sensitive_columns_out(fitted):
    run, _ = fitted
    manifest = json.loads((run / "run.json").read_text())
    assert {c["name"]: c["kind"] for c in manifest["schema"]["columns"]}["group"] == "drop"
    assert manifest["audit"]["verdict"] == "fail"
    audit = json.loads((run / "audit.json").read_text())
    assert set(audit["columns"]) == {"group", "coin", "group & coin"}
    assert audit["columns"]["group"]["headline"]["demographic_parity_ratio"]["value"] < 0.8
    assert audit["proxies"]["group"][0]["feature"] == "x1"


def test_audit_command_and_fail_on_violation(fitted, capsys):
    run, csv = fitted
    assert main(["audit", str(run), str(csv), "--sensitive", "coin", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "demographic" in out and "verdict" in out and "possible proxies for coin" in out
    assert json.loads((run / "audit.json").read_text())["verdict"] in ("pass", "warn")
    assert main(["audit", str(run), str(csv), "--sensitive", "group", "--bootstrap", "20", "--fail-on-violation"]) == 1
    assert main(["audit", str(run), str(csv), "--sensitive", "coin", "--bootstrap", "0", "--fail-on-violation"]) == 0


@pytest.mark.parametrize("args, message", [
    (["--sensitive", "gender"], "sensitive column 'gender' is not in the data"),
    (["--sensitive", "coin", "--positive", "maybe"], "--positive 'maybe' is not a class"),
])
def test_audit_bad_input(fitted, capsys, args, message):
    run, csv = fitted
    assert main(["audit", str(run), str(csv), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_fit_rejects_a_one_valued_sensitive_column(tmp_path, capsys):
    df = make_table(100)
    df["const"] = "same"
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    assert main(["fit", str(csv), "--target", "y", "--sensitive", "const", "--out", str(tmp_path / "r")]) == 2
    assert "single value" in capsys.readouterr().err

"""The fairness audit of exported TFLite variants: in the export report, RUN/audit.json and ``autodl audit``.

One small run (fit with ``--sensitive g --export tflite --quantize all``) is shared by
every test; the group column ``g`` follows ``x1``, which drives the target, so the
audit has a disparity to compare across variants.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from autodl.cli import main
from tests.conftest import make_table

VARIANTS = ["float32", "float16", "dynamic", "int8"]
TITLE = "audit of the exported TFLite variants on the same rows"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit_variants")
    df = make_table(800, seed=5)
    rng = np.random.default_rng(5)
    df["g"] = np.where(df["x1"] + rng.normal(scale=0.5, size=len(df)) > 0, "a", "b")
    assert df["g"].value_counts().min() >= 60
    csv = tmp / "data.csv"
    df.to_csv(csv, index=False)
    run = tmp / "run"
    code = main(["fit", str(csv), "--target", "y", "--max-trials", "1", "--max-epochs", "3", "--cv", "0",
                 "--ensemble", "1", "--out", str(run), "--sensitive", "g", "--quiet",
                 "--export", "tflite", "--quantize", "all"])
    assert code == 0
    return run, csv


def test_export_report_and_audit_json_cover_every_variant(exported, capsys):
    from autodl.cli import _print_export

    run, _ = exported
    report = json.loads((run / "export" / "report.json").read_text())
    assert report["audit"]["sensitive"] == ["g"]
    rows = {r["model"]: r for r in report["audit"]["comparison"]}
    assert list(rows) == ["keras"] + [f"tflite {v}" for v in VARIANTS]
    # The float32 conversion makes the Keras model's decisions, so its audit is the Keras one.
    if report["tflite"]["variants"]["float32"]["label_agreement"] == 1.0:
        for key, value in rows["keras"].items():
            if isinstance(value, float):
                assert rows["tflite float32"][key] == pytest.approx(value, abs=1e-6), key
    assert rows["keras"]["accuracy"] == pytest.approx(report["keras"]["accuracy"], abs=1e-9)

    audit = json.loads((run / "audit.json").read_text())
    assert set(audit["variants"]) == set(VARIANTS)
    assert audit["variants_comparison"] == report["audit"]["comparison"]
    # The fit's own audit (with its bootstrap intervals) is left as it was.
    manifest = json.loads((run / "run.json").read_text())
    assert audit["verdict"] == manifest["audit"]["verdict"]
    assert audit["columns"]["g"]["headline"]["demographic_parity_difference"]["ci95"] is not None
    assert audit["variants"]["int8"]["columns"]["g"]["headline"]["demographic_parity_difference"]["ci95"] is None

    _print_export(report)
    out = capsys.readouterr().out
    assert "fairness audit of the TFLite variants" in out and "int8" in out


def test_export_to_another_folder_still_updates_the_run_audit(exported, tmp_path):
    run, _ = exported
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["export", str(copy), "--out", str(tmp_path / "elsewhere"), "--format", "tflite",
                 "--quantize", "none", "--json"]) == 0
    audit = json.loads((copy / "audit.json").read_text())
    assert set(audit["variants"]) == {"float32"}
    assert [r["model"] for r in audit["variants_comparison"]] == ["keras", "tflite float32"]


def test_audit_command_audits_the_bundle_variants(exported, capsys):
    run, csv = exported
    assert main(["audit", str(run), str(csv), "--sensitive", "g", "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "fairness audit" in out and TITLE in out and "int8" in out
    audit = json.loads((run / "audit.json").read_text())
    assert audit["rows"] == 800 and set(audit["variants"]) == set(VARIANTS)
    rows = audit["variants_comparison"]
    assert [r["model"] for r in rows] == ["keras"] + [f"tflite {v}" for v in VARIANTS]
    assert rows[0]["accuracy"] == audit["overall"]["accuracy"]
    assert all(r["verdict"] in ("pass", "warn", "fail") for r in rows)


@pytest.mark.parametrize("where, message", [("missing", "does not exist"), ("empty", "holds no model_<variant>.tflite")])
def test_audit_with_a_bad_bundle(exported, tmp_path, capsys, where, message):
    run, csv = exported
    bundle = tmp_path / where
    if where == "empty":
        bundle.mkdir()
    assert main(["audit", str(run), str(csv), "--sensitive", "g", "--bundle", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

"""``autodl export`` and ``autodl fit --export``: outputs, the table, and every bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autodl.cli import main
from tests.export.test_edge import fit_run


@pytest.fixture(scope="module")
def run_csv(tmp_path_factory):
    return fit_run(tmp_path_factory.mktemp("export_cli"), "binary", n=200)


def test_export_both_formats(run_csv, tmp_path, capsys):
    run, _ = run_csv
    out = tmp_path / "out"
    code = main(["export", str(run), "--out", str(out), "--name", "adult", "--version", "3", "--quantize", "dynamic"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert (out / "serving" / "adult" / "3" / "saved_model.pb").exists()
    assert (out / "serving" / "adult" / "3" / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert (out / "edge" / "model_dynamic.tflite").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["serving"]["max_abs_diff"] <= 1e-5
    assert set(report["tflite"]["variants"]) == {"float32", "dynamic"}
    assert "dynamic" in captured.out and "adult/3" in captured.out and "edge bundle:" in captured.out
    # A new version goes next to the first; the same version again is refused.
    assert main(["export", str(run), "--out", str(out), "--name", "adult", "--version", "4", "--format", "serving"]) == 0
    assert (out / "serving" / "adult" / "4" / "saved_model.pb").exists()
    code = main(["export", str(run), "--out", str(out), "--name", "adult", "--version", "4", "--format", "serving"])
    assert code == 2
    assert "version 4 of 'adult' already exists" in capsys.readouterr().err
    assert (out / "serving" / "adult" / "4" / "saved_model.pb").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "onnx"], "unknown export format 'onnx'"),
        (["--quantize", "int4"], "unknown --quantize mode 'int4'"),
        (["--version", "0"], "--version must be a positive"),
        (["--prune", "1.5"], "--prune takes the fraction"),
        (["--format", "serving", "--qat"], "add --format tflite"),
    ],
)
def test_bad_options(run_csv, tmp_path, capsys, args, message):
    run, _ = run_csv
    assert main(["export", str(run), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unknown_run_and_missing_model(run_csv, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run, _ = run_csv
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "model.keras").unlink()
    assert main(["export", str(broken)]) == 2
    assert "has no model.keras" in capsys.readouterr().err


def test_existing_bundle_needs_overwrite(run_csv, tmp_path, capsys):
    run, _ = run_csv
    out = tmp_path / "out"
    args = ["export", str(run), "--out", str(out), "--format", "tflite", "--quantize", "none"]
    assert main(args) == 0
    before = (out / "edge" / "model_float32.tflite").read_bytes()
    assert main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "edge" / "model_float32.tflite").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_failed_export_leaves_nothing_behind(run_csv, tmp_path, capsys, monkeypatch):
    from autodl.errors import RunError
    from autodl.export import tflite

    def broken(*_, **__):
        raise RunError("TFLite conversion (int8) failed: simulated")

    monkeypatch.setattr(tflite, "convert", broken)
    run, _ = run_csv
    out = tmp_path / "out"
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert "simulated" in capsys.readouterr().err
    assert not (out / "edge").exists() and not (out / "serving").exists()
    assert not list(out.glob(".staging-*"))


def test_moved_training_data_is_named(run_csv, tmp_path, capsys):
    run, csv = run_csv
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "run.json").read_text())
    manifest["data"]["source"] = str(tmp_path / "gone.csv")
    (copy / "run.json").write_text(json.dumps(manifest))
    assert main(["export", str(copy), "--format", "serving"]) == 2
    assert "pass it with --data FILE" in capsys.readouterr().err
    assert main(["export", str(copy), "--format", "serving", "--data", str(csv)]) == 0


def test_fit_with_export(tmp_path, capsys):
    from tests.conftest import make_table

    csv = tmp_path / "data.csv"
    make_table(200).to_csv(csv, index=False)
    run = tmp_path / "run"
    code = main(["fit", str(csv), "--target", "y", "--max-trials", "1", "--max-epochs", "2", "--cv", "0",
                 "--out", str(run), "--export", "serving,tflite", "--quantize", "int8", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (run / "export" / "edge" / "model_int8.tflite").exists()
    assert (run / "export" / "serving" / "model" / "1" / "saved_model.pb").exists()


def test_fit_rejects_a_bad_export_before_searching(tmp_path, capsys):
    from tests.conftest import make_table

    csv = tmp_path / "data.csv"
    make_table(100).to_csv(csv, index=False)
    assert main(["fit", str(csv), "--target", "y", "--out", str(tmp_path / "run"), "--export", "tflite", "--quantize", "int3"]) == 2
    assert "unknown --quantize mode" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()

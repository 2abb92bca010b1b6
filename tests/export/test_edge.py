"""The edge path: graph split, LiteRT variants, the bundle, and its runner without TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import make_table

TOOLS = Path(sys.executable).parent


def fit_run(tmp: Path, task: str, n: int = 300) -> tuple[Path, Path]:
    from autodl.api import AutoModel

    csv = tmp / f"{task}.csv"
    make_table(n, task=task, text=True).to_csv(csv, index=False)
    run = tmp / f"run_{task}"
    AutoModel(target="y", max_trials=1, max_epochs=3, cv=0, ensemble=1, out=run, verbosity=0).fit(str(csv))
    return run, csv


@pytest.fixture(scope="module")
def binary_export(tmp_path_factory):
    from autodl.export.pipeline import ExportOptions, export_run

    tmp = tmp_path_factory.mktemp("edge_binary")
    run, csv = fit_run(tmp, "binary")
    report = export_run(run, ExportOptions(formats=("tflite",), quantize="all"))
    return run, csv, report


def test_split_moves_non_builtin_layers_to_the_runner(binary_export):
    import keras

    from autodl.api import AutoModel
    from autodl.export.graph import split_for_edge

    run, _, _ = binary_export
    edge = split_for_edge(AutoModel.load(run).model)
    assert sorted(s.op for s in edge.host_steps) == ["integer_lookup", "numeric", "tfidf"]
    numeric = next(s for s in edge.host_steps if s.op == "numeric")
    assert [(c["column"], c["kind"]) for c in numeric.params["columns"]] == [
        ("x1", "numeric"), ("x2", "numeric"), ("day", "datetime")]
    assert numeric.params["missing"] == [1]  # x2 has missing values
    kinds = {type(layer).__name__ for layer in edge.model.layers}
    assert not kinds & {"IntegerLookup", "TextVectorization", "DateTimeParts", "StringLookup", "QuantileTransform"}
    assert edge.raw_columns == ["city"]
    assert isinstance(edge.model, keras.Model)


def test_runner_steps_match_the_keras_layers(binary_export):
    import keras

    from autodl.api import AutoModel
    from autodl.edge import autodl_edge
    from autodl.export.graph import split_for_edge

    run, _, _ = binary_export
    model = AutoModel.load(run).model
    steps = {s.op: s for s in split_for_edge(model).host_steps}
    texts = ["Great, GREAT nice!", "", "zzz unknown-word meh", "bad\tbad  poor"]
    tfidf = model.get_layer("review_tfidf")
    np.testing.assert_allclose(
        autodl_edge.tfidf(texts, steps["tfidf"].params["vocabulary"], steps["tfidf"].params["idf"], steps["tfidf"].params["ngrams"]),
        keras.ops.convert_to_numpy(tfidf(np.array(texts))), rtol=1e-6)
    ints = np.array([1, 2, 4, 99, np.iinfo(np.int64).min])
    np.testing.assert_array_equal(
        autodl_edge.integer_lookup(ints, steps["integer_lookup"].params["vocabulary"]),
        keras.ops.convert_to_numpy(model.get_layer("rooms_lookup")(ints)))
    seconds = autodl_edge.epoch_seconds(["2024-02-29", "1999-12-31T23:59:59", None, "not a date"])
    parts = model.get_layer("day_parts")(seconds)
    np.testing.assert_array_equal(autodl_edge.datetime_parts(seconds), keras.ops.convert_to_numpy(parts))


def test_variants_are_checked_and_reported(binary_export):
    run, _, report = binary_export
    variants = report["tflite"]["variants"]
    assert set(variants) == {"float32", "float16", "dynamic", "int8"}
    assert variants["float32"]["max_abs_diff"] <= 1e-5
    assert variants["float16"]["label_agreement"] >= 0.97
    assert variants["dynamic"]["label_agreement"] >= 0.95
    assert variants["int8"]["label_agreement"] >= 0.85
    assert variants["int8"]["size_bytes"] < variants["float32"]["size_bytes"] / 2.5
    for v in variants.values():
        assert v["latency_ms"] > 0 and v["throughput_rows_per_s"] > 0
    bundle = Path(report["tflite"]["path"])
    assert {p.name for p in bundle.iterdir()} >= {
        "model.tflite", "model_int8.tflite", "schema.json", "labels.json", "autodl_edge.py", "README.md"}
    assert json.loads((run / "export" / "report.json").read_text())["tflite"]["default_variant"] in variants
    assert not list((run / "export").glob(".staging-*"))


def test_builtin_ops_only(binary_export):
    from tensorflow.lite.python import analyzer

    _, _, report = binary_export
    bundle = Path(report["tflite"]["path"])
    for path in bundle.glob("model_*.tflite"):
        text = analyzer.ModelAnalyzer.analyze(model_path=str(path), gpu_compatibility=False) or ""
        assert "FlexDelegate" not in str(text)
        # The plain interpreter (no Flex delegate) loads and allocates every variant.
        from ai_edge_litert.interpreter import Interpreter

        Interpreter(model_path=str(path)).allocate_tensors()


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_variable_batch_sizes(binary_export, batch):
    from autodl.api import AutoModel
    from autodl.edge.autodl_edge import EdgeModel, read_csv

    run, csv, report = binary_export
    model = EdgeModel(report["tflite"]["path"], "float32")
    columns = read_csv(csv, model.schema["missing_markers"])
    rows = {c: v[:batch] for c, v in columns.items()}
    expected = AutoModel.load(run).predict_output(pd.read_csv(csv).head(batch))
    np.testing.assert_allclose(model.predict_output(rows), expected, atol=1e-5)


def _litert_only_venv(path: Path) -> Path:
    """A virtual environment with numpy and ai-edge-litert only (linked from this one, no download)."""
    import ai_edge_litert

    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    deps = path / "linked"
    deps.mkdir()
    source = Path(np.__file__).parent.parent
    for name in ("numpy", "numpy.libs", "ai_edge_litert"):
        if (source / name).exists():
            (deps / name).symlink_to(source / name)
    assert Path(ai_edge_litert.__file__).parent.parent == source
    (site / "linked.pth").write_text(str(deps), encoding="utf-8")
    return python


def test_runner_in_a_venv_without_tensorflow_matches_autodl_predict(binary_export, tmp_path):
    run, csv, report = binary_export
    python = _litert_only_venv(tmp_path / "venv")
    # cwd outside the repository: "python -c" puts the working directory on sys.path.
    probe = subprocess.run([python, "-c", "import tensorflow"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0, "the edge venv must not see TensorFlow"
    probe = subprocess.run([python, "-c", "import autodl"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.returncode != 0, "the edge venv must not see autodl"
    bundle = Path(report["tflite"]["path"])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    ours = subprocess.run(
        [TOOLS / "autodl", "predict", str(run), str(csv), "-o", str(tmp_path / "autodl.csv")],
        capture_output=True, text=True, env=env)
    assert ours.returncode == 0, ours.stderr
    expected = pd.read_csv(tmp_path / "autodl.csv")
    for variant, tolerance in (("float32", 1e-5), ("int8", None)):
        out = tmp_path / f"edge_{variant}.csv"
        done = subprocess.run([python, str(bundle / "autodl_edge.py"), str(bundle), str(csv), "-o", str(out), "--variant", variant],
                              capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        got = pd.read_csv(out)
        assert list(got.columns) == list(expected.columns)
        agreement = (got["prediction"].astype(str) == expected["prediction"].astype(str)).mean()
        if tolerance is not None:
            assert agreement == 1.0
            np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), expected.iloc[:, 1:].to_numpy(), atol=tolerance)
        else:
            assert agreement >= 0.85


def test_regression_bundle(tmp_path):
    from autodl.api import AutoModel
    from autodl.edge.autodl_edge import EdgeModel, read_csv
    from autodl.export.pipeline import ExportOptions, export_run

    run, csv = fit_run(tmp_path, "regression", n=240)
    report = export_run(run, ExportOptions(formats=("tflite",), quantize="float16"))
    assert set(report["tflite"]["variants"]) == {"float32", "float16"}
    model = EdgeModel(report["tflite"]["path"], "float32")
    labels, output = model.predict(read_csv(csv, model.schema["missing_markers"]))
    np.testing.assert_allclose(output, AutoModel.load(run).predict(pd.read_csv(csv)), atol=1e-4)
    assert report["tflite"]["variants"]["float16"]["max_abs_diff"] < 0.05 * float(np.std(output))


def _tflite_runtime_python() -> Path | None:
    """A venv with tflite-runtime 2.14 and numpy < 2, when the package index can provide them."""
    path = Path(os.environ.get("AUTODL_TFLITE_RUNTIME_VENV", ""))
    python = path / "bin" / "python"
    if path.name and python.exists():
        return python
    return None


@pytest.mark.skipif(_tflite_runtime_python() is None, reason="set AUTODL_TFLITE_RUNTIME_VENV to a venv with tflite-runtime 2.14")
def test_tflite_runtime_support_matches_the_bundle_readme(binary_export, tmp_path):
    from autodl.export.tflite import RUNTIME_SUPPORT

    _, csv, report = binary_export
    bundle = Path(report["tflite"]["path"])
    claims = RUNTIME_SUPPORT["tflite-runtime 2.14 (numpy < 2)"]
    for variant, claim in claims.items():
        done = subprocess.run([_tflite_runtime_python(), str(bundle / "autodl_edge.py"), str(bundle), str(csv),
                               "-o", str(tmp_path / f"{variant}.csv"), "--variant", variant], capture_output=True, text=True)
        assert (done.returncode == 0) == claim.startswith("yes"), (variant, done.stderr[-500:])


def test_int8_io_bundle_takes_integer_tensors(binary_export, tmp_path):
    from autodl.edge.autodl_edge import EdgeModel, read_csv
    from autodl.export.pipeline import ExportOptions, export_run

    run, csv, _ = binary_export
    report = export_run(run, ExportOptions(formats=("tflite",), quantize="int8", int8_io=True, out=str(tmp_path / "io")))
    model = EdgeModel(report["tflite"]["path"], "int8")
    assert model.input_details["numeric__features"]["dtype"] == np.int8
    assert model.output_detail["dtype"] == np.int8
    assert report["tflite"]["variants"]["int8"]["label_agreement"] >= 0.85
    output = model.predict_output(read_csv(csv, model.schema["missing_markers"]))
    assert np.allclose(output.sum(axis=1), 1.0, atol=0.05)


def test_automodel_export_facade(binary_export, tmp_path):
    from autodl.api import AutoModel

    run, _, _ = binary_export
    report = AutoModel.load(run).export(["tflite"], quantize="none", out=str(tmp_path / "x"))
    assert set(report["tflite"]["variants"]) == {"float32"}
    assert (tmp_path / "x" / "edge" / "model.tflite").exists()

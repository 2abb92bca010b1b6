"""compress(): pruning and QAT of autodl models in the tf_keras worker, checked from the Keras 3 side.

Each model is built the way autodl builds it (TabularHyperModel over a
numeric + string-categorical table), trained briefly, saved as ``.keras``,
then compressed in the worker subprocess. The written ``.tflite`` files are
re-scored here with the LiteRT interpreter, independently of the worker.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
import pytest

from autodl.data.schema import ColumnSpec, Schema, prepare_target
from autodl.errors import RunError, UserError
from autodl.export import compress as compress_mod
from autodl.export.compress import CompressionUnsupported, compress, parse_result, write_inputs
from autodl.export.graph import split_for_edge
from autodl.features import fit_stats, make_inputs, to_model_inputs
from autodl.features.frame import ModelData
from autodl.recipes.tabular import make_dataset
from autodl.search import TabularHyperModel
from autodl.train import average_models
from tests.conftest import make_table

COLUMNS = [
    ColumnSpec("x1", "numeric", "float", 100, 0.0),
    ColumnSpec("x2", "numeric", "float", 100, 0.1),  # has missing values: MissingIndicator
    ColumnSpec("city", "categorical", "string", 5, 0.0),  # StringLookup + one-hot Embedding
]
N_TRAIN, N_EVAL = 600, 200
FINE_TUNE = {"epochs": 2, "batch_size": 64}


class Split:
    """A table's model inputs and labels, split into train and eval rows."""

    def __init__(self, task: str, rename: dict[str, str] | None = None) -> None:
        rename = rename or {}
        df = make_table(N_TRAIN + N_EVAL, task=task, seed=1).rename(columns=rename)
        classes = None if task == "regression" else sorted(df["y"].unique().tolist())
        columns = [ColumnSpec(**{**c.to_dict(), "name": rename.get(c.name, c.name)}) for c in COLUMNS]
        self.schema = Schema("y", task, columns, classes=classes)  # type: ignore[arg-type]
        self.df = df
        x = to_model_inputs(df, self.schema)
        y = prepare_target(df["y"], self.schema)
        self.train_x = {k: v[:N_TRAIN] for k, v in x.items()}
        self.eval_x = {k: v[N_TRAIN:] for k, v in x.items()}
        self.train_y, self.eval_y = y[:N_TRAIN], y[N_TRAIN:]
        self.stats = fit_stats(self.train_x, self.schema)

    def kwargs(self) -> dict[str, Any]:
        return {
            "task": self.schema.task,
            "train_x": self.train_x,
            "train_y": self.train_y,
            "eval_x": self.eval_x,
            "eval_y": self.eval_y,
        }


@pytest.fixture(scope="module")
def binary() -> Split:
    return Split("binary")


@pytest.fixture(scope="module")
def regression() -> Split:
    # A column name TFLite cannot take as a signature input name as it is.
    return Split("regression", rename={"x1": "x 1"})


def build(split: Split, architecture: str, fixed: dict[str, Any], *, epochs: int = 3) -> keras.Model:
    """An autodl model of one architecture with some hyperparameters fixed, trained briefly."""
    y = split.train_y
    scale = {"target_mean": float(y.mean()), "target_std": float(y.std())} if split.schema.task == "regression" else {}
    hypermodel = TabularHyperModel(
        split.schema, split.stats, n_train_rows=N_TRAIN, architectures=[architecture], **scale
    )
    hp = kt.HyperParameters()
    hp.Fixed("architecture", architecture)
    with hp.conditional_scope("architecture", [architecture]):
        for name, value in fixed.items():
            hp.Fixed(f"{architecture}/{name}", value)
    model = hypermodel.build(hp)
    if epochs:
        keras.utils.set_random_seed(0)
        model.fit(make_dataset(ModelData(split.train_x, y), batch_size=64, shuffle=True), epochs=epochs, verbose=0)
    return model


def save(model: keras.Model, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.keras"
    model.save(path)
    return path


def run_tflite(path: Path, x: dict[str, np.ndarray], names: dict[str, str] | None = None) -> np.ndarray:
    """The ``.tflite`` file's output on ``x``, with LiteRT, as a caller would run it."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
    names = names or {k: k for k in x}
    feed = {names[k]: (np.char.encode(v.astype(str)) if v.dtype == object else v) for k, v in x.items()}
    output = runner(**feed)
    assert list(output) in (["probabilities"], ["value"])  # the keys autodl's TFLite export uses
    return np.asarray(next(iter(output.values())), dtype=np.float64)


def int8_kernels(path: Path) -> list[np.ndarray]:
    """The 2-D int8 constant tensors (Dense kernels, embedding tables) of a ``.tflite`` file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    out = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) == 2 and int(np.prod(detail["shape"])) >= 256:
            try:
                out.append(interpreter.get_tensor(detail["index"]))
            except ValueError:  # activations are not readable before invoke
                continue
    return out


def accuracy(y: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(proba.argmax(axis=1) == y))


# --------------------------------------------------------------------------
# End to end through the worker
# --------------------------------------------------------------------------


def test_prune_reaches_the_sparsity_and_shrinks_the_gzipped_int8_model(binary, tmp_path):
    model = build(binary, "mlp_plr", {"n_frequencies": 16, "d_embedding": 8, "layers": 2, "units": 128})
    out = tmp_path / "pruned.tflite"
    path = save(model, tmp_path, "mlp_plr")
    result = compress(path, out, method="prune", sparsity=0.5, **binary.kwargs(), **FINE_TUNE)

    assert result.method == "prune" and result.metric_name == "accuracy"
    assert result.rebuild_max_abs_diff <= 1e-4
    assert result.sparsity >= 0.45
    assert set(result.details["pruned_layers"]) >= {"mlp_plr_periodic", "mlp_plr_dense0", "mlp_plr_dense1", "proba"}
    assert result.details["quantization"] == "full-integer int8"
    # Pruning pays off compressed: same int8 conversion, without pruning, gzips larger.
    baseline = result.details["baseline"]
    assert result.gzip_bytes < 0.85 * baseline["gzip_bytes"]
    assert result.size_bytes == out.stat().st_size
    # The zeros survive int8 quantization (symmetric weights map 0.0 to 0).
    kernels = int8_kernels(out)
    zeros = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    assert zeros >= 0.45
    # The worker's scores: sane, and the .tflite file scores the same here.
    assert result.metric_after >= result.metric_before - 0.05
    assert result.tflite_metric >= result.metric_before - 0.05
    assert accuracy(binary.eval_y, run_tflite(out, binary.eval_x)) == pytest.approx(result.tflite_metric)


def test_qat_on_an_mlp_writes_an_int8_tflite_that_scores(binary, tmp_path):
    model = build(binary, "mlp", {"layers": 2, "units": 64})
    # The model compress() gets in the CLI: the edge exporter's builtin-only graph,
    # with StringLookup replaced by VocabularyMatch.
    from autodl.export.pipeline import edge_inputs

    split = split_for_edge(model)
    edge = split.model
    assert any(type(layer).__name__ == "VocabularyMatch" for layer in edge.layers)
    out = tmp_path / "qat.tflite"
    kwargs = {**binary.kwargs(), "train_x": edge_inputs(split, binary.schema, binary.df.iloc[:N_TRAIN]),
              "eval_x": edge_inputs(split, binary.schema, binary.df.iloc[N_TRAIN:])}
    result = compress(save(edge, tmp_path, "mlp_edge"), out, method="qat", **kwargs, **FINE_TUNE)

    assert result.method == "qat" and result.sparsity == 0.0
    assert result.rebuild_max_abs_diff <= 1e-4
    assert result.details["qat_layers"] == ["mlp_dense0", "mlp_dense1", "proba"]
    assert result.details["float_during_qat"] == ["mlp_cat0_onehot"]
    assert result.details["quantization"].startswith(("full-integer int8", "qat int8 layers"))
    assert int8_kernels(out), "the QAT Dense kernels should be stored as int8"
    proba = run_tflite(out, kwargs["eval_x"])
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1.0, atol=0.02)
    assert accuracy(binary.eval_y, proba) == pytest.approx(result.tflite_metric)
    assert result.tflite_metric >= 0.75 and result.metric_after >= result.metric_before - 0.05


def test_prune_a_resnet_regressor_on_the_target_scale(regression, tmp_path):
    model = build(regression, "resnet", {"blocks": 1, "d": 64, "hidden_factor": 1})
    out = tmp_path / "resnet.tflite"
    result = compress(
        save(model, tmp_path, "resnet"), out, method="prune", sparsity=0.5, **regression.kwargs(), **FINE_TUNE
    )

    assert result.metric_name == "rmse"
    assert result.rebuild_max_abs_diff <= 1e-4
    assert result.sparsity >= 0.45
    # Better than predicting the mean, before and after, and in the .tflite file.
    spread = float(regression.eval_y.std())
    assert max(result.metric_before, result.metric_after, result.tflite_metric) < spread
    assert result.details["signature_inputs"] == {"x 1": "x_1", "x2": "x2", "city": "city"}
    prediction = run_tflite(out, regression.eval_x, result.details["signature_inputs"])
    assert prediction.shape == (N_EVAL,)
    rmse = float(np.sqrt(np.mean((prediction - regression.eval_y) ** 2)))
    assert rmse == pytest.approx(result.tflite_metric, rel=1e-5)


def test_an_averaged_ensemble_of_members_rebuilds_flat_and_prunes(binary, tmp_path):
    members = [
        build(binary, "mlp", {"layers": 1, "units": 64}, epochs=2),
        build(binary, "mlp_plr", {"n_frequencies": 16, "d_embedding": 8, "layers": 1, "units": 64}, epochs=2),
    ]
    # As autodl.fit does: members get distinct names, then one Average over shared inputs.
    members = [keras.Model(m.input, m.output, name=f"trial_{i}") for i, m in enumerate(members)]
    ensemble = average_models(members, make_inputs(binary.schema))
    out = tmp_path / "ensemble.tflite"
    result = compress(save(ensemble, tmp_path, "ensemble"), out, method="prune", **binary.kwargs(), **FINE_TUNE)

    assert result.rebuild_max_abs_diff <= 1e-4
    pruned = set(result.details["pruned_layers"])
    assert {"trial_0__mlp_dense0", "trial_1__mlp_plr_periodic", "trial_1__proba"} <= pruned
    assert result.sparsity >= 0.45
    assert accuracy(binary.eval_y, run_tflite(out, binary.eval_x)) == pytest.approx(result.tflite_metric)


def test_qat_refuses_the_ft_transformer_naming_its_attention_layer(binary, tmp_path):
    model = build(binary, "ft_transformer", {"d_token": 64, "blocks": 1}, epochs=0)
    out = tmp_path / "ft.tflite"
    with pytest.raises(CompressionUnsupported) as info:
        compress(save(model, tmp_path, "ft"), out, method="qat", **binary.kwargs(), **FINE_TUNE)
    message = str(info.value)
    assert "'ft_transformer_block0_attention' (MultiHeadAttention)" in message
    assert "zoo model 'ft_transformer'" in message and "without --qat" in message
    assert "\n" not in message and not out.exists()


def test_a_rebuild_that_does_not_match_is_refused(binary, tmp_path):
    """The worker compares the tf_keras rebuild with the Keras 3 model before optimizing anything."""
    model_path = save(build(binary, "mlp", {"layers": 1, "units": 32}, epochs=0), tmp_path, "mlp")
    data, json_out, out = tmp_path / "in.npz", tmp_path / "result.json", tmp_path / "x.tflite"
    write_inputs(data, binary.train_x, binary.train_y, binary.eval_x, binary.eval_y)
    # Run the real worker with its QuantileTransform twin off by 1e-3.
    script = (
        "import sys\n"
        "import autodl.export._tfmot_worker as w\n"
        "call = w.QuantileTransform.call\n"
        "w.QuantileTransform.call = lambda self, x: call(self, x) + 1e-3\n"
        f"sys.exit(w.main(['--model', {str(model_path)!r}, '--data', {str(data)!r}, '--out', {str(out)!r},"
        f" '--json-out', {str(json_out)!r}, '--method', 'prune', '--task', 'binary']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=compress_mod.worker_env(), capture_output=True, text=True, timeout=120
    )
    with pytest.raises(RunError, match="differs from the Keras 3 model by .* not optimizing"):
        parse_result(proc.returncode, proc.stderr, compress_mod._read_json(json_out))
    assert not out.exists()


# --------------------------------------------------------------------------
# The parent side alone
# --------------------------------------------------------------------------


def test_a_worker_that_fails_raises_run_error_with_its_last_stderr_line(binary, tmp_path, monkeypatch):
    model_path = tmp_path / "model.keras"
    model_path.write_bytes(b"not a model")
    monkeypatch.setattr(compress_mod, "WORKER_MODULE", "autodl.export._no_such_worker")
    with pytest.raises(RunError, match="model compression failed: .*No module named autodl.export._no_such_worker"):
        compress(model_path, tmp_path / "x.tflite", method="prune", **binary.kwargs())


def test_a_missing_model_file_is_a_run_error(binary, tmp_path):
    with pytest.raises(RunError, match="does not exist; fit a model first"):
        compress(tmp_path / "none.keras", tmp_path / "x.tflite", method="prune", **binary.kwargs())


def test_the_worker_refuses_to_load_into_a_keras_3_process():
    # This process runs Keras 3 on an already loaded TensorFlow (keras is imported above).
    with pytest.raises(ImportError, match="runs in its own process"):
        importlib.import_module("autodl.export._tfmot_worker")


def test_parse_result_maps_statuses_to_errors():
    with pytest.raises(CompressionUnsupported, match="cannot wrap"):
        parse_result(3, "noise\n", {"status": "unsupported", "message": "--qat cannot wrap layer 'a' (B)"})
    with pytest.raises(RunError, match="failed: rebuild differs"):
        parse_result(1, "Traceback\nwarnings.warn(...)\n", {"status": "error", "message": "rebuild differs"})
    with pytest.raises(RunError, match="failed: Killed"):
        parse_result(-9, "loading\nKilled\n", None)
    with pytest.raises(RunError, match="exited with code 1"):
        parse_result(1, "", None)


def test_inputs_travel_without_pickle(tmp_path):
    path = tmp_path / "d.npz"
    x = {"a col/with slash": np.array([1.0, np.nan], dtype="float32"), "c": np.array(["é", None], dtype=object)}
    write_inputs(path, x, np.array([0, 1]), x, np.array([1, 0]))
    with np.load(path, allow_pickle=False) as data:
        assert data["columns"].tolist() == ["a col/with slash", "c"]
        assert data["train__1"].tolist() == ["é", ""]
        assert np.isnan(data["eval__0"][1])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "distill"}, "method must be one of"),
        ({"quantize": "int4"}, "quantize must be one of"),
        ({"method": "qat", "quantize": "none"}, "--qat trains for an 8-bit model"),
        ({"sparsity": 1.0}, "between 0 and 1"),
        ({"epochs": 0}, "at least one epoch"),
        ({"learning_rate": 0.0}, "positive learning rate"),
        ({"eval_y": np.array([0])}, "same, non-zero number of rows"),
        ({"representative_x": {"x1": np.zeros(0), "x2": np.zeros(0), "city": np.zeros(0)}}, "at least one row"),
    ],
)
def test_bad_arguments_are_user_errors(binary, tmp_path, change, message):
    model_path = tmp_path / "model.keras"
    model_path.write_bytes(b"checked before the worker starts")
    kwargs = {"method": "prune", **binary.kwargs(), **change}
    with pytest.raises(UserError, match=message):
        compress(model_path, tmp_path / "x.tflite", **kwargs)

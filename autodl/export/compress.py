"""Magnitude pruning and quantization-aware training of a fitted model, exported to TFLite.

tensorflow-model-optimization (tfmot) only works on tf_keras (Keras 2)
models, and importing it turns ``tf.keras`` into Keras 2 for the whole
process. autodl runs on Keras 3, so :func:`compress` does the work in a
subprocess (``autodl.export._tfmot_worker``, started with
``TF_USE_LEGACY_KERAS=1``) that rebuilds the Keras 3 model in tf_keras from
its layers' configurations, copies the trained weights, checks the rebuild
gives the same outputs, then prunes or QAT-trains it, fine-tunes on the
training rows and converts it to TFLite (builtin ops only).

Example (``model.keras`` is a fitted autodl classifier whose inputs are
TFLite-convertible, ``x``/``y`` its model inputs and labels):

>>> result = compress(Path("model.keras"), Path("model.tflite"), method="prune", task="binary",
...                   train_x=x, train_y=y, eval_x=x_valid, eval_y=y_valid, sparsity=0.5)  # doctest: +SKIP
>>> f"{result.sparsity:.2f} of the kernels are zero; {result.gzip_bytes} bytes gzipped"  # doctest: +SKIP
'0.50 of the kernels are zero; 61234 bytes gzipped'

What is optimized:

- ``prune``: ``prune_low_magnitude`` with a polynomial-decay schedule from 0
  to ``sparsity`` over the first 70% of the fine-tune steps (the rest
  recovers at the final sparsity) on every Dense kernel, Embedding table,
  attention projection and PLR (periodic embedding) linear map; then
  ``strip_pruning``. Sparsity is counted over exactly those weights.
- ``qat``: ``quantize_apply`` with tfmot's default 8-bit scheme on the Dense
  layers (weights and activations), plus an output fake-quant on
  BatchNormalization (without it the converter folds a BatchNorm into the
  next Dense's QAT weights and leaves them float). Embeddings and periodic
  embeddings stay float while training and are quantized post-training;
  preprocessing layers hold only constants. Activation ranges start at the
  float model's measured ranges rather than tfmot's [-6, 6]. Models whose
  weighted layers tfmot cannot wrap (the FT-Transformer's attention,
  LayerNorm and tokenizers) raise :class:`CompressionUnsupported`.

Both fine-tune with Adam (lr 1e-4 by default) and BatchNormalization frozen in
inference mode, so the fine-tune optimizes the function that is exported.

The ``.tflite`` file's signature ``serving_default`` takes one input per
model input, named after its column (``details["signature_inputs"]`` maps the
columns TensorFlow cannot take as names, such as ``"a col"``, to the names
used), and returns ``{"probabilities": (n, classes)}`` or ``{"value": (n,)}``,
as autodl's plain TFLite export does.

``quantize="int8"`` is full-integer (float in/out) when TF's quantizer accepts
the graph; for some QAT graphs it does not (a concatenation of a QAT-ranged
and a calibrated tensor, e.g. the plain MLP's and ResNet's numeric inputs),
and the QAT layers are then int8 while the other layers get dynamic-range
int8 weights; ``details["quantization"]`` says which. ``details["baseline"]`` is
the same conversion of the un-optimized model: size, gzip size and TFLite
metric to compare against.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodl.errors import RunError, UserError

METHODS: tuple[str, ...] = ("prune", "qat")
QUANTIZE_MODES: tuple[str, ...] = ("int8", "dynamic", "none")
TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
WORKER_MODULE = "autodl.export._tfmot_worker"
_EXIT_UNSUPPORTED = 3  # the worker's exit code for a model it refuses


class CompressionUnsupported(UserError):
    """The model holds layers that cannot be rebuilt in tf_keras or wrapped by tfmot (message names them)."""


@dataclass
class CompressResult:
    """What :func:`compress` wrote and measured.

    Attributes:
        method: ``"prune"`` or ``"qat"``.
        tflite_path: the written ``.tflite`` file.
        sparsity: fraction of zeros in the pruned kernels after ``strip_pruning`` (0 for qat).
        size_bytes: size of the ``.tflite`` file.
        gzip_bytes: its gzip-compressed size (what pruning pays off in).
        metric_name: ``"accuracy"`` (classification) or ``"rmse"`` (regression).
        metric_before: the rebuilt tf_keras model on the evaluation rows, before optimizing.
        metric_after: the optimized tf_keras model after fine-tuning, on the evaluation rows.
        tflite_metric: the ``.tflite`` file, run with the LiteRT interpreter, on the evaluation rows.
        rebuild_max_abs_diff: largest output difference between the Keras 3 model and its rebuild.
        seconds: wall time of the worker.
        details: which layers were pruned (with their sparsity) or QAT-wrapped, the schedule,
            fine-tune steps, ``quantization`` (how the file is quantized), ``baseline``
            (``size_bytes``, ``gzip_bytes``, ``tflite_metric`` of the un-optimized model
            converted the same way) and ``signature_inputs`` (column → input name).
    """

    method: str
    tflite_path: Path
    sparsity: float
    size_bytes: int
    gzip_bytes: int
    metric_name: str
    metric_before: float
    metric_after: float
    tflite_metric: float
    rebuild_max_abs_diff: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def compress(
    model_path: Path,
    out_path: Path,
    *,
    method: str,
    task: str,
    train_x: dict[str, np.ndarray],
    train_y: np.ndarray,
    eval_x: dict[str, np.ndarray],
    eval_y: np.ndarray,
    sparsity: float = 0.5,
    epochs: int = 2,
    batch_size: int = 256,
    quantize: str = "int8",
    representative_x: dict[str, np.ndarray] | None = None,
    timeout: float | None = None,
    learning_rate: float = 1e-4,
    seed: int = 0,
) -> CompressResult:
    """Prunes or QAT-trains the Keras 3 model at ``model_path`` and writes a TFLite file to ``out_path``.

    Args:
        model_path: a ``.keras`` model whose inputs are 1-D per-row tensors keyed
            by column (float32, tf.string into a static StringLookup, int64) and
            which already converts to TFLite with builtin ops.
        out_path: where the ``.tflite`` goes.
        method: ``"prune"`` (magnitude pruning to ``sparsity``) or ``"qat"``.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        train_x, train_y: the fine-tuning rows; class indices or float targets.
        eval_x, eval_y: the rows every metric and the rebuild check use.
        sparsity: final fraction of zeros in the pruned kernels, in (0, 1).
        epochs: fine-tuning epochs (at least 20 steps are run in all).
        batch_size: fine-tuning batch size.
        quantize: ``"int8"`` (full-integer weights and activations, float in/out,
            calibrated on ``representative_x`` or the first training rows),
            ``"dynamic"`` (int8 weights) or ``"none"`` (float32; prune only).
        representative_x: calibration rows for ``"int8"``.
        timeout: seconds before the worker is stopped (``RunError``).
        learning_rate: Adam's learning rate for the fine-tune.
        seed: seeds the fine-tune's shuffling and dropout.

    Raises:
        CompressionUnsupported: a layer cannot be rebuilt or wrapped; the message names it.
        RunError: the worker failed (with its one-line reason, else its last stderr
            line) or timed out.
        UserError: an argument is out of range.
    """
    _check_arguments(
        method, task, sparsity, epochs, batch_size, learning_rate, quantize, train_x, train_y, eval_x, eval_y
    )
    model_path, out_path = Path(model_path), Path(out_path)
    if not model_path.is_file():
        raise RunError(f"model file {model_path} does not exist; fit a model first")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autodl-compress-") as tmp:
        data_path, json_path = Path(tmp) / "inputs.npz", Path(tmp) / "result.json"
        write_inputs(data_path, train_x, train_y, eval_x, eval_y, representative_x)
        command = [
            sys.executable, "-m", WORKER_MODULE,
            "--model", str(model_path), "--data", str(data_path), "--out", str(out_path),
            "--json-out", str(json_path), "--method", method, "--task", task,
            "--sparsity", repr(float(sparsity)), "--epochs", str(int(epochs)),
            "--batch-size", str(int(batch_size)), "--quantize", quantize,
            "--learning-rate", repr(float(learning_rate)), "--seed", str(int(seed)),
        ]
        proc = run_worker(command, timeout=timeout)
        payload = _read_json(json_path)
    return parse_result(proc.returncode, proc.stderr, payload)


def worker_env() -> dict[str, str]:
    """The worker's environment: this one, with tf.keras as Keras 2 and quiet TF logs."""
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"  # must be set before TensorFlow loads in the child
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def run_worker(command: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the worker command; a timeout becomes a ``RunError``."""
    try:
        return subprocess.run(command, env=worker_env(), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RunError(
            f"compression did not finish within {timeout:g} s; raise the timeout or use fewer rows"
        ) from None


def parse_result(returncode: int, stderr: str, payload: dict[str, Any] | None) -> CompressResult:
    """Turns the worker's exit code, stderr and JSON into a result or the matching error.

    >>> parse_result(3, "", {"status": "unsupported", "message": "no"})
    Traceback (most recent call last):
    ...
    autodl.export.compress.CompressionUnsupported: no
    >>> parse_result(1, "Traceback...\\nValueError: boom\\n", None)
    Traceback (most recent call last):
    ...
    autodl.errors.RunError: model compression failed: ValueError: boom
    """
    status = (payload or {}).get("status")
    if status == "unsupported":
        raise CompressionUnsupported(payload["message"])  # type: ignore[index]
    if returncode != 0 or status != "ok":
        # The worker's own one-line reason, else the last stderr line (a crash
        # before it could write JSON: import error, out of memory...).
        lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
        reason = (payload or {}).get("message") or (lines[-1] if lines else f"worker exited with code {returncode}")
        raise RunError(f"model compression failed: {reason}")
    assert payload is not None
    return CompressResult(
        method=payload["method"],
        tflite_path=Path(payload["tflite_path"]),
        sparsity=float(payload["sparsity"]),
        size_bytes=int(payload["size_bytes"]),
        gzip_bytes=int(payload["gzip_bytes"]),
        metric_name=payload["metric_name"],
        metric_before=float(payload["metric_before"]),
        metric_after=float(payload["metric_after"]),
        tflite_metric=float(payload["tflite_metric"]),
        rebuild_max_abs_diff=float(payload["rebuild_max_abs_diff"]),
        seconds=float(payload["seconds"]),
        details=dict(payload.get("details", {})),
    )


def write_inputs(
    path: Path,
    train_x: dict[str, np.ndarray],
    train_y: np.ndarray,
    eval_x: dict[str, np.ndarray],
    eval_y: np.ndarray,
    representative_x: dict[str, np.ndarray] | None = None,
) -> None:
    """Writes the rows for the worker as an ``.npz`` that loads without pickle.

    Columns are stored by position (``train__0``...) with their names in
    ``columns``, since column names need not be valid archive member names;
    strings become numpy unicode arrays.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "d.npz"
    >>> write_inputs(p, {"c": np.array(["a", None], dtype=object)}, np.array([0, 1]),
    ...              {"c": np.array(["b"], dtype=object)}, np.array([1]))
    >>> np.load(p, allow_pickle=False)["train__0"].tolist()
    ['a', '']
    """
    columns = list(train_x)
    arrays: dict[str, np.ndarray] = {
        "columns": np.asarray(columns, dtype=str),
        "train_y": np.asarray(train_y),
        "eval_y": np.asarray(eval_y),
    }
    splits = {"train": train_x, "eval": eval_x}
    if representative_x is not None:
        splits["rep"] = representative_x
    for split, x in splits.items():
        missing = [c for c in columns if c not in x]
        if missing or len(x) != len(columns):
            raise UserError(f"{split} inputs must have the same columns as train_x; missing {missing[:3]}")
        lengths = {len(x[c]) for c in columns}
        if len(lengths) != 1 or 0 in lengths:
            raise UserError(f"{split} inputs must have one value per row in every column and at least one row")
        for i, c in enumerate(columns):
            arrays[f"{split}__{i}"] = _storable(np.asarray(x[c]))
    np.savez(path, **arrays)


def _storable(a: np.ndarray) -> np.ndarray:
    if a.dtype == object:
        # Missing strings were already "" upstream; None would not survive as unicode.
        return np.asarray(["" if v is None else (v.decode() if isinstance(v, bytes) else str(v)) for v in a], dtype=str)
    return a


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _check_arguments(
    method: str,
    task: str,
    sparsity: float,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    quantize: str,
    train_x: dict[str, np.ndarray],
    train_y: np.ndarray,
    eval_x: dict[str, np.ndarray],
    eval_y: np.ndarray,
) -> None:
    if method not in METHODS:
        raise UserError(f"compression method must be one of {', '.join(METHODS)}, got {method!r}")
    if task not in TASKS:
        raise UserError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if quantize not in QUANTIZE_MODES:
        raise UserError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, got {quantize!r}")
    if method == "qat" and quantize == "none":
        raise UserError("--qat trains for an 8-bit model; use quantize int8 or dynamic, not none")
    if method == "prune" and not 0.0 < sparsity < 1.0:
        raise UserError(f"--prune takes a sparsity between 0 and 1 (exclusive), got {sparsity:g}")
    if epochs < 1 or batch_size < 1 or not learning_rate > 0:
        raise UserError("fine-tuning needs at least one epoch, a positive batch size and a positive learning rate")
    for name, x, y in (("train", train_x, train_y), ("eval", eval_x, eval_y)):
        if not x:
            raise UserError(f"{name} inputs are empty")
        lengths = {len(v) for v in x.values()} | {len(y)}
        if len(lengths) != 1 or 0 in lengths:
            raise UserError(f"{name} inputs and labels must have the same, non-zero number of rows")

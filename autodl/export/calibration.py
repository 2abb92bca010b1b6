"""int8 calibration through the LiteRT interpreter, and TFLite-safe input names.

Shared by the Keras 3 exporter (``autodl.export.tflite``) and the tf_keras
compression worker (``autodl.export._tfmot_worker``), so it imports neither
Keras: only TensorFlow's converter internals and ai-edge-litert.

Example:

>>> signature_names(["a col", "x1"])
{'a col': 'a_col', 'x1': 'x1'}
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np


# Calibrated magnitudes from here up mark sentinels, not data (see ``LiteRTCalibrator``).
SENTINEL_RANGE = 1e6


class LiteRTCalibrator:
    """Stand-in for TF's calibrator, for autodl's inputs: strings and NaN.

    TF's calibrator copies each numpy input's raw bytes into the input tensor,
    which cannot fill a TFLite string tensor (it crashes), and it records
    NaN-poisoned ranges for tensors that carry missing values, so the raw
    numeric inputs get quantized and NaN (imputed inside the model) is lost
    (measured: accuracy 0.92 → 0.75 on a table with missing values).

    This one runs the float model in the LiteRT interpreter, which takes
    strings, records the min and max of every non-constant float32 tensor over
    the calibration batches (what TF's logging interpreter records), leaves
    tensors that ever hold NaN or infinity without a range (so they stay
    float), and writes the ranges into the tensors' quantization parameters,
    the form TF's MLIR quantizer reads next.

    A tensor whose range reaches ``SENTINEL_RANGE`` gets no range either: such
    values are sentinels, as in attention scores masked with -1e9 before the
    softmax, and one int8 scale over them leaves every real score in one step
    (measured on a fine-tuned MiniLM: int8 accuracy 0.753 against Keras' 0.905;
    with the masked scores left float, 0.893 at the same size).
    """

    # Layer names whose tensors get no range (stay float); set per conversion by ``litert_calibration``.
    keep_float: frozenset[str] = frozenset()

    def __init__(self, model_content: bytes, *_: Any, **__: Any) -> None:
        self._model_content = bytes(model_content)

    def calibrate(self, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        from tensorflow.lite.python import schema_py_generated as schema_fb
        from tensorflow.lite.tools import flatbuffer_utils

        model = flatbuffer_utils.convert_bytearray_to_object(bytearray(self._model_content))
        # Reference kernels only: a delegate would fuse ops and hide their outputs.
        interpreter = Interpreter(
            model_content=self._model_content,
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        low: dict[tuple[int, int], float] = {}
        high: dict[tuple[int, int], float] = {}
        non_finite: set[tuple[int, int]] = set()
        for sample in dataset_gen():
            key, feed = sample if isinstance(sample, tuple) else (None, sample)
            graph = _invoke(interpreter, key, feed)
            for index, tensor in enumerate(model.subgraphs[graph].tensors):
                if tensor.type != schema_fb.TensorType.FLOAT32 or _is_constant(model, tensor):
                    continue
                try:
                    value = interpreter.get_tensor(index, graph)
                except ValueError:  # never allocated (optional inputs)
                    continue
                k = (graph, index)
                if not np.all(np.isfinite(value)):
                    non_finite.add(k)
                elif value.size:
                    low[k] = min(low.get(k, math.inf), float(np.min(value)))
                    high[k] = max(high.get(k, -math.inf), float(np.max(value)))
        for (graph, index), lo in low.items():
            tensor = model.subgraphs[graph].tensors[index]
            hi = high[(graph, index)]
            if (graph, index) in non_finite or max(-lo, hi) >= SENTINEL_RANGE or _in_layers(tensor.name, self.keep_float):
                continue
            params = tensor.quantization or schema_fb.QuantizationParametersT()
            params.min, params.max = [lo], [hi]
            tensor.quantization = params
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _invoke(interpreter: Any, key: str | None, feed: dict[str, np.ndarray]) -> int:
    """Runs one sample; returns the subgraph it ran in.

    Models converted without a trackable object have no SignatureDef (autodl's
    Keras 3 export, see ``autodl.export.tflite``): their inputs are found by tensor name.
    """
    if interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        runner(**feed)
        return runner._subgraph_index  # noqa: SLF001
    details = {d["name"]: d for d in interpreter.get_input_details()}
    for name, value in feed.items():
        interpreter.resize_tensor_input(details[name]["index"], list(np.shape(value)))
    interpreter.allocate_tensors()
    for name, value in feed.items():
        interpreter.set_tensor(details[name]["index"], value)
    interpreter.invoke()
    return 0


def _in_layers(name: bytes | str | None, layers: frozenset[str]) -> bool:
    """Whether a tensor name ("model/quantile_1/mul;model/...") belongs to one of ``layers``."""
    if not layers or not name:
        return False
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
    segments = re.split(r"[/;]", text)
    return any(re.sub(r"_\d+$", "", segment) in layers for segment in segments)


def _is_constant(model: Any, tensor: Any) -> bool:
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


class litert_calibration:
    """Swaps ``LiteRTCalibrator`` into TF's converter for one conversion (this process only).

    ``keep_float``: names of layers to leave in float. autodl keeps its numeric
    preprocessing there: one int8 scale over a concatenation of, say, ages and
    years, followed by quantile ramps 1/width steep, loses everything (measured:
    int8 output error 0.97 on probabilities).
    """

    def __init__(self, keep_float: Sequence[str] = ()) -> None:
        self._keep_float = frozenset(keep_float)

    def __enter__(self) -> None:
        from tensorflow.lite.python import lite

        self._module = lite._calibrator
        self._saved = self._module.Calibrator
        self._module.Calibrator = type("Calibrator", (LiteRTCalibrator,), {"keep_float": self._keep_float})

    def __exit__(self, *exc: Any) -> None:
        self._module.Calibrator = self._saved


# What TensorFlow accepts as a name; TFLite silently drops a signature whose
# input names fail it (spaces, non-ASCII, a leading "_").
_TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


def signature_names(columns: Sequence[str]) -> dict[str, str]:
    """Column → TFLite signature input name: the column itself where TensorFlow takes it, else a safe unique one.

    >>> signature_names(["a col", "a_col", "_id", "x1"])
    {'a col': 'a_col_1', 'a_col': 'a_col', '_id': 'x_id', 'x1': 'x1'}
    """
    out = {c: c for c in columns if _TF_NAME.fullmatch(c)}
    taken = set(out.values())
    for column in columns:
        if column in out:
            continue
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", column)
        if not _TF_NAME.fullmatch(name):
            name = f"x{name}"  # a leading "_" or "-", or an empty name
        base, n = name, 1
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        out[column] = name
        taken.add(name)
    return {c: out[c] for c in columns}

"""TFLite / LiteRT conversion with builtin ops only, and the edge bundle around it.

Variants: ``float32``; ``float16`` (weights stored as float16); ``dynamic``
(int8 weights, float activations); ``int8`` (weights and activations int8,
calibrated on training rows; float input and output unless ``int8_io``). Every
variant is converted from the ``EdgeGraph`` (the model minus the steps the edge
runner does in numpy) with ``TFLITE_BUILTINS`` only, so the plain LiteRT
interpreter runs it, and is then checked by running it.

Example (``edge`` from ``split_for_edge``, ``rows`` a dict of training inputs):

    flatbuffer = convert(edge, "int8", representative=rows)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from autodl.data.io import MISSING_MARKERS
from autodl.data.schema import Schema
from autodl.errors import RunError
from autodl.export.calibration import litert_calibration, signature_names
from autodl.export.graph import EdgeGraph

VARIANTS: tuple[str, ...] = ("float32", "float16", "dynamic", "int8")
QUANTIZE_CHOICES: tuple[str, ...] = ("none", "float16", "dynamic", "int8", "all")
BUNDLE_FORMAT = "autodl-edge/1"
REPRESENTATIVE_ROWS = 320
CALIBRATION_BATCH = 32


def variants_for(quantize: str) -> list[str]:
    """``--quantize`` → the variants written (float32 is always written: it is the reference)."""
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}")
    if quantize == "all":
        return list(VARIANTS)
    return ["float32"] if quantize == "none" else ["float32", quantize]


def output_key(task: str) -> str:
    return "value" if task == "regression" else "probabilities"


def tensor_names(edge: EdgeGraph) -> dict[str, str]:
    """Edge-model input key → TFLite tensor name (TensorFlow rejects spaces and the like in names)."""
    return signature_names(edge.input_names)


def convert(
    edge: EdgeGraph,
    variant: str,
    *,
    task: str,
    representative: dict[str, np.ndarray] | None = None,
    int8_io: bool = False,
) -> bytes:
    """One TFLite flatbuffer of the edge model, builtin ops only.

    ``representative``: prepared inputs keyed by tensor name (``autodl_edge.prepare_inputs``).
    """
    import tensorflow as tf

    model = edge.model
    names = tensor_names(edge)
    specs = {key: tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=names[key]) for key, t in model.input.items()}
    key = output_key(task)

    @tf.function(input_signature=[specs])
    def serve(inputs: dict[str, Any]) -> dict[str, Any]:
        return {key: model(inputs, training=False)}

    return convert_function(serve.get_concrete_function(), variant, representative=representative, int8_io=int8_io)


def convert_function(
    function: Any,
    variant: str,
    *,
    representative: dict[str, np.ndarray] | None = None,
    int8_io: bool = False,
) -> bytes:
    """One TFLite flatbuffer of a concrete ``tf.function``, builtin ops only (shared by table and image exports).

    ``representative``: calibration inputs keyed by the function's input tensor names (int8 only).
    """
    import tensorflow as tf

    # No trackable object passed: with one, a Keras 3 model's weights stay resource variables
    # that the flatbuffer does not even hold (measured: 20 KB instead of 600 KB, READ_VARIABLE
    # ops). Without it the weights are folded, and there is no SignatureDef, so the runner
    # addresses input tensors by name.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if representative is None:
            raise ValueError("int8 needs representative rows")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(representative)
        # INT8 kernels where they exist; ops without one (string matching) stay float. The numeric
        # block (imputation, scaling) is not in the model at all: the runner computes it.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        # One scale per Dense kernel, not per output unit: per-channel scales and int64 zero points
        # cost ~12 bytes a unit, 14% of the file on Adult's ensemble (3.44x → 3.78x smaller than
        # float32), for no measured accuracy (both within 0.05 point of Keras, 99.5% agreement).
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif variant != "float32":
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    try:
        with litert_calibration():
            return converter.convert()
    except Exception as e:  # noqa: BLE001 - the converter raises many types; the user needs one line
        lines = [line for line in str(e).splitlines() if "error" in line.lower()] or str(e).splitlines() or [type(e).__name__]
        raise RunError(f"TFLite conversion ({variant}) failed: {lines[0].strip()[:300]}") from e


def _representative(rows: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    n = min(len(next(iter(rows.values()))), REPRESENTATIVE_ROWS)
    if n < CALIBRATION_BATCH:  # a small training split is still one batch, not none (an uncalibrated model)
        yield {name: value[:n] for name, value in rows.items()}
        return
    for start in range(0, n - CALIBRATION_BATCH + 1, CALIBRATION_BATCH):
        yield {name: value[start:start + CALIBRATION_BATCH] for name, value in rows.items()}


def bundle_schema(edge: EdgeGraph, schema: Schema, variants: dict[str, dict[str, Any]] | None = None, default_variant: str = "float32") -> dict[str, Any]:
    """``schema.json``: what the runner reads, computes in numpy, and feeds to the interpreter."""
    storage = {c.name: c.storage for c in schema.features}
    names = tensor_names(edge)
    inputs: dict[str, Any] = {}
    # A step with several outputs (wordpiece) is one input per output: the first carries the
    # parameters, the others {"shared_with": its tensor name}, so a vocabulary is written once.
    first_of: dict[str, str] = {}
    for key, tensor in edge.model.input.items():
        step = next((s for s in edge.host_steps if s.input == key), None)
        if step is None:
            inputs[names[key]] = {"source": "column", "column": key, "storage": storage[key],
                                  "dtype": "string" if tensor.dtype == "string" else "float32"}
            continue
        spec = {"source": "host", **step.to_dict()}
        if step.output is not None:
            shared = json.dumps([step.op, step.column, step.params], sort_keys=True)
            if shared in first_of:
                spec["params"] = {"shared_with": first_of[shared]}
            else:
                first_of[shared] = names[key]
        inputs[names[key]] = spec
    return {
        "format": BUNDLE_FORMAT,
        "task": schema.task,
        "target": schema.target,
        "columns_read": sorted({c for spec in inputs.values() for c in _columns_of(spec)}),
        "missing_markers": list(MISSING_MARKERS),
        "inputs": inputs,
        "output": output_key(schema.task),
        # Binary targets: the second label where its probability reaches this (the run's decision threshold).
        "threshold": schema.threshold,
        "variants": variants or {},
        "default_variant": default_variant,
    }


def _columns_of(spec: dict[str, Any]) -> list[str]:
    if spec.get("op") == "numeric":
        return [c["column"] for c in spec["params"]["columns"]]
    return [spec["column"]]


def write_bundle(
    directory: Path,
    *,
    flatbuffers: dict[str, bytes],
    edge: EdgeGraph,
    schema: Schema,
    default_variant: str,
    int8_io: bool,
) -> None:
    """``model_<variant>.tflite`` each, ``model.tflite`` (the default), schema/labels JSON, the runner and its README."""
    write_bundle_files(
        directory, flatbuffers=flatbuffers, int8_io=int8_io, default_variant=default_variant,
        document=lambda variants: bundle_schema(edge, schema, variants, default_variant),
        labels=[str(c) for c in schema.classes or []], readme=bundle_readme,
    )


def write_bundle_files(
    directory: Path,
    *,
    flatbuffers: dict[str, bytes],
    int8_io: bool,
    default_variant: str,
    document: Callable[[dict[str, dict[str, Any]]], dict[str, Any]],
    labels: list[str],
    readme: Callable[[dict[str, Any], Sequence[str]], str],
) -> None:
    """The files every edge bundle has, whatever its input: ``document(variants)`` is its ``schema.json``."""
    from importlib import resources

    directory.mkdir(parents=True, exist_ok=True)
    variants = {}
    for variant, flatbuffer in flatbuffers.items():
        (directory / f"model_{variant}.tflite").write_bytes(flatbuffer)
        variants[variant] = {"file": f"model_{variant}.tflite", "int8_io": bool(int8_io and variant == "int8")}
    shutil.copyfile(directory / f"model_{default_variant}.tflite", directory / "model.tflite")
    schema_document = document(variants)
    (directory / "schema.json").write_text(json.dumps(schema_document, indent=2), encoding="utf-8")
    (directory / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    runner = resources.files("autodl.edge").joinpath("autodl_edge.py").read_text(encoding="utf-8")
    (directory / "autodl_edge.py").write_text(runner, encoding="utf-8")
    (directory / "README.md").write_text(readme(schema_document, sorted(flatbuffers)), encoding="utf-8")


# Which variants each pip runtime loads (checked by tests/export/test_edge_runtimes.py).
RUNTIME_SUPPORT: dict[str, dict[str, str]] = {
    "ai-edge-litert 2.3 (numpy 2)": {v: "yes" for v in VARIANTS},
    "tflite-runtime 2.14 (numpy < 2)": {
        "float32": "yes", "float16": "yes", "dynamic": "no: TF 2.21 dynamic-range ops are newer than its kernels",
        "int8": "yes",
    },
}


def bundle_readme(document: dict[str, Any], variants: Sequence[str]) -> str:
    rows = "\n".join(
        f"| {runtime} | " + " | ".join(support.get(v, "?") for v in variants) + " |"
        for runtime, support in RUNTIME_SUPPORT.items()
    )
    steps = [s for s in document["inputs"].values() if s["source"] == "host"]
    # dict.fromkeys: a step with several outputs (wordpiece) is listed once.
    host = "\n".join(dict.fromkeys(f"- `{s['column']}`: {s['op']} (in numpy, from the parameters in schema.json)"
                                    for s in steps)) or "- none"
    return f"""# autodl edge bundle

Predicts `{document['target']}` ({document['task']}) from raw CSV rows with only numpy and a LiteRT interpreter.

    pip install numpy ai-edge-litert        # or: pip install "numpy<2" tflite-runtime
    python autodl_edge.py . data.csv -o predictions.csv [--variant {'|'.join(variants)}]

Files: `model.tflite` (the default variant, `{document['default_variant']}`), `model_<variant>.tflite`,
`schema.json` (inputs and preprocessing), `labels.json` (class labels, by output index),
`autodl_edge.py` (the runner; `from autodl_edge import EdgeModel` to use it from Python).

Columns read: {', '.join(f'`{c}`' for c in document['columns_read'])}. Dates are ISO 8601 (UTC unless an offset is given);
missing values are empty cells or one of {', '.join(repr(m) for m in document['missing_markers'] if m)}.

Preprocessing done by the runner (LiteRT builtin ops cannot run it):
{host}

## Which runtime runs which variant

| runtime | {' | '.join(variants)} |
|---|{'---|' * len(variants)}
{rows}
"""

"""Pruning and quantization-aware training of an autodl model, in a tf_keras subprocess.

tensorflow-model-optimization (tfmot) only wraps tf_keras (Keras 2) layers, and
importing it switches ``tf.keras`` to Keras 2 for the whole process. autodl
itself runs on Keras 3, so this module only ever runs as its own process,
started by :func:`autodl.export.compress.compress`::

    TF_USE_LEGACY_KERAS=1 python -m autodl.export._tfmot_worker \\
        --model model.keras --data inputs.npz --out model.tflite --json-out result.json \\
        --method prune --task binary --sparsity 0.5

Never import it from a Keras 3 process: it sets ``TF_USE_LEGACY_KERAS=1``.

What it does:

1. loads the Keras 3 ``.keras`` model (``import keras`` is still Keras 3 here;
   it is used for loading only) and refuses layers it cannot handle, naming them;
2. rebuilds the same graph in tf_keras, layer by layer from each layer's
   configuration (autodl's custom layers have tf_keras twins below with the
   same math), flattening nested member models of an ensemble;
3. copies the trained weights and checks that the rebuilt model gives the
   same outputs as the Keras 3 model on the evaluation rows;
4. converts the un-optimized rebuild once, as the baseline to compare against;
5. prunes (``prune_low_magnitude``, polynomial-decay schedule,
   ``strip_pruning``) or quantization-aware trains (``quantize_apply`` on the
   Dense layers, output fake-quant on BatchNorm), fine-tuning on the training
   rows with BatchNorm frozen;
6. converts to TFLite (builtin ops only; int8 calibration through the LiteRT
   interpreter, see ``autodl.export.calibration``) and scores the ``.tflite`` file.

The result (or the reason for a refusal) goes to ``--json-out``; the exit code
is 0 on success, 3 when the model is not supported and 1 on any other failure,
whose one-line reason is also the last line of stderr.
"""

from __future__ import annotations

import os
import sys

# Must precede the first TensorFlow import: it decides what tf.keras is. Too
# late in a process that already loaded TensorFlow for Keras 3, so refuse
# rather than switch that process's tf.keras under it.
if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "autodl.export._tfmot_worker runs in its own process (python -m autodl.export._tfmot_worker, "
        "started by autodl.export.compress); it cannot be imported after TensorFlow"
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import gzip  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from autodl.export.calibration import litert_calibration, signature_names  # noqa: E402

EXIT_UNSUPPORTED = 3
REBUILD_TOLERANCE = 1e-4
PREDICT_BATCH = 4096
TFLITE_BATCH = 1024
CALIBRATION_ROWS = 256
CALIBRATION_BATCH = 32
# A schedule needs room to ramp up and then recover at the final sparsity.
MIN_FINE_TUNE_STEPS = 20
RAMP_FRACTION = 0.7
LEARNING_RATE = 1e-4


class Unsupported(Exception):
    """The model holds a layer this tool cannot rebuild or tfmot cannot wrap."""


class Failure(Exception):
    """A check failed (e.g. the rebuild does not match); the message says which."""


# --------------------------------------------------------------------------
# tf_keras twins of autodl's custom Keras 3 layers (same math, same weights).
# Each mirrors autodl/features/layers.py or zoo/layers.py; the rebuild check
# (max abs diff on real rows) catches any drift between the two.
# --------------------------------------------------------------------------


class ImputeMissing(tf_keras.layers.Layer):
    """NaN → one fill value per column."""

    def __init__(self, fill_values: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill_values = [float(v) for v in fill_values]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.cast(x, tf.float32)
        fill = tf.broadcast_to(tf.constant(self.fill_values, tf.float32), tf.shape(x))
        return tf.where(tf.math.is_nan(x), fill, x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_values": self.fill_values}


class MissingIndicator(tf_keras.layers.Layer):
    """1.0 where the selected columns are NaN."""

    def __init__(self, columns: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        picked = tf.gather(tf.cast(x, tf.float32), self.columns, axis=1)
        return tf.cast(tf.math.is_nan(picked), tf.float32)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "columns": self.columns}


class QuantileTransform(tf_keras.layers.Layer):
    """Piecewise-linear empirical CDF as clipped ramps, scaled to unit variance."""

    def __init__(self, quantiles: Sequence[Sequence[float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quantiles = [[float(v) for v in q] for q in quantiles]
        q = np.asarray(self.quantiles, dtype="float64")
        self._lo = q[:, :-1].astype("float32")
        self._inv_width = (1.0 / np.maximum(np.diff(q, axis=1), 1e-6)).astype("float32")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.expand_dims(tf.cast(x, tf.float32), -1)
        ramps = tf.clip_by_value((x - self._lo) * self._inv_width, 0.0, 1.0)
        u = tf.reduce_mean(ramps, axis=-1)
        return (u - 0.5) * np.float32(np.sqrt(12.0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantiles": self.quantiles}


class DateTimeParts(tf_keras.layers.Layer):
    """Epoch seconds → year, month, day, weekday, hour (days-to-civil, float64)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float64")
        super().__init__(**kwargs)

    def call(self, seconds: tf.Tensor) -> tf.Tensor:
        floor = tf.math.floor
        s = tf.cast(seconds, tf.float64)
        days = floor(s / 86400.0)
        hour = floor((s - days * 86400.0) / 3600.0)
        weekday = (days + 3.0) - floor((days + 3.0) / 7.0) * 7.0
        z = days + 719468.0
        era = floor(z / 146097.0)
        doe = z - era * 146097.0
        yoe = floor((doe - floor(doe / 1460.0) + floor(doe / 36524.0) - floor(doe / 146096.0)) / 365.0)
        doy = doe - (365.0 * yoe + floor(yoe / 4.0) - floor(yoe / 100.0))
        mp = floor((5.0 * doy + 2.0) / 153.0)
        day = doy - floor((153.0 * mp + 2.0) / 5.0) + 1.0
        month = tf.where(mp < 10.0, mp + 3.0, mp - 9.0)
        year = yoe + era * 400.0 + tf.cast(month <= 2.0, tf.float64)
        return tf.cast(tf.stack([year, month, day, weekday, hour], axis=-1), tf.float32)


class NumericTokenizer(tf_keras.layers.Layer):
    """``token_j = x_j * W_j + b_j``."""

    def __init__(self, d_token: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.d_token = int(d_token)

    def build(self, input_shape: Any) -> None:
        n = int(input_shape[-1])
        self.weight = self.add_weight(name="weight", shape=(n, self.d_token))
        self.bias = self.add_weight(name="bias", shape=(n, self.d_token))
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return tf.expand_dims(tf.cast(x, self.compute_dtype), -1) * self.weight + self.bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "d_token": self.d_token}


class CategoricalTokenizer(tf_keras.layers.Layer):
    """``token_j = E[x_j + offset_j] + b_j`` over one shared table."""

    def __init__(self, cardinalities: Sequence[int], d_token: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cardinalities = [int(c) for c in cardinalities]
        self.d_token = int(d_token)
        self._offsets = [int(v) for v in np.cumsum([0] + self.cardinalities[:-1])]

    def build(self, input_shape: Any) -> None:
        total = sum(self.cardinalities)
        self.embeddings = self.add_weight(name="embeddings", shape=(total, self.d_token))
        self.bias = self.add_weight(name="bias", shape=(len(self.cardinalities), self.d_token))
        super().build(input_shape)

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        # tf_keras's graph replay hands a one-element list over as a bare tensor.
        inputs = [inputs] if tf.is_tensor(inputs) else list(inputs)
        columns = [tf.reshape(tf.cast(x, tf.int32), (-1,)) for x in inputs]
        index = tf.stack(columns, axis=1) + tf.constant(self._offsets, tf.int32)
        return tf.gather(self.embeddings, index, axis=0) + self.bias

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cardinalities": self.cardinalities, "d_token": self.d_token}


class CLSToken(tf_keras.layers.Layer):
    """Prepends a learned token."""

    def __init__(self, d_token: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.d_token = int(d_token)

    def build(self, input_shape: Any) -> None:
        self.token = self.add_weight(name="token", shape=(self.d_token,))
        super().build(input_shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        cls = tf.broadcast_to(tf.reshape(self.token, (1, 1, self.d_token)), (tf.shape(x)[0], 1, self.d_token))
        return tf.concat([tf.cast(cls, x.dtype), x], axis=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "d_token": self.d_token}


class TakeFirstToken(tf_keras.layers.Layer):
    """The first token of a sequence."""

    def __init__(self, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keepdims = bool(keepdims)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x[:, :1, :] if self.keepdims else x[:, 0, :]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "keepdims": self.keepdims}


class VocabularyMatch(tf_keras.layers.Layer):
    """A one-OOV ``StringLookup`` as string equality (autodl.export.graph's builtin-only stand-in)."""

    def __init__(self, vocabulary: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary = [str(v) for v in vocabulary]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        vocabulary = tf.constant(self.vocabulary, dtype=tf.string)
        matches = tf.equal(tf.expand_dims(x, -1), tf.expand_dims(vocabulary, 0))
        positions = tf.range(1, len(self.vocabulary) + 1, dtype=tf.int32)
        return tf.cast(tf.reduce_max(tf.where(matches, positions, tf.zeros_like(positions)), axis=-1), tf.int64)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocabulary": self.vocabulary}


class ReGLU(tf_keras.layers.Layer):
    """``a * relu(b)`` over the two halves of the last axis."""

    def call(self, x: tf.Tensor) -> tf.Tensor:
        a, b = tf.split(x, 2, axis=-1)
        return a * tf.nn.relu(b)


def _make_periodic_embedding() -> type:
    # Defined in a function so the class can also be a tfmot PrunableLayer
    # without importing tfmot for the QAT-only path at module import time.
    import tensorflow_model_optimization as tfmot

    class PeriodicEmbedding(tf_keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
        """PLR embeddings; its (per-feature) linear map is prunable like a Dense kernel."""

        def __init__(self, n_frequencies: int, sigma: float, d_embedding: int, lite: bool = False, **kwargs: Any):
            super().__init__(**kwargs)
            self.n_frequencies = int(n_frequencies)
            self.sigma = float(sigma)
            self.d_embedding = int(d_embedding)
            self.lite = bool(lite)

        def build(self, input_shape: Any) -> None:
            n, k, d = int(input_shape[-1]), self.n_frequencies, self.d_embedding
            self.frequencies = self.add_weight(name="frequencies", shape=(n, k))
            self.kernel = self.add_weight(name="kernel", shape=(2 * k, d) if self.lite else (n, 2 * k, d))
            self.bias = self.add_weight(name="bias", shape=(d,) if self.lite else (n, d))
            super().build(input_shape)

        def call(self, x: tf.Tensor) -> tf.Tensor:
            v = (2.0 * math.pi) * tf.expand_dims(tf.cast(x, self.compute_dtype), -1) * self.frequencies
            periodic = tf.concat([tf.cos(v), tf.sin(v)], axis=-1)
            out = tf.matmul(periodic, self.kernel) if self.lite else tf.einsum("bnf,nfd->bnd", periodic, self.kernel)
            return tf.nn.relu(out + self.bias)

        def get_prunable_weights(self) -> list[tf.Variable]:
            return [self.kernel]

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "n_frequencies": self.n_frequencies,
                "sigma": self.sigma,
                "d_embedding": self.d_embedding,
                "lite": self.lite,
            }

    return PeriodicEmbedding


def custom_twins() -> dict[str, type]:
    """Class name → tf_keras twin, also the ``custom_objects`` for tfmot's cloning."""
    return {
        cls.__name__: cls
        for cls in (
            ImputeMissing, MissingIndicator, QuantileTransform, DateTimeParts, NumericTokenizer,
            CategoricalTokenizer, CLSToken, TakeFirstToken, ReGLU, VocabularyMatch, _make_periodic_embedding(),
        )
    }


# Standard Keras layers rebuilt from config by their tf_keras namesakes.
STANDARD_LAYERS = frozenset(
    {
        "Activation", "Add", "Average", "BatchNormalization", "Concatenate", "Dense", "Dropout",
        "Embedding", "Flatten", "IntegerLookup", "LayerNormalization", "MultiHeadAttention",
        "Multiply", "Normalization", "ReLU", "Rescaling", "Reshape", "Softmax", "StringLookup", "Subtract",
    }
)
# Keras 3 config keys tf_keras does not take but that may be dropped whatever
# their value: initializers and regularizers no longer matter once trained
# weights are copied in (weight decay lives in autodl's optimizer), and
# lookups with one OOV index need no hashing method.
_DROPPED_KEYS = frozenset({"vocabulary_size", "oov_method", "salt", "seed", "optional"})
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
# Keyword arguments every tf_keras layer takes.
_BASE_LAYER_KEYS = frozenset({"name", "dtype", "trainable"})

# Layers whose weights stay float during QAT (tfmot's default 8-bit scheme has
# no recipe for them); the int8 converter still quantizes them post-training.
QAT_FLOAT_LAYERS = frozenset({"Embedding", "BatchNormalization", "PeriodicEmbedding"})
# Of those, layers whose output is fake-quantized during QAT (parameters stay float).
QAT_OUTPUT_ONLY_LAYERS = frozenset({"BatchNormalization"})
# Layers annotated for QAT: tfmot's default 8-bit scheme supports them.
QAT_ANNOTATED_LAYERS = frozenset({"Dense"})
# Weight-free layers, and preprocessing that holds only constants: nothing to wrap.
QAT_NOTHING_TO_WRAP = frozenset(
    {"InputLayer", "Activation", "Add", "Average", "Concatenate", "Dropout", "Flatten", "ReLU", "Reshape",
     "Rescaling", "Softmax", "Multiply", "Subtract", "StringLookup", "IntegerLookup", "Normalization",
     "ImputeMissing", "MissingIndicator", "QuantileTransform", "DateTimeParts", "ReGLU", "TakeFirstToken",
     "VocabularyMatch"}
)
PRUNABLE_LAYERS = frozenset({"Dense", "Embedding", "MultiHeadAttention", "PeriodicEmbedding"})


# --------------------------------------------------------------------------
# Keras 3 graph → tf_keras graph
# --------------------------------------------------------------------------


def keras3_layers(model: Any) -> Iterator[tuple[str, Any]]:
    """``(path, layer)`` for every layer, descending into nested functional models."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for path, inner in keras3_layers(layer):
                yield f"{layer.name}/{path}", inner
        else:
            yield layer.name, layer


class Rebuilder:
    """Rebuilds a Keras 3 functional model in tf_keras and copies its weights.

    Nested functional models (the members of an averaged ensemble) are
    flattened into one graph, their layers prefixed ``<member>__``, because
    tfmot's quantization cannot clone nested models.
    """

    def __init__(self, twins: dict[str, type]) -> None:
        self.twins = twins
        self.pairs: list[tuple[Any, Any]] = []  # (Keras 3 layer, tf_keras layer)
        self._built: dict[tuple[str, int], Any] = {}

    def rebuild(self, model: Any) -> Any:
        import keras

        inputs = keras.tree.map_structure(
            lambda t: tf_keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name), model.input
        )
        outputs = self._run(model, inputs, prefix="")
        rebuilt = tf_keras.Model(inputs, outputs, name=model.name)
        self._copy_weights()
        return rebuilt

    def _run(self, model: Any, inputs: Any, prefix: str) -> Any:
        import keras

        tensors = {id(x): y for x, y in zip(model.inputs, keras.tree.flatten(inputs))}
        # Keras 3 keeps no public node API; these are the attributes its own
        # Functional.call walks (keras/src/ops/function.py).
        by_depth = model._nodes_by_depth
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if node.is_input:
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                op = node.operation
                if isinstance(op, keras.Model):
                    nested = args[0] if len(args) == 1 and not kwargs else args
                    out = self._run(op, nested, prefix=f"{prefix}{op.name}__")
                else:
                    out = self._twin(op, prefix)(*args, **kwargs)
                for x, y in zip(node.outputs, keras.tree.flatten(out)):
                    tensors[id(x)] = y
        flat = [tensors[id(x)] for x in model.outputs]
        return keras.tree.pack_sequence_as(model.output, flat)

    def _twin(self, layer: Any, prefix: str) -> Any:
        key = (prefix, id(layer))
        if key in self._built:  # a layer called twice shares its twin (and weights)
            return self._built[key]
        kind = type(layer).__name__
        name = prefix + layer.name
        if kind in self.twins:
            config = {k: v for k, v in layer.get_config().items() if k not in ("name", "dtype", "trainable")}
            twin = self.twins[kind](name=name, **config)
        elif kind in STANDARD_LAYERS:
            twin = getattr(tf_keras.layers, kind)(**self._standard_config(layer, name))
        else:
            raise Unsupported(
                f"cannot rebuild layer '{layer.name}' ({kind}) in tf_keras for tfmot; "
                "export without --prune/--qat"
            )
        twin.trainable = layer.trainable
        self._built[key] = twin
        self.pairs.append((layer, twin))
        return twin

    @staticmethod
    def _standard_config(layer: Any, name: str) -> dict[str, Any]:
        kind = type(layer).__name__
        config = dict(layer.get_config())
        config["name"] = name
        policy = config.get("dtype")
        if isinstance(policy, dict):  # Keras 3 serializes a DTypePolicy object
            config["dtype"] = policy.get("config", {}).get("name", "float32")
        if kind in ("StringLookup", "IntegerLookup"):
            if config.get("output_mode") != "int" or config.get("invert"):
                raise Unsupported(f"layer '{layer.name}' ({kind}) is not an index lookup; export without --prune/--qat")
            config["vocabulary"] = list(layer.get_vocabulary(include_special_tokens=False))
            config.pop("idf_weights", None)
            config.pop("dtype", None)  # Keras 3 records the float policy; tf_keras wants the int64 index type
        if kind == "Normalization":
            config["mean"] = np.asarray(layer.mean).tolist() if config.get("mean") is not None else None
            config["variance"] = np.asarray(layer.variance).tolist() if config.get("variance") is not None else None
        if kind == "Reshape":
            config["target_shape"] = tuple(config["target_shape"])
        accepted = _init_parameters(getattr(tf_keras.layers, kind)) | _BASE_LAYER_KEYS
        for key in list(config):
            if key.endswith(_DROPPED_SUFFIXES) or key in _DROPPED_KEYS:
                del config[key]
            elif key not in accepted:
                # A Keras 3-only option (use_gate, rms_scaling, sliding_window,
                # lora_rank...) is dropped only at its neutral value, which
                # tf_keras's layer then computes; anything else changes the math.
                value = config.pop(key)
                if value not in (None, False):
                    raise Unsupported(
                        f"layer '{layer.name}' ({kind}) uses {key}={value!r}, which tf_keras lacks; "
                        "export without --prune/--qat"
                    )
        return config

    def _copy_weights(self) -> None:
        for source, twin in self.pairs:
            values = [np.asarray(w.numpy()) for w in source.weights]
            if len(values) != len(twin.weights):
                raise Failure(
                    f"layer '{source.name}' ({type(source).__name__}) has {len(values)} weights "
                    f"but its tf_keras rebuild has {len(twin.weights)}"
                )
            order = _match_weights(source, twin)
            ordered = [values[i] for i in order]
            for value, target in zip(ordered, twin.weights):
                if tuple(value.shape) != tuple(target.shape):
                    raise Failure(
                        f"layer '{source.name}': weight {target.name} has shape {tuple(target.shape)} in tf_keras, "
                        f"{tuple(value.shape)} in Keras 3"
                    )
            twin.set_weights(ordered)


def _init_parameters(cls: type) -> set[str]:
    """Keyword arguments ``cls(...)`` takes, following ``**kwargs`` up to the base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return names - {"self"}


def _match_weights(source: Any, twin: Any) -> list[int]:
    """For each tf_keras weight, the index of the Keras 3 weight with the same relative path.

    Falls back to creation order when the paths do not line up one to one
    (shapes are checked by the caller either way).
    """

    def relative(path: str, layer_name: str) -> str:
        path = path.split(":")[0]
        marker = layer_name.split("__")[-1] + "/"
        return path.split(marker, 1)[-1] if marker in path else path.rsplit("/", 1)[-1]

    src = [relative(getattr(w, "path", w.name), source.name) for w in source.weights]
    dst = [relative(w.name, twin.name) for w in twin.weights]
    if sorted(src) == sorted(dst) and len(set(src)) == len(src):
        return [src.index(d) for d in dst]
    return list(range(len(src)))


# --------------------------------------------------------------------------
# Data, prediction and metrics
# --------------------------------------------------------------------------


def load_arrays(path: Path) -> dict[str, Any]:
    """The parent's ``.npz``: ``columns`` plus ``<split>__<i>`` arrays and ``train_y``/``eval_y``."""
    with np.load(path, allow_pickle=False) as data:
        columns = [str(c) for c in data["columns"]]
        out: dict[str, Any] = {"train_y": data["train_y"], "eval_y": data["eval_y"]}
        for split in ("train", "eval", "rep"):
            if f"{split}__0" in data:
                out[split] = {c: _as_model_array(data[f"{split}__{i}"]) for i, c in enumerate(columns)}
    return out


def _as_model_array(a: np.ndarray) -> np.ndarray:
    # Strings arrive as numpy unicode (no pickle); tf.constant takes object arrays of str.
    return a.astype(object) if a.dtype.kind == "U" else a


def rows(x: dict[str, np.ndarray]) -> int:
    return len(next(iter(x.values())))


def batches(x: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, rows(x), size):
        yield {k: v[start : start + size] for k, v in x.items()}


def predict(model: Any, x: dict[str, np.ndarray]) -> np.ndarray:
    """Runs a Keras 3 or tf_keras model on its dict of column inputs, in batches."""
    out = []
    for batch in batches(x, PREDICT_BATCH):
        feed = {c: tf.constant(v) for c, v in batch.items()}
        out.append(np.asarray(model(feed, training=False)))
    return np.concatenate(out).astype(np.float64)


def score(task: str, y: np.ndarray, output: np.ndarray) -> float:
    if task == "regression":
        return float(np.sqrt(np.mean((output.reshape(-1) - y.astype(np.float64)) ** 2)))
    return float(np.mean(output.argmax(axis=1) == y.astype(np.int64)))


def dataset(x: dict[str, np.ndarray], y: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    # Keras rejects numpy str arrays; tf.data of tf.string tensors is what fit takes.
    feed = {c: tf.constant(v) for c, v in x.items()}
    ds = tf.data.Dataset.from_tensor_slices((feed, tf.constant(y)))
    return ds.shuffle(min(len(y), 100_000), seed=seed, reshuffle_each_iteration=True).batch(batch_size)


# --------------------------------------------------------------------------
# Support checks
# --------------------------------------------------------------------------


def zoo_name(model: Any, layer_name: str) -> str:
    """The zoo architecture a layer belongs to (layers are named ``<arch>_...``)."""
    try:
        from autodl import zoo

        names = sorted((e.card.name for e in zoo.list_entries()), key=len, reverse=True)
    except Exception:  # noqa: BLE001  (a name for the message only)
        names = []
    for name in names:
        if layer_name.startswith(f"{name}_"):
            return name
    return model.name.removeprefix("autodl_")


def check_rebuildable(model: Any, twins: dict[str, type], method: str) -> None:
    """Raises ``Unsupported`` naming the first layers that have no tf_keras rebuild."""
    import keras

    if not isinstance(model.input, dict):
        raise Unsupported(
            f"--{method} needs a model whose inputs are a dict keyed by column; export without --{method}"
        )
    known = set(twins) | STANDARD_LAYERS | {"InputLayer"}
    bad = [(layer.name, type(layer).__name__) for _, layer in keras3_layers(model) if type(layer).__name__ not in known]
    # Keras 3 ops applied to symbolic tensors (keras.ops.add...) appear as operations, not layers.
    bad += [
        (op.name, type(op).__name__)
        for op in getattr(model, "operations", [])
        if not isinstance(op, keras.layers.Layer)
    ]
    if bad:
        shown = ", ".join(f"'{n}' ({k})" for n, k in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise Unsupported(
            f"--{method} cannot rebuild layer{'s' if len(bad) > 1 else ''} {shown} of zoo model "
            f"'{zoo_name(model, bad[0][0])}' in tf_keras; export without --{method}"
        )


def check_qat_support(model: Any) -> None:
    """Raises ``Unsupported`` naming the layers QAT can neither wrap nor keep float, largest first."""
    bad = []
    for _, layer in keras3_layers(model):
        kind = type(layer).__name__
        if kind in QAT_ANNOTATED_LAYERS | QAT_FLOAT_LAYERS | QAT_NOTHING_TO_WRAP:
            continue
        bad.append((layer.name, kind, layer.count_params()))
    # The largest layers first: those are what QAT would have to cover.
    bad.sort(key=lambda item: -item[2])
    if bad:
        shown = ", ".join(f"'{n}' ({k})" for n, k, _ in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        arch = zoo_name(model, bad[0][0])
        raise Unsupported(
            f"--qat cannot wrap layer{'s' if len(bad) > 1 else ''} {shown} of zoo model '{arch}'; "
            "export without --qat, or fit with --models mlp_plr,mlp,resnet"
        )


# --------------------------------------------------------------------------
# Optimization
# --------------------------------------------------------------------------


def fine_tune_plan(n_rows: int, batch_size: int, epochs: int) -> tuple[int, int]:
    """``(epochs, steps_per_epoch)`` with at least ``MIN_FINE_TUNE_STEPS`` steps in all."""
    steps = max(1, math.ceil(n_rows / batch_size))
    epochs = max(1, epochs)
    if epochs * steps < MIN_FINE_TUNE_STEPS:
        steps = math.ceil(MIN_FINE_TUNE_STEPS / epochs)  # repeat the data rather than under-train
    return epochs, steps


def freeze_normalization(model: Any) -> None:
    """Fine-tune with BatchNormalization in inference mode (frozen moving statistics).

    The fine-tune is short; with batch statistics it would optimize a function
    other than the one exported, and the drifting moving averages undo the fit
    (measured on a briefly trained ResNet regressor: RMSE 0.95 → 1.21 after
    pruning unfrozen, → 0.53 frozen).
    """
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.trainable = False


def compile_for(model: Any, task: str, learning_rate: float) -> None:
    loss = "mse" if task == "regression" else "sparse_categorical_crossentropy"
    # Adam's steps do not depend on the loss scale, so regression on the
    # target's own scale (the model ends with a Rescaling) needs no reweighting.
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=loss)


Optimized = tuple[Any, dict[str, Any]]  # the optimized tf_keras model and what was done to it


def prune(model: Any, data: dict[str, Any], args: argparse.Namespace, twins: dict[str, type]) -> Optimized:
    """Magnitude pruning to ``args.sparsity`` while fine-tuning, then ``strip_pruning``."""
    import tensorflow_model_optimization as tfmot

    sparsity_api = tfmot.sparsity.keras
    epochs, steps = fine_tune_plan(rows(data["train"]), args.batch_size, args.epochs)
    total = epochs * steps
    ramp = max(1, int(RAMP_FRACTION * total))
    frequency = max(1, ramp // 16)
    end_step = max(frequency, frequency * (ramp // frequency))  # the last mask update hits final_sparsity
    schedule = sparsity_api.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=args.sparsity, begin_step=0, end_step=end_step, frequency=frequency
    )
    pruned_names: list[str] = []

    def wrap(layer: Any) -> Any:
        if type(layer).__name__ in PRUNABLE_LAYERS:
            pruned_names.append(layer.name)
            return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    with tf_keras.utils.custom_object_scope(twins):
        wrapped = tf_keras.models.clone_model(model, clone_function=wrap)
    compile_for(wrapped, args.task, args.learning_rate)
    ds = dataset(data["train"], data["train_y"], args.batch_size, args.seed).repeat()
    wrapped.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[sparsity_api.UpdatePruningStep()])
    stripped = sparsity_api.strip_pruning(wrapped)

    zeros = total_weights = 0
    per_layer = {}
    for layer in stripped.layers:
        if layer.name not in pruned_names:
            continue
        kernels = _prunable_weights(layer)
        z = sum(int(np.sum(k.numpy() == 0)) for k in kernels)
        n = sum(int(np.prod(k.shape)) for k in kernels)
        per_layer[layer.name] = z / max(n, 1)
        zeros, total_weights = zeros + z, total_weights + n
    info = {
        "sparsity": zeros / max(total_weights, 1),
        "pruned_layers": per_layer,
        "fine_tune_steps": total,
        "schedule": {"begin_step": 0, "end_step": end_step, "frequency": frequency},
    }
    return stripped, info


def _prunable_weights(layer: Any) -> list[Any]:
    kind = type(layer).__name__
    if kind == "Dense":
        return [layer.kernel]
    if kind == "Embedding":
        return [layer.embeddings]
    if kind == "MultiHeadAttention":
        return [d.kernel for d in (layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense)]
    return list(layer.get_prunable_weights())


def qat(model: Any, data: dict[str, Any], args: argparse.Namespace, twins: dict[str, type]) -> Optimized:
    """Quantization-aware fine-tuning of the Dense layers (and BatchNorm outputs)."""
    import tensorflow_model_optimization as tfmot

    q = tfmot.quantization.keras
    output_only = _output_only_config()
    annotated: list[str] = []
    outputs_only: list[str] = []

    def annotate(layer: Any) -> Any:
        kind = type(layer).__name__
        if kind in QAT_ANNOTATED_LAYERS:
            annotated.append(layer.name)
            return q.quantize_annotate_layer(layer)
        if kind in QAT_OUTPUT_ONLY_LAYERS:
            # A fake-quant on its output keeps the converter from folding a
            # BatchNorm into the next Dense's QAT weights (which leaves them float).
            outputs_only.append(layer.name)
            return q.quantize_annotate_layer(layer, quantize_config=output_only())
        return layer

    # Annotating only the supported layers leaves preprocessing (string
    # lookups, imputation, quantile ramps) and the float-kept layers as they are.
    with tf_keras.utils.custom_object_scope(twins):
        marked = tf_keras.models.clone_model(model, clone_function=annotate)
    with q.quantize_scope({**twins, output_only.__name__: output_only}):
        quantized = q.quantize_apply(marked)
    ranges = init_activation_ranges(quantized, model, data["train"])
    compile_for(quantized, args.task, args.learning_rate)
    epochs, steps = fine_tune_plan(rows(data["train"]), args.batch_size, args.epochs)
    ds = dataset(data["train"], data["train_y"], args.batch_size, args.seed).repeat()
    quantized.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=0)
    kept_float = [
        layer.name
        for layer in model.layers
        if type(layer).__name__ in QAT_FLOAT_LAYERS and layer.name not in outputs_only
    ]
    info = {
        "qat_layers": annotated,  # weights and activations fake-quantized
        "qat_output_only": outputs_only,  # float parameters, fake-quantized output
        "float_during_qat": kept_float,  # quantized post-training by the converter
        "initialized_ranges": ranges,
        "fine_tune_steps": epochs * steps,
    }
    return quantized, info


def init_activation_ranges(quantized: Any, float_model: Any, x: dict[str, np.ndarray]) -> int:
    """Starts every QAT activation range at the float model's observed range; returns how many.

    tfmot starts them at [-6, 6] and moves them by an EMA with decay 0.999,
    so a fine-tune of a few hundred steps would keep ranges that were never
    measured. Measuring them first (as post-training calibration does) gives
    the fine-tune sensible int8 grids to adapt to.
    """
    targets: list[tuple[Any, Any, str, bool]] = []  # (min var, max var, float layer, before activation)
    for wrapper in quantized.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None or not hasattr(wrapper, "quantize_config"):
            continue
        by_name = {v.name.split("/")[-1].split(":")[0]: v for v in wrapper.weights}
        for prefix, pre in (("output", False), ("post_activation", False), ("pre_activation", True)):
            if f"{prefix}_min" in by_name and f"{prefix}_max" in by_name:
                targets.append((by_name[f"{prefix}_min"], by_name[f"{prefix}_max"], inner.name, pre))
    if not targets:
        return 0
    names = sorted({name for _, _, name, _ in targets})
    layers = {name: float_model.get_layer(name) for name in names}
    probe = tf_keras.Model(
        float_model.inputs, {n: (layers[n].input, layers[n].output) for n in names}
    )
    low: dict[tuple[str, bool], float] = {}
    high: dict[tuple[str, bool], float] = {}
    for batch in batches({k: v[:CALIBRATION_ROWS * 8] for k, v in x.items()}, PREDICT_BATCH):
        outputs = probe({c: tf.constant(v) for c, v in batch.items()}, training=False)
        for name, (inp, out) in outputs.items():
            values = {False: out.numpy()}
            if any(n == name and pre for _, _, n, pre in targets):
                layer = layers[name]  # the Dense before its (softmax) activation
                values[True] = inp.numpy() @ layer.kernel.numpy() + (layer.bias.numpy() if layer.use_bias else 0.0)
            for pre, v in values.items():
                low[(name, pre)] = min(low.get((name, pre), 0.0), float(v.min()))
                high[(name, pre)] = max(high.get((name, pre), 0.0), float(v.max()))
    for min_var, max_var, name, pre in targets:
        # TFLite needs 0 inside every range; a degenerate range would divide by zero.
        min_var.assign(tf.fill(tf.shape(min_var), low[(name, pre)]))
        max_var.assign(tf.fill(tf.shape(max_var), max(high[(name, pre)], low[(name, pre)] + 1e-6)))
    return len(targets)


def _output_only_config() -> type:
    """A tfmot QuantizeConfig that fake-quantizes a layer's output only (8-bit, asymmetric)."""
    import tensorflow_model_optimization as tfmot

    q = tfmot.quantization.keras

    class OutputOnlyQuantizeConfig(q.QuantizeConfig):
        def get_weights_and_quantizers(self, layer: Any) -> list:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list:
            # As tfmot's own output-only config: 8-bit, asymmetric, per tensor.
            return [q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self) -> dict[str, Any]:
            return {}

    return OutputOnlyQuantizeConfig


# --------------------------------------------------------------------------
# TFLite
# --------------------------------------------------------------------------


def float_layers(model: Any) -> list[str]:
    """The numeric preprocessing layers (member prefixes ``<member>__`` aside), kept float in int8."""
    from autodl.export.graph import is_numeric_preprocessing

    return [layer.name for layer in model.layers if is_numeric_preprocessing(layer.name.split("__")[-1])]


def convert(
    model: Any,
    quantize: str,
    calibration: dict[str, np.ndarray],
    keys: dict[str, str],
    output_name: str,
    *,
    qat: bool = False,
) -> tuple[bytes, str]:
    """TFLite bytes with builtin ops only, and how they are quantized.

    The signature ``serving_default`` takes the model's inputs by name
    (``(batch,)`` or ``(batch, k)``) and returns ``{output_name: output}``.
    """
    specs = {c: tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=keys[c]) for c, t in model.input.items()}

    @tf.function(input_signature=[specs])
    def serve(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        return {output_name: model(inputs, training=False)}

    function = serve.get_concrete_function()

    def converter(full_integer: bool) -> Any:
        # With the model as trackable object the lookup tables' initializers
        # travel along (TFLite's HASHTABLE ops, builtin); without one, TF 2.21
        # writes no SignatureDef at all (measured).
        conv = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if full_integer:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
            conv.representative_dataset = _representative(calibration, keys)
            # Float in and out: callers feed raw values, and strings cannot be int8 anyway.
            conv.inference_input_type = tf.float32
            conv.inference_output_type = tf.float32
        return conv

    if quantize != "int8":
        if qat:
            return converter(False).convert(), "qat int8 layers; dynamic-range int8 weights elsewhere"
        return converter(False).convert(), "float32" if quantize == "none" else "dynamic-range int8 weights"
    try:
        with litert_calibration(keep_float=float_layers(model)):
            return converter(True).convert(), "full-integer int8"
    except Exception as exc:  # noqa: BLE001  (only the QAT case has a fallback)
        if not qat:
            raise
        # TF's quantizer cannot always reconcile QAT's trained ranges with
        # calibrated ones (a concatenation of a QAT-ranged and a calibrated
        # tensor must share one scale); tfmot's own recipe converts without
        # calibration: QAT layers int8, the rest with int8 weights.
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[-1]}" if text else type(exc).__name__
        label = (
            "qat int8 layers; dynamic-range int8 weights elsewhere "
            f"(TF's full-integer quantizer rejected the QAT graph: {reason})"
        )
        return converter(False).convert(), label


def _representative(x: dict[str, np.ndarray], keys: dict[str, str]) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    # The calibrator sizes its inputs from the first sample: keep every batch full.
    size = min(CALIBRATION_BATCH, rows(x))

    def gen() -> Iterator[dict[str, np.ndarray]]:
        for batch in batches(x, size):
            if rows(batch) == size:
                yield {keys[c]: _litert_array(v) for c, v in batch.items()}

    return gen


def _litert_array(a: np.ndarray) -> np.ndarray:
    # LiteRT copies string tensors from numpy bytes arrays, not from str objects.
    return np.char.encode(a.astype(str), "utf-8") if a.dtype == object else a


def tflite_predict(content: bytes, x: dict[str, np.ndarray], keys: dict[str, str]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=content).get_signature_runner("serving_default")
    out = []
    for batch in batches(x, TFLITE_BATCH):
        result = runner(**{keys[c]: _litert_array(v) for c, v in batch.items()})
        out.append(np.asarray(next(iter(result.values()))))
    return np.concatenate(out).astype(np.float64)


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import keras

    import autodl.features.layers  # noqa: F401  (registers the custom layers for loading)
    import autodl.zoo.tabular  # noqa: F401

    try:  # the edge exporter's builtin-only StringLookup stand-in, when that module is there
        import autodl.export.graph  # noqa: F401
    except ImportError:
        pass

    start = time.perf_counter()
    data = load_arrays(Path(args.data))
    source = keras.models.load_model(args.model, compile=False)
    twins = custom_twins()
    check_rebuildable(source, twins, args.method)
    if args.method == "qat":
        check_qat_support(source)
    keys = signature_names(list(source.input))

    rebuilt = Rebuilder(twins).rebuild(source)
    reference = predict(source, data["eval"])
    before_out = predict(rebuilt, data["eval"])
    diff = float(np.max(np.abs(reference - before_out))) if reference.size else 0.0
    if not np.isfinite(diff) or diff > REBUILD_TOLERANCE:
        raise Failure(
            f"the tf_keras rebuild of '{source.name}' differs from the Keras 3 model by {diff:.3g} "
            f"(> {REBUILD_TOLERANCE:g}) on the evaluation rows; not optimizing a model that is not the trained one"
        )
    metric_before = score(args.task, data["eval_y"], before_out)

    calibration = data.get("rep") or {k: v[:CALIBRATION_ROWS] for k, v in data["train"].items()}
    output_name = "value" if args.task == "regression" else "probabilities"  # as autodl.export.tflite
    # The same conversion without pruning/QAT: what the optimization is worth.
    # Converted first, because pruning writes its masks into the shared layers.
    base, base_quantization = convert(rebuilt, args.quantize, calibration, keys, output_name)
    baseline = {
        "size_bytes": len(base),
        "gzip_bytes": len(gzip.compress(base)),
        "tflite_metric": score(args.task, data["eval_y"], tflite_predict(base, data["eval"], keys)),
        "quantization": base_quantization,
    }

    freeze_normalization(rebuilt)
    optimize = prune if args.method == "prune" else qat
    optimized, info = optimize(rebuilt, data, args, twins)
    metric_after = score(args.task, data["eval_y"], predict(optimized, data["eval"]))

    content, quantization = convert(
        optimized, args.quantize, calibration, keys, output_name, qat=args.method == "qat"
    )
    tflite_metric = score(args.task, data["eval_y"], tflite_predict(content, data["eval"], keys))
    Path(args.out).write_bytes(content)  # only once it loads and runs
    info.update(quantization=quantization, baseline=baseline, signature_inputs=keys)
    return {
        "status": "ok",
        "method": args.method,
        "tflite_path": str(args.out),
        "sparsity": float(info.get("sparsity", 0.0)),
        "size_bytes": len(content),
        "gzip_bytes": len(gzip.compress(content)),
        "metric_name": "rmse" if args.task == "regression" else "accuracy",
        "metric_before": metric_before,
        "metric_after": metric_after,
        "tflite_metric": tflite_metric,
        "rebuild_max_abs_diff": diff,
        "seconds": time.perf_counter() - start,
        "details": info,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m autodl.export._tfmot_worker", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--json-out", required=True)
    p.add_argument("--method", choices=["prune", "qat"], required=True)
    p.add_argument("--task", choices=["binary", "multiclass", "regression"], required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--quantize", choices=["int8", "dynamic", "none"], default="int8")
    p.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tf.keras.utils.set_random_seed(args.seed)
    try:
        result, code = run(args), 0
    except Unsupported as exc:
        result, code = {"status": "unsupported", "message": str(exc)}, EXIT_UNSUPPORTED
    except Failure as exc:
        result, code = {"status": "error", "message": str(exc)}, 1
    except Exception as exc:  # noqa: BLE001  (reported to the parent, traceback kept on stderr)
        traceback.print_exc()
        result, code = {"status": "error", "message": f"{type(exc).__name__}: {exc}".splitlines()[0]}, 1
    Path(args.json_out).write_text(json.dumps(result))
    if code:
        print(result["message"], file=sys.stderr)  # also ends the log a person may read
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Keras preprocessing for a table: one named input per raw column → ``EncodedFeatures``.

Example:

>>> import numpy as np
>>> from autodl.data.schema import ColumnSpec, Schema
>>> schema = Schema("y", "binary", [ColumnSpec("x", "numeric", "float", 3, 0.0)])
>>> stats = fit_stats({"x": np.array([1.0, 2.0, 3.0], dtype="float32")}, schema)
>>> inputs, features = build_inputs(schema, stats)
>>> list(inputs), tuple(features.numeric.shape)
(['x'], (None, 1))
"""

from __future__ import annotations

import re
from typing import Any, Callable

import keras

from autodl.data.schema import ColumnSpec, Schema
from autodl.features.layers import DateTimeParts, ImputeMissing, MissingIndicator, QuantileTransform
from autodl.features.stats import FeatureStats, fit_stats  # noqa: F401  (fit_stats: docstring example)
from autodl.zoo import EncodedFeatures, TextStats

TextEncoder = Callable[[Any, TextStats, str], Any]
"""``encoder(text, stats, name) -> (batch, d)``: one text column's strings to its representation."""

NUMERIC_TRANSFORMS: tuple[str, ...] = ("quantile", "standard")
# Names of the numeric preprocessing layers ``encode`` creates (per-column ones end in a suffix):
# exporters keep them in float when quantizing.
NUMERIC_PREPROCESSING_LAYERS: tuple[str, ...] = ("numeric_raw", "impute", "quantile", "standardize", "missing", "numeric")
COLUMN_LAYER_SUFFIXES: tuple[str, ...] = ("_col", "_parts")
_INPUT_DTYPES = {"float": "float32", "int": "int64", "string": "string", "datetime": "float64"}


def layer_name(column: str) -> str:
    """A Keras-safe layer name for a column (the input dict keeps the raw name)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", column) or "column"


def input_name(column: str) -> str:
    """The input tensor's name: the column name itself (Keras matches dict keys to it), less '/'."""
    return column.replace("/", "_") or "column"


def make_inputs(schema: Schema) -> dict[str, Any]:
    """One scalar-per-row ``keras.Input`` per feature column, keyed by the raw column name."""
    return {
        c.name: keras.Input(shape=(), dtype=_INPUT_DTYPES[c.storage], name=input_name(c.name)) for c in schema.features
    }


def build_inputs(
    schema: Schema, stats: FeatureStats, *, numeric_transform: str = "quantile", text_encoder: TextEncoder | None = None
) -> tuple[dict[str, Any], EncodedFeatures]:
    """Model inputs and the encoded tensors a zoo builder consumes.

    ``text_encoder`` turns each text column into its representation (a zoo text
    entry's ``build`` with the trial's hyperparameters); by default, TF-IDF of
    words and word pairs (``bag_of_ngrams`` at its defaults).
    """
    if numeric_transform not in NUMERIC_TRANSFORMS:
        raise ValueError(f"numeric_transform must be one of {NUMERIC_TRANSFORMS}")
    inputs = make_inputs(schema)
    return inputs, encode(inputs, schema, stats, numeric_transform=numeric_transform, text_encoder=text_encoder)


def default_text_encoder(text: Any, stats: TextStats, name: str) -> Any:
    import keras_tuner as kt

    from autodl import zoo

    return zoo.get("bag_of_ngrams").build(kt.HyperParameters(), text, stats, name=name)


def encode(
    inputs: dict[str, Any], schema: Schema, stats: FeatureStats, *, numeric_transform: str = "quantile",
    text_encoder: TextEncoder | None = None,
) -> EncodedFeatures:
    numeric_parts: list[Any] = []
    categorical: list[Any] = []
    cardinalities: list[int] = []
    texts: list[Any] = []
    for col in schema.features:
        x = inputs[col.name]
        if col.kind == "numeric":
            numeric_parts.append(keras.layers.Reshape((1,), name=f"{layer_name(col.name)}_col")(x))
        elif col.kind == "datetime":
            numeric_parts.append(DateTimeParts(name=f"{layer_name(col.name)}_parts")(x))
        elif col.kind == "categorical":
            index, cardinality = _lookup(col, stats)(x), len(stats.vocabularies[col.name]) + 1
            categorical.append(index)
            cardinalities.append(cardinality)
        elif col.kind == "text":
            texts.append((text_encoder or default_text_encoder)(x, stats.texts[col.name], layer_name(col.name)))
    numeric = None
    if numeric_parts:
        raw = numeric_parts[0] if len(numeric_parts) == 1 else keras.layers.Concatenate(name="numeric_raw")(numeric_parts)
        filled = ImputeMissing(stats.fill_values, name="impute")(raw)
        if numeric_transform == "quantile":
            numeric = QuantileTransform(stats.quantiles, name="quantile")(filled)
        else:
            numeric = keras.layers.Normalization(mean=stats.means, variance=stats.variances, name="standardize")(filled)
        if stats.missing_columns:
            indicators = MissingIndicator(stats.missing_columns, name="missing")(raw)
            numeric = keras.layers.Concatenate(name="numeric")([numeric, indicators])
    text = None
    if texts:
        text = texts[0] if len(texts) == 1 else keras.layers.Concatenate(name="text")(texts)
    return EncodedFeatures(
        numeric=numeric, categorical=tuple(categorical), cardinalities=tuple(cardinalities), text=text
    )


def _lookup(col: ColumnSpec, stats: FeatureStats) -> keras.layers.Layer:
    vocab = stats.vocabularies[col.name]
    name = f"{layer_name(col.name)}_lookup"
    if col.storage == "int":
        return keras.layers.IntegerLookup(vocabulary=vocab, num_oov_indices=1, name=name)
    return keras.layers.StringLookup(vocabulary=vocab, num_oov_indices=1, name=name)

"""Input encoding shared by the MLP-like tabular builders (private).

Kept out of the entry modules so that importing one entry never registers
another (registration order is the search's order).
"""

from __future__ import annotations

from typing import Any

import keras

from autodl.zoo.registry import EncodedFeatures

ONE_HOT_MAX_CARDINALITY = 16
TEXT_PROJECTION_UNITS = 32


def embedding_dim(cardinality: int) -> int:
    """Embedding width for a high-cardinality column: ``min(32, (card + 1) // 2)``."""
    return min(32, (cardinality + 1) // 2)


def check_features(features: EncodedFeatures) -> None:
    if len(features.categorical) != len(features.cardinalities):
        raise ValueError(
            f"{len(features.categorical)} categorical tensors but {len(features.cardinalities)} cardinalities"
        )
    if features.numeric is None and not features.categorical and features.text is None:
        raise ValueError("EncodedFeatures has no numeric, categorical or text features")


def as_index(x: Any, name: str) -> Any:
    """A ``(batch,)`` index tensor; accepts ``(batch, 1)`` as well."""
    if len(x.shape) == 2 and x.shape[-1] == 1:
        return keras.layers.Reshape((), name=name)(x)
    if len(x.shape) != 1:
        raise ValueError(f"categorical tensors must be (batch,), got shape {tuple(x.shape)}")
    return x


def encode_categoricals(features: EncodedFeatures, prefix: str) -> list[Any]:
    """One ``(batch, k)`` tensor per categorical column.

    Up to 16 categories: a one-hot vector, implemented as a trainable ``(card, card)``
    Embedding initialized to the identity (so it *is* the one-hot encoding at
    initialization, and one-hot followed by the next Dense layer spans the same
    functions). Above 16: a learned ``min(32, (card + 1) // 2)``-dim embedding.

    Why not CategoryEncoding / ``ops.one_hot``: on TF 2.21 / Keras 3.15 a trained model
    with no trainable gather (Embedding) anywhere leaks ~4 MiB of TF state per model
    fitted, even after ``clear_session()``; a search of many trials turns that into
    steadily growing memory. One trainable Embedding in the model is enough to avoid it
    (measured; numeric-only tables still show the leak).
    """
    parts = []
    for i, (x, card) in enumerate(zip(features.categorical, features.cardinalities)):
        x = as_index(x, f"{prefix}_cat{i}_index")
        if card <= ONE_HOT_MAX_CARDINALITY:
            layer = keras.layers.Embedding(
                card, card, embeddings_initializer="identity", name=f"{prefix}_cat{i}_onehot"
            )
        else:
            layer = keras.layers.Embedding(card, embedding_dim(card), name=f"{prefix}_cat{i}_embedding")
        parts.append(layer(x))
    return parts


def project_text(features: EncodedFeatures, prefix: str, units: int = TEXT_PROJECTION_UNITS) -> Any | None:
    """A linear projection of the TF-IDF vector, or ``None`` without text."""
    if features.text is None:
        return None
    return keras.layers.Dense(units, name=f"{prefix}_text_projection")(features.text)


def concatenate(parts: list[Any], name: str) -> Any:
    if not parts:
        raise ValueError("nothing to concatenate")
    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(axis=-1, name=name)(parts)


def flat_inputs(features: EncodedFeatures, prefix: str, numeric: Any | None = None) -> Any:
    """``(batch, width)``: numeric (or its given replacement), encoded categoricals, projected text."""
    check_features(features)
    parts: list[Any] = []
    numeric = features.numeric if numeric is None else numeric
    if numeric is not None:
        parts.append(numeric)
    parts.extend(encode_categoricals(features, prefix))
    text = project_text(features, prefix)
    if text is not None:
        parts.append(text)
    return concatenate(parts, f"{prefix}_inputs")


def mlp_blocks(x: Any, *, layers: int, units: int, dropout: float, prefix: str) -> Any:
    """``layers`` × (Dense(units) → ReLU → Dropout)."""
    for i in range(layers):
        x = keras.layers.Dense(units, activation="relu", name=f"{prefix}_dense{i}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"{prefix}_dropout{i}")(x)
    return x

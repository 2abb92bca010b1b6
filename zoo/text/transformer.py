"""A small Transformer encoder trained from scratch: word and position embeddings, self-attention blocks, mean pooling.

Pre-norm blocks (LayerNorm → multi-head self-attention → residual; LayerNorm →
feed-forward → residual). Small on purpose: without pretraining, a large
encoder overfits the few thousand texts a table usually has.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import TextStats, get
>>> stats = TextStats(["good", "bad"], ["good", "bad"], [0.5, 0.5], 8)
>>> text = keras.Input((), dtype="string")
>>> get("text_transformer").build(kt.HyperParameters(), text, stats, name="review").shape
(None, 64)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.layers import PositionEmbedding
from autodl.zoo.registry import Card, TextStats, register
from autodl.zoo.text._common import embed, token_ids

NAME = "text_transformer"

CARD = Card(
    name=NAME,
    task="text",
    title="Transformer encoder (small, from scratch)",
    summary="Word + learned position embeddings, 1-2 pre-norm self-attention blocks, mean pooling over positions.",
    reference="Vaswani et al. Attention Is All You Need. NeurIPS 2017.",
    paper="Vaswani et al. Attention Is All You Need. NeurIPS 2017. https://arxiv.org/abs/1706.03762",
    good_for="Longer texts where distant words interact; compare with TextCNN; a pretrained encoder usually wins.",
    licence="Apache-2.0 (autodl; no pretrained weights)",
    hyperparameters={
        f"{NAME}/d_model": "embedding and attention width (32, 64 or 128; default 64)",
        f"{NAME}/blocks": "encoder blocks (1 or 2; default 1)",
        f"{NAME}/heads": "attention heads (2 or 4; default 2)",
        f"{NAME}/dropout": "dropout in the blocks (0-0.3, default 0.1)",
    },
)


def build(hp: kt.HyperParameters, text: Any, stats: TextStats, *, name: str) -> Any:
    """``(batch, d_model)``."""
    d_model = hp.Choice(f"{NAME}/d_model", [32, 64, 128], default=64)
    n_blocks = hp.Int(f"{NAME}/blocks", 1, 2, default=1)
    heads = hp.Choice(f"{NAME}/heads", [2, 4], default=2)
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.3, step=0.1, default=0.1)
    x = embed(token_ids(text, stats, name), stats, d_model, name)
    x = PositionEmbedding(stats.sequence_length, d_model, name=f"{name}_positions")(x)
    for i in range(n_blocks):
        prefix = f"{name}_block{i}"
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm1")(x)
        h = keras.layers.MultiHeadAttention(heads, d_model // heads, dropout=dropout, name=f"{prefix}_attention")(h, h)
        x = keras.layers.Add(name=f"{prefix}_residual1")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm2")(x)
        h = keras.layers.Dense(2 * d_model, activation="gelu", name=f"{prefix}_ffn1")(h)
        h = keras.layers.Dropout(dropout, name=f"{prefix}_ffn_dropout")(h)
        h = keras.layers.Dense(d_model, name=f"{prefix}_ffn2")(h)
        x = keras.layers.Add(name=f"{prefix}_residual2")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(x)
    return keras.layers.GlobalAveragePooling1D(name=f"{name}_meanpool")(x)


ENTRY = register(CARD, build)

"""TextCNN: word embeddings, parallel 1-D convolutions of widths 3, 4 and 5, max-over-time pooling.

Each filter detects a phrase of a few words anywhere in the text; the max
over positions keeps its strongest match. Embeddings are learned from scratch.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import TextStats, get
>>> stats = TextStats(["good", "bad"], ["good", "bad"], [0.5, 0.5], 8)
>>> text = keras.Input((), dtype="string")
>>> get("textcnn").build(kt.HyperParameters(), text, stats, name="review").shape
(None, 192)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.registry import Card, TextStats, register
from autodl.zoo.text._common import embed, token_ids

NAME = "textcnn"
WIDTHS = (3, 4, 5)

CARD = Card(
    name=NAME,
    task="text",
    title="TextCNN",
    summary="Learned word embeddings, Conv1D filters of widths 3/4/5 with ReLU, global max pooling, concatenated.",
    reference="Kim. Convolutional Neural Networks for Sentence Classification. EMNLP 2014.",
    paper="Kim. Convolutional Neural Networks for Sentence Classification. EMNLP 2014. https://arxiv.org/abs/1408.5882",
    good_for="Sentences and short documents where a few key phrases decide the label; fast on CPU.",
    licence="Apache-2.0 (autodl; no pretrained weights)",
    hyperparameters={
        f"{NAME}/embedding_dim": "word vector width (32, 64 or 128; default 64)",
        f"{NAME}/filters": "filters per width (32, 64 or 128; default 64)",
        f"{NAME}/dropout": "dropout on the embeddings (0-0.5, default 0.2)",
    },
)


def build(hp: kt.HyperParameters, text: Any, stats: TextStats, *, name: str) -> Any:
    """``(batch, 3 * filters)``."""
    dim = hp.Choice(f"{NAME}/embedding_dim", [32, 64, 128], default=64)
    filters = hp.Choice(f"{NAME}/filters", [32, 64, 128], default=64)
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.5, step=0.1, default=0.2)
    x = embed(token_ids(text, stats, name), stats, dim, name)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_embedding_dropout")(x)
    pooled = []
    for width in WIDTHS:
        # "same" padding: texts shorter than the widest filter still give every filter a position.
        conv = keras.layers.Conv1D(filters, width, padding="same", activation="relu", name=f"{name}_conv{width}")(x)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"{name}_maxpool{width}")(conv))
    return keras.layers.Concatenate(name=f"{name}_textcnn")(pooled)


ENTRY = register(CARD, build)

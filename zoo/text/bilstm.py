"""BiLSTM: word embeddings read left-to-right and right-to-left by LSTMs, max-pooled over positions.

Word order matters to it (negation, "not bad"), at a higher cost than the CNN.
Embeddings are learned from scratch.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import TextStats, get
>>> stats = TextStats(["good", "bad"], ["good", "bad"], [0.5, 0.5], 8)
>>> text = keras.Input((), dtype="string")
>>> get("bilstm").build(kt.HyperParameters(), text, stats, name="review").shape
(None, 128)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.registry import Card, TextStats, register
from autodl.zoo.text._common import embed, token_ids

NAME = "bilstm"

CARD = Card(
    name=NAME,
    task="text",
    title="BiLSTM",
    summary="Learned word embeddings, a bidirectional LSTM over the sequence, global max pooling of its states.",
    reference="Graves, Schmidhuber. Framewise phoneme classification with bidirectional LSTM. Neural Networks 2005.",
    paper=(
        "Hochreiter, Schmidhuber. Long Short-Term Memory. Neural Computation 1997; Conneau et al. Supervised "
        "Learning of Universal Sentence Representations (BiLSTM-max). EMNLP 2017. https://arxiv.org/abs/1705.02364"
    ),
    good_for="Texts where word order and negation matter; slower than TextCNN on CPU.",
    licence="Apache-2.0 (autodl; no pretrained weights)",
    hyperparameters={
        f"{NAME}/embedding_dim": "word vector width (32, 64 or 128; default 64)",
        f"{NAME}/units": "LSTM units per direction (32, 64 or 128; default 64)",
        f"{NAME}/dropout": "dropout on the embeddings (0-0.5, default 0.2)",
    },
)


def build(hp: kt.HyperParameters, text: Any, stats: TextStats, *, name: str) -> Any:
    """``(batch, 2 * units)``."""
    dim = hp.Choice(f"{NAME}/embedding_dim", [32, 64, 128], default=64)
    units = hp.Choice(f"{NAME}/units", [32, 64, 128], default=64)
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.5, step=0.1, default=0.2)
    x = embed(token_ids(text, stats, name), stats, dim, name)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_embedding_dropout")(x)
    # Unrolled over the fixed sequence length: a looped LSTM needs TensorList ops that
    # LiteRT's builtins lack, so it could not be exported to the edge.
    lstm = keras.layers.LSTM(units, return_sequences=True, unroll=True, name=f"{name}_lstm")
    x = keras.layers.Bidirectional(lstm, name=f"{name}_bilstm")(x)
    return keras.layers.GlobalMaxPooling1D(name=f"{name}_maxpool")(x)


ENTRY = register(CARD, build)

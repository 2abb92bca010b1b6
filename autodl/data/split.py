"""Row splits: train / validation / test, and k folds, seeded and (for classification) stratified.

Indices are row positions (int64, sorted) into the arrays the caller holds, so
they can be saved (``split.npz``) and reused by a resumed run.

Example:

>>> import numpy as np
>>> y = np.array([0, 1] * 50)
>>> split = train_valid_test_split(y, stratify=True, seed=0)
>>> len(split.train), len(split.valid), len(split.test)
(70, 15, 15)
>>> [len(valid) for _, valid in kfold_indices(y, k=5, stratify=True)]
[20, 20, 20, 20, 20]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from autodl.errors import DataError

__all__ = ["MIN_ROWS", "Split", "train_valid_test_split", "kfold_indices"]

# Below this, validation and test scores are noise, whatever the fractions.
MIN_ROWS = 20


@dataclass
class Split:
    """Row positions of each part; ``test`` is empty when a separate test file is used."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def train_valid_test_split(
    y: np.ndarray,
    *,
    stratify: bool,
    valid_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    class_names: Sequence[Any] | None = None,
) -> Split:
    """Splits rows into train / valid / test; ``test_fraction=0`` gives an empty test part.

    ``y`` is the target (class indices or labels when ``stratify``).
    When stratifying, a class with a single row stays in the training part (the
    only place it can teach the model anything: a default must not refuse a table
    that LightGBM or a linear model fits), and classes too small to be spread over
    all three parts are pooled for stratification. ``class_names`` is kept for
    callers that name classes.
    """
    y = _as_1d(y)
    if not 0 < valid_fraction < 1:
        raise DataError(f"valid_fraction must be between 0 and 1 (exclusive), got {valid_fraction!r}")
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 (no test part) and 1, got {test_fraction!r}")
    if valid_fraction + test_fraction >= 1:
        raise DataError(
            f"valid_fraction + test_fraction is {valid_fraction + test_fraction:g}, leaving no training rows; "
            "make them sum to less than 1"
        )
    n = len(y)
    need = _rows_needed(valid_fraction, test_fraction)
    if n < need:
        raise DataError(
            f"only {n} rows; splitting into train/valid{'/test' if test_fraction else ''} "
            f"needs at least {need} rows (add rows)"
        )
    n_test, n_valid = _part_sizes(n, valid_fraction, test_fraction)
    rows = np.arange(n, dtype=np.int64)
    lone = np.empty(0, dtype=np.int64)
    if stratify:
        _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
        single = counts[codes] == 1
        lone, rows = rows[single], rows[~single]
    if n_test:
        rest, test = _split(rows, y[rows], n_test, stratify, seed)
    else:
        rest, test = rows, np.empty(0, dtype=np.int64)
    train, valid = _split(rest, y[rest], n_valid, stratify, seed + 1)
    return Split(train=np.sort(np.concatenate([train, lone])), valid=np.sort(valid), test=np.sort(test))


def kfold_indices(
    y: np.ndarray, *, k: int, stratify: bool, seed: int = 0, class_names: Sequence[Any] | None = None,
    pool_rare: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` shuffled (train, valid) row-position pairs; every row is in exactly one valid part.

    A class with fewer than ``k`` rows cannot be in every fold: an error, or with
    ``pool_rare`` such classes are stratified as one group (the other classes stay
    stratified, and some folds' training rows miss a rare class).
    """
    y = _as_1d(y)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, got {k!r}; use --cv 2 or more")
    k = int(k)
    if len(y) < k:
        raise DataError(f"{k}-fold cross-validation needs at least {k} rows but there are {len(y)}; lower --cv")
    if stratify and pool_rare:
        labels = _stratify_labels(y, minimum=k)
        if labels is None:
            folds = KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)))
        else:
            folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), labels)
    elif stratify:
        _check_class_counts(
            y, k, class_names, f"{k}-fold stratified cross-validation needs at least {k} per class (lower --cv)"
        )
        folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        folds = KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)))
    return [(np.sort(train).astype(np.int64), np.sort(valid).astype(np.int64)) for train, valid in folds]


def _as_1d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"the target must be one column, got an array of shape {y.shape}")
    return y


def _part_sizes(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Rows in (test, valid): rounded fractions of all rows, at least 1 each (test 0 if its fraction is)."""
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    n_valid = max(1, round(valid_fraction * n))
    return n_test, n_valid


def _rows_needed(valid_fraction: float, test_fraction: float) -> int:
    """The fewest rows (at least MIN_ROWS) for which every part gets a row."""
    n = MIN_ROWS
    while n - sum(_part_sizes(n, valid_fraction, test_fraction)) < 1:
        n += 1
    return n


def _check_class_counts(y: np.ndarray, minimum: int, class_names: Sequence[Any] | None, why: str) -> None:
    labels, counts = np.unique(y, return_counts=True)
    small = counts < minimum
    if small.any():
        label, count = labels[small][0], int(counts[small][0])
        name = _class_name(label, class_names)
        raise DataError(f"class {name!r} has only {count} row{'s' if count != 1 else ''}; {why}")


def _class_name(label: Any, class_names: Sequence[Any] | None) -> Any:
    label = label.item() if isinstance(label, np.generic) else label
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        return class_names[label]
    return label


def _split(rows: np.ndarray, y: np.ndarray, size: int, stratify: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``rows`` into (kept, taken ``size`` rows), stratifying where the classes allow it."""
    if stratify:
        labels = _stratify_labels(y)
        if labels is not None:
            try:
                kept, taken = train_test_split(rows, test_size=size, random_state=seed, stratify=labels)
                return np.asarray(kept, dtype=np.int64), np.asarray(taken, dtype=np.int64)
            except ValueError:
                pass  # too few rows in the smaller part for one per class: fall through to a plain split
    kept, taken = train_test_split(rows, test_size=size, random_state=seed, shuffle=True)
    return np.asarray(kept, dtype=np.int64), np.asarray(taken, dtype=np.int64)


def _stratify_labels(y: np.ndarray, minimum: int = 2) -> np.ndarray | None:
    """Class codes with classes under ``minimum`` rows pooled, or None when stratifying makes no sense.

    After the test part is taken, a 2-row class may have 1 row left; pooling such
    rows keeps the other classes stratified instead of giving up on all of them.
    """
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    rare = counts[codes] < minimum
    if not rare.any():
        return codes
    codes = codes.copy()
    # Too few leftover rows to form a group of their own join the largest class.
    codes[rare] = -1 if rare.sum() >= minimum else int(np.argmax(counts))
    return codes if len(np.unique(codes)) >= 2 else None

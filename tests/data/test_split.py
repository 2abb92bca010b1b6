"""train_valid_test_split and kfold_indices."""

from __future__ import annotations

import numpy as np
import pytest

from autodl.data import Split, kfold_indices, train_valid_test_split
from autodl.errors import DataError


def assert_partition(split: Split, n: int) -> None:
    parts = [split.train, split.valid, split.test]
    for part in parts:
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()
    everything = np.concatenate(parts)
    assert len(everything) == n and set(everything.tolist()) == set(range(n))


@pytest.mark.parametrize("stratify", [True, False])
def test_sizes_disjoint_and_covering(stratify):
    y = np.array([0, 1] * 50)
    split = train_valid_test_split(y, stratify=stratify, seed=3)
    assert (len(split.train), len(split.valid), len(split.test)) == (70, 15, 15)
    assert_partition(split, 100)


def test_custom_fractions_and_no_test_part():
    y = np.arange(200, dtype=np.float64)
    split = train_valid_test_split(y, stratify=False, valid_fraction=0.2, test_fraction=0.1)
    assert (len(split.train), len(split.valid), len(split.test)) == (140, 40, 20)
    split = train_valid_test_split(y, stratify=False, test_fraction=0.0)
    assert len(split.test) == 0 and len(split.valid) == 30
    assert_partition(split, 200)


def test_stratification_keeps_class_proportions():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat([0, 1, 2], [700, 200, 100]))
    split = train_valid_test_split(y, stratify=True, seed=0)
    for part in (split.train, split.valid, split.test):
        counts = np.bincount(y[part], minlength=3)
        expected = np.array([0.7, 0.2, 0.1]) * len(part)
        assert np.abs(counts - expected).max() <= 1, counts


def test_string_labels_can_be_stratified():
    y = np.array(["a"] * 60 + ["b"] * 40, dtype=object)
    split = train_valid_test_split(y, stratify=True)
    assert (y[split.test] == "b").sum() == 6


def test_seed_determinism():
    y = np.array([0, 1, 1] * 40)
    a = train_valid_test_split(y, stratify=True, seed=7)
    b = train_valid_test_split(y, stratify=True, seed=7)
    c = train_valid_test_split(y, stratify=True, seed=8)
    for part in ("train", "valid", "test"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, c.test)


def test_too_few_rows(one_line):
    with pytest.raises(DataError) as excinfo:
        train_valid_test_split(np.array([0, 1] * 9 + [0]), stratify=False)
    message = one_line(excinfo)
    assert "only 19 rows" in message and "at least 20 rows" in message
    train_valid_test_split(np.array([0, 1] * 10), stratify=False)  # 20 is enough


def test_rows_needed_grows_with_fractions(one_line):
    with pytest.raises(DataError) as excinfo:
        train_valid_test_split(np.zeros(20), stratify=False, valid_fraction=0.5, test_fraction=0.48)
    assert "needs at least 21 rows" in one_line(excinfo)
    split = train_valid_test_split(np.zeros(21), stratify=False, valid_fraction=0.5, test_fraction=0.48)
    assert len(split.train) >= 1 and len(split.valid) >= 1 and len(split.test) >= 1


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"valid_fraction": 0.0}, "valid_fraction"),
        ({"valid_fraction": 1.0}, "valid_fraction"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"valid_fraction": 0.5, "test_fraction": 0.5}, "no training rows"),
    ],
)
def test_bad_fractions(one_line, kwargs, needle):
    with pytest.raises(DataError) as excinfo:
        train_valid_test_split(np.zeros(100), stratify=False, **kwargs)
    assert needle in one_line(excinfo)


def test_class_with_one_row_stays_in_training():
    """ecoli's seed-1 training rows hold one 'omL' row: refusing the table was a default refusing data."""
    y = np.array([0, 1] * 20 + [2])
    split = train_valid_test_split(y, stratify=True, class_names=["cat", "dog", "axolotl"])
    assert_partition(split, len(y))
    assert 40 in split.train  # the lone row can only teach the model from the training part
    labels = np.array(["x"] + ["a", "b"] * 20, dtype=object)
    split = train_valid_test_split(labels, stratify=True)
    assert_partition(split, len(labels))
    assert 0 in split.train
    # The other classes are still stratified.
    split = train_valid_test_split(y, stratify=True)
    assert sorted(np.unique(y[split.valid], return_counts=True)[1]) == [3, 3]
    assert_partition(train_valid_test_split(y, stratify=False), len(y))


@pytest.mark.parametrize("y", [np.array([0, 1] * 30 + [2, 2]), np.array([0] * 40 + [1, 1, 2, 2, 3, 3, 4, 4])])
def test_small_classes_degrade_gracefully(y):
    split = train_valid_test_split(y, stratify=True, seed=0)
    assert_partition(split, len(y))


def test_more_classes_than_test_rows_degrades_gracefully():
    y = np.repeat(np.arange(10), 3)  # 30 rows, 10 classes, 4-5 rows per part
    split = train_valid_test_split(y, stratify=True, seed=0)
    assert_partition(split, 30)


def test_regression_targets_split_without_stratification():
    y = np.linspace(0, 1, 50)
    assert_partition(train_valid_test_split(y, stratify=False), 50)


# --- kfold ------------------------------------------------------------------------


@pytest.mark.parametrize("stratify", [True, False])
def test_kfold_partitions_rows(stratify):
    y = np.array([0, 1, 1, 2] * 25)
    folds = kfold_indices(y, k=5, stratify=stratify, seed=1)
    assert len(folds) == 5
    valids = np.concatenate([valid for _, valid in folds])
    assert sorted(valids.tolist()) == list(range(100))
    for train, valid in folds:
        assert train.dtype == valid.dtype == np.int64
        assert len(np.intersect1d(train, valid)) == 0 and len(train) + len(valid) == 100


def test_kfold_stratified_counts_and_determinism():
    y = np.array([0] * 50 + [1] * 25)
    folds = kfold_indices(y, k=5, stratify=True, seed=4)
    for _, valid in folds:
        assert np.bincount(y[valid]).tolist() == [10, 5]
    again = kfold_indices(y, k=5, stratify=True, seed=4)
    other = kfold_indices(y, k=5, stratify=True, seed=5)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


@pytest.mark.parametrize("k", [1, 0, 2.5, True])
def test_kfold_needs_two_folds(one_line, k):
    with pytest.raises(DataError) as excinfo:
        kfold_indices(np.zeros(10), k=k, stratify=False)
    assert "at least 2 folds" in one_line(excinfo)


def test_kfold_class_smaller_than_k(one_line):
    y = np.array([0] * 20 + [1] * 3)
    with pytest.raises(DataError) as excinfo:
        kfold_indices(y, k=5, stratify=True, class_names=["no", "yes"])
    message = one_line(excinfo)
    assert message.startswith("class 'yes' has only 3 rows") and "lower --cv" in message
    assert len(kfold_indices(y, k=3, stratify=True)) == 3


def test_kfold_fewer_rows_than_folds(one_line):
    with pytest.raises(DataError) as excinfo:
        kfold_indices(np.arange(4.0), k=5, stratify=False)
    assert "needs at least 5 rows but there are 4" in one_line(excinfo)

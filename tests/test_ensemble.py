"""Choosing ensemble members from validation outputs (autodl.train.ensemble)."""

from __future__ import annotations

import doctest

import numpy as np

from autodl.train import ensemble, greedy_ensemble, informative_members

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 400)


def _noisy_proba(y: np.ndarray, flip: float) -> np.ndarray:
    """Confident probabilities that are wrong on a share ``flip`` of the rows."""
    wrong = RNG.random(len(y)) < flip
    predicted = np.where(wrong, 1 - y, y)
    return np.eye(2)[predicted] * 0.6 + 0.2


def test_a_model_at_chance_is_left_out_of_the_average() -> None:
    good, fair, chance = _noisy_proba(Y, 0.15), _noisy_proba(Y, 0.2), _noisy_proba(Y, 0.5)
    assert informative_members([good, fair, chance], Y, task="binary", metric="accuracy") == [0, 1]
    # Log loss is minimized: the same three models, the same choice.
    assert informative_members([good, fair, chance], Y, task="binary", metric="log_loss") == [0, 1]
    # Order is kept and the best is found wherever it stands.
    assert informative_members([chance, fair, good], Y, task="binary", metric="accuracy") == [1, 2]


def test_the_constant_guess_is_the_majority_class_and_weights_count() -> None:
    y = np.array([0] * 70 + [1] * 30)
    always_zero = np.tile([0.9, 0.1], (100, 1))  # 0.70 accuracy: the constant guess itself, no gain
    slightly_better = np.eye(2)[np.r_[np.zeros(70, int), np.ones(10, int), np.zeros(20, int)]]  # 0.80
    assert informative_members([slightly_better, always_zero], y, task="binary", metric="accuracy") == [0]
    # Weighting class 1 up makes "always 0" worse than the (now class 1) constant guess.
    weights = np.r_[np.ones(70), np.full(30, 5.0)]
    kept = informative_members([always_zero, slightly_better], y, task="binary", metric="accuracy", sample_weight=weights)
    assert kept == [1]


def test_regression_gains_are_measured_against_the_mean() -> None:
    y = RNG.normal(10.0, 2.0, 300)
    close, rough, mean_only = y + RNG.normal(0, 0.3, 300), y + RNG.normal(0, 1.0, 300), np.full(300, y.mean() + 0.01)
    assert informative_members([close, rough, mean_only], y, task="regression", metric="rmse") == [0, 1]
    assert informative_members([close, rough, mean_only], y, task="regression", metric="r2") == [0, 1]


def test_when_nothing_beats_the_constant_only_the_best_is_kept() -> None:
    outputs = [_noisy_proba(Y, 0.5), _noisy_proba(Y, 0.55)]
    kept = informative_members(outputs, Y, task="binary", metric="accuracy")
    assert len(kept) == 1


def test_when_the_metric_cannot_be_computed_all_are_kept() -> None:
    one_class = np.zeros(50, dtype=int)  # ROC AUC is undefined on one class
    outputs = [np.tile([0.9, 0.1], (50, 1)), np.tile([0.4, 0.6], (50, 1))]
    assert informative_members(outputs, one_class, task="binary", metric="roc_auc") == [0, 1]


def test_greedy_selection_adds_a_member_only_when_the_average_improves() -> None:
    y = np.array([0, 1])
    first, second = np.array([[0.9, 0.1], [0.45, 0.55]]), np.array([[0.6, 0.4], [0.1, 0.9]])
    chosen, score = greedy_ensemble([first, second], y, task="binary", metric="log_loss")
    assert chosen == [1, 0] and score < 0.3079  # the best single member's log loss
    assert greedy_ensemble([second, second * 0 + 0.5], y, task="binary", metric="log_loss")[0] == [0]


def test_docstrings_run() -> None:
    result = doctest.testmod(ensemble)
    assert result.attempted > 0 and result.failed == 0

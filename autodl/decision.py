"""Decisions from probabilities: the binary threshold that serves the user's metric, and the baseline guard.

A classifier trained on log loss ranks rows; cutting its probabilities at 0.5 suits
accuracy, but balanced accuracy or F1 on an imbalanced target want another cut. As
AutoGluon's decision-threshold calibration does, the threshold is chosen on held-out
rows (validation, or out-of-fold under cross-validation) for the metric the search
optimizes, saved with the run (``Schema.threshold``) and applied by ``predict``, the
serving signature's ``label`` and the edge runner. Multiclass targets decide by argmax.

Example:

>>> import numpy as np
>>> y = np.array([0] * 8 + [1] * 2)
>>> p = np.array([.1, .1, .2, .2, .3, .3, .35, .4, .38, .45])
>>> proba = np.c_[1 - p, p]
>>> choose_threshold(y, proba, "accuracy")       # nothing beats 0.5 (all negative) there
0.5
>>> t = choose_threshold(y, proba, "balanced_accuracy")
>>> decide(proba, t).tolist()
[0, 0, 0, 0, 0, 0, 0, 1, 1, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autodl import metrics as metrics_lib
from autodl.metrics import decide

__all__ = ["THRESHOLD_METRICS", "BaselineCheck", "check_baseline", "choose_threshold", "decide", "one_hot"]

# Metrics of the decided labels (log loss and ROC AUC read the probabilities, which no threshold changes).
THRESHOLD_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "f1")
DEFAULT_THRESHOLD = 0.5
# Enough candidates to find the best cut on any validation split, few enough to stay instant on large ones.
MAX_CANDIDATES = 1024


def one_hot(indices: np.ndarray, n_classes: int) -> np.ndarray:
    """Decisions as probability rows (1 on the decided class), for code that reads decisions by argmax."""
    out = np.zeros((len(indices), n_classes), dtype=np.float64)
    out[np.arange(len(indices)), indices] = 1.0
    return out


def choose_threshold(
    y_true: np.ndarray, proba: np.ndarray, metric: str, sample_weight: np.ndarray | None = None
) -> float:
    """The cut on the second class's probability that scores best on ``metric`` for these rows.

    0.5 unless another cut scores strictly better; among equally good cuts, the one
    closest to 0.5 (the least fitted to these rows). Cuts above every score (always
    the first class) and at 0 (always the second) are candidates, so on the rows it
    is chosen on, the decision is never worse than a constant guess.
    """
    proba = np.asarray(proba, dtype=np.float64)
    if metric not in THRESHOLD_METRICS or proba.ndim != 2 or proba.shape[1] != 2 or len(proba) == 0:
        return DEFAULT_THRESHOLD
    scores = proba[:, 1]
    y = np.asarray(y_true).astype(np.int64)
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    candidates = _candidates(scores)
    values = np.array([_score(y, scores >= t, weight, metric) for t in candidates])
    best = np.nanmax(values)
    if not np.isfinite(best):
        return DEFAULT_THRESHOLD
    tied = candidates[values >= best - 1e-12]
    return float(tied[np.argmin(np.abs(tied - DEFAULT_THRESHOLD))])


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Midpoints between neighbouring distinct scores, 0.5, and both constant decisions."""
    distinct = np.unique(scores)
    if len(distinct) > MAX_CANDIDATES:
        distinct = np.unique(np.quantile(distinct, np.linspace(0.0, 1.0, MAX_CANDIDATES)))
    midpoints = (distinct[:-1] + distinct[1:]) / 2.0
    above_all = np.nextafter(max(float(distinct[-1]), 1.0), math.inf)
    return np.unique(np.concatenate([midpoints, [0.0, DEFAULT_THRESHOLD, above_all]]))


def _score(y: np.ndarray, positive: np.ndarray, weight: np.ndarray, metric: str) -> float:
    """``metric`` of boolean decisions, from the weighted confusion counts (no scikit-learn call per cut)."""
    tp = float(weight[positive & (y == 1)].sum())
    fp = float(weight[positive & (y == 0)].sum())
    fn = float(weight[~positive & (y == 1)].sum())
    tn = float(weight[~positive & (y == 0)].sum())
    if metric == "accuracy":
        return (tp + tn) / max(tp + fp + fn + tn, 1e-12)
    if metric == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0
    recalls = [tp / (tp + fn) if tp + fn > 0 else math.nan, tn / (tn + fp) if tn + fp > 0 else math.nan]
    return float(np.nanmean(recalls))


@dataclass
class BaselineCheck:
    """The shipped model against a constant guess on held-out rows (majority class or training mean)."""

    metric: str
    model_score: float
    baseline_score: float
    baseline: str  # "majority class 'x'" or "the training mean"

    @property
    def below(self) -> bool:
        return metrics_lib.is_better(self.baseline_score, self.model_score, self.metric)

    def message(self) -> str:
        return (f"warning: on validation rows the model scores {self.model_score:.4f} {self.metric}, below always "
                f"predicting {self.baseline} ({self.baseline_score:.4f}); more data, time or --metric may help")

    def to_dict(self) -> dict[str, object]:
        return {"metric": self.metric, "model": self.model_score, "baseline": self.baseline,
                "baseline_score": self.baseline_score, "below_baseline": self.below}


def check_baseline(
    task: str, metric: str, y_train: np.ndarray, y_held_out: np.ndarray, model_score: float,
    sample_weight: np.ndarray | None = None, classes: list[object] | None = None,
) -> BaselineCheck:
    """Scores the constant guess a user could make without a model on the held-out rows.

    Classification: the training rows' majority class, with the training class shares as its
    probabilities (so log loss and ROC AUC are defined); regression: the training mean.
    """
    n = len(y_held_out)
    if task == "regression":
        guess = np.full(n, float(np.mean(y_train)))
        name = "the training mean"
    else:
        n_classes = len(classes or []) or int(max(np.max(y_train), np.max(y_held_out))) + 1
        shares = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes) / max(len(y_train), 1)
        guess = np.tile(shares, (n, 1))
        majority = int(np.argmax(shares))
        name = f"the majority class '{classes[majority] if classes else majority}'"
    score = metrics_lib.compute(task, y_held_out, guess, sample_weight)[metric]
    return BaselineCheck(metric=metric, model_score=float(model_score), baseline_score=float(score), baseline=name)

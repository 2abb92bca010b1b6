"""Task-aware metrics, computed with scikit-learn on numpy arrays.

Every metric has a direction, so the search can maximize "accuracy" and
minimize "rmse" through one interface.

Example:

>>> import numpy as np
>>> proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
>>> scores = classification_metrics(np.array([0, 1, 1]), proba)
>>> round(scores["accuracy"], 3)
0.667
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from autodl.errors import UserError

CLASSIFICATION_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "log_loss", "roc_auc", "f1")
REGRESSION_METRICS: tuple[str, ...] = ("rmse", "mae", "r2")
_LOWER_IS_BETTER = {"log_loss", "rmse", "mae"}


def direction(metric: str) -> str:
    """``"min"`` or ``"max"``: which way is better for ``metric``."""
    return "min" if metric in _LOWER_IS_BETTER else "max"


def default_metric(task: str) -> str:
    return "rmse" if task == "regression" else "accuracy"


def validate_metric(metric: str | None, task: str) -> str:
    """Returns the metric to optimize, or raises a one-line UserError."""
    if metric is None:
        return default_metric(task)
    allowed = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    if metric not in allowed:
        raise UserError(f"metric {metric!r} does not fit a {task} task; choose one of: {', '.join(allowed)}")
    return metric


def decide(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class indices: the second class where its probability reaches ``threshold`` (binary), else argmax."""
    proba = np.asarray(proba)
    if threshold is None or proba.ndim != 2 or proba.shape[1] != 2:
        return proba.argmax(axis=1)
    return (proba[:, 1] >= threshold).astype(np.int64)


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None, threshold: float | None = None
) -> dict[str, float]:
    """Metrics for class indices ``y_true`` and probabilities ``proba`` of shape (n, n_classes).

    ``threshold`` (binary) is the run's decision threshold: labels are the second class where
    its probability reaches it; log loss and ROC AUC read the probabilities either way.
    """
    pred = decide(proba, threshold)
    proba = np.clip(np.asarray(proba, dtype=np.float64), 1e-7, 1.0)
    # float32 softmax rows sum to 1 only within ~1e-7; scikit-learn warns on that.
    proba = proba / proba.sum(axis=1, keepdims=True)
    n_classes = proba.shape[1]
    labels = np.arange(n_classes)
    out = {
        "accuracy": skm.accuracy_score(y_true, pred, sample_weight=sample_weight),
        "balanced_accuracy": skm.balanced_accuracy_score(y_true, pred, sample_weight=sample_weight),
        "log_loss": skm.log_loss(y_true, proba, labels=labels, sample_weight=sample_weight),
    }
    present = np.unique(y_true)
    if n_classes == 2:
        out["f1"] = skm.f1_score(y_true, pred, pos_label=1, zero_division=0, sample_weight=sample_weight)
        out["roc_auc"] = (
            skm.roc_auc_score(y_true, proba[:, 1], sample_weight=sample_weight) if len(present) == 2 else math.nan
        )
    else:
        out["f1"] = skm.f1_score(y_true, pred, average="macro", labels=labels, zero_division=0, sample_weight=sample_weight)
        # One-vs-rest AUC is undefined for classes absent from y_true; score the present ones.
        if len(present) == n_classes:
            out["roc_auc"] = skm.roc_auc_score(
                y_true, proba, multi_class="ovr", average="macro", labels=labels, sample_weight=sample_weight
            )
        else:
            out["roc_auc"] = math.nan
    return {k: float(v) for k, v in out.items()}


def regression_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    return {
        "rmse": float(math.sqrt(skm.mean_squared_error(y_true, y_pred, sample_weight=sample_weight))),
        "mae": float(skm.mean_absolute_error(y_true, y_pred, sample_weight=sample_weight)),
        "r2": float(skm.r2_score(y_true, y_pred, sample_weight=sample_weight)) if len(y_true) > 1 else math.nan,
    }


def compute(
    task: str, y_true: np.ndarray, output: np.ndarray, sample_weight: np.ndarray | None = None, threshold: float | None = None
) -> dict[str, float]:
    """All metrics of ``task``; ``output`` is probabilities (classification) or values."""
    if task == "regression":
        return regression_metrics(y_true, output, sample_weight)
    return classification_metrics(y_true, output, sample_weight, threshold)


def is_better(a: float, b: float, metric: str) -> bool:
    """True when score ``a`` beats ``b`` on ``metric`` (NaN never wins)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if direction(metric) == "min" else a > b

"""A fairness constraint such as ``demographic_parity_difference<=0.05``, and its value on predictions.

Any metric the audit reports can be constrained. For binary classification: the
headline measures (``demographic_parity_difference``/``ratio``,
``equalized_odds_difference``/``ratio``, ``equal_opportunity_difference``) and the
between-group gap of any per-group metric (``<metric>_difference`` or
``<metric>_ratio``, e.g. ``false_positive_rate_difference``). For regression: the
gaps of the per-group regression metrics (``rmse_difference``, ``mae_ratio``,
``mean_prediction_difference``, ...). The value is computed by Fairlearn over
the intersection of the sensitive columns, with groups smaller than
``min_group_size`` left out exactly as in the audit's headline gaps.

Example:

>>> import numpy as np, pandas as pd
>>> c = parse_constraint("demographic_parity_difference<=0.05")
>>> y = np.array([1, 0] * 40); pred = np.array([1, 0] * 20 + [1, 1] * 20)
>>> groups = pd.DataFrame({"g": ["a"] * 40 + ["b"] * 40})
>>> round(c.value(y, pred, groups), 2), c.satisfied(c.value(y, pred, groups))
(0.5, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from fairlearn import metrics as fm

from autodl.audit.audit import HEADLINE, MIN_GROUP_SIZE, classification_metrics, group_labels, regression_metrics
from autodl.errors import UserError

DEFAULT_CONSTRAINT = "demographic_parity_difference<=0.05"
_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*([0-9]*\.?[0-9]+)\s*$")


def constrainable_metrics(task: str | None = None) -> list[str]:
    """The metrics a constraint may name for ``task`` ("binary" or "regression"; ``None``: both)."""
    def gaps(metrics: dict[str, Any]) -> list[str]:
        return [f"{m}_{kind}" for m in metrics if m != "count" for kind in ("difference", "ratio")]

    classification = list(HEADLINE) + gaps(classification_metrics())
    regression = gaps(regression_metrics())
    return {"binary": classification, "regression": regression}.get(task or "", classification + regression)


@dataclass(frozen=True)
class FairnessConstraint:
    """``metric op bound`` on binary decisions, e.g. demographic-parity difference at most 0.05."""

    metric: str
    op: str  # "<=" or ">="
    bound: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.bound:g}"

    @property
    def task(self) -> str:
        """"regression" for gaps of regression metrics, else "binary"."""
        return "regression" if self.metric in constrainable_metrics("regression") else "binary"

    @property
    def parity(self) -> str:
        """The rate a mitigation equalizes to meet this constraint, in Fairlearn's constraint names."""
        if self.task == "regression":
            return "bounded_group_loss"  # Fairlearn's reduction for regression: each group's loss bounded
        if self.metric.startswith("equalized_odds"):
            return "equalized_odds"
        if self.metric.startswith(("equal_opportunity", "true_positive_rate")):
            return "true_positive_rate_parity"
        if self.metric.startswith("false_positive_rate"):
            return "false_positive_rate_parity"
        if self.metric.startswith(("accuracy", "balanced_accuracy", "false_negative_rate", "precision")):
            # No post-processing parity targets these; error-rate parity is the nearest reduction.
            return "error_rate_parity"
        return "demographic_parity"

    def satisfied(self, value: float) -> bool:
        if value != value:  # NaN: not computable, so not shown to hold
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def value(
        self, y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.DataFrame, *, min_group_size: int = MIN_GROUP_SIZE
    ) -> float:
        """The constrained metric of 0/1 decisions ``y_pred`` (1 = favourable) against 0/1 labels ``y_true``.

        For a regression metric, ``y_true`` and ``y_pred`` are the target and predicted values.
        """
        key = group_key(sensitive)
        values, counts = np.unique(key, return_counts=True)
        keep = np.isin(key, values[counts >= min_group_size])
        if len(np.unique(key[keep])) < 2:
            return float("nan")
        y_true, y_pred, key = np.asarray(y_true)[keep], np.asarray(y_pred)[keep], key[keep]
        if self.metric in HEADLINE:
            return float(HEADLINE[self.metric](y_true, y_pred, sensitive_features=key))
        name, kind = self.metric.rsplit("_", 1)
        metrics = regression_metrics() if self.task == "regression" else classification_metrics()
        frame = fm.MetricFrame(metrics=metrics[name], y_true=y_true, y_pred=y_pred, sensitive_features=key)
        return float(frame.difference() if kind == "difference" else frame.ratio())


def parse_constraint(text: str) -> FairnessConstraint:
    """``"metric<=bound"`` or ``"metric>=bound"``; a clear error names the metrics that can be constrained."""
    match = _PATTERN.match(text or "")
    if not match:
        raise UserError(f"cannot read fairness constraint {text!r}; write it like \"{DEFAULT_CONSTRAINT}\"")
    metric, op, bound = match.group(1), match.group(2), float(match.group(3))
    known = constrainable_metrics()
    if metric not in known:
        raise UserError(f"unknown fairness metric {metric!r}; choose one of: {', '.join(known)}")
    if metric.endswith("ratio") and op != ">=" or metric.endswith("difference") and op != "<=":
        wanted = ">=" if metric.endswith("ratio") else "<="
        raise UserError(f"a {metric.rsplit('_', 1)[1]} is constrained with {wanted}, e.g. \"{metric}{wanted}{bound:g}\"")
    return FairnessConstraint(metric, op, bound)


def positive_decisions(output: np.ndarray, positive_index: int) -> np.ndarray:
    """0/1 decisions (1 = the favourable class) from a binary classifier's probabilities ``(n, 2)``."""
    return (np.argmax(output, axis=1) == positive_index).astype(int)


def group_key(sensitive: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
    """One group label per row: the intersection of the sensitive columns ("F & White")."""
    groups = group_labels(sensitive, list(columns if columns is not None else sensitive.columns))
    return groups.agg(" & ".join, axis=1).to_numpy()

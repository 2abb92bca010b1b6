"""Fairness-aware model selection: the best searched model that meets a constraint on validation rows.

Example:

>>> import numpy as np, pandas as pd
>>> from autodl.audit.constraint import parse_constraint
>>> y = np.array([1, 0] * 40); groups = pd.DataFrame({"g": ["a"] * 40 + ["b"] * 40})
>>> fair = np.eye(2)[y]; unfair = np.eye(2)[np.r_[y[:40], np.ones(40, int)]]
>>> pick = select_under_constraint({"fair": fair, "unfair": unfair}, {"fair": 0.9, "unfair": 0.95}, y, groups,
...     parse_constraint("demographic_parity_difference<=0.05"), positive_index=1, unconstrained="unfair")
>>> pick.chosen, pick.met
('fair', True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from autodl.audit.constraint import FairnessConstraint, positive_decisions


@dataclass
class Candidate:
    name: str
    score: float  # the run's metric on validation rows, higher or lower is better per ``higher_is_better``
    value: float  # the constrained fairness metric on the same rows
    meets: bool


@dataclass
class Selection:
    """Which model meets the constraint, and what it costs against the unconstrained best."""

    constraint: str
    candidates: list[Candidate]
    unconstrained: str
    chosen: str | None  # None: no candidate meets the constraint
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.chosen is not None

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"constraint": self.constraint, "met": self.met, "chosen": self.chosen,
                               "unconstrained": self.unconstrained, "candidates": [asdict(c) for c in self.candidates]}
        if self.chosen is not None:
            best, chosen = self.candidate(self.unconstrained), self.candidate(self.chosen)
            out["cost"] = {"score": best.score - chosen.score if self.higher_is_better else chosen.score - best.score,
                           "fairness_value_before": best.value, "fairness_value_after": chosen.value}
        return out


def select_under_constraint(
    outputs: dict[str, np.ndarray], scores: dict[str, float], y_true: np.ndarray, sensitive: pd.DataFrame,
    constraint: FairnessConstraint, *, positive_index: int | None, unconstrained: str, higher_is_better: bool = True,
) -> Selection:
    """The best-scoring model among ``outputs`` (validation outputs per model) that meets ``constraint``.

    Classification: ``outputs`` are probabilities and ``y_true`` class indices, judged as
    decisions for class ``positive_index``; regression (``positive_index=None``): values.
    """
    y = np.asarray(y_true) if positive_index is None else (np.asarray(y_true) == positive_index).astype(int)
    candidates = []
    for name, output in outputs.items():
        pred = np.asarray(output).reshape(-1) if positive_index is None else positive_decisions(output, positive_index)
        value = constraint.value(y, pred, sensitive)
        candidates.append(Candidate(name, float(scores[name]), value, constraint.satisfied(value)))
    meeting = [c for c in candidates if c.meets]
    chosen = None
    if meeting:
        pick = max if higher_is_better else min
        chosen = pick(meeting, key=lambda c: c.score).name
    return Selection(str(constraint), candidates, unconstrained, chosen, higher_is_better)

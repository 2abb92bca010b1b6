"""Fairness mitigation with Fairlearn: per-group thresholds (post-processing) and reductions (in training).

Both take the Keras model as a scikit-learn estimator over raw table rows
(``KerasBinaryClassifier`` for a binary decision, "predicted the favourable
class"; ``KerasRegressor`` for regression, reductions only):

- ``fit_thresholds``: Fairlearn's ``ThresholdOptimizer`` on the trained model
  (``prefit=True``), fitted on held-out rows. The result, ``GroupThresholds``,
  is plain JSON kept in the run (``fairness_thresholds.json``) and applied by
  ``predict`` when the sensitive columns are present. Where Fairlearn's solution
  interpolates between two thresholds for a group, the decision for rows between
  them is random with the stored probability; a fixed seed makes it repeatable.
- ``fit_reductions``: Fairlearn's ``GridSearch`` retrains the model's
  configuration under reweighted (for classification also relabelled) rows, one
  Keras model per grid point, with the moment the constraint names (demographic
  parity, equalized odds, ...; ``BoundedGroupLoss`` for regression), and the
  best-scoring model that meets the constraint on the validation rows is kept. It is one deterministic Keras model, so it saves
  and exports like any other. ``ExponentiatedGradient`` is not offered: its
  result is a randomized mixture of models that cannot ship as one model.

Example:

>>> rules = GroupThresholds.from_dict({"sensitive": ["g"], "positive": "yes", "constraint": "demographic_parity",
...     "seed": 0, "groups": {"a": {"p0": 1.0, "operation0": [">", 0.5], "p1": 0.0, "operation1": [">", 0.5]}}})
>>> rules.decide(np.array([0.7, 0.2]), np.array(["a", "a"])).tolist()
[1, 0]
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from autodl.audit.constraint import FairnessConstraint, group_key
from autodl.data import Schema
from autodl.errors import DataError, UserError

THRESHOLD_FILE = "fairness_thresholds.json"
THRESHOLD_PARITIES = (
    "demographic_parity", "true_positive_rate_parity", "false_positive_rate_parity", "equalized_odds",
)
DEFAULT_GRID_SIZE = 7


class KerasBinaryClassifier(ClassifierMixin, BaseEstimator):
    """A scikit-learn classifier over raw table rows whose class 1 is the favourable label.

    Prefit (``model`` given) for post-processing, or trained by ``trainer`` in
    ``fit(X, y, sample_weight)`` for reductions; ``trainer(x, y, sample_weight)``
    gets model inputs and 0/1 labels and returns a trained Keras model.
    """

    def __init__(self, schema: Schema, positive_index: int, model: Any = None, trainer: Callable[..., Any] | None = None) -> None:
        self.schema = schema
        self.positive_index = positive_index
        self.model = model
        self.trainer = trainer

    def __sklearn_is_fitted__(self) -> bool:
        return self.model is not None

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> "KerasBinaryClassifier":
        from autodl.features.frame import to_model_inputs

        if self.trainer is None:
            raise ValueError("this classifier wraps a trained model (prefit); it has no trainer")
        y01 = np.asarray(y).astype(int)
        # Class 1 of the reduction is the favourable label, whichever index the schema gives it.
        labels = np.where(y01 == 1, self.positive_index, 1 - self.positive_index).astype(np.int64)
        self.model = self.trainer(to_model_inputs(X, self.schema), labels, _mean_one(sample_weight))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        from autodl.features.frame import ModelData, to_model_inputs
        from autodl.recipes.tabular import predict

        output = predict(self.model, ModelData(to_model_inputs(X, self.schema)))
        positive = output[:, self.positive_index]
        return np.stack([1.0 - positive, positive], axis=1)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)


class KerasRegressor(RegressorMixin, BaseEstimator):
    """A scikit-learn regressor over raw table rows, trained by ``trainer(x, y, sample_weight)``."""

    def __init__(self, schema: Schema, model: Any = None, trainer: Callable[..., Any] | None = None) -> None:
        self.schema = schema
        self.model = model
        self.trainer = trainer

    def __sklearn_is_fitted__(self) -> bool:
        return self.model is not None

    def fit(self, X: pd.DataFrame, y: Any, sample_weight: Any = None) -> "KerasRegressor":
        from autodl.features.frame import to_model_inputs

        if self.trainer is None:
            raise ValueError("this regressor wraps a trained model (prefit); it has no trainer")
        self.model = self.trainer(to_model_inputs(X, self.schema), np.asarray(y, dtype=np.float32), _mean_one(sample_weight))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        from autodl.features.frame import ModelData, to_model_inputs
        from autodl.recipes.tabular import predict

        return predict(self.model, ModelData(to_model_inputs(X, self.schema))).reshape(-1)


def _mean_one(sample_weight: Any) -> np.ndarray | None:
    """Weights scaled to mean 1, so the learning rate keeps its meaning under any reweighting."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    return (w / max(w.mean(), 1e-12)).astype(np.float32)


# -- post-processing --------------------------------------------------------------------


@dataclass
class GroupThresholds:
    """Per-group decision rules from Fairlearn's ``ThresholdOptimizer``, as stored in the run.

    For a row of group ``g`` with favourable-class score ``s``, the probability of a
    favourable decision is ``p0 * [s op0 t0] + p1 * [s op1 t1]`` (Fairlearn's
    ``InterpolatedThresholder``); rows of groups not seen when fitting keep the
    model's own decision (score above 0.5).
    """

    sensitive: list[str]
    positive: str
    constraint: str
    groups: dict[str, dict[str, Any]]
    seed: int = 0

    @classmethod
    def from_optimizer(cls, optimizer: Any, *, sensitive: list[str], positive: str, seed: int = 0) -> "GroupThresholds":
        groups = {}
        for group, rule in optimizer.interpolated_thresholder_.interpolation_dict.items():
            entry = {
                "p0": float(rule.p0), "operation0": [rule.operation0.operator, float(rule.operation0.threshold)],
                "p1": float(rule.p1), "operation1": [rule.operation1.operator, float(rule.operation1.threshold)],
            }
            if "p_ignore" in rule:
                entry.update(p_ignore=float(rule.p_ignore), prediction_constant=float(rule.prediction_constant))
            groups[str(group)] = entry
        return cls(sensitive=sensitive, positive=positive, constraint=optimizer.constraints, groups=groups, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        def encode(op: list[Any]) -> list[Any]:
            return [op[0], op[1] if math.isfinite(op[1]) else str(op[1])]  # JSON has no infinity

        groups = {g: {**r, "operation0": encode(r["operation0"]), "operation1": encode(r["operation1"])} for g, r in self.groups.items()}
        return {"sensitive": self.sensitive, "positive": self.positive, "constraint": self.constraint, "seed": self.seed,
                "groups": groups}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GroupThresholds":
        def decode(op: list[Any]) -> list[Any]:
            return [op[0], float(op[1])]

        groups = {g: {**r, "operation0": decode(r["operation0"]), "operation1": decode(r["operation1"])} for g, r in data["groups"].items()}
        return cls(sensitive=list(data["sensitive"]), positive=str(data["positive"]), constraint=str(data["constraint"]),
                   groups=groups, seed=int(data.get("seed", 0)))

    def positive_probability(self, scores: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, int]:
        """Probability of a favourable decision per row, and how many rows fell in unseen groups."""
        # The edge runner's implementation, so a device decides exactly as ``predict`` does.
        from autodl.edge.autodl_edge import favourable_probability

        return favourable_probability(self.groups, scores, groups)

    def decide_output(self, schema: Schema, frame: pd.DataFrame, output: np.ndarray) -> np.ndarray:
        """The model's probabilities ``(n, 2)`` turned into one-hot decisions for ``frame``'s groups.

        Raises ``DataError`` naming the sensitive columns ``frame`` lacks.
        """
        missing = [c for c in self.sensitive if c not in frame.columns]
        if missing:
            raise DataError(f"the run's fairness thresholds need the sensitive column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(c) for c in missing)}; without {'them' if len(missing) > 1 else 'it'} the "
                            "predictions are the unmitigated model's")
        positive_index = [str(c) for c in schema.classes or []].index(self.positive)
        decisions = self.decide(output[:, positive_index], group_key(frame, self.sensitive))
        chosen = np.where(decisions == 1, positive_index, 1 - positive_index)
        return np.eye(output.shape[1])[chosen]

    def decide(self, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """0/1 decisions, drawn as Fairlearn's ``predict`` does with ``random_state=seed``."""
        probability, unseen = self.positive_probability(np.asarray(scores, dtype=float), np.asarray(groups).astype(str))
        if unseen:
            warnings.warn(f"{unseen} rows belong to groups the thresholds were not fitted on; they keep the model's "
                          "own decision", UserWarning, stacklevel=2)
        from autodl.edge.autodl_edge import favourable_decisions

        return favourable_decisions(probability, self.seed)


def fit_thresholds(
    model: Any, schema: Schema, frame: pd.DataFrame, y01: np.ndarray, sensitive: list[str],
    constraint: FairnessConstraint, *, positive: str, seed: int = 0,
) -> GroupThresholds:
    """Fairlearn ``ThresholdOptimizer`` (accuracy objective) fitted on held-out ``frame`` for ``constraint``'s parity."""
    from fairlearn.postprocessing import ThresholdOptimizer

    if constraint.parity not in THRESHOLD_PARITIES:
        raise UserError(f"--mitigate threshold cannot target {constraint.metric}; use --mitigate reductions")
    positive_index = list(map(str, schema.classes or [])).index(positive)
    estimator = KerasBinaryClassifier(schema, positive_index, model=model)
    optimizer = ThresholdOptimizer(estimator=estimator, constraints=constraint.parity, objective="accuracy_score",
                                   prefit=True, predict_method="predict_proba")
    optimizer.fit(frame, y01, sensitive_features=group_key(frame, sensitive))
    return GroupThresholds.from_optimizer(optimizer, sensitive=list(sensitive), positive=positive, seed=seed)


# -- reductions -------------------------------------------------------------------------


@dataclass
class GridPoint:
    """One model of the grid: its validation score, constraint value and whether it meets the constraint."""

    index: int
    score: float
    value: float
    meets: bool
    seconds: float


@dataclass
class ReductionResult:
    model: Any
    chosen: int
    met: bool
    points: list[GridPoint] = field(default_factory=list)
    complete: bool = True  # False when the time limit stopped the grid early


def reduction_moment(constraint: FairnessConstraint, y_train: np.ndarray | None = None) -> Any:
    """Fairlearn's moment for the constraint's parity.

    Regression uses ``BoundedGroupLoss`` with the square loss. Its reweighting does not
    depend on the bound, only its own choice of a best grid point does, which autodl
    replaces by the user's constraint on validation rows; the target's variance serves.
    """
    from fairlearn import reductions

    if constraint.parity == "bounded_group_loss":
        y = np.asarray(y_train, dtype=float)
        return reductions.BoundedGroupLoss(reductions.SquareLoss(float(y.min()), float(y.max())), upper_bound=float(y.var()))
    return {
        "demographic_parity": reductions.DemographicParity,
        "equalized_odds": reductions.EqualizedOdds,
        "true_positive_rate_parity": reductions.TruePositiveRateParity,
        "false_positive_rate_parity": reductions.FalsePositiveRateParity,
        "error_rate_parity": reductions.ErrorRateParity,
    }[constraint.parity]()


def fit_reductions(
    trainer: Callable[..., Any], schema: Schema, train: pd.DataFrame, y_train: np.ndarray,
    valid: pd.DataFrame, y_valid: np.ndarray, sensitive: list[str], constraint: FairnessConstraint, *,
    positive: str | None, score: Callable[[np.ndarray], float], grid_size: int = DEFAULT_GRID_SIZE,
    deadline: float | None = None,
) -> ReductionResult:
    """Fairlearn ``GridSearch`` over Lagrange multipliers; keeps the best-scoring grid model that meets ``constraint``.

    Classification: ``y_*`` are 0/1 (1 = ``positive``) and ``score(proba)`` rates a
    model's validation output ``(n, n_classes)``; regression (``positive=None``): target
    values and ``score(values)``. Higher scores are better. Grid points whose reduction left one label (Fairlearn then fits a constant
    ``DummyClassifier``) are skipped: a constant is not a model worth shipping.
    """
    from fairlearn.reductions import GridSearch

    regression = positive is None
    positive_index = 0 if regression else list(map(str, schema.classes or [])).index(positive)  # type: ignore[arg-type]
    trained: list[tuple[Any, float]] = []  # every Keras model the grid trained, in order

    def timed_trainer(x: Any, y: np.ndarray, weight: np.ndarray | None) -> Any:
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime()
        t0 = time.monotonic()
        model = trainer(x, y, weight)
        trained.append((model, time.monotonic() - t0))
        return model

    estimator: Any = KerasRegressor(schema, trainer=timed_trainer) if regression else \
        KerasBinaryClassifier(schema, positive_index, trainer=timed_trainer)
    search = GridSearch(estimator, constraints=reduction_moment(constraint, y_train), grid_size=grid_size)
    complete = True
    try:
        search.fit(train, y_train, sensitive_features=group_key(train, sensitive))
    except _OutOfTime:
        complete = False  # the models trained so far are still valid candidates
    if not trained:
        raise UserError("no grid model of --mitigate reductions finished (time limit, or every grid point had one "
                        "label); raise --time-limit")
    groups_valid = valid[sensitive]
    points = []
    for i, (model, seconds) in enumerate(trained):
        if regression:
            output = KerasRegressor(schema, model=model).predict(valid)
            value = constraint.value(y_valid, output, groups_valid)
        else:
            proba = KerasBinaryClassifier(schema, positive_index, model=model).predict_proba(valid)
            output = np.zeros((len(valid), 2))
            output[:, positive_index], output[:, 1 - positive_index] = proba[:, 1], proba[:, 0]
            value = constraint.value(y_valid, (proba[:, 1] > 0.5).astype(int), groups_valid)
        points.append(GridPoint(i, float(score(output)), value, constraint.satisfied(value), seconds))
    meeting = [p.index for p in points if p.meets]
    if meeting:
        chosen = max(meeting, key=lambda i: points[i].score)
    else:  # the least violation: the user asked for fairness first
        chosen = min(range(len(points)), key=lambda i: _violation(constraint, points[i].value))
    return ReductionResult(model=trained[chosen][0], chosen=chosen, met=bool(meeting), points=points, complete=complete)


def _violation(constraint: FairnessConstraint, value: float) -> float:
    if value != value:
        return math.inf
    return value - constraint.bound if constraint.op == "<=" else constraint.bound - value


class _OutOfTime(Exception):
    pass

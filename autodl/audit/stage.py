"""The fit's fairness stage: constrained selection among searched trials, then mitigation if asked.

Runs after the search and the usual choice of the final model, on rows the
models did not train on (the validation split; with cross-validation, fold 0's
held-out rows, where each trial's checkpoint was trained):

1. ``--fairness-constraint``: every completed trial (and the ensemble, if the
   run built one) is scored on those rows; the best that meets the constraint
   ships. When none does, the run says so and goes on to step 2 if
   ``--mitigate`` was given, else ships the unconstrained best.
2. ``--mitigate threshold``: Fairlearn's ThresholdOptimizer on the shipped model;
   ``--mitigate reductions``: Fairlearn's GridSearch retrains the shipped
   configuration (see ``autodl.audit.mitigation``).

The outcome keeps the unconstrained model too, so the audit can show both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from autodl import metrics as metrics_lib
from autodl.audit.constraint import DEFAULT_CONSTRAINT, parse_constraint
from autodl.audit.mitigation import DEFAULT_GRID_SIZE, GroupThresholds, fit_reductions, fit_thresholds
from autodl.audit.selection import select_under_constraint
from autodl.progress import Reporter

if TYPE_CHECKING:
    from autodl.fit import Final, FitConfig, Prepared


@dataclass
class FairnessOutcome:
    """The model to ship after the fairness stage, the one that would ship without it, and why."""

    final: "Final"
    unconstrained: "Final"
    thresholds: GroupThresholds | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.thresholds is not None or self.final is not self.unconstrained


def held_out_rows(prepared: "Prepared") -> tuple[np.ndarray, np.ndarray]:
    """(rows the trial checkpoints trained on, rows they did not), as positions in ``prepared.frame``."""
    split = prepared.split
    if prepared.folds:
        pool = np.concatenate([split.train, split.valid])
        train, valid = prepared.folds[0]
        return pool[train], pool[valid]
    return split.train, split.valid


def make_fair(
    tuner: Any, final: "Final", prepared: "Prepared", config: "FitConfig", *, metric: str, positive: str | None,
    deadline: float | None, reporter: Reporter,
) -> FairnessOutcome:
    """Runs the fairness options of ``config``; ``positive`` is the favourable class (``None`` for regression)."""
    outcome = FairnessOutcome(final=final, unconstrained=final)
    if not (config.fairness_constraint or config.mitigate):
        return outcome
    schema, data = prepared.schema, prepared.data
    constraint = parse_constraint(config.fairness_constraint or DEFAULT_CONSTRAINT)
    regression = positive is None
    positive_index = None if regression else [str(c) for c in schema.classes or []].index(positive)  # type: ignore[arg-type]
    train_rows, valid_rows = held_out_rows(prepared)
    valid, valid_frame = data.take(valid_rows), prepared.frame.iloc[valid_rows].reset_index(drop=True)
    sensitive = list(config.sensitive)
    higher = metrics_lib.direction(metric) == "max"
    outcome.summary = {"constraint": str(constraint), "positive": positive, "rows": "fold 0 held-out" if prepared.folds else "validation"}

    def score(output: np.ndarray) -> float:
        output = output.reshape(-1) if regression else output
        return float(metrics_lib.compute(schema.task, valid.y, output, valid.score_weight)[metric])  # type: ignore[arg-type]

    met = False
    if config.fairness_constraint:
        outputs, by_name = _candidates(tuner, final, valid)
        unconstrained = "ensemble" if final.kind == "ensemble" else f"trial_{final.members[0]}"
        selection = select_under_constraint(
            outputs, {n: score(o) for n, o in outputs.items()}, valid.y, valid_frame[sensitive], constraint,  # type: ignore[arg-type]
            positive_index=positive_index, unconstrained=unconstrained, higher_is_better=higher,
        )
        outcome.summary["selection"] = selection.to_dict()
        met = selection.met
        if not met:
            reporter.message(f"no searched model meets {constraint} on the {outcome.summary['rows']} rows"
                             + ("; mitigating" if config.mitigate else "; keeping the unconstrained best"))
        elif selection.chosen != unconstrained:
            trial = tuner.oracle.trials[by_name[selection.chosen]]
            chosen = selection.candidate(selection.chosen)
            reporter.message(f"fairness constraint {constraint}: {selection.chosen} meets it "
                             f"({chosen.value:.4f}); val {metric} {chosen.score:.4f} vs {selection.candidate(unconstrained).score:.4f}")
            outcome.final = _ship_trial(tuner, trial, final, prepared, config, deadline, reporter, chosen.score)
        else:
            reporter.message(f"fairness constraint {constraint}: the unconstrained best already meets it")
    if config.mitigate and not met:
        if config.mitigate == "threshold":
            y01 = (np.asarray(data.y) == positive_index).astype(int)
            outcome.thresholds = fit_thresholds(outcome.final.model, schema, valid_frame, y01[valid_rows], sensitive,
                                                constraint, positive=positive, seed=config.seed)  # type: ignore[arg-type]
            outcome.summary["mitigation"] = {"method": "threshold", "parity": constraint.parity,
                                             "fitted_on": outcome.summary["rows"],
                                             "model_saw_these_rows": bool(outcome.final.refit)}
            reporter.message(f"threshold mitigation: per-group thresholds for {constraint.parity} fitted on "
                             f"{len(valid_rows)} held-out rows")
        else:
            outcome.final = _reductions(tuner, outcome.final, prepared, config, constraint, train_rows, valid_rows,
                                        score=score, higher=higher, positive=positive, deadline=deadline,
                                        reporter=reporter, outcome=outcome)
    return outcome


def _candidates(tuner: Any, final: "Final", valid: Any) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Validation outputs of every trial with a checkpoint, plus the ensemble; names → trial ids."""
    from autodl.recipes.tabular import predict

    outputs, by_name = {}, {}
    for trial in tuner.ranked_trials():
        if tuner.checkpoint_path(trial.trial_id).exists():
            name = f"trial_{trial.trial_id}"
            outputs[name] = predict(tuner.load_model(trial), valid)
            by_name[name] = trial.trial_id
    if final.kind == "ensemble":
        # Members retrained on train+validation have seen these rows: the ensemble is judged
        # by its trial models' outputs, the evidence that chose it.
        trial_outputs = [outputs.get(f"trial_{m}") for m in final.members]
        if final.refit and all(o is not None for o in trial_outputs):
            outputs["ensemble"] = np.mean(trial_outputs, axis=0)
        else:
            outputs["ensemble"] = predict(final.model, valid)
    return outputs, by_name


def _ship_trial(
    tuner: Any, trial: Any, final: "Final", prepared: "Prepared", config: "FitConfig", deadline: float | None,
    reporter: Reporter, valid_score: float,
) -> "Final":
    """The chosen trial as the shipped model: refit on all rows when the run refits, else its checkpoint."""
    from autodl.fit import Final
    from autodl.train import refit

    if final.refit:
        pool = prepared.data.take(np.concatenate([prepared.split.train, prepared.split.valid]))
        reporter.message(f"refit: trial {trial.trial_id} on all {len(pool)} rows")
        model = refit(tuner.hypermodel, trial.hyperparameters, pool, epochs=tuner.best_epoch(trial), seed=config.seed,
                      deadline=deadline)
        return Final(model, "refit", [trial.trial_id], "best configuration that meets the fairness constraint, refit", valid_score)
    return Final(tuner.load_model(trial), "single", [trial.trial_id], "best trial that meets the fairness constraint", valid_score)


def _reductions(
    tuner: Any, shipped: "Final", prepared: "Prepared", config: "FitConfig", constraint: Any, train_rows: np.ndarray,
    valid_rows: np.ndarray, *, score: Any, higher: bool, positive: str | None, deadline: float | None, reporter: Reporter,
    outcome: FairnessOutcome,
) -> "Final":
    from autodl.features.frame import ModelData
    from autodl.fit import Final
    from autodl.train import refit

    # An ensemble or a refit has no single checkpoint to reweight: its best member's configuration is retrained.
    trial = tuner.oracle.trials[shipped.members[0]]
    epochs = tuner.best_epoch(trial)
    frame = prepared.frame
    grid_size = config.grid_size or DEFAULT_GRID_SIZE

    def trainer(x: dict[str, np.ndarray], y: np.ndarray, weight: np.ndarray | None) -> Any:
        return refit(tuner.hypermodel, trial.hyperparameters, ModelData(x, y, weight), epochs=epochs, seed=config.seed,
                     deadline=deadline)

    reporter.message(f"reductions: Fairlearn GridSearch ({constraint.parity}, {grid_size} grid points) retraining "
                     f"trial {trial.trial_id}'s configuration for {epochs} epochs each")
    t0 = time.monotonic()
    y = np.asarray(prepared.data.y)
    if positive is not None:  # classification reductions work on 0/1 "favourable" labels
        y = (y == [str(c) for c in prepared.schema.classes or []].index(positive)).astype(int)
    result = fit_reductions(
        trainer, prepared.schema, frame.iloc[train_rows].reset_index(drop=True), y[train_rows],
        frame.iloc[valid_rows].reset_index(drop=True), y[valid_rows], list(config.sensitive), constraint,
        positive=positive, score=score if higher else (lambda o: -score(o)), grid_size=grid_size, deadline=deadline,
    )
    chosen = result.points[result.chosen]
    outcome.summary["mitigation"] = {
        "method": "reductions", "algorithm": "GridSearch", "parity": constraint.parity, "grid_size": grid_size,
        "trained": len(result.points), "complete": result.complete, "met": result.met, "chosen": result.chosen,
        "seconds": round(time.monotonic() - t0, 2),
        "points": [{"index": p.index, "score": p.score, "value": p.value, "meets": p.meets} for p in result.points],
    }
    if not result.met:
        reporter.message(f"reductions: no grid model meets {constraint}; shipping the one closest to it ({chosen.value:.4f})")
    return Final(result.model, "reductions", [trial.trial_id],
                 f"Fairlearn GridSearch ({constraint.parity}): most accurate grid model meeting {constraint}"
                 if result.met else f"Fairlearn GridSearch ({constraint.parity}): grid model closest to {constraint}",
                 chosen.score if higher else -chosen.score)

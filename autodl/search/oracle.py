"""What to try next: keras-tuner's oracles, with autodl's warm start.

The first trials of a Bayesian or random search run each architecture's
recommended defaults (a small portfolio, as AutoGluon does), so a short budget
still sees every model family at its best-known setting before random or
Gaussian-process proposals take over. Hyperband keeps its own schedule.

A trial that raises is recorded as failed and the search goes on: only a
search in which no trial has completed stops, once every warm-start
configuration (and at least three trials in a row) failed.

Example:

>>> import keras_tuner as kt
>>> oracle = make_oracle("random", kt.Objective("val_accuracy", "max"), max_trials=5, seed=0,
...                      initial_configs=[{"architecture": "mlp"}])
>>> type(oracle).__name__
'WarmRandomSearchOracle'
"""

from __future__ import annotations

from typing import Any

import keras_tuner as kt

TUNERS: tuple[str, ...] = ("bayesian", "hyperband", "random")
MIN_FAILURES_TO_STOP = 3  # failed trials in a row, with none completed, that end a search


class FailureTolerantMixin:
    """Goes on past failed trials; stops the search only when failures leave it with nothing.

    keras-tuner raises ``RuntimeError`` from ``end_trial`` after ``max_consecutive_failed_trials``
    failures in a row, even when earlier trials completed: one broken configuration (a text
    encoder, an architecture) three times in a row killed the whole fit, and the raise comes
    before the oracle saves its state. Here failures in a row only stop a search where no trial
    has completed (its configurations all fail: a systemic problem, not a bad draw), and they
    stop it cleanly: the next trial request is answered STOPPED, and the tuner reports why.
    Counted in this process only, so a resumed search gives its trials another chance.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures_in_a_row = 0

    def _check_consecutive_failures(self) -> None:
        # Called by keras-tuner's end_trial for each trial that ends for good (no retry left).
        last = self.trials[self.end_order[-1]]  # type: ignore[attr-defined]
        self.failures_in_a_row = self.failures_in_a_row + 1 if last.status == "FAILED" else 0

    def stopped_for_failures(self) -> bool:
        """Whether enough trials failed in a row, and none has completed, to end the search."""
        if self.failures_in_a_row < self.max_consecutive_failed_trials:  # type: ignore[attr-defined]
            return False
        return not any(t.status == "COMPLETED" for t in self.trials.values())  # type: ignore[attr-defined]

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self.stopped_for_failures():
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return super().populate_space(trial_id)  # type: ignore[misc]


class WarmStartMixin:
    """Proposes ``initial_configs`` (partial values; the rest at defaults) before the base oracle."""

    def __init__(self, *args: Any, initial_configs: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial_configs = list(initial_configs or [])

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        index = len(self.trials)  # type: ignore[attr-defined]
        if index < len(self.initial_configs):
            return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": self._complete(self.initial_configs[index])}
        return super().populate_space(trial_id)  # type: ignore[misc]

    def _complete(self, config: dict[str, Any]) -> dict[str, Any]:
        hps = self.hyperparameters.copy()  # type: ignore[attr-defined]
        hps.values = dict(config)
        for hp in hps.space:
            if hp.name not in hps.values and hps.is_active(hp):
                hps.values[hp.name] = hp.default
        return {k: v for k, v in hps.values.items() if k in config or any(h.name == k for h in hps.space)}


class WarmBayesianOptimizationOracle(FailureTolerantMixin, WarmStartMixin, kt.oracles.BayesianOptimizationOracle):
    pass


class WarmRandomSearchOracle(FailureTolerantMixin, WarmStartMixin, kt.oracles.RandomSearchOracle):
    pass


class TolerantHyperbandOracle(FailureTolerantMixin, kt.oracles.HyperbandOracle):
    pass


def make_oracle(
    kind: str,
    objective: kt.Objective,
    *,
    max_trials: int,
    seed: int,
    initial_configs: list[dict[str, Any]] | None = None,
    max_epochs: int = 100,
) -> kt.Oracle:
    """The oracle for ``--tuner``: bayesian (default), hyperband, or random.

    Failed trials stop the search only when none has completed and every warm-start
    configuration has failed in a row (at least ``MIN_FAILURES_TO_STOP``), so each
    architecture and text encoder gets its chance before the search gives up.
    """
    failures = max(MIN_FAILURES_TO_STOP, len(initial_configs or []))
    common: dict[str, Any] = {"objective": objective, "seed": seed, "max_consecutive_failed_trials": failures}
    if kind == "bayesian":
        return WarmBayesianOptimizationOracle(
            max_trials=max_trials,
            num_initial_points=max(len(initial_configs or []) + 2, 3),
            initial_configs=initial_configs,
            **common,
        )
    if kind == "random":
        return WarmRandomSearchOracle(max_trials=max_trials, initial_configs=initial_configs, **common)
    if kind == "hyperband":
        # Hyperband sizes its own brackets from max_epochs; max_trials caps the total.
        oracle = TolerantHyperbandOracle(max_epochs=max_epochs, factor=3, **common)
        oracle.max_trials = max_trials
        return oracle
    raise ValueError(f"unknown tuner {kind!r}; choose one of {', '.join(TUNERS)}")

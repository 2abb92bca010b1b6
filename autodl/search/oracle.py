"""What to try next: keras-tuner's oracles, with autodl's warm start.

The first trials of a Bayesian or random search run each architecture's
recommended defaults (a small portfolio, as AutoGluon does), so a short budget
still sees every model family at its best-known setting before random or
Gaussian-process proposals take over. Hyperband keeps its own schedule.

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


class WarmBayesianOptimizationOracle(WarmStartMixin, kt.oracles.BayesianOptimizationOracle):
    pass


class WarmRandomSearchOracle(WarmStartMixin, kt.oracles.RandomSearchOracle):
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
    """The oracle for ``--tuner``: bayesian (default), hyperband, or random."""
    common: dict[str, Any] = {"objective": objective, "seed": seed, "max_consecutive_failed_trials": 3}
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
        oracle = kt.oracles.HyperbandOracle(max_epochs=max_epochs, factor=3, **common)
        oracle.max_trials = max_trials
        return oracle
    raise ValueError(f"unknown tuner {kind!r}; choose one of {', '.join(TUNERS)}")

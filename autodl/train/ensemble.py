"""Ensembles of trial models, saved as one Keras model.

``greedy_ensemble`` picks, from the top trials, the subset whose averaged
validation output scores best (forward selection without replacement,
Caruana et al. 2004); ``informative_members`` leaves out models that learned
little beside the best one (for averages chosen by rule); ``average_models``
wires the members into one functional model over the same named inputs, so it
saves, loads and serves like a single model.

Example:

>>> import numpy as np
>>> outputs = [np.array([[0.9, 0.1], [0.45, 0.55]]), np.array([[0.6, 0.4], [0.1, 0.9]])]
>>> greedy_ensemble(outputs, np.array([0, 1]), task="binary", metric="log_loss")[0]
[1, 0]
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from autodl import metrics as metrics_lib


def greedy_ensemble(
    outputs: list[np.ndarray],
    y_true: np.ndarray,
    *,
    task: str,
    metric: str,
    sample_weight: np.ndarray | None = None,
) -> tuple[list[int], float]:
    """Indices of the chosen members (best first) and the ensemble's validation score."""
    scores = _scores(outputs, y_true, task=task, metric=metric, sample_weight=sample_weight)
    order = sorted(range(len(outputs)), key=lambda i: scores[i], reverse=metrics_lib.direction(metric) == "max")
    chosen = [order[0]]
    best = scores[order[0]]
    for i in order[1:]:
        candidate = np.mean([outputs[j] for j in chosen + [i]], axis=0)
        score = metrics_lib.compute(task, y_true, candidate, sample_weight)[metric]
        if metrics_lib.is_better(score, best, metric):
            chosen.append(i)
            best = score
    return chosen, float(best)


def informative_members(
    outputs: list[np.ndarray],
    y_true: np.ndarray,
    *,
    task: str,
    metric: str,
    sample_weight: np.ndarray | None = None,
    share: float = 0.5,
) -> list[int]:
    """Indices of the outputs worth averaging: those whose gain over a constant guess is at least
    ``share`` of the best output's gain (the best is always kept; order is kept).

    A trial that diverged or never left its initial guess (a one-epoch BiLSTM at 0.49 accuracy on
    balanced classes, say) still leads its model family. Averaged in, a member near the constant
    guess adds only size and latency (on the text benchmark, accuracy moved by one sentence in
    600), and a diverged one that is confidently wrong adds its errors. The constant guess is the
    best one for the validation rows: their class frequencies, or their mean. When no score can
    be computed (NaN for every output), all are kept.

    >>> import numpy as np
    >>> y = np.array([0, 1, 0, 1])
    >>> good, weak, chance = np.eye(2)[y] * 0.8 + 0.1, np.eye(2)[[0, 1, 1, 1]] * 0.8 + 0.1, np.full((4, 2), 0.5)
    >>> informative_members([good, weak, chance], y, task="binary", metric="accuracy")
    [0, 1]
    """
    scores = _scores(outputs, y_true, task=task, metric=metric, sample_weight=sample_weight)
    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if task == "regression":
        guess = np.full(len(y_true), np.average(np.asarray(y_true, dtype=np.float64), weights=weights))
    else:
        counts = np.bincount(np.asarray(y_true, dtype=np.int64), weights=weights, minlength=outputs[0].shape[1])
        guess = np.tile(counts / counts.sum(), (len(y_true), 1))
    constant = metrics_lib.compute(task, y_true, guess, sample_weight)[metric]
    sign = -1.0 if metrics_lib.direction(metric) == "min" else 1.0
    gains = [sign * (score - constant) for score in scores]
    if all(math.isnan(gain) for gain in gains):
        return list(range(len(outputs)))
    best = int(np.nanargmax(gains))
    if not gains[best] > 0:
        return [best]
    return [i for i, gain in enumerate(gains) if i == best or gain >= share * gains[best]]


def _scores(
    outputs: list[np.ndarray], y_true: np.ndarray, *, task: str, metric: str, sample_weight: np.ndarray | None
) -> list[float]:
    return [metrics_lib.compute(task, y_true, o, sample_weight)[metric] for o in outputs]


def average_models(models: list[keras.Model], inputs: dict[str, Any], name: str = "autodl_ensemble") -> keras.Model:
    """One model averaging the members' outputs; each member keeps its own name."""
    outputs = [model(inputs) for model in models]
    averaged = keras.layers.Average(name="average")(outputs)
    return keras.Model(inputs, averaged, name=name)

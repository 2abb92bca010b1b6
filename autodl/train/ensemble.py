"""Ensembles of trial models, saved as one Keras model.

``greedy_ensemble`` picks, from the top trials, the subset whose averaged
validation output scores best (forward selection without replacement,
Caruana et al. 2004); ``average_models`` wires that subset into one
functional model over the same named inputs, so it saves, loads and serves
like a single model.

Example:

>>> import numpy as np
>>> outputs = [np.array([[0.9, 0.1], [0.4, 0.6]]), np.array([[0.6, 0.4], [0.1, 0.9]])]
>>> greedy_ensemble(outputs, np.array([0, 1]), task="binary", metric="log_loss")[0]
[1, 0]
"""

from __future__ import annotations

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
    scores = [metrics_lib.compute(task, y_true, o, sample_weight)[metric] for o in outputs]
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


def average_models(models: list[keras.Model], inputs: dict[str, Any], name: str = "autodl_ensemble") -> keras.Model:
    """One model averaging the members' outputs; each member keeps its own name."""
    outputs = [model(inputs) for model in models]
    averaged = keras.layers.Average(name="average")(outputs)
    return keras.Model(inputs, averaged, name=name)

"""Refit: train the chosen configuration on all training rows for its best epoch count.

Used after cross-validated search, where the folds supply the evidence (score
and epoch count) and no single fold model has seen all the data. With several
GPUs visible the refit is data-parallel (``tf.distribute.MirroredStrategy``);
otherwise it runs under TensorFlow's default strategy.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from autodl.features.frame import ModelData


class _Deadline(keras.callbacks.Callback):
    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        self.deadline = deadline

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.model.stop_training = True


def refit(
    hypermodel: kt.HyperModel,
    hp: kt.HyperParameters,
    data: ModelData,
    *,
    epochs: int,
    seed: int,
    deadline: float | None = None,
    strategy: Any = None,
) -> keras.Model:
    """A fresh model of configuration ``hp`` trained ``epochs`` epochs on ``data`` (stops at ``deadline``).

    ``strategy``: a ``tf.distribute`` strategy (default: ``refit_strategy()``). The model
    is built, compiled and trained in its scope, so its variables are mirrored on every replica.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    strategy = strategy or refit_strategy()
    with strategy.scope():  # fit too: the optimizer creates its variables on the first step
        model = hypermodel.build(hp)
        if strategy.num_replicas_in_sync > 1:
            _build_from_one_batch(model, data)
        hypermodel.fit(hp, model, data, None, epochs=epochs, callbacks=[_Deadline(deadline)], seed=seed)
    return model


def _build_from_one_batch(model: keras.Model, data: ModelData) -> None:
    """Builds the model's loss and metric state from one plain batch, before a distributed fit.

    Keras 3.15's TensorFlow trainer builds that state from the first batch averaged across
    replicas (``_maybe_symbolic_build``), and averaging fails on string columns: AddN has no
    string kernel (tensorflow/tensorflow#80951). Built here, the model needs no such step.
    """
    from autodl.recipes.tabular import make_dataset  # noqa: PLC0415

    batch = next(iter(make_dataset(data.take(np.arange(min(len(data), 8))), batch_size=8)))
    model._symbolic_build(data_batch=batch)  # noqa: SLF001
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # noqa: SLF001


def refit_strategy() -> Any:
    """``MirroredStrategy`` over the GPUs when there are several, else the default (one device) strategy."""
    import tensorflow as tf  # noqa: PLC0415

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([g.name for g in gpus])
    return tf.distribute.get_strategy()


def describe_strategy(strategy: Any) -> str:
    """``"MirroredStrategy (2 replicas)"`` or ``"default (1 replica)"``, for the run manifest."""
    name = type(strategy).__name__
    name = "default" if name.startswith("_Default") else name
    n = strategy.num_replicas_in_sync
    return f"{name} ({n} replica{'s' if n != 1 else ''})"

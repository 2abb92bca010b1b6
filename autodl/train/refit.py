"""Refit: train the chosen configuration on all training rows for its best epoch count.

Used after cross-validated search, where the folds supply the evidence (score
and epoch count) and no single fold model has seen all the data.
"""

from __future__ import annotations

import time

import keras
import keras_tuner as kt

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
) -> keras.Model:
    """A fresh model of configuration ``hp`` trained ``epochs`` epochs on ``data`` (stops at ``deadline``)."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = hypermodel.build(hp)
    hypermodel.fit(hp, model, data, None, epochs=epochs, callbacks=[_Deadline(deadline)], seed=seed)
    return model

"""The tabular training recipe: AdamW, early stopping, per-epoch validation scoring.

A recipe is plain Keras a user can read and call directly:

>>> import numpy as np, keras
>>> from autodl.features.frame import ModelData
>>> inp = keras.Input(shape=(), name="x")
>>> out = keras.layers.Dense(2, activation="softmax")(keras.layers.Reshape((1,))(inp))
>>> model = compile_model(keras.Model({"x": inp}, out), task="binary")
>>> data = ModelData({"x": np.linspace(0, 1, 64).astype("float32")}, (np.arange(64) > 31).astype("int64"))
>>> history = train(model, data, data, task="binary", metric="accuracy", epochs=2, batch_size=16)
>>> "val_accuracy" in history.history
True
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from autodl import metrics as metrics_lib
from autodl.features.frame import ModelData
from autodl.train.optimizer import AutoAdamW

PREDICT_BATCH = 4096
# Up to this many rows go through the model as one batch (``predict_on_batch``). Keras'
# ``predict`` builds a data adapter and an iterator on every call, about 10 ms: most of the
# time of predicting one row. 256 texts through MiniLM's attention (12 heads, 128 x 128
# scores each) stay near 200 MB.
SMALL_BATCH = 256


def compile_model(
    model: keras.Model, *, task: str, learning_rate: float = 1e-3, weight_decay: float = 1e-5
) -> keras.Model:
    """AdamW (``AutoAdamW``) with the task's loss; metrics come from ``ValidationScore``, not Keras."""
    loss = "mse" if task == "regression" else "sparse_categorical_crossentropy"
    optimizer = AutoAdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    # As in the tabular-DL papers: decay weight matrices only, not biases, normalization
    # scales, embeddings, tokens or periodic frequencies.
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name != "kernel"])
    model.compile(optimizer=optimizer, loss=loss)
    return model


def make_dataset(
    data: ModelData, *, batch_size: int, shuffle: bool = False, seed: int = 0, with_targets: bool = True
) -> tf.data.Dataset:
    """A batched ``tf.data`` pipeline; strings go in as ``tf.string`` (Keras rejects numpy str arrays).

    ``data`` may also be a stream of a file's rows (``autodl.features.streaming.TableStream``),
    which makes its own pipeline.
    """
    if not isinstance(data, ModelData):
        return data.dataset(batch_size=batch_size, shuffle=shuffle, seed=seed, with_targets=with_targets)
    x = _tensors(data)
    if with_targets and data.y is not None:
        parts: tuple[Any, ...] = (x, tf.constant(data.y))
        if data.sample_weight is not None:
            parts = parts + (tf.constant(data.sample_weight, dtype=tf.float32),)
        ds = tf.data.Dataset.from_tensor_slices(parts)
    else:
        ds = tf.data.Dataset.from_tensor_slices(x)
    if shuffle:
        ds = ds.shuffle(min(len(data), 100_000), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _tensors(data: ModelData) -> dict[str, tf.Tensor]:
    """The model's inputs as tensors: strings go in as ``tf.string`` (Keras rejects numpy str arrays)."""
    return {k: tf.constant(v) for k, v in data.x.items()}


def predict(model: keras.Model, data: ModelData) -> np.ndarray:
    """Probabilities ``(n, n_classes)`` or values ``(n,)``."""
    # Under several replicas (MirroredStrategy) every replica would predict the whole batch.
    one_replica = getattr(model, "distribute_strategy", tf.distribute.get_strategy()).num_replicas_in_sync == 1
    if isinstance(data, ModelData) and 0 < len(data) <= SMALL_BATCH and one_replica:
        out = model.predict_on_batch(_tensors(data))
    else:
        out = model.predict(make_dataset(data, batch_size=PREDICT_BATCH, with_targets=False), verbose=0)
    return np.asarray(out, dtype=np.float64)


class ValidationScore(keras.callbacks.Callback):
    """Scores the validation split after each epoch with autodl's own metrics.

    Writes ``val_<metric>`` into the epoch logs, so keras-tuner's checkpointing
    and the search objective use exactly the metric the final evaluation reports.
    """

    def __init__(self, valid: ModelData, *, task: str, metric: str) -> None:
        super().__init__()
        self.valid = valid
        self.task = task
        self.metric = metric
        self._dataset = make_dataset(valid, batch_size=PREDICT_BATCH, with_targets=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        output = np.asarray(self.model.predict(self._dataset, verbose=0), dtype=np.float64)
        if self.task == "regression":
            output = output.reshape(-1)
        # Unweighted by class balancing (``score_weight``): trials are selected on the metric as the user reads it.
        scores = metrics_lib.compute(self.task, self.valid.y, output, self.valid.score_weight)  # type: ignore[arg-type]
        if logs is not None:
            logs[f"val_{self.metric}"] = scores[self.metric]


def train(
    model: keras.Model,
    train_data: ModelData,
    valid_data: ModelData | None,
    *,
    task: str,
    metric: str,
    epochs: int,
    batch_size: int,
    initial_epoch: int = 0,
    patience: int = 8,
    callbacks: list[keras.callbacks.Callback] | None = None,
    seed: int = 0,
) -> keras.callbacks.History:
    """Fits with early stopping on validation loss; without validation data, trains ``epochs`` epochs."""
    own: list[keras.callbacks.Callback] = []
    validation = None
    if valid_data is not None:
        # First, so callbacks after it (checkpoints, the tuner) see val_<metric>.
        own.append(ValidationScore(valid_data, task=task, metric=metric))
        # Halving the step size on a plateau lets a run settle into a minimum before
        # early stopping ends it; it is worth most on regression targets. A model compiled
        # with a schedule (a pretrained encoder's warm-up and decay) keeps its schedule.
        if not isinstance(model.optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):  # noqa: SLF001
            own.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(2, patience // 3),
                                                         min_lr=1e-6))
        own.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=False))
        validation = make_dataset(valid_data, batch_size=PREDICT_BATCH)
    if not model.optimizer.built:
        # Built eagerly, the optimizer's slots are plain variables; built inside the first
        # traced train step, TF wraps each slot's initializer in a tf.cond whose graphs are
        # never freed, and memory grows with every trial of a search.
        model.optimizer.build(model.trainable_variables)
    return model.fit(
        make_dataset(train_data, batch_size=batch_size, shuffle=True, seed=seed),
        validation_data=validation,
        epochs=epochs,
        initial_epoch=initial_epoch,
        callbacks=own + list(callbacks or []),
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
    )

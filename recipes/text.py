"""Text fine-tuning recipe: a pretrained sentence encoder, a new head, one phase.

The BERT fine-tuning recipe (Devlin et al. 2019) as plain code. ``text_classifier`` wraps
an encoder (raw strings -> ``(batch, d)`` sentence embeddings, tokenizer inside, e.g. the
zoo's ``minilm``) as strings -> encoder -> dropout -> softmax head. ``fine_tune_text``
then trains it in one of two modes:

- fine-tuning (default): every weight trains, with AdamW at a small peak learning rate
  (5e-5), linear warm-up over the first 10% of steps, then linear (or cosine) decay to 0,
  and early stopping on validation loss that keeps the best epoch. Pretrained
  transformers need the warm-up: a full-size first step from a random head's gradients
  wrecks the pretrained attention.
- ``freeze_encoder=True`` (feature extraction): the encoder is frozen and run once over
  the data; only the head trains, on the cached embeddings, at a head-sized learning
  rate. Many times cheaper, and usually a few points less accurate.

Example:

>>> import keras
>>> from autodl.recipes.text import fine_tune_text, text_classifier
>>> from autodl.zoo.text import minilm
>>> model = text_classifier(minilm.encoder(sequence_length=64), n_classes=2)  # doctest: +SKIP
>>> result = fine_tune_text(model, train_ds, valid_ds, epochs=3)  # doctest: +SKIP
>>> result.best_metric  # doctest: +SKIP
0.93
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from autodl.train.optimizer import AutoAdamW

__all__ = ["TextFineTuneResult", "WarmupDecay", "fine_tune_text", "text_classifier"]

TASKS = ("classification", "regression")
DECAYS = ("linear", "cosine")
HEAD_DROPOUT = "head_dropout"
HEAD = "head"


# --------------------------------------------------------------------------- model


def text_classifier(
    encoder: keras.Model,
    n_classes: int,
    *,
    task: str = "classification",
    dropout: float = 0.1,
    name: str | None = None,
) -> keras.Model:
    """Strings -> encoder -> dropout -> head (softmax over ``n_classes``, or one linear unit).

    Args:
        encoder: a ``keras.Model`` from raw strings to ``(batch, d)`` embeddings.
        n_classes: classes of the softmax head (ignored for ``task="regression"``).
        task: ``"classification"`` (softmax, integer labels) or ``"regression"``.
        dropout: dropout before the head; 0.1 as in BERT's own classifier.
        name: the model's name (default ``"<encoder>_classifier"``).

    The model's layers ``"head_dropout"`` and ``"head"`` are the new ones; the
    feature-extraction mode of ``fine_tune_text`` trains them alone.

    >>> import keras
    >>> enc = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)], name="toy")
    >>> text_classifier(enc, n_classes=3).output_shape
    (None, 3)
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "classification" and (isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2):
        raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    inputs = keras.Input(shape=encoder.input_shape[1:], dtype=encoder.inputs[0].dtype, name="text")
    x = encoder(inputs)
    x = keras.layers.Dropout(dropout, name=HEAD_DROPOUT)(x)
    units, activation = (n_classes, "softmax") if task == "classification" else (1, None)
    # A small init keeps the first logits near uniform, so the first steps' gradients
    # into the pretrained encoder stay small.
    init = keras.initializers.TruncatedNormal(stddev=0.02)
    outputs = keras.layers.Dense(units, activation=activation, kernel_initializer=init, name=HEAD)(x)
    return keras.Model(inputs, outputs, name=name or f"{encoder.name}_classifier")


# --------------------------------------------------------------------------- schedule


@keras.saving.register_keras_serializable(package="autodl")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``peak`` over ``warmup_steps``, then decay to 0 at ``total_steps``.

    ``decay="linear"`` is BERT's schedule; ``"cosine"`` stays near the peak longer.

    >>> s = WarmupDecay(1e-4, warmup_steps=10, total_steps=110)
    >>> [round(float(s(step)), 6) for step in (0, 5, 10, 60, 110)]
    [1e-05, 6e-05, 0.0001, 5e-05, 0.0]
    """

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, decay: str = "linear") -> None:
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
        self.peak = float(peak)
        self.warmup_steps = int(max(0, warmup_steps))
        self.total_steps = int(max(self.warmup_steps + 1, total_steps))
        self.decay = decay

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        # Step 0 gets 1/warmup of the peak, not 0: a zero first step would be wasted.
        warm = self.peak * (step + 1.0) / max(1.0, float(self.warmup_steps))
        progress = keras.ops.clip(
            (step - self.warmup_steps) / float(self.total_steps - self.warmup_steps), 0.0, 1.0
        )
        if self.decay == "linear":
            decayed = self.peak * (1.0 - progress)
        else:
            decayed = self.peak * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "decay": self.decay}


# --------------------------------------------------------------------------- training


@dataclass
class TextFineTuneResult:
    """What ``fine_tune_text`` did.

    Attributes:
        mode: ``"finetune"`` (all weights) or ``"frozen"`` (head on cached embeddings).
        history: Keras ``History.history`` (per-epoch lists).
        epochs: epochs run (fewer than asked when early stopping ended training).
        best_epoch: the epoch (0-based) whose weights the model ends with.
        monitor: ``"val_loss"``, or ``"loss"`` without validation data.
        best_loss: ``monitor`` at ``best_epoch``.
        metric: ``"val_accuracy"`` / ``"accuracy"`` or ``"val_mae"`` / ``"mae"``.
        best_metric: ``metric`` at ``best_epoch``.
        seconds: wall time, the one encoder pass of the frozen mode included.
        learning_rate: the peak learning rate.
        steps: optimizer steps the schedule was planned for.
        trainable_params: scalars that trained.
    """

    mode: str
    history: dict[str, list[float]]
    epochs: int
    best_epoch: int
    monitor: str
    best_loss: float
    metric: str
    best_metric: float
    seconds: float
    learning_rate: float
    steps: int
    trainable_params: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batched(ds: tf.data.Dataset | None, batch_size: int) -> tf.data.Dataset | None:
    """Batches an unbatched ``(text, label)`` dataset; a batched one passes through."""
    if ds is None:
        return None
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError("datasets must yield (texts, labels) or (texts, labels, sample_weights)")
    if spec[0].dtype != tf.string:
        raise ValueError(f"texts must be tf.string, got {spec[0].dtype.name}")
    if spec[0].shape.rank == 0:
        ds = ds.batch(batch_size)
    return ds


def _cardinality(ds: tf.data.Dataset) -> int:
    n = int(ds.cardinality())
    if n < 0:  # unknown or infinite: count once; text datasets are small next to an epoch of BERT
        n = sum(1 for _ in ds)
    return n


def _compile(model: keras.Model, *, task: str, learning_rate: Any, weight_decay: float) -> None:
    optimizer = AutoAdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    # BERT's convention: no decay on biases and LayerNorm scales/offsets (1-d), whose
    # pull toward 0 only hurts. Set before the optimizer builds.
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])
    if task == "classification":
        loss: keras.losses.Loss = keras.losses.SparseCategoricalCrossentropy()
        metric: keras.metrics.Metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    else:
        loss, metric = keras.losses.MeanSquaredError(), keras.metrics.MeanAbsoluteError(name="mae")
    model.compile(optimizer=optimizer, loss=loss, metrics=[metric])
    optimizer.build(model.trainable_variables)


def _head(model: keras.Model) -> tuple[keras.Model, keras.layers.Layer, keras.layers.Layer]:
    """The encoder sub-model and the two head layers of a ``text_classifier`` model."""
    try:
        dropout, head = model.get_layer(HEAD_DROPOUT), model.get_layer(HEAD)
    except ValueError:
        raise ValueError("freeze_encoder needs a model built by text_classifier (layers 'head_dropout', 'head')") from None
    encoders = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(encoders) != 1:
        raise ValueError(f"expected one encoder sub-model in {model.name!r}, found {len(encoders)}")
    return encoders[0], dropout, head


def _embed(encoder: keras.Model, ds: tf.data.Dataset | None) -> tf.data.Dataset | None:
    """``(texts, labels, ...)`` batches -> ``(embeddings, labels, ...)`` batches, the encoder run once."""
    if ds is None:
        return None
    parts: list[list[np.ndarray]] = []
    for batch in ds:
        features = encoder(batch[0], training=False).numpy()
        parts.append([features, *(np.asarray(t) for t in batch[1:])])
    columns = tuple(np.concatenate(c) for c in zip(*parts))
    batch_size = len(parts[0][0])
    return tf.data.Dataset.from_tensor_slices(columns).batch(batch_size)


def fine_tune_text(
    model: keras.Model,
    train_ds: tf.data.Dataset,
    valid_ds: tf.data.Dataset | None = None,
    *,
    epochs: int = 3,
    learning_rate: float | None = None,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    decay: str = "linear",
    freeze_encoder: bool = False,
    frozen_epochs: int = 30,
    patience: int = 1,
    batch_size: int = 32,
    task: str | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 0,
) -> TextFineTuneResult:
    """Fine-tunes a ``text_classifier`` model in place; the model ends with its best epoch's weights.

    Args:
        model: strings -> probabilities (or one regression output), e.g. from ``text_classifier``.
        train_ds, valid_ds: ``(text, label)`` datasets, unbatched (batched here) or batched;
            shuffle the training set yourself (``ds.shuffle(n, seed=...)``), as its order is kept.
        epochs: fine-tuning epochs; 2-4 is BERT's range, more overfits small sets.
        learning_rate: peak learning rate; default 5e-5 fine-tuning, 1e-3 for the head alone.
        warmup_fraction: share of the steps spent warming up (linear, from 0).
        weight_decay: AdamW's decoupled weight decay (not on biases and LayerNorm).
        decay: after warm-up, ``"linear"`` (BERT) or ``"cosine"`` decay to 0.
        freeze_encoder: feature extraction: train only the head on embeddings computed once.
            The encoder stays frozen afterwards; a later call without it unfreezes every
            layer (head first, then fine-tune: the classic two-stage recipe).
        frozen_epochs: epochs of the head in that mode (cheap: no encoder pass per epoch).
        patience: early stopping patience, in epochs, on validation loss (training loss without).
        batch_size: for unbatched datasets.
        task: ``"classification"`` or ``"regression"``; default: regression iff one output unit.
        callbacks: extra Keras callbacks.
        verbose: passed to ``fit``.

    >>> result = fine_tune_text(model, train_ds, valid_ds, epochs=3)  # doctest: +SKIP
    >>> result.mode, result.epochs  # doctest: +SKIP
    ('finetune', 3)
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
    if not 0.0 <= float(warmup_fraction) < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if task is None:
        task = "regression" if model.output_shape[-1] == 1 else "classification"
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    start = time.perf_counter()
    train, valid = _batched(train_ds, batch_size), _batched(valid_ds, batch_size)
    assert train is not None

    if freeze_encoder:
        mode, peak, n_epochs = "frozen", 1e-3 if learning_rate is None else float(learning_rate), frozen_epochs
        encoder, dropout, head = _head(model)
        encoder.trainable = False
        train, valid = _embed(encoder, train), _embed(encoder, valid)
        assert train is not None
        # The head layers are shared with ``model``: training this small model trains its head.
        features = keras.Input(shape=encoder.output_shape[1:], name="embedding")
        fit_model = keras.Model(features, head(dropout(features)), name=f"{model.name}_head")
    else:
        mode, peak, n_epochs = "finetune", 5e-5 if learning_rate is None else float(learning_rate), epochs
        for layer in model.layers:
            layer.trainable = True
        fit_model = model

    steps = _cardinality(train) * n_epochs
    schedule = WarmupDecay(peak, warmup_steps=round(warmup_fraction * steps), total_steps=steps, decay=decay)
    _compile(fit_model, task=task, learning_rate=schedule, weight_decay=weight_decay)
    monitor = "val_loss" if valid is not None else "loss"
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
    trainable = int(sum(np.prod(v.shape) for v in fit_model.trainable_variables))
    fitted = fit_model.fit(
        train.prefetch(tf.data.AUTOTUNE),
        validation_data=None if valid is None else valid.prefetch(tf.data.AUTOTUNE),
        epochs=n_epochs,
        callbacks=[stop, *callbacks],
        verbose=verbose,
    )
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    best_epoch = int(np.nanargmin(history[monitor]))
    metric = ("val_" if valid is not None else "") + ("accuracy" if task == "classification" else "mae")
    if freeze_encoder:
        # Compiled for predict/evaluate on strings; the optimizer is never stepped here.
        _compile(model, task=task, learning_rate=peak, weight_decay=weight_decay)
    return TextFineTuneResult(
        mode=mode,
        history=history,
        epochs=len(history[monitor]),
        best_epoch=best_epoch,
        monitor=monitor,
        best_loss=history[monitor][best_epoch],
        metric=metric,
        best_metric=history[metric][best_epoch],
        seconds=time.perf_counter() - start,
        learning_rate=peak,
        steps=steps,
        trainable_params=trainable,
    )

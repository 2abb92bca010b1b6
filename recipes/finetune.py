"""Image fine-tuning recipes: a pretrained backbone, a new head, two training phases.

The Keras transfer-learning guide's recipe, as plain code. ``classifier`` wraps a backbone
(raw RGB pixels in [0, 255] -> pooled features) as pixels -> augmentation ->
backbone(training=False) -> dropout -> softmax head. ``fine_tune`` then trains in two phases:

1. ``head``: the backbone is frozen and only the new head trains (AdamW, early stopping
   that restores the best epoch), so a random head's large, noisy gradients never reach
   the pretrained features.
2. ``finetune``: the top ``unfreeze_blocks`` blocks become trainable (their BatchNormalization
   layers stay frozen) and the model trains on at a 10x-100x lower learning rate, again
   with early stopping; ``unfreeze_blocks=0`` skips it. The model ends with the best
   weights seen. ``train_from_scratch`` is the one-phase recipe for untrained backbones.

Example (a zoo entry supplies the backbone and its ``blocks``):

>>> import keras
>>> from autodl.recipes.finetune import FineTuneConfig, classifier, fine_tune
>>> backbone = keras.applications.MobileNetV3Small(
...     input_shape=(64, 64, 3), include_top=False, weights=None, pooling="avg")
>>> model = classifier(backbone, n_classes=5, augmentation_strength=0.5)
>>> model.output_shape
(None, 5)
>>> config = FineTuneConfig(head_epochs=5, finetune_epochs=10, unfreeze_blocks=2)
>>> result = fine_tune(model, train_ds, valid_ds, blocks=my_blocks, config=config)  # doctest: +SKIP
>>> result.best_metric  # doctest: +SKIP
0.93
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from autodl.train.optimizer import AutoAdamW

__all__ = [
    "FineTuneConfig",
    "FineTuneResult",
    "PhaseResult",
    "SparseSmoothedCrossentropy",
    "augmentation",
    "classifier",
    "fine_tune",
    "freeze_all_but_top",
    "recalibrate_batchnorm",
    "train_from_scratch",
]

TASKS = ("classification", "regression")

Blocks = Sequence[Sequence[keras.layers.Layer]]
BlocksArg = Blocks | Callable[[keras.Model], Blocks]


# --------------------------------------------------------------------------- model


def augmentation(
    strength: float, *, flip: bool = True, seed: int | None = None, name: str = "augmentation"
) -> keras.Sequential:
    """Random flip, rotation, zoom and contrast, their ranges scaled by ``strength`` in [0, 1].

    ``flip=False`` leaves out the horizontal flip, for images whose meaning a mirror
    changes (digits, letters, documents, left/right anatomy).

    At ``strength=1``: horizontal flips, rotations up to +-36 degrees, zoom up to +-20%,
    contrast up to +-30%. ``strength=0`` returns the identity (one ``Identity`` layer:
    an empty ``Sequential`` cannot be called).

    Keras's random preprocessing layers transform their input only in training: inside
    ``fit`` they augment, while ``predict``, ``evaluate`` and ``model(x, training=False)``
    pass images through unchanged, so augmentation never changes a model's predictions.
    One trap: a bare ``model(x)`` call (no ``training`` argument) counts as training for
    these layers (their ``call`` defaults to ``training=True``), so pass
    ``training=False`` when calling a model directly.

    Inside a model the layers run on the accelerator, but rotation and zoom support no
    XLA, so on a GPU ``fit`` (``jit_compile="auto"``) then runs without it; mapping
    ``augmentation(s)`` over a ``tf.data`` pipeline with ``training=True`` instead is
    equivalent and keeps XLA.

    >>> [layer.__class__.__name__ for layer in augmentation(0.5).layers]
    ['RandomFlip', 'RandomRotation', 'RandomZoom', 'RandomContrast']
    >>> [layer.__class__.__name__ for layer in augmentation(0.5, flip=False).layers]
    ['RandomRotation', 'RandomZoom', 'RandomContrast']
    >>> [layer.__class__.__name__ for layer in augmentation(0.0).layers]
    ['Identity']
    """
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"augmentation strength must be in [0, 1], got {strength}")
    if strength == 0:
        return keras.Sequential([keras.layers.Identity()], name=name)

    def layer_seed(i: int) -> int | None:
        # One seed per layer: equal seeds would draw correlated transformations.
        return None if seed is None else seed + i

    flips = [keras.layers.RandomFlip("horizontal", seed=layer_seed(0))] if flip else []
    return keras.Sequential(
        [
            *flips,
            keras.layers.RandomRotation(0.1 * strength, seed=layer_seed(1)),
            keras.layers.RandomZoom(0.2 * strength, seed=layer_seed(2)),
            # Pixels are raw [0, 255]; the backbone normalizes them itself.
            keras.layers.RandomContrast(0.3 * strength, value_range=(0, 255), seed=layer_seed(3)),
        ],
        name=name,
    )


def classifier(
    backbone: keras.Model,
    n_classes: int,
    *,
    task: str = "classification",
    dropout: float = 0.2,
    augmentation_strength: float = 0.0,
    flip: bool = True,
    pretrained: bool = True,
    seed: int | None = None,
    input_shape: tuple[int | None, ...] | None = None,
    name: str | None = None,
) -> keras.Model:
    """Pixels ``(H, W, 3)`` float32 in [0, 255] -> augmentation -> backbone -> dropout -> head.

    Args:
        backbone: a ``keras.Model`` from raw pixels to pooled ``(batch, features)``
            (a 4-D feature map is average-pooled here).
        n_classes: classes of the softmax head (ignored for ``task="regression"``).
        task: ``"classification"`` (softmax, integer labels) or ``"regression"``
            (one linear unit).
        dropout: dropout rate before the head; 0 leaves it out.
        augmentation_strength: see ``augmentation``; 0 adds no augmentation layer.
        flip: include the horizontal flip in the augmentation (``False`` for digits, text, documents).
        pretrained: ``True`` runs the backbone in inference mode (``training=False``);
            ``False`` is for training from scratch (``train_from_scratch``), where
            BatchNormalization must learn its statistics from batches.
        seed: seed for augmentation and dropout.
        input_shape: ``(H, W, 3)``; read from the backbone when omitted (needed for
            subclassed backbones, which have no input shape of their own).
        name: model name; defaults to ``<backbone>_classifier``.

    The backbone is shared, not copied: two classifiers built on one backbone (e.g. one
    to pretrain, one to fine-tune) share its weights.

    >>> import keras
    >>> inp = keras.Input((32, 32, 3))
    >>> backbone = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp)))
    >>> classifier(backbone, 3).output_shape
    (None, 3)
    >>> classifier(backbone, 0, task="regression").output_shape
    (None, 1)
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "classification" and (not isinstance(n_classes, int) or n_classes < 2):
        raise ValueError(f"n_classes must be an integer >= 2 for classification, got {n_classes!r}")
    if not 0.0 <= augmentation_strength <= 1.0:
        raise ValueError(f"augmentation_strength must be in [0, 1], got {augmentation_strength}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if input_shape is None:
        shape = getattr(backbone, "input_shape", None)
        if not isinstance(shape, tuple):
            raise ValueError("the backbone must take one image input of known shape; else pass input_shape=(H, W, 3)")
        input_shape = tuple(shape[1:])

    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="pixels")
    x = inputs
    if augmentation_strength > 0:
        x = augmentation(augmentation_strength, flip=flip, seed=seed)(x)
    if pretrained:
        # training=False keeps the backbone's BatchNormalization layers in inference mode
        # for good, even after fine-tuning unfreezes them: they normalize with the moving
        # statistics learnt in pretraining instead of the statistics of each small
        # fine-tuning batch, which are noisy, would be written into the moving averages,
        # and would shift every activation the pretrained layers above them expect.
        features = backbone(x, training=False)
    else:
        features = backbone(x)
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    elif len(features.shape) != 2:
        raise ValueError(f"the backbone must return (batch, features), got shape {tuple(features.shape)}")
    if dropout > 0:
        features = keras.layers.Dropout(dropout, seed=seed, name="head_dropout")(features)
    if task == "classification":
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(features)
    else:
        outputs = keras.layers.Dense(1, name="predictions")(features)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_classifier")


# --------------------------------------------------------------------------- config and results


@dataclass(frozen=True)
class FineTuneConfig:
    """Settings of the two-phase recipe.

    Attributes:
        head_epochs: phase-1 epochs at most (frozen backbone, new head trains).
        head_learning_rate: AdamW step size of phase 1.
        finetune_epochs: phase-2 epochs at most; 0 skips phase 2.
        finetune_learning_rate: AdamW step size of phase 2, 10x-100x below the head's:
            large steps would overwrite the pretrained features they are meant to adapt.
        unfreeze_blocks: how many of the backbone's top blocks phase 2 trains; 0 skips it.
        weight_decay: AdamW decoupled weight decay (kernels only; biases and
            normalization scales are not decayed).
        patience: early-stopping patience of each phase, in epochs.
        label_smoothing: classification only; e.g. 0.1 keeps the head from becoming
            overconfident on small data sets.
        batch_size: used when the datasets are not batched yet.
        keep_best_phase: with validation data, end with phase 1's weights when phase 2
            never reached a lower validation loss.
        verbose: Keras ``fit`` verbosity.

    >>> FineTuneConfig().finetune_learning_rate
    0.0001
    >>> FineTuneConfig(unfreeze_blocks=-1)
    Traceback (most recent call last):
    ...
    ValueError: unfreeze_blocks must be an integer >= 0, got -1
    """

    head_epochs: int = 10
    head_learning_rate: float = 1e-3
    finetune_epochs: int = 10
    finetune_learning_rate: float = 1e-4
    unfreeze_blocks: int = 2
    weight_decay: float = 1e-4
    patience: int = 3
    label_smoothing: float = 0.0
    batch_size: int = 32
    keep_best_phase: bool = True
    verbose: int = 0

    def __post_init__(self) -> None:
        _check_int("head_epochs", self.head_epochs, 1)
        _check_int("finetune_epochs", self.finetune_epochs, 0)
        _check_int("unfreeze_blocks", self.unfreeze_blocks, 0)
        _check_int("patience", self.patience, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_positive("head_learning_rate", self.head_learning_rate)
        _check_positive("finetune_learning_rate", self.finetune_learning_rate)
        if self.finetune_learning_rate > self.head_learning_rate:
            raise ValueError(
                f"finetune_learning_rate ({self.finetune_learning_rate}) must not exceed "
                f"head_learning_rate ({self.head_learning_rate}); fine-tuning uses 10x-100x smaller steps"
            )
        if not 0.0 <= self.weight_decay:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


@dataclass
class PhaseResult:
    """One training phase.

    Attributes:
        name: ``"head"``, ``"finetune"`` or ``"scratch"``.
        history: Keras ``History.history`` of the phase (per-epoch lists).
        epochs: epochs run (fewer than asked when early stopping ended the phase).
        best_epoch: the epoch (0-based, within the phase) whose weights were kept.
        monitor: what early stopping watched: ``"val_loss"``, or ``"loss"`` without
            validation data.
        best_loss: ``monitor`` at ``best_epoch``.
        metric: ``"val_accuracy"`` / ``"accuracy"`` (classification) or ``"val_mae"`` /
            ``"mae"`` (regression).
        best_metric: ``metric`` at ``best_epoch``: the score of the weights kept.
        seconds: wall time of the phase.
        learning_rate: the phase's (initial) learning rate.
        trainable_params: scalars the phase trained.
        schedule: ``"constant"``, ``"cosine"`` or ``"plateau"``.
    """

    name: str
    history: dict[str, list[float]]
    epochs: int
    best_epoch: int
    monitor: str
    best_loss: float
    metric: str
    best_metric: float
    seconds: float
    learning_rate: float
    trainable_params: int
    schedule: str = "constant"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FineTuneResult:
    """What ``fine_tune`` did: one ``PhaseResult`` per phase run, in order.

    ``kept`` names the phase whose weights the model ends with (``"head"`` when phase 2
    was skipped, or never beat phase 1 on validation loss).
    """

    phases: dict[str, PhaseResult] = field(default_factory=dict)
    kept: str = "head"

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases.values())

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases.values())

    @property
    def best_metric(self) -> float:
        """The metric of the weights the model ends with."""
        return self.phases[self.kept].best_metric

    def to_dict(self) -> dict[str, Any]:
        return {
            "phases": {k: p.to_dict() for k, p in self.phases.items()},
            "kept": self.kept,
            "seconds": self.seconds,
            "epochs": self.epochs,
            "best_metric": self.best_metric,
        }


# --------------------------------------------------------------------------- losses and compiling


@keras.saving.register_keras_serializable(package="autodl")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with label smoothing.

    Keras's ``SparseCategoricalCrossentropy`` has no ``label_smoothing``; this one-hot
    encodes the labels and defers to ``categorical_crossentropy``.
    """

    def __init__(self, label_smoothing: float = 0.1, name: str = "sparse_smoothed_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _compile(
    model: keras.Model,
    *,
    task: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    weight_decay: float,
    label_smoothing: float,
) -> None:
    """AdamW on the model's currently trainable weights, sparse cross-entropy + accuracy (or MSE + MAE)."""
    optimizer = AutoAdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    # Decay weight matrices only: decaying biases and BatchNormalization gamma/beta
    # pulls them toward 0, which no one wants. Must be set before the optimizer builds.
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name != "kernel"])
    if task == "classification":
        loss: keras.losses.Loss = (
            SparseSmoothedCrossentropy(label_smoothing)
            if label_smoothing > 0
            else keras.losses.SparseCategoricalCrossentropy()
        )
        metric: keras.metrics.Metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    else:
        loss, metric = keras.losses.MeanSquaredError(), keras.metrics.MeanAbsoluteError(name="mae")
    # A fresh compile also drops the traced train step, which has the old set of
    # trainable variables baked in.
    model.compile(optimizer=optimizer, loss=loss, metrics=[metric])
    # Built eagerly, as in the tabular recipe: built inside the first traced step, TF
    # keeps per-model graph state alive and memory grows across a search.
    optimizer.build(model.trainable_variables)


def _infer_task(model: keras.Model, task: str | None) -> str:
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        return task
    # A softmax over one class is meaningless, so one output unit means regression.
    return "regression" if model.output_shape[-1] == 1 else "classification"


def _prepare(ds: tf.data.Dataset | None, batch_size: int) -> tf.data.Dataset | None:
    """Batches an unbatched ``(image, label)`` dataset and casts images to float32."""
    if ds is None:
        return None
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError("datasets must yield (images, labels) or (images, labels, sample_weights)")
    rank = spec[0].shape.rank
    if rank == 3:
        ds = ds.batch(batch_size)
    elif rank != 4:
        raise ValueError(f"images must be (H, W, C) or batches (B, H, W, C), got shape {spec[0].shape}")
    if spec[0].dtype != tf.float32:
        ds = ds.map(lambda x, *rest: (tf.cast(x, tf.float32), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def _run_phase(
    name: str,
    model: keras.Model,
    train: tf.data.Dataset,
    valid: tf.data.Dataset | None,
    *,
    task: str,
    epochs: int,
    initial_epoch: int,
    patience: int,
    learning_rate: float,
    schedule: str,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> PhaseResult:
    """``fit`` with early stopping that restores the best epoch's weights."""
    monitor = "val_loss" if valid is not None else "loss"
    # Restoring the best weights matters twice over here: phase 2 must start from the
    # best head, and the model handed back must be the best one seen.
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
    trainable = _trainable_params(model)
    start = time.perf_counter()
    fitted = model.fit(
        train,
        validation_data=valid,
        # initial_epoch continues the epoch count across phases, so callbacks that log
        # per epoch (TensorBoard, CSVLogger) see one run.
        initial_epoch=initial_epoch,
        epochs=initial_epoch + epochs,
        callbacks=[stop, *callbacks],
        shuffle=False,  # a tf.data pipeline is shuffled by whoever builds it
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    # EarlyStopping keeps the first epoch with the lowest monitored value; so does argmin.
    best_epoch = int(np.nanargmin(history[monitor]))
    metric = ("val_" if valid is not None else "") + ("accuracy" if task == "classification" else "mae")
    return PhaseResult(
        name=name,
        history=history,
        epochs=len(history[monitor]),
        best_epoch=best_epoch,
        monitor=monitor,
        best_loss=history[monitor][best_epoch],
        metric=metric,
        best_metric=history[metric][best_epoch],
        seconds=seconds,
        learning_rate=float(learning_rate),
        trainable_params=trainable,
        schedule=schedule,
    )


# --------------------------------------------------------------------------- freezing


def _sublayers(layer: keras.layers.Layer, include_self: bool = True) -> list[keras.layers.Layer]:
    # Keras has no public recursive layer walk; every Keras model uses this one.
    return layer._flatten_layers(include_self=include_self, recursive=True)


def _find_backbone(model: keras.Model) -> keras.Model:
    """The one nested model with weights, as ``classifier`` builds it."""
    # The augmentation Sequential is a nested model too, but holds no weights (its seed
    # state is not a weight).
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.weights]
    if len(nested) != 1:
        raise ValueError(
            f"cannot tell the backbone among {len(nested)} nested models; build the model with "
            "classifier() or pass backbone="
        )
    return nested[0]


def _resolve_blocks(backbone: keras.Model, blocks: BlocksArg | None) -> list[list[keras.layers.Layer]]:
    if blocks is None:
        return []
    resolved = blocks(backbone) if callable(blocks) else blocks
    result = [list(block) for block in resolved]
    members = {id(layer) for layer in _sublayers(backbone, include_self=False)}
    for i, block in enumerate(result):
        for layer in block:
            if not isinstance(layer, keras.layers.Layer):
                raise ValueError(f"block {i} holds {layer!r}, not a keras layer")
            if id(layer) not in members:
                # Typically blocks derived from another instance of the same architecture.
                raise ValueError(f"block {i} layer {layer.name!r} is not a layer of backbone {backbone.name!r}")
    return result


def freeze_all_but_top(backbone: keras.Model, blocks: Blocks, n: int) -> list[keras.layers.Layer]:
    """Makes only the top ``n`` blocks of ``backbone`` trainable, minus BatchNormalization.

    BatchNormalization layers inside the unfrozen blocks stay ``trainable=False`` (the
    Keras transfer-learning guide's practice): their gamma/beta and moving statistics
    keep their pretrained values, and a frozen BatchNormalization layer always runs in
    inference mode in Keras 3, whatever ``training`` says. Returns the layers unfrozen.

    >>> import keras
    >>> inp = keras.Input((8, 8, 3))
    >>> c1 = keras.layers.Conv2D(2, 3); bn = keras.layers.BatchNormalization(); c2 = keras.layers.Conv2D(2, 3)
    >>> net = keras.Model(inp, c2(bn(c1(inp))))
    >>> [layer is c2 for layer in freeze_all_but_top(net, [[c1], [bn, c2]], 1)]
    [True]
    >>> c1.trainable, bn.trainable, c2.trainable
    (False, False, True)
    """
    if not 0 <= n <= len(blocks):
        raise ValueError(f"cannot unfreeze {n} blocks: the backbone has {len(blocks)}")
    top = [layer for block in (blocks[len(blocks) - n :] if n else []) for layer in block]
    unfrozen = {id(sub) for layer in top for sub in _sublayers(layer)}
    # Everything trainable first so the backbone's own flag is True (else Keras reports no
    # trainable weights for it), then freeze what is outside the top blocks.
    backbone.trainable = True
    for layer in _sublayers(backbone, include_self=False):
        if id(layer) in unfrozen:
            continue
        if any(id(sub) in unfrozen for sub in _sublayers(layer, include_self=False)):
            # A container holding unfrozen layers: its children are visited one by one.
            continue
        layer.trainable = False
    kept: list[keras.layers.Layer] = []
    for layer in top:
        for sub in _sublayers(layer):
            if isinstance(sub, keras.layers.BatchNormalization):
                sub.trainable = False
        if layer.trainable and not isinstance(layer, keras.layers.BatchNormalization):
            kept.append(layer)
    return kept


# --------------------------------------------------------------------------- recipes


def fine_tune(
    model: keras.Model,
    train: tf.data.Dataset,
    valid: tf.data.Dataset | None = None,
    *,
    blocks: BlocksArg | None = None,
    config: FineTuneConfig | None = None,
    backbone: keras.Model | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    task: str | None = None,
) -> FineTuneResult:
    """Two-phase transfer learning: train the head on a frozen backbone, then the top blocks.

    Args:
        model: a model from ``classifier(backbone, ...)`` (any model with the backbone
            as its one nested model with weights, or pass ``backbone``).
        train: ``(images, labels)``; images ``(H, W, 3)`` raw pixels (cast to float32
            here), integer class labels (float targets for regression). An unbatched
            dataset is batched with ``config.batch_size``; shuffle it yourself (before
            decoding, where shuffling is cheap).
        valid: same form; early stopping watches its loss. Without it, training loss.
        blocks: the backbone's blocks, bottom to top (``list[list[Layer]]``), or a
            callable ``blocks(backbone)`` such as a zoo entry's. Needed when phase 2 runs.
        config: ``FineTuneConfig()`` when omitted.
        backbone: the backbone inside ``model``, when it cannot be found automatically.
        callbacks: extra Keras callbacks, passed to both phases (epochs count on across them).
        task: ``"classification"`` or ``"regression"``; inferred from the output width.

    The model is trained in place: it ends with the best weights seen, the backbone's
    top blocks left trainable (all of it frozen when phase 2 was skipped).

    >>> result = fine_tune(model, train_ds, valid_ds, blocks=entry.blocks)  # doctest: +SKIP
    >>> list(result.phases), result.kept  # doctest: +SKIP
    (['head', 'finetune'], 'finetune')
    """
    config = config or FineTuneConfig()
    task = _infer_task(model, task)
    backbone = backbone if backbone is not None else _find_backbone(model)
    if id(backbone) not in {id(layer) for layer in _sublayers(model, include_self=False)}:
        raise ValueError(f"backbone {backbone.name!r} is not part of model {model.name!r}")
    run_phase_2 = config.unfreeze_blocks > 0 and config.finetune_epochs > 0
    # Checked before any training, so a wrong blocks list fails in seconds, not after phase 1.
    if run_phase_2 and blocks is None:
        raise ValueError(f"unfreeze_blocks={config.unfreeze_blocks} needs blocks= (the backbone's blocks, bottom to top)")
    resolved = _resolve_blocks(backbone, blocks)
    if run_phase_2 and config.unfreeze_blocks > len(resolved):
        raise ValueError(f"unfreeze_blocks={config.unfreeze_blocks} but the backbone has {len(resolved)} blocks")
    train_ds = _prepare(train, config.batch_size)
    valid_ds = _prepare(valid, config.batch_size)
    extra = list(callbacks or [])
    result = FineTuneResult()

    # Phase 1: the pretrained features stay fixed while the random head learns to read them.
    backbone.trainable = False
    _compile(
        model,
        task=task,
        learning_rate=config.head_learning_rate,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
    )
    head = _run_phase(
        "head", model, train_ds, valid_ds,
        task=task, epochs=config.head_epochs, initial_epoch=0, patience=config.patience,
        learning_rate=config.head_learning_rate, schedule="constant", callbacks=extra, verbose=config.verbose,
    )
    result.phases["head"] = head
    result.kept = "head"
    if not run_phase_2:
        return result

    # Phase 2: adapt the most task-specific (top) features with small steps. Lower
    # blocks hold generic edges and textures, which transfer as they are.
    head_weights = model.get_weights() if (config.keep_best_phase and valid_ds is not None) else None
    freeze_all_but_top(backbone, resolved, config.unfreeze_blocks)
    _compile(
        model,
        task=task,
        learning_rate=config.finetune_learning_rate,
        weight_decay=config.weight_decay,
        label_smoothing=config.label_smoothing,
    )
    tuned = _run_phase(
        "finetune", model, train_ds, valid_ds,
        task=task, epochs=config.finetune_epochs, initial_epoch=head.epochs, patience=config.patience,
        learning_rate=config.finetune_learning_rate, schedule="constant", callbacks=extra, verbose=config.verbose,
    )
    result.phases["finetune"] = tuned
    if head_weights is not None and not tuned.best_loss < head.best_loss:
        # Fine-tuning never beat the head alone on validation loss (too little data,
        # too few epochs): hand back the phase-1 model rather than a worse one.
        model.set_weights(head_weights)
        result.kept = "head"
    else:
        result.kept = "finetune"
    return result


def train_from_scratch(
    model: keras.Model,
    train: tf.data.Dataset,
    valid: tf.data.Dataset | None = None,
    *,
    epochs: int = 30,
    learning_rate: float = 1e-3,
    patience: int = 5,
    weight_decay: float = 1e-4,
    schedule: str = "cosine",
    label_smoothing: float = 0.0,
    batch_size: int = 32,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    task: str | None = None,
    verbose: int = 0,
) -> PhaseResult:
    """One phase, everything trainable: the recipe for a backbone without pretrained weights.

    AdamW with ``schedule="cosine"`` (cosine decay to 1% of ``learning_rate`` over
    ``epochs``; needs a dataset of known length, else it falls back to ``"plateau"``) or
    ``"plateau"`` (halve the rate when the monitored loss stalls), and early stopping on
    validation loss that restores the best epoch. Build the model with
    ``classifier(backbone, n, pretrained=False)`` so BatchNormalization learns batch
    statistics; a backbone called with ``training=False`` would never update them.

    It doubles as a zoo backbone's own pretraining: train on one task, then build a new
    classifier on the same (now trained) backbone and ``fine_tune`` it on another:

    >>> pre = classifier(backbone, 5, pretrained=False)  # doctest: +SKIP
    >>> train_from_scratch(pre, digits_0_to_4, valid_0_to_4, epochs=20)  # doctest: +SKIP
    >>> fine_tune(classifier(backbone, 5), digits_5_to_9, valid_5_to_9, blocks=blocks)  # doctest: +SKIP
    """
    _check_int("epochs", epochs, 1)
    _check_int("patience", patience, 1)
    _check_int("batch_size", batch_size, 1)
    _check_positive("learning_rate", learning_rate)
    if schedule not in ("cosine", "plateau"):
        raise ValueError(f"schedule must be 'cosine' or 'plateau', got {schedule!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    task = _infer_task(model, task)
    train_ds = _prepare(train, batch_size)
    valid_ds = _prepare(valid, batch_size)
    model.trainable = True
    monitor = "val_loss" if valid_ds is not None else "loss"
    own: list[keras.callbacks.Callback] = []
    steps = int(train_ds.cardinality())
    if schedule == "cosine" and steps <= 0:
        # Unknown (filtered) or infinite datasets have no length to decay over.
        schedule = "plateau"
    rate: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps * epochs, alpha=0.01)
    else:
        own.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.5, patience=max(1, patience // 2), min_lr=learning_rate / 100
            )
        )
    _compile(model, task=task, learning_rate=rate, weight_decay=weight_decay, label_smoothing=label_smoothing)
    result = _run_phase(
        "scratch", model, train_ds, valid_ds,
        task=task, epochs=epochs, initial_epoch=0, patience=patience, learning_rate=learning_rate,
        schedule=schedule, callbacks=[*own, *(callbacks or [])], verbose=verbose,
    )
    recalibrate_batchnorm(_find_backbone(model), train_ds)
    return result


def recalibrate_batchnorm(backbone: keras.Model, data: tf.data.Dataset, *, max_batches: int = 200) -> int:
    """Sets every BatchNormalization's moving statistics to the average over ``data``'s batches.

    Trained from scratch on a few hundred images, a network learns with batch
    statistics while its moving averages (updated a few dozen times, from weights that
    kept changing) still describe an early model: at inference it can predict one class
    for everything although its training loss is near zero. Averaging the batch
    statistics of the final weights over the training images ("precise BN") gives the
    statistics inference should use. Images pass without augmentation (the backbone is
    called directly). Returns the number of batches used (0 when there is no
    BatchNormalization).
    """
    layers = [layer for layer in _sublayers(backbone) if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    used = 0
    try:
        for used, batch in enumerate(data.take(max_batches), start=1):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / used  # the k-th batch weighs 1/k: a plain average over batches
            backbone(tf.cast(images, tf.float32), training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return used

"""Image fine-tuning recipes: what each phase may and may not change, augmentation, scratch training.

Backbones are built here (a MobileNetV3Small without weights, a two-block CNN) so the
tests do not depend on the vision zoo; images are tiny and generated.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from autodl.recipes import (
    FineTuneConfig,
    SparseSmoothedCrossentropy,
    augmentation,
    classifier,
    fine_tune,
    recalibrate_batchnorm,
    train_from_scratch,
)

SIZE = 32


# --------------------------------------------------------------------------- helpers


def quadrant_images(n: int, *, seed: int, n_classes: int = 2, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Noise images whose class is the mean brightness of the top-left quadrant (0 darkest)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    x = rng.uniform(64, 192, size=(n, size, size, 3))
    h = size // 2
    level = np.linspace(40.0, 210.0, n_classes)[y][:, None, None, None]
    x[:, :h, :h, :] = level + rng.uniform(-20, 20, size=(n, h, h, 3))
    return x.astype("float32"), y.astype("int64")


def dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    """Unbatched (image, label) pairs, as a user would pass them."""
    return tf.data.Dataset.from_tensor_slices((x, y))


def tiny_cnn() -> keras.Model:
    """Two conv blocks with BatchNormalization; momentum 0.9 so moving statistics settle in a few steps."""
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inp)
    for i, filters in ((1, 8), (2, 16)):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", name=f"b{i}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"b{i}_bn")(x)
        x = keras.layers.ReLU(name=f"b{i}_relu")(x)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="gap")(x), name="tiny_cnn")


def tiny_blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    return [[layer for layer in backbone.layers if layer.name.startswith(f"b{i}_")] for i in (1, 2)]


def mobilenet_blocks(backbone: keras.Model) -> list[list[keras.layers.Layer]]:
    """Blocks from MobileNetV3's layer names: stem, expanded_conv[_N]_*, conv_1*; unnamed layers join the block before."""
    blocks: dict[str, list[keras.layers.Layer]] = {}
    key = "stem"
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        match = re.match(r"expanded_conv_(\d+)_", layer.name)
        if match:
            key = f"block{match.group(1)}"
        elif layer.name.startswith("expanded_conv_"):
            key = "block0"
        elif layer.name.startswith("conv_1"):
            key = "top"
        blocks.setdefault(key, []).append(layer)
    return list(blocks.values())


def owners(backbone: keras.Model) -> dict[int, keras.layers.Layer]:
    """Variable id -> the backbone layer holding it."""
    return {id(v): layer for layer in backbone.layers for v in layer.weights}


def calibrate_batchnorm(backbone: keras.Model, x: np.ndarray) -> None:
    """Sets every BatchNormalization layer's moving statistics to those of one batch.

    An untrained backbone's moving statistics (mean 0, variance 1) do not normalize
    anything in inference mode; through MobileNetV3 the signal then shrinks to ~1e-6 and
    AdamW's steps on the top blocks vanish below float32 resolution. Pretraining would
    have set these statistics; one training-mode pass with momentum 0 does so here.
    """
    layers = [layer for layer in backbone._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    backbone(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


class Snapshots(keras.callbacks.Callback):
    """Copies the given variables at the end of every fit, i.e. after each phase (and after
    early stopping restored the best epoch)."""

    def __init__(self, variables: list) -> None:
        super().__init__()
        self.tracked = variables
        self.taken: list[list[np.ndarray]] = []

    def on_train_end(self, logs=None) -> None:
        self.taken.append([np.array(v.numpy()) for v in self.tracked])


def changed(a: np.ndarray, b: np.ndarray) -> bool:
    return not np.array_equal(a, b)


# --------------------------------------------------------------------------- two phases on MobileNetV3


@pytest.fixture(scope="module")
def mobilenet_run():
    keras.utils.set_random_seed(0)
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None, pooling="avg", include_preprocessing=True
    )
    x, y = quadrant_images(64, seed=1)
    xv, yv = quadrant_images(32, seed=2)
    calibrate_batchnorm(backbone, x)
    model = classifier(backbone, 2, dropout=0.1)
    variables = list(model.weights)
    before = [np.array(v.numpy()) for v in variables]
    snapshots = Snapshots(variables)
    blocks = mobilenet_blocks(backbone)
    config = FineTuneConfig(
        head_epochs=1, finetune_epochs=1, unfreeze_blocks=2, batch_size=16, head_learning_rate=1e-3,
        finetune_learning_rate=1e-4, keep_best_phase=False,
    )
    result = fine_tune(model, dataset(x, y), dataset(xv, yv), blocks=mobilenet_blocks, config=config, callbacks=[snapshots])
    return backbone, model, blocks, variables, before, snapshots.taken, result


def test_blocks_cover_mobilenet(mobilenet_run):
    backbone, _, blocks, *_ = mobilenet_run
    assert len(blocks) == 13  # stem, expanded_conv 0-10, top conv
    assert [layer.name for layer in blocks[-1]][:2] == ["conv_1", "conv_1_bn"]


def test_phase_one_trains_only_the_head(mobilenet_run):
    backbone, model, _, variables, before, taken, result = mobilenet_run
    assert list(result.phases) == ["head", "finetune"]
    after_head = taken[0]
    in_backbone = owners(backbone)
    assert len(in_backbone) == len(backbone.weights)
    for v, old, new in zip(variables, before, after_head):
        if id(v) in in_backbone:
            # Kernels, BatchNormalization gamma/beta and moving statistics alike.
            assert not changed(old, new), v.path
    head = model.get_layer("predictions")
    assert all(changed(old, new) for v, old, new in zip(variables, before, after_head) if any(v is w for w in head.weights))
    assert result.phases["head"].trainable_params == sum(int(np.prod(w.shape)) for w in head.weights)


def test_phase_two_trains_only_top_blocks_minus_batchnorm(mobilenet_run):
    backbone, _, blocks, variables, _, taken, result = mobilenet_run
    after_head, after_tune = taken
    top = {id(layer) for block in blocks[-2:] for layer in block}
    in_backbone = owners(backbone)
    n_trained = 0
    for v, old, new in zip(variables, after_head, after_tune):
        layer = in_backbone.get(id(v))
        if layer is None:
            continue
        if id(layer) in top and not isinstance(layer, keras.layers.BatchNormalization):
            assert changed(old, new), f"{v.path} in an unfrozen block did not train"
            n_trained += 1
        else:
            # Lower blocks, and the gamma/beta/moving statistics of BatchNormalization
            # layers inside the unfrozen blocks, keep their values.
            assert not changed(old, new), f"{v.path} changed although frozen"
    assert n_trained >= 4
    tuned = result.phases["finetune"]
    assert tuned.epochs == 1 and tuned.learning_rate == 1e-4
    assert tuned.trainable_params > result.phases["head"].trainable_params
    assert backbone.get_layer("conv_1").trainable and not backbone.get_layer("conv_1_bn").trainable
    assert not backbone.get_layer("expanded_conv_9_project").trainable


def test_result_reports_phases(mobilenet_run):
    *_, result = mobilenet_run
    for phase in result.phases.values():
        assert phase.monitor == "val_loss" and phase.metric == "val_accuracy"
        assert set(phase.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert phase.seconds > 0 and 0.0 <= phase.best_metric <= 1.0
    assert result.kept == "finetune"  # keep_best_phase=False
    assert result.epochs == 2 and result.to_dict()["phases"]["head"]["epochs"] == 1


# --------------------------------------------------------------------------- tiny CNN


def test_unfreeze_zero_runs_phase_one_only():
    keras.utils.set_random_seed(1)
    backbone = tiny_cnn()
    model = classifier(backbone, 2)
    frozen = [np.array(w.numpy()) for w in backbone.weights]
    x, y = quadrant_images(64, seed=3)
    # Already batched, uint8 pixels and no validation set: all accepted.
    train = tf.data.Dataset.from_tensor_slices((x.astype("uint8"), y)).batch(16)
    result = fine_tune(model, train, None, config=FineTuneConfig(head_epochs=2, unfreeze_blocks=0))
    assert list(result.phases) == ["head"] and result.kept == "head"
    assert result.phases["head"].monitor == "loss" and result.phases["head"].epochs == 2
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(frozen, backbone.weights))
    assert not backbone.trainable_weights


class SabotageSecondFit(keras.callbacks.Callback):
    """Makes phase 2 worse than phase 1 on purpose: wild head weights after each phase-2 batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs=None) -> None:
        self.fits += 1

    def on_train_batch_end(self, batch, logs=None) -> None:
        if self.fits == 2:
            kernel = self.model.get_layer("predictions").kernel
            kernel.assign(np.random.default_rng(batch).normal(scale=100.0, size=kernel.shape).astype("float32"))


def test_phase_two_that_never_beats_phase_one_is_rolled_back():
    keras.utils.set_random_seed(5)
    backbone = tiny_cnn()
    model = classifier(backbone, 2)
    x, y = quadrant_images(64, seed=11)
    xv, yv = quadrant_images(32, seed=12)
    snapshots = Snapshots(list(model.weights))
    config = FineTuneConfig(head_epochs=2, finetune_epochs=1, unfreeze_blocks=1, batch_size=16)
    result = fine_tune(
        model, dataset(x, y), dataset(xv, yv), blocks=tiny_blocks, config=config,
        callbacks=[SabotageSecondFit(), snapshots],
    )
    assert result.phases["finetune"].best_loss > result.phases["head"].best_loss
    assert result.kept == "head" and result.best_metric == result.phases["head"].best_metric
    after_head, after_tune = snapshots.taken
    assert any(changed(a, b) for a, b in zip(after_head, after_tune))
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(after_head, model.weights))


def test_augmentation_is_identity_at_inference_and_random_in_training():
    keras.utils.set_random_seed(2)
    backbone = tiny_cnn()
    augmented = classifier(backbone, 3, augmentation_strength=1.0, seed=0)
    plain = classifier(backbone, 3)
    plain.get_layer("predictions").set_weights(augmented.get_layer("predictions").get_weights())
    x, _ = quadrant_images(8, seed=4)
    np.testing.assert_allclose(augmented(x, training=False), plain(x, training=False), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(augmented.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    layer = augmented.get_layer("augmentation")
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    moved = np.asarray(layer(x, training=True))
    assert moved.shape == x.shape and not np.allclose(moved, x)
    assert np.array_equal(np.asarray(augmentation(0.0)(x, training=True)), x)
    assert "augmentation" not in [layer.name for layer in plain.layers]


def test_train_from_scratch_learns_a_generated_task():
    keras.utils.set_random_seed(3)
    model = classifier(tiny_cnn(), 2, pretrained=False, dropout=0.0)
    x, y = quadrant_images(256, seed=5)
    xv, yv = quadrant_images(128, seed=6)
    result = train_from_scratch(model, dataset(x, y), dataset(xv, yv), epochs=8, learning_rate=3e-3, patience=4)
    assert result.name == "scratch" and result.schedule == "cosine"
    # Chance is 0.5; the kept weights (restored best epoch) score as reported.
    accuracy = float(np.mean(model.predict(xv, verbose=0).argmax(axis=1) == yv))
    assert accuracy >= 0.8, result.history
    assert accuracy == pytest.approx(result.best_metric, abs=1e-6)


def test_pretrained_backbone_fine_tunes_on_another_task():
    """The benchmark's flow: pretrain with train_from_scratch, fine-tune a new head on a new task."""
    keras.utils.set_random_seed(4)
    backbone = tiny_cnn()
    x, y = quadrant_images(256, seed=7)
    train_from_scratch(classifier(backbone, 2, pretrained=False), dataset(x, y), epochs=6, learning_rate=3e-3, schedule="plateau")
    # A new task on the same backbone, with a new head: three brightness levels.
    model = classifier(backbone, 3)
    x2, y2 = quadrant_images(128, seed=8, n_classes=3)
    xv2, yv2 = quadrant_images(64, seed=9, n_classes=3)
    config = FineTuneConfig(
        head_epochs=8, head_learning_rate=1e-2, finetune_epochs=2, unfreeze_blocks=1, finetune_learning_rate=1e-3, batch_size=16
    )
    result = fine_tune(model, dataset(x2, y2), dataset(xv2, yv2), blocks=tiny_blocks, config=config)
    assert list(result.phases) == ["head", "finetune"]
    assert result.kept in ("head", "finetune")
    assert result.best_metric >= 0.6, result.to_dict()  # chance is 1/3
    assert backbone.get_layer("b2_conv").trainable and not backbone.get_layer("b1_conv").trainable


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"head_epochs": 0}, "head_epochs must be an integer >= 1"),
        ({"finetune_epochs": -1}, "finetune_epochs must be an integer >= 0"),
        ({"unfreeze_blocks": 1.5}, "unfreeze_blocks must be an integer >= 0"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer >= 1"),
        ({"head_learning_rate": 0}, "head_learning_rate must be a number > 0"),
        ({"finetune_learning_rate": 1e-2}, "must not exceed head_learning_rate"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"verbose": 3}, "verbose must be 0, 1 or 2"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        FineTuneConfig(**kwargs)
    assert "\n" not in str(error.value)


def test_argument_validation_fails_before_training():
    backbone = tiny_cnn()
    model = classifier(backbone, 2)
    x, y = quadrant_images(8, seed=10)
    train = dataset(x, y)
    with pytest.raises(ValueError, match="unfreeze_blocks=3 but the backbone has 2 blocks"):
        fine_tune(model, train, blocks=tiny_blocks, config=FineTuneConfig(unfreeze_blocks=3))
    with pytest.raises(ValueError, match="is not a layer of backbone"):
        fine_tune(model, train, blocks=tiny_blocks(tiny_cnn()), config=FineTuneConfig(unfreeze_blocks=1))
    with pytest.raises(ValueError, match="unfreeze_blocks=1 needs blocks="):
        fine_tune(model, train, config=FineTuneConfig(unfreeze_blocks=1))
    with pytest.raises(ValueError, match="datasets must yield"):
        fine_tune(model, tf.data.Dataset.from_tensor_slices(x), config=FineTuneConfig(unfreeze_blocks=0))
    with pytest.raises(ValueError, match="augmentation strength must be in"):
        augmentation(1.5)
    with pytest.raises(ValueError, match="n_classes must be an integer >= 2"):
        classifier(backbone, 1)
    with pytest.raises(ValueError, match="schedule must be 'cosine' or 'plateau'"):
        train_from_scratch(model, train, schedule="linear")
    assert not model.compiled  # nothing was compiled, let alone trained


def test_regression_head_and_label_smoothing_loss():
    backbone = tiny_cnn()
    assert classifier(backbone, 0, task="regression").output_shape == (None, 1)
    y = np.array([0, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], dtype="float32")
    smoothed = SparseSmoothedCrossentropy(0.1)(y, p)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], p)
    assert float(smoothed) == pytest.approx(float(reference), rel=1e-5)
    assert float(SparseSmoothedCrossentropy(0.0)(y, p)) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(y, p)), rel=1e-5
    )


def test_recalibrated_batchnorm_predicts_what_training_learned():
    """A tiny CNN trained a few steps: its moving statistics lag; precise BN makes inference match training."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (48, 24, 24, 3)).astype(np.float32)
    y = (x[:, :12, :12].mean(axis=(1, 2, 3)) > 127).astype(np.int64)
    inputs = keras.Input((24, 24, 3))
    h = keras.layers.Conv2D(8, 3, use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)  # momentum 0.99: 6 updates leave the statistics near their initial 0/1
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    backbone = keras.Model(inputs, h)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    for images, _ in data:
        backbone(images, training=True)
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    assert recalibrate_batchnorm(backbone, data) == 3
    batch_means = [np.mean(keras.ops.convert_to_numpy(backbone.layers[1](images)), axis=(0, 1, 2)) for images, _ in data]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn.moving_mean), np.mean(batch_means, axis=0), rtol=1e-4, atol=1e-3)
    assert bn.momentum == 0.99  # restored

"""The image zoo: every backbone builds small, takes [0, 255] pixels, has blocks, and loads Keras' file layout."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

from autodl.zoo import get, list_entries
from tests.zoo.conftest import save_legacy_h5

SIZE = 64
ENTRIES = [e.card.name for e in list_entries("image")]
PRETRAINED = [e.card.name for e in list_entries("image") if e.card.pretrained is not None]

# Where Keras builds each published no-top file: (module, base-URL constant, file name, WEIGHTS_HASHES key).
# Written out independently of the cards so a Keras upgrade that moves or changes a file fails here.
KERAS_WEIGHTS = {
    "mobilenet_v3_small": ("mobilenet_v3", "BASE_WEIGHT_PATH", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "small_224_1.0_float"),
    "mobilenet_v3_large": ("mobilenet_v3", "BASE_WEIGHT_PATH", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "large_224_1.0_float"),
    "efficientnet_b0": ("efficientnet", "BASE_WEIGHTS_PATH", "efficientnetb0_notop.h5", "b0"),
    "efficientnet_v2_b0": ("efficientnet_v2", "BASE_WEIGHTS_PATH", "efficientnetv2-b0_notop.h5", "b0"),
    "resnet50_v2": ("resnet", "BASE_WEIGHTS_PATH", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5", "resnet50v2"),
    "convnext_tiny": ("convnext", "BASE_WEIGHTS_PATH", "convnext_tiny_notop.h5", "convnext_tiny"),
}

# The Keras models whose layout the published files have (what weights="imagenet" loads into).
KERAS_REFERENCE = {
    "mobilenet_v3_small": lambda shape: keras.applications.MobileNetV3Small(input_shape=shape, include_top=False, weights=None),
    "mobilenet_v3_large": lambda shape: keras.applications.MobileNetV3Large(input_shape=shape, include_top=False, weights=None),
    "efficientnet_b0": lambda shape: keras.applications.EfficientNetB0(input_shape=shape, include_top=False, weights=None),
    "efficientnet_v2_b0": lambda shape: keras.applications.EfficientNetV2B0(input_shape=shape, include_top=False, weights=None),
    "resnet50_v2": lambda shape: keras.applications.ResNet50V2(input_shape=shape, include_top=False, weights=None),
    "convnext_tiny": lambda shape: keras.applications.ConvNeXtTiny(input_shape=shape, include_top=False, weights=None),
}

_BUILT: dict[str, keras.Model] = {}


def backbone(name: str) -> keras.Model:
    """Each backbone is built once for the whole module (ConvNeXt and ResNet50V2 are big)."""
    if name not in _BUILT:
        keras.utils.set_random_seed(0)
        _BUILT[name] = get(name).build((SIZE, SIZE, 3))
    return _BUILT[name]


def test_registration_order_and_cards() -> None:
    assert ENTRIES == [
        "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_b0",
        "resnet50_v2", "convnext_tiny", "small_cnn",
    ]
    assert set(PRETRAINED) == set(KERAS_WEIGHTS)
    for name in ENTRIES:
        card = get(name).card
        assert card.input_shape and card.input_shape[-1] == 3 and card.paper and card.licence
        assert card.parameters and card.flops and card.flops_note
        assert get(name).blocks is not None
        assert card.to_dict()["name"] == name
        if card.pretrained is not None:
            assert card.reference_accuracy.startswith("ImageNet top-1")


@pytest.mark.parametrize("name", list(KERAS_WEIGHTS))
def test_weights_url_and_hash_are_the_ones_keras_publishes(name) -> None:
    module_name, base_attr, filename, key = KERAS_WEIGHTS[name]
    module = importlib.import_module(f"keras.src.applications.{module_name}")
    weights = get(name).card.pretrained
    assert weights.url == getattr(module, base_attr) + filename
    assert weights.filename == filename
    assert weights.file_hash == module.WEIGHTS_HASHES[key][1]  # [1]: the no-top file
    assert weights.hash_algorithm == ("sha256" if len(weights.file_hash) == 64 else "md5")


@pytest.mark.parametrize("name", ENTRIES)
def test_backbone_takes_pixels_and_returns_pooled_features(name) -> None:
    model = backbone(name)
    assert tuple(model.input.shape) == (None, SIZE, SIZE, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    features = np.asarray(model(x, training=False))
    assert features.ndim == 2 and features.shape[0] == 2 and features.shape[1] >= 256
    assert np.isfinite(features).all()
    # Features depend on the image (preprocessing did not saturate everything to a constant); relative,
    # since deep randomly initialized backbones can output tiny values.
    assert not np.allclose(features[0], features[1], rtol=1e-3, atol=0)
    assert model.count_params() == get(name).card.parameters


@pytest.mark.parametrize("name", ENTRIES)
def test_blocks_partition_the_backbone(name) -> None:
    model = backbone(name)
    blocks = get(name).blocks(model)
    assert len(blocks) >= 4 and all(blocks)
    grouped = [layer for block in blocks for layer in block]
    in_model = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert len(grouped) == len(in_model) and {id(layer) for layer in grouped} == {id(layer) for layer in in_model}
    assert all(any(layer.weights for layer in block) for block in blocks)
    assert model.layers[-1] in blocks[-1]  # the top block is last
    # Unfreezing only the top block leaves a trainable part and a frozen part.
    for layer in model.layers:
        layer.trainable = False
    for layer in blocks[-1]:
        layer.trainable = True
    assert 0 < len(model.trainable_weights) < len(model.weights)
    for layer in model.layers:
        layer.trainable = True


@pytest.mark.parametrize(
    ("name", "count"),
    [("mobilenet_v3_small", 12), ("mobilenet_v3_large", 16), ("efficientnet_b0", 17),
     ("efficientnet_v2_b0", 22), ("resnet50_v2", 17), ("convnext_tiny", 19), ("small_cnn", 4)],
)
def test_block_counts(name, count) -> None:
    # stem + architectural blocks (MobileNetV3 11/15, EfficientNet 16/21, ResNet50V2 16, ConvNeXt-T 18).
    assert len(get(name).blocks(backbone(name))) == count


@pytest.mark.parametrize("name", PRETRAINED)
def test_keras_published_layout_loads_by_layer_order(name, tmp_path) -> None:
    """A file laid out like the published one (Keras' model, legacy .h5) loads into the backbone."""
    keras.utils.set_random_seed(1)
    reference = KERAS_REFERENCE[name]((SIZE, SIZE, 3))
    path = save_legacy_h5(reference, tmp_path / get(name).card.pretrained.filename)
    model = backbone(name)
    model.load_weights(path)
    ours = [w for layer in model.layers for w in layer.weights]
    theirs = [w for layer in reference.layers for w in layer.weights]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_efficientnet_b0_applies_keras_imagenet_variance_fix() -> None:
    names = [layer.name for layer in backbone("efficientnet_b0").layers]
    norm = next(i for i, layer in enumerate(backbone("efficientnet_b0").layers) if isinstance(layer, keras.layers.Normalization))
    assert names[norm + 1] == "imagenet_std_fix"


def test_small_cnn_trains_from_scratch() -> None:
    keras.utils.set_random_seed(0)
    base = get("small_cnn").build((32, 32, 3))
    assert get("small_cnn").card.pretrained is None
    model = keras.Sequential([base, keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    history = model.fit(x, np.arange(8) % 2, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(("shape", "message"), [((16, 16, 3), "at least 32x32"), ((64, 64, 1), r"\(H, W, 3\)")])
def test_bad_input_shapes_are_refused(shape, message) -> None:
    with pytest.raises(ValueError, match=message):
        get("mobilenet_v3_small").build(shape)

"""EfficientNet-B0 and EfficientNetV2-B0: compound-scaled MBConv backbones.

Keras' implementations with their ImageNet weights. Both take raw pixels in
[0, 255] (rescaling and ImageNet mean/std normalization are inside the model).
Blocks are the MBConv / Fused-MBConv blocks ``blockNx`` (16 in B0, 21 in
V2-B0); the final 1x1 ``top_conv`` joins the last one.

EfficientNet (V1) detail: Keras' ImageNet files store the normalization
variance as the standard deviation, and ``EfficientNetB0(weights="imagenet")``
adds a ``Rescaling(1/sqrt(std))`` after the normalization to compensate
(tensorflow/tensorflow#49930). The backbone here is built with
``weights=None`` (the file is fetched and verified by autodl), so it inserts
the same layer, which makes it compute what Keras' pretrained model computes.

Example:

>>> import numpy as np
>>> from autodl.zoo import get
>>> backbone = get("efficientnet_b0").build((64, 64, 3))
>>> tuple(backbone(np.zeros((1, 64, 64, 3), "float32")).shape)
(1, 1280)
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

from autodl.zoo.registry import register
from autodl.zoo.vision._blocks import STEM, TOP, group_layers
from autodl.zoo.vision._common import (
    DEFAULT_INPUT_SHAPE,
    imagenet_card,
    keras_application,
)

MIN_SIZE = 32
# keras.src.applications.efficientnet.IMAGENET_STDDEV_RGB, used for the V1 variance fix.
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)

_B0_FILE = "efficientnetb0_notop.h5"
B0_LICENCE = "Apache-2.0 (Keras Applications, from the TensorFlow TPU EfficientNet checkpoints)"
_V2B0_FILE = "efficientnetv2-b0_notop.h5"
V2B0_LICENCE = "Apache-2.0 (Keras Applications, from the TensorFlow AutoML EfficientNetV2 checkpoints)"

B0_CARD = imagenet_card(
    name="efficientnet_b0",
    title="EfficientNet-B0 (ImageNet)",
    summary=(
        "Mobile inverted-bottleneck (MBConv) blocks with squeeze-and-excitation and swish, the baseline of "
        "compound scaling; 1280 pooled features."
    ),
    symbol="EfficientNetB0",
    good_for="Good accuracy per FLOP for transfer learning; heavier than MobileNetV3 to train on CPU.",
    paper=(
        "Tan, Le. EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks. ICML 2019. "
        "https://arxiv.org/abs/1905.11946"
    ),
    weights_licence=B0_LICENCE,
    url="https://storage.googleapis.com/keras-applications/" + _B0_FILE,
    file_hash="50bc09e76180e00e4465e1a485ddc09d",
    reference_accuracy="ImageNet top-1 77.1% (keras.io)",
    parameters=4_049_571,
    flops=800_785_175,
)

V2B0_CARD = imagenet_card(
    name="efficientnet_v2_b0",
    title="EfficientNetV2-B0 (ImageNet)",
    summary=(
        "Fused-MBConv blocks early and MBConv blocks later, found by training-aware architecture search; "
        "trains faster than EfficientNet; 1280 pooled features."
    ),
    symbol="EfficientNetV2B0",
    good_for="Transfer learning when a GPU is available; more accurate than EfficientNet-B0 at similar cost.",
    paper=(
        "Tan, Le. EfficientNetV2: Smaller Models and Faster Training. ICML 2021. "
        "https://arxiv.org/abs/2104.00298"
    ),
    weights_licence=V2B0_LICENCE,
    url="https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/" + _V2B0_FILE,
    file_hash="893217f2bb855e2983157299931e43ff",
    reference_accuracy="ImageNet top-1 78.7% (keras.io)",
    parameters=5_919_312,
    flops=1_455_315_507,
)

_BLOCK = re.compile(r"^(block\d+[a-z])_")


def build_b0(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """EfficientNet-B0 backbone: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, 1280)``."""
    import keras

    model = keras_application(keras.applications.EfficientNetB0, input_shape, name=B0_CARD.name, min_size=MIN_SIZE)
    inserted = []

    def call_function(layer: Any, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **kwargs)
        if isinstance(layer, keras.layers.Normalization) and not inserted:
            # The variance fix Keras applies for its ImageNet weights (see the module docstring).
            fix = keras.layers.Rescaling([1.0 / math.sqrt(s) for s in IMAGENET_STDDEV_RGB], name="imagenet_std_fix")
            inserted.append(fix)
            out = fix(out)
        return out

    # clone_function=identity keeps the same layers; only the graph gains the weightless Rescaling,
    # so the order of weighted layers (what the .h5 file is loaded by) is unchanged.
    model = keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call_function)
    if len(inserted) != 1:
        raise RuntimeError("EfficientNetB0 has no Normalization layer to fix; has Keras changed it?")
    return model


def build_v2_b0(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """EfficientNetV2-B0 backbone: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, 1280)``."""
    import keras

    return keras_application(keras.applications.EfficientNetV2B0, input_shape, name=V2B0_CARD.name, min_size=MIN_SIZE,
                             include_preprocessing=True)


def blocks(model: Any) -> list[list[Any]]:
    """Stem, then one block per ``blockNx``; ``top_conv`` and pooling join the last."""
    return group_layers(model, _key_of)


def _key_of(name: str) -> str | None:
    match = _BLOCK.match(name)
    if match:
        return match.group(1)
    if name.startswith("stem_"):
        return STEM
    if name.startswith("top_") or name == "avg_pool":
        return TOP
    return None  # preprocessing layers (auto-named) stay with the stem


B0 = register(B0_CARD, build_b0, blocks=blocks)
V2B0 = register(V2B0_CARD, build_v2_b0, blocks=blocks)

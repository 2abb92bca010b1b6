"""ResNet50V2: the pre-activation residual network, a classic and robust backbone.

Keras' implementation with its ImageNet weights. Keras' ResNetV2 has no
preprocessing inside (it expects ``x / 127.5 - 1``), so the backbone puts a
``Rescaling(1/127.5, offset=-1)`` in front and takes raw pixels in [0, 255].
Blocks are the 16 bottleneck blocks ``convN_blockM``; the final
``post_bn``/``post_relu`` join the last one.

Example:

>>> import numpy as np
>>> from autodl.zoo import get
>>> backbone = get("resnet50_v2").build((64, 64, 3))
>>> tuple(backbone(np.zeros((1, 64, 64, 3), "float32")).shape)
(1, 2048)
"""

from __future__ import annotations

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
_FILE = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_LICENCE = "Apache-2.0 (Keras Applications)"

CARD = imagenet_card(
    name="resnet50_v2",
    title="ResNet50V2 (ImageNet)",
    summary=(
        "50-layer residual network with pre-activation (BN-ReLU before each conv) bottleneck blocks; "
        "2048 pooled features."
    ),
    symbol="ResNet50V2",
    good_for="A well-understood, robust backbone for GPU training; large (25M weights) and slow on CPU.",
    paper=(
        "He, Zhang, Ren, Sun. Identity Mappings in Deep Residual Networks. ECCV 2016. "
        "https://arxiv.org/abs/1603.05027"
    ),
    weights_licence=WEIGHTS_LICENCE,
    url="https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + _FILE,
    file_hash="fac2f116257151a9d068a22e544a4917",
    reference_accuracy="ImageNet top-1 76.0% (keras.io)",
    parameters=23_564_800,
    flops=6_988_674_688,
)

_BLOCK = re.compile(r"^(conv\d+_block\d+)_")


def build(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """ResNet50V2 backbone: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, 2048)``."""
    import keras

    # Keras' resnet_v2.preprocess_input is x / 127.5 - 1 ("tf" mode); inside the model it travels with it.
    preprocess = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")
    return keras_application(keras.applications.ResNet50V2, input_shape, name=CARD.name, min_size=MIN_SIZE,
                             preprocess=preprocess)


def blocks(model: Any) -> list[list[Any]]:
    """Stem (``conv1``, ``pool1``), then one block per ``convN_blockM``; ``post_*`` joins the last."""
    return group_layers(model, _key_of)


def _key_of(name: str) -> str | None:
    match = _BLOCK.match(name)
    if match:
        return match.group(1)
    if name.startswith(("conv1_", "pool1_", "preprocess")):
        return STEM
    if name.startswith("post_") or name == "avg_pool":
        return TOP
    return None


ENTRY = register(CARD, build, blocks=blocks)

"""A small CNN trained from scratch: the image baseline that needs no pretrained weights.

Four blocks of Conv3x3 (no bias) -> BatchNorm -> ReLU -> MaxPool2x2 with 32,
64, 128 and 256 filters, then global average pooling. It takes raw pixels in
[0, 255] (a ``Rescaling(1/255)`` is inside) and has ``blockN`` blocks like the
pretrained backbones, so the same recipes drive it.

Example:

>>> import numpy as np
>>> from autodl.zoo import get
>>> backbone = get("small_cnn").build((32, 32, 3))
>>> tuple(backbone(np.zeros((2, 32, 32, 3), "float32")).shape)
(2, 256)
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from autodl.zoo.registry import Card, register
from autodl.zoo.vision._blocks import group_layers
from autodl.zoo.vision._common import checked_input_shape, pixel_input

FILTERS = (32, 64, 128, 256)
DEFAULT_INPUT_SHAPE = (128, 128, 3)

CARD = Card(
    name="small_cnn",
    task="image",
    title="Small CNN (from scratch)",
    summary=(
        "Four Conv3x3-BatchNorm-ReLU-MaxPool blocks (32, 64, 128, 256 filters) and global average pooling; "
        "256 features; random initialization."
    ),
    reference="autodl (a standard VGG-style baseline)",
    good_for=(
        "Images unlike ImageNet photos (spectrograms, microscopy, small icons), licence-sensitive uses, and "
        "a from-scratch baseline to compare transfer learning against."
    ),
    paper=(
        "Simonyan, Zisserman. Very Deep Convolutional Networks for Large-Scale Image Recognition. ICLR 2015. "
        "https://arxiv.org/abs/1409.1556; Ioffe, Szegedy. Batch Normalization. ICML 2015. "
        "https://arxiv.org/abs/1502.03167"
    ),
    licence="Apache-2.0 (autodl; no pretrained weights)",
    input_shape=DEFAULT_INPUT_SHAPE,
    pretrained=None,
    reference_accuracy="",
    parameters=389_856,
    flops=484_363_072,
    flops_note="TensorFlow profiler, one 128x128 image; a multiply-add counts as 2 FLOPs",
)

_BLOCK = re.compile(r"^(block\d+)_")


def build(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE, *, filters: Sequence[int] = FILTERS) -> Any:
    """The CNN: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, filters[-1])``."""
    import keras

    # One 2x2 pooling per block: smaller images would pool down to nothing.
    shape = checked_input_shape(input_shape, min_size=2 ** len(filters), name=CARD.name)
    inputs = pixel_input(shape)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    for i, width in enumerate(filters, start=1):
        # No conv bias: BatchNorm's beta does its job.
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{i}_conv")(x)
        # Momentum 0.9, not Keras' 0.99: trained from scratch on a few hundred images (a few
        # hundred steps), 0.99 leaves the moving statistics near their initial values and the
        # model predicts one class at inference.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=CARD.name)


def blocks(model: Any) -> list[list[Any]]:
    """One block per ``blockN``; the input rescaling joins the first, the pooling the last."""
    return group_layers(model, lambda name: (m.group(1) if (m := _BLOCK.match(name)) else None))


ENTRY = register(CARD, build, blocks=blocks)

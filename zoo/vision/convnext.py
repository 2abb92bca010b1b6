"""ConvNeXt-Tiny: a convnet modernized with transformer design choices.

Keras' implementation with its ImageNet weights (converted from the official
release). ImageNet mean/std normalization is inside the model, so the backbone
takes raw pixels in [0, 255]. Blocks are the 18 ConvNeXt blocks
``stage_I_block_J`` (3, 3, 9, 3 per stage); each stage's downsampling layer
joins the stage's first block, and the final pooling and LayerNorm join the
last block.

Example:

>>> import numpy as np
>>> from autodl.zoo import get
>>> backbone = get("convnext_tiny").build((64, 64, 3))
>>> tuple(backbone(np.zeros((1, 64, 64, 3), "float32")).shape)
(1, 768)
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from autodl.zoo.registry import register
from autodl.zoo.vision._blocks import STEM, group_layers
from autodl.zoo.vision._common import (
    DEFAULT_INPUT_SHAPE,
    FLOPS_NOTE,
    imagenet_card,
    keras_application,
)

MIN_SIZE = 32
_FILE = "convnext_tiny_notop.h5"
WEIGHTS_LICENCE = "MIT (facebookresearch/ConvNeXt weights, converted by Keras Applications)"

CARD = imagenet_card(
    name="convnext_tiny",
    title="ConvNeXt-Tiny (ImageNet)",
    summary=(
        "Pure convnet with 7x7 depthwise convs, LayerNorm, inverted bottlenecks and GELU, in four stages "
        "(3-3-9-3 blocks); 768 pooled features."
    ),
    symbol="ConvNeXtTiny",
    good_for="The most accurate backbone here for transfer learning on a GPU; too heavy for CPU-only training.",
    paper=(
        "Liu, Mao, Wu, Feichtenhofer, Darrell, Xie. A ConvNet for the 2020s. CVPR 2022. "
        "https://arxiv.org/abs/2201.03545"
    ),
    weights_licence=WEIGHTS_LICENCE,
    url="https://storage.googleapis.com/tensorflow/keras-applications/convnext/" + _FILE,
    file_hash="d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
    reference_accuracy="ImageNet top-1 81.3% (keras.io)",
    parameters=27_820_128,
    # The profiler counts 8,757,039,959 but misses the 18 grouped 7x7 convolutions (Keras runs them in a
    # nested TF function); they add 2 * 49 * H * W * C + H * W * C each, 212,357,376 in all.
    flops=8_969_397_335,
    flops_note=FLOPS_NOTE + " (plus the depthwise 7x7 convolutions, counted by hand: the profiler misses them)",
)

_BLOCK = re.compile(r"_stage_(\d+)_block_(\d+)_")
_DOWNSAMPLE = re.compile(r"_downsampling_block_(\d+)$")


def build(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """ConvNeXt-Tiny backbone: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, 768)``."""
    import keras

    return keras_application(keras.applications.ConvNeXtTiny, input_shape, name=CARD.name, min_size=MIN_SIZE,
                             include_preprocessing=True)


def blocks(model: Any) -> list[list[Any]]:
    """Stem, then one block per ``stage_I_block_J`` (downsampling joins the next stage's first block)."""
    return group_layers(model, _key_of)


def _key_of(name: str) -> str | None:
    match = _BLOCK.search(name)
    if match:
        return f"stage_{match.group(1)}_block_{match.group(2)}"
    match = _DOWNSAMPLE.search(name)
    if match:
        # downsampling_block_i sits between stage i and stage i + 1 and feeds the latter.
        return f"stage_{int(match.group(1)) + 1}_block_0"
    if name.endswith(("_stem", "_prestem_normalization")):
        return STEM
    return None  # the final (auto-named) pooling and LayerNorm follow the last block


ENTRY = register(CARD, build, blocks=blocks)

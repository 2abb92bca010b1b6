"""MobileNetV3 Small and Large: the cheapest pretrained image backbones in the zoo.

Keras' implementation with its ImageNet weights (alpha 1.0, not minimalistic,
trained at 224x224). Preprocessing (``x / 127.5 - 1``) is inside the model, so
the backbone takes raw pixels in [0, 255]. Blocks are the inverted-residual
blocks ``expanded_conv_N`` (11 for Small, 15 for Large); the final 1x1 conv
joins the last one.

Example:

>>> import numpy as np
>>> from autodl.zoo import get
>>> backbone = get("mobilenet_v3_small").build((64, 64, 3))
>>> tuple(backbone(np.zeros((1, 64, 64, 3), "float32")).shape)
(1, 576)
>>> len(get("mobilenet_v3_small").blocks(backbone))
12
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

PAPER = (
    "Howard, Sandler, Chu, Chen, Chen, Tan, Wang, Zhu, Pang, Vasudevan, Le, Adam. Searching for MobileNetV3. "
    "ICCV 2019. https://arxiv.org/abs/1905.02244"
)
WEIGHTS_LICENCE = "Apache-2.0 (Keras Applications, from the TensorFlow Models MobileNetV3 checkpoints)"
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
MIN_SIZE = 32

_SMALL_FILE = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
_LARGE_FILE = "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"

SMALL_CARD = imagenet_card(
    name="mobilenet_v3_small",
    title="MobileNetV3-Small (ImageNet)",
    summary=(
        "Inverted-residual blocks with squeeze-and-excitation and hard-swish, found by architecture search "
        "for mobile CPUs; 576 pooled features."
    ),
    symbol="MobileNetV3Small",
    good_for="The fastest start on CPU and the edge: small datasets, quick baselines, TFLite deployment.",
    paper=PAPER,
    weights_licence=WEIGHTS_LICENCE,
    url=BASE_URL + _SMALL_FILE,
    file_hash="d3e8ec802a04aa4fc771ee12a9a9b836",
    source_detail="no top, alpha 1.0, 224x224",
    reference_accuracy="ImageNet top-1 68.1% (Keras MobileNetV3 docs)",
    parameters=939_120,
    flops=116_010_184,
)

LARGE_CARD = imagenet_card(
    name="mobilenet_v3_large",
    title="MobileNetV3-Large (ImageNet)",
    summary=(
        "The larger MobileNetV3 from the same search: more and wider inverted-residual blocks; "
        "960 pooled features."
    ),
    symbol="MobileNetV3Large",
    good_for="A strong accuracy/latency trade-off on CPU and mobile; a good default for transfer learning.",
    paper=PAPER,
    weights_licence=WEIGHTS_LICENCE,
    url=BASE_URL + _LARGE_FILE,
    file_hash="07fb09a5933dd0c8eaafa16978110389",
    source_detail="no top, alpha 1.0, 224x224",
    reference_accuracy="ImageNet top-1 75.6% (Keras MobileNetV3 docs)",
    parameters=2_996_352,
    flops=443_544_152,
)

_BLOCK = re.compile(r"^expanded_conv_(?:(\d+)_)?")


def build_small(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """MobileNetV3-Small backbone: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, 576)``."""
    return _build("small", input_shape)


def build_large(input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> Any:
    """MobileNetV3-Large backbone: ``(batch, H, W, 3)`` pixels in [0, 255] -> ``(batch, 960)``."""
    return _build("large", input_shape)


def blocks(model: Any) -> list[list[Any]]:
    """Stem (first conv), then one block per ``expanded_conv_N``; the top conv joins the last."""
    return group_layers(model, _key_of)


def _key_of(name: str) -> str | None:
    match = _BLOCK.match(name)
    if match:
        # Block 0 has no number in its layer names ("expanded_conv_depthwise").
        return f"expanded_conv_{match.group(1) or 0}"
    if name in ("conv", "conv_bn"):
        return STEM
    if name.startswith("conv_1") or name == "avg_pool":
        return TOP
    return None  # auto-named activations and the preprocessing Rescaling


def _build(size: str, input_shape: Sequence[int]) -> Any:
    import keras

    application = keras.applications.MobileNetV3Small if size == "small" else keras.applications.MobileNetV3Large
    return keras_application(application, input_shape, name=f"mobilenet_v3_{size}", min_size=MIN_SIZE,
                             include_preprocessing=True)


SMALL = register(SMALL_CARD, build_small, blocks=blocks)
LARGE = register(LARGE_CARD, build_large, blocks=blocks)

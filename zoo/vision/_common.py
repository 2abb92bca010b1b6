"""What the image backbones share: the pixel input and the card texts about Keras Applications.

Example:

>>> checked_input_shape((64, 64, 3), min_size=32, name="demo")
(64, 64, 3)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from autodl.zoo.registry import Card
from autodl.zoo.weights import Weights

KERAS_REFERENCE = "Keras 3 keras.applications.{symbol} (https://keras.io/api/applications/)"
IMAGENET_NOTE = (
    "Trained on ImageNet-1k, whose terms of access restrict the images to non-commercial research; "
    "check whether that matters for your use."
)
FLOPS_NOTE = "TensorFlow profiler, one 224x224 image, preprocessing included; a multiply-add counts as 2 FLOPs"
DEFAULT_INPUT_SHAPE = (224, 224, 3)


def checked_input_shape(input_shape: Sequence[int], *, min_size: int, name: str) -> tuple[int, int, int]:
    """``(H, W, 3)`` as ints; ``ValueError`` naming the entry when it cannot work."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{name} takes RGB images of shape (H, W, 3), got {tuple(input_shape)}")
    if min(shape[:2]) < min_size:
        raise ValueError(f"{name} needs images of at least {min_size}x{min_size} pixels, got {shape[0]}x{shape[1]}")
    return shape  # type: ignore[return-value]


def pixel_input(input_shape: tuple[int, int, int]) -> Any:
    """The backbone's input: float32 RGB pixels in [0, 255], channels last."""
    import keras

    return keras.Input(shape=input_shape, dtype="float32", name="pixels")


def flat_model(inputs: Any, base: Any, name: str) -> Any:
    """Re-wraps an application built on ``input_tensor=...`` as a model with one (non-list) input.

    Keras Applications built on an input tensor take a one-element input list,
    which makes Keras warn when called on a plain array; the re-wrapped model
    shares the same layers (a flat graph, so weights load by layer order).
    """
    import keras

    return keras.Model(inputs, base.output, name=name)


def imagenet_card(
    *, name: str, title: str, summary: str, symbol: str, good_for: str, paper: str, weights_licence: str,
    url: str, file_hash: str, reference_accuracy: str, parameters: int, flops: int,
    source_detail: str = "no top, 224x224", flops_note: str = FLOPS_NOTE,
) -> Card:
    """The card of a keras.applications backbone with its published ImageNet no-top weights.

    What every such card shares (task, Keras reference, input, the ImageNet terms, the
    weights' source) is filled in here; ``url`` and ``file_hash`` are Keras' own.
    """
    return Card(
        name=name, task="image", title=title, summary=summary, reference=KERAS_REFERENCE.format(symbol=symbol),
        good_for=good_for, paper=paper, licence=f"{weights_licence}. {IMAGENET_NOTE}", input_shape=DEFAULT_INPUT_SHAPE,
        pretrained=Weights(url=url, file_hash=file_hash, filename=url.rsplit("/", 1)[1],
                           source=f"ImageNet-1k, Keras Applications ({source_detail})", licence=weights_licence),
        reference_accuracy=reference_accuracy, parameters=parameters, flops=flops, flops_note=flops_note,
    )


def keras_application(
    application: Callable[..., Any], input_shape: Sequence[int], *, name: str, min_size: int,
    preprocess: Any = None, **kwargs: Any,
) -> Any:
    """A keras.applications model as a zoo backbone: pixels in [0, 255] -> pooled features.

    ``weights=None``: the published no-top file is fetched, verified and loaded by
    ``load_pretrained``. ``preprocess`` (a layer) runs first for applications without
    their own ``include_preprocessing``.
    """
    shape = checked_input_shape(input_shape, min_size=min_size, name=name)
    inputs = pixel_input(shape)
    x = inputs if preprocess is None else preprocess(inputs)
    base = application(input_tensor=x, include_top=False, weights=None, pooling="avg", **kwargs)
    return flat_model(inputs, base, name)

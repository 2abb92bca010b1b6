"""Grouping a backbone's layers into blocks, for unfreezing from the top.

Each family names its layers after the block they belong to (``block2a_...``,
``conv3_block1_...``, ``expanded_conv_4_...``); a family supplies ``key_of(name)``
that maps a layer name to its block, to ``STEM`` or ``TOP``, or to ``None`` for
auto-named layers (activations, pooling), which join the block of the layer
before them. The stem is the first block; the top (the final 1x1 conv, norm
and pooling) joins the last block, since it makes no sense to fine-tune alone;
a block without weights (e.g. a lone preprocessing layer) joins the next one.

Example:

>>> import keras
>>> x = keras.Input((8, 8, 3))
>>> y = keras.layers.Conv2D(4, 3, name="block1_conv")(x)
>>> y = keras.layers.ReLU()(y)
>>> y = keras.layers.Conv2D(4, 3, name="block2_conv")(y)
>>> m = keras.Model(x, y)
>>> [[layer.name for layer in b] for b in group_layers(m, lambda n: n.split("_")[0] if n.startswith("block") else None)]
[['block1_conv', 're_lu'], ['block2_conv']]
"""

from __future__ import annotations

from typing import Any, Callable

STEM = "__stem__"
TOP = "__top__"


def group_layers(model: Any, key_of: Callable[[str], str | None]) -> list[list[Any]]:
    """The model's layers (inputs excluded) in blocks, input side first, top block last."""
    import keras

    groups: dict[str, list[Any]] = {}
    current = STEM
    # model.layers is in topological order, so blocks come out bottom to top.
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        key = key_of(layer.name)
        if key is not None:
            current = key
        groups.setdefault(current, []).append(layer)
    top = groups.pop(TOP, [])
    blocks = [layers for layers in groups.values() if layers]
    if not blocks:
        return [top] if top else []
    blocks[-1].extend(top)
    merged: list[list[Any]] = []
    pending: list[Any] = []
    for layers in blocks:
        pending.extend(layers)
        if any(layer.weights for layer in pending):
            merged.append(pending)
            pending = []
    if pending:  # weightless layers after the last weighted block
        if merged:
            merged[-1].extend(pending)
        else:
            merged.append(pending)
    return merged

"""ResNet-MLP for tabular data (Gorishniy et al. 2021).

The flat input (numeric, one-hot/embedded categoricals, projected text) is
mapped linearly to width ``d``; each block computes
``x + Dropout_res(Linear(Dropout_hid(ReLU(Linear(BatchNorm(x))))))`` with a
hidden width of ``d * hidden_factor``; the output is ``ReLU(BatchNorm(x))``.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import EncodedFeatures, get
>>> x = keras.Input((5,))
>>> get("resnet").build(kt.HyperParameters(), EncodedFeatures(numeric=x)).shape
(None, 128)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.registry import Card, EncodedFeatures, register
from autodl.zoo.tabular._shared import flat_inputs

NAME = "resnet"

CARD = Card(
    name=NAME,
    task="tabular",
    title="ResNet-MLP",
    summary=(
        "Residual MLP with BatchNorm pre-activation blocks; a strong tabular deep-learning "
        "baseline that is often on par with more complex models."
    ),
    reference=(
        "Gorishniy, Rubachev, Khrulkov, Babenko. Revisiting Deep Learning Models for Tabular Data. "
        "NeurIPS 2021. https://arxiv.org/abs/2106.11959"
    ),
    good_for="Medium and large tables where a plain MLP underfits; trains almost as fast as the MLP.",
    hyperparameters={
        f"{NAME}/blocks": "number of residual blocks (1-6, default 2)",
        f"{NAME}/d": "main width (64, 128, 192 or 256; default 128)",
        f"{NAME}/hidden_factor": "hidden width of a block as a multiple of d (1-4, default 2)",
        f"{NAME}/hidden_dropout": "dropout inside a block, after the ReLU (0-0.5, default 0.2)",
        f"{NAME}/residual_dropout": "dropout on a block's output before the residual add (0-0.3, default 0)",
    },
)


def build(hp: kt.HyperParameters, features: EncodedFeatures) -> Any:
    """The ResNet representation ``(batch, d)``."""
    blocks = hp.Int(f"{NAME}/blocks", 1, 6, default=2)
    d = hp.Choice(f"{NAME}/d", [64, 128, 192, 256], default=128)
    factor = hp.Int(f"{NAME}/hidden_factor", 1, 4, default=2)
    hidden_dropout = hp.Float(f"{NAME}/hidden_dropout", 0.0, 0.5, step=0.05, default=0.2)
    residual_dropout = hp.Float(f"{NAME}/residual_dropout", 0.0, 0.3, step=0.05, default=0.0)

    x = keras.layers.Dense(d, name=f"{NAME}_input")(flat_inputs(features, NAME))
    for i in range(blocks):
        p = f"{NAME}_block{i}"
        h = keras.layers.BatchNormalization(name=f"{p}_norm")(x)
        h = keras.layers.Dense(d * factor, activation="relu", name=f"{p}_linear0")(h)
        if hidden_dropout > 0:
            h = keras.layers.Dropout(hidden_dropout, name=f"{p}_hidden_dropout")(h)
        h = keras.layers.Dense(d, name=f"{p}_linear1")(h)
        if residual_dropout > 0:
            h = keras.layers.Dropout(residual_dropout, name=f"{p}_residual_dropout")(h)
        x = keras.layers.Add(name=f"{p}_add")([x, h])
    x = keras.layers.BatchNormalization(name=f"{NAME}_output_norm")(x)
    return keras.layers.ReLU(name=f"{NAME}_output_relu")(x)


ENTRY = register(CARD, build)

"""MLP: the plain multilayer perceptron baseline for tabular data.

Categorical columns are one-hot encoded (cardinality <= 16) or embedded
(``min(32, (card + 1) // 2)`` dimensions), concatenated with the numeric
features and a linear projection of any text, then fed to
``layers`` × (Dense → ReLU → Dropout).

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import EncodedFeatures, get
>>> x = keras.Input((5,))
>>> get("mlp").build(kt.HyperParameters(), EncodedFeatures(numeric=x)).shape
(None, 256)
"""

from __future__ import annotations

from typing import Any

import keras_tuner as kt

from autodl.zoo.registry import Card, EncodedFeatures, register
from autodl.zoo.tabular._shared import flat_inputs, mlp_blocks

NAME = "mlp"

CARD = Card(
    name=NAME,
    task="tabular",
    title="MLP",
    summary=(
        "Multilayer perceptron on the concatenation of numeric features, one-hot or embedded "
        "categoricals and projected text: Dense-ReLU-Dropout blocks."
    ),
    reference=(
        "Gorishniy, Rubachev, Khrulkov, Babenko. Revisiting Deep Learning Models for Tabular Data. "
        "NeurIPS 2021. https://arxiv.org/abs/2106.11959"
    ),
    good_for="A fast, strong-enough baseline on small and medium tables; cheapest entry to train on CPU.",
    hyperparameters={
        f"{NAME}/layers": "number of Dense-ReLU-Dropout blocks (1-5, default 3)",
        f"{NAME}/units": "width of every block (64, 128, 256 or 512; default 256)",
        f"{NAME}/dropout": "dropout after each block (0-0.5, default 0.1)",
    },
)


def build(hp: kt.HyperParameters, features: EncodedFeatures) -> Any:
    """The MLP representation ``(batch, units)``."""
    layers = hp.Int(f"{NAME}/layers", 1, 5, default=3)
    units = hp.Choice(f"{NAME}/units", [64, 128, 256, 512], default=256)
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.5, step=0.05, default=0.1)
    x = flat_inputs(features, NAME)
    return mlp_blocks(x, layers=layers, units=units, dropout=dropout, prefix=NAME)


ENTRY = register(CARD, build)

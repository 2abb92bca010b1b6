"""MLP-PLR: an MLP on periodic embeddings of the numeric features (Gorishniy et al. 2022).

Each numeric feature ``x_j`` becomes ``ReLU(Linear_j([cos 2πc_j x_j, sin 2πc_j x_j]))``
with trainable frequencies ``c_j`` (``PeriodicEmbedding``); the embeddings are
flattened, concatenated with the one-hot/embedded categoricals and projected
text, and fed to Dense-ReLU-Dropout blocks. Without numeric features it is the
plain MLP on the remaining inputs.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import EncodedFeatures, get
>>> x = keras.Input((5,))
>>> get("mlp_plr").build(kt.HyperParameters(), EncodedFeatures(numeric=x)).shape
(None, 256)
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.layers import PeriodicEmbedding
from autodl.zoo.registry import Card, EncodedFeatures, register
from autodl.zoo.tabular._shared import check_features, flat_inputs, mlp_blocks

NAME = "mlp_plr"

CARD = Card(
    name=NAME,
    task="tabular",
    title="MLP-PLR (MLP with periodic numeric embeddings)",
    summary=(
        "MLP whose numeric inputs are first mapped through trainable periodic (sin/cos) features, "
        "a per-feature linear layer and a ReLU; closes most of the gap between MLPs and GBDTs."
    ),
    reference=(
        "Gorishniy, Rubachev, Babenko. On Embeddings for Numerical Features in Tabular Deep Learning. "
        "NeurIPS 2022. https://arxiv.org/abs/2203.05556"
    ),
    good_for=(
        "Tables with informative numeric features with irregular (non-smooth) effects; "
        "usually the strongest MLP-like model at small extra cost."
    ),
    hyperparameters={
        f"{NAME}/n_frequencies": "frequencies k per numeric feature (16, 32, 48 or 64; default 48)",
        f"{NAME}/sigma": "std of the initial frequencies, log scale (0.01-10, default 0.3)",
        f"{NAME}/d_embedding": "embedding size per numeric feature (8, 16, 24 or 32; default 24)",
        f"{NAME}/layers": "number of Dense-ReLU-Dropout blocks (1-4, default 2)",
        f"{NAME}/units": "width of every block (64, 128, 256 or 512; default 256)",
        f"{NAME}/dropout": "dropout after each block (0-0.5, default 0.1)",
    },
)


def build(hp: kt.HyperParameters, features: EncodedFeatures) -> Any:
    """The MLP-PLR representation ``(batch, units)``."""
    check_features(features)
    numeric = None
    if features.numeric is not None:
        n_frequencies = hp.Choice(f"{NAME}/n_frequencies", [16, 32, 48, 64], default=48)
        sigma = hp.Float(f"{NAME}/sigma", 0.01, 10.0, sampling="log", default=0.3)
        d_embedding = hp.Choice(f"{NAME}/d_embedding", [8, 16, 24, 32], default=24)
        numeric = PeriodicEmbedding(n_frequencies, sigma, d_embedding, name=f"{NAME}_periodic")(features.numeric)
        numeric = keras.layers.Flatten(name=f"{NAME}_periodic_flat")(numeric)
    layers = hp.Int(f"{NAME}/layers", 1, 4, default=2)
    units = hp.Choice(f"{NAME}/units", [64, 128, 256, 512], default=256)
    dropout = hp.Float(f"{NAME}/dropout", 0.0, 0.5, step=0.05, default=0.1)
    x = flat_inputs(features, NAME, numeric=numeric)
    return mlp_blocks(x, layers=layers, units=units, dropout=dropout, prefix=NAME)


ENTRY = register(CARD, build)

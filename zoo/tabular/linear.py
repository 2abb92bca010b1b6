"""Linear: logistic (or linear) regression on the encoded features, L2-regularized.

The representation is the encoded features themselves: numeric columns,
one-hot or embedded categoricals and the text encoder's output, unprojected;
the task head is then the whole model, and its weights carry an L2 penalty
whose strength is searched (scikit-learn's ``C`` is ``1 / (2 * l2 * rows)``).
It is the head that text encoders with a wide, sparse output need: on
TF-IDF vectors an MLP head overfits within an epoch or two, while the
regularized linear head is what TF-IDF + logistic regression is to
scikit-learn users. On a table of text only it is the search's first head;
elsewhere it is searched only when ``--models`` names it.

Example:

>>> import keras, keras_tuner as kt
>>> from autodl.zoo import EncodedFeatures, get
>>> hp = kt.HyperParameters()
>>> x = keras.Input((5,))
>>> get("linear").build(hp, EncodedFeatures(numeric=x)).shape
(None, 5)
>>> get("linear").head_regularizer(hp).get_config()["l2"]
0.0001
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt

from autodl.zoo.registry import Card, EncodedFeatures, register
from autodl.zoo.tabular._shared import check_features, concatenate, encode_categoricals

NAME = "linear"

CARD = Card(
    name=NAME,
    task="tabular",
    title="Linear model (logistic / linear regression)",
    summary=(
        "The task head straight on the encoded features (numeric, one-hot or embedded categoricals, "
        "the text encoder's output), with an L2 penalty on its weights."
    ),
    reference=(
        "Hastie, Tibshirani, Friedman. The Elements of Statistical Learning, ch. 3-4. Springer 2009. "
        "https://hastie.su.domains/ElemStatLearn/"
    ),
    good_for=(
        "Text encoded as TF-IDF of word or character n-grams (it is logistic regression on them); "
        "a baseline on tables, fastest to train and to serve."
    ),
    licence="Apache-2.0 (autodl; no pretrained weights)",
    hyperparameters={
        f"{NAME}/l2": "L2 penalty on the head's weights, log scale (1e-6-1e-2, default 1e-4)",
    },
)


def build(hp: kt.HyperParameters, features: EncodedFeatures) -> Any:
    """The features as they come: ``(batch, width)``."""
    check_features(features)
    parts: list[Any] = []
    if features.numeric is not None:
        parts.append(features.numeric)
    parts.extend(encode_categoricals(features, NAME))
    if features.text is not None:
        parts.append(features.text)
    return concatenate(parts, f"{NAME}_inputs")


def head_regularizer(hp: kt.HyperParameters) -> keras.regularizers.Regularizer:
    # Default 1e-4: on the sentiment benchmark's TF-IDF vectors it beat 0, 1e-5, 3e-4, 1e-3 and
    # 3e-3 on validation accuracy, and trained in the fewest epochs.
    return keras.regularizers.L2(hp.Float(f"{NAME}/l2", 1e-6, 1e-2, sampling="log", default=1e-4))


ENTRY = register(CARD, build, head_regularizer=head_regularizer, default_search=False)

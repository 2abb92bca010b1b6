"""The tabular recipe's predict: one batch for a few rows, a tf.data pipeline for many, the same outputs."""

from __future__ import annotations

import doctest

import keras
import numpy as np

from autodl.features.frame import ModelData
from autodl.recipes import tabular


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    word = keras.Input(shape=(), dtype="string", name="word")
    x = keras.Input(shape=(), name="x")
    ids = keras.layers.StringLookup(vocabulary=["a", "b", "c"])(word)
    features = keras.layers.Concatenate()([keras.layers.CategoryEncoding(4, output_mode="one_hot")(ids),
                                           keras.layers.Reshape((1,))(x)])
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(8, activation="relu")(features))
    return keras.Model({"word": word, "x": x}, out)


def test_few_and_many_rows_predict_the_same() -> None:
    model = _model()
    rng = np.random.default_rng(0)
    n = tabular.SMALL_BATCH + 50
    data = ModelData({"word": rng.choice(["a", "b", "c", "zz"], n).astype(object), "x": rng.normal(size=n).astype("float32")})
    many = tabular.predict(model, data)  # through tf.data
    few = tabular.predict(model, data.take(np.arange(7)))  # one batch
    one = tabular.predict(model, data.take(np.array([3])))
    assert many.shape == (n, 2) and few.shape == (7, 2) and one.shape == (1, 2)
    np.testing.assert_allclose(few, many[:7], atol=1e-6)
    np.testing.assert_allclose(one, many[3:4], atol=1e-6)


def test_docstrings_run() -> None:
    result = doctest.testmod(tabular)
    assert result.attempted > 0 and result.failed == 0

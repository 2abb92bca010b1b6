import keras
import numpy as np
import pandas as pd
import pytest

from autodl.data.schema import ColumnSpec, Schema
from autodl.errors import DataError
from autodl.features import DateTimeParts, QuantileTransform, build_inputs, fit_stats, to_model_inputs
from autodl.features.frame import INT_MISSING, ModelData
from autodl.recipes.tabular import make_dataset

SCHEMA = Schema(
    "y",
    "binary",
    [
        ColumnSpec("age-years", "numeric", "float", 4, 0.25),
        ColumnSpec("city", "categorical", "string", 3, 0.0),
        ColumnSpec("rooms", "categorical", "int", 3, 0.25),
        ColumnSpec("when", "datetime", "datetime", 4, 0.25),
        ColumnSpec("note", "text", "string", 4, 0.0),
    ],
    classes=["no", "yes"],
)


def frame(n_repeat: int = 10) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age-years": [25.0, np.nan, 47, 51] * n_repeat,
            "city": ["a", "b", "c", "a"] * n_repeat,
            "rooms": [1, 2, 3, None] * n_repeat,
            "when": ["2024-01-05 13:00", "2023-12-31", None, "2020-02-29 23:10"] * n_repeat,
            "note": ["the quick brown fox", "lazy dog sleeps", "a fox and a dog", "nothing here"] * n_repeat,
        }
    )


def test_boundary_conversion_keeps_missing_values():
    x = to_model_inputs(frame(1), SCHEMA)
    assert x["age-years"].dtype == np.float32 and np.isnan(x["age-years"][1])
    assert x["city"].dtype == object and list(x["city"]) == ["a", "b", "c", "a"]
    assert x["rooms"].dtype == np.int64 and x["rooms"][3] == INT_MISSING
    assert np.isnan(x["when"][2]) and x["when"][1] == pd.Timestamp("2023-12-31").timestamp()


def test_missing_column_is_named():
    with pytest.raises(DataError, match="'city'"):
        to_model_inputs(frame(1).drop(columns=["city"]), SCHEMA)


def test_stats_use_median_fill_and_record_missing_columns():
    stats = fit_stats(to_model_inputs(frame(), SCHEMA), SCHEMA)
    assert stats.numeric_names[:2] == ["age-years", "when.year"]
    assert stats.fill_values[0] == pytest.approx(47.0)
    assert 0 in stats.missing_columns
    assert stats.vocabularies["city"] == ["a", "b", "c"]
    assert stats.vocabularies["rooms"] == [1, 2, 3]
    assert "fox" in stats.texts["note"].tokens and "fox" in stats.texts["note"].ngrams


def test_datetime_parts_match_pandas():
    stamps = pd.to_datetime(
        pd.Series(["1900-03-01 05:00", "2024-02-29 23:59", "1969-12-31 01:00", "2100-12-31 12:00", "2000-01-01 00:00"])
    )
    seconds = ((stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)).to_numpy()
    got = np.asarray(DateTimeParts()(seconds))
    expected = np.stack([stamps.dt.year, stamps.dt.month, stamps.dt.day, stamps.dt.weekday, stamps.dt.hour], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_quantile_transform_is_monotone_and_spread():
    values = np.random.default_rng(0).lognormal(size=2000)
    q = np.quantile(values, np.linspace(0, 1, 33))
    layer = QuantileTransform([q.tolist()])
    out = np.asarray(layer(values.reshape(-1, 1).astype("float32"))).reshape(-1)
    order = np.argsort(values)
    assert np.all(np.diff(out[order]) >= -1e-6)
    assert abs(out.mean()) < 0.05 and 0.9 < out.std() < 1.1
    restored = QuantileTransform.from_config(layer.get_config())
    np.testing.assert_allclose(np.asarray(restored(values[:5].reshape(-1, 1).astype("float32"))), out[:5].reshape(-1, 1), atol=1e-6)


@pytest.mark.parametrize("transform", ["quantile", "standard"])
def test_preprocessing_model_saves_loads_and_takes_unseen_categories(tmp_path, transform):
    x = to_model_inputs(frame(), SCHEMA)
    stats = fit_stats(x, SCHEMA)
    inputs, features = build_inputs(SCHEMA, stats, numeric_transform=transform)
    parts = [features.numeric, features.text] + [
        keras.layers.Embedding(c, 3)(i) for i, c in zip(features.categorical, features.cardinalities)
    ]
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Concatenate()(parts))
    model = keras.Model(inputs, out)
    new = frame(1)
    new.loc[0, "city"] = "never-seen"
    new.loc[1, "rooms"] = 99
    ds = make_dataset(ModelData(to_model_inputs(new, SCHEMA)), batch_size=8, with_targets=False)
    before = model.predict(ds, verbose=0)
    assert np.isfinite(before).all()
    model.save(tmp_path / "m.keras")
    after = keras.models.load_model(tmp_path / "m.keras").predict(ds, verbose=0)
    np.testing.assert_allclose(before, after, atol=1e-6)
    encoded = keras.Model(inputs, features.numeric).predict(ds, verbose=0)
    assert np.isfinite(encoded).all()

"""TF Serving export: the SavedModel signature reproduces the Keras model on raw rows."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from autodl.api import AutoModel
from autodl.data.schema import ColumnSpec, Schema
from autodl.errors import DataError
from autodl.export.serving import (
    MAX_WARMUP_RECORDS,
    ServingExport,
    _to_model_input,
    export_serving,
    parse_datetime,
    request_body,
    serving_inputs,
    signature_key,
    signature_keys,
)
from autodl.features.frame import ModelData, convert_column, to_epoch_seconds, to_model_inputs
from autodl.metrics import decide
from autodl.fit import predict_output
from tests.conftest import make_table

TASKS = ("binary", "multiclass", "regression")
# The regression run trains on awkward column names: a space and a symbol, a
# Python keyword, a non-ASCII letter, a slash.
ODD_NAMES = {"x1": "prix (€)", "city": "class", "rooms": "n° rooms", "day": "date/jour"}
ODD_KEYS = {"prix (€)": "prix", "class": "col_class", "n° rooms": "n_rooms", "date/jour": "date_jour"}
# What TF accepts as an input name, and what its keyword-argument renaming leaves alone.
TF_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-/]*")


def _columns(task: str, df: pd.DataFrame) -> pd.DataFrame:
    return df.rename(columns=ODD_NAMES) if task == "regression" else df


def _raw_rows(task: str) -> pd.DataFrame:
    """Rows with every kind of gap a client sends: missing numbers, strings, dates; unseen values."""
    df = make_table(12, task=task, text=True, seed=7)
    df["x1"] = df["x1"].astype(float)
    df["rooms"] = df["rooms"].astype(float)
    df.loc[0, "x1"] = np.nan
    df.loc[1, "x2"] = np.nan
    df.loc[2, "city"] = "tokyo"  # unseen category
    df.loc[3, "city"] = None
    df.loc[4, "day"] = None
    df.loc[5, "rooms"] = np.nan
    df.loc[6, "rooms"] = 9.0  # unseen integer
    df.loc[7, "review"] = None
    df.loc[8, "day"] = "2024-05-01 13:45:10"
    df.loc[9, "city"] = "  paris "
    return _columns(task, df)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, AutoModel]:
    out = {}
    for task in TASKS:
        path = tmp_path_factory.mktemp(f"run_{task}")
        df = _columns(task, make_table(300, task=task, text=True))
        AutoModel(target="y", max_trials=1, max_epochs=2, cv=0, ensemble=1, verbosity=0, out=path, overwrite=True).fit(df)
        out[task] = AutoModel.load(path)
    return out


@pytest.fixture(scope="module")
def exports(runs: dict[str, AutoModel], tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServingExport]:
    out = {}
    for task, m in runs.items():
        warmup = _columns(task, make_table(20, task=task, text=True, seed=1))
        out_dir = tmp_path_factory.mktemp(f"export_{task}")
        out[task] = export_serving(m.model, m.schema, out_dir, name="autodl", version=3, warmup_rows=warmup)
    return out


@pytest.fixture(scope="module")
def signatures(exports: dict[str, ServingExport]) -> dict[str, object]:
    return {task: tf.saved_model.load(str(e.path)).signatures["serving_default"] for task, e in exports.items()}


def _call(signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    specs = signature.structured_input_signature[1]
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v, specs[k].dtype) for k, v in inputs.items()}).items()}


@pytest.mark.parametrize("task", TASKS)
def test_layout(task, exports):
    e = exports[task]
    assert e.path.name == "3" and e.path.parent.name == "autodl"
    assert (e.path / "saved_model.pb").is_file() and (e.path / "variables").is_dir()
    assert (e.path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert e.request_example == e.path / "assets.extra" / "request_example.json"
    assert e.warmup_records == MAX_WARMUP_RECORDS


@pytest.mark.parametrize("task", TASKS)
def test_signature_matches_keras_on_raw_rows(task, runs, signatures):
    m, signature = runs[task], signatures[task]
    rows = _raw_rows(task)
    got = _call(signature, serving_inputs(rows, m.schema))
    want = predict_output(m.model, ModelData(to_model_inputs(rows, m.schema)), m.schema.task)
    if task == "regression":
        assert set(got) == {"value"}
        assert got["value"].shape == (len(rows),)
        np.testing.assert_allclose(got["value"], want, atol=1e-5, rtol=0)
    else:
        assert set(got) == {"probabilities", "label"}
        assert np.abs(got["probabilities"] - want).max() <= 1e-5
        # Labels as predict decides them: a binary run's decision threshold, else argmax.
        labels = np.array([str(c) for c in m.schema.classes])[decide(want, m.schema.threshold)]
        assert got["label"].astype(str).tolist() == labels.tolist()
        assert got["label"].astype(str).tolist() == [str(v) for v in m.predict(rows)]


@pytest.mark.parametrize("task", TASKS)
def test_signature_inputs_and_outputs(task, runs, exports, signatures):
    m, e, signature = runs[task], exports[task], signatures[task]
    specs = signature.structured_input_signature[1]
    assert {k: s.dtype.name for k, s in specs.items()} == e.signature_inputs
    assert all(s.shape.as_list() == [None] for s in specs.values())
    by_storage = {e.input_keys[c.name]: c.storage for c in m.schema.features}
    expected = {"float": "float32", "int": "float64", "string": "string", "datetime": "string"}
    assert e.signature_inputs == {k: expected[s] for k, s in by_storage.items()}
    outputs = {k: (s.dtype.name, s.shape.as_list()) for k, s in signature.structured_outputs.items()}
    if task == "regression":
        assert outputs == {"value": ("float32", [None])}
    else:
        assert outputs == {"probabilities": ("float32", [None, len(m.schema.classes)]), "label": ("string", [None])}
    assert e.signature_outputs == {k: dtype for k, (dtype, _) in outputs.items()}


def test_graph_strips_strings(runs, signatures):
    m, signature = runs["binary"], signatures["binary"]
    x = serving_inputs(_raw_rows("binary").head(3), m.schema)
    padded = {**x, "city": np.array([f"  {v}\t" for v in x["city"]], dtype=object)}
    np.testing.assert_array_equal(_call(signature, padded)["probabilities"], _call(signature, x)["probabilities"])


@pytest.mark.parametrize("task", TASKS)
def test_warmup_records_replay(task, exports, signatures):
    e, signature = exports[task], signatures[task]
    specs = signature.structured_input_signature[1]
    warmup = tf.data.TFRecordDataset(str(e.path / "assets.extra" / "tf_serving_warmup_requests"))
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in warmup]
    assert len(records) == e.warmup_records
    for k, record in enumerate(records, start=1):
        request = record.predict_log.request
        assert request.model_spec.name == "autodl" and request.model_spec.signature_name == "serving_default"
        assert set(request.inputs) == set(specs)
        for key, tensor in request.inputs.items():
            assert tf.dtypes.as_dtype(tensor.dtype) == specs[key].dtype
        inputs = {key: tf.make_ndarray(tensor) for key, tensor in request.inputs.items()}
        out = signature(**{key: tf.constant(v, specs[key].dtype) for key, v in inputs.items()})
        assert all(v.shape[0] == k for v in out.values())


@pytest.mark.parametrize("task", TASKS)
def test_request_example(task, exports, signatures):
    e, signature = exports[task], signatures[task]
    body = json.loads(e.request_example.read_text(encoding="utf-8"))
    assert body["signature_name"] == "serving_default"
    assert set(body["inputs"]) == set(signature.structured_input_signature[1]) == set(e.signature_inputs)
    out = _call(signature, {k: np.array(v) for k, v in body["inputs"].items()})
    assert all(len(v) == len(next(iter(body["inputs"].values()))) for v in out.values())
    # The warmup rows are complete, so the example is strict JSON: no NaN literal.
    assert "NaN" not in e.request_example.read_text(encoding="utf-8")


def test_odd_column_names_get_sanitized_keys(runs, exports):
    e = exports["regression"]
    assert {c: e.input_keys[c] for c in ODD_KEYS} == ODD_KEYS
    assert e.input_keys == signature_keys(runs["regression"].schema)
    assert set(e.signature_inputs) == set(e.input_keys.values())
    for key in e.signature_inputs:
        assert TF_NAME.fullmatch(key) and key.isidentifier()


def test_signature_keys_are_valid_and_unique():
    names = ["age", "a b", "a_b", "a-b", "Prénom", "(x)", "2024 sales", "日本", "東京", "self", "None", "_", "x/y"]
    schema = Schema("y", "regression", [ColumnSpec(n, "numeric", "float", 3, 0.0) for n in names])
    keys = signature_keys(schema)
    assert list(keys) == names
    assert len(set(keys.values())) == len(names)
    assert keys["age"] == "age" and keys["a_b"] == "a_b" and keys["Prénom"] == "Prenom"
    assert keys["2024 sales"] == "col_2024_sales" and keys["self"] == "col_self" and keys["None"] == "col_None"
    for key in keys.values():
        assert TF_NAME.fullmatch(key) and key.isidentifier()
    assert signature_key("日本") == signature_key("東京") == "col"


def test_parse_datetime_matches_pandas():
    strings = [
        "2024-03-05",
        "2024-03-05 14:30:00",
        "2024-03-05T14:30",
        " 2024-03-05T14:30:59.25 ",
        "2024-3-5",
        "2024-02-29",
        "2000-02-29",
        "1969-12-31T23:59:59",
        "1900-01-01",
        "2024-03-05T14:30:00Z",
        "2024-03-05T14:30:00+02:00",
        "2024-03-05T14:30:00-0530",
        "2024-03-05 14:30:00 +02:00",
        "",
        "not a date",
        "2023-02-29",
        "1900-02-29",
        "2024-13-01",
        "2024-04-31",
        "2024-03-05T24:00",
        "2024-03-05T23:59:60",
        "2024-03-05X14:30",
    ]
    got = parse_datetime(tf.constant(strings)).numpy()
    want = to_epoch_seconds(pd.Series(strings))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).sum() == 9
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=1e-6, rtol=0)
    # Only ISO dates are accepted: what pandas would guess at is missing in the graph.
    assert np.isnan(parse_datetime(tf.constant(["03/05/2024", "2024"])).numpy()).all()


def test_serving_inputs_datetimes_round_trip():
    col = ColumnSpec("day", "datetime", "datetime", 3, 0.0)
    raw = pd.Series(["2024-03-05", "2024-03-05 14:30:00.5", None, "2024-03-05T23:59:59+01:00", "junk"])
    schema = Schema("y", "binary", [col])
    iso = serving_inputs(pd.DataFrame({"day": raw}), schema)["day"]
    assert iso.tolist() == ["2024-03-05", "2024-03-05T14:30:00.500000", "", "2024-03-05T22:59:59", ""]
    np.testing.assert_array_equal(parse_datetime(tf.constant(iso)).numpy(), to_epoch_seconds(raw))


def test_int_columns_round_like_pandas():
    col = ColumnSpec("rooms", "categorical", "int", 4, 0.0)
    values = pd.Series([1.0, 2.5, 3.5, -0.5, np.nan, 4.0, 1.49])
    got = _to_model_input(tf.constant(values.to_numpy(), tf.float64), col).numpy()
    np.testing.assert_array_equal(got, convert_column(values, col))


def test_request_body_writes_missing_numbers_as_nan():
    body = request_body({"x": np.array([0.3, np.nan], dtype="float32"), "n": np.array([2.0, np.nan])})
    assert json.dumps(body) == '{"signature_name": "serving_default", "inputs": {"x": [0.3, NaN], "n": [2, NaN]}}'


def test_export_refuses_bad_arguments(runs, exports, tmp_path):
    m = runs["binary"]
    out = exports["binary"].path.parent.parent
    with pytest.raises(FileExistsError):
        export_serving(m.model, m.schema, out, name="autodl", version=3, warmup_rows=make_table(5, text=True))
    with pytest.raises(ValueError, match="warmup_rows"):
        export_serving(m.model, m.schema, tmp_path, warmup_rows=make_table(5, text=True).iloc[:0])
    with pytest.raises(DataError, match="city"):
        export_serving(m.model, m.schema, tmp_path, warmup_rows=make_table(5, text=True).drop(columns="city"))
    assert not (tmp_path / "model").exists()

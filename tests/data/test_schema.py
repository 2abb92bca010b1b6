"""infer_task, infer_schema, schema_table and prepare_target."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import autodl.data
import autodl.data.io
import autodl.data.schema
import autodl.data.split
from autodl.data import ColumnSpec, Schema, infer_schema, infer_task, prepare_target, schema_table
from autodl.errors import DataError

N = 200
WORDS = np.array("the quick brown fox jumps over a lazy dog while cats sleep in warm sun".split())


@pytest.fixture(scope="module")
def mixed() -> pd.DataFrame:
    """One column of every kind, N rows."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "num": rng.normal(size=N).round(3),
            "city": rng.choice(["paris", "lyon", "nice"], N),
            "rooms": rng.integers(1, 6, N),
            "income": rng.integers(0, 100_000, N),
            "review": [" ".join(rng.choice(WORDS, 7)) for _ in range(N)],
            "day": (pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 900, N), unit="D")).strftime(
                "%Y-%m-%d"
            ),
            "stamp": pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 10**6, N), unit="s"),
            "row": np.arange(N) + 100,
            "customer_id": rng.permutation(N),
            "code": [f"C{i:06d}" for i in rng.permutation(N)],
            "const": "same",
            "empty": np.nan,
            "flag": rng.random(N) > 0.5,
            "month": rng.choice(["jan", "feb", "mar", "apr"], N),
            "band": rng.choice(["10-20", "20-30", "30-40"], N),
            "amount": [f"{v:.2f}" for v in rng.normal(100, 10, N)],
            "y": rng.choice(["no", "yes"], N),
        }
    )
    df.loc[::10, "num"] = np.nan
    return df


@pytest.fixture(scope="module")
def mixed_schema(mixed) -> Schema:
    return infer_schema(mixed, "y")


# --- infer_task ---------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        (["no", "yes"] * 20, "binary"),
        ([0, 1] * 20, "binary"),
        ([0.0, 1.0, np.nan] * 20, "binary"),  # ints read back as float because of a NaN
        ([True, False] * 5, "binary"),
        ([-1, 1] * 20, "binary"),
        (["a", "b", "c"] * 10, "multiclass"),
        ([1, 2, 3] * 10, "multiclass"),
        (list(range(20)) * 10, "multiclass"),  # 20 values, 10 rows each
        (list(range(21)) * 10, "regression"),  # too many distinct integers
        ([1, 2, 3] * 3, "regression"),  # 3 values but too few repeats to be classes
        (np.linspace(0, 1, 50).tolist(), "regression"),
        ([0.5, 1.5, 2.5] * 20, "regression"),  # few values, but fractional
    ],
)
def test_infer_task(values, expected):
    assert infer_task(pd.Series(values, name="y")) == expected


def test_task_override():
    assert infer_task(pd.Series([1, 2, 3] * 3), "multiclass") == "multiclass"
    assert infer_task(pd.Series([0, 1] * 20), "regression") == "regression"
    assert infer_task(pd.Series(["1.5", "2", "3.25"]), "regression") == "regression"
    assert infer_task(pd.Series([0.5, 1.5] * 5), "binary") == "binary"


@pytest.mark.parametrize(
    "values, task, needle",
    [
        (["low", "high", "12"], "regression", "'low'"),
        ([np.nan, np.nan, np.nan], None, "all missing"),
        ([None, None], "regression", "all missing"),
        (["a", "a", None, "a"], None, "single value 'a'; a model needs at least two classes"),
        ([1, 2, 3], "binary", "exactly 2"),
        ([1, 2], "classification", "binary, multiclass, regression"),
    ],
)
def test_infer_task_errors(one_line, values, task, needle):
    with pytest.raises(DataError) as excinfo:
        infer_task(pd.Series(values, name="y"), task)
    assert needle in one_line(excinfo)


# --- column kinds ------------------------------------------------------------


@pytest.mark.parametrize(
    "column, kind, storage",
    [
        ("num", "numeric", "float"),
        ("city", "categorical", "string"),
        ("rooms", "categorical", "int"),
        ("income", "numeric", "float"),
        ("review", "text", "string"),
        ("day", "datetime", "datetime"),
        ("stamp", "datetime", "datetime"),
        ("row", "drop", "float"),
        ("customer_id", "drop", "float"),
        ("code", "drop", "string"),
        ("const", "drop", "string"),
        ("empty", "drop", "float"),
        ("flag", "categorical", "string"),
        ("month", "categorical", "string"),  # "jan" parses as a date, but has no year
        ("band", "categorical", "string"),  # "10-20" parses as Oct 20, but is a band
        ("amount", "numeric", "float"),  # numbers stored as text
    ],
)
def test_column_kinds(mixed_schema, column, kind, storage):
    spec = {c.name: c for c in mixed_schema.columns}[column]
    assert (spec.kind, spec.storage) == (kind, storage), spec.reason


def test_columns_in_order_without_target(mixed, mixed_schema):
    assert [c.name for c in mixed_schema.columns] == [c for c in mixed.columns if c != "y"]
    assert mixed_schema.task == "binary" and mixed_schema.classes == ["no", "yes"]


def test_column_statistics_and_reasons(mixed_schema):
    by_name = {c.name: c for c in mixed_schema.columns}
    assert by_name["num"].missing_fraction == pytest.approx(0.1)
    assert by_name["empty"].missing_fraction == 1.0 and by_name["empty"].reason == "dropped: all values missing"
    assert by_name["rooms"].n_unique == 5 and by_name["rooms"].reason == "5 distinct integers"
    assert by_name["const"].reason.startswith("dropped: constant")
    assert by_name["row"].reason == "dropped: id-like: unique per row"
    assert by_name["city"].n_unique == 3 and by_name["city"].missing_fraction == 0.0


def test_integer_cardinality_threshold():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"k": rng.permutation(np.arange(100) % 12), "y": [0, 1] * 50})
    assert infer_schema(df, "y").columns[0].kind == "numeric"
    spec = infer_schema(df, "y", max_categories_int=12).columns[0]
    assert (spec.kind, spec.storage) == ("categorical", "int")


def test_float_column_holding_integers_and_nan_is_an_integer_column():
    df = pd.DataFrame({"k": [1.0, 2.0, np.nan, 3.0] * 10, "y": [0, 1] * 20})
    spec = infer_schema(df, "y").columns[0]
    assert (spec.kind, spec.storage) == ("categorical", "int")


def test_unique_random_integers_are_not_ids():
    # All distinct but neither ordered, a range, nor named like an id: a real measurement.
    values = np.random.default_rng(2).choice(10**6, size=N, replace=False)
    df = pd.DataFrame({"area": values, "y": [0, 1] * (N // 2)})
    assert infer_schema(df, "y").columns[0].kind == "numeric"


def test_unique_strings_are_ids_only_with_enough_rows_or_an_id_name():
    few = pd.DataFrame(
        {"name": [f"n{i}" for i in range(20)], "user_id": [f"u{i}" for i in range(20)], "y": [0, 1] * 10}
    )
    kinds = {c.name: c.kind for c in infer_schema(few, "y").columns}
    assert kinds == {"name": "categorical", "user_id": "drop"}


def test_short_repeated_phrases_are_categories_not_text():
    df = pd.DataFrame({"job": ["data scientist at a big firm", "nurse in a small local clinic"] * 30, "y": [0, 1] * 30})
    assert infer_schema(df, "y").columns[0].kind == "categorical"


def test_drop_by_user(mixed):
    schema = infer_schema(mixed, "y", drop=["num", "city"])
    by_name = {c.name: c for c in schema.columns}
    assert by_name["num"].kind == by_name["city"].kind == "drop"
    assert by_name["num"].reason == "dropped by user"
    assert "num" not in [c.name for c in schema.features]


def test_missing_target_rows_are_counted():
    df = pd.DataFrame({"x": np.arange(30) * 0.5, "y": ["a", "b", None] * 10})
    schema = infer_schema(df, "y")
    assert schema.dropped_target_rows == 10
    assert any("10" in note for note in schema.notes)
    assert schema.classes == ["a", "b"]


def test_classes_are_plain_json_scalars():
    df = pd.DataFrame({"x": np.linspace(0, 1, 30), "y": np.array([2.0, 0.0, np.nan] * 10)})
    schema = infer_schema(df, "y")
    assert schema.task == "binary"
    assert schema.classes == [0, 2] and all(type(c) is int for c in schema.classes)
    restored = Schema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert restored == schema

    numpy_ints = pd.DataFrame({"x": np.linspace(0, 1, 30), "y": np.array([3, 1, 2] * 10, dtype=np.int32)})
    classes = infer_schema(numpy_ints, "y").classes
    assert classes == [1, 2, 3] and all(type(c) is int for c in classes)


def test_regression_has_no_classes():
    df = pd.DataFrame({"x": np.arange(40) % 3, "y": np.linspace(0, 1, 40)})
    schema = infer_schema(df, "y")
    assert schema.task == "regression" and schema.classes is None


# --- infer_schema errors -----------------------------------------------------------


def test_target_typo_suggests_the_close_name(one_line):
    df = pd.DataFrame({"age": [1.5, 2.5], "income": ["a", "b"], **{f"c{i}": [0, 1] for i in range(20)}})
    with pytest.raises(DataError) as excinfo:
        infer_schema(df, "incme")
    message = one_line(excinfo)
    assert message.startswith("target 'incme' is not a column; did you mean 'income'?")
    assert "(columns: age, income" in message and "in all)" in message  # the long list is truncated


def test_target_case_mismatch_is_suggested(one_line):
    with pytest.raises(DataError) as excinfo:
        infer_schema(pd.DataFrame({"Income": ["a", "b"], "x": [1.5, 2.5]}), "income")
    assert "did you mean 'Income'?" in one_line(excinfo)


@pytest.mark.parametrize(
    "weights, needle",
    [
        ([1.0, -1.0] * 10, "must be finite and >= 0"),
        ([1.0, np.nan] * 10, "missing in 10 rows"),
        (["a", "b"] * 10, "must be numeric"),
        ([0.0, 0.0] * 10, "all zeros"),
    ],
)
def test_bad_weight_column(one_line, weights, needle):
    df = pd.DataFrame({"x": np.linspace(0, 1, 20), "w": weights, "y": [0, 1] * 10})
    with pytest.raises(DataError) as excinfo:
        infer_schema(df, "y", weight_column="w")
    assert needle in one_line(excinfo)


def test_weight_column(one_line):
    df = pd.DataFrame({"x": np.linspace(0, 1, 20), "weight": [1, 2] * 10, "y": [0, 1] * 10})
    schema = infer_schema(df, "y", weight_column="weight")
    assert schema.weight_column == "weight" and [c.name for c in schema.columns] == ["x"]
    with pytest.raises(DataError) as excinfo:
        infer_schema(df, "y", weight_column="weigth")
    assert "did you mean 'weight'?" in one_line(excinfo)


def test_bad_drop_columns(one_line):
    df = pd.DataFrame({"x": np.linspace(0, 1, 20), "z": 1.5, "y": [0, 1] * 10})
    with pytest.raises(DataError) as excinfo:
        infer_schema(df, "y", drop=["xx"])
    assert "did you mean 'x'?" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        infer_schema(df, "y", drop=["y"])
    assert "it is the target" in one_line(excinfo)


def test_no_usable_feature_left(one_line):
    df = pd.DataFrame({"const": 1, "empty": np.nan, "y": [0, 1] * 10})
    with pytest.raises(DataError) as excinfo:
        infer_schema(df, "y")
    message = one_line(excinfo)
    assert "no usable feature columns" in message and "const: dropped: constant" in message


# --- schema_table ----------------------------------------------------------------


def test_schema_table_renders_every_column(mixed_schema):
    console = Console(record=True, width=200)
    console.print(schema_table(mixed_schema))
    out = console.export_text()
    assert "target 'y': binary (2 classes)" in out and "classes: no, yes" in out
    for spec in mixed_schema.columns:
        assert spec.name in out
    assert "id-like" in out and "10.0" in out  # reason and missing % of 'num'


def test_schema_table_escapes_markup():
    schema = Schema("y", "regression", [ColumnSpec("[bold]x", "numeric", "float", 3, 0.0, "real-valued")])
    console = Console(record=True, width=120)
    console.print(schema_table(schema))
    assert "[bold]x" in console.export_text()


# --- prepare_target --------------------------------------------------------------


def binary_schema(classes):
    return Schema("y", "binary", [ColumnSpec("x", "numeric", "float", 2, 0.0)], classes=classes)


def test_prepare_target_strings():
    out = prepare_target(pd.Series(["yes", "no", "no"]), binary_schema(["no", "yes"]))
    assert out.dtype == np.int64 and out.tolist() == [1, 0, 0]


@pytest.mark.parametrize(
    "values",
    [[1, 0, 1], [1.0, 0.0, 1.0], ["1", "0", "1"], np.array([1, 0, 1], dtype=np.uint8), [True, False, True]],
)
def test_prepare_target_matches_across_dtypes(values):
    assert prepare_target(pd.Series(values), binary_schema([0, 1])).tolist() == [1, 0, 1]


def test_prepare_target_unknown_label(one_line):
    with pytest.raises(DataError) as excinfo:
        prepare_target(pd.Series(["no", "maybe"]), binary_schema(["no", "yes"]))
    assert "'maybe'" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        prepare_target(pd.Series([0.0, 0.5]), binary_schema([0, 1]))
    assert "0.5" in one_line(excinfo)


def test_prepare_target_missing_label(one_line):
    with pytest.raises(DataError) as excinfo:
        prepare_target(pd.Series(["no", None]), binary_schema(["no", "yes"]))
    assert "missing in 1 rows" in one_line(excinfo)


def test_prepare_target_regression(one_line):
    schema = Schema("y", "regression", [ColumnSpec("x", "numeric", "float", 2, 0.0)])
    out = prepare_target(pd.Series([1, 2.5, "3"], dtype=object), schema)
    assert out.dtype == np.float32 and out.tolist() == [1.0, 2.5, 3.0]
    with pytest.raises(DataError) as excinfo:
        prepare_target(pd.Series(["1.5", "lots"]), schema)
    assert "'lots'" in one_line(excinfo)
    with pytest.raises(DataError) as excinfo:
        prepare_target(pd.Series([1.0, np.inf]), schema)
    assert "infinite" in one_line(excinfo)


def test_prepare_target_round_trip_from_schema(mixed, mixed_schema):
    y = prepare_target(mixed["y"], mixed_schema)
    assert (np.array(mixed_schema.classes)[y] == mixed["y"].to_numpy()).all()


# --- module hygiene -------------------------------------------------------------------


@pytest.mark.parametrize("module", [autodl.data, autodl.data.io, autodl.data.schema, autodl.data.split])
def test_docstring_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_data_layer_does_not_import_tensorflow():
    code = "import sys, autodl.data; sys.exit(any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

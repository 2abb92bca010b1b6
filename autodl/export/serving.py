"""TF Serving export: a SavedModel whose ``serving_default`` signature takes raw columns by name.

A client of TF Serving sends JSON, not a DataFrame, so the conversions that
``autodl.features.frame.to_model_inputs`` does in pandas happen inside the
exported graph instead. Each feature column is one signature input, shape
``[None]`` (one value per row):

- float numeric columns: ``float32``, ``NaN`` for missing;
- integer columns (``int`` storage): ``float64``, because JSON numbers are
  floats; rounded to int64 in the graph, ``NaN`` → ``INT_MISSING``;
- string columns (categorical or text): ``string``, stripped in the graph;
  ``""`` for missing;
- datetime columns: ``string``, ISO-8601 ``YYYY-MM-DD`` with optional
  ``[T ]hh:mm[:ss[.fff]]`` and UTC offset (``Z``, ``+hh``, ``+hhmm``,
  ``+hh:mm``); no offset means UTC. Anything else, and ``""``, is missing.

Outputs: classifiers ``probabilities`` (``float32 [None, n_classes]``, in
``schema.classes`` order) and ``label`` (``string [None]``, the most likely
class); regressors ``value`` (``float32 [None]``).

Signature input keys are the column names when they are ASCII identifiers
(see ``signature_key``); TF renames other keyword arguments itself, so autodl
picks the sanitized key and reports the mapping in ``ServingExport.input_keys``
and in the request example.

Files written for ``export_serving(model, schema, out, name="autodl", version=1, ...)``::

    out/autodl/1/saved_model.pb, variables/      the SavedModel TF Serving loads
    out/autodl/1/assets.extra/tf_serving_warmup_requests
                                                 PredictionLog records replayed at load
    out/autodl/1/assets.extra/request_example.json
                                                 a REST body for POST /v1/models/autodl:predict

The request example lives inside the version directory because its keys
belong to that version's signature, and it then moves with the version when
the caller renames the directory into place. TF Serving ignores
``assets.extra`` except for the warmup file.

Example:

>>> signature_key("age"), signature_key("prix (€)"), signature_key("2024 sales")
('age', 'prix', 'col_2024_sales')
"""

from __future__ import annotations

import json
import keyword
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from autodl.data.schema import ColumnSpec, Schema
from autodl.features.frame import INT_MISSING, as_strings, to_epoch_seconds, to_model_inputs

SIGNATURE = "serving_default"
WARMUP_FILE = "tf_serving_warmup_requests"
REQUEST_EXAMPLE_FILE = "request_example.json"
# TF Serving replays every warmup record at load: a few batch sizes warm the
# kernels without slowing the load down.
MAX_WARMUP_RECORDS = 10
REQUEST_EXAMPLE_ROWS = 3

_SIGNATURE_DTYPES = {"float": tf.float32, "int": tf.float64, "string": tf.string, "datetime": tf.string}
# A key must survive both TF's keyword-argument renaming (a Python identifier,
# letter first) and the SavedModel op-name rule ([A-Za-z0-9.][A-Za-z0-9_.\-/]*).
_VALID_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Python keywords are not parameter names, and a signature called from Python
# binds "self" to the function itself.
_RESERVED_KEYS = frozenset(keyword.kwlist) | {"self"}
_DEFAULT_KEY = "col"

# The largest float64 below 2**63: casting anything larger to int64 is undefined.
_INT64_MAX_FLOAT = float(np.nextafter(np.float64(2.0**63), 0))

# ISO-8601 date, optional time, optional UTC offset; groups: year, month, day,
# hour, minute, seconds (with fraction), offset. Lenient where pandas is
# (1-digit month, day and hour; lower-case t and z; a space before the offset).
_DATETIME_RE = (
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ](\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d{1,9})?))?"
    r" ?([Zz]|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_PLACEHOLDER_DATE = "1970-01-01"
_DAYS_IN_MONTH = (31.0, 28.0, 31.0, 30.0, 31.0, 30.0, 31.0, 31.0, 30.0, 31.0, 30.0, 31.0)


@dataclass
class ServingExport:
    """What ``export_serving`` wrote: paths, and the signature a client must match."""

    path: Path  # out_dir/NAME/VERSION
    signature_inputs: dict[str, str]  # signature key -> dtype ("float32", "float64", "string")
    signature_outputs: dict[str, str]  # output name -> dtype
    request_example: Path  # out_dir/NAME/VERSION/assets.extra/request_example.json
    warmup_records: int
    input_keys: dict[str, str] = field(default_factory=dict)  # column name -> signature key


def signature_key(column: str) -> str:
    """A signature input key for a column: the name itself when it is an ASCII identifier.

    Otherwise accents are dropped, runs of other characters become ``_``
    (trimmed at the ends), and ``col_`` goes in front of a key that would not
    start with a letter or would be a Python keyword. Distinct columns can share a key; ``signature_keys``
    makes them unique.

    >>> [signature_key(c) for c in ["rooms", "Prénom", "total ($)", "_id", "class", "日本"]]
    ['rooms', 'Prenom', 'total', 'id', 'col_class', 'col']
    """
    if _VALID_KEY.fullmatch(column) and column not in _RESERVED_KEYS:
        return column
    ascii_name = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode("ascii")
    key = re.sub(r"[^A-Za-z0-9]+", "_", ascii_name).strip("_")
    if not key:
        return _DEFAULT_KEY
    if not key[0].isalpha() or key in _RESERVED_KEYS:
        key = f"{_DEFAULT_KEY}_{key}"
    return key


def signature_keys(schema: Schema) -> dict[str, str]:
    """Column name → unique signature key, in feature order; clashes get ``_2``, ``_3``...

    Columns whose names are already valid keys keep them, so renaming never
    takes a name a client already uses.

    >>> from autodl.data.schema import ColumnSpec, Schema
    >>> cols = [ColumnSpec(n, "numeric", "float", 3, 0.0) for n in ["a b", "a_b", "a-b"]]
    >>> signature_keys(Schema("y", "regression", cols))
    {'a b': 'a_b_2', 'a_b': 'a_b', 'a-b': 'a_b_3'}
    """
    columns = [c.name for c in schema.features]
    keys = {c: c for c in columns if signature_key(c) == c}
    taken = set(keys.values())
    for column in columns:
        if column in keys:
            continue
        base = key = signature_key(column)
        n = 1
        while key in taken:
            n += 1
            key = f"{base}_{n}"
        keys[column] = key
        taken.add(key)
    return {c: keys[c] for c in columns}


def serving_inputs(df: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """Raw rows → the arrays ``serving_default`` takes, keyed by signature key.

    Goes through ``to_model_inputs``'s own conversions, so the exported graph
    sees what the Keras model sees: float32 numbers, float64 integer columns
    (``NaN`` missing), stripped strings, datetimes as ISO strings in UTC
    (``""`` missing).

    >>> from autodl.data.schema import ColumnSpec, Schema
    >>> schema = Schema("y", "binary", [ColumnSpec("day", "datetime", "datetime", 2, 0.0),
    ...                                 ColumnSpec("n rooms", "categorical", "int", 3, 0.0)])
    >>> x = serving_inputs(pd.DataFrame({"day": ["2024-03-05 14:30", None], "n rooms": [2, None]}), schema)
    >>> x["day"].tolist(), x["n_rooms"].tolist()
    (['2024-03-05T14:30:00', ''], [2.0, nan])
    """
    to_model_inputs(df.iloc[:0], schema)  # a DataError naming any missing column
    keys = signature_keys(schema)
    return {keys[c.name]: _serving_column(df[c.name], c) for c in schema.features}


def export_serving(
    model: keras.Model,
    schema: Schema,
    out_dir: str | Path,
    *,
    name: str = "model",
    version: int = 1,
    warmup_rows: pd.DataFrame,
) -> ServingExport:
    """Writes ``out_dir/name/version`` for TF Serving, with warmup requests and a REST example.

    ``out_dir/name/version`` must not exist (the caller handles overwriting
    and atomic replacement); parent directories are created. ``warmup_rows``
    are raw rows holding every feature column: the first
    ``MAX_WARMUP_RECORDS`` become warmup requests of 1, 2, ... rows, and up to
    ``REQUEST_EXAMPLE_ROWS`` of them, complete rows first, the request example.

    Example (``run`` a fitted run directory):

    >>> from autodl.api import AutoModel                      # doctest: +SKIP
    >>> m = AutoModel.load(run)                               # doctest: +SKIP
    >>> rows = pd.read_csv("data.csv").head(10)               # doctest: +SKIP
    >>> export_serving(m.model, m.schema, "export", name="autodl", warmup_rows=rows).path  # doctest: +SKIP
    PosixPath('export/autodl/1')
    """
    if warmup_rows.empty:
        raise ValueError("warmup_rows is empty; pass a few raw rows of the training data")
    if version < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's version directories), got {version}")
    path = Path(out_dir) / name / str(int(version))
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    # Converting the rows first: a missing column fails before anything is written.
    rows = warmup_rows.reset_index(drop=True)
    warmup = serving_inputs(rows.head(MAX_WARMUP_RECORDS), schema)
    example_body = request_body(serving_inputs(_example_rows(rows, schema), schema))
    path.parent.mkdir(parents=True, exist_ok=True)

    keys = signature_keys(schema)
    module = _ServingModule(model, schema, keys)
    concrete = module.serve.get_concrete_function(
        **{keys[c.name]: tf.TensorSpec([None], _SIGNATURE_DTYPES[c.storage], name=keys[c.name]) for c in schema.features}
    )
    tf.saved_model.save(module, str(path), signatures={SIGNATURE: concrete})

    extra = path / "assets.extra"
    extra.mkdir()
    n_warmup = _write_warmup(extra / WARMUP_FILE, warmup, name)
    example = extra / REQUEST_EXAMPLE_FILE
    example.write_text(_dump_request(example_body), encoding="utf-8")

    outputs = {k: v.dtype.name for k, v in concrete.structured_outputs.items()}
    return ServingExport(
        path=path,
        signature_inputs={keys[c.name]: _SIGNATURE_DTYPES[c.storage].name for c in schema.features},
        signature_outputs=dict(sorted(outputs.items())),
        request_example=example,
        warmup_records=n_warmup,
        input_keys=keys,
    )


def request_body(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The REST ``:predict`` body, columnar format, for ``serving_inputs`` arrays.

    Missing numbers become the bare JSON literal ``NaN``: TF Serving parses it
    (RapidJSON with ``kParseNanAndInfFlag``) while ``null`` is a type error.

    >>> request_body({"x": np.array([1.5, np.nan], dtype="float32"), "city": np.array(["lyon", ""], dtype=object)})
    {'signature_name': 'serving_default', 'inputs': {'x': [1.5, nan], 'city': ['lyon', '']}}
    """
    return {"signature_name": SIGNATURE, "inputs": {k: _json_values(a) for k, a in inputs.items()}}


def parse_datetime(strings: tf.Tensor) -> tf.Tensor:
    """ISO-8601 strings → float64 epoch seconds (UTC), NaN where missing or invalid; graph ops only.

    Matches ``to_epoch_seconds`` (pandas) on the accepted formats, including
    rejecting impossible dates (February 30th, hour 24); other formats are missing.

    >>> parse_datetime(tf.constant(["1970-01-02", "1970-01-01T01:00+01:00", "2023-02-29", ""])).numpy().tolist()
    [86400.0, 0.0, nan, nan]
    """
    s = tf.strings.strip(tf.convert_to_tensor(strings, tf.string))
    valid = tf.strings.regex_full_match(s, _DATETIME_RE)
    # to_number fails the whole batch on one bad field: parse a known-good
    # placeholder in place of invalid strings, and blank those rows afterwards.
    s = tf.where(valid, s, _PLACEHOLDER_DATE)

    def group(i: int) -> tf.Tensor:
        return tf.strings.regex_replace(s, _DATETIME_RE, f"\\{i}")

    def number(text: tf.Tensor) -> tf.Tensor:
        return tf.strings.to_number(tf.where(text == "", "0", text), tf.float64)

    year, month, day = number(group(1)), number(group(2)), number(group(3))
    hour, minute, second = number(group(4)), number(group(5)), number(group(6))
    # Offsets: "" and "Z" are UTC; "+hh", "+hhmm", "+hh:mm" become "+hhmm".
    offset = tf.strings.regex_replace(group(7), ":", "")
    offset = tf.where((offset == "") | (offset == "Z") | (offset == "z"), "+0000", offset)
    offset = tf.where(tf.strings.length(offset) == 3, offset + "00", offset)
    sign = tf.where(tf.strings.substr(offset, 0, 1) == "-", tf.constant(-1.0, tf.float64), tf.constant(1.0, tf.float64))
    offset_hours, offset_minutes = number(tf.strings.substr(offset, 1, 2)), number(tf.strings.substr(offset, 3, 2))

    def divides(n: float) -> tf.Tensor:
        return tf.math.floormod(year, n) == 0.0

    leap = divides(4.0) & (~divides(100.0) | divides(400.0))
    month_index = tf.cast(tf.clip_by_value(month, 1.0, 12.0), tf.int32) - 1
    month_days = tf.gather(tf.constant(_DAYS_IN_MONTH, tf.float64), month_index)
    month_days = month_days + tf.cast(leap & (month == 2.0), tf.float64)
    valid &= (month >= 1.0) & (month <= 12.0) & (day >= 1.0) & (day <= month_days)
    valid &= (hour <= 23.0) & (minute <= 59.0) & (second < 60.0) & (offset_hours <= 23.0) & (offset_minutes <= 59.0)

    seconds = _days_from_civil(year, month, day) * 86400.0 + hour * 3600.0 + minute * 60.0 + second
    seconds -= sign * (offset_hours * 3600.0 + offset_minutes * 60.0)
    return tf.where(valid, seconds, tf.constant(np.nan, tf.float64))


class _ServingModule(tf.Module):
    """Holds the Keras model (its variables and lookup tables get saved) and the serving function."""

    def __init__(self, model: keras.Model, schema: Schema, keys: dict[str, str]) -> None:
        super().__init__(name="autodl_serving")
        self.model = model
        columns = [(c, keys[c.name]) for c in schema.features]
        task = schema.task
        labels = [_label(c) for c in (schema.classes or [])]
        threshold = schema.threshold if len(labels) == 2 else None  # the run's binary decision threshold

        # A closure, not a method: a column named like a method argument
        # would otherwise clash with it.
        @tf.function(autograph=False)
        def serve(**inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            x = {col.name: _to_model_input(inputs[key], col) for col, key in columns}
            out = tf.cast(self.model(x, training=False), tf.float32)
            if task == "regression":
                return {"value": tf.reshape(out, [-1])}
            index = tf.argmax(out, axis=1) if threshold is None else tf.cast(out[:, 1] >= threshold, tf.int64)
            return {
                "probabilities": out,
                "label": tf.gather(tf.constant(labels, tf.string), index),
            }

        self.serve = serve


def _to_model_input(value: tf.Tensor, col: ColumnSpec) -> tf.Tensor:
    """One signature input → the dtype and representation ``to_model_inputs`` gives the model."""
    if col.storage == "float":
        return value
    if col.storage == "int":
        missing = tf.math.is_nan(value)
        # tf.round rounds half to even, like numpy's round in convert_column.
        rounded = tf.clip_by_value(tf.round(tf.where(missing, tf.zeros_like(value), value)), -(2.0**63), _INT64_MAX_FLOAT)
        return tf.where(missing, tf.constant(INT_MISSING, tf.int64), tf.cast(rounded, tf.int64))
    if col.storage == "datetime":
        return parse_datetime(value)
    return tf.strings.strip(value)


def _days_from_civil(year: tf.Tensor, month: tf.Tensor, day: tf.Tensor) -> tf.Tensor:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant), exact in float64."""
    y = year - tf.cast(month <= 2.0, tf.float64)
    era = tf.floor(y / 400.0)
    yoe = y - era * 400.0
    mp = tf.where(month > 2.0, month - 3.0, month + 9.0)
    doy = tf.floor((153.0 * mp + 2.0) / 5.0) + day - 1.0
    doe = yoe * 365.0 + tf.floor(yoe / 4.0) - tf.floor(yoe / 100.0) + doy
    return era * 146097.0 + doe - 719468.0


def _serving_column(s: pd.Series, col: ColumnSpec) -> np.ndarray:
    if col.storage == "float":
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    if col.storage == "int":
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if col.storage == "datetime":
        return _iso_strings(to_epoch_seconds(s))
    return as_strings(s)


def _iso_strings(seconds: np.ndarray) -> np.ndarray:
    """Epoch seconds → ISO strings the graph parses back to the same seconds (to the microsecond)."""
    out = np.full(len(seconds), "", dtype=object)
    ok = ~np.isnan(seconds)
    # numpy rather than datetime or Timestamp: pandas accepts year 0, which neither holds.
    stamps = np.datetime_as_string(np.round(seconds[ok] * 1e6).astype(np.int64).astype("datetime64[us]"), unit="us")
    out[ok] = [t[:10] if t.endswith("T00:00:00.000000") else t.removesuffix(".000000") for t in stamps]
    return out


def _example_rows(rows: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Complete rows first, so the example is plain JSON whenever the data allows."""
    columns = [c.name for c in schema.features]
    complete = rows[columns].notna().all(axis=1).to_numpy()
    order = np.concatenate([np.flatnonzero(complete), np.flatnonzero(~complete)])
    return rows.iloc[order[:REQUEST_EXAMPLE_ROWS]]


def _write_warmup(path: Path, inputs: dict[str, np.ndarray], name: str) -> int:
    """Record k holds the first k rows: warmup then covers several batch sizes."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    n = len(next(iter(inputs.values())))
    with tf.io.TFRecordWriter(str(path)) as writer:
        for k in range(1, n + 1):
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name=SIGNATURE))
            for key, values in inputs.items():
                dtype = tf.string if values.dtype == object else tf.as_dtype(values.dtype)
                request.inputs[key].CopyFrom(tf.make_tensor_proto(values[:k], dtype=dtype))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return n


def _label(value: Any) -> str:
    """A class label as a string: 1.0 → "1", like the labels clients see elsewhere."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _dump_request(body: dict[str, Any]) -> str:
    """One input per line, its values on that line: reads like the table it came from."""
    lines = [f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in body["inputs"].items()]
    head = f'{{\n  "signature_name": {json.dumps(body["signature_name"])},\n  "inputs": {{\n'
    return head + ",\n".join(lines) + "\n  }\n}\n"


def _json_values(values: np.ndarray) -> list[Any]:
    if values.dtype == np.float32:
        # Shortest digits that round-trip in float32 (0.3, not 0.30000001192092896);
        # kept floats, since TF Serving rejects JSON integers above 2**24 for float32.
        return [float(str(v)) for v in values]
    if values.dtype == np.float64:
        # Integer columns: whole numbers read as integers, and float64 holds them exactly up to 2**53.
        return [int(v) if np.isfinite(v) and float(v).is_integer() and abs(v) < 2**53 else float(v) for v in values]
    return values.tolist()

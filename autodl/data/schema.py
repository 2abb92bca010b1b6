"""Schema: what each column is, and what task the target defines.

``infer_schema`` looks at a DataFrame and decides, for every column, one kind:

- ``numeric``: real-valued (and high-cardinality integer) columns;
- ``categorical``: strings, booleans, and low-cardinality integers;
- ``text``: long free strings (many distinct values, several words each);
- ``datetime``: parseable dates and times (expanded into parts in the model);
- ``drop``: constant, all-missing, or id-like columns, with the reason logged.

Example:

>>> import pandas as pd
>>> df = pd.DataFrame({"age": [25.5, 32.0, 47.25, 51.0] * 10, "city": list("abcd") * 10,
...                    "y": ["no", "yes"] * 20})
>>> schema = infer_schema(df, target="y")
>>> schema.task, schema.classes, [c.kind for c in schema.features]
('binary', ['no', 'yes'], ['numeric', 'categorical'])
>>> prepare_target(df["y"], schema)[:4].tolist()
[0, 1, 0, 1]

Rules a caller should know:

- Target task (``infer_task``): non-numeric or boolean targets are
  classification (binary with 2 values); floats with a fractional part are
  regression; integer-valued targets are binary with 2 values, multiclass with
  3 to 20 values and on average at least 10 rows per value, regression
  otherwise (like AutoGluon, which calls integers with few distinct values
  relative to the rows multiclass).
- Integer-valued feature columns with at most ``max_categories_int`` distinct
  values are categorical (stored as int); more distinct values are numeric,
  unless they are id-like (all distinct and a range, monotonic, or named like
  an id), which is dropped.
- String columns whose values (>= 95%) parse as numbers are treated as
  numbers; strings are datetime when >= 90% of a sample parse as dates and
  carry a 4-digit year or an ``hh:mm`` time (so ``"Jan"`` or ``"10-20"`` stay
  categorical).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
from rich.table import Table

from autodl.errors import DataError

ColumnKind = Literal["numeric", "categorical", "text", "datetime", "drop"]
Task = Literal["binary", "multiclass", "regression"]
# How a column reaches the model: float32, int64 (integer categoricals),
# tf.string, or datetime (epoch seconds as float64).
Storage = Literal["float", "int", "string", "datetime"]

TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")


@dataclass
class ColumnSpec:
    name: str
    kind: ColumnKind
    storage: Storage
    n_unique: int
    missing_fraction: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Schema:
    target: str
    task: Task
    columns: list[ColumnSpec]
    classes: list[Any] | None = None
    weight_column: str | None = None
    dropped_target_rows: int = 0
    notes: list[str] = field(default_factory=list)
    # Binary targets: the second class is predicted where its probability reaches this
    # (chosen on held-out rows for the run's metric; autodl.decision). None: argmax.
    threshold: float | None = None

    @property
    def features(self) -> list[ColumnSpec]:
        """Columns the model takes as inputs (everything not dropped)."""
        return [c for c in self.columns if c.kind != "drop"]

    @property
    def dropped(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.kind == "drop"]

    @property
    def is_classification(self) -> bool:
        return self.task != "regression"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "task": self.task,
            "columns": [c.to_dict() for c in self.columns],
            "classes": self.classes,
            "weight_column": self.weight_column,
            "dropped_target_rows": self.dropped_target_rows,
            "notes": list(self.notes),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Schema":
        return cls(
            target=d["target"],
            task=d["task"],
            columns=[ColumnSpec(**c) for c in d["columns"]],
            classes=d.get("classes"),
            weight_column=d.get("weight_column"),
            dropped_target_rows=d.get("dropped_target_rows", 0),
            notes=list(d.get("notes", [])),
            threshold=d.get("threshold"),
        )


# Integer-valued targets with 3..MAX_INT_CLASSES distinct values are
# multiclass when each value has, on average, MIN_ROWS_PER_CLASS rows;
# fewer repeats look like a count or a measurement (regression).
MAX_INT_CLASSES = 20
MIN_ROWS_PER_CLASS = 10
NUMERIC_TEXT_MIN_FRACTION = 0.95
DATETIME_MIN_FRACTION = 0.9
TEXT_MIN_TOKENS = 4.0
TEXT_MIN_CHARS = 30.0
TEXT_MIN_DISTINCT_RATIO = 0.3
# All-distinct strings are ids rather than categories only once there are
# enough rows for "all distinct" to mean something.
ID_MIN_ROWS = 50
# String heuristics look at a sample so wide, long tables stay fast.
SAMPLE_ROWS = 10_000
DATETIME_SAMPLE_ROWS = 500
# Beyond 2**53 a float64 no longer holds every integer exactly.
_MAX_EXACT_INT = 2.0**53

_ID_NAME = re.compile(
    r"(^|[_\s.\-])(id|uuid|guid|index|idx)$|^unnamed: ?\d+$|^(row|record)_?(id|num|number|no)$", re.IGNORECASE
)
_CAMEL_ID = re.compile(r"[a-z0-9](Id|ID|Uuid|UUID)$")
# A date has a 4-digit year or an hh:mm time; without one, "Jan" or "10-20"
# (which dateutil happily parses) are categories, not dates.
_DATE_SHAPE = r"\d{4}|\d{1,2}:\d{2}"
_PURE_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def infer_task(y: pd.Series, task: str | None = None) -> Task:
    """The task a target defines; ``task`` (binary, multiclass, regression) overrides the inference.

    Missing values are ignored. Raises ``DataError`` for an all-missing or
    single-valued target, an unknown ``task``, ``task="binary"`` with other
    than 2 values, and ``task="regression"`` with non-numeric values.

    >>> infer_task(pd.Series([0, 1, 1, 0])), infer_task(pd.Series([0.5, 1.5, 2.0]))
    ('binary', 'regression')
    """
    name = y.name
    if task is not None and task not in TASKS:
        raise DataError(f"task {task!r} is not one of {', '.join(TASKS)}; pick one or leave it out to infer it")
    values = _present(y)
    if len(values) == 0:
        raise DataError(f"target '{name}' has no values (all missing); pick another target column")
    n_distinct = _nunique(values)
    if n_distinct < 2:
        need = "two distinct values" if task == "regression" else "two classes"
        raise DataError(
            f"target '{name}' has a single value {_show(values.iloc[0])}; a model needs at least {need}"
        )
    if task == "regression":
        _as_numbers(values, str(name))
        return "regression"
    if task == "binary" and n_distinct != 2:
        raise DataError(
            f"task 'binary' needs exactly 2 target values but '{name}' has {n_distinct}; use task 'multiclass'"
        )
    if task is not None:
        return task  # type: ignore[return-value]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return "binary" if n_distinct == 2 else "multiclass"
    if not _integer_valued(values):
        return "regression"
    if n_distinct == 2:
        return "binary"
    if n_distinct <= MAX_INT_CLASSES and len(values) >= MIN_ROWS_PER_CLASS * n_distinct:
        return "multiclass"
    return "regression"


def infer_schema(
    df: pd.DataFrame,
    target: str,
    *,
    task: str | None = None,
    weight_column: str | None = None,
    drop: Iterable[str] | None = (),
    max_categories_int: int = 10,
) -> Schema:
    """Infers the task, the classes and one ``ColumnSpec`` per column (except target and weights).

    Rows with a missing target are counted in ``dropped_target_rows`` (the
    caller leaves them out of training). Raises ``DataError`` for unknown
    target/weight/drop columns (suggesting close names), bad weights, a target
    no model can learn, or when no usable feature column is left.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError("data has no rows; pass a table with at least one row per class")
    bad_names = [c for c in df.columns if not isinstance(c, str)]
    if bad_names:
        raise DataError(
            f"column names must be strings, found {bad_names[0]!r}; rename them (df.columns = df.columns.astype(str))"
        )
    dupes = sorted(name for name, count in Counter(df.columns).items() if count > 1)
    if dupes:
        raise DataError(f"duplicate column names {', '.join(map(repr, dupes[:5]))}; rename them to be unique")
    if isinstance(max_categories_int, bool) or not isinstance(max_categories_int, int) or max_categories_int < 0:
        raise DataError(f"max_categories_int must be a non-negative integer, got {max_categories_int!r}")
    drop = (drop,) if isinstance(drop, str) else tuple(drop or ())

    if target not in df.columns:
        raise _not_a_column("target", target, df.columns)
    if weight_column is not None:
        _check_weights(df, weight_column, target)
    for name in drop:
        if name not in df.columns:
            raise _not_a_column("column to drop", name, df.columns)
        if name in (target, weight_column):
            role = "target" if name == target else "weight column"
            raise DataError(f"cannot drop '{name}': it is the {role}; remove it from the columns to drop")

    y = df[target]
    resolved = infer_task(y, task)
    notes: list[str] = []
    n_missing = int(y.isna().sum())
    if n_missing:
        notes.append(f"{n_missing} of {len(y)} rows have no target value and are left out")
    classes = _classes(_present(y)) if resolved != "regression" else None

    columns: list[ColumnSpec] = []
    for name in df.columns:
        if name in (target, weight_column):
            continue
        if name in drop:
            columns.append(_spec(df[name], "drop", _storage_of(df[name]), "dropped by user"))
        else:
            columns.append(_infer_column(df[name], max_categories_int))
    if not any(c.kind != "drop" for c in columns):
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in columns[:5]) or "no columns besides the target"
        raise DataError(f"no usable feature columns left ({reasons}); check the data and the columns to drop")
    return Schema(
        target=target,
        task=resolved,
        columns=columns,
        classes=classes,
        weight_column=weight_column,
        dropped_target_rows=n_missing,
        notes=notes,
    )


def schema_table(schema: Schema) -> Table:
    """A rich table of the inferred columns, with task and classes in the title and caption."""
    from rich.markup import escape

    title = f"target '{escape(schema.target)}': {schema.task}"
    if schema.classes is not None:
        title += f" ({len(schema.classes)} classes)"
    caption: list[str] = []
    if schema.classes is not None:
        shown = ", ".join(escape(str(c)) for c in schema.classes[:10])
        more = f", ... ({len(schema.classes)} in all)" if len(schema.classes) > 10 else ""
        caption.append(f"classes: {shown}{more}")
    if schema.weight_column:
        caption.append(f"sample weights: '{escape(schema.weight_column)}'")
    caption.extend(escape(n) for n in schema.notes)
    table = Table(title=title, caption="\n".join(caption) or None)
    table.add_column("column")
    table.add_column("kind")
    table.add_column("storage")
    table.add_column("distinct", justify="right")
    table.add_column("missing %", justify="right")
    table.add_column("note")
    for c in schema.columns:
        table.add_row(
            escape(c.name),
            c.kind,
            c.storage,
            str(c.n_unique),
            f"{100 * c.missing_fraction:.1f}",
            escape(c.reason),
            style="dim" if c.kind == "drop" else None,
        )
    return table


def prepare_target(y: pd.Series, schema: Schema) -> np.ndarray:
    """The model's target: int64 indices into ``schema.classes``, or float32 for regression.

    Labels are matched leniently across dtypes (``1.0`` and ``"1"`` match
    class ``1``), since a test file may be read with another dtype than the
    training file. Raises ``DataError`` for missing targets (drop those rows
    first), unknown labels, or non-numeric regression targets.
    """
    y = y if isinstance(y, pd.Series) else pd.Series(y, name=schema.target)
    name = schema.target
    n_missing = int(y.isna().sum())
    if n_missing:
        raise DataError(f"target '{name}' is missing in {n_missing} rows; drop those rows first")
    if not schema.is_classification:
        numbers = _as_numbers(y, name).to_numpy(dtype=np.float64)
        finite = np.isfinite(numbers)
        if not finite.all():
            raise DataError(
                f"target '{name}' has {int((~finite).sum())} infinite values such as {numbers[~finite][0]!r}; "
                "remove or cap those rows"
            )
        return numbers.astype(np.float32)
    classes = schema.classes or []
    if len(classes) < 2:
        raise DataError(f"the schema of target '{name}' lists {len(classes)} classes; re-infer the schema")
    exact = {_plain(c): i for i, c in enumerate(classes)}
    loose: dict[str, int] = {}
    ambiguous: set[str] = set()
    for i, c in enumerate(classes):
        key = _loose(c)
        if key in loose:
            ambiguous.add(key)
        loose[key] = i
    for key in ambiguous:
        del loose[key]

    codes, uniques = pd.factorize(y)
    lookup = np.empty(len(uniques), dtype=np.int64)
    for j, value in enumerate(uniques):
        plain = _plain(value)
        index = exact.get(plain)
        if index is None:
            index = loose.get(_loose(value))
        if index is None:
            shown = ", ".join(repr(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise DataError(
                f"target '{name}' has value {_show(plain)} that is not a known class ({shown}); "
                "remove those rows or retrain with them"
            )
        lookup[j] = index
    return lookup[codes]


# --- helpers ---------------------------------------------------------------


def _present(s: pd.Series) -> pd.Series:
    values = s.dropna()
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype)
    if pd.api.types.is_object_dtype(values.dtype):
        values = values.infer_objects()
    return values


def _nunique(values: pd.Series) -> int:
    try:
        return int(values.nunique())
    except TypeError:  # unhashable cells (lists, dicts) from a hand-built DataFrame
        return int(values.astype(str).nunique())


def _integer_valued(values: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return False
    if pd.api.types.is_integer_dtype(values):
        return True
    array = values.to_numpy(dtype=np.float64, na_value=np.nan)
    array = array[~np.isnan(array)]
    return bool(np.all(np.abs(array) < _MAX_EXACT_INT) and np.all(array == np.round(array)))


def _as_numbers(values: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_complex_dtype(values):
        return values.astype(np.float64)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values[numbers.isna() & values.notna()]
    if len(bad):
        raise DataError(
            f"regression needs a numeric target but '{name}' has values such as {_show(bad.iloc[0])}; "
            "fix them or use a classification task"
        )
    return numbers.astype(np.float64)


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar: numpy types unwrapped, integer-valued floats as int."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < _MAX_EXACT_INT else value
    if isinstance(value, str):
        return value
    return str(value)


def _loose(value: Any) -> str:
    """A key under which ``1``, ``1.0`` and ``" 1"`` agree."""
    text = str(_plain(value)).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if number != number:  # NaN never matches a class
        return text
    return str(int(number)) if number.is_integer() and abs(number) < _MAX_EXACT_INT else repr(number)


def _classes(values: pd.Series) -> list[Any]:
    plain = list(dict.fromkeys(_plain(v) for v in pd.unique(values)))
    try:
        return sorted(plain)
    except TypeError:  # mixed types in an object column
        return sorted(plain, key=lambda v: (type(v).__name__, str(v)))


def _show(value: Any) -> str:
    text = repr(_plain(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _not_a_column(what: str, name: object, columns: Iterable[object]) -> DataError:
    names = [str(c) for c in columns]
    close = [c for c in names if c.lower() == str(name).lower()]
    close += [c for c in difflib.get_close_matches(str(name), names, n=3, cutoff=0.6) if c not in close]
    hint = f"; did you mean {' or '.join(repr(c) for c in close[:3])}?" if close else ""
    listing = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    return DataError(f"{what} {str(name)!r} is not a column{hint} (columns: {listing})")


def _check_weights(df: pd.DataFrame, weight_column: str, target: str) -> None:
    if weight_column not in df.columns:
        raise _not_a_column("weight column", weight_column, df.columns)
    if weight_column == target:
        raise DataError(f"weight column '{weight_column}' is the target; pick a different weight column")
    w = df[weight_column]
    if pd.api.types.is_bool_dtype(w) or not pd.api.types.is_numeric_dtype(w):
        example = _show(w.dropna().iloc[0]) if w.notna().any() else "missing"
        raise DataError(f"weight column '{weight_column}' must be numeric, found {example}; fix it or drop the weights")
    n_missing = int(w.isna().sum())
    if n_missing:
        raise DataError(f"weight column '{weight_column}' is missing in {n_missing} rows; fill them (e.g. with 1)")
    values = w.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or (values < 0).any():
        bad = values[~np.isfinite(values) | (values < 0)][0]
        raise DataError(f"weight column '{weight_column}' has value {bad!r}; weights must be finite and >= 0")
    if values.sum() <= 0:
        raise DataError(f"weight column '{weight_column}' is all zeros; give some rows positive weight")


def _spec(s: pd.Series, kind: ColumnKind, storage: Storage, reason: str, n_unique: int | None = None) -> ColumnSpec:
    n = len(s)
    missing = float(s.isna().sum() / n) if n else 1.0
    if n_unique is None:
        n_unique = _nunique(s.dropna())
    return ColumnSpec(str(s.name), kind, storage, int(n_unique), round(missing, 6), reason)


def _storage_of(s: pd.Series) -> Storage:
    if pd.api.types.is_datetime64_any_dtype(s):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        return "float"
    return "string"


def _id_name(name: str) -> bool:
    return bool(_ID_NAME.search(name.strip()) or _CAMEL_ID.search(name.strip()))


def _infer_column(s: pd.Series, max_categories_int: int) -> ColumnSpec:
    values = _present(s)
    if len(values) == 0:
        return _spec(s, "drop", _storage_of(s), "dropped: all values missing", 0)
    n_unique = _nunique(values)
    if n_unique <= 1:
        return _spec(s, "drop", _storage_of(s), f"dropped: constant ({_show(values.iloc[0])})", n_unique)
    if pd.api.types.is_bool_dtype(values):
        return _spec(s, "categorical", "string", "boolean", n_unique)
    if pd.api.types.is_datetime64_any_dtype(values):
        return _spec(s, "datetime", "datetime", "datetime type", n_unique)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_complex_dtype(values):
        return _numeric_spec(s, values, n_unique, max_categories_int)
    if pd.api.types.is_string_dtype(values) or pd.api.types.is_object_dtype(values):
        return _string_spec(s, values.astype(str), n_unique, max_categories_int)
    reason = f"dropped: unsupported type {s.dtype}; convert it to numbers or strings"
    return _spec(s, "drop", "string", reason, n_unique)


def _numeric_spec(
    s: pd.Series, values: pd.Series, n_unique: int, max_categories_int: int, note: str = ""
) -> ColumnSpec:
    if n_unique <= 1:
        return _spec(s, "drop", "float", f"dropped: constant{note}", n_unique)
    if not _integer_valued(values):
        return _spec(s, "numeric", "float", f"real-valued{note}", n_unique)
    if n_unique <= max_categories_int:
        return _spec(s, "categorical", "int", f"{n_unique} distinct integers{note}", n_unique)
    if n_unique == len(values):
        is_range = float(values.max()) - float(values.min()) + 1 == len(values)
        ordered = values.is_monotonic_increasing or values.is_monotonic_decreasing
        if is_range or ordered or _id_name(str(s.name)):
            return _spec(s, "drop", "float", "dropped: id-like: unique per row", n_unique)
    return _spec(s, "numeric", "float", f"{n_unique} distinct integers{note}", n_unique)


def _string_spec(s: pd.Series, text: pd.Series, n_unique: int, max_categories_int: int) -> ColumnSpec:
    sample = text.sample(SAMPLE_ROWS, random_state=0) if len(text) > SAMPLE_ROWS else text
    if pd.to_numeric(sample, errors="coerce").notna().mean() >= NUMERIC_TEXT_MIN_FRACTION:
        numbers = pd.to_numeric(text, errors="coerce")
        fraction = float(numbers.notna().mean())
        if fraction >= NUMERIC_TEXT_MIN_FRACTION:
            numbers = numbers.dropna()
            unparseable = "" if fraction == 1 else f", {100 * (1 - fraction):.1f}% unparseable"
            note = f" (numbers stored as text{unparseable})"
            return _numeric_spec(s, numbers, _nunique(numbers), max_categories_int, note)

    if _looks_like_dates(sample):
        return _spec(s, "datetime", "datetime", "parses as dates", n_unique)

    all_distinct = n_unique == len(text)
    if all_distinct and not text.str.contains(r"\s", regex=True).any():
        if _id_name(str(s.name)) or len(text) >= ID_MIN_ROWS:
            return _spec(s, "drop", "string", "dropped: id-like: unique per row", n_unique)

    tokens = float(sample.str.split().str.len().mean())
    chars = float(sample.str.len().mean())
    if (tokens >= TEXT_MIN_TOKENS or chars >= TEXT_MIN_CHARS) and n_unique / len(text) >= TEXT_MIN_DISTINCT_RATIO:
        return _spec(s, "text", "string", f"free text, {tokens:.1f} words on average", n_unique)
    return _spec(s, "categorical", "string", f"{n_unique} distinct strings", n_unique)


def _looks_like_dates(sample: pd.Series) -> bool:
    shaped = sample.str.contains(_DATE_SHAPE) & ~sample.str.strip().str.fullmatch(_PURE_NUMBER)
    if shaped.mean() < DATETIME_MIN_FRACTION:
        return False  # cheap pre-check: most string columns stop here
    head = sample.iloc[:DATETIME_SAMPLE_ROWS]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(head, errors="coerce", utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError):
        return False
    ok = parsed.notna() & shaped.loc[head.index]
    return bool(ok.mean() >= DATETIME_MIN_FRACTION)

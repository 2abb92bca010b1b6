"""The model boundary: a DataFrame of raw columns → one numpy array per model input.

This is the only place where raw values change representation: numbers become
float32 (NaN kept, imputed inside the model), string-like columns become
Python ``str`` (fed as ``tf.string``), integer categoricals int64, datetimes
epoch seconds (float64). The same function serves fit, predict and evaluate.

Example:

>>> import pandas as pd
>>> from autodl.data.schema import ColumnSpec, Schema
>>> schema = Schema("y", "binary", [ColumnSpec("x", "numeric", "float", 3, 0.0)])
>>> to_model_inputs(pd.DataFrame({"x": [1, None, 3]}), schema)["x"].tolist()
[1.0, nan, 3.0]
"""

from __future__ import annotations

import difflib

import numpy as np
import pandas as pd

from autodl.data.schema import ColumnSpec, Schema
from autodl.errors import DataError

# Missing integer categoricals must miss the vocabulary, landing in the OOV bucket.
INT_MISSING = np.iinfo(np.int64).min


def to_model_inputs(df: pd.DataFrame, schema: Schema) -> dict[str, np.ndarray]:
    """Converts the feature columns of ``df``; raises a DataError naming any missing column."""
    missing = [c.name for c in schema.features if c.name not in df.columns]
    if missing:
        hint = ""
        close = difflib.get_close_matches(missing[0], [str(c) for c in df.columns], n=1)
        if close:
            hint = f" (found '{close[0]}': was it renamed?)"
        raise DataError(
            f"input is missing column{'s' if len(missing) > 1 else ''} {', '.join(repr(m) for m in missing)} "
            f"that the model was trained on{hint}; add {'them' if len(missing) > 1 else 'it'} (missing values are allowed)"
        )
    return {c.name: convert_column(df[c.name], c) for c in schema.features}


def convert_column(s: pd.Series, col: ColumnSpec) -> np.ndarray:
    if col.storage == "float":
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan)
    if col.storage == "int":
        values = pd.to_numeric(s, errors="coerce")
        return values.fillna(INT_MISSING).to_numpy(dtype=np.float64).round().astype(np.int64)
    if col.storage == "datetime":
        return to_epoch_seconds(s)
    return as_strings(s)


def as_strings(s: pd.Series) -> np.ndarray:
    """Strings as the model's lookup tables saw them: missing → "", 3.0 → "3"."""
    if pd.api.types.is_bool_dtype(s):
        out = s.astype("object").map(lambda v: "" if pd.isna(v) else str(bool(v)))
    elif pd.api.types.is_numeric_dtype(s):
        out = s.map(_number_to_str)
    else:
        out = s.map(lambda v: "" if is_missing(v) else str(v).strip())
    return out.to_numpy(dtype=object)


def to_epoch_seconds(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(s):
        parsed = s if getattr(s.dt, "tz", None) is not None else s.dt.tz_localize("UTC")
    else:
        parsed = pd.to_datetime(s, errors="coerce", utc=True, format="mixed")
    parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    seconds = (parsed - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.float64, na_value=np.nan)


def is_missing(v: object) -> bool:
    """pandas' notion of missing for one value (NaN, None, NaT, pd.NA); False for list-like values."""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _number_to_str(v: object) -> str:
    if is_missing(v):
        return ""
    f = float(v)  # type: ignore[arg-type]
    return str(int(f)) if f.is_integer() else str(v)


class ModelData:
    """Model inputs with their targets and sample weights, sliceable by row positions.

    Example:

    >>> import numpy as np
    >>> data = ModelData({"x": np.arange(4.0)}, np.array([0, 1, 0, 1]))
    >>> len(data.take(np.array([0, 2])))
    2
    """

    def __init__(
        self,
        x: dict[str, np.ndarray],
        y: np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
        score_weight: np.ndarray | None = None,
    ) -> None:
        self.x = x
        self.y = y
        # Training weights (class balancing times the user's weight column) and the weights
        # metrics count rows with (the user's column only): a model trained for balanced
        # classes is still scored on the rows as they come, so selection and the summary
        # report the metric the user asked for.
        self.sample_weight = sample_weight
        self.score_weight = score_weight

    def __len__(self) -> int:
        return len(next(iter(self.x.values()))) if self.x else (0 if self.y is None else len(self.y))

    def take(self, rows: np.ndarray) -> "ModelData":
        return ModelData(
            {k: v[rows] for k, v in self.x.items()},
            None if self.y is None else self.y[rows],
            None if self.sample_weight is None else self.sample_weight[rows],
            None if self.score_weight is None else self.score_weight[rows],
        )

    @staticmethod
    def concat(parts: list["ModelData"]) -> "ModelData":
        first = parts[0]
        return ModelData(
            {k: np.concatenate([p.x[k] for p in parts]) for k in first.x},
            None if first.y is None else np.concatenate([p.y for p in parts]),  # type: ignore[misc]
            None if first.sample_weight is None else np.concatenate([p.sample_weight for p in parts]),  # type: ignore[misc]
            None if first.score_weight is None else np.concatenate([p.score_weight for p in parts]),  # type: ignore[misc]
        )

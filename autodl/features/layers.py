"""Preprocessing layers that live inside every autodl model.

They turn raw columns into model-ready numbers with statistics fixed at build
time (computed on the training split), so a saved model takes raw values and
needs no separate preprocessing step. All computation uses ``keras.ops``
arithmetic, which converts to TFLite builtin ops.

Example:

>>> import numpy as np
>>> layer = ImputeMissing(fill_values=[1.0, 2.0])
>>> layer(np.array([[np.nan, 5.0]], dtype="float32")).tolist()
[[1.0, 5.0]]
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

_SECONDS_PER_DAY = 86400.0


@keras.saving.register_keras_serializable(package="autodl")
class ImputeMissing(keras.layers.Layer):
    """Replaces NaN in ``(batch, n)`` inputs with one fill value per column."""

    def __init__(self, fill_values: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill_values = [float(v) for v in fill_values]

    def call(self, x: Any) -> Any:
        fill = ops.convert_to_tensor(np.asarray(self.fill_values, dtype="float32"))
        x = ops.cast(x, "float32")
        return ops.where(ops.isnan(x), ops.broadcast_to(fill, ops.shape(x)), x)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_values": self.fill_values}


@keras.saving.register_keras_serializable(package="autodl")
class MissingIndicator(keras.layers.Layer):
    """1.0 where the selected columns of ``(batch, n)`` are NaN, else 0.0: ``(batch, len(columns))``."""

    def __init__(self, columns: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.columns = [int(c) for c in columns]

    def call(self, x: Any) -> Any:
        picked = ops.take(ops.cast(x, "float32"), self.columns, axis=1)
        return ops.cast(ops.isnan(picked), "float32")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], len(self.columns))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "columns": self.columns}


@keras.saving.register_keras_serializable(package="autodl")
class QuantileTransform(keras.layers.Layer):
    """Maps each column through its training quantiles to a roughly uniform, unit-variance scale.

    With K+1 quantiles ``q_0..q_K`` per column, ``u(x) = mean_i clip((x - q_i) / (q_{i+1} - q_i), 0, 1)``
    is the piecewise-linear empirical CDF; the output is ``(u - 0.5) * sqrt(12)``.
    Written as clipped ramps (no sorting or searching) so it converts to TFLite builtins.
    Like scikit-learn's QuantileTransformer, it makes skewed features (counts,
    money) as easy for a network as well-behaved ones.
    """

    def __init__(self, quantiles: Sequence[Sequence[float]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quantiles = [[float(v) for v in q] for q in quantiles]
        q = np.asarray(self.quantiles, dtype="float64")  # (n, K+1)
        width = np.diff(q, axis=1)
        # A zero-width segment (repeated quantile) becomes a step at that value.
        self._lo = q[:, :-1].astype("float32")
        self._inv_width = (1.0 / np.maximum(width, 1e-6)).astype("float32")

    def call(self, x: Any) -> Any:
        x = ops.expand_dims(ops.cast(x, "float32"), -1)  # (batch, n, 1)
        ramps = ops.clip((x - self._lo) * self._inv_width, 0.0, 1.0)
        u = ops.mean(ramps, axis=-1)
        return (u - 0.5) * np.float32(np.sqrt(12.0))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "quantiles": self.quantiles}


@keras.saving.register_keras_serializable(package="autodl")
class DateTimeParts(keras.layers.Layer):
    """Expands epoch seconds ``(batch,)`` into ``(batch, 5)``: year, month, day, weekday (Mon=0), hour.

    Uses the days-to-civil algorithm (H. Hinnant) in float arithmetic, so the
    parts match pandas' ``dt`` accessors for UTC times. NaN stays NaN.
    """

    PARTS = ("year", "month", "day", "weekday", "hour")

    def __init__(self, **kwargs: Any) -> None:
        # float32 seconds are only exact to ~2 minutes today; compute in float64.
        kwargs.setdefault("dtype", "float64")
        super().__init__(**kwargs)

    def call(self, seconds: Any) -> Any:
        s = ops.cast(seconds, "float64")
        days = ops.floor(s / _SECONDS_PER_DAY)
        hour = ops.floor((s - days * _SECONDS_PER_DAY) / 3600.0)
        weekday = _mod(days + 3.0, 7.0)  # 1970-01-01 was a Thursday (Mon=0 → Thu=3)
        z = days + 719468.0
        era = ops.floor(z / 146097.0)
        doe = z - era * 146097.0
        yoe = ops.floor((doe - ops.floor(doe / 1460.0) + ops.floor(doe / 36524.0) - ops.floor(doe / 146096.0)) / 365.0)
        doy = doe - (365.0 * yoe + ops.floor(yoe / 4.0) - ops.floor(yoe / 100.0))
        mp = ops.floor((5.0 * doy + 2.0) / 153.0)
        day = doy - ops.floor((153.0 * mp + 2.0) / 5.0) + 1.0
        month = ops.where(mp < 10.0, mp + 3.0, mp - 9.0)
        year = yoe + era * 400.0 + ops.cast(month <= 2.0, "float64")
        parts = ops.stack([year, month, day, weekday, hour], axis=-1)
        return ops.cast(parts, "float32")

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], len(self.PARTS))


def _mod(a: Any, b: float) -> Any:
    return a - ops.floor(a / b) * b

"""Keras 3 layers used by the zoo's tabular and text architectures.

Every layer computes with ``keras.ops`` only (no string ops, no Python
callbacks, weights of static shape), is registered for safe ``.keras``
loading under the ``autodl`` package, and round-trips through
``get_config`` / ``from_config``.

Example:

>>> import numpy as np
>>> from autodl.zoo.layers import CLSToken, NumericTokenizer
>>> tokens = NumericTokenizer(8)(np.zeros((2, 3), "float32"))
>>> tuple(CLSToken(8)(tokens).shape)
(2, 4, 8)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
from keras import ops

__all__ = [
    "CLSToken",
    "CategoricalTokenizer",
    "NumericTokenizer",
    "PeriodicEmbedding",
    "PositionEmbedding",
    "ReGLU",
    "TakeFirstToken",
]


def _uniform(d: int) -> keras.initializers.Initializer:
    """``U(-1/sqrt(d), 1/sqrt(d))``: the rtdl initialization of tokens and embeddings."""
    bound = 1.0 / math.sqrt(d)
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable(package="autodl")
class NumericTokenizer(keras.layers.Layer):
    """Per-feature linear tokens of the FT-Transformer: ``token_j = x_j * W_j + b_j``.

    Input ``(batch, n)`` float, output ``(batch, n, d_token)``. Each feature has
    its own weight vector and bias (Gorishniy et al. 2021, arXiv:2106.11959).

    Example:

    >>> import numpy as np
    >>> layer = NumericTokenizer(4)
    >>> tuple(layer(np.ones((2, 3), "float32")).shape)
    (2, 3, 4)
    """

    def __init__(self, d_token: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if d_token < 1:
            raise ValueError(f"d_token must be positive, got {d_token}")
        self.d_token = int(d_token)

    def build(self, input_shape: Sequence[int | None]) -> None:
        n = input_shape[-1]
        if n is None:
            raise ValueError("NumericTokenizer needs a static number of features")
        self.weight = self.add_weight(name="weight", shape=(n, self.d_token), initializer=_uniform(self.d_token))
        self.bias = self.add_weight(name="bias", shape=(n, self.d_token), initializer=_uniform(self.d_token))

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        return ops.expand_dims(x, -1) * self.weight + self.bias

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (*input_shape, self.d_token)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "d_token": self.d_token}


@keras.saving.register_keras_serializable(package="autodl")
class CategoricalTokenizer(keras.layers.Layer):
    """One token per categorical column: ``token_j = E_j[x_j] + b_j``.

    Takes a list of ``(batch,)`` (or ``(batch, 1)``) integer tensors, one per
    column with values in ``[0, cardinality_j)``, and returns
    ``(batch, n_columns, d_token)``. All columns share one embedding table
    (rows offset per column), so the lookup is a single gather.

    Example:

    >>> import numpy as np
    >>> layer = CategoricalTokenizer([3, 5], 4)
    >>> tuple(layer([np.array([0, 2]), np.array([4, 1])]).shape)
    (2, 2, 4)
    """

    def __init__(self, cardinalities: Sequence[int], d_token: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cardinalities = [int(c) for c in cardinalities]
        if not self.cardinalities or min(self.cardinalities) < 1:
            raise ValueError(f"cardinalities must be non-empty and positive, got {cardinalities}")
        self.d_token = int(d_token)
        offsets, total = [], 0
        for c in self.cardinalities:
            offsets.append(total)
            total += c
        self._offsets = offsets
        self._total = total

    def build(self, input_shape: Any) -> None:
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self._total, self.d_token), initializer=_uniform(self.d_token)
        )
        self.bias = self.add_weight(
            name="bias", shape=(len(self.cardinalities), self.d_token), initializer=_uniform(self.d_token)
        )

    def call(self, inputs: Sequence[Any]) -> Any:
        if len(inputs) != len(self.cardinalities):
            raise ValueError(f"expected {len(self.cardinalities)} categorical inputs, got {len(inputs)}")
        columns = [ops.reshape(ops.cast(x, "int32"), (-1,)) for x in inputs]
        index = ops.stack(columns, axis=1) + ops.convert_to_tensor(self._offsets, dtype="int32")
        return ops.take(self.embeddings, index, axis=0) + self.bias

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (input_shape[0][0], len(self.cardinalities), self.d_token)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "cardinalities": list(self.cardinalities), "d_token": self.d_token}


@keras.saving.register_keras_serializable(package="autodl")
class CLSToken(keras.layers.Layer):
    """Prepends a learned ``[CLS]`` token: ``(batch, n, d) -> (batch, n + 1, d)``.

    Example:

    >>> import numpy as np
    >>> tuple(CLSToken(4)(np.zeros((3, 2, 4), "float32")).shape)
    (3, 3, 4)
    """

    def __init__(self, d_token: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.d_token = int(d_token)

    def build(self, input_shape: Sequence[int | None]) -> None:
        if input_shape[-1] != self.d_token:
            raise ValueError(f"CLSToken({self.d_token}) got tokens of size {input_shape[-1]}")
        self.token = self.add_weight(name="token", shape=(self.d_token,), initializer=_uniform(self.d_token))

    def call(self, inputs: Any) -> Any:
        batch = ops.shape(inputs)[0]
        cls = ops.broadcast_to(ops.reshape(self.token, (1, 1, self.d_token)), (batch, 1, self.d_token))
        return ops.concatenate([ops.cast(cls, inputs.dtype), inputs], axis=1)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        n = input_shape[1]
        return (input_shape[0], None if n is None else n + 1, self.d_token)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "d_token": self.d_token}


@keras.saving.register_keras_serializable(package="autodl")
class TakeFirstToken(keras.layers.Layer):
    """The first token of a sequence: ``(batch, n, d) -> (batch, d)``, or ``(batch, 1, d)`` with ``keepdims``.

    Example:

    >>> import numpy as np
    >>> tuple(TakeFirstToken()(np.zeros((3, 5, 4), "float32")).shape)
    (3, 4)
    """

    def __init__(self, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keepdims = bool(keepdims)

    def call(self, inputs: Any) -> Any:
        return inputs[:, :1, :] if self.keepdims else inputs[:, 0, :]

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        if self.keepdims:
            return (input_shape[0], 1, input_shape[-1])
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "keepdims": self.keepdims}


@keras.saving.register_keras_serializable(package="autodl")
class ReGLU(keras.layers.Layer):
    """ReLU-gated linear unit: splits the last axis in halves ``a, b`` and returns ``a * relu(b)``.

    Used in the FT-Transformer feed-forward block (Shazeer 2020, arXiv:2002.05202).

    Example:

    >>> import numpy as np
    >>> ReGLU()(np.array([[2.0, 3.0, -1.0, 1.0]], "float32")).numpy().tolist()
    [[0.0, 3.0]]
    """

    def call(self, inputs: Any) -> Any:
        a, b = ops.split(inputs, 2, axis=-1)
        return a * ops.relu(b)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        last = input_shape[-1]
        return (*input_shape[:-1], None if last is None else last // 2)

    def build(self, input_shape: Sequence[int | None]) -> None:
        if input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(f"ReGLU needs an even last dimension, got {input_shape[-1]}")


@keras.saving.register_keras_serializable(package="autodl")
class PeriodicEmbedding(keras.layers.Layer):
    """PLR embeddings of numeric features (Gorishniy et al. 2022, arXiv:2203.05556).

    For each feature ``j``: ``v = 2π c_j x_j`` with trainable frequencies
    ``c_j ∈ R^k`` initialized from ``N(0, sigma²)``, then ``[cos v, sin v]``
    (size ``2k``), then a linear map to ``d_embedding`` and a ReLU. The linear
    map is per feature (weights ``(n, 2k, d)``) unless ``lite=True``, which
    shares one ``(2k, d)`` map across features ("PLR-lite").

    Input ``(batch, n)``, output ``(batch, n, d_embedding)``.

    Example:

    >>> import numpy as np
    >>> layer = PeriodicEmbedding(n_frequencies=8, sigma=0.1, d_embedding=6)
    >>> tuple(layer(np.zeros((2, 3), "float32")).shape)
    (2, 3, 6)
    """

    def __init__(
        self, n_frequencies: int, sigma: float, d_embedding: int, lite: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if n_frequencies < 1 or d_embedding < 1 or sigma <= 0:
            raise ValueError("n_frequencies and d_embedding must be positive integers and sigma > 0")
        self.n_frequencies = int(n_frequencies)
        self.sigma = float(sigma)
        self.d_embedding = int(d_embedding)
        self.lite = bool(lite)

    def build(self, input_shape: Sequence[int | None]) -> None:
        n = input_shape[-1]
        if n is None:
            raise ValueError("PeriodicEmbedding needs a static number of features")
        k, d = self.n_frequencies, self.d_embedding
        self.frequencies = self.add_weight(
            name="frequencies",
            shape=(n, k),
            initializer=keras.initializers.RandomNormal(stddev=self.sigma),
        )
        kernel_shape = (2 * k, d) if self.lite else (n, 2 * k, d)
        bias_shape = (d,) if self.lite else (n, d)
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape, initializer=_uniform(2 * k))
        self.bias = self.add_weight(name="bias", shape=bias_shape, initializer=_uniform(2 * k))

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        v = (2.0 * math.pi) * ops.expand_dims(x, -1) * self.frequencies  # (batch, n, k)
        periodic = ops.concatenate([ops.cos(v), ops.sin(v)], axis=-1)  # (batch, n, 2k)
        if self.lite:
            out = ops.matmul(periodic, self.kernel)
        else:
            out = ops.einsum("bnf,nfd->bnd", periodic, self.kernel)
        return ops.relu(out + self.bias)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (*input_shape, self.d_embedding)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_frequencies": self.n_frequencies,
            "sigma": self.sigma,
            "d_embedding": self.d_embedding,
            "lite": self.lite,
        }


@keras.saving.register_keras_serializable(package="autodl")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position: ``(batch, length, d) -> (batch, length, d)``.

    Self-attention ignores order; this tells each token where it is. ``length`` is
    fixed (the texts are padded or truncated to it), so the table has a static shape.

    Example:

    >>> import numpy as np
    >>> tuple(PositionEmbedding(5, 4)(np.zeros((2, 5, 4), "float32")).shape)
    (2, 5, 4)
    """

    def __init__(self, length: int, d: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.length = int(length)
        self.d = int(d)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.positions = self.add_weight(
            shape=(self.length, self.d), initializer=keras.initializers.RandomNormal(stddev=0.02), name="positions"
        )

    def call(self, inputs: Any) -> Any:
        return inputs + ops.expand_dims(self.positions, 0)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "length": self.length, "d": self.d}

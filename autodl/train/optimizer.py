"""The optimizer autodl trains with: Keras AdamW, minus a TensorFlow memory leak.

Outside a distribution strategy, Keras's TensorFlow optimizer still all-reduces dense
gradients through the default replica context; on TF 2.21 that keeps a few MiB of
graph state alive per trained model, so a long search grows steadily. With a single
replica the all-reduce is the identity, so ``AutoAdamW`` skips it there and defers
to Keras inside a real strategy (e.g. ``MirroredStrategy``).

Example:

>>> opt = AutoAdamW(learning_rate=1e-3, weight_decay=1e-5)
>>> type(opt).__name__, float(opt.learning_rate)
('AutoAdamW', 0.001)
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="autodl")
class AutoAdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` that skips the no-op all-reduce on a single replica."""

    def _all_reduce_sum_gradients(self, grads_and_vars: Any) -> Any:
        if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return super()._all_reduce_sum_gradients(grads_and_vars)
        return list(grads_and_vars)

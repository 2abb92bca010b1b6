"""What to build: one keras-tuner HyperModel over the registered tabular zoo entries.

The HyperModel chooses the architecture (and, inside a conditional scope, that
architecture's own hyperparameters from its zoo builder), the encoder of any
text columns (a zoo text entry, with its own hyperparameters likewise), the
numeric transform, and the training recipe's optimizer settings and batch size.
A table of text columns only is one model: the text encoder, then the
architecture as its head; text beside other columns is one branch of the model.

Example:

>>> import keras_tuner as kt, numpy as np
>>> from autodl.data.schema import ColumnSpec, Schema
>>> from autodl.features import fit_stats
>>> schema = Schema("y", "binary", [ColumnSpec("x", "numeric", "float", 9, 0.0)], classes=[0, 1])
>>> stats = fit_stats({"x": np.arange(9, dtype="float32")}, schema)
>>> model = TabularHyperModel(schema, stats, n_train_rows=9).build(kt.HyperParameters())
>>> model.output.shape
(None, 2)
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import keras_tuner as kt

from autodl import zoo
from autodl.data.schema import Schema
from autodl.features import NUMERIC_TRANSFORMS, FeatureStats, build_inputs
from autodl.features.frame import ModelData
from autodl.recipes import tabular as recipe

BATCH_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512)


def default_batch_size(n_rows: int) -> int:
    """Roughly 50+ steps per epoch on small data, 256 on medium and large tables."""
    for size in (256, 128, 64):
        if n_rows >= size * 40:
            return size
    return 32


def output_head(representation: Any, schema: Schema, *, kernel_regularizer: Any = None) -> Any:
    """The task head: class probabilities, or the value on the target's own scale."""
    if schema.task == "regression":
        return keras.layers.Dense(1, kernel_regularizer=kernel_regularizer, name="value")(representation)
    return keras.layers.Dense(len(schema.classes or []), activation="softmax", kernel_regularizer=kernel_regularizer,
                              name="proba")(representation)


class TabularHyperModel(kt.HyperModel):
    """Search space over zoo architectures and the training recipe for one table."""

    def __init__(
        self,
        schema: Schema,
        stats: FeatureStats,
        *,
        n_train_rows: int,
        architectures: Sequence[str] | None = None,
        text_models: Sequence[str] | None = None,
        metric: str = "accuracy",
        patience: int = 8,
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__(name="autodl_tabular")
        self.schema = schema
        self.stats = stats
        self.n_train_rows = n_train_rows
        self.architectures = list(architectures or [e.card.name for e in zoo.list_entries("tabular") if e.default_search])
        # Text columns get one encoder per trial, chosen among these (none without text columns).
        has_text = any(c.kind == "text" for c in schema.features)
        self.text_models = list(text_models or [e.card.name for e in zoo.list_entries("text")]) if has_text else []
        self.metric = metric
        self.patience = patience
        # Regression heads learn a standardized target; Rescaling maps back to the user's units.
        self.target_mean = target_mean
        self.target_std = target_std

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        architecture = hp.Choice("architecture", self.architectures, default=self.architectures[0])
        transform = hp.Choice("numeric_transform", list(NUMERIC_TRANSFORMS), default="quantile")
        learning_rate = hp.Float("learning_rate", 1e-4, 3e-3, sampling="log", default=1e-3)
        weight_decay = hp.Choice("weight_decay", [0.0, 1e-5, 1e-4, 1e-3], default=1e-5)
        # Declared here, outside every conditional scope, because fit() reads it for every trial.
        # Declared first inside a scope (the text_model one, by a pretrained encoder's schedule),
        # the space held two batch_size entries; keras-tuner then dropped the value as inactive from
        # trials of any other text model, and fit() raised KeyError: 'batch_size' (issue 23).
        batch_size = self.batch_size(hp)
        text_encoder = None
        frozen = False
        if self.text_models:
            text_model = hp.Choice("text_model", self.text_models, default=self.text_models[0])

            def text_encoder(text: Any, stats: Any, name: str) -> Any:
                with hp.conditional_scope("text_model", [text_model]):
                    return zoo.get(text_model).build(hp, text, stats, name=name)

            tuning = zoo.get(text_model).card.fine_tuning
            if tuning is not None:
                with hp.conditional_scope("text_model", [text_model]):
                    # Feature extraction: the encoder stays as pretrained; the head trains at a head's rate.
                    frozen = hp.Boolean(f"{text_model}/frozen", default=False)
                    if not frozen:
                        learning_rate = self._fine_tuning_rate(hp, text_model, tuning, batch_size)

        inputs, features = build_inputs(self.schema, self.stats, numeric_transform=transform, text_encoder=text_encoder)
        entry = zoo.get(architecture)
        with hp.conditional_scope("architecture", [architecture]):
            representation = entry.build(hp, features)
            regularizer = entry.head_regularizer(hp) if entry.head_regularizer else None
        output = output_head(representation, self.schema, kernel_regularizer=regularizer)
        if self.schema.task == "regression":
            output = keras.layers.Rescaling(self.target_std, offset=self.target_mean, name="target_scale")(output)
            output = keras.layers.Reshape((), name="prediction")(output)
        model = keras.Model(inputs, output, name=f"autodl_{architecture}")
        if frozen:
            for layer in model.layers:
                if layer.name.endswith(f"_{text_model}"):  # the encoder models the text builder added
                    layer.trainable = False
        return recipe.compile_model(
            model, task=self.schema.task, learning_rate=learning_rate, weight_decay=weight_decay
        )

    def _fine_tuning_rate(self, hp: kt.HyperParameters, text_model: str, tuning: Any, batch_size: int) -> Any:
        """A pretrained encoder's schedule: linear warm-up to a small searched peak, then linear decay to 0.

        ``batch_size`` is the trial's, declared by ``build`` outside this (conditional) scope:
        reading ``hp.Choice("batch_size")`` here would declare a second, conditional copy of it.
        """
        from autodl.recipes.text import WarmupDecay

        low, high, default = tuning.learning_rate
        peak = hp.Float(f"{text_model}/learning_rate", low, high, sampling="log", default=default)
        steps = -(-self.n_train_rows // batch_size) * tuning.epochs
        return WarmupDecay(peak, warmup_steps=int(tuning.warmup_fraction * steps), total_steps=steps)

    def epoch_cap(self, hp: kt.HyperParameters) -> int | None:
        """Fine-tuning a pretrained encoder stops where its schedule ends; frozen, a few more epochs."""
        text_model = hp.values.get("text_model")
        tuning = zoo.get(text_model).card.fine_tuning if text_model else None
        if tuning is None:
            return None
        return 3 * tuning.epochs if hp.values.get(f"{text_model}/frozen") else tuning.epochs

    def batch_size(self, hp: kt.HyperParameters) -> int:
        """The trial's batch size. Call it outside any conditional scope only (``build`` declares it first).

        keras-tuner keys a hyperparameter by its name *and* its conditions: read inside a
        scope, this would declare a second ``batch_size``, inactive for other trials, and
        ``HyperParameters.ensure_active_values`` would delete the value both share.
        """
        return hp.Choice("batch_size", list(BATCH_SIZES), default=default_batch_size(self.n_train_rows))

    def fit(  # type: ignore[override]
        self,
        hp: kt.HyperParameters,
        model: keras.Model,
        train_data: ModelData,
        valid_data: ModelData | None,
        *,
        epochs: int,
        initial_epoch: int = 0,
        callbacks: list[keras.callbacks.Callback] | None = None,
        seed: int = 0,
        **_: Any,
    ) -> keras.callbacks.History:
        cap = self.epoch_cap(hp)
        return recipe.train(
            model,
            train_data,
            valid_data,
            task=self.schema.task,
            metric=self.metric,
            epochs=epochs if cap is None else min(epochs, initial_epoch + cap),
            initial_epoch=initial_epoch,
            batch_size=self.batch_size(hp),
            patience=self.patience,
            callbacks=callbacks,
            seed=seed,
        )

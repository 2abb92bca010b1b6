"""Preprocessing: raw columns → model inputs (frame), statistics (stats), Keras layers (tabular)."""

from autodl.features.frame import to_model_inputs
from autodl.features.layers import DateTimeParts, ImputeMissing, MissingIndicator, QuantileTransform
from autodl.features.stats import FeatureStats, fit_stats
from autodl.features.tabular import NUMERIC_TRANSFORMS, build_inputs, make_inputs

__all__ = [
    "DateTimeParts", "FeatureStats", "ImputeMissing", "MissingIndicator", "NUMERIC_TRANSFORMS",
    "QuantileTransform", "build_inputs", "fit_stats", "make_inputs", "to_model_inputs",
]

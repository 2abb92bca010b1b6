import math

import numpy as np
import pytest
from sklearn import metrics as skm

from autodl import metrics
from autodl.errors import UserError


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1)
    proba = np.stack([1 - p1, p1], axis=1)
    got = metrics.classification_metrics(y, proba)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, p1 > 0.5))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, proba))
    assert got["f1"] == pytest.approx(skm.f1_score(y, (p1 > 0.5).astype(int)))


def test_multiclass_auc_is_macro_ovr():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    proba = rng.dirichlet([1, 1, 1], 300)
    got = metrics.classification_metrics(y, proba)
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, proba.argmax(1)))


def test_regression_metrics():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.5, 4.0])
    got = metrics.regression_metrics(y, pred)
    assert got["rmse"] == pytest.approx(math.sqrt(0.125))
    assert got["mae"] == pytest.approx(0.25)
    assert got["r2"] == pytest.approx(skm.r2_score(y, pred))


def test_directions_and_validation():
    assert metrics.direction("rmse") == "min" and metrics.direction("accuracy") == "max"
    assert metrics.is_better(0.9, 0.8, "accuracy") and metrics.is_better(0.1, 0.2, "log_loss")
    assert not metrics.is_better(math.nan, 0.2, "accuracy")
    assert metrics.validate_metric(None, "regression") == "rmse"
    with pytest.raises(UserError):
        metrics.validate_metric("rmse", "binary")

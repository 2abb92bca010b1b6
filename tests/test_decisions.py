"""Decisions that serve the user's metric: unweighted selection, the binary threshold, the baseline guard.

An imbalanced table (about 5% positives, a weak signal) is where a model trained for
balanced classes and cut at 0.5 lost to always predicting the majority class.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from autodl.decision import check_baseline, choose_threshold
from autodl.metrics import classification_metrics


def imbalanced_table(n: int = 1400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    logit = -3.6 + 1.3 * x[:, 0] + 0.5 * x[:, 1]
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    df = pd.DataFrame(x.round(4), columns=["a", "b", "c", "d"])
    df["y"] = np.where(y, "yes", "no")
    return df


def fit(tmp_path_factory, name: str, **options):
    from autodl import AutoModel

    df = imbalanced_table()
    train, test = df.iloc[:1100].reset_index(drop=True), df.iloc[1100:].reset_index(drop=True)
    tmp = tmp_path_factory.mktemp(name)
    train.to_csv(tmp / "train.csv", index=False)
    test.to_csv(tmp / "test.csv", index=False)  # files, so the run can be exported without passing the data again
    model = AutoModel(target="y", max_trials=3, max_epochs=15, out=tmp / "run", verbosity=0, **options)
    return model.fit(str(tmp / "train.csv"), str(tmp / "test.csv")), test


@pytest.fixture(scope="module")
def default_fit(tmp_path_factory):
    return fit(tmp_path_factory, "default")


@pytest.fixture(scope="module")
def balanced_fit(tmp_path_factory):
    return fit(tmp_path_factory, "balanced", metric="balanced_accuracy")


def test_default_fit_is_not_below_the_majority_class(default_fit):
    model, test = default_fit
    majority = float((test["y"] == "no").mean())
    accuracy = model.manifest["metrics"]["test"]["accuracy"]
    assert accuracy >= majority
    assert float((model.predict(test) == test["y"]).mean()) == pytest.approx(accuracy)
    # No class weights behind the user's back: accuracy is served by the rows as they come.
    assert not any("balanced classes" in note for note in model.manifest["schema"]["notes"])
    baseline = model.manifest["decision"]["baseline"]
    assert baseline["below_baseline"] is False and "majority class 'no'" in baseline["baseline"]


def test_balanced_accuracy_metric_balances_and_moves_the_threshold(balanced_fit):
    model, test = balanced_fit
    manifest = model.manifest
    assert manifest["metrics"]["test"]["balanced_accuracy"] > 0.5
    assert any("balanced classes" in note for note in manifest["schema"]["notes"])
    threshold = manifest["decision"]["threshold"]
    assert manifest["schema"]["threshold"] == threshold
    proba = model.predict_proba(test)["yes"].to_numpy()
    expected = np.where(proba >= threshold, "yes", "no")
    assert (model.predict(test) == expected).all()


@pytest.mark.parametrize("which", ["default_fit", "balanced_fit"])
def test_validation_scores_recompute_from_saved_predictions(which, request):
    model, _ = request.getfixturevalue(which)
    manifest = model.manifest
    metric = manifest["metric"]
    saved = pd.read_csv(model.run_dir / "valid_predictions.csv")
    y = (saved["y"] == "yes").to_numpy().astype(int)
    proba = saved[["proba_no", "proba_yes"]].to_numpy()
    # The leaderboard's best trial was selected on the metric at argmax, over the same held-out rows.
    leader = model.leaderboard().iloc[0]
    assert manifest["final_model"]["members"] == [str(leader["trial"])]
    assert classification_metrics(y, proba)[metric] == pytest.approx(leader[f"val_{metric}"], abs=1e-9)
    # The summary's validation score is the shipped decision (threshold applied) on those rows.
    decided = (saved["prediction"] == "yes").to_numpy().astype(int)
    scorer = skm.accuracy_score if metric == "accuracy" else skm.balanced_accuracy_score
    assert scorer(y, decided) == pytest.approx(manifest["metrics"]["validation"][metric], abs=1e-9)


def test_threshold_reaches_serving_and_the_edge_runner(balanced_fit):
    import tensorflow as tf

    from autodl.edge.autodl_edge import EdgeModel
    from autodl.export.serving import serving_inputs

    model, test = balanced_fit
    report = model.export(("serving", "tflite"), quantize="none", overwrite=True)
    expected = model.predict(test)
    edge = EdgeModel(report["tflite"]["path"], "float32")
    columns = {c: [None if pd.isna(v) else v for v in test[c].tolist()] for c in edge.schema["columns_read"]}
    labels, _ = edge.predict(columns)
    assert edge.schema["threshold"] == pytest.approx(model.manifest["decision"]["threshold"])
    assert np.mean(np.asarray(labels) == expected) >= 0.99  # float32 LiteRT vs Keras: ties at the threshold aside
    signature = tf.saved_model.load(str(report["serving"]["path"])).signatures["serving_default"]
    inputs = {k: tf.constant(v) for k, v in serving_inputs(test, model.schema).items()}
    served = [v.decode() for v in signature(**inputs)["label"].numpy()]
    assert np.mean(np.asarray(served) == expected) >= 0.99


def test_choose_threshold_keeps_half_unless_another_cut_is_better():
    y = np.array([0] * 90 + [1] * 10)
    p = np.r_[np.linspace(0.0, 0.3, 90), np.linspace(0.2, 0.45, 10)]
    proba = np.c_[1 - p, p]
    assert choose_threshold(y, proba, "log_loss") == 0.5  # probabilities, not decisions
    assert 0.3 < choose_threshold(y, proba, "accuracy") < 0.31  # the cut above every negative
    t = choose_threshold(y, proba, "balanced_accuracy")
    assert 0.19 < t < 0.2  # every positive in, a third of the negatives with them
    separable = np.c_[1 - np.r_[p[:90] * 0.5, p[90:] + 0.5], np.r_[p[:90] * 0.5, p[90:] + 0.5]]
    assert choose_threshold(y, separable, "accuracy") == 0.5  # ties keep the cut nearest 0.5
    assert classification_metrics(y, proba, threshold=t)["balanced_accuracy"] > classification_metrics(y, proba)["balanced_accuracy"]


def test_baseline_check_names_the_constant_guess():
    check = check_baseline("binary", "accuracy", np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]), 0.5, classes=["no", "yes"])
    assert check.baseline_score == 0.75 and check.below
    assert "majority class 'no'" in check.message()
    regression = check_baseline("regression", "rmse", np.array([1.0, 3.0]), np.array([2.0, 2.0]), 0.5)
    assert regression.baseline_score == 0.0 and regression.below


def test_cv_auto_fits_classes_too_small_for_every_fold(tmp_path):
    """ecoli: classes of 2 rows made --cv auto refuse the table; now they are stratified together."""
    from autodl import AutoModel

    rng = np.random.default_rng(1)
    n = 160
    x = rng.normal(size=(n, 3))
    site = np.where(x[:, 0] > 0, "cp", "im").astype(object)
    site[:3] = "imL"
    site[3:6] = "omL"
    df = pd.DataFrame(x.round(4), columns=["p", "q", "r"]).assign(site=site)
    model = AutoModel(target="site", max_trials=1, max_epochs=2, out=tmp_path / "run", verbosity=0).fit(df)
    manifest = model.manifest
    assert manifest["status"] == "complete" and manifest["split"]["cv_folds"] == 5
    assert any("stratified together" in note for note in manifest["schema"]["notes"])
    assert json.loads((model.run_dir / "run.json").read_text())["decision"]["threshold"] is None  # multiclass: argmax


def test_a_class_with_one_row_is_kept_for_training(tmp_path):
    """ecoli's seed-1 split: one 'omL' row among the training rows made the default refuse the table."""
    from autodl import AutoModel

    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 2))
    site = np.where(x[:, 0] > 0, "cp", "im").astype(object)
    site[0] = "omL"
    df = pd.DataFrame(x.round(4), columns=["p", "q"]).assign(site=site)
    model = AutoModel(target="site", max_trials=1, max_epochs=2, out=tmp_path / "run", verbosity=0).fit(df)
    assert model.manifest["status"] == "complete"
    assert any("'omL' with a single row" in note for note in model.manifest["schema"]["notes"])

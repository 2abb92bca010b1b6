"""The audit core: planted disparities are caught, clean data passes, numbers are Fairlearn's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as fm

from autodl.audit import audit_classification, audit_regression, evaluate_policy, proxy_associations
from autodl.errors import DataError


def decisions(n: int = 2000, bias: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Labels, predictions and groups; ``bias`` raises the selection rate of group "m"."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["f", "m"], size=n)
    race = rng.choice(["a", "b", "c"], size=n)
    y = (rng.random(n) < 0.4).astype(int)
    flip = rng.random(n) < 0.1
    pred = np.where(flip, 1 - y, y)
    boost = (sex == "m") & (rng.random(n) < bias)
    pred = np.where(boost, 1, pred)
    return np.where(y == 1, ">50K", "<=50K"), np.where(pred == 1, ">50K", "<=50K"), pd.DataFrame({"sex": sex, "race": race})


def test_planted_disparity_fails_the_policy():
    y, pred, groups = decisions(bias=0.5)
    report = audit_classification(y, pred, groups, positive=">50K", n_bootstrap=50)
    assert report["verdict"] == "fail"
    sex = report["columns"]["sex"]["headline"]
    assert sex["demographic_parity_ratio"]["value"] < 0.8
    low, high = sex["demographic_parity_difference"]["ci95"]
    assert low <= sex["demographic_parity_difference"]["value"] <= high and low > 0.1
    assert "sex & race" in report["columns"]


def test_fair_predictions_pass():
    y, pred, groups = decisions(n=20000, bias=0.0)
    report = audit_classification(y, pred, groups, positive=">50K", n_bootstrap=0)
    assert report["verdict"] == "pass", report["policy"]


def test_numbers_equal_fairlearn():
    y, pred, groups = decisions(bias=0.3, seed=1)
    report = audit_classification(y, pred, groups, positive=">50K", n_bootstrap=0)
    yt, yp = (y == ">50K").astype(int), (pred == ">50K").astype(int)
    for column in ("sex", "race"):
        entry = report["columns"][column]
        for name, f in [("demographic_parity_difference", fm.demographic_parity_difference),
                        ("equalized_odds_ratio", fm.equalized_odds_ratio),
                        ("equal_opportunity_difference", fm.equal_opportunity_difference)]:
            assert entry["headline"][name]["value"] == pytest.approx(f(yt, yp, sensitive_features=groups[column]))
        frame = fm.MetricFrame(metrics={"tpr": fm.true_positive_rate, "sel": fm.selection_rate}, y_true=yt, y_pred=yp,
                               sensitive_features=groups[column])
        assert entry["difference"]["true_positive_rate"] == pytest.approx(frame.difference()["tpr"])
        assert entry["ratio"]["selection_rate"] == pytest.approx(frame.ratio()["sel"])
        by_group = {r[column]: r for r in entry["by_group"]}
        for group, value in frame.by_group["sel"].items():
            assert by_group[group]["selection_rate"] == pytest.approx(value)


def test_small_groups_are_flagged_not_ranked():
    y, pred, groups = decisions(n=600, bias=0.0)
    groups.loc[:4, "race"] = "tiny"
    pred = pred.copy()
    pred[:5] = ">50K"
    with pytest.warns(UserWarning, match="fewer than 30 rows"):
        report = audit_classification(y, pred, groups, positive=">50K", n_bootstrap=0)
    race = report["columns"]["race"]
    assert race["small_groups"] == ["tiny"]
    assert "tiny" in {r["race"] for r in race["by_group"]}
    assert race["headline"]["demographic_parity_ratio"]["value"] > 0.8


def test_bad_sensitive_columns():
    from autodl.audit.audit import sensitive_groups

    y, pred, groups = decisions(n=100)
    with pytest.raises(DataError, match="'gender' is not in the data"):
        sensitive_groups(groups, ["gender"])
    with pytest.raises(DataError, match="single value"):
        audit_classification(y, pred, groups.assign(sex="f")[["sex"]], positive=">50K", n_bootstrap=0)


def test_regression_gaps():
    rng = np.random.default_rng(0)
    groups = pd.DataFrame({"g": rng.choice(["a", "b"], size=400)})
    y = rng.normal(size=400)
    pred = y + np.where(groups["g"] == "b", 1.0, 0.0)
    report = audit_regression(y, pred, groups)
    entry = report["columns"]["g"]
    assert entry["difference"]["mean_prediction"] == pytest.approx(
        abs(pred[groups["g"] == "b"].mean() - pred[groups["g"] == "a"].mean()))
    assert entry["difference"]["mae"] > 0.8


def test_proxies_find_the_planted_one():
    rng = np.random.default_rng(0)
    sex = rng.choice(["f", "m"], size=500)
    features = pd.DataFrame({
        "relationship": np.where(sex == "m", "husband", rng.choice(["wife", "other"], size=500)),
        "noise": rng.normal(size=500),
        "height": np.where(sex == "m", 178.0, 165.0) + rng.normal(scale=3, size=500),
    })
    top = proxy_associations(features, pd.DataFrame({"sex": sex}))["sex"]
    assert {t["feature"] for t in top[:2]} == {"relationship", "height"}
    assert top[-1]["feature"] == "noise" and top[-1]["association"] < 0.2


def test_noisy_breach_is_a_warning_not_a_failure():
    y, pred, groups = decisions(n=2000, bias=0.0)  # intersection groups of ~330 rows: noisy gaps
    report = audit_classification(y, pred, groups, positive=">50K", n_bootstrap=40)
    assert report["verdict"] == "warn"
    assert all(c["ci95"] is not None for c in report["policy"]["checks"])


def test_policy_statuses():
    assert evaluate_policy({"demographic_parity_ratio": 0.95, "equalized_odds_difference": 0.01})["verdict"] == "pass"
    assert evaluate_policy({"demographic_parity_ratio": 0.7, "equalized_odds_difference": 0.01})["verdict"] == "fail"
    assert evaluate_policy({"demographic_parity_ratio": 0.95, "equalized_odds_difference": 0.07})["verdict"] == "warn"
    assert evaluate_policy({"demographic_parity_ratio": 0.7}, ci95={"demographic_parity_ratio": [0.6, 0.85]})["verdict"] == "warn"
    assert evaluate_policy({"demographic_parity_ratio": 0.7}, ci95={"demographic_parity_ratio": [0.6, 0.75]})["verdict"] == "fail"

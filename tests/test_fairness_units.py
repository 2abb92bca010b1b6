"""Fairness constraints, constrained selection and stored thresholds, checked against Fairlearn itself."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as fm
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.linear_model import LogisticRegression

from autodl.audit.constraint import parse_constraint
from autodl.audit.mitigation import GroupThresholds
from autodl.audit.selection import select_under_constraint
from autodl.errors import UserError


def planted(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, np.ndarray]:
    """Scores that favour group "a": (features, 0/1 labels, groups, positive scores)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], size=n)
    x = rng.normal(size=(n, 2)) + (group == "a")[:, None] * 0.8
    y = (x[:, 0] + rng.normal(scale=0.7, size=n) > 0.4).astype(int)
    return x, y, pd.DataFrame({"g": group}), x[:, 0]


@pytest.mark.parametrize("text, metric, op, bound", [
    ("demographic_parity_difference<=0.05", "demographic_parity_difference", "<=", 0.05),
    (" equalized_odds_ratio >= 0.8 ", "equalized_odds_ratio", ">=", 0.8),
    ("false_positive_rate_difference<=.1", "false_positive_rate_difference", "<=", 0.1),
])
def test_parse_constraint(text, metric, op, bound):
    c = parse_constraint(text)
    assert (c.metric, c.op, c.bound) == (metric, op, bound)


@pytest.mark.parametrize("text, message", [
    ("dp<=0.05", "unknown fairness metric 'dp'"),
    ("demographic_parity_difference>=0.05", "constrained with <="),
    ("demographic_parity_ratio<=0.8", "constrained with >="),
    ("demographic_parity_difference=0.05", "cannot read fairness constraint"),
    ("count_difference<=3", "unknown fairness metric"),
])
def test_parse_constraint_rejects(text, message):
    with pytest.raises(UserError, match=message):
        parse_constraint(text)


def test_constraint_values_equal_fairlearn():
    _, y, groups, scores = planted()
    pred = (scores > 0.3).astype(int)
    key = groups["g"].to_numpy()
    c = parse_constraint("demographic_parity_difference<=0.05")
    assert c.value(y, pred, groups) == pytest.approx(fm.demographic_parity_difference(y, pred, sensitive_features=key))
    assert not c.satisfied(c.value(y, pred, groups))
    c = parse_constraint("equalized_odds_ratio>=0.5")
    assert c.value(y, pred, groups) == pytest.approx(fm.equalized_odds_ratio(y, pred, sensitive_features=key))
    c = parse_constraint("false_positive_rate_difference<=0.5")
    frame = fm.MetricFrame(metrics=fm.false_positive_rate, y_true=y, y_pred=pred, sensitive_features=key)
    assert c.value(y, pred, groups) == pytest.approx(frame.difference())
    assert c.satisfied(c.value(y, pred, groups))


def test_constraint_leaves_small_groups_out():
    _, y, groups, scores = planted()
    groups = groups.copy()
    groups.loc[:4, "g"] = "tiny"  # five rows: below the minimum group size, as in the audit
    pred = (scores > 0.3).astype(int)
    keep = groups["g"].to_numpy() != "tiny"
    expected = fm.demographic_parity_difference(y[keep], pred[keep], sensitive_features=groups["g"].to_numpy()[keep])
    assert parse_constraint("demographic_parity_difference<=0.05").value(y, pred, groups) == pytest.approx(expected)


def test_selection_picks_the_best_model_that_meets_the_constraint():
    _, y, groups, scores = planted()
    outputs, scores_by_name = {}, {}
    for name, shift in (("accurate", 0.0), ("fairer", 0.4), ("fairest", 0.8)):
        # Lower thresholds for group b narrow the gap, at some cost in accuracy.
        threshold = np.where(groups["g"] == "b", 0.4 - shift, 0.4)
        p = 1 / (1 + np.exp(-(scores - threshold) * 8))
        outputs[name] = np.stack([1 - p, p], axis=1)
        scores_by_name[name] = float(((p > 0.5) == y).mean())
    c = parse_constraint("demographic_parity_difference<=0.15")
    pick = select_under_constraint(outputs, scores_by_name, y, groups, c, positive_index=1, unconstrained="accurate")
    values = {cand.name: cand.value for cand in pick.candidates}
    assert values["accurate"] > 0.15  # the planted gap
    meeting = [n for n, v in values.items() if v <= 0.15]
    assert pick.met and pick.chosen == max(meeting, key=scores_by_name.__getitem__)
    cost = pick.to_dict()["cost"]
    assert cost["score"] == pytest.approx(scores_by_name["accurate"] - scores_by_name[pick.chosen])
    strict = select_under_constraint(outputs, scores_by_name, y, groups, parse_constraint("demographic_parity_difference<=0.0001"),
                                     positive_index=1, unconstrained="accurate")
    assert not strict.met and strict.chosen is None and "cost" not in strict.to_dict()


@pytest.mark.parametrize("constraints", ["demographic_parity", "equalized_odds", "true_positive_rate_parity"])
def test_stored_thresholds_reproduce_fairlearn(constraints):
    x, y, groups, _ = planted(1000)
    model = LogisticRegression().fit(x, y)
    optimizer = ThresholdOptimizer(estimator=model, constraints=constraints, prefit=True, predict_method="predict_proba")
    optimizer.fit(x, y, sensitive_features=groups["g"])
    stored = GroupThresholds.from_optimizer(optimizer, sensitive=["g"], positive="1", seed=7)
    # Through JSON, as the run keeps them (infinite thresholds included).
    rules = GroupThresholds.from_dict(json.loads(json.dumps(stored.to_dict())))
    scores = model.predict_proba(x)[:, 1]
    probability, unseen = rules.positive_probability(scores, groups["g"].to_numpy())
    assert unseen == 0
    np.testing.assert_allclose(probability, optimizer._pmf_predict(x, sensitive_features=groups["g"])[:, 1], atol=1e-12)
    np.testing.assert_array_equal(rules.decide(scores, groups["g"].to_numpy()),
                                  optimizer.predict(x, sensitive_features=groups["g"], random_state=7))


def test_unseen_group_keeps_the_models_decision():
    rules = GroupThresholds.from_dict({"sensitive": ["g"], "positive": "yes", "constraint": "demographic_parity", "seed": 0,
                                       "groups": {"a": {"p0": 1.0, "operation0": [">", "inf"], "p1": 0.0, "operation1": [">", 0.5]}}})
    with pytest.warns(UserWarning, match="1 rows belong to groups the thresholds were not fitted on"):
        decisions = rules.decide(np.array([0.9, 0.9]), np.array(["a", "zzz"]))
    assert decisions.tolist() == [0, 1]


def test_docstring_examples_run():
    import doctest

    import autodl.audit
    from autodl.audit import audit, constraint, mitigation, policy, selection

    for module in (autodl.audit, audit, constraint, mitigation, policy, selection):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_bootstrap_headline_values_equal_fairlearn():
    from autodl.audit.audit import HEADLINE, headline_values

    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(60, 400))
        y, pred = rng.integers(0, 2, n), (rng.random(n) < rng.random()).astype(int)
        groups = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
        ours = headline_values(y, pred, groups)
        for metric, f in HEADLINE.items():
            assert ours[metric] == pytest.approx(f(y, pred, sensitive_features=groups), nan_ok=True), metric

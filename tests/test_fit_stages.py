"""The fit pipeline's stages on their own: weights, CV choice, time limits, run directories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autodl.errors import RunError, UserError
from autodl.fit import FitConfig, open_run, parse_time_limit, prepare, resolve_cv
from tests.conftest import make_table


def test_time_limit_parsing():
    assert parse_time_limit("90s") == 90 and parse_time_limit("10m") == 600 and parse_time_limit("1.5h") == 5400
    assert parse_time_limit(30) == 30.0 and parse_time_limit(None) is None
    with pytest.raises(UserError):
        parse_time_limit("soon")


def test_cv_auto_uses_folds_only_on_small_data():
    assert resolve_cv("auto", 2000) == 5 and resolve_cv("auto", 20000) == 0
    assert resolve_cv(0, 100) == 0 and resolve_cv(3, 100000) == 3


def test_imbalanced_target_is_balanced_only_for_a_metric_that_rewards_it():
    df = make_table(600)
    df["y"] = np.where(np.arange(600) % 10 == 0, "rare", "common")
    # Accuracy (the default) is served by the rows as they come: no class weights.
    plain = prepare(df, None, FitConfig(target="y", cv=0))
    assert plain.data.sample_weight is None and plain.data.score_weight is None
    for config in (FitConfig(target="y", cv=0, metric="balanced_accuracy"), FitConfig(target="y", cv=0, class_weight="balanced")):
        prepared = prepare(df, None, config)
        w, y = prepared.data.sample_weight, prepared.data.y
        train = prepared.split.train
        assert w is not None
        # Both classes carry the same total weight on the training rows ...
        totals = [w[train][y[train] == k].sum() for k in (0, 1)]
        assert totals[0] == pytest.approx(totals[1], rel=0.05)
        assert any("balanced classes" in note for note in prepared.schema.notes)
        # ... while metrics still count every row once.
        assert prepared.data.score_weight is None


def test_balanced_target_is_unweighted_and_weight_column_is_used():
    df = make_table(300)
    assert prepare(df, None, FitConfig(target="y", cv=0)).data.sample_weight is None
    df["w"] = np.where(df["city"] == "paris", 3.0, 1.0)
    prepared = prepare(df, None, FitConfig(target="y", cv=0, weight_column="w"))
    assert "w" not in [c.name for c in prepared.schema.features]
    w = prepared.data.sample_weight
    assert w is not None and w.max() / w.min() == pytest.approx(3.0)
    score = prepared.data.score_weight  # the user's weights count in the metrics too
    assert score is not None and score.max() / score.min() == pytest.approx(3.0)


def test_regression_target_is_standardized_on_train_only():
    df = make_table(300, "regression")
    prepared = prepare(df, None, FitConfig(target="y", cv=0))
    train_y = prepared.data.y[prepared.split.train]
    assert prepared.target_mean == pytest.approx(float(np.mean(train_y)))


def test_given_test_file_replaces_the_holdout():
    df, test = make_table(300), make_table(80, seed=1)
    prepared = prepare(df, test, FitConfig(target="y", cv=0))
    assert len(prepared.split.test) == 0 and len(prepared.test) == 80
    with pytest.raises(UserError, match="target"):
        prepare(df, test.drop(columns=["y"]), FitConfig(target="y", cv=0))


def test_open_run_refuses_foreign_folders(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not an autodl run"):
        open_run(FitConfig(target="y", out=str(tmp_path / "x")), "d.csv", "file:abc")
    run, resume = open_run(FitConfig(target="y", out=str(tmp_path / "new")), "d.csv", "file:abc")
    assert run.path.exists() and not resume


def test_the_same_seed_repeats_a_fit_without_a_time_limit(tmp_path):
    """What --help promises of --seed: without --time-limit, one machine repeats a run exactly."""
    from autodl import AutoModel

    df = make_table(240)
    runs = [AutoModel(target="y", max_trials=2, max_epochs=4, seed=3, out=tmp_path / f"r{i}", verbosity=0).fit(df)
            for i in range(2)]
    boards = [m.leaderboard() for m in runs]
    assert boards[0]["val_accuracy"].tolist() == boards[1]["val_accuracy"].tolist()
    np.testing.assert_array_equal(runs[0].predict_proba(df).to_numpy(), runs[1].predict_proba(df).to_numpy())

"""``autodl fit`` with --fairness-constraint and --mitigate: what ships, what predict does, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn import metrics as fm

from autodl import AutoModel
from autodl.cli import main
from tests.conftest import make_table

# No searched model can reach parity this tight on the planted data, so the fit falls through to mitigation.
TIGHT = "demographic_parity_difference<=0.02"


def planted_table(n: int = 900, seed: int = 3) -> pd.DataFrame:
    df = make_table(n, seed=seed)
    rng = np.random.default_rng(seed)
    # "group" follows x1, which drives the target: a disparity planted through a proxy.
    df["group"] = np.where(df["x1"] + rng.normal(scale=0.8, size=n) > 0, "g1", "g2")
    return df


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("fair") / "data.csv"
    planted_table().to_csv(path, index=False)
    return path


def fit(csv, out, *extra: str) -> int:
    return main(["fit", str(csv), "--target", "y", "--max-trials", "3", "--max-epochs", "4", "--cv", "0",
                 "--out", str(out), "--sensitive", "group", "--quiet", *extra])


@pytest.fixture(scope="module")
def threshold_run(data_csv, tmp_path_factory):
    run = tmp_path_factory.mktemp("fair") / "threshold"
    assert fit(data_csv, run, "--fairness-constraint", TIGHT, "--mitigate", "threshold") == 0
    return run


def valid_frame(run, csv) -> pd.DataFrame:
    labelled = pd.read_csv(csv)
    with np.load(run / "split.npz") as z:
        return labelled.iloc[z["valid"]].reset_index(drop=True)


def test_selection_is_consistent_and_falls_through_to_thresholds(threshold_run, data_csv):
    manifest = json.loads((threshold_run / "run.json").read_text())
    selection = manifest["fairness"]["selection"]
    assert len(selection["candidates"]) == 3  # every trial was a candidate
    for cand in selection["candidates"]:
        assert cand["meets"] == (cand["value"] <= 0.02)
    assert not selection["met"] and selection["chosen"] is None
    # The shipped model's gap on the validation rows is the one the selection saw for it.
    model = AutoModel.load(threshold_run)
    valid = valid_frame(threshold_run, data_csv)
    pred = (model.predict_output(valid).argmax(axis=1) == 1).astype(int)
    y = (valid["y"] == "yes").astype(int).to_numpy()
    shipped = next(c for c in selection["candidates"] if c["name"] == selection["unconstrained"])
    assert fm.demographic_parity_difference(y, pred, sensitive_features=valid["group"]) == pytest.approx(shipped["value"])
    assert manifest["fairness"]["mitigation"]["method"] == "threshold"


def test_thresholds_narrow_the_gap_on_the_test_split(threshold_run):
    audit = json.loads((threshold_run / "audit.json").read_text())
    before, after = audit["comparison"]
    assert (before["model"], after["model"]) == ("unconstrained", "threshold")
    assert after["demographic_parity_difference"] < before["demographic_parity_difference"] / 2
    assert audit["before"]["columns"]["group"]["headline"]["demographic_parity_difference"]["value"] == \
        pytest.approx(before["demographic_parity_difference"])
    manifest = json.loads((threshold_run / "run.json").read_text())
    assert set(manifest["metrics"]["test"]["with_thresholds"]) >= {"accuracy", "balanced_accuracy"}
    assert manifest["metrics"]["test"]["with_thresholds"]["accuracy"] == pytest.approx(after["accuracy"])
    # The test predictions file holds the thresholded decisions the audit scored.
    predictions = pd.read_csv(threshold_run / "test_predictions.csv")
    assert ((predictions["prediction"] == "yes").mean()) == pytest.approx(after["selection_rate"])


def test_predict_applies_thresholds_only_with_the_sensitive_column(threshold_run, data_csv, tmp_path, capsys):
    model = AutoModel.load(threshold_run)
    df = pd.read_csv(data_csv)
    rules = model.fairness_thresholds
    output = model.predict_output(df)
    expected = np.where(rules.decide_output(model.schema, df, output).argmax(axis=1) == 1, "yes", "no")
    np.testing.assert_array_equal(model.predict(df), expected)
    assert (model.predict(df) != np.where(output.argmax(axis=1) == 1, "yes", "no")).any()
    with pytest.warns(UserWarning, match="need the sensitive column 'group'"):
        plain = model.predict(df.drop(columns=["group"]))
    np.testing.assert_array_equal(plain, np.where(output.argmax(axis=1) == 1, "yes", "no"))
    no_group = tmp_path / "no_group.csv"
    df.drop(columns=["group"]).to_csv(no_group, index=False)
    assert main(["predict", str(threshold_run), str(no_group), "-o", str(tmp_path / "p.csv")]) == 0
    assert "warning: the run's fairness thresholds need the sensitive column 'group'" in " ".join(capsys.readouterr().err.split())


def test_reductions_ship_one_exportable_keras_model(data_csv, tmp_path):
    run = tmp_path / "reductions"
    assert fit(data_csv, run, "--fairness-constraint", TIGHT, "--mitigate", "reductions", "--grid-size", "3") == 0
    manifest = json.loads((run / "run.json").read_text())
    mitigation = manifest["fairness"]["mitigation"]
    assert mitigation["algorithm"] == "GridSearch" and 1 <= mitigation["trained"] <= 3
    assert manifest["final_model"]["kind"] == "reductions"
    chosen = mitigation["points"][mitigation["chosen"]]
    meeting = [p for p in mitigation["points"] if p["meets"]]
    if meeting:
        assert chosen["score"] == max(p["score"] for p in meeting)
    else:
        assert chosen["value"] == min(p["value"] for p in mitigation["points"])
    # One deterministic Keras model: reloads, and reproduces the grid point's validation gap.
    model = AutoModel.load(run)
    assert model.fairness_thresholds is None
    valid = valid_frame(run, data_csv)
    pred = (model.predict(valid) == "yes").astype(int)
    y = (valid["y"] == "yes").astype(int).to_numpy()
    assert fm.demographic_parity_difference(y, pred, sensitive_features=valid["group"]) == pytest.approx(chosen["value"], abs=1e-9)
    assert [r["model"] for r in json.loads((run / "audit.json").read_text())["comparison"]] == ["unconstrained", "reductions"]


@pytest.mark.parametrize("args, message", [
    (["--fairness-constraint", TIGHT], "--fairness-constraint needs the sensitive columns"),
    (["--sensitive", "group", "--fairness-constraint", "parity<=0.1"], "unknown fairness metric 'parity'"),
    (["--sensitive", "group", "--mitigate", "magic"], "--mitigate must be threshold or reductions"),
    (["--sensitive", "group", "--mitigate", "exponentiated_gradient"], "randomized mixture of models that cannot ship"),
    (["--sensitive", "group", "--mitigate", "threshold", "--positive", "maybe"], "--positive 'maybe' is not a class"),
    (["--sensitive", "group", "--fairness-constraint", "precision_difference<=0.1", "--mitigate", "threshold"],
     "--mitigate threshold cannot target precision_difference"),
])
def test_bad_fairness_options(data_csv, tmp_path, capsys, args, message):
    code = main(["fit", str(data_csv), "--target", "y", "--max-trials", "1", "--max-epochs", "1", "--cv", "0",
                 "--out", str(tmp_path / "run"), "--quiet", *args])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


def test_fairness_options_need_a_binary_target(tmp_path, capsys):
    df = make_table(200, task="regression")
    df["group"] = np.where(df["x1"] > 0, "g1", "g2")
    csv = tmp_path / "reg.csv"
    df.to_csv(csv, index=False)
    code = main(["fit", str(csv), "--target", "y", "--sensitive", "group", "--mitigate", "threshold", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--mitigate threshold works on binary targets; 'y' is regression" in " ".join(capsys.readouterr().err.split())


def test_export_carries_thresholds_and_audits_variants_with_them(threshold_run, data_csv, tmp_path, capsys):
    from autodl.export.pipeline import ExportOptions, export_run

    report = export_run(threshold_run, ExportOptions(formats=("tflite",), quantize="none", out=str(tmp_path / "out")))
    assert (tmp_path / "out" / "edge" / "fairness_thresholds.json").exists()
    assert "per-group thresholds" in report["fairness_thresholds"]["note"]
    rows = {r["model"]: r for r in report["audit"]["comparison"]}
    shipped = json.loads((threshold_run / "audit.json").read_text())["comparison"][1]
    # The Keras row is the thresholded model the fit audited; float32 TFLite makes the same decisions.
    assert rows["keras"]["accuracy"] == pytest.approx(shipped["accuracy"])
    assert rows["tflite float32"]["demographic_parity_difference"] == pytest.approx(rows["keras"]["demographic_parity_difference"], abs=0.02)

    # The stand-alone runner applies the carried thresholds as autodl predict does.
    from autodl.edge.autodl_edge import EdgeModel, read_csv

    edge = EdgeModel(tmp_path / "out" / "edge", "float32")
    columns = read_csv(data_csv)
    labels, output = edge.predict(columns)
    expected = AutoModel.load(threshold_run).predict(pd.read_csv(data_csv))
    assert np.mean(np.asarray(labels) == expected) > 0.98  # float32 LiteRT vs Keras: a few rows on a threshold may differ
    assert (np.asarray(labels) != np.where(output.argmax(axis=1) == 1, "yes", "no")).any()
    del columns["group"]
    plain, _ = edge.predict(columns)
    np.testing.assert_array_equal(plain, np.where(output.argmax(axis=1) == 1, "yes", "no"))
    assert "fairness thresholds need column(s) group" in capsys.readouterr().err


def test_regression_reductions_use_bounded_group_loss(tmp_path):
    df = make_table(700, task="regression", seed=5)
    rng = np.random.default_rng(5)
    df["group"] = rng.choice(["g1", "g2"], size=len(df), p=[0.6, 0.4])
    noisy = df["group"] == "g2"
    df.loc[noisy, "y"] = df.loc[noisy, "y"] + rng.normal(scale=1.0, size=int(noisy.sum()))  # g2 is harder to predict
    csv = tmp_path / "reg.csv"
    df.to_csv(csv, index=False)
    run = tmp_path / "run"
    assert fit(csv, run, "--fairness-constraint", "rmse_difference<=0.01", "--mitigate", "reductions", "--grid-size", "3") == 0
    manifest = json.loads((run / "run.json").read_text())
    mitigation = manifest["fairness"]["mitigation"]
    assert mitigation["parity"] == "bounded_group_loss" and manifest["final_model"]["kind"] == "reductions"
    chosen = mitigation["points"][mitigation["chosen"]]
    model = AutoModel.load(run)
    valid = valid_frame(run, csv)
    frame = fm.MetricFrame(metrics=lambda t, p: float(np.sqrt(np.mean((t - p) ** 2))), y_true=valid["y"].to_numpy(),
                           y_pred=model.predict(valid).astype(float), sensitive_features=valid["group"])
    assert frame.difference() == pytest.approx(chosen["value"], rel=1e-4)
    rows = json.loads((run / "audit.json").read_text())["comparison"]
    assert [r["model"] for r in rows] == ["unconstrained", "reductions"] and "rmse_difference" in rows[0]


def test_constraint_must_fit_the_task(data_csv, tmp_path, capsys):
    code = main(["fit", str(data_csv), "--target", "y", "--sensitive", "group", "--fairness-constraint", "rmse_difference<=0.1",
                 "--quiet", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "rmse_difference is not a binary metric" in " ".join(capsys.readouterr().err.split())

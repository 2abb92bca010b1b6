"""End to end through the CLI: fit, predict, evaluate, leaderboard, and every bad input."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest

from autodl.cli import main
from tests.conftest import make_table

FAST = ["--max-trials", "2", "--max-epochs", "4", "--time-limit", "120s", "--quiet"]


def run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One classification fit shared by the read-only tests below."""
    tmp = tmp_path_factory.mktemp("fit")
    data = tmp / "train.csv"
    make_table(300, "binary", text=True).to_csv(data, index=False)
    out = tmp / "run"
    code = main(["fit", str(data), "--target", "y", "--out", str(out), "--cv", "0", *FAST])
    assert code == 0
    return tmp, data, out


def test_fit_writes_a_complete_run(fitted):
    _, _, out = fitted
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["task"] == "binary" and manifest["schema"]["classes"] == ["no", "yes"]
    kinds = {c["name"]: c["kind"] for c in manifest["schema"]["columns"]}
    assert kinds == {"x1": "numeric", "x2": "numeric", "city": "categorical", "rooms": "categorical", "day": "datetime", "review": "text"}
    assert set(manifest["metrics"]["test"]) >= {"accuracy", "balanced_accuracy", "log_loss", "roc_auc", "f1"}
    assert manifest["metrics"]["test"]["accuracy"] > 0.6  # a learnable signal; chance is ~0.5
    assert manifest["search"]["trials"] == 2
    for name in ("model.keras", "leaderboard.csv", "test_predictions.csv", "split.npz"):
        assert (out / name).exists()
    assert manifest["disk_bytes"] > 0 and "versions" in manifest and manifest["seed"] == 0


def test_saved_model_loads_in_safe_mode_and_predicts_from_raw_columns(fitted, capsys):
    tmp, data, out = fitted
    import autodl.api  # noqa: F401  (registers autodl's custom layers)
    from autodl import AutoModel

    model = keras.models.load_model(out / "model.keras", safe_mode=True)
    auto = AutoModel.load(out)
    df = pd.read_csv(data).drop(columns=["y"])
    proba = auto.predict_proba(df)
    assert list(proba.columns) == ["no", "yes"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    from autodl.features import to_model_inputs
    from autodl.recipes.tabular import make_dataset
    from autodl.features.frame import ModelData

    direct = model.predict(make_dataset(ModelData(to_model_inputs(df, auto.schema)), batch_size=64, with_targets=False), verbose=0)
    np.testing.assert_allclose(direct, proba.to_numpy(), atol=1e-6)


def test_predict_evaluate_leaderboard(fitted, capsys):
    tmp, data, out = fitted
    new = pd.read_csv(data).drop(columns=["y"]).head(20)
    new.loc[0, "city"] = "tokyo"  # unseen category: the out-of-vocabulary bucket, not an error
    new_path = tmp / "new.csv"
    new.to_csv(new_path, index=False)
    preds_path = tmp / "preds.csv"
    code, _, err = run(["predict", out, new_path, "-o", preds_path], capsys)
    assert code == 0, err
    preds = pd.read_csv(preds_path)
    assert list(preds.columns) == ["prediction", "proba_no", "proba_yes"] and len(preds) == 20
    assert set(preds["prediction"]) <= {"yes", "no"}
    code, stdout, err = run(["evaluate", out, data, "--json"], capsys)
    assert code == 0, err
    assert 0.0 <= json.loads(stdout)["accuracy"] <= 1.0
    code, stdout, err = run(["leaderboard", out], capsys)
    assert code == 0 and "architecture" in stdout


def test_regression_end_to_end(tmp_path, capsys):
    data = tmp_path / "reg.csv"
    make_table(300, "regression").to_csv(data, index=False)
    out = tmp_path / "run"
    code, stdout, err = run(["fit", data, "--target", "y", "--out", out, "--cv", "0", *FAST], capsys)
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["task"] == "regression"
    test = manifest["metrics"]["test"]
    assert set(test) == {"rmse", "mae", "r2"} and test["r2"] > 0.3
    code, _, err = run(["predict", out, data, "-o", tmp_path / "p.csv"], capsys)
    assert code == 0 and list(pd.read_csv(tmp_path / "p.csv").columns) == ["prediction"]


def test_multiclass_with_cross_validation_refits(tmp_path, capsys):
    data = tmp_path / "multi.csv"
    make_table(240, "multiclass").to_csv(data, index=False)
    out = tmp_path / "run"
    code, _, err = run(["fit", data, "--target", "y", "--out", out, "--cv", "3", *FAST], capsys)
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["task"] == "multiclass" and manifest["split"]["cv_folds"] == 3
    assert manifest["final_model"]["kind"] == "refit"


def test_help_explains_commands(capsys):
    code, stdout, _ = run(["--help"], capsys)
    assert code == 0
    for command in ("fit", "predict", "evaluate", "leaderboard"):
        assert command in stdout
    code, stdout, _ = run(["fit", "--help"], capsys)
    assert "--time-limit" in stdout and "--target" in stdout


# -- bad input: one line on stderr, exit code 2, no traceback --------------------------------


def assert_user_error(code, err, *needles):
    """Exit code 2, no traceback, and the error is one line (progress output may precede it)."""
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]
    for needle in needles:
        assert needle in errors[0], err


def test_missing_file(tmp_path, capsys):
    assert_user_error(*run(["fit", tmp_path / "nope.csv", "--target", "y"], capsys)[::2], "does not exist")


def test_empty_and_header_only_and_garbage(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_user_error(*run(["fit", empty, "--target", "y"], capsys)[::2], "empty")
    header = tmp_path / "header.csv"
    header.write_text("a,b,y\n")
    assert_user_error(*run(["fit", header, "--target", "y"], capsys)[::2])
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 40)
    assert_user_error(*run(["fit", garbage, "--target", "y"], capsys)[::2])


def test_target_problems(tmp_path, capsys):
    df = make_table(100)
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    assert_user_error(*run(["fit", path, "--target", "cty"], capsys)[::2], "city")
    df.assign(y=np.nan).to_csv(path, index=False)
    assert_user_error(*run(["fit", path, "--target", "y"], capsys)[::2], "missing")
    df.assign(y="same").to_csv(path, index=False)
    assert_user_error(*run(["fit", path, "--target", "y"], capsys)[::2])
    df.to_csv(path, index=False)
    assert_user_error(*run(["fit", path, "--target", "y", "--task", "regression"], capsys)[::2])


def test_too_few_rows(tmp_path, capsys):
    path = tmp_path / "small.csv"
    make_table(8).to_csv(path, index=False)
    assert_user_error(*run(["fit", path, "--target", "y", "--cv", "0"], capsys)[::2], "rows")


def test_bad_options(tmp_path, capsys, csv_path):
    assert_user_error(*run(["fit", csv_path, "--target", "y", "--tuner", "grid"], capsys)[::2], "tuner")
    assert_user_error(*run(["fit", csv_path, "--target", "y", "--time-limit", "soon"], capsys)[::2], "time limit")
    assert_user_error(*run(["fit", csv_path, "--target", "y", "--metric", "rmse"], capsys)[::2], "rmse")


def test_predict_time_errors(fitted, tmp_path, capsys):
    _, data, out = fitted
    missing = tmp_path / "missing_col.csv"
    pd.read_csv(data).drop(columns=["city"]).to_csv(missing, index=False)
    assert_user_error(*run(["predict", out, missing], capsys)[::2], "city")
    assert_user_error(*run(["predict", tmp_path / "no-run", data], capsys)[::2], "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert_user_error(*run(["predict", broken, data], capsys)[::2], "corrupted")
    assert_user_error(*run(["leaderboard", broken], capsys)[::2], "corrupted")


def test_finished_run_is_not_overwritten_silently(fitted, capsys):
    _, data, out = fitted
    before = (out / "model.keras").stat().st_mtime_ns
    assert_user_error(*run(["fit", data, "--target", "y", "--out", out], capsys)[::2], "--overwrite")
    assert (out / "model.keras").stat().st_mtime_ns == before


def test_failed_fit_leaves_no_model_to_load(tmp_path, capsys, csv_path):
    out = tmp_path / "run"
    # One second cannot fit a trial: the fit fails cleanly and predict refuses the run.
    code, _, err = run(["fit", csv_path, "--target", "y", "--out", out, "--time-limit", "1s", "--cv", "0"], capsys)
    assert_user_error(code, err, "time")
    assert not (out / "model.keras").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert_user_error(*run(["predict", out, csv_path], capsys)[::2], "did not finish")


def test_debug_shows_traceback(tmp_path, capsys):
    code, _, err = run(["--debug", "fit", tmp_path / "nope.csv", "--target", "y"], capsys)
    assert code == 2 and "Traceback" in err


def test_time_limit_holds_for_the_whole_fit(tmp_path, capsys):
    data = tmp_path / "d.csv"
    make_table(400).to_csv(data, index=False)
    out = tmp_path / "run"
    limit = 25.0
    code, _, err = run(["fit", data, "--target", "y", "--out", out, "--cv", "0", "--max-trials", "100",
                        "--time-limit", f"{limit}s", "--quiet"], capsys)
    assert code == 0, err
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["timings"]["total"] <= 1.1 * limit
    assert 0 < manifest["search"]["trials"] < 100


def test_same_seed_repeats_the_run(tmp_path, capsys):
    data = tmp_path / "d.csv"
    make_table(200).to_csv(data, index=False)
    preds = []
    for name in ("a", "b"):
        out = tmp_path / name
        code, _, err = run(["fit", data, "--target", "y", "--out", out, "--cv", "0", "--seed", "7", *FAST], capsys)
        assert code == 0, err
        preds.append(pd.read_csv(out / "test_predictions.csv"))
    pd.testing.assert_frame_equal(preds[0], preds[1])

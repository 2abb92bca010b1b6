"""A search that survives a bad trial (issue 23): text searches whose trials switch encoders,
failed trials recorded with their reason, and a fit that fails in one line when no trial can complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np
import pandas as pd
import pytest

from autodl.errors import UserError
from autodl.fit import FitConfig, FitResult, run_fit
from autodl.progress import NullReporter, TrialSummary
from autodl.search import AutoTuner, TabularHyperModel, make_oracle


def minilm_missing() -> str | None:
    from autodl import zoo

    return zoo.get("minilm").unavailable_reason()


class Recorder(NullReporter):
    """Keeps the reporter's messages and trial summaries."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.ended: list[TrialSummary] = []

    def message(self, text: Any) -> None:
        if isinstance(text, str):  # not the schema table
            self.messages.append(text)

    def on_trial_end(self, summary: TrialSummary) -> None:
        self.ended.append(summary)


def passenger_table(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A short free-text column (a cabin note) and one numeric column; both carry the label."""
    rng = np.random.default_rng(seed)
    fare = rng.lognormal(3.0, 0.8, size=n)
    words = np.array(["deck", "aft", "bow", "suite", "berth", "upper", "lower", "cabin"])
    notes = [" ".join(rng.choice(words, size=4)) for _ in range(n)]
    signal = np.log(fare) - 3.0 + np.array([0.8 * ("suite" in t) - 0.8 * ("berth" in t) for t in notes])
    survived = np.where(signal + rng.normal(scale=0.3, size=n) > 0, "yes", "no")
    return pd.DataFrame({"fare": fare.round(2), "note": notes, "survived": survived})


def fit(tmp_path: Path, df: pd.DataFrame, reporter: Recorder | None = None, **options: Any) -> FitResult:
    config = FitConfig(target=options.pop("target", "survived"), out=str(tmp_path / "run"), cv=0, tuner="random",
                       max_epochs=options.pop("max_epochs", 2), **options)
    return run_fit(config, df, reporter=reporter or Recorder())


def assert_finished(result: FitResult, trials: int) -> pd.DataFrame:
    manifest = json.loads((result.run_dir / "run.json").read_text())
    assert manifest["status"] == "complete"
    board = result.leaderboard
    assert len(board) == trials and (board["status"] == "COMPLETED").all(), board[["trial", "architecture", "status", "reason"]]
    assert (board["reason"] == "").all()
    return board


# -- a: searches whose trials switch text encoders finish ----------------------------------


@pytest.mark.parametrize("text_model", ["bag_of_ngrams", "textcnn"])
def test_a_text_search_finishes(tmp_path: Path, text_model: str) -> None:
    result = fit(tmp_path, passenger_table(), models=("mlp", "linear", text_model), max_trials=3, refit="never")
    board = assert_finished(result, trials=3)
    assert set(board["architecture"]) <= {f"mlp+{text_model}", f"linear+{text_model}"}


@pytest.mark.skipif(minilm_missing() is not None, reason=f"minilm is not installed: {minilm_missing()}")
def test_a_search_mixing_minilm_with_a_from_scratch_encoder_finishes(tmp_path: Path) -> None:
    # The warm start runs bag_of_ngrams, then minilm; later trials draw either. This order is the
    # crash of issue 23: before the fix, both trials drawn here (bag_of_ngrams, at seed 0) raised
    # KeyError: 'batch_size'. (With minilm first, the space happened to keep the value.)
    result = fit(tmp_path, passenger_table(100), models=("mlp", "bag_of_ngrams", "minilm"), max_trials=4, max_epochs=1,
                 refit="never", ensemble=1)
    board = assert_finished(result, trials=4)
    assert {"mlp+minilm", "mlp+bag_of_ngrams"} <= set(board["architecture"])


@pytest.mark.skipif(minilm_missing() is not None, reason=f"minilm is not installed: {minilm_missing()}")
def test_batch_size_survives_trials_that_switch_from_minilm_to_another_encoder(tmp_path: Path, monkeypatch) -> None:
    """The crash of issue 23, made certain: a from-scratch encoder, then minilm, then the first again.

    Before the fix, minilm's schedule declared ``batch_size`` inside the ``text_model``
    scope; the third trial's values then lacked it and ``fit`` raised ``KeyError: 'batch_size'``.
    Training is stubbed (``fit`` only reads the hyperparameters it trains with), so the
    real builds and keras-tuner's own bookkeeping of the space are what is tested.
    """
    from autodl.features import fit_stats
    from autodl.fit import infer_fit_schema, to_data

    df = passenger_table(60)
    config = FitConfig(target="survived")
    schema = infer_fit_schema(df, config)
    data = to_data(df, schema)
    hypermodel = TabularHyperModel(schema, fit_stats(data.x, schema), n_train_rows=len(df), architectures=["mlp"],
                                   text_models=["bag_of_ngrams", "minilm"])
    read: list[tuple[str, int, int | None]] = []

    def fake_fit(self: TabularHyperModel, hp: kt.HyperParameters, model: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        read.append((hp.values["text_model"], self.batch_size(hp), self.epoch_cap(hp)))
        return {"val_accuracy": 0.5}

    monkeypatch.setattr(TabularHyperModel, "fit", fake_fit)
    initial = [{"architecture": "mlp", "text_model": t} for t in ("bag_of_ngrams", "minilm", "bag_of_ngrams")]
    oracle = make_oracle("random", kt.Objective("val_accuracy", "max"), max_trials=3, seed=0, initial_configs=initial)
    tuner = AutoTuner(oracle=oracle, hypermodel=hypermodel, directory=str(tmp_path), project_name="tuner", max_epochs=1)
    tuner.search(data, data)
    statuses = {t.trial_id: (t.status, (t.message or "").strip().splitlines()[-1:]) for t in oracle.trials.values()}
    assert all(status == "COMPLETED" for status, _ in statuses.values()), statuses
    assert [t for t, _, _ in read] == ["bag_of_ngrams", "minilm", "bag_of_ngrams"]
    # One batch_size, outside every conditional scope: each name is declared under one set of conditions.
    names = [hp.name for hp in oracle.hyperparameters.space]
    assert len(names) == len(set(names)), sorted(names)
    assert not next(hp for hp in oracle.hyperparameters.space if hp.name == "batch_size").conditions


# -- b: a failing trial is recorded; a search of failures fails in one line ----------------


def plant_failure(monkeypatch, architecture: str | None) -> None:
    """``TabularHyperModel.fit`` raises for ``architecture`` (for every trial when ``None``)."""
    real_fit = TabularHyperModel.fit

    def fit(self: TabularHyperModel, hp: kt.HyperParameters, *args: Any, **kwargs: Any) -> Any:
        if architecture is None or hp.values.get("architecture") == architecture:
            raise ValueError("planted failure")
        return real_fit(self, hp, *args, **kwargs)

    monkeypatch.setattr(TabularHyperModel, "fit", fit)


def numeric_table(n: int = 160) -> pd.DataFrame:
    from tests.conftest import make_table

    return make_table(n)[["x1", "x2", "rooms", "y"]]


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path, monkeypatch, capfd) -> None:
    plant_failure(monkeypatch, "ft_transformer")
    reporter = Recorder()
    # The warm start tries mlp, then ft_transformer (which fails), then a third draw.
    result = fit(tmp_path, numeric_table(), reporter, target="y", models=("mlp", "ft_transformer"), max_trials=3)
    manifest = json.loads((result.run_dir / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["search"]["completed"] >= 1
    board = pd.read_csv(result.run_dir / "leaderboard.csv", keep_default_na=False)
    failed = board[board["architecture"] == "ft_transformer"]
    assert len(failed) >= 1 and (failed["status"] == "FAILED").all()
    assert (failed["reason"] == "ValueError: planted failure").all()
    assert (board.loc[board["status"] == "COMPLETED", "reason"] == "").all()
    assert [row["reason"] for row in manifest["leaderboard"] if row["status"] == "FAILED"]  # run.json has it too
    # The user sees one line per failed trial, never keras-tuner's traceback.
    lines = [m for m in reporter.messages if "planted failure" in m]
    assert lines and all("\n" not in m for m in lines) and "trial 1 (ft_transformer) failed" in lines[0]
    assert [s.status for s in reporter.ended if s.architecture == "ft_transformer"][:1] == ["FAILED"]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    # The traceback is kept with the trial.
    assert "Traceback" in json.loads((result.run_dir / "tuner" / "trial_1" / "trial.json").read_text())["message"]


def test_a_search_where_every_trial_fails_stops_with_the_reason_in_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    plant_failure(monkeypatch, None)
    with pytest.raises(UserError) as caught:
        fit(tmp_path, numeric_table(), target="y", models=("mlp", "linear"), max_trials=6)
    message = str(caught.value)
    assert "planted failure" in message and "\n" not in message
    # Three failures in a row with nothing completed end the search; the rest of max_trials is not spent.
    trials = sorted(p.name for p in (tmp_path / "run" / "tuner").glob("trial_*"))
    assert trials == ["trial_0", "trial_1", "trial_2"]
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["status"] == "failed" and "planted failure" in manifest["error"]
    assert "Traceback" not in "".join(capfd.readouterr())


def test_a_failing_refit_keeps_the_trial_weights(tmp_path: Path, monkeypatch) -> None:
    import autodl.train

    def broken_refit(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("refit exploded\nsecond line")

    monkeypatch.setattr(autodl.train, "refit", broken_refit)
    reporter = Recorder()
    # A text table searched from scratch refits its members (--refit auto).
    result = fit(tmp_path, passenger_table(), reporter, models=("mlp", "bag_of_ngrams"), max_trials=1)
    assert result.manifest["status"] == "complete" and result.manifest["final_model"]["refit"] == []
    assert "refit of trial 0 failed (RuntimeError: refit exploded); keeping its trial weights" in reporter.messages

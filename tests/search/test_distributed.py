"""Distributed search: keras-tuner's chief/worker engine with local worker processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from autodl.cli import main
from autodl.progress import NullReporter, TrialSummary
from autodl.search.distributed import WORKERS_DIR, cpu_shares, parse_address
from autodl.errors import UserError
from tests.conftest import make_table


class KillFirstWorker(NullReporter):
    """Records the chief's progress events and SIGKILLs worker0 as soon as it is seen running a trial."""

    def __init__(self, tuner_dir: Path) -> None:
        self.tuner_dir = tuner_dir
        self.begun: list[str] = []
        self.ended: list[TrialSummary] = []
        self.messages: list[str] = []
        self.killed: str | None = None

    def on_trial_begin(self, trial_id: str, architecture: str) -> None:
        self.begun.append(f"{trial_id} {architecture}")
        if self.killed is None and architecture.endswith(" on worker0"):
            pid = json.loads((self.tuner_dir / WORKERS_DIR / "worker0.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            self.killed = trial_id

    def on_trial_end(self, summary: TrialSummary) -> None:
        self.ended.append(summary)

    def message(self, text: str) -> None:
        self.messages.append(text)


def test_a_search_goes_on_when_a_worker_is_killed_mid_trial(tmp_path: Path) -> None:
    from autodl import AutoModel

    data = tmp_path / "table.csv"
    make_table(300).to_csv(data, index=False)
    out = tmp_path / "run"
    reporter = KillFirstWorker(out / "tuner")
    model = AutoModel(target="y", workers=2, max_trials=4, max_epochs=3, cv=0, out=out, reporter=reporter)
    model.fit(str(data))

    assert reporter.killed is not None, reporter.begun
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 4  # the asked number of trials, in one leaderboard
    failed = board[board["status"] != "COMPLETED"]
    assert failed["trial"].astype(str).tolist() == [reporter.killed] and failed["status"].tolist() == ["FAILED"]
    assert any("worker0 exited with code -9 mid-trial" in str(m) for m in reporter.messages), reporter.messages
    assert len({s.trial_id for s in reporter.ended}) == 4  # the combined view saw every trial end once
    assert sum(s.status == "COMPLETED" for s in reporter.ended) == 3
    # worker1 ran the rest; the run is as complete as a single-process one
    assert "worker1: ran" in (out / "logs" / "worker1.log").read_text()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["search"]["completed"] == 3
    assert model.predict(make_table(20).drop(columns="y")).shape == (20,)
    assert not (out / "tuner" / WORKERS_DIR / "worker1.json").exists()  # a worker that left cleanly says so


def test_cli_fit_with_two_workers_runs_the_asked_trials(tmp_path: Path, capsys) -> None:
    data = tmp_path / "table.csv"
    make_table(200, task="regression").to_csv(data, index=False)
    out = tmp_path / "run"
    code = main(["fit", str(data), "--target", "y", "--workers", "2", "--max-trials", "2", "--max-epochs", "2",
                 "--cv", "0", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 2 and (board["status"] == "COMPLETED").all()
    assert json.loads((out / "tuner" / "chief.json").read_text())["address"].startswith("127.0.0.1:")  # loopback by default
    ran = [int(line.split("ran ")[1].split()[0]) for w in ("worker0", "worker1")
           for line in (out / "logs" / f"{w}.log").read_text().split("\n") if ": ran " in line]
    assert sum(ran) == 2 and len(ran) == 2  # each worker reported, and no trial ran twice


def test_after_the_deadline_the_chief_gives_out_no_more_trials(tmp_path: Path) -> None:
    import keras_tuner as kt
    from keras_tuner.src import protos

    from autodl.search import make_oracle
    from autodl.search.distributed import _BudgetedServicer

    oracle = make_oracle("random", kt.Objective("val_accuracy", "max"), max_trials=5, seed=0)
    oracle._set_project_dir(str(tmp_path), "tuner")
    hp = kt.HyperParameters()
    hp.Choice("architecture", ["mlp", "resnet"])
    oracle.update_space(hp)
    stopping = [False]
    servicer = _BudgetedServicer(oracle, lambda: stopping[0])
    request = protos.get_service().CreateTrialRequest(tuner_id="worker0")
    assert servicer.CreateTrial(request, None).trial.status == protos.get_proto().TrialStatus.RUNNING
    stopping[0] = True  # the deadline passes
    request = protos.get_service().CreateTrialRequest(tuner_id="worker1")
    assert servicer.CreateTrial(request, None).trial.status == protos.get_proto().TrialStatus.STOPPED
    assert "worker1" not in oracle.tuner_ids and len(oracle.trials) == 1


def test_worker_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["worker", str(tmp_path), "--chief", "nohost"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["worker", str(tmp_path / "missing"), "--chief", "127.0.0.1:1"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_parse_address_and_cpu_shares() -> None:
    assert parse_address("10.0.0.5:8000") == ("10.0.0.5", 8000)
    assert parse_address("[::1]:9") == ("::1", 9)
    with pytest.raises(UserError):
        parse_address("10.0.0.5:99999")
    assert cpu_shares(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3]]
    assert cpu_shares(4, [0, 1]) == [[0], [1], [0], [1]]


def test_refit_is_data_parallel_under_mirrored_strategy(tmp_path: Path) -> None:
    """Two logical CPUs stand in for two GPUs; a table with a string column trains and predicts."""
    script = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras_tuner as kt, numpy as np
        from autodl.features import fit_stats
        from autodl.fit import FitConfig, prepare
        from autodl.recipes.tabular import predict
        from autodl.search import TabularHyperModel
        from autodl.train.refit import describe_strategy, refit
        from tests.conftest import make_table
        prepared = prepare(make_table(400), None, FitConfig(target="y", cv=0))
        train = prepared.data.take(prepared.split.train)
        hypermodel = TabularHyperModel(prepared.schema, fit_stats(train.x, prepared.schema), n_train_rows=len(train),
                                       architectures=["mlp"], text_models=[], metric="accuracy")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        model = refit(hypermodel, kt.HyperParameters(), train, epochs=15, seed=0, strategy=strategy)
        output = predict(model, prepared.test)
        labels = output.argmax(axis=1) if output.ndim == 2 and output.shape[1] > 1 else (output.reshape(-1) > 0.5)
        accuracy = float((labels.astype(int) == prepared.test.y).mean())
        print(describe_strategy(strategy), round(accuracy, 3))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().split("\n")[-1]
    assert last.startswith("MirroredStrategy (2 replicas) "), result.stdout
    assert float(last.split()[-1]) >= 0.75, result.stdout  # the majority class is about half the rows

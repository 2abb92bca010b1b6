"""The search's own behaviour: warm start, budget, checkpoints, memory."""

from __future__ import annotations

import copy
import time

import keras
import keras_tuner as kt
import numpy as np
import psutil
import pytest

from autodl.data.schema import ColumnSpec, Schema
from autodl.features import fit_stats, to_model_inputs
from autodl.features.frame import ModelData
from autodl.progress import NullReporter
from autodl.search import AutoTuner, Budget, TabularHyperModel, make_oracle
from autodl.search.oracle import WarmStartMixin
from tests.conftest import make_table

SCHEMA = Schema(
    "y",
    "binary",
    [
        ColumnSpec("x1", "numeric", "float", 100, 0.0),
        ColumnSpec("x2", "numeric", "float", 100, 0.1),
        ColumnSpec("city", "categorical", "string", 5, 0.0),
    ],
    classes=["no", "yes"],
)


NUMERIC_SCHEMA = Schema("y", "binary", SCHEMA.columns[:2], classes=["no", "yes"])


def tiny_data(n: int = 200, schema: Schema = SCHEMA) -> tuple[ModelData, ModelData]:
    df = make_table(n)
    y = (df["y"] == "yes").to_numpy().astype("int64")
    data = ModelData(to_model_inputs(df, schema), y)
    return data.take(np.arange(0, n * 3 // 4)), data.take(np.arange(n * 3 // 4, n))


def make_tuner(
    tmp_path, *, max_trials: int, budget: Budget | None = None, reporter=None, tuner: str = "random",
    schema: Schema = SCHEMA, **kw,
):
    train, _ = tiny_data(schema=schema)
    hypermodel = TabularHyperModel(schema, fit_stats(train.x, schema), n_train_rows=len(train), architectures=["mlp", "mlp_plr"])
    oracle = make_oracle(
        tuner, kt.Objective("val_accuracy", "max"), max_trials=max_trials, seed=0,
        initial_configs=[{"architecture": "mlp"}, {"architecture": "mlp_plr"}], max_epochs=3,
    )
    return AutoTuner(
        oracle=oracle, hypermodel=hypermodel, directory=str(tmp_path), project_name="tuner",
        budget=budget, reporter=reporter or NullReporter(), max_epochs=kw.pop("max_epochs", 3), **kw,
    )


def test_warm_start_runs_each_architecture_default_first(tmp_path):
    tuner = make_tuner(tmp_path, max_trials=3)
    train, valid = tiny_data()
    tuner.search(train, valid)
    trials = [tuner.oracle.trials[k] for k in sorted(tuner.oracle.trials)]
    assert [t.hyperparameters.values["architecture"] for t in trials[:2]] == ["mlp", "mlp_plr"]
    assert len(tuner.completed_trials()) == 3


def test_budget_refuses_a_trial_that_cannot_finish():
    budget = Budget(deadline=time.monotonic() + 10.0)
    assert budget.can_start([])
    assert budget.can_start([5.0, 6.0])
    # A typical trial is capped at a sixth of the search (5 s floor): 10 s left fits it...
    assert budget.can_start([30.0, 40.0])
    # ...but 3 s left does not fit a typical 5 s trial.
    assert not Budget(deadline=time.monotonic() + 3.0).can_start([30.0, 40.0])
    assert not Budget(deadline=time.monotonic() + 0.5).can_start([])
    assert Budget().can_start([1e9]) and Budget().trial_deadline() is None


def test_search_stops_at_the_deadline(tmp_path):
    budget = Budget(deadline=time.monotonic() + 8.0)
    tuner = make_tuner(tmp_path, max_trials=200, budget=budget, max_epochs=50)
    train, valid = tiny_data()
    start = time.monotonic()
    tuner.search(train, valid)
    assert time.monotonic() - start < 8.0 + 3.0
    assert 0 < len(tuner.oracle.trials) < 200


def test_cv_trial_reports_mean_of_folds(tmp_path):
    train, valid = tiny_data()
    pool = ModelData.concat([train, valid])
    folds = [(np.arange(0, 100), np.arange(100, 200)), (np.arange(100, 200), np.arange(0, 100))]
    tuner = make_tuner(tmp_path, max_trials=1, folds=folds)
    tuner.search(pool, None)
    trial = tuner.completed_trials()[0]
    assert trial.metrics.exists("best_epoch") and 1 <= tuner.best_epoch(trial) <= 3


class _MemoryProbe(NullReporter):
    def __init__(self) -> None:
        self.rss: list[int] = []

    def on_trial_end(self, summary) -> None:
        self.rss.append(psutil.Process().memory_info().rss)


@pytest.mark.parametrize("schema", [SCHEMA, NUMERIC_SCHEMA], ids=["mixed", "numeric-only"])
def test_memory_stays_flat_over_many_trials(tmp_path, schema):
    probe = _MemoryProbe()
    tuner = make_tuner(tmp_path, max_trials=15, reporter=probe, max_epochs=1, schema=schema)
    train, valid = tiny_data(schema=schema)
    tuner.search(train, valid)
    assert len(probe.rss) == 15
    # After warm-up (graph caches, first allocations), 10 more trials may not keep growing
    # (a leak of a model per trial, as before clear_session, grows by several MiB a trial).
    growth_mib = (probe.rss[-1] - probe.rss[4]) / 2**20
    assert growth_mib < 30, f"memory grew {growth_mib:.0f} MiB over 10 trials: {[r // 2**20 for r in probe.rss]}"


def test_warm_start_mixin_completes_defaults():
    hps = kt.HyperParameters()
    hps.Choice("architecture", ["a", "b"])
    with hps.conditional_scope("architecture", ["b"]):
        hps.Int("b/units", 1, 10, default=7)

    class Fake(WarmStartMixin):
        def __init__(self):
            super().__init__(initial_configs=[{"architecture": "b"}])
            self.hyperparameters = hps
            self.trials = {}

    values = Fake().populate_space("0")["values"]
    assert values == {"architecture": "b", "b/units": 7}


@pytest.mark.parametrize("kind", ["bayesian", "hyperband"])
def test_every_tuner_kind_runs(tmp_path, kind):
    tuner = make_tuner(tmp_path, max_trials=3, tuner=kind)
    train, valid = tiny_data()
    tuner.search(train, valid)
    assert 0 < len(tuner.completed_trials()) <= 3
    if kind == "hyperband":
        assert all("tuner/epochs" in t.hyperparameters.values for t in tuner.completed_trials())


def test_pruning_spares_the_checkpoint_of_a_running_trial(tmp_path):
    """A distributed search's chief prunes while workers still write their trials' best epochs."""
    tuner = make_tuner(tmp_path, max_trials=2)
    tuner.keep_top_k = 1
    train, valid = tiny_data()
    tuner.search(train, valid)
    running = copy.deepcopy(tuner.oracle.trials["0"])
    running.trial_id, running.status = "7", "RUNNING"
    tuner.oracle.trials["7"] = running
    tuner.checkpoint_path("7").parent.mkdir(parents=True, exist_ok=True)
    tuner.checkpoint_path("7").write_bytes(b"weights being written")
    tuner.prune_checkpoints()
    kept = [t for t in ("0", "1", "7") if tuner.checkpoint_path(t).exists()]
    assert kept == [tuner.ranked_trials()[0].trial_id, "7"]
    tuner.prune_checkpoints(keep=[])  # the end of a run keeps only what it names
    assert not tuner.checkpoint_path("7").exists()


def test_only_top_k_and_family_leaders_keep_weights_and_refits_count_epochs_to_the_lowest_loss(tmp_path):
    """Checkpoints of the top-k trials and of each top family's best trial (an ensemble of families needs
    them) stay, the others go; a refit trains for the epochs of lowest validation loss."""
    from autodl.search.tuner import describe_model, family_leaders

    tuner = make_tuner(tmp_path, max_trials=4, keep_top_k=2, keep_family_leaders=True, max_epochs=6)
    train, valid = tiny_data()
    tuner.search(train, valid)
    ranked = tuner.ranked_trials()
    leaders = family_leaders(ranked, 2)
    assert len({describe_model(t.hyperparameters.values) for t in leaders}) == 2 and leaders[0] is ranked[0]
    kept = [t for t in tuner.oracle.trials if (tmp_path / "tuner" / f"trial_{t}" / "checkpoint.weights.h5").exists()]
    assert sorted(kept) == sorted({t.trial_id for t in ranked[:2]} | {t.trial_id for t in leaders})
    assert len(kept) < len(ranked)  # the rest were deleted
    for trial in ranked:
        log = tuner.trial_log[trial.trial_id]
        assert log["epochs"] >= log["loss_epoch"] >= 1 and tuner.best_epoch(trial) == log["loss_epoch"]
    # The epoch count follows the validation loss, whatever the objective did.
    tuner.on_trial_begin(ranked[0])
    for epoch, (loss, accuracy) in enumerate([(0.9, 0.6), (0.7, 0.8), (0.5, 0.7), (0.6, 0.7)]):
        tuner.on_epoch_end(ranked[0], None, epoch, {"val_loss": loss, "val_accuracy": accuracy})
    assert tuner._lowest_loss == (0.5, 3)


def test_loading_a_trial_gives_its_best_weights_without_optimizer_warnings(tmp_path):
    import warnings

    tuner = make_tuner(tmp_path, max_trials=1, max_epochs=3)
    train, valid = tiny_data()
    tuner.search(train, valid)
    best = tuner.ranked_trials()[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = tuner.load_model(best)
    assert not [w for w in caught if "optimizer" in str(w.message)]
    reference = tuner._build_hypermodel(best.hyperparameters)
    reference.load_weights(tuner.checkpoint_path(best.trial_id))
    for loaded, saved in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded), keras.ops.convert_to_numpy(saved))


def test_trial_orphaned_by_a_crash_is_retried(tmp_path):
    tuner = make_tuner(tmp_path, max_trials=2)
    train, valid = tiny_data()
    tuner.search(train, valid)
    # Simulate a kill between keras-tuner writing trial_1's file and the oracle's state.
    trial_path = tmp_path / "tuner" / "trial_1" / "trial.json"
    import json

    state = json.loads(trial_path.read_text())
    state["status"] = "RUNNING"
    trial_path.write_text(json.dumps(state))
    oracle_path = tmp_path / "tuner" / "oracle.json"
    oracle_state = json.loads(oracle_path.read_text())
    oracle_state["start_order"] = ["0"]
    oracle_path.write_text(json.dumps(oracle_state))
    resumed = make_tuner(tmp_path, max_trials=2, overwrite=False)
    resumed.search(train, valid)
    assert sorted(t.trial_id for t in resumed.completed_trials()) == ["0", "1"]

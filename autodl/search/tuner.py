"""How to run a trial: a keras-tuner ``Tuner`` with budgets, progress, CV and tidy disk use.

``AutoTuner`` is keras-tuner's own ``Tuner`` driven by any oracle from
``autodl.search.oracle``. It adds what a user expects of a long search:

- a wall-clock ``Budget``: no trial starts that cannot finish in the time
  left, and a running trial stops at its deadline (checked every batch);
- K-fold cross-validation inside a trial, when ``folds`` are given;
- progress events for a ``Reporter``;
- trials that raise are recorded as FAILED (the exception's last line reported in
  one line, the traceback kept in the trial's ``trial.json``) and the search goes on;
- checkpoints only for the top-k trials, so the disk does not fill up;
- memory that stays flat: every build starts with ``keras.backend.clear_session()``
  (keras-tuner's ``_try_build``) and data pipelines are rebuilt per trial.

State lives in ``directory/project_name`` (the run's ``tuner/``); constructing
the tuner again over the same folder resumes the search, retrying the trial
that was running when the process stopped.
"""

from __future__ import annotations

import json
import math
import signal
import statistics
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras_tuner.src.engine import tuner_utils

from autodl import metrics as metrics_lib
from autodl.errors import UserError
from autodl.features.frame import ModelData
from autodl.progress import NullReporter, Reporter, TrialSummary


class BudgetSpent(Exception):
    """Raised before a trial that the time budget cannot fit; ends the search cleanly."""


@dataclass
class Budget:
    """Wall-clock limits of one search (``time.monotonic`` seconds)."""

    deadline: float | None = None
    min_trials: int = 6
    start: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.start

    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    def trial_cap(self) -> float:
        """No single trial may take more than a sixth of the search, so several run."""
        seconds = self.seconds
        return math.inf if seconds is None else max(seconds / self.min_trials, 5.0)

    def can_start(self, durations: list[float]) -> bool:
        remaining = self.remaining()
        if remaining <= 1.0:
            return False
        if not durations:
            return True
        typical = min(statistics.median(durations), self.trial_cap())
        return remaining >= 0.8 * typical

    def trial_deadline(self) -> float | None:
        if self.deadline is None:
            return None
        return min(self.deadline, time.monotonic() + self.trial_cap())


class AutoTuner(kt.Tuner):
    """keras-tuner ``Tuner`` with autodl's budget, CV, progress and checkpoint policy."""

    def __init__(
        self,
        *,
        oracle: kt.Oracle,
        hypermodel: kt.HyperModel,
        directory: str,
        project_name: str = "tuner",
        overwrite: bool = False,
        budget: Budget | None = None,
        reporter: Reporter | None = None,
        seed: int = 0,
        max_epochs: int = 100,
        folds: list[tuple[np.ndarray, np.ndarray]] | None = None,
        keep_top_k: int = 3,
        keep_family_leaders: bool = False,
    ) -> None:
        self.budget = budget or Budget()
        self.reporter: Reporter = reporter or NullReporter()
        self.seed = seed
        self.max_epochs = max_epochs
        self.folds = folds
        self.keep_top_k = keep_top_k
        # Also keep the best trial of each of the top-k model families (an ensemble of families).
        self.keep_family_leaders = keep_family_leaders
        self._trial_deadline: float | None = None
        self._trial_start = 0.0
        self._interrupted = False
        super().__init__(
            oracle=oracle, hypermodel=hypermodel, directory=directory, project_name=project_name, overwrite=overwrite
        )
        # On a worker of a distributed search the oracle is keras-tuner's OracleClient: the
        # chief keeps the trials, prunes checkpoints and resumes; this process only runs trials.
        self.is_worker = not hasattr(self.oracle, "trials")
        if not self.is_worker:
            self.oracle.verbose = 0
            self._requeue_orphaned_trials()
        # One log per process (tuner0 alone, or each worker), so workers never write the same file.
        name = "autodl_trials.json" if self.tuner_id == "tuner0" else f"autodl_trials_{self.tuner_id}.json"
        self._log_path = Path(self.project_dir) / name
        self.own_log: dict[str, dict[str, float]] = json.loads(self._log_path.read_text()) if self._log_path.exists() else {}
        self.trial_log: dict[str, dict[str, float]] = self.read_trial_log()

    def read_trial_log(self) -> dict[str, dict[str, float]]:
        """Seconds and epochs of every finished trial, from this process's log and any workers'."""
        log: dict[str, dict[str, float]] = {}
        for path in sorted(Path(self.project_dir).glob("autodl_trials*.json")):
            try:
                log.update(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a worker's log being replaced; its entries come back next read
        return log

    def _requeue_orphaned_trials(self) -> None:
        """Retries trials a crash left RUNNING but the oracle's own state never recorded.

        keras-tuner writes a new trial's file before the oracle's state; a process killed
        between the two leaves a trial that reload neither finishes nor retries, and it
        would count against ``max_trials`` forever.
        """
        queue = self.oracle._retry_queue
        ongoing = {t.trial_id for t in self.oracle.ongoing_trials.values()}
        for trial in self.oracle.trials.values():
            if trial.status == "RUNNING" and trial.trial_id not in queue and trial.trial_id not in ongoing:
                queue.append(trial.trial_id)

    # -- the search loop's hooks ---------------------------------------------------------

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:  # type: ignore[override]
        self.reporter.on_search_begin(
            metric=self.oracle.objective.name.removeprefix("val_"),
            max_trials=self.oracle.max_trials or 0, time_limit=self.budget.seconds,
            done=0 if self.is_worker else len(self.completed_trials()),
        )
        previous = self._catch_ctrl_c()
        try:
            super().search(*fit_args, **fit_kwargs)
        except BudgetSpent:
            self.on_search_end()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.reporter.on_search_end()
        if not self.is_worker:
            self._raise_if_every_trial_failed()

    def _raise_if_every_trial_failed(self) -> None:
        """A search whose trials all failed ends the fit with the last failure's one-line reason."""
        trials = list(self.oracle.trials.values())
        failed = [t for t in trials if t.status in FAILED]
        if not failed or self.completed_trials():
            return
        ended = [self.oracle.trials[i] for i in self.oracle.end_order if self.oracle.trials[i].status in FAILED]
        last = (ended or failed)[-1]
        raise UserError(
            f"no trial completed: {len(failed)} of {len(trials)} failed, the last (trial {last.trial_id}, "
            f"{architecture_of(last)}) with {failure_reason(last) or 'no message'}; its traceback is in "
            f"{Path(self.project_dir) / f'trial_{last.trial_id}' / 'trial.json'}"
        )

    def _catch_ctrl_c(self) -> Any:
        """Turns Ctrl-C into a flag checked at every batch.

        Python raises KeyboardInterrupt wherever the main thread happens to be, and
        inside a garbage-collection callback (TensorFlow has many) it is printed and
        lost, so the search would run on. A flag raised again from our own hooks is
        never lost; a second Ctrl-C interrupts at once.
        """
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigint(signum: int, frame: Any) -> None:
            self._interrupted = True
            signal.signal(signal.SIGINT, signal.default_int_handler)

        return signal.signal(signal.SIGINT, on_sigint)

    def _check_interrupt(self) -> None:
        if self._interrupted:
            raise KeyboardInterrupt()

    def pre_create_trial(self) -> None:
        self._check_interrupt()
        # A failed trial's time (often a build that raised in a second) says nothing about how long
        # a trial takes: only trials that ran to the end size the next one.
        durations = [v["seconds"] for v in self.trial_log.values() if not v.get("failed")]
        if not self.budget.can_start(durations):
            raise BudgetSpent()

    def on_trial_begin(self, trial: kt.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)
        self._trial_start = time.monotonic()
        self._trial_deadline = self.budget.trial_deadline()
        self._lowest_loss: tuple[float, int] = (math.inf, 0)  # (validation loss, epochs to reach it)
        self.reporter.on_trial_begin(trial.trial_id, architecture_of(trial))

    def on_batch_end(self, trial: Any, model: keras.Model, batch: int, logs: Any = None) -> None:
        self._check_interrupt()
        if self._trial_deadline is not None and time.monotonic() > self._trial_deadline:
            model.stop_training = True

    def on_epoch_end(self, trial: Any, model: keras.Model, epoch: int, logs: Any = None) -> None:
        score = (logs or {}).get(self.oracle.objective.name)
        self.reporter.on_epoch_end(trial.trial_id, epoch, None if score is None else float(score))
        self._epochs_run = epoch + 1
        loss = (logs or {}).get("val_loss")
        if loss is not None and float(loss) < self._lowest_loss[0]:
            self._lowest_loss = (float(loss), epoch + 1)

    def on_trial_end(self, trial: kt.engine.trial.Trial) -> None:
        self._check_interrupt()  # before recording: an interrupted trial is retried on resume
        seconds = time.monotonic() - self._trial_start
        self.trial_log[trial.trial_id] = {"seconds": seconds, "epochs": float(getattr(self, "_epochs_run", 0)),
                                          "loss_epoch": float(getattr(self, "_lowest_loss", (0.0, 0))[1])}
        if trial.status in FAILED:  # still INVALID here: the oracle's end_trial makes it FAILED
            self.trial_log[trial.trial_id]["failed"] = 1.0
        self.own_log[trial.trial_id] = self.trial_log[trial.trial_id]
        tmp = self._log_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.own_log))
        tmp.replace(self._log_path)  # a distributed search's chief may read it at any moment
        super().on_trial_end(trial)
        if not self._is_hyperband() and not self.is_worker:  # Hyperband resumes later rounds from earlier checkpoints.
            self.prune_checkpoints()
        best = self.oracle.get_best_trials(1)
        scored = self.oracle.get_trial(trial.trial_id) if self.is_worker else trial  # a worker's chief scores its trials
        self.reporter.on_trial_end(
            TrialSummary(
                trial_id=trial.trial_id,
                architecture=architecture_of(trial),
                status=str(trial.status),
                score=score_of(scored),
                best_score=score_of(best[0]) if best else math.nan,
                epochs=int(getattr(self, "_epochs_run", 0)),
                seconds=seconds,
                trials_done=0 if self.is_worker else len(self.completed_trials()),
            )
        )

    # -- running one trial --------------------------------------------------------------

    def _try_run_and_update_trial(self, trial: Any, *fit_args: Any, **fit_kwargs: Any) -> None:
        """keras-tuner's, less the traceback it prints for every failed trial (its ``config.DEBUG`` is on).

        A failed trial is INVALID (the oracle makes it FAILED, as no retry is allowed) with its
        traceback as ``trial.message``, saved in its ``trial.json``; the user sees one line.
        KeyboardInterrupt (and so Ctrl-C) and keras-tuner's ``FatalError`` still end the search.
        """
        try:
            self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
            trial.status = kt.engine.trial.TrialStatus.COMPLETED
            return
        except kt.errors.FatalError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other error fails this trial, not the search
            failed_for_good = isinstance(exc, kt.errors.FailedTrialError)
            trial.status = kt.engine.trial.TrialStatus.FAILED if failed_for_good else kt.engine.trial.TrialStatus.INVALID
            trial.message = traceback.format_exc()
        self.reporter.message(f"trial {trial.trial_id} ({architecture_of(trial)}) failed: {failure_reason(trial)}; "
                              "the search goes on")

    def run_trial(self, trial: Any, train_data: ModelData, valid_data: ModelData | None, **kwargs: Any) -> Any:
        hp = trial.hyperparameters
        trial_seed = self.seed + int(trial.trial_id)
        keras.utils.set_random_seed(trial_seed)
        epochs, initial_epoch = self.max_epochs, 0
        if "tuner/epochs" in hp.values:
            epochs, initial_epoch = hp.values["tuner/epochs"], hp.values["tuner/initial_epoch"]
            if not self._previous_checkpoint_exists(hp):
                initial_epoch = 0
        self._epochs_run = 0
        if self.folds is None:
            return super().run_trial(
                trial, train_data, valid_data, epochs=epochs, initial_epoch=initial_epoch, seed=trial_seed
            )
        return self._run_cv_trial(trial, train_data, epochs=epochs, seed=trial_seed)

    def _run_cv_trial(self, trial: Any, pool: ModelData, *, epochs: int, seed: int) -> dict[str, float]:
        """The metric over the folds' out-of-fold predictions at one epoch count; fold 0's best weights are the trial checkpoint.

        That epoch count is the one a refit trains for (the folds' mean epoch of lowest
        validation loss), and every fold is scored there: letting each fold pick its own best
        epoch by the metric made small tables look several points better than any model
        trained once could be (on 40-row folds, the best of 30 noisy epochs), and selection
        then rewarded the luckiest folds. The out-of-fold predictions are saved
        (``held_out_path``): the run chooses its decision threshold on them and checks the
        model against a constant guess, since the configuration that ships is retrained on every row.
        """
        objective = self.oracle.objective
        best_epochs: list[int] = []
        folds: list[tuple[np.ndarray, list[np.ndarray]]] = []  # each fold's valid rows and per-epoch outputs
        for k, (train_rows, valid_rows) in enumerate(self.folds or []):
            if k > 0 and self._trial_deadline is not None and time.monotonic() > self._trial_deadline:
                break  # the folds done so far are the evidence we have
            model = self._try_build(trial.hyperparameters)
            fold_valid = pool.take(valid_rows)
            outputs = EpochOutputs(fold_valid)
            callbacks: list[keras.callbacks.Callback] = [tuner_utils.TunerCallback(self, trial), outputs]
            if k == 0:
                callbacks.append(
                    tuner_utils.SaveBestEpoch(objective=objective, filepath=str(self.checkpoint_path(trial.trial_id)))
                )
            history = self.hypermodel.fit(
                trial.hyperparameters, model, pool.take(train_rows), fold_valid,
                epochs=epochs, callbacks=callbacks, seed=seed + 1000 * k,
            )
            # The epoch count for a refit follows validation loss: accuracy plateaus early
            # and its first maximum would stop a refit long before the model has converged.
            losses = np.asarray(history.history.get("val_loss", history.history[objective.name]), dtype=np.float64)
            best_epochs.append(int(np.nanargmin(losses)) + 1)
            if outputs.outputs:
                folds.append((valid_rows, outputs.outputs))
        epoch = max(1, round(float(np.mean(best_epochs))))
        rows = np.concatenate([valid for valid, _ in folds]) if folds else np.empty(0, dtype=np.int64)
        if not len(rows):
            return {objective.name: math.nan, "best_epoch": float(epoch)}
        output = np.concatenate([outs[min(epoch, len(outs)) - 1] for _, outs in folds])
        order = np.argsort(rows)
        rows, output = rows[order], output[order]
        weight = None if pool.score_weight is None else pool.score_weight[rows]
        # One score over all held-out rows, as the saved predictions recompute it (not a mean of fold scores).
        task = self.hypermodel.schema.task  # type: ignore[attr-defined]
        score = float(metrics_lib.compute(task, pool.y[rows], output, weight)[objective.name.removeprefix("val_")])  # type: ignore[index]
        self.save_held_out(trial.trial_id, rows, output)
        return {objective.name: score, "best_epoch": float(np.mean(best_epochs))}

    def held_out_path(self, trial_id: str) -> Path:
        """A cross-validated trial's out-of-fold predictions: row positions in the CV pool and outputs."""
        return Path(self.project_dir) / "held_out" / f"trial_{trial_id}.npz"

    def save_held_out(self, trial_id: str, rows: np.ndarray, output: np.ndarray) -> None:
        path = self.held_out_path(trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, rows=rows, output=output)
        tmp.replace(path)

    def load_held_out(self, trial_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(rows, output)`` saved by a cross-validated trial, or ``None``."""
        path = self.held_out_path(trial_id)
        if not path.exists():
            return None
        with np.load(path) as saved:  # plain arrays: allow_pickle stays off
            return saved["rows"], saved["output"]

    def _configure_tensorboard_dir(self, callbacks: Any, trial: Any, execution: int = 0) -> None:
        # keras-tuner imports tensorboard here unconditionally; TF 2.21 no longer ships it
        # and autodl passes no TensorBoard callback.
        return None

    def _is_hyperband(self) -> bool:
        return isinstance(self.oracle, kt.oracles.HyperbandOracle)

    def _build_hypermodel(self, hp: kt.HyperParameters) -> keras.Model:
        model = super()._build_hypermodel(hp)
        # Hyperband continues a promising trial from its checkpoint.
        if "tuner/trial_id" in hp.values and self._previous_checkpoint_exists(hp):
            model.load_weights(self.checkpoint_path(hp.values["tuner/trial_id"]))
        return model

    def _previous_checkpoint_exists(self, hp: kt.HyperParameters) -> bool:
        previous = hp.values.get("tuner/trial_id")
        return previous is not None and self.checkpoint_path(previous).exists()

    # -- results ------------------------------------------------------------------------

    def completed_trials(self) -> list[Any]:
        return [t for t in self.oracle.trials.values() if t.status == "COMPLETED" and t.score is not None]

    def ranked_trials(self) -> list[Any]:
        """Completed trials, best first."""
        reverse = self.oracle.objective.direction == "max"
        return sorted(self.completed_trials(), key=lambda t: _sort_key(t.score, reverse), reverse=reverse)

    def best_epoch(self, trial: Any) -> int:
        """Epochs to train the trial's configuration for on all data.

        Like the folds of a cross-validated trial, a single split's trial counts them to its
        lowest validation loss, not its best objective: accuracy peaks early and noisily,
        and a refit stopped there has not converged (on three splits of the text benchmark,
        ensembles refit for the loss epoch scored 0.4 accuracy points higher on average).
        """
        if trial.metrics.exists("best_epoch"):
            return max(1, round(trial.metrics.get_last_value("best_epoch")))
        loss_epoch = self.trial_log.get(trial.trial_id, {}).get("loss_epoch", 0)
        if loss_epoch:
            return max(1, int(loss_epoch))
        return max(1, int(trial.best_step or 0) + 1)

    def load_model(self, trial: Any) -> keras.Model:
        """The trial's model with its best-epoch weights, for prediction."""
        # Keras writes the optimizer's state into the weights file too; a freshly built model has
        # no optimizer variables yet, so every load warned that it skipped them. Prediction
        # needs only the weights.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer", category=UserWarning)
            return super().load_model(trial)

    def checkpoint_path(self, trial_id: str) -> Path:
        """Where a trial's best-epoch weights live (absent once pruned)."""
        return Path(self._get_checkpoint_fname(trial_id))

    def prune_checkpoints(self, keep: list[str] | None = None) -> None:
        """Deletes the weights of trials outside the top-k (or, at the end of a run, outside ``keep``).

        Without ``keep``, a trial still running is left alone: in a distributed search
        another worker may be writing its best epoch, and it may yet be the best trial.
        """
        keep_ids = set(keep or [])
        if keep is None:
            ranked = self.ranked_trials()
            keep_ids = {t.trial_id for t in ranked[: self.keep_top_k]}
            if self.keep_family_leaders:
                keep_ids |= {t.trial_id for t in family_leaders(ranked, self.keep_top_k)}
        for trial_id, trial in self.oracle.trials.items():
            if trial_id not in keep_ids and (keep is not None or trial.status != "RUNNING"):
                self.checkpoint_path(trial_id).unlink(missing_ok=True)
                self.held_out_path(trial_id).unlink(missing_ok=True)


class EpochOutputs(keras.callbacks.Callback):
    """Keeps the predictions on a fold's validation rows after every epoch (CV is for small tables only)."""

    def __init__(self, valid: ModelData) -> None:
        from autodl.recipes.tabular import PREDICT_BATCH, make_dataset

        super().__init__()
        # The same pipeline ValidationScore predicts through, so the model's predict function is not traced twice.
        self.dataset = make_dataset(valid, batch_size=PREDICT_BATCH, with_targets=False)
        self.outputs: list[np.ndarray] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        output = np.asarray(self.model.predict(self.dataset, verbose=0), dtype=np.float64)
        self.outputs.append(output.reshape(-1) if output.ndim == 2 and output.shape[1] == 1 else output)


class ImageTuner(AutoTuner):
    """``AutoTuner`` for image trials, where the recipe decides which weights a trial keeps.

    The recipes restore the best epoch at the end and (training from scratch)
    recalibrate BatchNormalization after the last one; keras-tuner's per-epoch
    checkpoint would keep weights from before that. So the trial's checkpoint is
    written once the recipe is done, and its score is measured on those weights.
    """

    def run_trial(self, trial: Any, train_data: Any, valid_data: Any, **kwargs: Any) -> Any:
        hp = trial.hyperparameters
        trial_seed = self.seed + int(trial.trial_id)
        keras.utils.set_random_seed(trial_seed)
        self._epochs_run = 0
        model = self._try_build(hp)
        result = self.hypermodel.fit(
            hp, model, train_data, valid_data, callbacks=[tuner_utils.TunerCallback(self, trial)], seed=trial_seed
        )
        path = self.checkpoint_path(trial.trial_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(path)
        return result

    def best_epoch(self, trial: Any) -> int:
        if trial.metrics.exists("epochs"):
            return max(1, round(trial.metrics.get_last_value("epochs")))
        return super().best_epoch(trial)


FAILED = ("FAILED", "INVALID")  # trial statuses of a trial that raised (INVALID until the oracle ends it)


def failure_reason(trial: Any) -> str:
    """A failed trial's one-line reason: the last non-empty line of its traceback (``ValueError: ...``); else ``""``."""
    if trial.status not in FAILED:
        return ""
    lines = [line.strip() for line in (trial.message or "").splitlines() if line.strip()]
    if lines:
        return lines[-1]
    # keras-tuner ends a trial INVALID, with no message, when its objective came out NaN.
    return "the objective was NaN" if trial.score is not None and math.isnan(trial.score) else ""


def architecture_of(trial: Any) -> str:
    """``mlp``, or ``mlp+textcnn`` when the trial also chose a text encoder."""
    return describe_model(trial.hyperparameters.values)


def family_leaders(ranked: list[Any], k: int) -> list[Any]:
    """The best trial of each of the ``k`` best model families (head + text encoder), best first."""
    leaders: dict[str, Any] = {}
    for trial in ranked:
        leaders.setdefault(describe_model(trial.hyperparameters.values), trial)
    return list(leaders.values())[:k]


def describe_model(values: dict[str, Any]) -> str:
    text_model = values.get("text_model")
    architecture = str(values.get("architecture", "?"))
    return architecture if text_model is None else f"{architecture}+{text_model}"


def score_of(trial: Any) -> float:
    return math.nan if trial.score is None else float(trial.score)


def _sort_key(score: float, reverse: bool) -> float:
    if score is None or math.isnan(score):
        return -math.inf if reverse else math.inf
    return score

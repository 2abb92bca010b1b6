"""The fit pipeline: read → schema → split → search → refit/ensemble → evaluate → write.

Each stage is one function with typed inputs and outputs; ``run_fit`` chains
them and writes everything into one run directory. ``AutoModel.fit`` (api.py)
and ``autodl fit`` (cli.py) are thin layers over ``run_fit``.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autodl import metrics as metrics_lib
from autodl.data import (
    Schema,
    Split,
    file_fingerprint,
    infer_schema,
    kfold_indices,
    prepare_target,
    read_table,
    schema_table,
    train_valid_test_split,
)
from autodl.errors import RunError, UserError
from autodl.features.frame import ModelData, to_model_inputs
from autodl.progress import NullReporter, Reporter
from autodl.run import RunDir, atomic_write, atomic_write_text, write_json

SMALL_DATA_ROWS = 3000  # at or below this many training rows, --cv auto selects with 5 folds
AUTO_FOLDS = 5
# --class-weight auto balances the classes only for metrics that reward it: plain accuracy, log
# loss and ROC AUC are best served by the rows as they come (balancing an 11%-positive table
# made a model decide for a balanced problem and lose to always predicting the majority).
BALANCING_METRICS = ("balanced_accuracy",)


@dataclass
class FitConfig:
    """Validated options of one fit (the CLI flags and ``AutoModel`` arguments).

    ``target`` is required for tables; a folder of class folders has none. ``image_size``
    (square sizes to search; empty: chosen from the images) and ``flip`` apply to images.
    """

    target: str | None = None
    task: str | None = None
    metric: str | None = None
    time_limit: float | None = None
    max_trials: int = 20
    tuner: str = "bayesian"
    cv: int | str | None = "auto"
    seed: int = 0
    out: str | None = None
    overwrite: bool = False
    weight_column: str | None = None
    drop: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None
    ensemble: int = 5
    refit: str = "auto"
    max_epochs: int = 100
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    class_weight: str = "auto"
    sensitive: tuple[str, ...] = ()
    sensitive_as_feature: bool = False
    positive: str | None = None
    fairness_constraint: str | None = None
    mitigate: str | None = None
    grid_size: int = 7
    image_size: tuple[int, ...] = ()
    flip: bool = True
    workers: int = 0
    listen: str = "127.0.0.1"
    stream: bool | None = None  # None: stream files above autodl.features.streaming.STREAM_THRESHOLD_BYTES

    def validate(self, kind: str = "tabular") -> "FitConfig":
        """Checks the options for a fit of ``kind`` (``"tabular"`` or ``"image"``); raises a one-line ``UserError``."""
        from autodl.search import TUNERS

        if self.tuner not in TUNERS:
            raise UserError(f"unknown tuner {self.tuner!r}; choose one of: {', '.join(TUNERS)}")
        if self.max_trials < 1:
            raise UserError("--max-trials must be at least 1")
        if self.time_limit is not None and self.time_limit <= 0:
            raise UserError("--time-limit must be positive, e.g. 90s, 10m or 1h")
        if self.refit not in ("auto", "always", "never"):
            raise UserError(f"--refit must be auto, always or never, not {self.refit!r}")
        if self.class_weight not in ("auto", "balanced", "none"):
            raise UserError(f"--class-weight must be auto, balanced or none, not {self.class_weight!r}")
        if self.ensemble < 1:
            raise UserError("--ensemble must be at least 1 (1 disables ensembling)")
        if self.models and any(m.startswith("hub:") for m in self.models):
            from autodl.zoo.text.hub import PREFIX, register_preset

            # A keras-hub preset joins the zoo under its own name before the names are checked.
            self.models = tuple(register_preset(m) if m.startswith(PREFIX) else m for m in self.models)
        if self.models:
            from autodl import zoo

            # A table's search chooses architectures and, for text columns, text encoders.
            kinds = ("tabular", "text") if kind == "tabular" else (kind,)
            known = [e.card.name for k in kinds for e in zoo.list_entries(k)]
            unknown = [m for m in self.models if m not in known]
            if unknown:
                raise UserError(f"unknown {kind} model {unknown[0]!r}; choose from: {', '.join(known)}")
        if isinstance(self.cv, int) and self.cv == 1:
            raise UserError("--cv needs at least 2 folds (or 0 for a single validation split)")
        if self.workers < 0:
            raise UserError("--workers must be 0 (one process) or more worker processes")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 16 for s in self.image_size):
            raise UserError(f"--image-size takes sizes in pixels of at least 16, e.g. 96,128; got {self.image_size!r}")
        if kind == "image":
            self._validate_image()
        else:
            if self.target is None:
                raise UserError("--target is required for a table: name the column to predict")
            if self.image_size:
                raise UserError("--image-size applies to images (a folder of class folders or a CSV of image paths)")
        self._validate_fairness()
        return self

    def _validate_image(self) -> None:
        """Table-only options are refused by name, rather than silently ignored, on image data."""
        defaults = FitConfig()
        table_only = {
            "--weight-column": self.weight_column is not None, "--drop": bool(self.drop),
            "--sensitive-as-feature": self.sensitive_as_feature, "--fairness-constraint": self.fairness_constraint is not None,
            "--mitigate": self.mitigate is not None, "--task": self.task not in (None, "binary", "multiclass"),
            "--refit": self.refit != defaults.refit, "--cv": self.cv not in (defaults.cv, 0, None),
            "--workers": self.workers > 0,
        }
        used = [flag for flag, on in table_only.items() if on]
        if used:
            raise UserError(f"{used[0]} applies to tables only; image fits classify the images by their class")
        if self.tuner == "hyperband":
            raise UserError("--tuner hyperband works on tables only; image fits use bayesian or random")
        if self.metric not in (None, "accuracy"):
            raise UserError(f"image fits optimize accuracy; --metric {self.metric} works on tables only")

    def _validate_fairness(self) -> None:
        if self.fairness_constraint is not None:
            from autodl.audit.constraint import parse_constraint
            from autodl.audit.mitigation import THRESHOLD_PARITIES

            constraint = parse_constraint(self.fairness_constraint)
            if self.mitigate == "threshold" and constraint.parity not in THRESHOLD_PARITIES:
                raise UserError(f"--mitigate threshold cannot target {constraint.metric} (no per-group threshold equalizes it); "
                                "use --mitigate reductions")
        if self.mitigate and self.mitigate.replace("_", "").lower() in ("expgrad", "exponentiatedgradient"):
            raise UserError("ExponentiatedGradient yields a randomized mixture of models that cannot ship as one model; "
                            "use --mitigate reductions (Fairlearn GridSearch: one deterministic model)")
        if self.mitigate not in (None, "threshold", "reductions"):
            raise UserError(f"--mitigate must be threshold or reductions, not {self.mitigate!r}")
        if (self.fairness_constraint or self.mitigate) and not self.sensitive:
            flag = "--fairness-constraint" if self.fairness_constraint else "--mitigate"
            raise UserError(f"{flag} needs the sensitive columns: add --sensitive, e.g. --sensitive sex")
        if self.grid_size < 2:
            raise UserError("--grid-size must be at least 2")


@dataclass
class Prepared:
    """The labelled rows, as model inputs, and where each one goes."""

    schema: Schema
    data: ModelData
    split: Split
    test: ModelData
    folds: list[tuple[np.ndarray, np.ndarray]] | None
    test_frame: pd.DataFrame
    frame: pd.DataFrame  # the labelled rows as read (sensitive columns included), aligned with ``data``
    target_mean: float = 0.0
    target_std: float = 1.0
    # The streaming path: the training rows stay in the file (``data`` holds only validation and
    # test rows), and their statistics come from streaming passes.
    stream: Any = None
    stats: Any = None


@dataclass
class FitResult:
    run_dir: Path
    manifest: dict[str, Any]
    leaderboard: pd.DataFrame
    model: Any = field(repr=False, default=None)


def parse_time_limit(value: str | float | int | None) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"1.5h"``; ``None`` means no limit."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise UserError(f"cannot read time limit {value!r}; write it like 90s, 10m or 1h") from None


def default_run_dir(data: str | pd.DataFrame, target: str) -> Path:
    stem = Path(data).stem if isinstance(data, (str, Path)) else "dataframe"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in f"{stem}-{target}")
    return Path("runs") / safe


# -- stages ------------------------------------------------------------------------------


def read_inputs(data: str | Path | pd.DataFrame, role: str = "data") -> tuple[pd.DataFrame, str]:
    """A DataFrame and a fingerprint that tells a resumed run whether it sees the same data."""
    if isinstance(data, pd.DataFrame):
        if data.empty:
            raise UserError(f"the {role} DataFrame is empty")
        digest = pd.util.hash_pandas_object(data, index=False).to_numpy()
        return data.reset_index(drop=True), "frame:" + str(int(digest.sum(dtype=np.uint64)))
    return read_table(data, role=role), "file:" + file_fingerprint(data)


def prepare(
    df: pd.DataFrame, test_df: pd.DataFrame | None, config: FitConfig, *, split: Split | None = None
) -> Prepared:
    schema = infer_fit_schema(df, config)
    labelled = df[df[config.target].notna()].reset_index(drop=True)
    data = to_data(labelled, schema)
    stratify = schema.is_classification
    if split is None:
        split = train_valid_test_split(
            data.y,  # type: ignore[arg-type]
            stratify=stratify,
            valid_fraction=config.valid_fraction,
            test_fraction=0.0 if test_df is not None else config.test_fraction,
            seed=config.seed,
            class_names=schema.classes,
        )
    if stratify:
        counts = np.bincount(data.y, minlength=len(schema.classes or []))  # type: ignore[arg-type]
        lone = [repr(str(c)) for c, n in zip(schema.classes or [], counts) if n == 1]
        if lone:
            schema.notes.append(f"class{'es' if len(lone) > 1 else ''} {', '.join(lone)} with a single row: "
                                "kept for training only (too rare to validate or test)")
    if test_df is not None:
        test, test_frame = labelled_test(test_df, config, schema)
    else:
        test = data.take(split.test)
        test_frame = labelled.iloc[split.test].reset_index(drop=True)
    pool_rows = np.concatenate([split.train, split.valid])
    folds = None
    n_folds = resolve_cv(config.cv, len(pool_rows), text=any(c.kind == "text" for c in schema.features))
    if n_folds:
        # A default must not refuse data plain options can fit: with --cv auto, classes too
        # small for every fold are stratified together (and said so); an explicit --cv K stays strict.
        auto = config.cv == "auto"
        folds = kfold_indices(
            data.y[pool_rows], k=n_folds, stratify=stratify, seed=config.seed, class_names=schema.classes,  # type: ignore[index]
            pool_rare=auto,
        )
        if auto and stratify:
            counts = np.bincount(data.y[pool_rows], minlength=len(schema.classes or []))  # type: ignore[index]
            rare = [str(c) for c, n in zip(schema.classes or [], counts) if 0 < n < n_folds]
            if rare:
                schema.notes.append(f"{n_folds}-fold cross-validation: class{'es' if len(rare) > 1 else ''} "
                                    f"{', '.join(repr(c) for c in rare)} with fewer than {n_folds} rows "
                                    "stratified together (some folds miss them)")
    prepared = Prepared(schema=schema, data=data, split=split, test=test, folds=folds, test_frame=test_frame, frame=labelled)
    apply_weights(prepared, config)
    return prepared


def infer_fit_schema(df: pd.DataFrame, config: FitConfig) -> Schema:
    """The schema of the rows (or of a streaming sample), with the fit's dropped columns and checks."""
    if config.sensitive:
        from autodl.audit.audit import sensitive_groups

        sensitive_groups(df, config.sensitive)  # a clear error for an unknown or one-valued column, before the search
    # Sensitive columns are read for the audit but kept out of the model unless asked for.
    drop = config.drop + (() if config.sensitive_as_feature else tuple(c for c in config.sensitive if c not in config.drop))
    schema = infer_schema(df, config.target, task=config.task, weight_column=config.weight_column, drop=drop)
    check_fairness_options(schema, config)
    return schema


def labelled_test(test_df: pd.DataFrame, config: FitConfig, schema: Schema) -> tuple[ModelData, pd.DataFrame]:
    """A separate test file's labelled rows, as model data and as read."""
    if config.target not in test_df.columns:
        raise UserError(f"test file has no target column '{config.target}'; it needs labels to be scored")
    frame = test_df[test_df[config.target].notna()].reset_index(drop=True)
    return to_data(frame, schema), frame


def check_fairness_options(schema: Schema, config: FitConfig) -> None:
    """Fairness options that do not fit the target's task fail before the search, not after it."""
    from autodl.audit.constraint import DEFAULT_CONSTRAINT, constrainable_metrics, parse_constraint

    asked = [flag for flag, value in (("--fairness-constraint", config.fairness_constraint), ("--mitigate", config.mitigate),
                                      ("--positive", config.positive)) if value]
    binary_only = [f for f in asked if f == "--positive"] + (["--mitigate threshold"] if config.mitigate == "threshold" else [])
    if asked and schema.task == "multiclass" or binary_only and schema.task != "binary":
        flag = (binary_only or asked)[0]
        raise UserError(f"{flag} works on binary targets; '{schema.target}' is {schema.task} "
                        "(the audit still reports every group; multiclass one class against the rest)")
    if config.fairness_constraint or config.mitigate:
        constraint = parse_constraint(config.fairness_constraint or DEFAULT_CONSTRAINT)
        if config.mitigate and not config.fairness_constraint and schema.task == "regression":
            raise UserError("--mitigate on a regression target needs --fairness-constraint naming a regression gap, "
                            "e.g. \"rmse_difference<=0.1\"")
        if constraint.task != schema.task:
            raise UserError(f"{constraint.metric} is not a {schema.task} metric; for '{schema.target}' choose one of: "
                            f"{', '.join(constrainable_metrics(schema.task))}")
    classes = [str(c) for c in schema.classes or []]
    if config.positive is not None and config.positive not in classes:
        raise UserError(f"--positive {config.positive!r} is not a class of '{schema.target}'; classes are: {', '.join(classes)}")


def positive_class(schema: Schema, config: FitConfig) -> str | None:
    """The favourable decision the audit and any constraint are about (default: the second class in sorted order)."""
    if schema.task != "binary":
        return None
    return config.positive if config.positive is not None else str((schema.classes or [""])[-1])


def to_data(df: pd.DataFrame, schema: Schema) -> ModelData:
    y = prepare_target(df[schema.target], schema)
    weight = None
    if schema.weight_column:
        weight = df[schema.weight_column].to_numpy(dtype=np.float32)
    return ModelData(to_model_inputs(df, schema), y, weight, None if weight is None else weight.copy())


def resolve_cv(cv: int | str | None, n_rows: int, *, text: bool = False) -> int:
    """Number of folds, or 0 for a single validation split.

    ``auto`` cross-validates small tables, but not tables with text: a text
    encoder costs many times a tabular model per epoch, and five folds would
    leave a budget room for one or two of them.
    """
    if cv == "auto":
        return AUTO_FOLDS if n_rows <= SMALL_DATA_ROWS and not text else 0
    if cv in (None, 0, "0", "none"):
        return 0
    return int(cv)  # type: ignore[arg-type]


def balancing_weights(counts: np.ndarray, config: FitConfig, metric: str) -> np.ndarray | None:
    """One weight per class that balances the training rows' class counts, or ``None`` when not asked or needed.

    ``auto`` balances only for a metric that rewards it (balanced accuracy) and classes that
    are not balanced already; ``balanced`` always, ``none`` never.
    """
    present = counts[counts > 0]
    balance = config.class_weight == "balanced" or (
        config.class_weight == "auto" and metric in BALANCING_METRICS and present.min() < present.max()
    )
    if not balance:
        return None
    return np.where(counts > 0, counts.sum() / (len(present) * np.maximum(counts, 1)), 0.0)


BALANCED_NOTE = "trained for balanced classes (--class-weight): metrics count the rows as they come"


def apply_weights(prepared: Prepared, config: FitConfig) -> None:
    """Training weights: class weights (when asked for) times the weight column, scaled to mean 1 on training rows.

    Metrics keep counting rows with the weight column alone (``ModelData.score_weight``).
    """
    data, schema = prepared.data, prepared.schema
    metric = metrics_lib.validate_metric(config.metric, schema.task)
    train_rows = np.concatenate([prepared.split.train, prepared.split.valid]) if prepared.folds else prepared.split.train
    if schema.task == "regression":
        y_train = data.y[prepared.split.train]  # type: ignore[index]
        prepared.target_mean = float(np.mean(y_train))
        prepared.target_std = float(np.std(y_train)) or 1.0
    weights = np.ones(len(data), dtype=np.float32) if data.sample_weight is None else data.sample_weight.copy()
    if schema.is_classification:
        class_weight = balancing_weights(np.bincount(data.y[train_rows], minlength=len(schema.classes or [])), config, metric)  # type: ignore[index]
        if class_weight is not None:
            weights = weights * class_weight[data.y].astype(np.float32)  # type: ignore[index]
            schema.notes.append(BALANCED_NOTE)
    if schema.weight_column is None and not np.any(weights != 1.0):
        data.sample_weight = None
        return
    weights = weights / max(float(weights[train_rows].mean()), 1e-12)
    data.sample_weight = weights.astype(np.float32)


@dataclass
class Final:
    """The model the run ships, and why it is that one."""

    model: Any
    kind: str  # "single", "ensemble" or "refit" (one configuration retrained on all rows)
    members: list[str]
    reason: str
    valid_score: float
    strategy: str | None = None  # the tf.distribute strategy of a refit
    # Members retrained on train + validation: the validation rows no longer score them.
    refit: list[str] = field(default_factory=list)
    # Predictions of the shipped configuration on rows it did not train on (validation rows, or
    # out-of-fold under CV; before any refit): the decision threshold and the baseline check read them.
    held_out: "HeldOut | None" = None


@dataclass
class HeldOut:
    """Held-out predictions: ``rows`` are positions in ``Prepared.data``, ``output`` the model's output on them."""

    rows: np.ndarray
    output: np.ndarray


def warm_start_config(architecture: str, text_model: str | None = None) -> dict[str, Any]:
    """The first trial of each architecture (and text encoder): its defaults, at a learning rate it trains well with."""
    config: dict[str, Any] = {"architecture": architecture}
    if text_model is not None:
        config["text_model"] = text_model
    if architecture == "ft_transformer" or text_model == "text_transformer":
        config["learning_rate"] = 3e-4  # attention is less stable at 1e-3 (the paper tunes 1e-5..1e-3)
    elif architecture == "linear":
        config["learning_rate"] = 3e-3  # one layer on sparse TF-IDF: at 1e-3 it needs 100+ epochs to converge
    return config


def _text_entry_available(name: str, models: tuple[str, ...] | None) -> bool:
    """An encoder whose optional package is missing is left out of a default search, and named if asked for."""
    from autodl import zoo

    reason = zoo.get(name).unavailable_reason()
    if reason is None:
        return True
    if models and name in models:
        raise UserError(f"--models {name}: {reason}")
    return False


# A table of text only needs no tabular architecture beyond a head on the text encoder's output:
# first the L2-regularized linear head (an MLP on TF-IDF vectors overfits within an epoch or two),
# then the MLP.
TEXT_ONLY_HEADS = ("linear", "mlp")


def search_space(schema: Schema, models: tuple[str, ...] | None) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Architectures, text encoders (when there are text columns) and the warm-start trials.

    Warm start, so a short budget sees each choice once: on a table of text only,
    where the encoder matters most, every encoder with the first head, then the
    other heads with the first encoder; beside other columns, where text is one
    branch, every architecture with the first encoder, then every other encoder
    with the first architecture.
    """
    from autodl import zoo

    tabular = zoo.list_entries("tabular")
    texts = [e.card.name for e in zoo.list_entries("text") if _text_entry_available(e.card.name, models)]
    has_text = any(c.kind == "text" for c in schema.features)
    text_only = has_text and all(c.kind == "text" for c in schema.features)
    default = list(TEXT_ONLY_HEADS) if text_only else [e.card.name for e in tabular if e.default_search]
    architectures = [m for m in models or () if m in {e.card.name for e in tabular}] or default
    text_models = ([m for m in models or () if m in texts] or texts) if has_text else []
    if not text_models:
        return architectures, [], [warm_start_config(a) for a in architectures]
    if text_only:
        initial = [warm_start_config(architectures[0], t) for t in text_models]
        initial += [warm_start_config(a, text_models[0]) for a in architectures[1:]]
    else:
        initial = [warm_start_config(a, text_models[0]) for a in architectures]
        initial += [warm_start_config(architectures[0], t) for t in text_models[1:]]
    return architectures, text_models, initial


def search(
    prepared: Prepared, config: FitConfig, run: RunDir, *, metric: str, deadline: float | None, reporter: Reporter,
    resume: bool, source: DataSource | None = None,
) -> Any:
    """Runs (or resumes) the keras-tuner search; returns the tuner with its trials.

    With ``config.workers``, this process is the chief of a distributed search:
    it serves the oracle and local worker processes run the trials.
    """
    tuner = make_tuner(prepared, config, run, metric=metric, deadline=deadline, reporter=reporter, resume=resume)
    if config.workers:
        if source is None:
            raise RunError("a distributed search needs the data as a file or DataFrame (internal: no source given)")
        serve(tuner, config, run, source=source, deadline=deadline, reporter=reporter)
    else:
        run_search(tuner, prepared)
    return tuner


def run_search(tuner: Any, prepared: Prepared) -> None:
    """The trials of this process: all of them, or a worker's share of a distributed search."""
    data, split = prepared.data, prepared.split
    if prepared.folds:
        tuner.search(data.take(np.concatenate([split.train, split.valid])), None)
    else:
        tuner.search(prepared.stream or data.take(split.train), data.take(split.valid))


def make_tuner(
    prepared: Prepared, config: FitConfig, run: RunDir, *, metric: str, deadline: float | None, reporter: Reporter, resume: bool
) -> Any:
    """The search's hypermodel, oracle and tuner (over ``run``'s ``tuner/`` folder)."""
    import keras_tuner as kt

    from autodl.features import fit_stats
    from autodl.search import AutoTuner, Budget, TabularHyperModel, make_oracle

    data, split = prepared.data, prepared.split
    pool_rows = np.concatenate([split.train, split.valid])
    train_rows = pool_rows if prepared.folds else split.train
    stats = prepared.stats or fit_stats(data.take(train_rows).x, prepared.schema)
    for column, text in stats.texts.items():
        if text.n_truncated:
            reporter.message(f"text column '{column}': {text.n_truncated} of {len(train_rows)} training texts are longer "
                             f"than {text.sequence_length} words; sequence models read their first {text.sequence_length}")
    architectures, text_models, initial = search_space(prepared.schema, config.models)
    n_train = len(prepared.folds[0][0]) if prepared.folds else len(prepared.stream or split.train)
    hypermodel = TabularHyperModel(
        prepared.schema, stats, n_train_rows=n_train, architectures=architectures, text_models=text_models,
        metric=metric, target_mean=prepared.target_mean, target_std=prepared.target_std,
    )
    objective = kt.Objective(f"val_{metric}", metrics_lib.direction(metric))
    oracle = make_oracle(
        config.tuner, objective, max_trials=config.max_trials, seed=config.seed,
        initial_configs=initial, max_epochs=config.max_epochs,
    )
    tuner = AutoTuner(
        oracle=oracle, hypermodel=hypermodel, directory=str(run.path), project_name="tuner",
        overwrite=not resume, budget=Budget(deadline=deadline, min_trials=_min_trials(text_models, initial)),
        reporter=reporter, seed=config.seed,
        max_epochs=config.max_epochs, folds=prepared.folds,
        # Constrained selection chooses among all trials, so all keep their weights until then.
        keep_top_k=config.max_trials if config.fairness_constraint else max(config.ensemble, 1),
        keep_family_leaders=searches_text_from_scratch(prepared, config),
    )
    return tuner


@dataclass
class DataSource:
    """Where a fit's data came from, so worker processes can read the same rows."""

    data: str | Path | pd.DataFrame
    fingerprint: str
    test_data: str | Path | pd.DataFrame | None = None


def serve(tuner: Any, config: FitConfig, run: RunDir, *, source: DataSource, deadline: float | None, reporter: Reporter) -> None:
    """Chief of a distributed search: serves the oracle, starts ``config.workers`` local workers, waits."""
    import socket
    import sys

    from autodl.search.distributed import Chief, ChiefInfo

    tuner_dir = Path(tuner.project_dir)
    chief = Chief(tuner, deadline=deadline, reporter=reporter, host=config.listen)
    address = chief.start()
    ChiefInfo(
        address=address, data=_shared_path(source.data, tuner_dir / "data.pkl"), fingerprint=source.fingerprint,
        test_data=None if source.test_data is None else _shared_path(source.test_data, tuner_dir / "test_data.pkl"),
        deadline_unix=None if deadline is None else time.time() + (deadline - time.monotonic()),
    ).write(tuner_dir)
    port = address.rpartition(":")[2]
    wildcard = config.listen in ("0.0.0.0", "::")
    # Other machines reach a chief listening on every interface by this machine's name.
    public = f"{socket.gethostname()}:{port}" if wildcard else address
    reporter.message(f"distributed search: chief at {address}; {config.workers} local workers (logs in {run.path / 'logs'}); "
                     f"more can join with: autodl worker --chief {public} {run.path.resolve()}")
    local = f"127.0.0.1:{port}" if wildcard else address

    def command(tuner_id: str, cpus: list[int]) -> list[str]:
        return [sys.executable, "-m", "autodl", "worker", "--chief", local, str(run.path), "--id", tuner_id,
                "--cpus", ",".join(map(str, cpus))]

    chief.start_local_workers(config.workers, command, run.path / "logs")
    reporter.on_search_begin(metric=tuner.oracle.objective.name.removeprefix("val_"), max_trials=config.max_trials,
                             time_limit=tuner.budget.seconds, done=len(tuner.completed_trials()))
    try:
        chief.wait()
    finally:
        reporter.on_search_end()
    tuner.trial_log = tuner.read_trial_log()


def _shared_path(data: str | Path | pd.DataFrame, pickle_path: Path) -> str:
    """An absolute path workers can read: the file itself, or a DataFrame pickled into the run."""
    if isinstance(data, pd.DataFrame):
        data.to_pickle(pickle_path)
        return str(pickle_path.resolve())
    return str(Path(data).resolve())


def run_worker(run_dir: str | Path, chief: str, tuner_id: str, *, reporter: Reporter | None = None) -> int:
    """Joins a running distributed search as worker ``tuner_id``; returns how many trials it ran."""
    from autodl.search.distributed import ChiefInfo, Heartbeat, parse_address, worker_environment

    parse_address(chief)
    reporter = reporter or NullReporter()
    run = RunDir(run_dir)
    manifest = run.read_manifest()
    info = ChiefInfo.read(run.tuner_dir)
    config = FitConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["config"].items()})
    streaming = manifest["data"].get("streamed", False)
    if streaming:
        df, fingerprint = None, "file:" + file_fingerprint(info.data)
    else:
        df, fingerprint = _read_shared(info.data)
    if fingerprint != info.fingerprint:
        raise UserError(f"{info.data} here differs from the chief's data (fingerprint {fingerprint} vs {info.fingerprint}); "
                        "workers must see the same file")
    test_df = None if info.test_data is None else _read_shared(info.test_data)[0]
    if streaming:
        prepared = prepare_stream(info.data, test_df, config, reporter=reporter)
    else:
        prepared = prepare(df, test_df, config, split=_load_split(run))  # type: ignore[arg-type]
    metric = metrics_lib.validate_metric(config.metric, prepared.schema.task)
    with worker_environment(tuner_id, chief), Heartbeat(run.tuner_dir, tuner_id):
        tuner = make_tuner(prepared, config, run, metric=metric, deadline=info.deadline_monotonic(), reporter=reporter, resume=True)
        before = len(tuner.own_log)
        run_search(tuner, prepared)
    return len(tuner.own_log) - before


def _read_shared(path: str) -> tuple[pd.DataFrame, str]:
    if path.endswith(".pkl"):
        frame = pd.read_pickle(path)
        return read_inputs(frame)
    return read_inputs(path)


def _min_trials(text_models: list[str], initial: list[dict[str, Any]]) -> int:
    """How many trials the budget is shared among at least (a trial's time cap is budget / this).

    Six for tables. A text search whose warm start is fewer trials may give each
    more: fine-tuning a pretrained encoder alone can need most of a budget.
    """
    return min(6, len(initial)) if text_models else 6


def finalize(
    tuner: Any, prepared: Prepared, config: FitConfig, *, metric: str, deadline: float | None, reporter: Reporter
) -> Final:
    """Chooses the shipped model: refit (CV), ensemble of top trials (members refit on text tables), or the best trial."""
    from autodl.features import make_inputs
    from autodl.recipes.tabular import predict
    from autodl.search.tuner import family_leaders
    from autodl.train import average_models, greedy_ensemble, informative_members

    ranked = tuner.ranked_trials()
    if not ranked:
        failures = [t for t in tuner.oracle.trials.values() if t.status in ("FAILED", "INVALID") and t.message]
        if failures:
            raise UserError(f"no trial completed: {len(failures)} failed, the last with "
                            f"{failures[-1].message.strip().splitlines()[-1]}; run with --debug for its traceback")
        raise UserError("no trial finished within the budget; raise --time-limit or --max-trials")
    best = ranked[0]
    split, data, schema = prepared.split, prepared.data, prepared.schema
    if prepared.folds is not None and config.refit != "never":
        (model,), strategy = refit_members(tuner, [best], prepared, config, deadline=deadline, reporter=reporter)
        if model is not None:
            return Final(model, "refit", [best.trial_id], "cross-validated configuration retrained on all training rows",
                         float(best.score), strategy, refit=[best.trial_id], held_out=out_of_fold(tuner, best, prepared))
    top = [t for t in ranked[: config.ensemble] if tuner.checkpoint_path(t.trial_id).exists()]
    if not top:
        raise RunError("the best trials' checkpoints are missing from the run's tuner/ folder; re-run with --overwrite")
    if prepared.folds is not None:
        return Final(tuner.load_model(top[0]), "single", [top[0].trial_id], "best trial (fold-0 weights); refit disabled or out of time",
                     float(top[0].score), held_out=out_of_fold(tuner, top[0], prepared))
    valid = data.take(split.valid)
    text_search = searches_text_from_scratch(prepared, config)
    if text_search:
        # One trial per model family (head + encoder), best first: a 15% validation split of a
        # few thousand texts is too small to choose members by (greedy selection on it kept one
        # model), and different encoders err on different texts. On three splits of the text
        # benchmark the average of the top five families, refit, beat greedy selection by 1.1 points.
        top = [t for t in family_leaders(ranked, config.ensemble) if tuner.checkpoint_path(t.trial_id).exists()]
    models = [_named(tuner.load_model(t), f"trial_{t.trial_id}") for t in top]
    outputs = [predict(m, valid) for m in models]
    single_score = metrics_lib.compute(schema.task, valid.y, outputs[0], valid.score_weight)[metric]  # type: ignore[arg-type]
    chosen, score = [0], float(single_score)
    if text_search and len(models) > 1:
        chosen = informative_members(outputs, valid.y, task=schema.task, metric=metric, sample_weight=valid.score_weight)  # type: ignore[arg-type]
        score = float(metrics_lib.compute(schema.task, valid.y, np.mean([outputs[i] for i in chosen], axis=0), valid.score_weight)[metric])  # type: ignore[arg-type]
    elif len(models) > 1:
        candidates, ensemble_score = greedy_ensemble(outputs, valid.y, task=schema.task, metric=metric, sample_weight=valid.score_weight)  # type: ignore[arg-type]
        if len(candidates) > 1 and metrics_lib.is_better(ensemble_score, single_score, metric):
            chosen, score = candidates, ensemble_score
    trials = [top[i] for i in chosen]
    members = [models[i] for i in chosen]
    held_out = HeldOut(split.valid, np.mean([outputs[i] for i in chosen], axis=0))
    refit_ids: list[str] = []
    strategy = None
    if config.refit == "always" or (config.refit == "auto" and text_search):
        fresh, strategy = refit_members(tuner, trials, prepared, config, deadline=deadline, reporter=reporter,
                                        from_scratch_only=config.refit == "auto")
        for i, model in enumerate(fresh):
            if model is not None:
                members[i] = _named(model, f"trial_{trials[i].trial_id}")
                refit_ids.append(trials[i].trial_id)
    ids = [t.trial_id for t in trials]
    if len(members) > 1:
        retrained = f"; {len(refit_ids)} of them then retrained on train+validation" if refit_ids else ""
        left_out = len(models) - len(members) if text_search else 0
        weak = f" ({left_out} weaker famil{'y' if left_out == 1 else 'ies'} left out)" if left_out else ""
        why = (f"the best trial of each of {len(members)} model families, averaged{weak}" if text_search else
               f"averaging {len(members)} top trials beats the best single trial on validation")
        reason = f"{why} ({score:.4f} vs {single_score:.4f} {metric} on validation){retrained}"
        return Final(average_models(members, make_inputs(schema)), "ensemble", ids, reason, score,
                     strategy if refit_ids else None, refit=refit_ids, held_out=held_out)
    if refit_ids:
        return Final(members[0], "refit", ids, "best configuration on validation, retrained on train+validation", score,
                     strategy, refit=refit_ids, held_out=held_out)
    return Final(members[0], "single", ids, "best trial on validation (its best-epoch weights)", score, held_out=held_out)


def out_of_fold(tuner: Any, trial: Any, prepared: Prepared) -> HeldOut | None:
    """A cross-validated trial's out-of-fold predictions, as rows of ``prepared.data``."""
    saved = tuner.load_held_out(trial.trial_id)
    if saved is None:
        return None
    rows, output = saved
    pool_rows = np.concatenate([prepared.split.train, prepared.split.valid])
    return HeldOut(pool_rows[rows], output)


@dataclass
class Decision:
    """How the shipped model turns probabilities into labels, and how it compares with a constant guess."""

    threshold: float | None  # binary targets: the cut on the second class's probability; None: argmax
    metric: str
    score: float  # the shipped configuration's held-out score, with the threshold
    rows: str  # "validation" or "out-of-fold"
    baseline: Any  # autodl.decision.BaselineCheck

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "metric": self.metric, f"held_out_{self.metric}": self.score,
                "rows": self.rows, "baseline": self.baseline.to_dict()}


def decide_labels(final: Final, prepared: Prepared, config: FitConfig, *, metric: str, reporter: Reporter) -> Decision | None:
    """Chooses a binary target's decision threshold on held-out rows and checks the model against a constant guess.

    The threshold is stored in the schema (``Schema.threshold``), so ``predict``, the serving
    signature and the edge runner decide alike. Fairness options decide with their own
    rules (per-group thresholds, constrained selection) and keep argmax.
    """
    from autodl.decision import check_baseline, choose_threshold

    held = final.held_out
    schema, data = prepared.schema, prepared.data
    if held is None or data.y is None or len(held.rows) == 0:
        return None
    y = data.y[held.rows]
    weight = None if data.score_weight is None else data.score_weight[held.rows]
    threshold = None
    if schema.task == "binary" and not (config.fairness_constraint or config.mitigate):
        threshold = choose_threshold(y, held.output, metric, weight)
        schema.threshold = threshold
    score = float(metrics_lib.compute(schema.task, y, held.output, weight, threshold)[metric])
    split = prepared.split
    train_rows = np.concatenate([split.train, split.valid]) if prepared.folds else split.train
    y_train = data.y[train_rows] if len(train_rows) else y  # streamed: the training rows stay in the file
    baseline = check_baseline(schema.task, metric, y_train, y, score, weight, schema.classes)
    if baseline.below:
        reporter.message(baseline.message())
    if threshold is not None and threshold != 0.5:
        reporter.message(f"decision threshold {threshold:.3f} on the probability of '{schema.classes[1]}' "  # type: ignore[index]
                         f"(chosen on {'out-of-fold' if prepared.folds else 'validation'} rows for {metric})")
    return Decision(threshold, metric, score, "out-of-fold" if prepared.folds else "validation", baseline)


def searches_text_from_scratch(prepared: Prepared, config: FitConfig) -> bool:
    """Whether this is a text table whose search trains text encoders from scratch.

    Such a search ships an average of model families, each retrained on train + validation
    (``--refit auto``): its models learn much from the 15% of rows the validation split
    holds back (on three splits of the sentiment benchmark, refit models scored 1.5 points
    of accuracy higher on average). Pretrained encoders are not refit.
    """
    from autodl import zoo

    if prepared.stream is not None or prepared.folds is not None:
        return False
    text_models = search_space(prepared.schema, config.models)[1]
    return any(zoo.get(name).card.fine_tuning is None for name in text_models)


def refit_members(
    tuner: Any, trials: list[Any], prepared: Prepared, config: FitConfig, *, deadline: float | None, reporter: Reporter,
    from_scratch_only: bool = False,
) -> tuple[list[Any], str]:
    """Each trial's configuration retrained on train + validation for its best epoch count (``None`` where it is not), and the strategy used.

    A member is skipped when the time left cannot fit it, or (``from_scratch_only``) when it
    fine-tunes a pretrained text encoder: those gain least from more rows, and cost most.
    A refit that raises keeps the member's trial weights too (reported in one line): the
    trial's model is a sound fallback, and one failing member should not fail the fit.
    """
    from autodl import zoo
    from autodl.search.tuner import describe_model
    from autodl.train import refit
    from autodl.train.refit import describe_strategy, refit_strategy

    split = prepared.split
    pool = prepared.data.take(np.concatenate([split.train, split.valid]))
    n_folds = len(prepared.folds) if prepared.folds else 1
    n_trained = len(prepared.folds[0][0]) if prepared.folds else len(split.train)
    strategy = refit_strategy()
    models: list[Any] = []
    for trial in trials:
        values = trial.hyperparameters.values
        text_model = values.get("text_model")
        if from_scratch_only and text_model and zoo.get(text_model).card.fine_tuning is not None:
            models.append(None)
            continue
        epochs = tuner.best_epoch(trial)
        seconds = tuner.trial_log.get(trial.trial_id, {}).get("seconds", 0.0)
        # A trial trains once per fold on fewer rows (and past its best epoch): scale to one pass over all rows.
        expected = seconds / n_folds * len(pool) / max(n_trained, 1) * 1.2
        if deadline is not None and time.monotonic() + expected >= deadline:
            reporter.message(f"refit of trial {trial.trial_id} skipped: not enough time left; keeping its trial weights")
            models.append(None)
            continue
        reporter.message(f"refit: {describe_model(values)} (trial {trial.trial_id}) on all {len(pool)} rows, {epochs} epochs, "
                         f"{describe_strategy(strategy)}")
        try:
            models.append(refit(tuner.hypermodel, trial.hyperparameters, pool, epochs=epochs, seed=config.seed,
                                deadline=deadline, strategy=strategy))
        except Exception as exc:  # noqa: BLE001 - not KeyboardInterrupt: Ctrl-C still stops the fit
            reason = (f"{type(exc).__name__}: {exc}".strip().splitlines() or [type(exc).__name__])[0]
            reporter.message(f"refit of trial {trial.trial_id} failed ({reason}); keeping its trial weights")
            models.append(None)
    return models, describe_strategy(strategy)


def _named(model: Any, name: str) -> Any:
    import keras

    # Members of an ensemble need distinct names to nest in one functional model.
    return keras.Model(model.input, model.output, name=name)


def predict_output(model: Any, data: ModelData, task: str) -> np.ndarray:
    from autodl.recipes.tabular import predict

    out = predict(model, data)
    return out.reshape(-1) if task == "regression" else out


def evaluate_output(schema: Schema, y: np.ndarray, output: np.ndarray, sample_weight: np.ndarray | None) -> dict[str, float]:
    """All metrics of the task, labels decided at the run's threshold."""
    return metrics_lib.compute(schema.task, y, output, sample_weight, schema.threshold)


def decided_output(schema: Schema, output: np.ndarray) -> np.ndarray:
    """The output with a binary target's labels decided at the run's threshold (one-hot rows), for code that reads argmax."""
    if schema.task == "regression" or schema.threshold is None:
        return output
    from autodl.decision import decide, one_hot

    return one_hot(decide(output, schema.threshold), output.shape[1])


def prediction_frame(schema: Schema, output: np.ndarray) -> pd.DataFrame:
    """``prediction`` (at the run's decision threshold) plus one ``proba_<class>`` column per class for classifiers."""
    if schema.task == "regression":
        return pd.DataFrame({"prediction": output})
    classes = schema.classes or []
    frame = pd.DataFrame({"prediction": [classes[i] for i in metrics_lib.decide(output, schema.threshold)]})
    for j, label in enumerate(classes):
        frame[f"proba_{label}"] = output[:, j]
    return frame


def held_out_frame(prepared: Prepared, final: Final) -> pd.DataFrame:
    """``valid_predictions.csv``: the target, the decided prediction and the probabilities on the held-out rows."""
    held = final.held_out
    assert held is not None
    schema = prepared.schema
    frame = prediction_frame(schema, held.output)
    frame.insert(0, schema.target, prepared.frame[schema.target].to_numpy()[held.rows])
    frame.insert(0, "row", held.rows)
    return frame


def leaderboard_frame(tuner: Any, metric: str) -> pd.DataFrame:
    """One row per trial, best first; ``reason`` is a failed trial's exception in one line (its last traceback line)."""
    from autodl.search.tuner import describe_model, failure_reason

    rows = []
    ranked_ids = [t.trial_id for t in tuner.ranked_trials()]
    for trial in tuner.oracle.trials.values():
        log = tuner.trial_log.get(trial.trial_id, {})
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        rows.append(
            {
                "rank": ranked_ids.index(trial.trial_id) + 1 if trial.trial_id in ranked_ids else None,
                "trial": trial.trial_id,
                "architecture": describe_model(values),
                f"val_{metric}": None if trial.score is None else float(trial.score),
                "epochs": tuner.best_epoch(trial) if trial.status == "COMPLETED" else None,
                "seconds": round(log.get("seconds", math.nan), 2),
                "status": str(trial.status),
                "reason": failure_reason(trial),
                "hyperparameters": json.dumps(values, sort_keys=True, default=str),
            }
        )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(["rank", "trial"], na_position="last").reset_index(drop=True)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("autodl", "tensorflow", "keras", "keras-tuner", "numpy", "pandas", "scikit-learn"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# -- the whole pipeline ------------------------------------------------------------------


def prepare_stream(path: str | Path, test_df: pd.DataFrame | None, config: FitConfig, *, reporter: Reporter) -> Prepared:
    """``prepare`` for a file read in chunks: schema from a sample, statistics from a streaming pass.

    Only the validation and test rows (capped) are held in memory; the search trains
    on ``Prepared.stream``, which reads the training rows from the file each epoch.
    """
    from autodl.features.streaming import TableStream, held_out_fractions, scan, stream_stats

    if config.cv not in ("auto", 0, None):
        raise UserError("--cv needs every row in memory; with --stream the search selects on one validation split (drop --cv)")
    if config.refit == "always":
        raise UserError("--refit always needs every row in memory; with --stream the best trials are shipped (drop --refit)")
    if config.weight_column or config.mitigate == "reductions":
        flag = "--weight-column" if config.weight_column else "--mitigate reductions"
        raise UserError(f"{flag} is not supported with --stream yet; drop one of them")
    t0 = time.monotonic()
    scanned = scan(path, seed=config.seed)
    schema = infer_fit_schema(scanned.sample, config)
    valid_fraction, test_fraction = held_out_fractions(
        scanned.n_rows, config.valid_fraction, 0.0 if test_df is not None else config.test_fraction
    )
    sample = scanned.sample[scanned.sample[config.target].notna()]
    stats = stream_stats(path, schema, sample, seed=config.seed, valid_fraction=valid_fraction, test_fraction=test_fraction)
    reporter.message(f"streaming {scanned.n_rows:,} rows from {path}: {stats.n_train:,} train, {len(stats.valid):,} "
                     f"validation, {len(stats.test):,} test (schema from a {len(scanned.sample):,}-row sample; "
                     f"two passes in {time.monotonic() - t0:.0f} s)")
    held_out = pd.concat([stats.valid, stats.test], ignore_index=True)
    data = to_data(held_out, schema)
    n_valid = len(stats.valid)
    split = Split(train=np.empty(0, dtype=np.int64), valid=np.arange(n_valid), test=np.arange(n_valid, len(held_out)))
    metric = metrics_lib.validate_metric(config.metric, schema.task)
    class_weight = None if stats.class_counts is None else balancing_weights(stats.class_counts, config, metric)
    if class_weight is not None:
        data.sample_weight = class_weight[data.y].astype(np.float32)  # type: ignore[index]
        schema.notes.append(BALANCED_NOTE)
    if test_df is not None:
        test, test_frame = labelled_test(test_df, config, schema)
    else:
        test, test_frame = data.take(split.test), stats.test.reset_index(drop=True)
    stream = TableStream(str(path), schema, config.seed, valid_fraction, test_fraction, stats.n_train, class_weight)
    return Prepared(schema=schema, data=data, split=split, test=test, folds=None, test_frame=test_frame, frame=held_out,
                    target_mean=stats.target_mean, target_std=stats.target_std, stream=stream, stats=stats.features)


def open_run(config: FitConfig, data: str | Path | pd.DataFrame, fingerprint: str) -> tuple[RunDir, bool]:
    """The run directory, and whether this fit resumes an interrupted one."""
    run = RunDir(config.out or default_run_dir(data, config.target or "class"))
    if config.overwrite:
        run.clear()
        return run, False
    if run.exists():
        manifest = run.read_manifest()
        if manifest["status"] == "complete":
            raise RunError(
                f"'{run.path}' already holds a finished run; pass --overwrite to replace it or --out to write elsewhere"
            )
        if manifest.get("data", {}).get("fingerprint") != fingerprint or manifest.get("config", {}).get("target") != config.target:
            raise RunError(
                f"'{run.path}' holds an unfinished run on other data or another target; pass --overwrite to start fresh"
            )
        return run, run.split_path.exists()
    if run.path.exists() and any(run.path.iterdir()):
        raise RunError(f"'{run.path}' exists and is not an autodl run; choose another --out")
    run.create()
    return run, False


def run_fit(
    config: FitConfig,
    data: str | Path | pd.DataFrame,
    test_data: str | Path | pd.DataFrame | None = None,
    *,
    reporter: Reporter | None = None,
) -> FitResult:
    """Fits, evaluates and saves; the run directory's ``run.json`` says how it went."""
    start = time.monotonic()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    reporter = reporter or NullReporter()
    config.validate()
    from autodl.features.streaming import should_stream

    streaming = should_stream(data, config.stream)
    if streaming and isinstance(data, pd.DataFrame):
        raise UserError("--stream reads a file in chunks; this DataFrame is already in memory, so drop --stream")
    df, fingerprint = (None, "file:" + file_fingerprint(data)) if streaming else read_inputs(data)  # type: ignore[arg-type]
    test_df = read_inputs(test_data, role="test")[0] if test_data is not None else None
    run, resume = open_run(config, data, fingerprint)
    if streaming:
        prepared = prepare_stream(data, test_df, config, reporter=reporter)  # type: ignore[arg-type]
    else:
        prepared = prepare(df, test_df, config, split=_load_split(run) if resume else None)  # type: ignore[arg-type]
    schema = prepared.schema
    metric = metrics_lib.validate_metric(config.metric, schema.task)
    reporter.message(schema_table(schema))
    timings: dict[str, float] = {"prepare": time.monotonic() - start}
    if not resume:
        atomic_write(run.split_path, lambda p: np.savez(p, train=prepared.split.train, valid=prepared.split.valid, test=prepared.split.test))
    manifest: dict[str, Any] = {
        "status": "running",
        "autodl_version": versions()["autodl"],
        "started_at": started_at,
        "config": asdict(config),
        "data": {
            "source": str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>",
            "fingerprint": fingerprint,
            "rows": int(len(df)) if df is not None else int(len(prepared.stream) + len(prepared.frame)),
            "replaced_bytes": int(df.attrs.get("replaced_bytes", 0)) if df is not None else 0,
            "streamed": streaming,
            "test_source": None if test_data is None else (str(test_data) if not isinstance(test_data, pd.DataFrame) else "<DataFrame>"),
        },
        "task": schema.task,
        "target": schema.target,
        "metric": metric,
        "schema": schema.to_dict(),
        "split": {
            "train": int(len(prepared.stream)) if prepared.stream else int(len(prepared.split.train)),
            "valid": int(len(prepared.split.valid)),
            "test": int(len(prepared.test)),
            "cv_folds": len(prepared.folds) if prepared.folds else 0,
        },
        "seed": config.seed,
        "versions": versions(),
    }
    run.write_manifest(manifest)
    search_deadline = final_deadline = None
    if config.time_limit is not None:
        refit_mode = prepared.folds is not None or config.refit == "always" or (
            config.refit == "auto" and searches_text_from_scratch(prepared, config))
        reserve = max((0.25 if refit_mode else 0.05) * config.time_limit, min(20.0, 0.3 * config.time_limit))
        search_deadline = start + config.time_limit - reserve
        if config.mitigate == "reductions":  # the grid retrains the model several times: half the budget is its
            search_deadline = min(search_deadline, start + 0.5 * config.time_limit)
        final_deadline = start + 0.97 * config.time_limit
    try:
        from autodl.audit.mitigation import THRESHOLD_FILE
        from autodl.audit.stage import make_fair

        t0 = time.monotonic()
        tuner = search(prepared, config, run, metric=metric, deadline=search_deadline, reporter=reporter, resume=resume,
                       source=DataSource(data, fingerprint, test_data))
        timings["search"] = time.monotonic() - t0
        t0 = time.monotonic()
        final = finalize(tuner, prepared, config, metric=metric, deadline=final_deadline, reporter=reporter)
        timings["finalize"] = time.monotonic() - t0
        t0 = time.monotonic()
        fair = make_fair(tuner, final, prepared, config, metric=metric, positive=positive_class(schema, config),
                         deadline=final_deadline, reporter=reporter)
        final = fair.final
        if fair.summary:
            timings["fairness"] = time.monotonic() - t0
        t0 = time.monotonic()
        decision = None if fair.changed else decide_labels(final, prepared, config, metric=metric, reporter=reporter)
        if decision is not None:
            atomic_write_text(run.valid_predictions_path, held_out_frame(prepared, final).to_csv(index=False))
        test_output = predict_output(final.model, prepared.test, schema.task)
        test_metrics = evaluate_output(schema, prepared.test.y, test_output, prepared.test.score_weight)  # type: ignore[arg-type]
        shipped_output = decided_output(schema, test_output)
        if fair.thresholds is not None:
            shipped_output = fair.thresholds.decide_output(schema, prepared.test_frame, test_output)
            write_json(run.path / THRESHOLD_FILE, fair.thresholds.to_dict())
            fair.summary["mitigation"]["thresholds_file"] = THRESHOLD_FILE
            decided = evaluate_output(schema, prepared.test.y, shipped_output, prepared.test.score_weight)  # type: ignore[arg-type]
            # Log loss and AUC need scores, which thresholds do not change: only decision metrics move.
            test_metrics["with_thresholds"] = {k: decided[k] for k in ("accuracy", "balanced_accuracy", "f1") if k in decided}
        predictions = prediction_frame(schema, test_output)
        if fair.thresholds is not None:
            predictions["prediction"] = prediction_frame(schema, shipped_output)["prediction"]
        predictions.insert(0, schema.target, prepared.test_frame[schema.target].to_numpy())
        atomic_write_text(run.predictions_path, predictions.to_csv(index=False))
        leaderboard = leaderboard_frame(tuner, metric)
        atomic_write_text(run.leaderboard_path, leaderboard.to_csv(index=False))
        if config.sensitive:
            audit = audit_test_split(run, schema, prepared, config, fair, shipped_output)
            manifest["audit"] = {"file": "audit.json", "verdict": audit["verdict"], "sensitive": list(config.sensitive),
                                 "sensitive_as_feature": config.sensitive_as_feature}
            if "comparison" in audit:
                manifest["audit"]["comparison"] = audit["comparison"]
        if fair.summary:
            manifest["fairness"] = fair.summary
        tuner.prune_checkpoints(keep=[m for m in final.members if m not in final.refit])
        atomic_write(run.model_path, lambda p: final.model.save(p))
        timings["evaluate_and_save"] = time.monotonic() - t0
    except BaseException as exc:  # noqa: BLE001 - record why the run stopped, then re-raise
        run.record_stop(manifest, exc)
        raise
    timings["total"] = time.monotonic() - start
    manifest.update(
        status="complete",
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        final_model={
            "kind": final.kind,
            "members": final.members,
            "reason": final.reason,
            f"val_{metric}": final.valid_score,
            "refit": final.refit,
            "parameters": int(final.model.count_params()),
            **({"strategy": final.strategy} if final.strategy else {}),
        },
        best_trial={
            "trial": tuner.ranked_trials()[0].trial_id,
            "hyperparameters": {k: v for k, v in tuner.ranked_trials()[0].hyperparameters.values.items() if not k.startswith("tuner/")},
        },
        search={
            "tuner": config.tuner,
            "objective": f"val_{metric}",
            "direction": metrics_lib.direction(metric),
            "trials": int(len(leaderboard)),
            "completed": int((leaderboard["status"] == "COMPLETED").sum()) if len(leaderboard) else 0,
        },
        metrics={"validation": {metric: decision.score if decision is not None else final.valid_score}, "test": test_metrics},
        leaderboard=json.loads(leaderboard.drop(columns=["hyperparameters"]).to_json(orient="records")),
        timings={k: round(v, 2) for k, v in timings.items()},
    )
    manifest["schema"] = schema.to_dict()  # with the decision threshold chosen after the search
    if decision is not None:
        manifest["decision"] = decision.to_dict()
    texts = getattr(getattr(tuner.hypermodel, "stats", None), "texts", {})
    if texts:
        manifest["text_columns"] = {
            column: {"sequence_length": t.sequence_length, "truncated_training_texts": t.n_truncated,
                     "words": len(t.tokens), "ngrams": len(t.ngrams)}
            for column, t in texts.items()
        }
    manifest["run_dir"] = str(run.path)
    manifest["disk_bytes"] = run.size_bytes()
    run.write_manifest(manifest)
    return FitResult(run_dir=run.path, manifest=manifest, leaderboard=leaderboard, model=final.model)


def audit_test_split(
    run: RunDir, schema: Schema, prepared: Prepared, config: FitConfig, fair: Any, shipped_output: np.ndarray
) -> dict[str, Any]:
    """The shipped model's audit on the test split, beside the unconstrained model's when fairness options changed it."""
    from autodl.audit.report import audit_frame, compare_reports, write_audit

    positive = positive_class(schema, config)
    audit = audit_frame(schema, prepared.test_frame, shipped_output, config.sensitive, positive=positive, seed=config.seed)
    if fair.changed:
        before_output = predict_output(fair.unconstrained.model, prepared.test, schema.task)
        before = audit_frame(schema, prepared.test_frame, before_output, config.sensitive, positive=positive, seed=config.seed)
        shipped = fair.summary.get("mitigation", {}).get("method") or "constrained selection"
        audit["before"] = before
        audit["comparison"] = compare_reports({"unconstrained": before, shipped: audit})
    if fair.summary:
        audit["fairness"] = fair.summary
    write_audit(run.path, audit)
    return audit


def _load_split(run: RunDir) -> Split:
    with np.load(run.split_path) as z:
        return Split(train=z["train"], valid=z["valid"], test=z["test"])

"""Breadth benchmark (issue 23): autodl beside four peers on fifteen public tables.

    python bench/tables.py                          # everything: 2 min per AutoML fit (a few hours)
    python bench/tables.py --quick                  # smoke test: haberman, ecoli, mpg; seed 0; 20 s fits
    python bench/tables.py --tables haberman,mpg --seeds 0 --contenders majority,linear,lightgbm,autodl --time-limit 20s
    python bench/tables.py --contenders autodl --runs 3                   # autodl's run-to-run spread
    python bench/tables.py --contenders autodl --compare bench/results/tables.json
    python bench/tables.py --autogluon-python ../ag-venv/bin/python       # AutoGluon from its own environment

One deep benchmark (``tabular.py``: Adult and housing) says little about what users bring.
This one runs on the thirteen tables of ``<data>/tables/`` (tiny, wide, imbalanced, many
classes, missing values, ID-like, free-text and timestamp columns, regression) plus Adult
and California housing, and asks one question per table: is autodl below the trivial
prediction, below a linear model, below LightGBM defaults, and how far from AutoGluon?

Splits: a random 80/20 split with ``numpy.random.RandomState(seed).permutation``, first 80%
train; seed 0 for every table and also seeds 1 and 2 for tables under 1,000 rows (one test
row of a 42-row split moves accuracy by 2.4 points). Adult and housing keep the splits of
``tabular.py`` (loaded by its own loader). Every contender of a (table, seed) gets the same
rows, read by the same reader, and is scored by the same function, :func:`score`.

Each (table, seed, contender) runs in its own subprocess (see ``_harness``). Results: a
table on stdout and ``bench/results/tables.json`` (``tables-quick.json`` for ``--quick``),
per-run logs under ``bench/results/logs/tables[-quick]/``, autodl run directories under
``bench/results/runs/tables[-quick]/<table>-s<seed>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.markup import escape
from rich.table import Table

from _harness import (
    RESULTS_DIR,
    Job,
    add_child_args,
    child_data_dir,
    child_main,
    environment_info,
    format_duration,
    make_console,
    missing_data_note,
    parse_duration,
    resolve_data_dir,
    run_contender,
    save_results,
)
from tabular import DATA_FILES, Split, load_dataset, read_csv, run_autodl, to_lightgbm_frame

CONTENDERS = ("majority", "linear", "lightgbm", "autogluon", "autodl")
BASELINES = CONTENDERS[:-1]  # the ones autodl's margin is taken against
HEADERS = {"majority": "majority", "linear": "linear", "lightgbm": "LightGBM", "autogluon": "AutoGluon",
           "autodl": "autodl"}
# Column headers of the main table: short, so that fifteen columns fit 160 characters.
SHORT = {"majority": "maj", "linear": "linear", "lightgbm": "LGBM", "autogluon": "AG", "autodl": "autodl"}
TASK_SHORT = {"binary": "binary", "multiclass": "multi", "regression": "regr"}

TABLES_DIR = "tables"
# The two tabular.py data sets join the breadth run with their own split (seed 0 only).
TABULAR_TASKS = {"adult": "binary", "housing": "regression"}

DEFAULT_TIME_LIMIT_S = 120.0
QUICK_TIME_LIMIT_S = 20.0
QUICK_TABLES = ("haberman", "ecoli", "mpg")  # binary, multiclass, regression with a text column
SMALL_TABLE_ROWS = 1000
SMALL_TABLE_SEEDS = (0, 1, 2)
TRAIN_SHARE = 0.8

# Column handling for the two plain baselines (linear, LightGBM); the AutoML contenders get
# the raw frames. A text column whose values parse as timestamps becomes seconds since the
# epoch; one whose training values are mostly distinct (free text, IDs) is dropped.
TIMESTAMP_PARSE_SHARE = 0.9
FREE_TEXT_DISTINCT_SHARE = 0.5

# "Close to AutoGluon": autodl at most this far behind (accuracy points / % of RMSE).
AUTOGLUON_CLOSE = {"classification": 0.5, "regression": 3.0}

AUTOGLUON_INSTALL_HINT = (
    "install autogluon.tabular in its own environment and pass --autogluon-python (see bench/README.md)"
)


# --------------------------------------------------------------------------- tables


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One benchmark table: where it lives, what to predict and which split seeds it gets."""

    name: str
    task: str  # "binary", "multiclass" or "regression"
    seeds: tuple[int, ...]
    file: str | None = None  # under <data>/tables/; None for the tabular.py data sets
    target: str | None = None
    rows: int | None = None

    @property
    def metric(self) -> str:
        """The primary metric: accuracy for classification, RMSE for regression."""
        return "rmse" if self.task == "regression" else "accuracy"


def load_specs(data_dir: Path) -> tuple[dict[str, TableSpec], list[str]]:
    """All tables whose data is present, in the data README's order, and notes on the absent."""
    specs: dict[str, TableSpec] = {}
    notes: list[str] = []
    index = data_dir / TABLES_DIR / "tables.json"
    if index.exists():
        for entry in json.loads(index.read_text()):
            name = Path(entry["file"]).stem
            rows = int(entry["rows"])
            seeds = SMALL_TABLE_SEEDS if rows < SMALL_TABLE_ROWS else (0,)
            specs[name] = TableSpec(name, entry["task"], seeds, entry["file"], entry["target"], rows)
    else:
        notes.append(missing_data_note(data_dir, [f"{TABLES_DIR}/tables.json"]) or "")
    for name, task in TABULAR_TASKS.items():
        note = missing_data_note(data_dir, DATA_FILES[name])
        if note:
            notes.append(f"skipping {name}: {note}")
        else:
            specs[name] = TableSpec(name, task, (0,))
    return specs, notes


def run_key(table: str, seed: int, repeat: int = 1) -> str:
    """``<table>-s<seed>`` (``-r<k>`` for autodl's k-th repeat): the child's ``--dataset``
    and the autodl run directory's name. Table names have no hyphens."""
    return f"{table}-s{seed}" + (f"-r{repeat}" if repeat > 1 else "")


def parse_run_key(key: str) -> tuple[str, int, int]:
    """Inverse of :func:`run_key`: (table, seed, repeat)."""
    parts = key.split("-")
    table, seed, repeat = parts[0], None, 1
    for part in parts[1:]:
        if part.startswith("s") and part[1:].isdigit():
            seed = int(part[1:])
        elif part.startswith("r") and part[1:].isdigit():
            repeat = int(part[1:])
        else:
            seed = None
            break
    if seed is None:
        raise ValueError(f"not a run key: {key!r} (expected <table>-s<seed>[-r<repeat>])")
    return table, seed, repeat


def _label_text(values: Any) -> np.ndarray:
    """Class labels as text, so that 2, 2.0, "2" and numpy strings compare equal (libraries
    hand labels back in different types)."""
    array = np.asarray(values).reshape(-1)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        array = array.astype(np.int64)
    return array.astype(str)


def load_split(spec: TableSpec, seed: int, data_dir: Path, *, name: str | None = None) -> Split:
    """Train/test frames of ``spec`` for split ``seed`` (target column still in them)."""
    if spec.file is None:
        if seed != 0:
            raise ValueError(f"{spec.name} has one fixed split (seed 0), not seed {seed}")
        split = load_dataset(spec.name, data_dir)
    else:
        frame = read_csv(data_dir / TABLES_DIR / spec.file)
        order = np.random.RandomState(seed).permutation(len(frame))
        n_train = int(TRAIN_SHARE * len(frame))
        train = frame.iloc[order[:n_train]].reset_index(drop=True)
        test = frame.iloc[order[n_train:]].reset_index(drop=True)
        positive = None
        if spec.task == "binary":
            # ROC AUC's positive class: the table's minority class (its value does not depend
            # on the choice; the label is kept as text, see _label_text).
            counts = pd.Series(_label_text(frame[spec.target])).value_counts()
            positive = str(sorted(counts[counts == counts.min()].index)[-1])
        split = Split(spec.name, spec.target or "", spec.task, train, test, positive=positive)
    return dataclasses.replace(split, name=name or spec.name)


# ------------------------------------------------------------------------ scoring


def score(split: Split, predicted: Any, positive_proba: np.ndarray | None) -> dict[str, float | None]:
    """The one scoring function for every contender: accuracy (and ROC AUC of the positive
    class for binary targets) or RMSE, with scikit-learn, on the split's test rows."""
    from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score

    y_true = split.test[split.target]
    if split.task == "regression":
        predicted = np.asarray(predicted, dtype=float).reshape(-1)
        return {"rmse": float(np.sqrt(mean_squared_error(y_true.astype(float), predicted)))}
    truth = _label_text(y_true)
    metrics: dict[str, float | None] = {"accuracy": float(accuracy_score(truth, _label_text(predicted)))}
    if split.task == "binary" and positive_proba is not None:
        is_positive = truth == split.positive
        # A test split holding one class has no ROC AUC.
        metrics["roc_auc"] = (
            float(roc_auc_score(is_positive, np.asarray(positive_proba, dtype=float)))
            if 0 < is_positive.sum() < len(is_positive) else None
        )
    return metrics


def _positive_index(classes: Iterable[Any], positive: str | None) -> int:
    labels = list(_label_text(list(classes)))
    if positive not in labels:
        raise KeyError(f"positive class {positive!r} not among the model's classes {labels}")
    return labels.index(positive)


# ----------------------------------------------------------------- baseline columns


def _epoch_seconds(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values, errors="coerce", format="ISO8601")
    return (stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)


def baseline_columns(x_train: pd.DataFrame, x_test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[str]]]:
    """Minimal column handling for the linear model and LightGBM, which cannot take raw text.

    Timestamp text becomes seconds since the epoch (a linear model can then learn a trip's
    duration from two of them); text whose training values are mostly distinct (free text such
    as mpg's car name, IDs) is dropped; other text stays categorical. Decided on the training
    rows only.
    """
    timestamps: list[str] = []
    dropped: list[str] = []
    x_train, x_test = x_train.copy(), x_test.copy()
    for column in x_train.columns:
        if pd.api.types.is_numeric_dtype(x_train[column]):
            continue
        values = x_train[column].dropna()
        if values.empty:
            continue  # all missing: the imputers and LightGBM cope with that
        if _epoch_seconds(values).notna().mean() >= TIMESTAMP_PARSE_SHARE:
            x_train[column] = _epoch_seconds(x_train[column])
            x_test[column] = _epoch_seconds(x_test[column])
            timestamps.append(column)
        elif values.nunique() > FREE_TEXT_DISTINCT_SHARE * len(values):
            dropped.append(column)
    return x_train.drop(columns=dropped), x_test.drop(columns=dropped), {"timestamps": timestamps, "dropped": dropped}


def _column_note(columns: Mapping[str, list[str]]) -> str:
    parts = []
    if columns.get("timestamps"):
        parts.append(f"timestamps as numbers: {', '.join(columns['timestamps'])}")
    if columns.get("dropped"):
        parts.append(f"dropped text: {', '.join(columns['dropped'])}")
    return "; ".join(parts)


# --------------------------------------------------------------------- contenders


def _fit_and_score(split: Split, model: Any, x_train: Any, x_test: Any, *, note: str = "",
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fit a scikit-learn-style model, predict the test rows and score them (timed apart)."""
    started = time.perf_counter()
    model.fit(x_train, split.train[split.target])
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    predicted = model.predict(x_test)
    positive_proba = None
    if split.task == "binary":
        positive_proba = model.predict_proba(x_test)[:, _positive_index(model.classes_, split.positive)]
    predict_s = time.perf_counter() - started
    return {"metrics": score(split, predicted, positive_proba), "fit_s": fit_s, "predict_s": predict_s,
            "note": note, "extra": dict(extra or {})}


def _features(split: Split) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split.train.drop(columns=[split.target]), split.test.drop(columns=[split.target])


def run_majority(split: Split, **_: Any) -> dict[str, Any]:
    """The floor: the training majority class, or the training mean of a regression target."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    model = DummyRegressor(strategy="mean") if split.task == "regression" else DummyClassifier(strategy="most_frequent")
    # The features play no part; one constant column keeps scikit-learn's input checks happy.
    result = _fit_and_score(split, model, np.zeros((len(split.train), 1)), np.zeros((len(split.test), 1)))
    constant = model.constant_.item() if split.task == "regression" else _label_text(model.predict(np.zeros((1, 1))))[0]
    result["note"] = f"predicts {constant:.4g}" if split.task == "regression" else f"predicts {constant}"
    return result


def run_linear(split: Split, **_: Any) -> dict[str, Any]:
    """Logistic regression / ridge on median-imputed, standardised numbers and one-hot text."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    x_train, x_test, columns = baseline_columns(*_features(split))
    numeric = [c for c in x_train.columns if pd.api.types.is_numeric_dtype(x_train[c])]
    categorical = [c for c in x_train.columns if c not in numeric]
    # Text as plain objects with NaN for missing: SimpleImputer does not take pandas' str dtype.
    for frame in (x_train, x_test):
        frame[categorical] = frame[categorical].astype(object).where(frame[categorical].notna(), np.nan)
    prepare = ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    head = Ridge() if split.task == "regression" else LogisticRegression(max_iter=2000)
    model = make_pipeline(prepare, head)
    note = ", ".join(p for p in (type(head).__name__, _column_note(columns)) if p)
    return _fit_and_score(split, model, x_train, x_test, note=note, extra={"columns": columns})


def run_lightgbm(split: Split, **_: Any) -> dict[str, Any]:
    """LightGBM defaults; text as pandas ``category`` (tabular.py's encoding), after the same
    column handling as the linear model. (tabular.py's own runner knows binary and
    regression targets only.)"""
    import lightgbm as lgb

    x_train, x_test, columns = baseline_columns(*_features(split))
    categories = {
        column: pd.CategoricalDtype(sorted(x_train[column].dropna().unique()))
        for column in x_train.columns
        if not pd.api.types.is_numeric_dtype(x_train[column])
    }
    x_train, x_test = to_lightgbm_frame(x_train, categories), to_lightgbm_frame(x_test, categories)
    model = lgb.LGBMRegressor(verbose=-1) if split.task == "regression" else lgb.LGBMClassifier(verbose=-1)
    note = ", ".join(p for p in (f"{model.n_estimators} trees", _column_note(columns)) if p)
    return _fit_and_score(split, model, x_train, x_test, note=note,
                          extra={"columns": columns, "lightgbm_version": lgb.__version__})


def run_autogluon(split: Split, *, time_limit_s: float, **_: Any) -> dict[str, Any]:
    """AutoGluon's TabularPredictor: default preset, the same time limit as autodl, the raw
    frames. It is told the table's task, because the metric it optimizes (ours) must match it."""
    import autogluon.tabular
    from autogluon.tabular import TabularPredictor

    eval_metric = "root_mean_squared_error" if split.task == "regression" else "accuracy"
    x_test = split.test.drop(columns=[split.target])
    # Its model files are not needed after scoring, and can be large.
    with tempfile.TemporaryDirectory(prefix=f"autogluon-bench-{split.name}-") as path:
        predictor = TabularPredictor(label=split.target, problem_type=split.task, eval_metric=eval_metric,
                                     path=path, verbosity=0)
        started = time.perf_counter()
        predictor.fit(split.train, time_limit=time_limit_s)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        predicted = np.asarray(predictor.predict(x_test))
        positive_proba = None
        if split.task == "binary":
            proba = predictor.predict_proba(x_test)
            positive_proba = np.asarray(proba.iloc[:, _positive_index(proba.columns, split.positive)], dtype=float)
        predict_s = time.perf_counter() - started
        try:
            models, best = len(predictor.model_names()), str(predictor.model_best)
        except Exception:  # noqa: BLE001 - only the note loses these facts
            models, best = None, None
    note = ", ".join(p for p in (f"{models} models" if models else "", f"best {best}" if best else "",
                                 f"limit {format_duration(time_limit_s)}") if p)
    return {"metrics": score(split, predicted, positive_proba), "fit_s": fit_s, "predict_s": predict_s,
            "note": note, "extra": {"models": models, "best_model": best, "time_limit_s": time_limit_s,
                                    "autogluon_version": autogluon.tabular.__version__}}


def run_autodl_table(split: Split, *, time_limit_s: float, runs_dir: Path, **_: Any) -> dict[str, Any]:
    """autodl through tabular.py's runner (public API, default options, seed 0, run directory
    ``<runs dir>/<split name>``), scored by this module's :func:`score`, as every contender here is
    (tabular.py's own knows binary and regression only)."""
    result = dict(run_autodl(split, time_limit_s=time_limit_s, runs_dir=runs_dir, scorer=score))
    extra = result.setdefault("extra", {})
    inferred = None
    if extra.get("run_dir"):
        try:
            manifest = json.loads((Path(extra["run_dir"]) / "run.json").read_text())
            inferred = manifest["schema"]["task"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError):
            inferred = None
    extra["inferred_task"] = inferred
    if inferred and inferred != split.task:
        result["note"] = f"{result.get('note', '')}, inferred {inferred} (table: {split.task})"
    return result


RUNNERS = {
    "majority": run_majority, "linear": run_linear, "lightgbm": run_lightgbm,
    "autogluon": run_autogluon, "autodl": run_autodl_table,
}


# ---------------------------------------------------------------------------- CLI


def _names(allowed: Sequence[str] | None = None):
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in items if allowed is not None and item not in allowed]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed or ())} (got {text!r})")
        return items

    return parse


def _paths(text: str) -> list[Path]:
    return [Path(part.strip()) for part in text.split(",") if part.strip()]


def merge_results(files: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of saved results files, later files first for each (contender, table, seed); and the autodl rows they replaced.

    One command cannot always run everything (a second autodl run for the spread, AutoGluon
    from its own environment, a rerun of some tables): this prints them as one table.
    """
    current: dict[tuple[str, str, int, int], dict[str, Any]] = {}
    replaced: list[dict[str, Any]] = []
    for path in files:
        fresh: dict[tuple[str, str, int, int], dict[str, Any]] = {}
        for row in json.loads(path.read_text()).get("results", []):
            fresh[(row["contender"], row["table"], row["seed"], row.get("repeat", 1))] = row
        for key, row in fresh.items():
            old = {k: v for k, v in current.items() if k[:3] == key[:3]}
            for old_key, old_row in old.items():
                if old_row["contender"] == "autodl":
                    replaced.append(old_row)
                del current[old_key]
        current.update(fresh)
    return list(current.values()), replaced


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"comma-separated non-negative integers, e.g. 0,1,2 (got {text!r})")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # "--contender" (child) must never be read as "--contenders"
    )
    parser.add_argument("--tables", type=_names(), default=None,
                        help="comma-separated table names (default: all; with --quick: "
                             f"{','.join(QUICK_TABLES)}); adult and housing are tabular.py's")
    parser.add_argument("--contenders", type=_names(CONTENDERS), default=list(CONTENDERS),
                        help=f"comma-separated: {','.join(CONTENDERS)} (default: all)")
    parser.add_argument("--seeds", type=_seeds, default=None,
                        help="split seeds for every table (default: 0, plus 1,2 under 1,000 rows; "
                             "0 with --quick); adult and housing run seed 0 only")
    parser.add_argument("--time-limit", type=parse_duration, default=None,
                        help="autodl and AutoGluon time limit per fit (default 2m; 20s with --quick)")
    parser.add_argument("--runs", type=int, default=1,
                        help="fit autodl this many times on each split, to measure its spread (default 1)")
    parser.add_argument("--report", type=_paths, default=None,
                        help="print the table of saved results files instead of running (comma-separated, merged in "
                             "order: a later file's rows replace an earlier one's for the same contender and split, "
                             "and replaced autodl rows form the spread)")
    parser.add_argument("--compare", type=Path, default=None,
                        help="an earlier results JSON: print autodl's spread between that run and this one")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {','.join(QUICK_TABLES)}, seed 0, 20 s fits")
    parser.add_argument("--autogluon-python", default=sys.executable,
                        help="interpreter with autogluon.tabular installed (default: this one)")
    parser.add_argument("--data", help="data directory (default $AUTODL_BENCH_DATA or ../shared/data)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where autodl run directories go (default bench/results/runs/tables[-quick])")
    add_child_args(parser)
    return parser


def _child(args: argparse.Namespace, time_limit_s: float, runs_dir: Path) -> int:
    data_dir = child_data_dir(args, RUNNERS)
    table, seed, repeat = parse_run_key(args.dataset)

    def run() -> dict[str, Any]:
        specs, _ = load_specs(data_dir)
        split = load_split(specs[table], seed, data_dir, name=args.dataset)
        result = dict(RUNNERS[args.contender](split, time_limit_s=time_limit_s, runs_dir=runs_dir))
        result.setdefault("extra", {}).update(
            table=table, seed=seed, repeat=repeat, task=split.task, n_train=len(split.train), n_test=len(split.test),
        )
        return result

    return child_main(run, args.json_out)


# ------------------------------------------------------------------------ parent


def _autogluon_missing(python: str) -> str | None:
    """Why ``python`` cannot import autogluon.tabular, or ``None`` when it can."""
    try:
        probe = subprocess.run([python, "-c", "import autogluon.tabular"], capture_output=True, text=True,
                               timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{python}: {exc}"
    if probe.returncode == 0:
        return None
    lines = [line for line in probe.stderr.splitlines() if line.strip()]
    return f"{lines[-1].strip() if lines else 'import failed'} ({python})"


def _plan(specs: Mapping[str, TableSpec], tables: Sequence[str], contenders: Sequence[str],
          seeds: Sequence[int] | None, runs: int, timeout_s: float, child_args: Sequence[str],
          console: Any) -> list[Job]:
    jobs: list[Job] = []
    for name in tables:
        spec = specs[name]
        chosen = list(seeds) if seeds is not None else list(spec.seeds)
        if spec.file is None:  # adult, housing: one fixed split
            if 0 not in chosen:
                console.print(f"skipping {name}: it has one fixed split (seed 0), not seeds {chosen}", highlight=False)
            chosen = [0] if 0 in chosen else []
        for seed in chosen:
            for contender in contenders:
                for repeat in range(1, (runs if contender == "autodl" else 1) + 1):
                    jobs.append(Job(run_key(name, seed, repeat), contender, timeout_s, tuple(child_args)))
    return jobs


def _run_jobs(jobs: Sequence[Job], *, log_dir: Path, autogluon_python: str, autogluon_missing: str | None,
              console: Any) -> list[dict[str, Any]]:
    """run_contender for each job in turn, never in parallel; AutoGluon children use their own
    interpreter, and are skipped rows when it has no AutoGluon."""
    script = Path(__file__).resolve()
    rows: list[dict[str, Any]] = []
    for i, job in enumerate(jobs, 1):
        table, seed, repeat = parse_run_key(job.dataset)
        if job.contender == "autogluon" and autogluon_missing:
            row: dict[str, Any] = {"dataset": job.dataset, "contender": job.contender, "status": "skipped",
                                   "error": autogluon_missing, "metrics": {}, "note": ""}
        else:
            python = autogluon_python if job.contender == "autogluon" else sys.executable
            with console.status(f"[{i}/{len(jobs)}] {job.contender} on {job.dataset}"):
                row = run_contender(script, job, log_dir=log_dir, python=python)
            outcome = (", ".join(f"{k} {v:.4g}" for k, v in row["metrics"].items() if v is not None)
                       if row["status"] == "ok" else f"[red]failed[/]: {escape(str(row['error']))}  "
                                                     f"(log: {escape(row['log'])})")
            console.print(f"[{i}/{len(jobs)}] {job.contender} on {job.dataset}: {outcome}; "
                          f"wall {row['wall_s']:.1f} s", highlight=False, markup=row["status"] != "ok")
        row.update(table=table, seed=seed, repeat=repeat)
        rows.append(row)
    return rows


def margin(task: str, autodl: float, other: float) -> float | None:
    """autodl's lead over another contender; positive means autodl is better. Accuracy points
    for classification; for regression the other's RMSE minus autodl's, as % of the other's."""
    if task != "regression":
        return 100.0 * (autodl - other)
    return 100.0 * (other - autodl) / other if other > 0 else None


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def summarize(rows: Sequence[Mapping[str, Any]], specs: Mapping[str, TableSpec],
              contenders: Sequence[str]) -> list[dict[str, Any]]:
    """Per table: each contender's metric per seed (autodl: the mean of its repeats) and over
    seeds, autodl's margins (averaged over the seeds both have), autodl's wall time and peak."""
    by_table: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        by_table[row["table"]].append(row)
    summary = []
    for table, table_rows in by_table.items():
        spec = specs[table]
        seeds = sorted({row["seed"] for row in table_rows})
        per_seed: dict[str, dict[str, dict[int, float | None]]] = {}
        for contender in contenders:
            per_seed[contender] = {}
            for key in (spec.metric, "roc_auc"):
                values = {}
                for seed in seeds:
                    ok = [row["metrics"].get(key) for row in table_rows
                          if row["contender"] == contender and row["seed"] == seed and row["status"] == "ok"]
                    values[seed] = _mean(ok)
                per_seed[contender][key] = values
        cells = {
            contender: {
                "metric": _mean(per_seed[contender][spec.metric].values()),
                "roc_auc": _mean(per_seed[contender]["roc_auc"].values()),
                "seeds_ok": sum(v is not None for v in per_seed[contender][spec.metric].values()),
                "per_seed": per_seed[contender],
                "status": sorted({row["status"] for row in table_rows if row["contender"] == contender}),
            }
            for contender in contenders
        }
        margins: dict[str, float | None] = {}
        if "autodl" in contenders:
            mine = per_seed["autodl"][spec.metric]
            for contender in contenders:
                if contender == "autodl":
                    continue
                theirs = per_seed[contender][spec.metric]
                margins[contender] = _mean(
                    margin(spec.task, mine[s], theirs[s]) for s in seeds
                    if mine[s] is not None and theirs[s] is not None
                )
        autodl_rows = [row for row in table_rows if row["contender"] == "autodl" and row["status"] == "ok"]
        sizes = next((row.get("extra", {}) for row in table_rows if row.get("status") == "ok"), {})
        inferred = sorted({row["extra"].get("inferred_task") for row in autodl_rows
                           if row.get("extra", {}).get("inferred_task")})
        summary.append({
            "table": table, "task": spec.task, "metric": spec.metric, "seeds": seeds,
            "n_train": sizes.get("n_train"), "n_test": sizes.get("n_test"),
            "contenders": cells, "margins": margins,
            "autodl_wall_s": _mean(row.get("wall_s") for row in autodl_rows),
            "autodl_peak_mib": max((row["peak_mib"] for row in autodl_rows if row.get("peak_mib")), default=None),
            "autodl_inferred_task": inferred,
        })
    return summary


def spread(rows: Sequence[Mapping[str, Any]], specs: Mapping[str, TableSpec],
           previous: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """autodl's primary metric per (table, seed) over this run's repeats and an earlier
    results file's autodl rows, and its range (max - min)."""
    def values(source: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], list[float]]:
        found: dict[tuple[str, int], list[float]] = defaultdict(list)
        for row in source:
            table = row.get("table")
            if row.get("contender") != "autodl" or row.get("status") != "ok" or table not in specs:
                continue
            value = row.get("metrics", {}).get(specs[table].metric)
            if value is not None:
                found[(table, row.get("seed", 0))].append(float(value))
        return found

    now, before = values(rows), values(previous)
    result = []
    for (table, seed), current in now.items():
        earlier = before.get((table, seed), [])
        every = earlier + current
        if len(every) < 2:
            continue
        spec = specs[table]
        low, high = min(every), max(every)
        relative = 100.0 * (high - low) if spec.task != "regression" else 100.0 * (high - low) / (sum(every) / len(every))
        result.append({"table": table, "seed": seed, "metric": spec.metric, "previous": earlier, "now": current,
                       "range": high - low, "range_relative": relative})
    return result


def _metric_text(value: float | None, task: str) -> str:
    if value is None:
        return ""
    if task != "regression":
        return f"{value:.4f}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _signed(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:+.1f}"
    return f"[red]{text}[/]" if value < 0 else text


def _cell(summary: Mapping[str, Any], contender: str, key: str = "metric") -> str:
    cell = summary["contenders"][contender]
    if "skipped" in cell["status"] and cell["seeds_ok"] == 0:
        return "skip"
    if cell["seeds_ok"] == 0:
        return "[red]fail[/]" if key == "metric" else ""
    text = _metric_text(cell[key], "classification" if key == "roc_auc" else summary["task"])
    partial = cell["seeds_ok"] < len(summary["seeds"])
    return f"{text}†" if partial and key == "metric" else text


def results_table(summary: Sequence[Mapping[str, Any]], contenders: Sequence[str], *,
                  title: str) -> tuple[Table, list[str]]:
    """One line per table: metric per contender, autodl's margins, autodl's wall time and peak;
    and the notes to print under it (kept out of the table so that it fits 160 columns)."""
    table = Table(title=title, caption_justify="left", caption=(
        "metric: accuracy (binary, multi), RMSE (regr); rows: train + test; seeds: split seeds averaged\n"
        "Δ: autodl's lead (positive = autodl better): accuracy points for classification, % of the other's\n"
        "RMSE for regression; averaged over the seeds both ran. †: some seeds failed, mean of the others."
    ))
    for header in ("table", "task", "rows", "seeds"):
        table.add_column(header, no_wrap=True, justify="right" if header == "rows" else "left")
    for contender in contenders:
        table.add_column(SHORT[contender], justify="right", no_wrap=True)
    others = [c for c in contenders if c != "autodl"] if "autodl" in contenders else []
    for contender in others:
        table.add_column(f"Δ{SHORT[contender]}", justify="right", no_wrap=True)
    if "autodl" in contenders:
        table.add_column("wall s", justify="right", no_wrap=True)
        table.add_column("MiB", justify="right", no_wrap=True)
    notes = []
    for item in summary:
        if item["autodl_inferred_task"] and item["autodl_inferred_task"] != [item["task"]]:
            notes.append(f"{item['table']}: autodl inferred {'/'.join(item['autodl_inferred_task'])} "
                         f"(the table is {item['task']})")
        for contender in contenders:
            status = item["contenders"][contender]["status"]
            if "failed" in status:
                notes.append(f"{item['table']}: {HEADERS[contender]} failed on some runs (see the JSON and logs)")
        rows = item["n_train"] + item["n_test"] if item["n_train"] is not None else None
        table.add_row(
            item["table"], TASK_SHORT.get(item["task"], item["task"]), f"{rows:,}" if rows else "",
            str(len(item["seeds"])),
            *(_cell(item, c) for c in contenders),
            *(_signed(item["margins"].get(c)) for c in others),
            *((f"{item['autodl_wall_s']:.1f}" if item["autodl_wall_s"] is not None else "",
               f"{item['autodl_peak_mib']:.0f}" if item["autodl_peak_mib"] else "") if "autodl" in contenders else ()),
        )
    return table, notes


def auc_table(summary: Sequence[Mapping[str, Any]], contenders: Sequence[str]) -> Table | None:
    """ROC AUC of the binary tables (seed means), or None when there is none."""
    binary = [item for item in summary if item["task"] == "binary"]
    if not binary:
        return None
    table = Table(title="ROC AUC, binary tables (seed means)", caption="positive class: the minority",
                  caption_justify="left")
    table.add_column("table", no_wrap=True)
    for contender in contenders:
        table.add_column(HEADERS[contender], justify="right", no_wrap=True)
    for item in binary:
        table.add_row(item["table"], *(_cell(item, c, "roc_auc") for c in contenders))
    return table


def spread_table(items: Sequence[Mapping[str, Any]]) -> Table:
    """autodl's metric over repeated fits of one split, and its range."""
    table = Table(title="autodl spread: the same split fitted again (max - min)", caption_justify="left",
                  caption="range %: accuracy points, or % of the mean RMSE")
    for header in ("table", "seed", "metric", "earlier run", "this run", "max - min", "range %"):
        table.add_column(header, justify="right" if header not in ("table", "metric") else "left", no_wrap=True)
    for item in items:
        kind = "regression" if item["metric"] == "rmse" else "classification"
        table.add_row(item["table"], str(item["seed"]), item["metric"],
                      " ".join(_metric_text(v, kind) for v in item["previous"]),
                      " ".join(_metric_text(v, kind) for v in item["now"]),
                      f"{item['range']:.4g}", f"{item['range_relative']:.1f}")
    return table


def verdict(summary: Sequence[Mapping[str, Any]], contenders: Sequence[str]) -> str:
    """The closing line: on how many tables autodl is behind each peer (seed means)."""
    if "autodl" not in contenders:
        return "no autodl rows: no verdict"
    parts = []
    for contender in contenders:
        if contender == "autodl":
            continue
        margins = [item["margins"].get(contender) for item in summary]
        known = [m for m in margins if m is not None]
        if contender == "autogluon":
            close = sum(
                1 for item in summary
                if item["margins"].get(contender) is not None
                and item["margins"][contender] >= -AUTOGLUON_CLOSE["regression" if item["task"] == "regression"
                                                                  else "classification"]
            )
            parts.append(f"within 0.5 pt / 3% RMSE of AutoGluon on {close} of {len(known)}")
        else:
            label = {"majority": "majority/mean", "linear": "linear", "lightgbm": "LightGBM"}[contender]
            parts.append(f"below {label} on {sum(m < 0 for m in known)} of {len(known)}")
    return "autodl, tables: " + "; ".join(parts)


def report(files: Sequence[Path], specs: Mapping[str, TableSpec], console: Any) -> int:
    """``--report``: the table, spread and verdict of saved results files, merged (nothing runs)."""
    rows, replaced = merge_results(files)
    rows = [row for row in rows if row["table"] in specs]
    contenders = [c for c in CONTENDERS if any(row["contender"] == c for row in rows)]
    summary = summarize(rows, specs, contenders)
    summary.sort(key=lambda item: list(specs).index(item["table"]))
    table, notes = results_table(summary, contenders, title=f"Breadth benchmark: {', '.join(p.name for p in files)}; seed means")
    console.print(table)
    for line in notes:
        console.print(line, highlight=False)
    aucs = auc_table(summary, contenders)
    if aucs is not None:
        console.print(aucs)
    spreads = spread([row for row in rows if row["contender"] == "autodl"], specs, replaced)
    if spreads:
        console.print(spread_table(spreads))
    console.print(verdict(summary, contenders), highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    time_limit_s = args.time_limit
    if time_limit_s is None:
        time_limit_s = QUICK_TIME_LIMIT_S if args.quick else DEFAULT_TIME_LIMIT_S
    name = "tables-quick" if args.quick else "tables"
    runs_dir = (args.runs_dir or RESULTS_DIR / "runs" / name).resolve()

    if args.contender:
        return _child(args, time_limit_s, runs_dir)

    console = make_console()
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    data_dir = resolve_data_dir(args.data)
    note = missing_data_note(data_dir)
    if note:
        print(note)
        return 0
    # Read before this run writes its own results (the file may be the one it replaces).
    previous: list[Mapping[str, Any]] = []
    if args.compare is not None:
        previous = json.loads(args.compare.read_text()).get("results", [])
    specs, notes = load_specs(data_dir)
    for line in notes:
        console.print(line, highlight=False)
    if args.report:
        return report(args.report, specs, console)
    wanted = args.tables or (list(QUICK_TABLES) if args.quick else list(specs))
    unknown = [t for t in wanted if t not in specs]
    if unknown:
        console.print(f"skipping {', '.join(unknown)}: not found (tables here: {', '.join(specs)})", highlight=False)
    tables = [t for t in wanted if t in specs]
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else None)

    autogluon_missing = None
    if "autogluon" in args.contenders:
        autogluon_missing = _autogluon_missing(args.autogluon_python)
        if autogluon_missing:
            console.print(f"autogluon rows skipped: {autogluon_missing}; {AUTOGLUON_INSTALL_HINT}", highlight=False)

    child_args = ["--data", str(data_dir), "--time-limit", f"{time_limit_s:g}s", "--runs-dir", str(runs_dir)]
    # Generous: a hung or runaway fit becomes one failed row, and a slow one is not cut short.
    timeout_s = 3 * time_limit_s + 120
    jobs = _plan(specs, tables, args.contenders, seeds, args.runs, timeout_s, child_args, console)
    if not jobs:
        console.print("nothing to run", highlight=False)
        return 0
    rows = _run_jobs(jobs, log_dir=RESULTS_DIR / "logs" / name, autogluon_python=args.autogluon_python,
                     autogluon_missing=autogluon_missing, console=console)

    summary = summarize(rows, specs, args.contenders)
    title = (f"Breadth benchmark: time limit {format_duration(time_limit_s)} per AutoML fit"
             + (f", autodl {args.runs} runs per split (mean)" if args.runs > 1 else "") + "; seed means")
    table, notes = results_table(summary, args.contenders, title=title)
    console.print(table)
    for line in notes:
        console.print(line, highlight=False)
    aucs = auc_table(summary, args.contenders)
    if aucs is not None:
        console.print(aucs)
    spreads = spread(rows, specs, previous) if (args.runs > 1 or previous) else []
    if spreads:
        console.print(spread_table(spreads))
    elif args.runs > 1 or args.compare is not None:
        console.print("no spread to show: no (table, seed) with two autodl results", highlight=False)
    console.print(verdict(summary, args.contenders), highlight=False)

    meta = {
        "quick": args.quick, "time_limit_s": time_limit_s, "timeout_s": timeout_s, "data_dir": str(data_dir),
        "tables": tables, "contenders": args.contenders, "seeds": seeds, "runs": args.runs,
        "compare": None if args.compare is None else str(args.compare),
        "autogluon_python": args.autogluon_python, "autogluon_skipped": autogluon_missing,
        "margin_units": "accuracy points (classification), % of the other contender's RMSE (regression)",
        "summary": summary, "spread": spreads, "verdict": verdict(summary, args.contenders),
        **environment_info(["autodl", "lightgbm", "scikit-learn", "pandas", "numpy", "keras", "tensorflow"]),
    }
    path = save_results(name, rows, meta)
    console.print(f"results saved to {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

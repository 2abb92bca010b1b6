"""Fairness benchmark: accuracy against demographic parity and equalized odds on UCI Adult.

    python bench/fairness.py                     # full Adult, 4-minute autodl fits
    python bench/fairness.py --quick             # a training subsample, 60 s fits
    python bench/fairness.py --contenders lr,lr-threshold,autodl

Sensitive column ``sex``; the favourable decision is ``>50K``. Every contender
keeps ``sex`` out of its features (autodl's default) and is scored on the
standard Adult test split (16,281 rows) with Fairlearn's own metric functions,
computed here independently of autodl's audit code.

Contenders:

* ``lr`` - scikit-learn logistic regression (one-hot + standardized numbers);
  ``lr-threshold`` - the same with Fairlearn's ThresholdOptimizer (demographic
  parity) fitted on a 15% held-out slice; ``lr-expgrad`` - Fairlearn's
  ExponentiatedGradient (demographic parity, eps 0.01): a randomized mixture, the
  reference point of in-training mitigation, which autodl does not ship;
* ``lightgbm`` - unconstrained gradient boosting;
* ``autodl`` - ``--sensitive sex``, no fairness options;
* ``autodl-select`` - ``--fairness-constraint`` (default
  ``demographic_parity_difference<=0.17``, inside the 0.16-0.21 range the searched
  models span on Adult, so the choice is a real one): the best searched model meeting it;
* ``autodl-threshold`` - ``--mitigate threshold`` (ThresholdOptimizer, demographic parity);
* ``autodl-reductions`` - ``--fairness-constraint demographic_parity_difference<=0.05
  --mitigate reductions`` (Fairlearn GridSearch).

Without the data the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    RESULTS_DIR,
    Job,
    MetricColumn,
    add_child_args,
    child_main,
    environment_info,
    format_duration,
    make_console,
    missing_data_note,
    parse_duration,
    print_results,
    resolve_data_dir,
    run_matrix,
    save_results,
)
from tabular import DATA_FILES, QUICK_TRAIN_ROWS, load_dataset  # noqa: E402

SENSITIVE = "sex"
POSITIVE = ">50K"
CONTENDERS = ("lr", "lr-threshold", "lr-expgrad", "lightgbm", "autodl", "autodl-select", "autodl-threshold",
              "autodl-reductions")
SELECT_CONSTRAINT = "demographic_parity_difference<=0.17"
MITIGATION_CONSTRAINT = "demographic_parity_difference<=0.05"
FULL_TIME_LIMIT_S, QUICK_TIME_LIMIT_S = 240.0, 60.0
METRICS = (
    MetricColumn("accuracy", "accuracy"),
    MetricColumn("dp_diff", "DP diff"),
    MetricColumn("dp_ratio", "DP ratio"),
    MetricColumn("eo_diff", "EO diff"),
)
REFERENCE = ("Reference points measured here for issue 4: logistic regression DP diff ~0.18 at 0.847 accuracy; "
             "constrained mitigations 0.002-0.02 for 1.5-2 points of accuracy, equalized odds may get worse.")


def fairness_scores(y_true: pd.Series, predicted: np.ndarray, sex: pd.Series) -> dict[str, float]:
    from fairlearn import metrics as fm

    y = (y_true.astype(str).to_numpy() == POSITIVE).astype(int)
    pred = (np.asarray(predicted).astype(str) == POSITIVE).astype(int)
    groups = sex.astype(str).to_numpy()
    return {
        "accuracy": float((y == pred).mean()),
        "dp_diff": float(fm.demographic_parity_difference(y, pred, sensitive_features=groups)),
        "dp_ratio": float(fm.demographic_parity_ratio(y, pred, sensitive_features=groups)),
        "eo_diff": float(fm.equalized_odds_difference(y, pred, sensitive_features=groups)),
        "selection_rate": float(pred.mean()),
    }


# -- scikit-learn contenders -----------------------------------------------------------


def _lr_pipeline(train: pd.DataFrame, target: str) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = train.drop(columns=[target, SENSITIVE])
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    prep = ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), categorical),
    ])
    return make_pipeline(prep, LogisticRegression(max_iter=2000))


def run_lr(split: Any, *, mitigation: str | None = None, **_: Any) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    train, test, target = split.train, split.test, split.target
    x_test = test.drop(columns=[target, SENSITIVE])
    started = time.perf_counter()
    note = "no mitigation"
    if mitigation == "threshold":
        from fairlearn.postprocessing import ThresholdOptimizer

        fit_part, held = train_test_split(train, test_size=0.15, random_state=0, stratify=train[target])
        model = _lr_pipeline(train, target).fit(fit_part.drop(columns=[target, SENSITIVE]), fit_part[target] == POSITIVE)
        post = ThresholdOptimizer(estimator=model, constraints="demographic_parity", prefit=True, predict_method="predict_proba")
        post.fit(held.drop(columns=[target, SENSITIVE]), held[target] == POSITIVE, sensitive_features=held[SENSITIVE])
        fit_s = time.perf_counter() - started
        flags = post.predict(x_test, sensitive_features=test[SENSITIVE], random_state=0)
        note = "ThresholdOptimizer (demographic parity) on a 15% held-out slice"
    elif mitigation == "expgrad":
        from fairlearn.reductions import DemographicParity, ExponentiatedGradient

        mitigator = ExponentiatedGradient(_lr_pipeline(train, target), DemographicParity(), eps=0.01,
                                          sample_weight_name="logisticregression__sample_weight")
        mitigator.fit(train.drop(columns=[target, SENSITIVE]), train[target] == POSITIVE, sensitive_features=train[SENSITIVE])
        fit_s = time.perf_counter() - started
        flags = mitigator.predict(x_test, random_state=0)
        note = f"ExponentiatedGradient eps 0.01: a randomized mixture of {len(mitigator.predictors_)} models (not shippable as one)"
    else:
        model = _lr_pipeline(train, target).fit(train.drop(columns=[target, SENSITIVE]), train[target] == POSITIVE)
        fit_s = time.perf_counter() - started
        flags = model.predict(x_test)
    predicted = np.where(np.asarray(flags).astype(bool), POSITIVE, "<=50K")
    return {"metrics": fairness_scores(test[target], predicted, test[SENSITIVE]), "fit_s": fit_s, "note": note}


def run_lightgbm(split: Any, **_: Any) -> dict[str, Any]:
    import lightgbm as lgb

    train, test, target = split.train, split.test, split.target
    features = [c for c in train.columns if c not in (target, SENSITIVE)]

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        out = df[features].copy()
        for c in features:
            if not pd.api.types.is_numeric_dtype(out[c]):
                out[c] = pd.Categorical(out[c], categories=sorted(train[c].dropna().unique()))
        return out

    started = time.perf_counter()
    model = lgb.LGBMClassifier(n_estimators=400, learning_rate=0.05, verbose=-1, random_state=0)
    model.fit(frame(train), train[target] == POSITIVE)
    fit_s = time.perf_counter() - started
    predicted = np.where(model.predict(frame(test)), POSITIVE, "<=50K")
    return {"metrics": fairness_scores(test[target], predicted, test[SENSITIVE]), "fit_s": fit_s, "note": "400 trees, defaults"}


# -- autodl ------------------------------------------------------------------------------


def run_autodl(split: Any, *, time_limit_s: float, runs_dir: Path | None, contender: str = "autodl", **_: Any) -> dict[str, Any]:
    import json

    from autodl import AutoModel

    options: dict[str, Any] = {
        "autodl": {},
        "autodl-select": {"fairness_constraint": SELECT_CONSTRAINT},
        "autodl-threshold": {"mitigate": "threshold"},
        "autodl-reductions": {"fairness_constraint": MITIGATION_CONSTRAINT, "mitigate": "reductions"},
    }[contender]
    temp = None
    if runs_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="autodl-bench-fairness-")
        run_dir = Path(temp.name) / contender
    else:
        run_dir = runs_dir / contender
    try:
        model = AutoModel(target=split.target, time_limit=time_limit_s, seed=0, out=str(run_dir), overwrite=True,
                          sensitive=[SENSITIVE], positive=POSITIVE, verbosity=1, **options)
        started = time.perf_counter()
        model.fit(split.train)
        fit_s = time.perf_counter() - started
        predicted = model.predict(split.test.drop(columns=[split.target]))  # sex present: thresholds apply
        manifest = model.manifest
        audit = json.loads((run_dir / "audit.json").read_text())
    finally:
        if temp is not None:
            temp.cleanup()
    fairness = manifest.get("fairness", {})
    notes = [f"{manifest['search']['completed']} trials, final {manifest['final_model']['kind']}"]
    selection = fairness.get("selection")
    if selection:
        notes.append(f"{selection['constraint']}: " + (f"chose {selection['chosen']} over {selection['unconstrained']}"
                                                       if selection["met"] else "no trial meets it"))
    mitigation = fairness.get("mitigation")
    if mitigation:
        notes.append(f"{mitigation['method']} ({mitigation['parity']})")
    extra: dict[str, Any] = {"fairness": fairness, "comparison": audit.get("comparison"), "run_dir": str(run_dir)}
    return {"metrics": fairness_scores(split.test[split.target], predicted, split.test[SENSITIVE]), "fit_s": fit_s,
            "note": "; ".join(notes), "extra": extra}


RUNNERS = {
    "lr": run_lr,
    "lr-threshold": lambda split, **kw: run_lr(split, mitigation="threshold", **kw),
    "lr-expgrad": lambda split, **kw: run_lr(split, mitigation="expgrad", **kw),
    "lightgbm": run_lightgbm,
    **{name: (lambda split, _name=name, **kw: run_autodl(split, contender=_name, **kw))
       for name in CONTENDERS if name.startswith("autodl")},
}


def _contenders(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in CONTENDERS]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(CONTENDERS)} (got {text!r})")
    return items


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--contenders", type=_contenders, default=list(CONTENDERS), help="comma-separated (default: all)")
    parser.add_argument("--time-limit", type=parse_duration, default=None, help="autodl time limit per fit (default 4m; 60s with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK_TRAIN_ROWS:,} training rows")
    parser.add_argument("--data", help="data directory (default $AUTODL_BENCH_DATA or ../shared/data)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="where autodl runs go (default bench/results/runs/fairness)")
    add_child_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    time_limit_s = args.time_limit or (QUICK_TIME_LIMIT_S if args.quick else FULL_TIME_LIMIT_S)
    runs_dir = (args.runs_dir or RESULTS_DIR / "runs" / ("fairness-quick" if args.quick else "fairness")).resolve()
    data_dir = resolve_data_dir(args.data)
    if args.contender:
        def run() -> dict[str, Any]:
            split = load_dataset("adult", data_dir, quick=args.quick)
            result = dict(RUNNERS[args.contender](split, time_limit_s=time_limit_s, runs_dir=runs_dir))
            result.setdefault("extra", {}).update(n_train=len(split.train), n_test=len(split.test))
            return result

        return child_main(run, args.json_out)
    note = missing_data_note(data_dir, DATA_FILES["adult"])
    if note:
        print(note)
        return 0
    console = make_console()
    child_args = ["--data", str(data_dir), "--time-limit", f"{time_limit_s:g}s", "--runs-dir", str(runs_dir)]
    if args.quick:
        child_args.append("--quick")
    jobs = [Job("adult", c, 1.5 * time_limit_s + 300, tuple(child_args)) for c in args.contenders]
    name = "fairness-quick" if args.quick else "fairness"
    rows = run_matrix(Path(__file__).resolve(), jobs, log_dir=RESULTS_DIR / "logs" / name, console=console)
    mode = f"{QUICK_TRAIN_ROWS:,} train rows" if args.quick else "full training set"
    print_results(rows, METRICS, title=f"Fairness on Adult, sensitive '{SENSITIVE}' ({mode}; autodl fits "
                  f"{format_duration(time_limit_s)}; standard test split)", caption=REFERENCE, console=console)
    meta = {"quick": args.quick, "time_limit_s": time_limit_s, "sensitive": SENSITIVE, "positive": POSITIVE,
            "select_constraint": SELECT_CONSTRAINT, "mitigation_constraint": MITIGATION_CONSTRAINT,
            **environment_info(["autodl", "fairlearn", "lightgbm", "scikit-learn", "keras", "tensorflow"])}
    path = save_results(name, rows, meta)
    console.print(f"results saved to {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

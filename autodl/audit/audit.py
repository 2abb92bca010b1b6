"""Group metrics and fairness gaps of predictions, computed with Fairlearn's ``MetricFrame``.

For every sensitive column, and for their intersection when there are
several, the audit reports each group's metrics, the largest between-group
``difference()`` and smallest ``ratio()`` per metric, and the headline
fairness measures (demographic parity, equalized odds, equal opportunity)
with bootstrap confidence intervals. Groups smaller than ``min_group_size``
are flagged and left out of the headline gaps, so a handful of rows cannot
decide a verdict; their own metrics are still listed.

Example:

>>> import numpy as np, pandas as pd
>>> y = np.array([1, 0] * 40); pred = y.copy()
>>> audit_classification(y, pred, pd.DataFrame({"g": ["a"] * 40 + ["b"] * 40}), positive=1, n_bootstrap=0)["verdict"]
'pass'
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from fairlearn import metrics as fm
from sklearn import metrics as skm

from autodl.audit.policy import DEFAULT_RULES, Rule, evaluate_policy
from autodl.errors import DataError

MIN_GROUP_SIZE = 30
N_BOOTSTRAP = 200
MISSING_GROUP = "(missing)"

HEADLINE: dict[str, Callable[..., float]] = {
    "demographic_parity_difference": fm.demographic_parity_difference,
    "demographic_parity_ratio": fm.demographic_parity_ratio,
    "equalized_odds_difference": fm.equalized_odds_difference,
    "equalized_odds_ratio": fm.equalized_odds_ratio,
    "equal_opportunity_difference": fm.equal_opportunity_difference,
}


def classification_metrics() -> dict[str, Callable[..., float]]:
    """Per-group metrics for a binary decision (labels 0/1)."""
    return {
        "count": fm.count,
        "selection_rate": fm.selection_rate,
        "accuracy": skm.accuracy_score,
        "balanced_accuracy": skm.balanced_accuracy_score,
        "true_positive_rate": fm.true_positive_rate,
        "false_positive_rate": fm.false_positive_rate,
        "false_negative_rate": fm.false_negative_rate,
        "precision": functools.partial(skm.precision_score, zero_division=0),
    }


def regression_metrics() -> dict[str, Callable[..., float]]:
    return {
        "count": fm.count,
        "mean_prediction": fm.mean_prediction,
        "mean_target": lambda y_true, y_pred: float(np.mean(y_true)),
        "mae": skm.mean_absolute_error,
        "rmse": lambda y_true, y_pred: float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
    }


def sensitive_groups(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The sensitive columns as strings (missing → "(missing)"), validated."""
    columns = list(columns if columns is not None else frame.columns)
    unknown = [c for c in columns if c not in frame.columns]
    if unknown:
        raise DataError(f"sensitive column '{unknown[0]}' is not in the data; columns are: {', '.join(map(str, frame.columns))}")
    out = group_labels(frame, columns)
    for c in columns:
        if out[c].nunique() < 2:
            raise DataError(f"sensitive column '{c}' has a single value ({out[c].iloc[0]!r}); an audit needs at least two groups")
    return out


def group_labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The columns as group labels (strings; missing → "(missing)"), without the audit's checks."""
    return pd.DataFrame({c: frame[c].astype("object").where(frame[c].notna(), MISSING_GROUP).astype(str) for c in columns})


def audit_classification(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sensitive: pd.DataFrame,
    *,
    positive: Any,
    min_group_size: int = MIN_GROUP_SIZE,
    n_bootstrap: int = N_BOOTSTRAP,
    rules: Sequence[Rule] = DEFAULT_RULES,
    seed: int = 0,
) -> dict[str, Any]:
    """The audit of binary decisions (``positive`` is the favourable label), as a JSON-ready dict."""
    y_true = (np.asarray(y_true) == positive).astype(int)
    y_pred = (np.asarray(y_pred) == positive).astype(int)
    groups = sensitive_groups(sensitive)
    report = _audit(y_true, y_pred, groups, classification_metrics(), min_group_size, n_bootstrap, seed, headline=True)
    report["overall"] = {name: float(f(y_true, y_pred)) for name, f in classification_metrics().items()}
    worst = {m: worst_headline(report, m) for m in HEADLINE}
    worst = {m: w for m, w in worst.items() if w is not None}
    report["policy"] = evaluate_policy({m: w["value"] for m, w in worst.items()}, rules, {m: w["ci95"] for m, w in worst.items()})
    report["verdict"] = report["policy"]["verdict"]
    report["positive"] = str(positive)
    return report


def audit_regression(
    y_true: np.ndarray, y_pred: np.ndarray, sensitive: pd.DataFrame, *, min_group_size: int = MIN_GROUP_SIZE
) -> dict[str, Any]:
    """Per-group mean prediction, mean target, MAE and RMSE, with the largest gaps."""
    groups = sensitive_groups(sensitive)
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    report = _audit(y_true, y_pred, groups, regression_metrics(), min_group_size, 0, 0, headline=False)
    report["overall"] = {name: float(f(y_true, y_pred)) for name, f in regression_metrics().items()}
    return report


def _audit(
    y_true: np.ndarray, y_pred: np.ndarray, groups: pd.DataFrame, metrics: dict[str, Callable[..., float]],
    min_group_size: int, n_bootstrap: int, seed: int, *, headline: bool,
) -> dict[str, Any]:
    views = {c: groups[[c]] for c in groups.columns}
    if len(groups.columns) > 1:
        views[" & ".join(groups.columns)] = groups
    columns = {}
    for name, view in views.items():
        key = view.astype(str).agg(" & ".join, axis=1) if view.shape[1] > 1 else view.iloc[:, 0]
        counts = key.value_counts()
        small = sorted(counts[counts < min_group_size].index.tolist())
        if small:
            warnings.warn(f"{name}: groups {small} have fewer than {min_group_size} rows; flagged, not ranked", stacklevel=3)
        keep = ~key.isin(small).to_numpy()
        frame = fm.MetricFrame(metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=key.rename(name))
        ranked = fm.MetricFrame(metrics=metrics, y_true=y_true[keep], y_pred=y_pred[keep],
                                sensitive_features=key[keep].rename(name)) if keep.sum() and not keep.all() else frame
        entry: dict[str, Any] = {
            "by_group": _records(frame.by_group),
            "small_groups": small,
            "difference": _floats(ranked.difference()) if ranked.by_group.shape[0] > 1 else {},
            "ratio": _floats(ranked.ratio()) if ranked.by_group.shape[0] > 1 else {},
        }
        if headline:
            entry["headline"] = _headline(y_true[keep], y_pred[keep], key[keep].to_numpy(), n_bootstrap, seed)
        columns[name] = entry
    return {"columns": columns, "min_group_size": min_group_size, "rows": int(len(y_true))}


def _headline(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    if len(np.unique(groups)) < 2:
        return {m: {"value": None, "ci95": None} for m in HEADLINE}
    out = {m: {"value": float(f(y_true, y_pred, sensitive_features=groups)), "ci95": None} for m, f in HEADLINE.items()}
    if n_bootstrap:
        rng = np.random.default_rng(seed)
        samples: dict[str, list[float]] = {m: [] for m in HEADLINE}
        for _ in range(n_bootstrap):
            rows = rng.integers(0, len(y_true), len(y_true))
            if len(np.unique(groups[rows])) < 2:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for m, v in headline_values(y_true[rows], y_pred[rows], groups[rows]).items():
                    samples[m].append(v)
        for m, values in samples.items():
            finite = [v for v in values if np.isfinite(v)]
            if finite:
                out[m]["ci95"] = [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
    return out


def headline_values(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """The HEADLINE measures from per-group rates in numpy, for the bootstrap's many resamples.

    Fairlearn defines them on three rates: demographic parity on selection rates,
    equalized odds as the worse of the TPR and FPR gaps, equal opportunity on TPR.
    Point estimates stay Fairlearn's own calls; a resample through ``MetricFrame``
    costs ~60 ms, which makes 200 resamples slower than the whole fit's evaluation.
    Tests check these values against Fairlearn's functions.
    """
    _, codes = np.unique(groups, return_inverse=True)
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)

    def rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        n = np.bincount(codes[den])
        k = np.bincount(codes[den & num], minlength=len(n))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, k / np.maximum(n, 1), np.nan)[n > 0]

    everyone = np.ones_like(y)
    rates = {"selection_rate": rate(p, everyone), "tpr": rate(p, y), "fpr": rate(p, ~y)}

    def gap(r: np.ndarray) -> tuple[float, float]:
        high, low = float(np.max(r)), float(np.min(r))
        return high - low, (low / high if high > 0 else float("nan"))

    (dp_d, dp_r), (tpr_d, tpr_r), (fpr_d, fpr_r) = gap(rates["selection_rate"]), gap(rates["tpr"]), gap(rates["fpr"])
    return {
        "demographic_parity_difference": dp_d,
        "demographic_parity_ratio": dp_r,
        "equalized_odds_difference": max(tpr_d, fpr_d),
        "equalized_odds_ratio": min(tpr_r, fpr_r),
        "equal_opportunity_difference": tpr_d,
    }


def worst_headline(report: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The least fair value of a headline metric (with its interval) over the columns and the intersection."""
    entries = [c["headline"][metric] for c in report["columns"].values() if c["headline"][metric]["value"] is not None]
    if not entries:
        return None
    pick = min if metric.endswith("ratio") else max
    return pick(entries, key=lambda e: e["value"])


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    frame = frame.reset_index()
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def _floats(series: pd.Series) -> dict[str, float]:
    return {k: float(v) for k, v in series.items()}


def proxy_associations(features: pd.DataFrame, sensitive: pd.DataFrame, top: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Per sensitive column, the features most associated with it (possible proxies).

    Cramér's V for categorical features, the correlation ratio (eta) for numeric
    ones: both in [0, 1], 0 for independence.
    """
    groups = sensitive_groups(sensitive)
    out = {}
    for column in groups.columns:
        g = groups[column]
        scores = []
        for name in features.columns:
            x = features[name]
            if pd.api.types.is_numeric_dtype(x):
                value, kind = _correlation_ratio(g, x), "correlation ratio"
            else:
                value, kind = _cramers_v(g, x.astype("object").where(x.notna(), MISSING_GROUP).astype(str)), "Cramér's V"
            if value == value:
                scores.append({"feature": str(name), "association": float(value), "measure": kind})
        out[column] = sorted(scores, key=lambda s: -s["association"])[:top]
    return out


def _cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Bias-corrected Cramér's V (Bergsma 2013): many-valued columns do not look associated by chance."""
    table = pd.crosstab(a, b).to_numpy(dtype=float)
    n = table.sum()
    r, k = table.shape
    if n < 2 or min(r, k) < 2:
        return float("nan")
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    phi2 = float(((table - expected) ** 2 / np.where(expected > 0, expected, 1)).sum()) / n
    phi2 = max(0.0, phi2 - (k - 1) * (r - 1) / (n - 1))
    r_corr, k_corr = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denominator = min(k_corr - 1, r_corr - 1)
    return float(np.sqrt(phi2 / denominator)) if denominator > 0 else float("nan")


def _correlation_ratio(groups: pd.Series, values: pd.Series) -> float:
    mask = values.notna().to_numpy()
    x = values.to_numpy(dtype=float)[mask]
    g = groups.to_numpy()[mask]
    total = float(((x - x.mean()) ** 2).sum())
    if total == 0:
        return float("nan")
    between = sum(len(x[g == k]) * (x[g == k].mean() - x.mean()) ** 2 for k in np.unique(g))
    return float(np.sqrt(between / total))

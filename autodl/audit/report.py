"""The audit of a fitted model on labelled rows: ``audit.json`` and the table a reviewer reads.

``audit_frame`` audits given model outputs (what ``autodl fit --sensitive``
does on the test split); ``audit_run`` predicts a file with a saved run first
(``autodl audit RUN data.csv --sensitive sex``). When the run has an edge
bundle, ``audit_variants`` audits each TFLite variant on the same rows, since
compression (int8 above all) can shift group outcomes; ``variants_comparison``
puts them side by side with the Keras model.

Binary tasks audit the decision "predicted ``positive``" (default: the second
class in sorted order, e.g. ``>50K``); multiclass tasks are audited one class
against the rest, one report per class; regression reports per-group means and
errors with their largest gaps.

Example:

    report = audit_run("runs/adult-income", "adult_test.csv", ["sex", "race"])
    report["verdict"]
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from autodl.audit.audit import (
    MIN_GROUP_SIZE,
    N_BOOTSTRAP,
    audit_classification,
    audit_regression,
    proxy_associations,
    sensitive_groups,
)
from autodl import metrics as metrics_lib
from autodl.data import Schema, prepare_target
from autodl.errors import DataError
from autodl.run import write_json

AUDIT_FILE = "audit.json"
# Where ``autodl export`` puts the edge bundle by default, relative to the run.
DEFAULT_BUNDLE = Path("export") / "edge"


def audit_frame(
    schema: Schema,
    frame: pd.DataFrame,
    output: np.ndarray,
    sensitive: Sequence[str],
    *,
    positive: str | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """The audit of ``output`` (the model's raw output on ``frame``) against ``frame``'s labels."""
    if schema.target not in frame.columns:
        raise DataError(f"data has no target column '{schema.target}'; an audit needs labelled rows")
    groups = sensitive_groups(frame, sensitive)
    y = prepare_target(frame[schema.target], schema)
    features = _proxy_candidates(schema, frame, sensitive)
    report: dict[str, Any] = {"task": schema.task, "sensitive": list(sensitive), "rows": int(len(frame))}
    if schema.task == "regression":
        report.update(audit_regression(y, output, groups, min_group_size=min_group_size))
        report["verdict"] = "info"  # no policy thresholds for regression gaps: a reviewer reads them
    else:
        classes = [str(c) for c in schema.classes or []]
        labels = np.asarray(classes, dtype=object)
        # Labels as predict decides them: at a binary run's decision threshold (one-hot decisions pass through).
        y_label, pred_label = labels[y], labels[metrics_lib.decide(output, schema.threshold)]
        if schema.task == "binary":
            chosen = positive if positive is not None else classes[-1]
            if chosen not in classes:
                raise DataError(f"--positive {chosen!r} is not a class; classes are: {', '.join(classes)}")
            report.update(audit_classification(y_label, pred_label, groups, positive=chosen,
                                               min_group_size=min_group_size, n_bootstrap=n_bootstrap, seed=seed))
        else:
            per_class = {c: audit_classification(y_label, pred_label, groups, positive=c, min_group_size=min_group_size,
                                                 n_bootstrap=n_bootstrap, seed=seed) for c in classes}
            report["one_vs_rest"] = per_class
            order = {"pass": 0, "warn": 1, "fail": 2}
            report["verdict"] = max((r["verdict"] for r in per_class.values()), key=order.__getitem__)
    report["proxies"] = proxy_associations(features, frame[list(sensitive)]) if len(features.columns) else {}
    return report


def audit_run(
    run_dir: str | Path,
    data: str | Path | pd.DataFrame,
    sensitive: Sequence[str],
    *,
    positive: str | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    n_bootstrap: int = N_BOOTSTRAP,
    write: bool = True,
    bundle: str | Path | None = None,
) -> dict[str, Any]:
    """Predicts ``data`` with a fitted run and audits it; writes ``RUN/audit.json`` unless ``write=False``.

    ``bundle``: an edge bundle whose TFLite variants are audited on the same rows too
    (``variants`` and ``variants_comparison`` in the report); default ``RUN/export/edge``
    when the run was exported there. A ``bundle`` given but missing is a ``UserError``.
    """
    from autodl.api import AutoModel, _frame

    if bundle is None and (Path(run_dir) / DEFAULT_BUNDLE).is_dir():
        bundle = Path(run_dir) / DEFAULT_BUNDLE
    if bundle is not None:
        from autodl.export.pipeline import bundle_variants

        bundle_variants(bundle)  # a wrong --bundle fails before the model is loaded and run
    model = AutoModel.load(run_dir)
    frame = _frame(data)
    if model.schema.target in frame.columns:
        frame = frame[frame[model.schema.target].notna()].reset_index(drop=True)
    thresholds = model.fairness_thresholds
    output = decided(thresholds, model.schema, frame, model.predict_output(frame))
    report = audit_frame(model.schema, frame, output, sensitive, positive=positive, min_group_size=min_group_size,
                         n_bootstrap=n_bootstrap)
    report["data"] = str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>"
    if bundle is not None:
        variants = audit_variants(bundle, model.schema, frame, sensitive, positive=positive, min_group_size=min_group_size,
                                  thresholds=thresholds)
        report["variants"] = variants
        report["variants_comparison"] = variants_comparison(report, variants)
    if write:
        write_audit(Path(run_dir), report)
    return report


def audit_variants(
    bundle: str | Path,
    schema: Schema,
    frame: pd.DataFrame,
    sensitive: Sequence[str],
    *,
    positive: str | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    thresholds: Any = None,
) -> dict[str, dict[str, Any]]:
    """Runs each ``model_<variant>.tflite`` of ``bundle`` on ``frame`` and audits it: ``{variant: report}``.

    The variants run through the export's own runner path, so these are the decisions
    a device makes. Raises ``UserError`` when ``bundle`` is missing or holds no variants.
    """
    from autodl.export.pipeline import predict_variants

    return audit_outputs(schema, frame, predict_variants(bundle, frame), sensitive, positive=positive,
                         min_group_size=min_group_size, thresholds=thresholds)


def audit_outputs(
    schema: Schema,
    frame: pd.DataFrame,
    outputs: dict[str, np.ndarray],
    sensitive: Sequence[str],
    *,
    positive: str | None = None,
    min_group_size: int = MIN_GROUP_SIZE,
    thresholds: Any = None,
) -> dict[str, dict[str, Any]]:
    """``audit_frame`` of several models' outputs on the same rows, without bootstrap.

    Variants are compared on their point estimates; intervals for each would multiply
    the audit's cost by the number of variants for nothing the comparison shows.
    ``thresholds`` (a run's ``GroupThresholds``) are applied to each output first, as
    ``predict`` would.
    """
    return {name: audit_frame(schema, frame, decided(thresholds, schema, frame, output), sensitive, positive=positive,
                              min_group_size=min_group_size, n_bootstrap=0) for name, output in outputs.items()}


def decided(thresholds: Any, schema: Schema, frame: pd.DataFrame, output: np.ndarray) -> np.ndarray:
    """``output`` after a run's per-group thresholds, when it has them: the decisions ``predict`` makes.

    Without the sensitive columns the thresholds cannot apply; like ``predict``, that
    warns and audits the model's own decisions.
    """
    if thresholds is None:
        return output
    try:
        return thresholds.decide_output(schema, frame, output)
    except DataError as e:
        warnings.warn(str(e), UserWarning, stacklevel=2)
        return output


def variants_comparison(reference: dict[str, Any], variants: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``compare_reports`` rows: the Keras model's audit first, then ``tflite <variant>`` for each."""
    return compare_reports({"keras": reference, **{f"tflite {name}": r for name, r in variants.items()}})


def record_variants(run_dir: str | Path, variants: dict[str, dict[str, Any]], comparison: list[dict[str, Any]]) -> None:
    """Adds the variants' audits to an existing ``RUN/audit.json``, its other keys as they were."""
    path = Path(run_dir) / AUDIT_FILE
    if not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    report["variants"] = variants
    report["variants_comparison"] = comparison
    write_json(path, report)


def _proxy_candidates(schema: Schema, frame: pd.DataFrame, sensitive: Sequence[str]) -> pd.DataFrame:
    """The model's feature columns as the model sees their kind: dates as time, free text left out."""
    from autodl.features.frame import to_epoch_seconds

    out = {}
    for col in schema.features:
        if col.name in sensitive or col.name not in frame.columns or col.kind == "text":
            continue
        out[col.name] = to_epoch_seconds(frame[col.name]) if col.kind == "datetime" else frame[col.name]
    return pd.DataFrame(out, index=frame.index)


def write_audit(run_dir: Path, report: dict[str, Any]) -> Path:
    path = run_dir / AUDIT_FILE
    write_json(path, report)
    return path


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (class, sensitive column, headline metric) with value, interval and policy status."""
    reports = report.get("one_vs_rest") or {report.get("positive", ""): report}
    rows = []
    for label, r in reports.items():
        statuses = {c["metric"]: c["status"] for c in r.get("policy", {}).get("checks", [])}
        worst = {c["metric"]: c["value"] for c in r.get("policy", {}).get("checks", [])}
        for column, entry in r["columns"].items():
            for metric, h in entry.get("headline", {}).items():
                status = statuses.get(metric, "") if h["value"] is not None and h["value"] == worst.get(metric) else ""
                rows.append({"class": label, "column": column, "metric": metric, "value": h["value"], "ci95": h["ci95"],
                             "status": status, "small_groups": entry["small_groups"]})
    return rows


COMPARED: tuple[str, ...] = (
    "demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference", "equal_opportunity_difference",
)


def compare_reports(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per audited model (e.g. before/after mitigation, or each TFLite variant) on the same rows.

    Each row: accuracy and selection rate over all rows, the least fair value of each
    headline gap over the sensitive columns and their intersection, and the verdict.
    Regression rows hold RMSE and MAE over all rows and the largest between-group gap of
    each per-group metric. Multiclass reports give no rows.
    """
    from autodl.audit.audit import worst_headline

    rows = []
    for name, report in reports.items():
        if "overall" not in report:
            continue
        if report.get("task") == "regression":
            rows.append(_regression_row(name, report))
            continue
        row: dict[str, Any] = {"model": name, "accuracy": report["overall"]["accuracy"],
                               "selection_rate": report["overall"]["selection_rate"]}
        for metric in COMPARED:
            worst = worst_headline(report, metric)
            row[metric] = None if worst is None else worst["value"]
        row["verdict"] = report["verdict"]
        rows.append(row)
    return rows


def _regression_row(name: str, report: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, "rmse": report["overall"]["rmse"], "mae": report["overall"]["mae"]}
    for metric in ("mean_prediction", "mae", "rmse"):
        gaps = [c["difference"][metric] for c in report["columns"].values() if metric in c.get("difference", {})]
        row[f"{metric}_difference"] = max(gaps) if gaps else None
    row["verdict"] = report["verdict"]
    return row

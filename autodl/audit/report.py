"""The audit of a fitted model on labelled rows: ``audit.json`` and the table a reviewer reads.

``audit_frame`` audits given model outputs (what ``autodl fit --sensitive``
does on the test split); ``audit_run`` predicts a file with a saved run first
(``autodl audit RUN data.csv --sensitive sex``).

Binary tasks audit the decision "predicted ``positive``" (default: the second
class in sorted order, e.g. ``>50K``); multiclass tasks are audited one class
against the rest, one report per class; regression reports per-group means and
errors with their largest gaps.

Example:

    report = audit_run("runs/adult-income", "adult_test.csv", ["sex", "race"])
    report["verdict"]
"""

from __future__ import annotations

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
from autodl.data import Schema, prepare_target
from autodl.errors import DataError
from autodl.run import write_json

AUDIT_FILE = "audit.json"


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
        y_label, pred_label = labels[y], labels[np.argmax(output, axis=1)]
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
) -> dict[str, Any]:
    """Predicts ``data`` with a fitted run and audits it; writes ``RUN/audit.json`` unless ``write=False``."""
    from autodl.api import AutoModel, _frame

    model = AutoModel.load(run_dir)
    frame = _frame(data)
    if model.schema.target in frame.columns:
        frame = frame[frame[model.schema.target].notna()].reset_index(drop=True)
    output = model.predict_output(frame)
    report = audit_frame(model.schema, frame, output, sensitive, positive=positive, min_group_size=min_group_size,
                         n_bootstrap=n_bootstrap)
    report["data"] = str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>"
    if write:
        write_audit(Path(run_dir), report)
    return report


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
    Binary classification only; other tasks give no rows.
    """
    from autodl.audit.audit import worst_headline

    rows = []
    for name, report in reports.items():
        if "overall" not in report:
            continue
        row: dict[str, Any] = {"model": name, "accuracy": report["overall"]["accuracy"],
                               "selection_rate": report["overall"]["selection_rate"]}
        for metric in COMPARED:
            worst = worst_headline(report, metric)
            row[metric] = None if worst is None else worst["value"]
        row["verdict"] = report["verdict"]
        rows.append(row)
    return rows

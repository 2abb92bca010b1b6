"""``export_run``: a fitted run → verified TF Serving and LiteRT artifacts, plus ``report.json``.

Layout (``OUT`` defaults to ``RUN/export``)::

    OUT/report.json                       every check below, per artifact
    OUT/serving/NAME/VERSION/             what TF Serving loads (saved_model.pb, variables/, assets.extra/)
    OUT/edge/                             the edge bundle: model*.tflite, schema.json, labels.json, autodl_edge.py

When the fit audited sensitive columns (``--sensitive``) of a classifier, each
TFLite variant is audited on the same test rows too: ``report["audit"]`` and
``RUN/audit.json``'s ``variants`` show whether quantization changed who gets
the favourable decision.

Every artifact is checked against the Keras model on the run's test split:
the SavedModel through its ``serving_default`` signature on raw columns, each
TFLite variant through the very runner shipped in the bundle. Everything is
written into a staging folder first and moved into place at the end, so a
failed export leaves no partial output and an existing one is replaced only
by a complete new one.

Image runs (``"input": "image"`` in ``run.json``) have no table schema: ``export_run``
hands them to ``autodl.export.image.export_image_run``, which writes the same
layout and report shape from the run's images.

Example:

    report = export_run("runs/adult-income", ExportOptions(formats=("tflite",), quantize="int8"))
    report["tflite"]["variants"]["int8"]["accuracy"]
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from autodl import metrics as metrics_lib
from autodl.data import Schema, prepare_target
from autodl.errors import UserError
from autodl.features.frame import is_missing
from autodl.run import RunDir, write_json

FORMATS: tuple[str, ...] = ("serving", "tflite")
# A variant may become the bundle's default when it costs at most this much of the Keras model's metric.
DEFAULT_VARIANT_TOLERANCE = 0.005
INT8_FLAG_TOLERANCE = 0.01
LATENCY_REPEATS = 200
LATENCY_BUDGET_S = 2.0


@dataclass
class ExportOptions:
    """What ``autodl export`` writes; the CLI's options one to one."""

    formats: tuple[str, ...] = FORMATS
    out: str | None = None
    name: str = "model"
    version: int = 1
    quantize: str = "all"
    int8_io: bool = False
    prune: float | None = None
    qat: bool = False
    overwrite: bool = False
    fine_tune_epochs: int = 2

    def validate(self) -> "ExportOptions":
        from autodl.export.tflite import QUANTIZE_CHOICES

        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise UserError(f"unknown export format {unknown[0] if unknown else '(none)'!r}; choose from: {', '.join(FORMATS)}")
        if self.quantize not in QUANTIZE_CHOICES:
            raise UserError(f"unknown --quantize mode {self.quantize!r}; choose from: {', '.join(QUANTIZE_CHOICES)}")
        if self.version < 1:
            raise UserError("--version must be a positive whole number (TF Serving's version folders)")
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise UserError(f"--name {self.name!r} must be a plain folder name")
        if self.prune is not None and not 0.0 < self.prune < 1.0:
            raise UserError(f"--prune takes the fraction of weights to zero, between 0 and 1 (e.g. 0.5), not {self.prune}")
        if (self.prune is not None or self.qat or self.int8_io) and "tflite" not in self.formats:
            raise UserError("--prune, --qat and --int8-io produce TFLite files; add --format tflite")
        return self


@dataclass
class RunFrames:
    """Raw labelled rows of the run's training and test splits."""

    train: pd.DataFrame
    test: pd.DataFrame


def export_run(
    run_dir: str | Path,
    options: ExportOptions,
    *,
    data: str | Path | pd.DataFrame | None = None,
    test_data: str | Path | pd.DataFrame | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Writes and verifies the artifacts; returns the report (also written to ``OUT/report.json``)."""
    options.validate()
    step = on_step or (lambda _: None)
    run = RunDir(run_dir)
    manifest = run.read_complete_manifest()
    out = Path(options.out) if options.out else run.path / "export"
    if manifest.get("input") == "image":
        # Before the table schema is touched: an image run has none (AutoModel.schema refuses it).
        from autodl.export.image import export_image_run

        return export_image_run(run, manifest, options, out, data=data, test_data=test_data, on_step=step)
    targets = _check_targets(out, options)
    from autodl.api import AutoModel

    fitted = AutoModel.load(run.path)
    schema = fitted.schema
    model = fitted.model
    frames = load_frames(run, manifest, data, test_data)
    reference = _reference(model, schema, frames.test)
    report: dict[str, Any] = {
        "run": str(run.path),
        "task": schema.task,
        "test_rows": int(len(frames.test)),
        "keras": reference.summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    variant_audits: dict[str, dict[str, Any]] = {}
    try:
        if "serving" in options.formats:
            step("TF Serving SavedModel")
            report["serving"] = _export_serving(model, schema, frames, reference, staging / "serving", options)
        if "tflite" in options.formats:
            report["tflite"], outputs = _export_tflite(model, schema, frames, reference, staging / "edge", options, step)
            if "audit" in manifest and schema.task != "regression":
                step("fairness audit of the TFLite variants")
                # Before the move: a failing audit must leave no half-reported bundle behind.
                report["audit"], variant_audits = _audit_variants(schema, frames.test, reference, outputs, manifest,
                                                                  fitted.fairness_thresholds)
        _carry_thresholds(run, staging, report)
        previous = place_and_report(staging, targets, out, report, overwrite=options.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if variant_audits:
        from autodl.audit.report import record_variants

        # RUN/audit.json is the run's audit wherever the bundle went (--out included).
        record_variants(run.path, variant_audits, report["audit"]["comparison"])
    return previous


def place_and_report(staging: Path, targets: dict[str, Path], out: Path, report: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
    """Moves the staged artifacts into place, records where they went, and merges them into ``out/report.json``."""
    _move_into_place(staging, targets, overwrite)
    for key in ("serving", "tflite"):
        if key in report:
            report[key]["path"] = str(targets[key])
    previous = _read_report(out / "report.json")
    previous.update(report)
    write_json(out / "report.json", previous)
    return previous


# -- inputs ------------------------------------------------------------------------------------


def load_frames(
    run: RunDir,
    manifest: dict[str, Any],
    data: str | Path | pd.DataFrame | None = None,
    test_data: str | Path | pd.DataFrame | None = None,
) -> RunFrames:
    """The training and test rows of the fit, from its data file (or the same data passed again)."""
    from autodl.fit import read_inputs

    source = data if data is not None else manifest["data"]["source"]
    if isinstance(source, str) and source == "<DataFrame>":
        raise UserError("this run was fitted on an in-memory DataFrame; pass the same data again (--data FILE)")
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise UserError(f"the run's training data '{source}' is not there any more; pass it with --data FILE")
    df, fingerprint = read_inputs(source)
    recorded = manifest["data"]["fingerprint"]
    # A file re-read has the file's fingerprint; data fitted from a DataFrame can only be checked by size.
    same_kind = fingerprint.split(":")[0] == recorded.split(":")[0]
    if (same_kind and fingerprint != recorded) or len(df) != manifest["data"]["rows"]:
        raise UserError(
            f"the data given differs from what run '{run.path}' was fitted on (its split would not match); "
            "pass the original file with --data FILE"
        )
    target = manifest["target"]
    labelled = df[df[target].notna()].reset_index(drop=True)
    with np.load(run.split_path) as z:
        train_rows, test_rows = z["train"], z["test"]
    test_source = test_data if test_data is not None else manifest["data"].get("test_source")
    if test_source is not None and not (isinstance(test_source, str) and test_source == "<DataFrame>"):
        test_df, _ = read_inputs(test_source, role="test")
        test = test_df[test_df[target].notna()].reset_index(drop=True)
    elif test_source is not None:
        raise UserError("this run was scored on an in-memory test DataFrame; pass it again (--test FILE)")
    else:
        test = labelled.iloc[test_rows].reset_index(drop=True)
    return RunFrames(train=labelled.iloc[train_rows].reset_index(drop=True), test=test)


@dataclass
class _Reference:
    output: np.ndarray
    y: np.ndarray
    metric: str
    summary: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None  # the run's binary decision threshold: labels are decided as predict decides


def _reference(model: Any, schema: Schema, test: pd.DataFrame) -> _Reference:
    from autodl.features.frame import ModelData, to_model_inputs
    from autodl.fit import predict_output

    x = to_model_inputs(test, schema)
    output = predict_output(model, ModelData(x), schema.task)
    y = prepare_target(test[schema.target], schema)
    metric = metrics_lib.default_metric(schema.task)
    one_row = {k: v[:1] for k, v in x.items()}
    tensors = _as_tensors(one_row)
    summary = {
        metric: score(schema.task, y, output, schema.threshold),
        "parameters": int(model.count_params()),
        "latency_ms": {
            "predict": median_ms(lambda: model.predict(one_row, verbose=0), repeats=30),
            "call": median_ms(lambda: model(tensors, training=False), repeats=100),
        },
    }
    return _Reference(output, y, metric, summary, schema.threshold)


def _as_tensors(x: dict[str, np.ndarray]) -> dict[str, Any]:
    import tensorflow as tf

    return {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in x.items()}


def score(task: str, y: np.ndarray, output: np.ndarray, threshold: float | None = None) -> float:
    """Accuracy (classification, labels at the run's ``threshold``) or RMSE (regression)."""
    return float(metrics_lib.compute(task, y, output, threshold=threshold)[metrics_lib.default_metric(task)])


def median_ms(fn: Callable[[], Any], repeats: int = LATENCY_REPEATS, *, budget_s: float = LATENCY_BUDGET_S) -> float:
    """Median wall time of ``fn`` in milliseconds, after a few warm-up calls.

    At most ``repeats`` calls, and no more than ``budget_s`` seconds of them (at least
    5 calls): a 100 ms Keras call needs no 200 samples for a stable median, and an
    export of a large model should not spend half a minute timing it.
    """
    for _ in range(3):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - started < budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def compare(task: str, reference: np.ndarray, output: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """Label agreement (at the run's decision ``threshold``) and the largest output difference against the Keras model."""
    diff = float(np.max(np.abs(output.astype(np.float64) - reference))) if len(output) else 0.0
    if task == "regression":
        return {"max_abs_diff": diff}
    labels = metrics_lib.decide(output, threshold)
    agreement = float(np.mean(labels == metrics_lib.decide(reference, threshold))) if len(output) else 1.0
    return {"label_agreement": agreement, "max_abs_diff": diff}


# -- TF Serving --------------------------------------------------------------------------------


def _export_serving(
    model: Any, schema: Schema, frames: RunFrames, reference: _Reference, staging: Path, options: ExportOptions
) -> dict[str, Any]:
    import tensorflow as tf

    from autodl.export.serving import export_serving, serving_inputs

    result = export_serving(model, schema, staging, name=options.name, version=options.version, warmup_rows=frames.train.head(10))
    signature = tf.saved_model.load(str(result.path)).signatures["serving_default"]
    inputs = {k: tf.constant(v) for k, v in serving_inputs(frames.test, schema).items()}
    outputs = signature(**inputs)
    output = outputs["value" if schema.task == "regression" else "probabilities"].numpy()
    one_row = {k: v[:1] for k, v in inputs.items()}
    return {
        "name": options.name,
        "version": options.version,
        "signature_inputs": result.signature_inputs,
        "signature_outputs": result.signature_outputs,
        "warmup_records": result.warmup_records,
        "request_example": str(result.request_example.relative_to(staging)),
        reference.metric: score(schema.task, reference.y, output, reference.threshold),
        **compare(schema.task, reference.output, output, reference.threshold),
        "latency_ms": median_ms(lambda: signature(**one_row), repeats=100),
        "size_bytes": _tree_size(result.path),
    }


# -- TFLite ------------------------------------------------------------------------------------


def _export_tflite(
    model: Any,
    schema: Schema,
    frames: RunFrames,
    reference: _Reference,
    staging: Path,
    options: ExportOptions,
    step: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The bundle's report, and each variant's output on the test rows (kept for the fairness audit)."""
    from autodl.edge.autodl_edge import prepare_inputs
    from autodl.export import tflite
    from autodl.export.graph import split_for_edge

    edge = split_for_edge(model)
    document = tflite.bundle_schema(edge, schema)
    train_columns = _columns(frames.train, document)
    calibration = prepare_inputs(document, _sample(train_columns, tflite.REPRESENTATIVE_ROWS, seed=0))
    flatbuffers: dict[str, bytes] = {}
    for variant in tflite.variants_for(options.quantize):
        step(f"TFLite {variant}")
        flatbuffers[variant] = tflite.convert(
            edge, variant, task=schema.task, representative=calibration, int8_io=options.int8_io
        )
    compression: dict[str, Any] = {}
    for method in (["prune"] if options.prune is not None else []) + (["qat"] if options.qat else []):
        step(f"{'pruning' if method == 'prune' else 'quantization-aware training'} (tf_keras subprocess)")
        result = _compress(edge, schema, frames, method, options, staging)
        compression[method] = result
        flatbuffers[result["variant"]] = Path(result.pop("tflite_path")).read_bytes()
    tflite.write_bundle(staging, flatbuffers=flatbuffers, edge=edge, schema=schema, default_variant="float32",
                        int8_io=options.int8_io)
    step("verifying TFLite variants")
    test_columns = _columns(frames.test, document)
    verified = {v: _verify_variant(staging, v, test_columns, schema.task, reference) for v in flatbuffers}
    variants = {v: summary for v, (summary, _) in verified.items()}
    default = choose_default(variants)
    _set_default(staging, default)
    for method, result in compression.items():
        result.update({k: variants[result["variant"]][k] for k in ("size_bytes", "gzip_bytes")})
    return {
        "host_steps": [{"input": s.input, "op": s.op, "column": s.column} for s in edge.host_steps],
        "default_variant": default,
        "variants": variants,
        "compression": compression,
    }, {v: output for v, (_, output) in verified.items()}


def edge_inputs(edge: Any, schema: Schema, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Raw rows → the edge model's inputs keyed as ``edge.model.input`` (strings as ``str``), via the runner."""
    from autodl.edge.autodl_edge import prepare_inputs
    from autodl.export.tflite import bundle_schema, tensor_names

    document = bundle_schema(edge, schema)
    keys = {name: key for key, name in tensor_names(edge).items()}
    feeds = prepare_inputs(document, _columns(frame, document))
    return {keys[n]: (np.char.decode(v, "utf-8") if v.dtype.kind == "S" else v) for n, v in feeds.items()}


def _columns(frame: pd.DataFrame, document: dict[str, Any]) -> dict[str, list[Any]]:
    # The runner's own view of rows: Python values, None for missing.
    return {c: [None if is_missing(v) else v for v in frame[c].tolist()] for c in document["columns_read"]}


def _sample(columns: dict[str, list[Any]], n: int, seed: int) -> dict[str, list[Any]]:
    rows = len(next(iter(columns.values())))
    pick = np.sort(np.random.default_rng(seed).permutation(rows)[:n])
    return {c: [values[i] for i in pick] for c, values in columns.items()}


def predict_variants(bundle: str | Path, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each variant of an edge bundle on raw rows: ``{variant: output}``, through the bundle's own runner.

    The same path as the export's verification (``_columns`` then ``EdgeModel``), so
    ``autodl audit`` sees exactly what a device would compute.
    """
    bundle = Path(bundle)
    document, variants = bundle_variants(bundle)
    missing = [c for c in document.get("columns_read", []) if c not in frame.columns]
    if missing:
        raise UserError(f"data is missing column(s) {', '.join(missing)} that the edge bundle '{bundle}' reads")
    columns = _columns(frame, document)
    return {v: _edge_model(bundle, v).predict_output(columns) for v in variants}


def bundle_variants(bundle: str | Path) -> tuple[dict[str, Any], list[str]]:
    """An edge bundle's ``schema.json`` and the variants whose ``model_<variant>.tflite`` is there.

    A ``UserError`` when there is no bundle, checked before anything slow runs.
    """
    bundle = Path(bundle)
    hint = "pass the edge/ folder written by 'autodl export'"
    if not bundle.is_dir():
        raise UserError(f"edge bundle '{bundle}' does not exist; {hint}")
    files = {p.name for p in bundle.glob("model_*.tflite")}
    if not files or not (bundle / "schema.json").is_file():
        raise UserError(f"'{bundle}' holds no model_<variant>.tflite files with a schema.json; {hint}")
    try:
        document = json.loads((bundle / "schema.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{bundle / 'schema.json'} is not valid JSON; {hint}") from None
    variants = [v for v, spec in document.get("variants", {}).items() if spec.get("file") in files]
    if not variants:
        raise UserError(f"no variant listed in {bundle / 'schema.json'} has its .tflite file in '{bundle}'; {hint}")
    return document, variants


def _edge_model(bundle: Path, variant: str) -> Any:
    from autodl.edge.autodl_edge import EdgeModel

    try:
        return EdgeModel(bundle, variant, num_threads=1)
    except SystemExit as e:  # the stand-alone runner exits with "error: ..."; here it is a user error
        raise UserError(str(e.code).removeprefix("error: ")) from None


def _verify_variant(
    bundle: Path, variant: str, data: Any, task: str, reference: _Reference, throughput_batch: int = 1024
) -> tuple[dict[str, Any], np.ndarray]:
    """The variant's checks against the Keras model, and its output on the test rows.

    ``data``: what the bundle's runner predicts from (columns of raw values, or an image bundle's pixels).
    """
    model = _edge_model(bundle, variant)
    output = model.predict_output(data)
    value = score(task, reference.y, output, reference.threshold)
    feeds = model.inputs(data)
    one_row = {k: v[:1] for k, v in feeds.items()}
    batch = {k: v[:throughput_batch] for k, v in feeds.items()}
    batch_rows = len(next(iter(batch.values())))
    batch_ms = median_ms(lambda: model.raw_output(batch), repeats=10)
    single_ms = median_ms(lambda: model.raw_output(one_row))
    content = (bundle / f"model_{variant}.tflite").read_bytes()
    loss = _loss(reference.summary[reference.metric], value, task)
    return {
        "file": f"model_{variant}.tflite",
        "size_bytes": len(content),
        "gzip_bytes": len(gzip.compress(content)),
        reference.metric: value,
        "metric_loss": loss,
        **compare(task, reference.output, output, reference.threshold),
        "latency_ms": single_ms,
        "throughput_rows_per_s": batch_rows / (batch_ms / 1000.0),
        "flagged": bool(variant != "float32" and task != "regression" and loss > INT8_FLAG_TOLERANCE),
    }, output


def _carry_thresholds(run: RunDir, staging: Path, report: dict[str, Any]) -> None:
    """A run mitigated with per-group thresholds: the bundle carries them, and the report says who applies them.

    The exported models output the model's own probabilities; the thresholds act on top
    of them, per row, with the sensitive column at hand: ``autodl predict`` and the edge
    runner apply them, a TF Serving client must apply the file itself.
    """
    from autodl.audit.mitigation import THRESHOLD_FILE

    source = run.path / THRESHOLD_FILE
    if not source.exists():
        return
    if (staging / "edge").is_dir():
        shutil.copyfile(source, staging / "edge" / THRESHOLD_FILE)
    report["fairness_thresholds"] = {
        "file": str(source),
        "note": f"this run's decisions apply per-group thresholds ({THRESHOLD_FILE}) on top of the model's "
                "probabilities: the edge runner applies the copy in the bundle when the sensitive column is present; "
                "TF Serving returns the probabilities, so a client applies the file itself",
    }


def _audit_variants(
    schema: Schema, test: pd.DataFrame, reference: _Reference, outputs: dict[str, np.ndarray], manifest: dict[str, Any],
    thresholds: Any = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``report["audit"]`` and each variant's audit, on the test rows the variants were verified on.

    The fit's sensitive columns and favourable class; the Keras model is audited again here
    (not read from RUN/audit.json) because that file may since hold an ``autodl audit`` of
    other rows; without bootstrap, as only point estimates are compared.
    """
    from autodl.audit.report import audit_frame, audit_outputs, decided, variants_comparison

    sensitive = list(manifest["audit"]["sensitive"])
    # Runs fitted before --positive existed have no such key: the audit's default class then.
    positive = manifest.get("config", {}).get("positive") if schema.task == "binary" else None
    keras = audit_frame(schema, test, decided(thresholds, schema, test, reference.output), sensitive, positive=positive,
                        n_bootstrap=0)
    variants = audit_outputs(schema, test, outputs, sensitive, positive=positive, thresholds=thresholds)
    return {"sensitive": sensitive, "comparison": variants_comparison(keras, variants)}, variants


def _loss(keras_value: float, value: float, task: str) -> float:
    """How much worse than the Keras model: accuracy points lost, or relative RMSE increase."""
    if task == "regression":
        return (value - keras_value) / max(keras_value, 1e-12)
    return keras_value - value


def choose_default(variants: dict[str, dict[str, Any]]) -> str:
    """The smallest conversion of the Keras model itself within 0.5 point of accuracy (0.5% of RMSE).

    Pruned and QAT variants are fine-tuned, so different, models: a user picks them with --variant.
    """
    from autodl.export.tflite import VARIANTS

    good = [v for v, r in variants.items() if v in VARIANTS and r["metric_loss"] <= DEFAULT_VARIANT_TOLERANCE]
    return min(good or ["float32"], key=lambda v: variants[v]["size_bytes"])


def _set_default(bundle: Path, default: str) -> None:
    shutil.copyfile(bundle / f"model_{default}.tflite", bundle / "model.tflite")
    document = json.loads((bundle / "schema.json").read_text(encoding="utf-8"))
    document["default_variant"] = default
    (bundle / "schema.json").write_text(json.dumps(document, indent=2), encoding="utf-8")


def _compress(
    edge: Any, schema: Schema, frames: RunFrames, method: str, options: ExportOptions, staging: Path
) -> dict[str, Any]:
    from autodl.export.compress import compress

    work = Path(tempfile.mkdtemp(prefix="autodl-compress-"))
    try:
        model_path = work / "edge.keras"
        edge.model.save(model_path)

        def model_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
            return edge_inputs(edge, schema, frame)

        variant = "pruned_int8" if method == "prune" else "qat_int8"
        result = compress(
            model_path, work / f"{variant}.tflite", method=method, task=schema.task,
            train_x=model_inputs(frames.train), train_y=prepare_target(frames.train[schema.target], schema),
            eval_x=model_inputs(frames.test), eval_y=prepare_target(frames.test[schema.target], schema),
            sparsity=options.prune or 0.5, epochs=options.fine_tune_epochs, quantize="int8",
        )
        kept = staging.parent / f".{variant}.tflite"
        shutil.copyfile(result.tflite_path, kept)
        summary = asdict(result)
        summary.update(variant=variant, tflite_path=str(kept))
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- placing the output ------------------------------------------------------------------------


def _check_targets(out: Path, options: ExportOptions) -> dict[str, Path]:
    targets = {}
    if "serving" in options.formats:
        targets["serving"] = out / "serving" / options.name / str(options.version)
        if targets["serving"].exists() and not options.overwrite:
            raise UserError(
                f"version {options.version} of '{options.name}' already exists in {out / 'serving'}; "
                f"pass --version {_next_version(out / 'serving' / options.name)} or --overwrite"
            )
    if "tflite" in options.formats:
        targets["tflite"] = out / "edge"
        if targets["tflite"].exists() and not options.overwrite:
            raise UserError(f"edge bundle {targets['tflite']} already exists; pass --overwrite or another --out")
    return targets


def _next_version(folder: Path) -> int:
    versions = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return max(versions, default=0) + 1


def _move_into_place(staging: Path, targets: dict[str, Path], overwrite: bool) -> None:
    moves = []
    if "serving" in targets:
        source = next((staging / "serving").glob("*/*"))
        moves.append((source, targets["serving"]))
    if "tflite" in targets:
        moves.append((staging / "edge", targets["tflite"]))
    for source, target in moves:
        target.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if target.exists() and overwrite:
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(source, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_report(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per artifact for the summary table: size, metric, agreement, latency, throughput."""
    metric = next(k for k in ("accuracy", "rmse") if k in report["keras"])
    rows = [{"artifact": "keras model", "size": None, metric: report["keras"][metric],
             "agreement": None, "max_abs_diff": None, "latency_ms": report["keras"]["latency_ms"]["predict"],
             "note": f"model.predict; direct call {report['keras']['latency_ms']['call']:.2f} ms"}]
    if "serving" in report:
        s = report["serving"]
        rows.append({"artifact": f"serving {s['name']}/{s['version']}", "size": s["size_bytes"], metric: s[metric],
                     "agreement": s.get("label_agreement"), "max_abs_diff": s["max_abs_diff"], "latency_ms": s["latency_ms"],
                     "note": "serving_default signature"})
    if "tflite" in report:
        t = report["tflite"]
        for variant, v in t["variants"].items():
            notes = []
            if variant == t["default_variant"]:
                notes.append("default (model.tflite)")
            if v["flagged"]:
                notes.append("FLAG: loses > 1 accuracy point")
            if variant in ("pruned_int8", "qat_int8"):
                c = t["compression"]["prune" if variant == "pruned_int8" else "qat"]
                notes.append(f"sparsity {c['sparsity']:.2f}, gzip {c['gzip_bytes'] / 1024:.1f} KiB" if variant == "pruned_int8"
                             else c["details"].get("quantization", ""))
            rows.append({"artifact": f"tflite {variant}", "size": v["size_bytes"], metric: v[metric],
                         "agreement": v.get("label_agreement"), "max_abs_diff": v["max_abs_diff"],
                         "latency_ms": v["latency_ms"], "throughput": v["throughput_rows_per_s"], "note": "; ".join(notes)})
    return rows


__all__ = ["ExportOptions", "RunFrames", "export_run", "load_frames", "bundle_variants", "predict_variants", "report_rows",
           "choose_default", "FORMATS"]

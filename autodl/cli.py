"""The ``autodl`` command: a thin layer over ``AutoModel``.

    autodl fit data.csv --target income --time-limit 10m
    autodl predict runs/data-income new.csv -o predictions.csv
    autodl evaluate runs/data-income labelled.csv
    autodl leaderboard runs/data-income
    autodl export runs/data-income --format serving,tflite --quantize all

Problems with the input print one line and exit with code 2; ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from autodl.errors import UserError

app = typer.Typer(
    help="Keras AutoML: point it at a table, get back a tuned, evaluated, reloadable Keras model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
out = Console()
err = Console(stderr=True)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors.")) -> None:
    """Keras AutoML for tables."""


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter hides autodl's own output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


def _split_list(value: Optional[str]) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


@app.command()
def fit(
    data: Path = typer.Argument(..., help="CSV (delimiter sniffed) or Parquet file with a header row; or images: a folder with one sub-folder per class, or a CSV with an image-path column."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Column to predict (required for tables; a folder of class folders needs none)."),
    task: Optional[str] = typer.Option(None, help="binary, multiclass or regression (default: inferred from the target)."),
    test: Optional[Path] = typer.Option(None, "--test", help="Labelled test file; default: hold out 15% of DATA."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<data>-<target>)."),
    time_limit: Optional[str] = typer.Option(None, "--time-limit", help="Budget for the whole fit, e.g. 90s, 10m, 1h."),
    max_trials: int = typer.Option(20, "--max-trials", help="Most search trials."),
    tuner: str = typer.Option("bayesian", help="bayesian, hyperband or random."),
    metric: Optional[str] = typer.Option(None, help="Metric to optimize: accuracy, balanced_accuracy, log_loss, roc_auc, f1; rmse, mae, r2."),
    cv: str = typer.Option("auto", help="K-fold selection: a number of folds, 0 for one validation split, auto = 5 folds up to 3,000 rows (classes too small for every fold are stratified together)."),
    seed: int = typer.Option(0, help="Random seed of the split, the folds, the search's proposals and the initial weights. Without --time-limit, the same seed repeats a run exactly on the same machine; with it, the clock decides how many trials run and where a long trial is cut short, so scores vary from run to run (most on small tables)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start fresh instead of resuming an unfinished run in the same directory."),
    weight_column: Optional[str] = typer.Option(None, "--weight-column", help="Column of per-row sample weights."),
    drop: Optional[str] = typer.Option(None, help="Comma-separated columns to leave out."),
    models: Optional[str] = typer.Option(None, help="Comma-separated zoo architectures to search. Tables (default: all): mlp_plr, mlp, resnet, ft_transformer. Images (default: the light backbones with cached weights, and small_cnn): see 'autodl zoo list --task image'."),
    ensemble: int = typer.Option(5, help="Average up to this many top trials when it helps on validation (1 disables)."),
    refit: str = typer.Option("auto", help="Retrain the shipped configurations on all rows: auto (after CV, and on text tables), always, never."),
    class_weight: str = typer.Option("auto", "--class-weight", help="auto (balance the classes only for --metric balanced_accuracy), balanced (always; the model then decides for balanced classes) or none. Metrics and selection always count rows as they come."),
    max_epochs: int = typer.Option(100, "--max-epochs", help="Most epochs per trial (early stopping usually ends sooner)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    sensitive: Optional[str] = typer.Option(None, "--sensitive", help="Comma-separated columns to audit for fairness (Fairlearn) on the test split; kept out of the model's inputs."),
    sensitive_as_feature: bool = typer.Option(False, "--sensitive-as-feature", help="Keep the --sensitive columns as model inputs too."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The favourable class of a binary target, for the audit and fairness options (default: the second in sorted order)."),
    fairness_constraint: Optional[str] = typer.Option(None, "--fairness-constraint", help="Ship the best searched model meeting this on validation rows, e.g. \"demographic_parity_difference<=0.05\" or \"equalized_odds_difference<=0.1\" (any audit metric; needs --sensitive)."),
    mitigate: Optional[str] = typer.Option(None, "--mitigate", help="threshold: Fairlearn ThresholdOptimizer, per-group thresholds that predict applies; reductions: Fairlearn GridSearch retraining. With --fairness-constraint, used only when no searched model meets it."),
    grid_size: int = typer.Option(7, "--grid-size", help="With --mitigate reductions: models the grid trains."),
    export: Optional[str] = typer.Option(None, "--export", help="After the fit, export: serving, tflite or both (comma-separated), into RUN/export."),
    quantize: str = typer.Option("all", "--quantize", help="With --export tflite: none, float16, dynamic, int8 or all."),
    image_size: Optional[str] = typer.Option(None, "--image-size", help="Images: comma-separated square input sizes to search, e.g. 96,128 (default: chosen from the images' sizes)."),
    no_flip: bool = typer.Option(False, "--no-flip", help="Images: no horizontal flips in augmentation (digits, text, documents)."),
    workers: int = typer.Option(0, "--workers", help="Tables: run trials in N local worker processes (keras-tuner's chief/worker engine), each on a share of the CPUs or one GPU; 0 runs them in this process."),
    stream: Optional[bool] = typer.Option(None, "--stream/--no-stream", help="Tables: read the file in chunks instead of into memory (schema from a sample, statistics from streaming passes, training batches from tf.data); default: only for files over 1 GiB."),
    listen: str = typer.Option("127.0.0.1", "--listen", help="With --workers: the address the chief serves trials on; 0.0.0.0 lets 'autodl worker' join from other machines."),
) -> None:
    """Search zoo architectures for DATA, evaluate the best on a test split, save the run.

    DATA is a table, or images (a folder with one sub-folder per class, or a CSV with an
    image-path column and --target); images are searched over the zoo's image backbones,
    pretrained ones fine-tuned with the transfer-learning recipe.
    Running the same command again after a crash or Ctrl-C resumes the search.
    """
    _quiet_tensorflow()
    from autodl.api import AutoModel

    cv_value: Any = cv if cv == "auto" else _int_option(cv, "--cv")
    export_options = None
    if export:
        from autodl.export.pipeline import ExportOptions

        # Checked before the fit, so a typo does not cost a whole search.
        export_options = ExportOptions(formats=_split_list(export), quantize=quantize, overwrite=True).validate()
    model = AutoModel(
        target=target, task=task, metric=metric, time_limit=time_limit, max_trials=max_trials, tuner=tuner,
        cv=cv_value, seed=seed, out=out_dir, overwrite=overwrite, weight_column=weight_column,
        drop=_split_list(drop), models=_split_list(models) or None, ensemble=ensemble, refit=refit,
        class_weight=class_weight, max_epochs=max_epochs, verbosity=0 if quiet else 1,
        sensitive=_split_list(sensitive), sensitive_as_feature=sensitive_as_feature, positive=positive,
        fairness_constraint=fairness_constraint, mitigate=mitigate, grid_size=grid_size,
        image_size=tuple(_int_option(v, "--image-size") for v in _split_list(image_size)), flip=not no_flip,
        workers=workers, listen=listen, stream=stream,
    )
    model.fit(str(data), None if test is None else str(test))
    _print_summary(model.manifest)
    if "audit" in model.manifest:
        from autodl.audit.report import AUDIT_FILE

        report = json.loads((model.run_dir / AUDIT_FILE).read_text(encoding="utf-8"))
        _print_audit(report)
        _print_fairness(report)
    if export_options is not None:
        _run_export(model.run_dir, export_options, quiet=quiet)


@app.command()
def worker(
    run: Path = typer.Argument(..., help="The run directory of the search (on a filesystem the chief's machine shares)."),
    chief: str = typer.Option(..., "--chief", help="HOST:PORT the chief printed when 'autodl fit --workers' started."),
    worker_id: Optional[str] = typer.Option(None, "--id", help="This worker's name in the search (default: HOST-PID)."),
    cpus: Optional[str] = typer.Option(None, "--cpus", help="Comma-separated CPU ids to run on (default: all)."),
) -> None:
    """Join a running distributed search: ask the chief for trials and run them until it says stop.

    The worker reads the data, split and options from RUN, so it must see the same
    data file at the same path. Start the chief with 'autodl fit ... --workers N
    --listen 0.0.0.0'; it prints the address to pass here.
    """
    _quiet_tensorflow()
    import os
    import socket

    from autodl.fit import run_worker
    from autodl.progress import LogReporter
    from autodl.search.distributed import pin_to_cpus

    if cpus:
        pin_to_cpus([_int_option(c, "--cpus") for c in _split_list(cpus)])
    tuner_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    done = run_worker(run, chief, tuner_id, reporter=LogReporter(tuner_id))
    print(f"{tuner_id}: ran {done} trials; the chief has stopped giving out trials")


@app.command()
def finetune(
    name: str = typer.Argument(..., help="A zoo image entry, e.g. mobilenet_v3_small or small_cnn (see 'autodl zoo list --task image')."),
    data: Path = typer.Argument(..., help="A folder with one sub-folder of images per class, or a CSV of image paths (with --target)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Label column of a CSV of image paths (a folder's classes are its sub-folders)."),
    image_size: int = typer.Option(160, "--image-size", help="Images are resized to SIZE x SIZE pixels."),
    head_epochs: int = typer.Option(10, "--head-epochs", help="Phase 1: most epochs training the new head on the frozen backbone."),
    finetune_epochs: int = typer.Option(10, "--finetune-epochs", help="Phase 2: most epochs training the top blocks too (0 skips it)."),
    unfreeze_blocks: int = typer.Option(2, "--unfreeze-blocks", help="Top backbone blocks phase 2 trains (0 skips it)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per training step."),
    augmentation: float = typer.Option(0.3, "--augmentation", help="Augmentation strength in [0, 1] (flip, rotation, zoom, contrast); 0 disables."),
    no_flip: bool = typer.Option(False, "--no-flip", help="No horizontal flips (digits, text, documents)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="The pretrained weights file or URL when not cached (what 'autodl zoo pull NAME --from' takes)."),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="Ignore the pretrained weights; train everything from random initialization."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<data>-<model>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in the same directory."),
    seed: int = typer.Option(0, help="Random seed for the split, augmentation and initialization."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Fine-tune one zoo image model on DATA with its recipe (no search), evaluate it on a test split, save the run.

    Pretrained entries train a new head on the frozen backbone, then the top blocks at a
    lower learning rate; entries without weights (small_cnn) train from scratch.
    'autodl predict RUN FOLDER' then labels new images.
    """
    _quiet_tensorflow()
    from autodl.finetune import FinetuneConfig, run_finetune
    from autodl.progress import NullReporter, RichReporter

    config = FinetuneConfig(
        model=name, target=target, image_size=image_size, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
        unfreeze_blocks=unfreeze_blocks, batch_size=batch_size, augmentation=augmentation, flip=not no_flip,
        weights=weights, from_scratch=from_scratch, seed=seed, out=None if out_dir is None else str(out_dir),
        overwrite=overwrite,
    ).validate()
    manifest = run_finetune(config, str(data), reporter=NullReporter() if quiet else RichReporter())
    test = manifest["metrics"]["test"]
    table = Table(title=f"autodl finetune · {name} · {manifest['task']} · {len(manifest['schema']['classes'])} classes")
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("test accuracy", f"{test['accuracy']:.4f}")
    table.add_row("test balanced accuracy", f"{test['balanced_accuracy']:.4f}")
    table.add_row("classes", ", ".join(manifest["schema"]["classes"]))
    split = manifest["split"]
    table.add_row("images train/valid/test", f"{split['train']}/{split['valid']}/{split['test']}")
    table.add_row("final model", manifest["final_model"]["kind"])
    table.add_row("time", f"{manifest['timings']['total']:.1f} s")
    table.add_row("run directory", f"{manifest['run_dir']} ({manifest['disk_bytes'] / 2**20:.1f} MiB)")
    out.print(table)
    out.print(manifest["final_model"]["reason"])


@app.command()
def audit(
    run: Path = typer.Argument(..., help="Run directory written by 'autodl fit'."),
    data: Path = typer.Argument(..., help="Labelled data with the target and the sensitive columns (e.g. a new month)."),
    sensitive: str = typer.Option(..., "--sensitive", "-s", help="Comma-separated sensitive columns, e.g. sex,race."),
    positive: Optional[str] = typer.Option(None, "--positive", help="The favourable class of a binary target (default: the second in sorted order)."),
    min_group_size: int = typer.Option(30, "--min-group-size", help="Smaller groups are flagged and left out of the headline gaps."),
    bootstrap: int = typer.Option(200, "--bootstrap", help="Bootstrap resamples for the 95% intervals (0 disables)."),
    fail_on_violation: bool = typer.Option(False, "--fail-on-violation", help="Exit with code 1 when the policy verdict is fail (for CI pipelines)."),
    as_json: bool = typer.Option(False, "--json", help="Print audit.json instead of the table."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Edge bundle whose TFLite variants to audit on DATA too (default: RUN/export/edge when it exists)."),
) -> None:
    """Fairness audit of a fitted run on labelled DATA, computed by Fairlearn; writes RUN/audit.json.

    Per sensitive column and their intersection: each group's count, selection rate,
    accuracy, balanced accuracy, TPR, FPR, FNR and precision, demographic parity and
    equalized odds with 95% bootstrap intervals, a pass/warn/fail verdict (demographic-
    parity ratio >= 0.8, equalized-odds difference <= 0.1), and the features most
    associated with each sensitive column (possible proxies). When the run was
    exported for the edge, each TFLite variant is audited on the same rows too, since
    quantization can change who gets the favourable decision.
    """
    _quiet_tensorflow()
    from autodl.audit.report import audit_run

    report = audit_run(run, str(data), _split_list(sensitive), positive=positive, min_group_size=min_group_size,
                       n_bootstrap=bootstrap, bundle=bundle)
    if as_json:
        out.print_json(json.dumps(report, default=str))
    else:
        _print_audit(report)
        _print_comparison(report.get("variants_comparison", []), "audit of the exported TFLite variants on the same rows")
    if fail_on_violation and report["verdict"] == "fail":
        raise typer.Exit(1)


def _print_comparison(rows: list[dict[str, Any]], title: str) -> None:
    """Audits of several models on the same rows, side by side (one column per model)."""
    if not rows:
        return
    table = Table(title=title)
    table.add_column("metric")
    for row in rows:
        table.add_column(row["model"], justify="right")
    for key in [k for k in rows[0] if k != "model"]:
        table.add_row(key, *[_cell(row.get(key)) for row in rows])
    out.print(table)


def _print_fairness(report: dict[str, Any]) -> None:
    """What the fairness options did: the constrained selection, the mitigation, and before/after audits."""
    fairness = report.get("fairness")
    if not fairness:
        return
    selection = fairness.get("selection")
    if selection:
        if selection["met"] and selection["chosen"] != selection["unconstrained"]:
            cost = selection["cost"]
            out.print(f"fairness constraint {selection['constraint']}: shipped {selection['chosen']} instead of "
                      f"{selection['unconstrained']}; validation score cost {cost['score']:.4f}, "
                      f"{cost['fairness_value_before']:.4f} -> {cost['fairness_value_after']:.4f}")
        elif selection["met"]:
            out.print(f"fairness constraint {selection['constraint']}: met by the unconstrained best")
        else:
            out.print(f"fairness constraint {selection['constraint']}: no searched model meets it on the "
                      f"{fairness['rows']} rows")
    mitigation = fairness.get("mitigation")
    if mitigation:
        detail = f"{mitigation['parity']}, fitted on the {mitigation['fitted_on']} rows" if mitigation["method"] == "threshold" \
            else f"{mitigation['parity']}, {mitigation['trained']} grid models, constraint {'met' if mitigation['met'] else 'NOT met'}"
        out.print(f"mitigation: {mitigation['method']} ({detail})")
    _print_comparison(report.get("comparison", []), "fairness audit before and after · test split")


def _print_audit(report: dict[str, Any]) -> None:
    from autodl.audit.report import headline_rows

    if report["task"] == "regression":
        table = Table(title=f"fairness audit · {report['rows']} rows · largest gaps between groups")
        for col in ("column", "mean_prediction", "mean_target", "mae", "rmse", "small groups"):
            table.add_column(col, justify="left" if col in ("column", "small groups") else "right")
        for column, entry in report["columns"].items():
            d = entry["difference"]
            table.add_row(column, *[f"{d.get(m, float('nan')):.4f}" for m in ("mean_prediction", "mean_target", "mae", "rmse")],
                          ", ".join(entry["small_groups"]))
        out.print(table)
    else:
        table = Table(title=f"fairness audit · {report['rows']} rows · verdict {report['verdict'].upper()}")
        for col in ("class", "column", "metric", "value", "95% interval", "status", "small groups (flagged)"):
            table.add_column(col, justify="right" if col in ("value",) else "left")
        for r in headline_rows(report):
            ci = "" if r["ci95"] is None else f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
            value = "" if r["value"] is None else f"{r['value']:.4f}"
            table.add_row(str(r["class"]), r["column"], r["metric"], value, ci, r["status"], ", ".join(r["small_groups"]))
        out.print(table)
    for column, proxies in report.get("proxies", {}).items():
        if proxies:
            out.print(f"possible proxies for {column}: " + ", ".join(f"{p['feature']} ({p['association']:.2f})" for p in proxies[:3]))


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="Run directory written by 'autodl fit'."),
    format: str = typer.Option("serving,tflite", "--format", "-f", help="serving (TF Serving SavedModel), tflite (LiteRT edge bundle), or both comma-separated."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default: RUN/export): serving/NAME/VERSION, edge/, report.json."),
    name: str = typer.Option("model", "--name", help="TF Serving model name (the folder above the version)."),
    version: int = typer.Option(1, "--version", help="TF Serving version folder; an existing one is refused unless --overwrite."),
    quantize: str = typer.Option("all", "--quantize", "-q", help="TFLite variants: none (float32), float16, dynamic, int8, or all; float32 is always written as the reference."),
    int8_io: bool = typer.Option(False, "--int8-io", help="int8 variant takes and returns int8 tensors (for integer-only accelerators); the runner quantizes and dequantizes."),
    prune: Optional[float] = typer.Option(None, "--prune", help="Also write a magnitude-pruned variant with this sparsity (e.g. 0.5), fine-tuned, full int8."),
    qat: bool = typer.Option(False, "--qat", help="Also write a quantization-aware-trained int8 variant (tensorflow-model-optimization)."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tune epochs for --prune and --qat."),
    data: Optional[Path] = typer.Option(None, "--data", help="The training data (table, image folder or image CSV), if it moved since the fit (needed for calibration and checks)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle or serving version."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of a table."),
) -> None:
    """Export a fitted run for TF Serving and for edge devices, each artifact checked against the Keras model.

    Every TFLite variant uses builtin ops only and is run on the test split with the
    bundle's own stand-alone runner; the table shows size, metric, agreement with
    the Keras model and latency, and RUN/export/report.json keeps it.
    """
    from autodl.export.pipeline import ExportOptions

    options = ExportOptions(
        formats=_split_list(format), out=None if out_dir is None else str(out_dir), name=name, version=version,
        quantize=quantize, int8_io=int8_io, prune=prune, qat=qat, overwrite=overwrite, fine_tune_epochs=epochs,
    )
    _run_export(run, options, data=data, as_json=as_json)


def _run_export(run: Path, options: Any, *, data: Optional[Path] = None, quiet: bool = False, as_json: bool = False) -> None:
    _quiet_tensorflow()
    from autodl.export.pipeline import export_run

    if quiet or as_json:
        report = export_run(run, options, data=None if data is None else str(data))
    else:
        with err.status("exporting") as status:
            report = export_run(run, options, data=None if data is None else str(data),
                                on_step=lambda msg: status.update(f"exporting: {msg}"))
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    _print_export(report)


def _print_export(report: dict[str, Any]) -> None:
    from autodl.export.pipeline import report_rows

    rows = report_rows(report)
    metric = next(k for k in ("accuracy", "rmse") if k in rows[0])
    unit = "images" if report.get("input") == "image" else "rows"
    table = Table(title=f"export · {report['run']} · test split ({report['test_rows']} {unit})")
    for col, justify in [("artifact", "left"), ("size", "right"), (metric, "right"), ("agreement", "right"),
                         ("max |Δ|", "right"), ("1-row latency", "right"), ("rows/s", "right"), ("note", "left")]:
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(
            r["artifact"], "" if r["size"] is None else f"{r['size'] / 1024:.1f} KiB", f"{r[metric]:.4f}",
            "" if r.get("agreement") is None else f"{r['agreement']:.4f}",
            "" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.2g}",
            f"{r['latency_ms']:.3f} ms", "" if r.get("throughput") is None else f"{r['throughput']:,.0f}", r.get("note", ""),
        )
    out.print(table)
    if "audit" in report:
        _print_comparison(report["audit"]["comparison"],
                          f"fairness audit of the TFLite variants · test split · {', '.join(report['audit']['sensitive'])}")
    if "fairness_thresholds" in report:
        out.print(f"note: {report['fairness_thresholds']['note']}")
    for key, label in (("serving", "TF Serving"), ("tflite", "edge bundle")):
        if key in report:
            out.print(f"{label}: {report[key]['path']}")


def _int_option(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} takes a whole number or 'auto', not {value!r}") from None


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run directory written by 'autodl fit'."),
    data: Path = typer.Argument(..., help="File with the same feature columns (the target may be absent); for an image run, a folder of images or a CSV of image paths."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="CSV to write; default: standard output."),
    stream: Optional[bool] = typer.Option(None, "--stream/--no-stream", help="Read and write in chunks, for tables larger than memory (default: only for files over 1 GiB)."),
) -> None:
    """Predict DATA with a fitted run: a 'prediction' column, plus 'proba_<class>' for classifiers ('path' first for image runs)."""
    _quiet_tensorflow()
    from autodl.api import AutoModel
    from autodl.features.streaming import should_stream
    from autodl.run import atomic_write_text

    model = AutoModel.load(run)
    if not model.is_image and should_stream(data, stream):
        _predict_streaming(model, data, output)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        frame = model.predict_frame(str(data))
    for w in caught:
        err.print(f"warning: {w.message}")
    if output is None:
        sys.stdout.write(frame.to_csv(index=False))
    else:
        atomic_write_text(output, frame.to_csv(index=False))
        err.print(f"wrote {len(frame)} predictions to {output}")


def _predict_streaming(model: Any, data: Path, output: Optional[Path]) -> None:
    """Writes each chunk's predictions as it is read; a file output appears whole, under its name, at the end."""
    import tempfile

    target = None
    if output is not None:
        handle, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent if str(output.parent) else ".")
        os.close(handle)
        target = Path(tmp)
    rows, seen = 0, set()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            for part in model.predict_chunks(data):
                text = part.to_csv(index=False, header=rows == 0)
                if target is None:
                    sys.stdout.write(text)
                else:
                    with target.open("a", encoding="utf-8") as f:
                        f.write(text)
                rows += len(part)
        for w in caught:
            if str(w.message) not in seen:  # once, not once per chunk
                seen.add(str(w.message))
                err.print(f"warning: {w.message}")
        if target is not None and output is not None:
            target.replace(output)
            err.print(f"wrote {rows} predictions to {output} (streamed)")
    finally:
        if target is not None:
            target.unlink(missing_ok=True)


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run directory written by 'autodl fit'."),
    data: Path = typer.Argument(..., help="Labelled file with the target column; for an image run, a folder of class folders or a CSV of image paths."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Score a fitted run on labelled DATA."""
    _quiet_tensorflow()
    from autodl.api import AutoModel

    scores = AutoModel.load(run).evaluate(str(data))
    if as_json:
        out.print_json(json.dumps(scores))
        return
    table = Table(title=f"{run} on {data}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in scores.items():
        table.add_row(name, f"{value:.4f}")
    out.print(table)


@app.command()
def leaderboard(run: Path = typer.Argument(..., help="Run directory written by 'autodl fit'.")) -> None:
    """Show the search trials of a run, best first."""
    from autodl.run import RunDir

    manifest = RunDir(run).read_complete_manifest()
    import pandas as pd

    path = RunDir(run).leaderboard_path
    if not path.exists():
        raise UserError(f"{path} is missing; re-run 'autodl fit' with --overwrite")
    board = pd.read_csv(path)
    table = Table(title=f"leaderboard · {run} · objective {manifest['search']['objective']}")
    # A failed trial's one-line reason is shown only when some trial failed.
    shown = [c for c in board.columns if c != "hyperparameters" and not (c == "reason" and board[c].fillna("").eq("").all())]
    for col in shown:
        table.add_column(col, justify="left" if col in ("architecture", "reason") else "right",
                         no_wrap=col == "architecture", overflow="fold")
    for _, row in board.iterrows():
        table.add_row(*[_cell(row[c]) for c in shown])
    out.print(table)


@app.command()
def sample(
    name: str = typer.Argument("breast-cancer", help="breast-cancer (binary), wine (multiclass) or diabetes (regression)."),
    output: Path = typer.Option(Path("sample_data/breast_cancer.csv"), "--output", "-o", help="CSV to write."),
) -> None:
    """Write a bundled sample table (from scikit-learn's datasets, no download) to try autodl on."""
    from autodl.samples import SAMPLES, write_sample

    path = write_sample(name, output)
    err.print(f"wrote {path}: {SAMPLES[name]}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else (f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}")
    return str(value)


def _print_summary(manifest: dict[str, Any]) -> None:
    final = manifest["final_model"]
    table = Table(title=f"autodl fit · {manifest['task']} · target '{manifest['target']}'")
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in manifest["metrics"]["test"].items():
        if isinstance(value, dict):  # e.g. decision metrics after per-group thresholds
            for sub, v in value.items():
                table.add_row(f"test {sub} ({name.replace('_', ' ')})", f"{v:.4f}")
        else:
            table.add_row(f"test {name}", f"{value:.4f}")
    validation = manifest["metrics"].get("validation", {}).get(manifest["metric"], final[f"val_{manifest['metric']}"])
    decision = manifest.get("decision") or {}
    table.add_row(f"validation {manifest['metric']}" + (" (out-of-fold)" if decision.get("rows") == "out-of-fold" else ""),
                  f"{validation:.4f}")
    if decision.get("threshold") is not None:
        classes = manifest["schema"].get("classes") or ["", ""]
        table.add_row("decision threshold", f"{decision['threshold']:.3f} on P('{classes[-1]}')")
    table.add_row("final model", f"{final['kind']} ({', '.join('trial ' + m for m in final['members'])})")
    table.add_row("trials", f"{manifest['search']['completed']} completed / {manifest['search']['trials']}")
    unit = "images" if manifest.get("input") == "image" else "rows"
    table.add_row(f"{unit} train/valid/test", f"{manifest['split']['train']}/{manifest['split']['valid']}/{manifest['split']['test']}")
    skipped = manifest.get("data", {}).get("skipped") if unit == "images" else None
    if skipped:
        table.add_row("images left out", ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(skipped.items())))
    table.add_row("time", f"{manifest['timings']['total']:.1f} s")
    table.add_row("run directory", f"{manifest.get('run_dir', '')} ({manifest['disk_bytes'] / 2**20:.1f} MiB)")
    out.print(table)
    out.print(final["reason"])
    baseline = decision.get("baseline") or {}
    if baseline.get("below_baseline"):
        out.print(f"warning: on held-out rows the model scores {baseline['model']:.4f} {baseline['metric']}, below always "
                  f"predicting {baseline['baseline']} ({baseline['baseline_score']:.4f})")
    notes = [n for n in manifest.get("schema", {}).get("notes", []) if "balanced classes" in n or "cross-validation" in n]
    for note in notes:
        out.print(f"note: {note}")


# --------------------------------------------------------------------------
# autodl zoo: the model zoo's cards and pretrained weights
# --------------------------------------------------------------------------

zoo_app = typer.Typer(
    help="Browse the model zoo and manage its pretrained weights.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list(
    task: Optional[str] = typer.Option(None, "--task", help="Only the entries for one task: tabular, image or text."),
) -> None:
    """The zoo's architectures: input, size, cost, pretrained weights and whether they are cached."""
    _quiet_tensorflow()
    from rich.markup import escape

    from autodl import zoo
    from autodl.zoo.registry import TASKS
    from autodl.zoo.weights import is_cached

    if task is not None and task not in TASKS:
        raise UserError(f"--task takes one of {', '.join(TASKS)}, not {task!r}")
    table = Table(title="autodl zoo" + (f" · {task}" if task else ""))
    for col in ("name", "task", "input", "parameters", "FLOPs", "pretrained", "reference accuracy", "cached"):
        table.add_column(col, justify="right" if col in ("parameters", "FLOPs") else "left", no_wrap=col == "name")
    for entry in zoo.list_entries(task):
        card, weights = entry.card, entry.card.pretrained
        table.add_row(
            card.name,
            card.task,
            "x".join(map(str, card.input_shape)) if card.input_shape else ("columns" if card.task == "tabular" else "—"),
            _zoo_count(card.parameters),
            _zoo_count(card.flops),
            _pretrained_source(card),
            escape(card.reference_accuracy) or "—",
            _cached(card),
        )
    # Piped output gets whole lines (for grep) instead of columns folded to 80 characters.
    console = out if out.is_terminal else Console(width=max(out.width, 200))
    console.print(table)


def _pretrained_source(card: Any) -> str:
    from rich.markup import escape

    if card.pretrained is not None:
        return escape(card.pretrained.source)
    if card.fine_tuning is not None and card.fine_tuning.bundled_weights:
        return "bundled (pip package)"
    return "—"


def _cached(card: Any) -> str:
    """Downloadable weights: in the cache or not; weights from a package: whether it is installed."""
    from autodl.zoo.weights import is_cached

    if card.pretrained is not None:
        return "yes" if is_cached(card.pretrained) else "no"
    if card.fine_tuning is not None and card.fine_tuning.bundled_weights:
        from autodl import zoo

        return "installed" if zoo.get(card.name).unavailable_reason() is None else "not installed"
    return "—"


@zoo_app.command("show")
def zoo_show(
    name: str = typer.Argument(..., help="A zoo entry, e.g. mobilenet_v3_small (see 'autodl zoo list')."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON."),
) -> None:
    """The full model card of NAME, with its weights URL, checksum and cache path."""
    _quiet_tensorflow()
    from autodl.zoo.weights import cached_path, is_cached

    card = _zoo_entry(name).card
    weights = card.pretrained
    cache = None if weights is None else {"path": str(cached_path(weights)), "cached": is_cached(weights)}
    if as_json:
        typer.echo(json.dumps({**card.to_dict(), "cache": cache}, indent=2))
        return
    lines = [
        f"{card.name}: {card.title}",
        f"task: {card.task}",
        f"summary: {card.summary}",
        f"good for: {card.good_for}",
        f"paper: {card.paper or '—'}",
        f"reference: {card.reference}",
        f"licence: {card.licence or '—'}",
        f"input shape: {'x'.join(map(str, card.input_shape)) if card.input_shape else '—'}",
        f"parameters: {'—' if card.parameters is None else f'{card.parameters:,}'}",
        f"FLOPs: {_zoo_count(card.flops)}" + (f"; {card.flops_note}" if card.flops_note else ""),
        f"reference accuracy: {card.reference_accuracy or '—'}",
    ]
    for hp, meaning in card.hyperparameters.items():
        lines.append(f"hyperparameter {hp}: {meaning}")
    if weights is None and card.fine_tuning is not None and card.fine_tuning.bundled_weights:
        lines.append(f"pretrained weights: bundled with {card.fine_tuning.bundled_weights}")
    elif weights is None:
        lines.append("pretrained weights: none (trained from scratch)")
    else:
        status = "cached" if cache and cache["cached"] else f"not cached; run 'autodl zoo pull {card.name}'"
        lines += [
            "pretrained weights:",
            f"  url: {weights.url}",
            f"  {weights.hash_algorithm}: {weights.file_hash}",
            f"  source: {weights.source}",
            f"  licence: {weights.licence}",
            f"  cache: {cache['path'] if cache else ''} ({status})",
        ]
    typer.echo("\n".join(lines))


@zoo_app.command("pull")
def zoo_pull(
    name: str = typer.Argument(..., help="A zoo entry with pretrained weights (see 'autodl zoo list')."),
    source: Optional[str] = typer.Option(None, "--from", help="A downloaded copy (local path) or another http(s)/file URL to take the file from."),
) -> None:
    """Download NAME's pretrained weights into the cache (or copy them --from a file) and verify the checksum; prints the path."""
    _quiet_tensorflow()
    from autodl.zoo.weights import fetch

    weights = _zoo_entry(name).card.pretrained
    if weights is None:
        raise UserError(f"zoo entry {name!r} has no pretrained weights: it is trained from scratch")
    with err.status(f"fetching {name} weights") as status:
        def progress(done: int, total: Optional[int]) -> None:
            size = f"{done / 2**20:.1f}" + ("" if total is None else f" / {total / 2**20:.1f}")
            status.update(f"fetching {name} weights: {size} MiB")

        path = fetch(name, source, on_progress=progress)
    err.print(f"{name}: {weights.hash_algorithm} checksum verified")
    typer.echo(str(path))


def _zoo_entry(name: str) -> Any:
    from autodl import zoo

    try:
        return zoo.get(name)
    except KeyError as e:
        raise UserError(f"{e.args[0]}; see 'autodl zoo list'") from None


def _zoo_count(n: Optional[int]) -> str:
    """1234567 -> '1.23M'; None -> '—'."""
    if n is None:
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: maps errors to exit codes (2 for bad input, 130 for Ctrl-C)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        code = app(args=args, prog_name="autodl", standalone_mode=False)
        # Typer turns Ctrl-C into exit code 130 and returns it in non-standalone mode.
        if code == 130:
            print("interrupted: run the same command again to resume the search", file=sys.stderr)
        return code if isinstance(code, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as e:  # usage errors: unknown option, missing argument
        show = getattr(e, "show", None)
        show() if show else print(f"error: {e}", file=sys.stderr)
        return 2
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted: run the same command again to resume the search", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

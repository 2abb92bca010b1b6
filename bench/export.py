"""Export benchmark: what deploying the model a 5-minute fit finds on UCI Adult costs and buys.

    python bench/export.py                 # 5-minute fit, then serving + all TFLite variants + 50% pruning
    python bench/export.py --quick         # smoke test: 3,000 training rows, 60 s fit
    python bench/export.py --data /path/to/data

One run, one split (Adult's standard test set): the Keras model beside its TF
Serving SavedModel and its float32, float16, dynamic-range and int8 TFLite
variants, plus a 50%-pruned variant (tensorflow-model-optimization, int8
weights). Sizes, accuracy and agreement come from ``autodl export``'s own
checks, which run every variant with the bundle's stand-alone runner; the
latencies are single-row medians (``keras.Model.predict``, calling the model
directly, the SavedModel signature, the LiteRT interpreter). The targets of
issue 3 are checked at the end. Results: a table on stdout and
``bench/results/export.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _harness import RESULTS_DIR, environment_info, make_console, missing_data_note, peak_rss_mib, resolve_data_dir
from rich.table import Table
from tabular import DATA_FILES, QUICK_TRAIN_ROWS, load_dataset

TARGET_INT8_RATIO = 3.5
TARGET_INT8_LOSS = 0.005
TARGET_SPEEDUP = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="data directory (default: ../shared/data or $AUTODL_BENCH_DATA)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TRAIN_ROWS} training rows, 60 s fit")
    parser.add_argument("--time-limit", default=None, help="fit budget (default 5m, quick 60s)")
    parser.add_argument("--reuse-fit", action="store_true", help="export the run a previous invocation fitted, if complete")
    args = parser.parse_args(argv)
    console = make_console()
    data_dir = resolve_data_dir(args.data)
    note = missing_data_note(data_dir, DATA_FILES["adult"])
    if note:
        console.print(note)
        return 0

    from autodl.api import AutoModel
    from autodl.export.pipeline import ExportOptions, export_run, report_rows

    split = load_dataset("adult", data_dir, quick=args.quick)
    work = RESULTS_DIR / ("export-quick" if args.quick else "export")
    work.mkdir(parents=True, exist_ok=True)
    train_csv, test_csv = work / "adult_train.csv", work / "adult_test.csv"
    split.train.to_csv(train_csv, index=False)
    split.test.to_csv(test_csv, index=False)
    time_limit = args.time_limit or ("60s" if args.quick else "5m")

    start = time.perf_counter()
    if args.reuse_fit and (work / "run" / "model.keras").exists():
        model = AutoModel.load(work / "run")
        fit_s = float(model.manifest["timings"]["total"])
    else:
        model = AutoModel(target=split.target, time_limit=time_limit, out=work / "run", overwrite=True, verbosity=1)
        model.fit(str(train_csv), str(test_csv))
        fit_s = time.perf_counter() - start
    start = time.perf_counter()
    report = export_run(model.run_dir, ExportOptions(quantize="all", prune=0.5, overwrite=True),
                        on_step=lambda msg: console.print(f"[dim]export: {msg}[/dim]"))
    export_s = time.perf_counter() - start

    table = Table(title=f"autodl export · UCI Adult ({report['test_rows']} test rows) · fit {time_limit}")
    for col in ("artifact", "size KiB", "gzip KiB", "accuracy", "Δ vs Keras (pt)", "agreement", "1-row latency ms", "note"):
        table.add_column(col, justify="left" if col in ("artifact", "note") else "right")
    keras_acc = report["keras"]["accuracy"]
    variants = report["tflite"]["variants"]
    for row in report_rows(report):
        variant = row["artifact"].removeprefix("tflite ")
        gzip_kib = variants[variant]["gzip_bytes"] / 1024 if variant in variants else None
        table.add_row(
            row["artifact"], "" if row["size"] is None else f"{row['size'] / 1024:.1f}",
            "" if gzip_kib is None else f"{gzip_kib:.1f}", f"{row['accuracy']:.4f}",
            f"{100 * (row['accuracy'] - keras_acc):+.2f}", "" if row.get("agreement") is None else f"{row['agreement']:.4f}",
            f"{row['latency_ms']:.3f}", row.get("note", ""),
        )
    console.print(table)

    ratio = variants["float32"]["size_bytes"] / variants["int8"]["size_bytes"]
    int8_loss = keras_acc - variants["int8"]["accuracy"]
    litert_ms = variants["float32"]["latency_ms"]
    predict_ms = report["keras"]["latency_ms"]["predict"]
    checks = {
        f"int8 ≥ {TARGET_INT8_RATIO}x smaller than float32 TFLite": (ratio >= TARGET_INT8_RATIO, f"{ratio:.2f}x"),
        "int8 accuracy within 0.5 point of Keras": (int8_loss <= TARGET_INT8_LOSS, f"{100 * int8_loss:+.2f} pt lost"),
        f"LiteRT 1-row latency ≥ {TARGET_SPEEDUP:.0f}x below model.predict": (
            predict_ms / litert_ms >= TARGET_SPEEDUP, f"{predict_ms:.2f} ms vs {litert_ms:.3f} ms = {predict_ms / litert_ms:.0f}x"),
    }
    for name, (ok, value) in checks.items():
        console.print(f"{'PASS' if ok else 'MISS'}  {name}: {value}")
    latencies = {"keras predict": predict_ms, "keras direct call": report["keras"]["latency_ms"]["call"],
                 "SavedModel signature": report["serving"]["latency_ms"], **{f"LiteRT {v}": r["latency_ms"] for v, r in variants.items()}}
    console.print("single-row latency (median, ms): " + ", ".join(f"{k} {v:.3f}" for k, v in latencies.items()))
    console.print(f"fit {fit_s:.0f} s · export {export_s:.0f} s · peak RSS {peak_rss_mib():.0f} MiB")
    result: dict[str, Any] = {
        "report": report, "checks": {k: {"ok": ok, "value": v} for k, (ok, v) in checks.items()},
        "latency_ms": latencies, "fit_s": fit_s, "export_s": export_s, "peak_rss_mib": peak_rss_mib(),
        "environment": environment_info(["tensorflow", "keras", "ai-edge-litert", "tensorflow-model-optimization"]),
    }
    out = RESULTS_DIR / ("export-quick.json" if args.quick else "export.json")
    out.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    console.print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

"""Scale benchmark: the streaming path from 10^4 to 10^7 rows, and the search on 1, 2 and 4 workers.

    python bench/scale.py                                  # everything (about 30 minutes on 2 cores)
    python bench/scale.py --rows 1e4,1e5 --contenders autodl-stream,lightgbm
    python bench/scale.py --contenders workers-1,workers-2 --worker-budget 2m

Data: generated, no download. ``adult_like(n)`` writes a CSV with UCI Adult's columns
(six numeric, eight categorical with Adult's category counts, the ``income`` target) and a
learnable signal; files are cached under ``bench/results/scale-data/``.

Contenders, each in its own process (peak memory is per process):

* ``autodl-stream`` - ``AutoModel(stream=True)``: one MLP trial of one epoch, so the row is
  the streaming path's cost: two passes over the file (sample + statistics), one training
  epoch read through tf.data, evaluation on the held-out rows. ``epoch s`` is the trial's time.
* ``lightgbm`` - the in-memory peer: ``pandas.read_csv`` of the whole file, 100 boosting rounds.
* ``workers-N`` - ``AutoModel(workers=N)`` on 20,000 rows with the same time budget
  (``--worker-budget``): trials finished per hour of search.

Targets (issue 7): peak memory at 10^7 rows within 1.5x of the peak at 10^5; time per epoch
linear in rows.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

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
    make_console,
    parse_duration,
    print_results,
    run_matrix,
    save_results,
)

DATA_DIR = RESULTS_DIR / "scale-data"
ROW_COUNTS = (10_000, 100_000, 1_000_000, 10_000_000)
STREAM_CONTENDERS = ("autodl-stream", "lightgbm")
WORKER_COUNTS = (1, 2, 4)
WORKER_ROWS = 20_000
METRICS = (
    MetricColumn("accuracy", "accuracy"),
    MetricColumn("epoch_s", "epoch s", "{:.1f}"),
    MetricColumn("trials_per_hour", "trials/h", "{:.0f}"),
)
CATEGORIES = {  # Adult's categorical columns and how many values each has
    "workclass": 8, "education": 16, "marital-status": 7, "occupation": 14,
    "relationship": 6, "race": 5, "sex": 2, "native-country": 41,
}
GENERATE_CHUNK = 500_000


def adult_like(n_rows: int, path: Path, seed: int = 0) -> Path:
    """Writes (once) an Adult-shaped CSV of ``n_rows`` rows; the label depends on most columns."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(seed)
    weights = {name: rng.normal(scale=0.8, size=k) for name, k in CATEGORIES.items()}
    with tmp.open("w") as f:
        for start in range(0, n_rows, GENERATE_CHUNK):
            n = min(GENERATE_CHUNK, n_rows - start)
            frame = pd.DataFrame({
                "age": rng.integers(17, 90, n),
                "fnlwgt": rng.lognormal(12, 0.5, n).round(),
                "education-num": rng.integers(1, 17, n),
                "capital-gain": np.where(rng.random(n) < 0.08, rng.lognormal(8, 1, n).round(), 0),
                "capital-loss": np.where(rng.random(n) < 0.05, rng.lognormal(7, 0.5, n).round(), 0),
                "hours-per-week": rng.integers(1, 99, n),
            })
            logit = (0.04 * (frame["age"] - 40) + 0.3 * (frame["education-num"] - 10) + 0.0004 * frame["capital-gain"]
                     + 0.03 * (frame["hours-per-week"] - 40) - 1.0)
            for name, k in CATEGORIES.items():
                codes = rng.integers(0, k, n)
                frame[name] = [f"{name[:4]}-{c}" for c in codes]
                logit = logit + weights[name][codes]
            frame["income"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
            frame.to_csv(f, header=start == 0, index=False)
    tmp.replace(path)
    return path


def data_path(n_rows: int) -> Path:
    return DATA_DIR / f"adult-like-{n_rows}.csv"


def run_autodl_stream(n_rows: int) -> dict[str, Any]:
    from autodl import AutoModel

    path = adult_like(n_rows, data_path(n_rows))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = AutoModel(target="income", stream=True, models=["mlp"], max_trials=1, max_epochs=1, ensemble=1,
                          out=Path(tmp) / "run", verbosity=0)
        model.fit(str(path))
        fit_s = time.perf_counter() - started
        manifest = model.manifest
        trials = json.loads((model.run_dir / "tuner" / "autodl_trials.json").read_text())
    epoch_s = sum(t["seconds"] for t in trials.values()) / max(1.0, sum(t["epochs"] for t in trials.values()))
    split = manifest["split"]
    return {"metrics": {"accuracy": manifest["metrics"]["test"]["accuracy"], "epoch_s": epoch_s}, "fit_s": fit_s,
            "note": f"{split['train']:,} train rows streamed; held out {split['valid']:,} + {split['test']:,}",
            "extra": {"timings": manifest["timings"], "split": split, "file_mib": path.stat().st_size / 2**20}}


def run_lightgbm(n_rows: int) -> dict[str, Any]:
    import lightgbm as lgb

    path = adult_like(n_rows, data_path(n_rows))
    started = time.perf_counter()
    frame = pd.read_csv(path)
    y = (frame.pop("income") == ">50K").to_numpy()
    for name in CATEGORIES:
        frame[name] = frame[name].astype("category")
    cut = int(0.85 * len(frame))
    fit_start = time.perf_counter()
    model = lgb.LGBMClassifier(n_estimators=100, verbose=-1).fit(frame.iloc[:cut], y[:cut])
    epoch_s = time.perf_counter() - fit_start
    accuracy = float((model.predict(frame.iloc[cut:]) == y[cut:]).mean())
    return {"metrics": {"accuracy": accuracy, "epoch_s": epoch_s}, "fit_s": time.perf_counter() - started,
            "note": "whole file in memory; 'epoch s' = 100 boosting rounds"}


def run_workers(n_workers: int, budget_s: float) -> dict[str, Any]:
    from autodl import AutoModel

    path = adult_like(WORKER_ROWS, data_path(WORKER_ROWS))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        model = AutoModel(target="income", workers=n_workers, time_limit=budget_s, max_trials=500, cv=0, ensemble=1,
                          out=Path(tmp) / "run", verbosity=0)
        model.fit(str(path))
        fit_s = time.perf_counter() - started
        manifest = model.manifest
    search_s = manifest["timings"]["search"]
    completed = manifest["search"]["completed"]
    return {"metrics": {"accuracy": manifest["metrics"]["test"]["accuracy"], "trials_per_hour": completed / search_s * 3600},
            "fit_s": fit_s, "note": f"{completed} trials in {search_s:.0f} s of search ({n_workers} worker processes)",
            "extra": {"leaderboard": manifest["leaderboard"], "timings": manifest["timings"]}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--rows", default=",".join(f"{n:.0e}" for n in ROW_COUNTS), help="row counts, e.g. 1e4,1e5")
    parser.add_argument("--contenders", default=",".join([*STREAM_CONTENDERS, *(f"workers-{n}" for n in WORKER_COUNTS)]),
                        help="comma-separated (default: all)")
    parser.add_argument("--worker-budget", type=parse_duration, default=180.0, help="time limit per workers-N fit (default 3m)")
    add_child_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.contender:
        runners: dict[str, Callable[[], dict[str, Any]]] = {
            "autodl-stream": lambda: run_autodl_stream(int(float(args.dataset.split("-")[1]))),
            "lightgbm": lambda: run_lightgbm(int(float(args.dataset.split("-")[1]))),
        }
        if args.contender.startswith("workers-"):
            return child_main(lambda: run_workers(int(args.contender.split("-")[1]), args.worker_budget), args.json_out)
        return child_main(runners[args.contender], args.json_out)
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    rows_asked = [int(float(r)) for r in args.rows.split(",") if r.strip()]
    console = make_console()
    for n in rows_asked:  # generated before timing starts
        if any(c in STREAM_CONTENDERS for c in contenders):
            console.print(f"data: {adult_like(n, data_path(n))}", highlight=False)
    child_args = ("--worker-budget", str(args.worker_budget))
    jobs = [Job(f"rows-{n}", c, 3600, child_args) for n in rows_asked for c in contenders if c in STREAM_CONTENDERS]
    jobs += [Job(f"rows-{WORKER_ROWS}", c, args.worker_budget + 900, child_args) for c in contenders if c.startswith("workers-")]
    rows = run_matrix(Path(__file__).resolve(), jobs, log_dir=RESULTS_DIR / "logs" / "scale", console=console)
    print_results(rows, METRICS, title="Scale: generated Adult-like CSVs (2 CPU cores)",
                  caption="autodl-stream: one 1-epoch MLP trial on the streaming path; peak = the process's max RSS",
                  console=console)
    by = {(r["dataset"], r["contender"]): r for r in rows if r["status"] == "ok"}
    small, large = by.get(("rows-100000", "autodl-stream")), by.get(("rows-10000000", "autodl-stream"))
    if small and large:
        ratio = large["peak_mib"] / small["peak_mib"]
        console.print(f"streaming peak memory, 10^7 vs 10^5 rows: {large['peak_mib']:.0f} / {small['peak_mib']:.0f} MiB "
                      f"= {ratio:.2f}x (target <= 1.5x)", highlight=False)
        per_row = [by[(f"rows-{n}", "autodl-stream")]["metrics"]["epoch_s"] / n * 1e6
                   for n in rows_asked if (f"rows-{n}", "autodl-stream") in by]
        console.print("epoch time per million rows: " + ", ".join(f"{v:.1f} s" for v in per_row), highlight=False)
    meta = {"row_counts": rows_asked, "worker_rows": WORKER_ROWS, "worker_budget_s": args.worker_budget,
            **environment_info(["autodl", "keras", "tensorflow", "keras-tuner", "lightgbm"])}
    path = save_results("scale", rows, meta)
    console.print(f"results saved to {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

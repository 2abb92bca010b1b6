"""Shared machinery for the autodl benchmarks (tabular, export, fairness, text, scaling).

A benchmark script plays two roles:

* **parent** - decides which (dataset, contender) pairs to run, launches each one with
  :func:`run_matrix` / :func:`run_contender` as ``python <script> --contender NAME
  --dataset D --json-out FILE ...``, prints the table (:func:`print_results`) and saves
  ``bench/results/<name>.json`` (:func:`save_results`).
* **child** - loads the data, fits and evaluates exactly one contender and hands a dict
  to :func:`child_main`, which adds the peak RSS and writes the JSON file.

Every contender runs in its own process so that its peak memory is its own (an
in-process run would inherit the previous contender's high-water mark and imports)
and so that a crash, an out-of-memory kill or a hang is reported as one failed row
instead of ending the whole benchmark.

A result row (one dict per contender and dataset) holds: ``dataset``, ``contender``,
``status`` (``"ok"`` / ``"failed"``), ``error``, ``metrics`` (dict), ``fit_s``,
``wall_s``, ``peak_mib``, ``peak_source``, ``note``, ``log`` plus whatever else the
child reported (``extra``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DATA_ENV_VAR = "AUTODL_BENCH_DATA"

# Error text longer than this wrecks the table layout; the JSON keeps it whole.
_TABLE_ERROR_CHARS = 100


# --------------------------------------------------------------------------- data


def default_data_dir() -> Path:
    """``../shared/data`` relative to the repository root (the shared benchmark data)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def resolve_data_dir(cli_value: str | os.PathLike[str] | None) -> Path:
    """Data directory by precedence: ``--data``, then ``$AUTODL_BENCH_DATA``, then default."""
    if cli_value:
        return Path(cli_value).expanduser().resolve()
    env_value = os.environ.get(DATA_ENV_VAR)
    if env_value:
        return Path(env_value).expanduser().resolve()
    return default_data_dir()


def missing_data_note(data_dir: Path, needed: Iterable[str] = ()) -> str | None:
    """One-line note when the data (or a needed file under it) is absent, else ``None``.

    Benchmarks must not fail on machines without the data, so callers print the note
    and exit 0.
    """
    if not data_dir.is_dir():
        return (
            f"benchmark data directory {data_dir} not found "
            f"(pass --data DIR or set {DATA_ENV_VAR}); nothing to run."
        )
    absent = [rel for rel in needed if not (data_dir / rel).exists()]
    if absent:
        return f"benchmark data missing under {data_dir}: {', '.join(absent)}; nothing to run."
    return None


# ------------------------------------------------------------------- small helpers


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min|h|hr)?\s*$", re.I)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"10m"``, ``"45s"``, ``"1.5h"``, ``"600"`` or a number."""
    if isinstance(text, (int, float)):
        return float(text)
    match = _DURATION_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 45s, 10m, 1h)")
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * _DURATION_UNITS[unit]


def format_duration(seconds: float) -> str:
    """Compact form of a duration for command lines and captions (``600`` -> ``10m``)."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _maxrss_to_mib(maxrss: int) -> float:
    # ru_maxrss is KiB on Linux but bytes on macOS.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def peak_rss_mib() -> float:
    """Peak resident set size of the calling process so far, in MiB."""
    return _maxrss_to_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def dir_size_mib(path: str | os.PathLike[str]) -> float | None:
    """Total size of the files under ``path`` in MiB, or ``None`` if it does not exist."""
    root = Path(path)
    if not root.exists():
        return None
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return total / (1024 * 1024)


def environment_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """Machine and version facts worth keeping next to benchmark numbers."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "versions": versions,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -------------------------------------------------------------------------- child


def add_child_args(parser: argparse.ArgumentParser) -> None:
    """The options through which the parent addresses one child run."""
    group = parser.add_argument_group("single run (used by the harness itself)")
    group.add_argument("--contender", help="run only this contender on --dataset, in this process")
    group.add_argument("--dataset", help="dataset for --contender")
    group.add_argument("--json-out", type=Path, help="where the child writes its result JSON")


def child_data_dir(args: argparse.Namespace, runners: Mapping[str, Any]) -> Path:
    """A child's checked arguments (``--dataset``, ``--json-out``, a known ``--contender``) and its data directory."""
    if not args.dataset or args.json_out is None:
        raise SystemExit("--contender needs --dataset and --json-out")
    if args.contender not in runners:
        raise SystemExit(f"unknown contender {args.contender!r}")
    return resolve_data_dir(args.data)


def child_main(run: Callable[[], Mapping[str, Any]], json_out: Path) -> int:
    """Run one contender in this process and write its result to ``json_out``.

    ``run`` returns a mapping with ``metrics`` (dict of floats), ``fit_s`` and optionally
    ``predict_s``, ``note`` (short text for the table) and ``extra`` (anything
    JSON-serialisable). Exceptions are deliberately not caught: the traceback goes to
    stderr, the exit status is non-zero, and the parent reports the last stderr line.
    """
    started = time.perf_counter()
    result = dict(run())
    result["child_s"] = time.perf_counter() - started
    # Measured last so the high-water mark covers fit, predict and scoring.
    result["peak_rss_mib"] = peak_rss_mib()
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(_jsonable(result), indent=2))
    return 0


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars, paths, NaN) so a result never fails to save."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ------------------------------------------------------------------------- parent


@dataclass(frozen=True)
class Job:
    """One (dataset, contender) child run and the wall-clock limit it gets."""

    dataset: str
    contender: str
    timeout_s: float
    child_args: tuple[str, ...] = ()


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit status {returncode}"


def _wait_with_rusage(proc: subprocess.Popen[bytes], timeout_s: float) -> tuple[int, float | None, bool]:
    """Wait for ``proc``; kill its process group after ``timeout_s``.

    Returns (exit code, child's peak RSS in MiB from the kernel, timed out). ``wait4``
    gives the peak RSS of this one child even when it dies without writing its JSON.
    """
    deadline = time.monotonic() + timeout_s
    timed_out = False
    if not hasattr(os, "wait4"):  # not Linux/macOS: no per-child rusage
        try:
            return proc.wait(timeout=timeout_s), None, False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return proc.wait(), None, True
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() >= deadline:
            timed_out = True
            _kill_group(proc)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.1)
    # Tell Popen the child is reaped so it does not wait on it or warn about it.
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, _maxrss_to_mib(usage.ru_maxrss), timed_out


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The child runs in its own session, so the group holds only what it started.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_contender(
    script: Path,
    job: Job,
    *,
    log_dir: Path,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Run one child (``script --contender ... --dataset ... --json-out ...``); never raises
    for a failing child: the row then has ``status="failed"`` and ``error``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{job.dataset}-{job.contender}"
    json_out = log_dir / f"{stem}.json"
    out_log, err_log = log_dir / f"{stem}.stdout.log", log_dir / f"{stem}.stderr.log"
    json_out.unlink(missing_ok=True)  # a stale file must not pass for this run's result
    cmd = [
        python, str(script),
        "--contender", job.contender, "--dataset", job.dataset,
        "--json-out", str(json_out), *job.child_args,
    ]
    row: dict[str, Any] = {
        "dataset": job.dataset, "contender": job.contender, "status": "failed", "error": None,
        "metrics": {}, "fit_s": None, "wall_s": None, "peak_mib": None, "peak_source": None,
        "note": "", "command": shlex.join(cmd), "log": str(err_log), "timeout_s": job.timeout_s,
    }
    started = time.perf_counter()
    with out_log.open("wb") as out_f, err_log.open("wb") as err_f:
        proc = subprocess.Popen(
            cmd, stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT, start_new_session=True,
        )
        try:
            returncode, os_peak_mib, timed_out = _wait_with_rusage(proc, job.timeout_s)
        except BaseException:  # Ctrl-C in the parent must not leave the child running
            _kill_group(proc)
            proc.wait()
            raise
    row["wall_s"] = time.perf_counter() - started
    row["returncode"] = returncode
    row["os_peak_mib"] = os_peak_mib

    child: dict[str, Any] | None = None
    if json_out.exists():
        try:
            child = json.loads(json_out.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            row["error"] = f"unreadable result JSON: {exc}"

    if timed_out:
        row["error"] = f"timed out after {row['wall_s']:.0f} s (limit {job.timeout_s:.0f} s)"
    elif returncode != 0:
        last = _last_line(err_log)
        # A signal-killed child's last stderr line is just whatever it logged before.
        row["error"] = _exit_reason(returncode) if returncode < 0 or not last else last
    elif child is None and row["error"] is None:
        row["error"] = "child exited 0 but wrote no result JSON"
    elif child is not None:
        row["status"] = "ok"
        row["metrics"] = child.get("metrics", {})
        row["fit_s"] = child.get("fit_s")
        row["predict_s"] = child.get("predict_s")
        row["child_s"] = child.get("child_s")
        row["note"] = child.get("note", "")
        row["extra"] = child.get("extra", {})

    # Prefer the child's own getrusage; fall back to the kernel's number for dead children.
    if child is not None and child.get("peak_rss_mib") is not None:
        row["peak_mib"], row["peak_source"] = child["peak_rss_mib"], "child getrusage"
    elif os_peak_mib is not None:
        row["peak_mib"], row["peak_source"] = os_peak_mib, "parent wait4"
    return row


def make_console() -> Console:
    """Console for benchmark output: wide enough for the table when output is piped to a
    log (rich would otherwise assume 80 columns and squeeze every header)."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def run_matrix(
    script: Path,
    jobs: Sequence[Job],
    *,
    log_dir: Path,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Run the jobs one after another (never in parallel: they would compete for the
    CPU and memory being measured) and return their rows in job order."""
    console = console or make_console()
    rows: list[dict[str, Any]] = []
    for i, job in enumerate(jobs, 1):
        console.print(
            f"[bold]\\[{i}/{len(jobs)}][/] {job.contender} on {job.dataset} "
            f"(timeout {format_duration(job.timeout_s)}) ...",
            highlight=False,
        )
        with console.status(f"running {job.contender} on {job.dataset}"):
            row = run_contender(script, job, log_dir=log_dir)
        rows.append(row)
        if row["status"] == "ok":
            summary = ", ".join(f"{k} {_fmt(v)}" for k, v in row["metrics"].items())
            console.print(f"      ok: {summary}; wall {row['wall_s']:.1f} s", highlight=False)
        else:
            console.print(
                f"      [red]failed[/]: {_escape(_shorten(str(row['error'])))}  (log: {_escape(row['log'])})",
                highlight=False,
            )
    return rows


# ----------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class MetricColumn:
    """A metric shown in the table: ``key`` in ``row['metrics']``, header, format."""

    key: str
    header: str
    fmt: str = "{:.4f}"


def _fmt(value: Any, fmt: str = "{:.4f}") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return fmt.format(value)
    return str(value)


def build_table(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[MetricColumn],
    *,
    title: str,
    caption: str | None = None,
) -> Table:
    """Rich table: dataset, contender, metrics..., fit s, wall s, peak MiB, note."""
    table = Table(title=title, caption=caption, caption_justify="left")
    # Only the note may wrap: numbers split over two lines are misread.
    table.add_column("dataset", no_wrap=True)
    table.add_column("contender", no_wrap=True)
    for column in metrics:
        table.add_column(column.header, justify="right", no_wrap=True)
    table.add_column("fit s", justify="right", no_wrap=True)
    table.add_column("wall s", justify="right", no_wrap=True)
    table.add_column("peak MiB", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for row in rows:
        ok = row.get("status") == "ok"
        values = [_fmt(row.get("metrics", {}).get(c.key), c.fmt) for c in metrics]
        if ok:
            note = row.get("note", "")
        else:
            note = f"[red]FAILED[/]: {_escape(_shorten(str(row.get('error') or 'unknown error')))}"
        table.add_row(
            row.get("dataset", ""),
            row.get("contender", ""),
            *values,
            _fmt(row.get("fit_s"), "{:.1f}"),
            _fmt(row.get("wall_s"), "{:.1f}"),
            _fmt(row.get("peak_mib"), "{:.0f}"),
            note,
        )
    return table


def _shorten(text: str, limit: int = _TABLE_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    # Error text often has "[...]" in it, which rich would take for markup.
    return escape(text)


def print_results(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[MetricColumn],
    *,
    title: str,
    caption: str | None = None,
    console: Console | None = None,
) -> None:
    """Print the results table (see :func:`build_table`)."""
    (console or make_console()).print(build_table(rows, metrics, title=title, caption=caption))


def save_results(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    meta: Mapping[str, Any] | None = None,
    *,
    results_dir: Path = RESULTS_DIR,
) -> Path:
    """Write ``{"benchmark": name, "meta": ..., "results": rows}`` to ``<results_dir>/<name>.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    payload = {"benchmark": name, "meta": dict(meta or {}), "results": list(rows)}
    path.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    return path


def any_failed(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any row failed (for ``--strict`` exit codes)."""
    return any(row.get("status") != "ok" for row in rows)

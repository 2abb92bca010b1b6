"""Progress reporting: what a long fit shows while it runs.

The search emits events to a ``Reporter``; the CLI and ``AutoModel(verbosity=1)``
use ``RichReporter`` (a progress bar with trials done, time left and the current
epoch, and one table row per finished trial); ``verbosity=0`` uses ``NullReporter``.

Example:

>>> reporter = NullReporter()
>>> reporter.message("nothing is printed")
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class TrialSummary:
    trial_id: str
    architecture: str
    status: str
    score: float
    best_score: float
    epochs: int
    seconds: float
    trials_done: int


class Reporter(Protocol):
    def on_search_begin(self, *, metric: str, max_trials: int, time_limit: float | None, done: int) -> None: ...
    def on_trial_begin(self, trial_id: str, architecture: str) -> None: ...
    def on_epoch_end(self, trial_id: str, epoch: int, score: float | None) -> None: ...
    def on_trial_end(self, summary: TrialSummary) -> None: ...
    def on_search_end(self) -> None: ...
    def message(self, text: str) -> None: ...


class NullReporter:
    def on_search_begin(self, *, metric: str, max_trials: int, time_limit: float | None, done: int) -> None:
        pass

    def on_trial_begin(self, trial_id: str, architecture: str) -> None:
        pass

    def on_epoch_end(self, trial_id: str, epoch: int, score: float | None) -> None:
        pass

    def on_trial_end(self, summary: TrialSummary) -> None:
        pass

    def on_search_end(self) -> None:
        pass

    def message(self, text: str) -> None:
        pass


class RichReporter:
    """A live progress bar plus one printed row per finished trial."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.metric = "score"
        self._progress: Progress | None = None
        self._task: Any = None
        self._start = time.monotonic()
        self._time_limit: float | None = None
        self._current = ""

    def on_search_begin(self, *, metric: str, max_trials: int, time_limit: float | None, done: int) -> None:
        self.metric = metric
        self._start = time.monotonic()
        self._time_limit = time_limit
        self._progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} trials"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[left]}"),
            TextColumn("{task.description}"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=max_trials, completed=done, left=self._left())
        header = f"{'trial':>5}  {'architecture':<15} {'val ' + self.metric:>14} {'best':>9} {'epochs':>6} {'seconds':>8}  {'time left':>9}"
        self.console.print(header, style="bold")
        if done:
            self.console.print(f"resuming: {done} trial(s) already done")

    def _left(self) -> str:
        if self._time_limit is None:
            return ""
        left = max(0.0, self._time_limit - (time.monotonic() - self._start))
        return f"{int(left // 60)}m{int(left % 60):02d}s left"

    def on_trial_begin(self, trial_id: str, architecture: str) -> None:
        self._current = f"trial {trial_id} · {architecture}"
        self._update(self._current)

    def on_epoch_end(self, trial_id: str, epoch: int, score: float | None) -> None:
        shown = "" if score is None or math.isnan(score) else f" · val {score:.4f}"
        self._update(f"{self._current} · epoch {epoch + 1}{shown}")

    def _update(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description, left=self._left())

    def on_trial_end(self, summary: TrialSummary) -> None:
        score = "failed" if summary.status != "COMPLETED" else f"{summary.score:.4f}"
        self.console.print(
            f"{summary.trial_id:>5}  {summary.architecture:<15} {score:>14} {summary.best_score:>9.4f} "
            f"{summary.epochs:>6} {summary.seconds:>8.1f}  {self._left():>9}"
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=summary.trials_done, left=self._left())

    def on_search_end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def message(self, text: str) -> None:
        self.console.print(text)


class LogReporter:
    """One plain, flushed line per event: for output that goes to a log file (a search's worker processes)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _print(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {self.name}: {text}", flush=True)

    def on_search_begin(self, *, metric: str, max_trials: int, time_limit: float | None, done: int) -> None:
        self._print(f"joined the search (objective val {metric})")

    def on_trial_begin(self, trial_id: str, architecture: str) -> None:
        self._print(f"trial {trial_id} · {architecture}")

    def on_epoch_end(self, trial_id: str, epoch: int, score: float | None) -> None:
        pass

    def on_trial_end(self, summary: TrialSummary) -> None:
        score = "failed" if summary.status != "COMPLETED" else f"{summary.score:.4f}"
        self._print(f"trial {summary.trial_id} {summary.status.lower()}: {score} after {summary.epochs} epochs, {summary.seconds:.1f} s")

    def on_search_end(self) -> None:
        self._print("no more trials")

    def message(self, text: str) -> None:
        self._print(text)

"""Distributed search on keras-tuner's own chief/worker engine.

keras-tuner runs a distributed search as one chief process that serves the
oracle over gRPC (``OracleServicer``) and workers whose tuners ask it for trials
(``OracleClient``), configured by ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``
and ``KERASTUNER_ORACLE_PORT``. autodl uses that engine as it is. What this
module adds is what keras-tuner's blocking ``start_server`` leaves out:

- the time budget holds across workers: after the deadline the chief answers
  every request for a trial with ``STOPPED``;
- a worker that dies mid-trial (its process exits, or its heartbeat file goes
  stale) has its trial marked ``FAILED``, and the search goes on with the others;
- local workers are started, each pinned to its share of the CPUs (or one GPU),
  with their output in ``logs/worker<i>.log``;
- one combined progress view, fed from the oracle's trials as workers end them.

The chief binds to loopback unless told otherwise. A worker on another machine
joins with ``autodl worker --chief HOST:PORT RUN_DIR``: it reads the data, the
split and the configuration from the (shared) run directory.

Example (a search's tuner, and two local worker processes)::

    chief = Chief(tuner, deadline=None, reporter=reporter)
    chief.start()
    chief.start_local_workers(2, command=lambda tuner_id, cpus: [...])
    chief.wait()
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import socket
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from autodl.errors import RunError, UserError
from autodl.progress import NullReporter, Reporter, TrialSummary

CHIEF_FILE = "chief.json"  # in the tuner folder: where the chief listens and what the workers read
WORKERS_DIR = "workers"  # in the tuner folder: one heartbeat file per worker
HEARTBEAT_S = 5.0
# A worker whose heartbeat is this old is taken for dead (a long GIL-holding step can delay a beat).
HEARTBEAT_TIMEOUT_S = 60.0
POLL_S = 0.5
ENDED = ("COMPLETED", "FAILED", "INVALID", "STOPPED")


@dataclass
class ChiefInfo:
    """What a worker needs to join: the chief's address, the budget, and the data it must see."""

    address: str
    data: str
    fingerprint: str
    test_data: str | None = None
    deadline_unix: float | None = None  # wall clock, so machines with their own monotonic clocks agree

    def write(self, tuner_dir: Path) -> None:
        path = tuner_dir / CHIEF_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def read(cls, tuner_dir: Path) -> "ChiefInfo":
        path = tuner_dir / CHIEF_FILE
        if not path.exists():
            raise UserError(f"'{tuner_dir.parent}' has no running distributed search ({path.name} is missing); "
                            "start one with 'autodl fit ... --workers N'")
        return cls(**json.loads(path.read_text()))

    def deadline_monotonic(self) -> float | None:
        return None if self.deadline_unix is None else time.monotonic() + (self.deadline_unix - time.time())


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``, with a one-line error for anything else."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--chief {address!r} is not HOST:PORT; pass the address 'autodl fit --workers' printed")
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def worker_environment(tuner_id: str, address: str) -> Iterator[None]:
    """keras-tuner's worker settings, for the tuner built inside the ``with`` block."""
    host, port = parse_address(address)
    names = {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port)}
    previous = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    silence_condition_protos()
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Heartbeat:
    """A worker's sign of life: ``tuner/workers/<id>.json`` rewritten every few seconds by a daemon thread."""

    def __init__(self, tuner_dir: Path, tuner_id: str, interval: float = HEARTBEAT_S) -> None:
        self.path = tuner_dir / WORKERS_DIR / f"{tuner_id}.json"
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{tuner_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval)
        self.path.unlink(missing_ok=True)  # a worker that left cleanly is not dead

    def _beat(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"time": time.time(), "host": socket.gethostname(), "pid": os.getpid()}))
        tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError):
                self._beat()


def cpu_shares(n_workers: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """Each worker's CPUs: contiguous equal shares, or all of them round-robin when workers outnumber CPUs.

    >>> cpu_shares(2, [0, 1, 2, 3])
    [[0, 1], [2, 3]]
    >>> cpu_shares(3, [0, 1])
    [[0], [1], [0]]
    """
    available = sorted(cpus if cpus is not None else _available_cpus())
    if n_workers <= len(available):
        size = len(available) // n_workers
        return [available[i * size : (i + 1) * size] for i in range(n_workers)]
    return [[available[i % len(available)]] for i in range(n_workers)]


def _available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def pin_to_cpus(cpus: Sequence[int]) -> None:
    """Runs this process (and TensorFlow's thread pools) on ``cpus``; call before TensorFlow runs an op."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))
    os.environ["OMP_NUM_THREADS"] = str(len(cpus))
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(len(cpus))
    tf.config.threading.set_inter_op_parallelism_threads(min(2, len(cpus)))


def visible_gpus() -> list[str]:
    """The GPU ids a child process can be given in ``CUDA_VISIBLE_DEVICES`` (empty without GPUs)."""
    import tensorflow as tf  # noqa: PLC0415

    n = len(tf.config.list_physical_devices("GPU"))
    inherited = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return (inherited or [str(i) for i in range(n)])[:n]


@dataclass
class _LocalWorker:
    tuner_id: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Chief:
    """Serves a tuner's oracle to workers and watches them until the search is over.

    ``tuner`` is the search's own ``AutoTuner`` in this process (its oracle holds
    the state; workers only borrow trials). ``deadline`` is ``time.monotonic()``
    seconds or ``None``.
    """

    tuner: Any
    deadline: float | None = None
    reporter: Reporter = field(default_factory=NullReporter)
    host: str = "127.0.0.1"
    port: int = 0
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S
    workers: list[_LocalWorker] = field(default_factory=list)
    address: str = ""
    _server: Any = None
    _seen: dict[str, str] = field(default_factory=dict)
    _begun: dict[str, float] = field(default_factory=dict)

    @property
    def oracle(self) -> Any:
        return self.tuner.oracle

    @property
    def tuner_dir(self) -> Path:
        return Path(self.tuner.project_dir)

    def start(self) -> str:
        """Starts the gRPC oracle service; returns ``HOST:PORT`` (port 0 picks a free one)."""
        import grpc  # noqa: PLC0415
        from keras_tuner.src import protos  # noqa: PLC0415

        silence_condition_protos()
        self.tuner.save()
        self._server = grpc.server(_executor())
        protos.get_service_grpc().add_OracleServicer_to_server(_BudgetedServicer(self.oracle, self._stopping), self._server)
        port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if port == 0:
            raise UserError(f"cannot listen on {self.host}:{self.port}; pick another --listen address or port")
        self._server.start()
        self.address = f"{self.host}:{port}"
        (self.tuner_dir / WORKERS_DIR).mkdir(exist_ok=True)
        for trial in self.oracle.trials.values():  # a resumed search's finished trials are not news
            self._seen[trial.trial_id] = trial.status
        return self.address

    def start_local_workers(
        self, n: int, command: Callable[[str, list[int]], list[str]], log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        """``n`` worker processes on this machine, each on its share of the CPUs or on one GPU."""
        log_dir.mkdir(parents=True, exist_ok=True)
        gpus = visible_gpus()
        shares = cpu_shares(n)
        for i in range(n):
            tuner_id = f"worker{i}"
            child_env = dict(os.environ, **(env or {}))
            if gpus:
                child_env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            log = log_dir / f"{tuner_id}.log"
            with log.open("ab") as out:
                process = subprocess.Popen(
                    command(tuner_id, shares[i]), stdout=out, stderr=subprocess.STDOUT, env=child_env,
                    start_new_session=True,  # the chief's Ctrl-C is for the chief, which stops them in turn
                )
            self.workers.append(_LocalWorker(tuner_id, process, log))

    def _stopping(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def wait(self) -> None:
        """Blocks until the search is over: trials all given out (or time up) and none running."""
        try:
            while True:
                self._reap_dead_workers()
                self._report()
                if self._over():
                    break
                time.sleep(POLL_S)
        except BaseException:
            self.stop_workers()
            raise
        finally:
            self._report()
            if self._server is not None:
                self._server.stop(grace=1.0)
        failed = [w for w in self.workers if w.process.returncode not in (0, None)]
        if failed and not self.tuner.completed_trials():
            worker = failed[0]
            raise RunError(f"every worker stopped without a finished trial; {worker.tuner_id} exited with code "
                           f"{worker.process.returncode}: {_last_line(worker.log)} (see {worker.log})")

    def _over(self) -> bool:
        if self.oracle.ongoing_trials:
            return False
        local_running = [w for w in self.workers if w.process.poll() is None]
        if self.workers and not local_running:
            return True  # the local workers all left; no trial is running anywhere
        max_trials = self.oracle.max_trials
        return self._stopping() or bool(max_trials and len(self.oracle.trials) >= max_trials and not local_running)

    def _reap_dead_workers(self) -> None:
        """Ends, as FAILED, the trial of a worker whose process exited or whose heartbeat stopped."""
        local = {w.tuner_id: w for w in self.workers}
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            worker = local.get(tuner_id)
            if worker is not None and worker.process.poll() is not None:
                reason = f"worker {tuner_id} exited with code {worker.process.returncode} mid-trial"
            elif worker is None and self._heartbeat_age(tuner_id) > self.heartbeat_timeout:
                reason = f"worker {tuner_id} sent no heartbeat for {self.heartbeat_timeout:.0f} s"
            else:
                continue
            ended = copy.copy(trial)
            ended.status, ended.message = "FAILED", reason
            self.oracle.end_trial(ended)
            self.oracle.tuner_ids.discard(tuner_id)
            self.reporter.message(f"trial {trial.trial_id} failed: {reason}; the search goes on")

    def _heartbeat_age(self, tuner_id: str) -> float:
        path = self.tuner_dir / WORKERS_DIR / f"{tuner_id}.json"
        try:
            return time.time() - float(json.loads(path.read_text())["time"])
        except (OSError, ValueError, KeyError):
            return math.inf

    def _report(self) -> None:
        """Progress events for trials that began or ended since the last look."""
        from autodl.search.tuner import architecture_of, score_of  # noqa: PLC0415

        trials = sorted(self.oracle.trials.values(), key=lambda t: t.trial_id)
        for trial in trials:
            previous = self._seen.get(trial.trial_id)
            if previous == trial.status or previous in ENDED:
                continue
            if previous is None:
                self._begun[trial.trial_id] = time.monotonic()
                where = next((t for t, ongoing in self.oracle.ongoing_trials.items() if ongoing.trial_id == trial.trial_id), None)
                self.reporter.on_trial_begin(trial.trial_id, architecture_of(trial) + (f" on {where}" if where else ""))
            if trial.status in ENDED:
                log = self.tuner.read_trial_log().get(trial.trial_id, {})
                best = self.oracle.get_best_trials(1)
                self.reporter.on_trial_end(TrialSummary(
                    trial_id=trial.trial_id, architecture=architecture_of(trial), status=str(trial.status),
                    score=score_of(trial), best_score=score_of(best[0]) if best else math.nan,
                    epochs=int(log.get("epochs", 0)),
                    seconds=float(log.get("seconds", time.monotonic() - self._begun.get(trial.trial_id, time.monotonic()))),
                    trials_done=len(self.tuner.completed_trials()),
                ))
                self.tuner.prune_checkpoints()
            self._seen[trial.trial_id] = trial.status

    def stop_workers(self, timeout: float = 10.0) -> None:
        """Asks the local workers to stop (SIGTERM), then kills those still running."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        end = time.monotonic() + timeout
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def silence_condition_protos() -> None:
    """keras-tuner 1.4.8's ``Parent.to_proto`` prints its first value (a leftover debug print) on
    every gRPC message that carries a conditional hyperparameter; this drops that output."""
    from keras_tuner.src.engine import conditions  # noqa: PLC0415

    original = conditions.Parent.to_proto
    if getattr(original, "_autodl_silenced", False):
        return

    def to_proto(self: Any) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return original(self)

    to_proto._autodl_silenced = True  # type: ignore[attr-defined]
    conditions.Parent.to_proto = to_proto


def _executor() -> Any:
    from concurrent import futures  # noqa: PLC0415

    # keras-tuner's oracle methods take its own lock; more than one thread only queues on it.
    return futures.ThreadPoolExecutor(max_workers=4)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").split("\n") if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "empty log"


def _budgeted_servicer_class() -> type:
    from keras_tuner.src import protos  # noqa: PLC0415
    from keras_tuner.src.distribute.oracle_chief import OracleServicer  # noqa: PLC0415
    from keras_tuner.src.engine import trial as trial_module  # noqa: PLC0415

    class BudgetedServicer(OracleServicer):
        """keras-tuner's oracle service, answering STOPPED to requests for a trial once the budget is spent."""

        def __init__(self, oracle: Any, stopping: Callable[[], bool]) -> None:
            super().__init__(oracle)
            self.stopping = stopping

        def CreateTrial(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
            if self.stopping():
                self.oracle.tuner_ids.discard(request.tuner_id)
                trial = trial_module.Trial(self.oracle.get_space(), status=trial_module.TrialStatus.STOPPED)
                return protos.get_service().CreateTrialResponse(trial=trial.to_proto())
            return super().CreateTrial(request, context)

    return BudgetedServicer


def _BudgetedServicer(oracle: Any, stopping: Callable[[], bool]) -> Any:  # noqa: N802
    # Defined on first use: keras-tuner's gRPC modules import protobuf, which a single-process fit never needs.
    return _budgeted_servicer_class()(oracle, stopping)

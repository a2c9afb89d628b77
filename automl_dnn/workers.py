"""Workers that run trials: in this process or in spawned processes, stopped by the deadline or Ctrl-C.

Processes, not threads: trials are Python-heavy. Local workers share a file lock from "is there a
trial slot left?" until their trial is RUNNING, so ``--n-trials`` is exact; workers on other machines
rely on the objective's count check. A worker whose last ``MAX_FAILURES_IN_A_ROW`` trials all failed
stops: the space or the data is broken.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import multiprocessing as mp
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
import torch
from optuna.trial import TrialState

from automl_dnn.budget import BaggingReserve, reserve_seconds
from automl_dnn.errors import DiskFullError, StorageError, is_disk_full
from automl_dnn.objective import FINISHED, MIN_EPOCHS, Objective, TrialFailed, WorkerContext, copy_seconds
from automl_dnn.storage import reap_stale_trials, redact, storage_errors_surface
from automl_dnn.study import make_pruner, open_study
from automl_dnn.train import resolve_device

MAX_FAILURES_IN_A_ROW = 10
MAX_AUTO_WORKERS = 4
#: Seconds of search below which ``--jobs auto`` keeps one worker: spawned workers take about 3 s to start
#: (they import torch), a tenth of such a budget or more.
AUTO_MIN_BUDGET = 30.0
#: A late worker (``LateWorkers``) is not started with fewer seconds of search left: it would import torch and
#: the package (about 3 s on 2 cores) only to find no time for a trial, while the search's end waited for it.
LATE_MIN_SECONDS = 6.0
DISK_FULL_EXIT = 28  # a spawned worker's exit status when the disk filled up (ENOSPC); the parent says it once
STORAGE_LOST_EXIT = 3  # a spawned worker's exit status when the study's database stayed unreachable; likewise


class StopFlag:
    """Set by SIGINT or the deadline; the objective reads it after every epoch and cuts the trial short."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.interrupted = False

    def should_stop(self) -> bool:
        return self.interrupted or (self.deadline is not None and time.time() >= self.deadline)

    def seconds_left(self) -> float | None:
        """Seconds until the search stops (None: no deadline); the bagging's reserve moves the deadline."""
        return None if self.deadline is None else self.deadline - time.time()


class FileStop(StopFlag):
    """Worker processes stop when the parent creates the stop file (after a Ctrl-C), or when the parent is
    gone (killed: the worker is handed to another parent), instead of training on to the deadline unseen."""

    def __init__(self, path: Path, deadline: float | None, parent: int | None = None) -> None:
        super().__init__(deadline)
        self.path = path
        self.parent = os.getppid() if parent is None else parent

    def should_stop(self) -> bool:
        return super().should_stop() or self.path.exists() or os.getppid() != self.parent


#: The signals that stop a search gracefully: Ctrl-C, and the SIGTERM that ``timeout``, ``docker stop``, Slurm and
#: systemd send before they kill.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def sigint_stops(stop: StopFlag) -> Iterator[None]:
    """First Ctrl-C (or SIGTERM): finish the current epoch, keep the trial, stop. Second: interrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.interrupted:
            raise KeyboardInterrupt
        stop.interrupted = True

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


class TrialSlotLock:
    """An inter-process file lock held from "is there a trial slot left?" until the trial is RUNNING."""

    def __init__(self, path: Path) -> None:
        self.path, self._fd = path, None

    def __enter__(self) -> TrialSlotLock:
        self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __exit__(self, *exc: Any) -> None:
        self.release()


def count_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def run_worker(ctx: WorkerContext, on_trial: Callable[[optuna.Study], None] | None = None,
               stop: StopFlag | None = None, study: optuna.Study | None = None) -> None:
    """Run trials until the trial count, the deadline, or Ctrl-C; never more than ``n_trials`` in total.

    Failed trials are counted on screen and keep their reason in the study; no traceback per trial.
    ``study`` is the caller's open study (in-process); a spawned worker opens its own.
    """
    stop = stop or StopFlag(ctx.deadline)
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    if study is None:
        study = open_study(ctx.spec, seed=ctx.seed + ctx.worker_index, pruner=make_pruner(ctx.pruner),
                           several_workers=ctx.several_workers, create=False)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    objective = Objective(ctx, stop.should_stop, stop.seconds_left)
    lock = TrialSlotLock(Path(ctx.run_dir) / ".trial-slot.lock")
    failures_in_a_row = 0
    if ctx.bagging is not None and ctx.deadline is not None:  # a worker that starts late keeps the reserve too
        stop.deadline = ctx.deadline - bagging_reserve(study, ctx.bagging)
    with sigint_stops(stop):
        while (not stop.should_stop() and failures_in_a_row < MAX_FAILURES_IN_A_ROW
               and not too_late_for_a_trial(study, stop.seconds_left())):
            reap_stale_trials(study)
            with lock:
                if ctx.n_trials is not None and count_trials(study, FINISHED + (TrialState.RUNNING,)) >= ctx.n_trials:
                    break
                # The objective releases the slot lock as soon as its trial is RUNNING in the storage.
                finished: list[TrialState] = []
                with storage_errors_surface():
                    study.optimize(_releasing(objective, lock), n_trials=1, catch=(TrialFailed,),
                                   callbacks=[lambda s, t: _after_trial(s, t, finished, on_trial)])
            failures_in_a_row = failures_in_a_row + 1 if finished == [TrialState.FAIL] else 0
            if ctx.bagging is not None and ctx.deadline is not None:
                stop.deadline = ctx.deadline - bagging_reserve(study, ctx.bagging)


def too_late_for_a_trial(study: optuna.Study, seconds_left: float | None) -> bool:
    """Whether even the fastest net so far could not train its MIN_EPOCHS before the search ends.

    A trial cut to an epoch or two scores far below the others (a TabM started 7 s before the end of a
    60 s search of adult: 1 epoch, log-loss 0.51 against 0.30), so those seconds go to the bagging instead.
    """
    if seconds_left is None:
        return False
    per_epoch = [t.user_attrs["epoch_seconds"] / t.user_attrs["epochs_run"]
                 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("epochs_run") and t.user_attrs.get("epoch_seconds") is not None]
    return bool(per_epoch) and seconds_left < MIN_EPOCHS * min(per_epoch)


def bagging_reserve(study: optuna.Study, reserve: BaggingReserve) -> float:
    """Seconds to end the search early by, so that ``fit``'s bagging of the best nets so far fits after it."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    trials.sort(key=lambda t: (sign * t.value, t.number))
    costs = [c for c in (copy_seconds(t) for t in trials[: reserve.top_k]) if c is not None]
    return reserve_seconds(costs, reserve)


def _after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, finished: list[TrialState],
                 on_trial: Callable[[optuna.Study], None] | None) -> None:
    finished.append(trial.state)
    if on_trial:
        on_trial(study)
    stop_on_disk_full(trial)


def stop_on_disk_full(trial: optuna.trial.FrozenTrial) -> None:
    """A trial that failed for a full disk stops the search with its reason: every next trial would fail alike."""
    reason = str(trial.user_attrs.get("fail_reason", "")) if trial.state == TrialState.FAIL else ""
    if not is_disk_full(reason):
        return
    message = reason.removeprefix(f"{DiskFullError.__name__}: ")
    if not message.startswith("disk "):  # a raw OSError's text: say it the usual way
        raise DiskFullError.writing(f"the files of trial {trial.number}")
    raise DiskFullError(message)


def _releasing(objective: Objective, lock: TrialSlotLock) -> Callable[[optuna.Trial], float]:
    def run(trial: optuna.Trial) -> float:
        lock.release()
        return objective(trial)

    return run


def _worker_process(ctx: WorkerContext) -> None:
    """Entry point of a spawned worker process."""
    for signum in STOP_SIGNALS:  # the parent turns Ctrl-C and SIGTERM (sent to its whole group too) into a stop file
        signal.signal(signum, signal.SIG_IGN)
    stop_file = Path(ctx.run_dir) / ".stop"
    try:
        run_worker(ctx, stop=FileStop(stop_file, ctx.deadline))
    except Exception as exc:
        if isinstance(exc, StorageError):  # it said "note: storage ... unreachable"; the parent says the error
            raise SystemExit(STORAGE_LOST_EXIT) from None
        if not is_disk_full(exc):
            raise
        try:  # the other workers stop too (an empty file needs no free blocks on most file systems)
            stop_file.touch()
        except OSError:
            pass
        raise SystemExit(DISK_FULL_EXIT) from None  # no traceback per worker: the parent says it once


def run_processes(ctx: WorkerContext, jobs: int, stop: StopFlag, progress: Callable[[optuna.Study], None] | None,
                  study: optuna.Study) -> None:
    """Spawn ``jobs`` worker processes on the study and wait for them; Ctrl-C reaches them as a stop file."""
    stop_file = Path(ctx.run_dir) / ".stop"
    stop_file.unlink(missing_ok=True)
    workers = [_spawn_worker(ctx, i) for i in range(jobs)]
    _wait_for(workers, stop, stop_file, poll=1.0 / jobs, on_poll=(lambda: progress(study)) if progress else None)
    _after_processes(ctx, workers, study)


def _spawn_worker(ctx: WorkerContext, index: int) -> Any:
    process = mp.get_context("spawn").Process(target=_worker_process,
                                              args=(dataclasses.replace(ctx, worker_index=index),), daemon=False)
    process.start()
    return process


def _wait_for(processes: list[Any], stop: StopFlag, stop_file: Path, *, poll: float, stop_them: bool = False,
              on_poll: Callable[[], None] | None = None) -> None:
    """Wait until the worker processes end. A Ctrl-C here (or ``stop_them``) reaches them as ``stop_file``,
    which goes once they have."""
    try:
        with sigint_stops(stop):
            while any(p.is_alive() for p in processes):
                if (stop.interrupted or stop_them) and not stop_file.exists():
                    stop_file.touch()
                for p in processes:
                    p.join(timeout=poll)
                if on_poll:
                    on_poll()
    finally:
        for p in processes:
            p.join()
        stop_file.unlink(missing_ok=True)


class LateWorkers:
    """Worker processes that join a search run in this process once ``free`` (a ``threading.Event``) is set:
    ``fit`` sets it when XGBoost's thread ends, and its cores would idle until the search's end otherwise.

    Spawned only then, they cost nothing (no start-up import, no memory) in a search that ends first. On
    leaving the ``with`` block (the in-process worker is done), no more start; those that did finish their
    trial (or stop at once after a Ctrl-C, told by the stop file) and are waited for.
    """

    def __init__(self, ctx: WorkerContext, count: int, free: threading.Event, stop: StopFlag) -> None:
        self.ctx, self.count, self.free, self.stop = ctx, count, free, stop
        self.processes: list[Any] = []
        self.joined_at: float | None = None  # time.time() when they were spawned
        self._over = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="automl-dnn-late-workers", daemon=True)

    def __enter__(self) -> LateWorkers:
        (Path(self.ctx.run_dir) / ".stop").unlink(missing_ok=True)
        self._watcher.start()
        return self

    def _watch(self) -> None:
        while not self.free.wait(0.2):
            if self._over.is_set():
                return
        with self._lock:
            left = self.stop.seconds_left()
            if self._over.is_set() or self.stop.should_stop() or (left is not None and left < LATE_MIN_SECONDS):
                return
            self.joined_at = time.time()
            self.processes.extend(_spawn_worker(self.ctx, i) for i in range(1, 1 + self.count))

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._over.set()
        self._watcher.join()
        _wait_for(self.processes, self.stop, Path(self.ctx.run_dir) / ".stop", poll=0.5, stop_them=exc[0] is not None)

    def check(self, study: optuna.Study) -> None:
        """What ``run_processes`` says of its workers' ends, said of these."""
        _after_processes(self.ctx, self.processes, study)


def _after_processes(ctx: WorkerContext, workers: list[Any], study: optuna.Study) -> None:
    reap_stale_trials(study)
    if any(w.exitcode == STORAGE_LOST_EXIT for w in workers):
        raise StorageError(f"a worker stopped: the study's storage stayed unreachable ({redact(ctx.spec['storage'])}); "
                           "the finished trials are kept in it: run the same command again")
    if any(w.exitcode == DISK_FULL_EXIT for w in workers):
        for trial in reversed(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))):
            stop_on_disk_full(trial)  # the exact file, when the trial could record it
        raise DiskFullError.writing(f"the run folder {ctx.run_dir} or its study")


def available_cores() -> int:
    """The cores this process may run on (its affinity, e.g. under taskset or a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_workers(*, device: str, threads: int | None, time_budget: float | None, storage: str | None,
                 cores: int | None = None) -> tuple[int, int | None]:
    """What ``--jobs auto`` runs: (worker processes, torch threads for each; None: torch's default).

    A small net's matmuls gain little from a second intra-op thread (1.0-1.2x on 2 cores, benchmarks.md),
    while a second trial beside it trains as many epochs again; so on a CPU whose cores the nets have
    alone, one single-thread worker per core (at most ``MAX_AUTO_WORKERS``; past that the cores are
    shared out as threads). One worker where several would undo what the run asked for: a GPU (its
    trials share the one device), fixed ``threads`` (``fit`` gives XGBoost the other cores), a search
    bounded by ``--n-trials`` alone (``time_budget`` None: one worker is reproducible, several are not) or
    by less than AUTO_MIN_BUDGET seconds, SQLite storage (not safe for several workers).
    """
    cores = available_cores() if cores is None else cores
    on_gpu = resolve_device(device).type == "cuda"
    sqlite = storage is not None and storage.startswith("sqlite")
    short = time_budget is None or time_budget < AUTO_MIN_BUDGET
    if on_gpu or threads is not None or short or sqlite or cores < 2:
        return 1, threads
    workers = min(cores, MAX_AUTO_WORKERS)
    return workers, cores // workers

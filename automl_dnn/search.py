"""The search: prepare the run folder, open the study, run the workers, and summarize.

One worker runs in this process; ``jobs > 1`` spawns that many worker processes on one study
(``workers.py``), and beside ``fit``'s XGBoost more may join late (``LateWorkers``). What one trial does is
``objective.py``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from automl_dnn.budget import BaggingRequest, BaggingReserve
from automl_dnn.data import Dataset, release_table_memory
from automl_dnn.errors import AutoDNNError, disk_full_as_error
from automl_dnn.folds import bagging_folds
from automl_dnn.memory_guard import check_limit_setting
from automl_dnn.objective import FINISHED, WorkerContext, probe_row_seconds
from automl_dnn.run_folder import AUTO_JOBS, RunDir, SearchOptions, prepare_run
from automl_dnn.search_rows import decide as decide_search_rows
from automl_dnn.space import load_space
from automl_dnn.storage import reap_stale_trials, redact
from automl_dnn.study import enqueue_defaults, make_pruner, open_study
from automl_dnn.workers import LateWorkers, StopFlag, auto_workers, available_cores, run_processes, run_worker

DEFAULT_TIME_BUDGET = 600.0  # seconds, when neither --time-budget nor --n-trials is given

#: ``on_prepared(spec, dataset, deadline)``: called once the run folder is ready, before the first trial.
OnPrepared = Callable[[dict[str, Any], Dataset, "float | None"], None]


@dataclass
class SearchSummary:
    run_dir: Path
    study_name: str
    storage: str
    task: str
    metric: str
    direction: str
    n_complete: int
    n_pruned: int
    n_failed: int
    seconds: float
    best: list[dict[str, Any]] = field(default_factory=list)  # best trials, best first
    notes: list[str] = field(default_factory=list)
    stopped_by: str = ""
    jobs: int = 1  # the worker processes that ran it (``--jobs auto`` resolved); fit's bagging uses as many
    threads: int | None = None  # torch threads of each
    late: int = 0  # of ``jobs``, those that could join late on the cores of a thread beside it (``SharedCores``)
    late_started: int = 0  # ... and did
    late_threads: int | None = None  # torch threads of each of them


def run_search(options: SearchOptions, *, on_progress: Callable[[dict[str, Any]], None] | None = None,
               on_prepared: OnPrepared | None = None, beside: SharedCores | None = None) -> SearchSummary:
    """Run (or resume) a search; returns the study's summary.

    ``on_prepared(spec, dataset, deadline)`` is called once the run folder holds the split and the
    preprocessing, before the first trial: ``fit`` starts XGBoost there, on the data already read.
    ``beside`` (``fit``'s XGBoost thread) holds some cores: under ``--jobs auto`` one worker runs here on
    the others, and the workers that XGBoost's cores make room for join once it frees them (``LateWorkers``).
    A full disk (run files, artifacts, or the study's own database) stops it with one ``DiskFullError``.
    """
    with disk_full_as_error(f"the run folder {options.out} or its study"):
        return _run_search(options, on_progress, on_prepared, beside)


def _run_search(options: SearchOptions, on_progress: Callable[[dict[str, Any]], None] | None,
                on_prepared: OnPrepared | None, beside: SharedCores | None) -> SearchSummary:
    started = time.time()
    budget = options.time_budget
    if budget is None and options.n_trials is None:
        budget = DEFAULT_TIME_BUDGET
    space = load_space(options.space)
    check_limit_setting()
    options, auto = _resolve_jobs(options, budget)
    late_threads = options.threads
    options, late = _share_cores(options, beside) if auto and beside is not None else (options, 0)
    spec, dataset = prepare_run(options, space)
    deadline = started + budget if budget is not None else None
    if on_prepared is not None:
        on_prepared(spec, dataset, deadline)
    ctx = WorkerContext(
        run_dir=str(Path(options.out).resolve()), spec=spec, space=space, deadline=deadline,
        n_trials=options.n_trials, seed=options.seed, pruner=options.pruner, device=options.device,
        amp=options.amp, threads=options.threads, time_budget=budget,
        several_workers=options.jobs > 1 or not spec["storage"].startswith("sqlite"),
        bagging=_bagging_reserve(options.bagging, dataset, options.jobs - late),
    )
    del dataset  # the trials read the encoded matrices of the run folder
    release_table_memory()  # issue 13: unless XGBoost's thread still holds the table, its memory goes back now
    study = open_study(spec, seed=options.seed, pruner=make_pruner(options.pruner),
                       several_workers=ctx.several_workers)
    # Issue 13: on a large table the trials train on a seeded sample of the rows, sized from measured epoch costs.
    run = RunDir(Path(ctx.run_dir))
    rows = decide_search_rows(run, spec, deadline=deadline, budget=budget, seed=options.seed,
                              resumed=bool(study.get_trials(deepcopy=False)),
                              row_seconds=lambda: probe_row_seconds(run, spec, space, device=options.device,
                                                                    threads=options.threads, seed=options.seed,
                                                                    amp=options.amp))
    if rows is not None and rows.train < rows.n_train and ctx.bagging is None and options.bagging is not None:
        # no k-fold bagging on these rows: keep time for refitting the best nets on every row instead (one copy each)
        ctx.bagging = BaggingReserve(cap=options.bagging.cap, k=1, repeats=1, top_k=options.bagging.top_k, refit=False)
    if auto and rows is not None and rows.train < rows.n_train:
        # a sampled search of a large table is sized for one worker's memory (issue 13): no second copy of its rows
        threads = None if beside is None else options.threads  # beside XGBoost: the cores it leaves
        options, late = dataclasses.replace(options, jobs=1, threads=threads), 0
        bagging = None if ctx.bagging is None else dataclasses.replace(ctx.bagging, workers=1)
        ctx = dataclasses.replace(ctx, threads=threads, bagging=bagging)
    enqueue_defaults(study, space, spec["task"])
    reap_stale_trials(study)
    finished_before = len(study.get_trials(deepcopy=False, states=FINISHED))
    stop = StopFlag(deadline)
    progress = (lambda s: on_progress(progress_of(s, started, deadline))) if on_progress else None
    late_started, joined_at = 0, None
    if late:
        assert beside is not None
        with LateWorkers(dataclasses.replace(ctx, threads=late_threads), late, beside.free, stop) as joining:
            run_worker(ctx, on_trial=progress, stop=stop, study=study)
        joining.check(study)
        late_started, joined_at = len(joining.processes), joining.joined_at
    elif options.jobs == 1:
        run_worker(ctx, on_trial=progress, stop=stop, study=study)
    else:
        run_processes(ctx, options.jobs, stop, progress, study)
    summary = summarize(study, spec, Path(options.out), time.time() - started)
    summary.stopped_by = "interrupted" if stop.interrupted else "budget"
    summary.jobs, summary.threads = options.jobs, options.threads
    summary.late, summary.late_started, summary.late_threads = late, late_started, late_threads
    if options.n_trials is not None and finished_before >= options.n_trials:
        summary.notes.append(f"the study already had {finished_before} finished trials, --n-trials {options.n_trials}: "
                             "none run now (a larger --n-trials adds more)")
    if late_started and joined_at is not None:
        summary.notes.append(f"{late_started} more worker{'s' * (late_started > 1)} joined the search at "
                             f"{joined_at - started:.0f}s, once XGBoost's thread had freed its cores")
    if summary.n_complete == 0:
        reasons = [t.user_attrs.get("fail_reason") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
        reasons = [r for r in reasons if r]
        if stop.interrupted:
            raise AutoDNNError("interrupted before any trial completed; run the same command again to resume")
        if reasons:
            failed = (f"all {len(reasons)} trials failed" if not summary.n_pruned else
                      f"no trial completed: {len(reasons)} failed, {summary.n_pruned} pruned")
            raise AutoDNNError(f"{failed}; first reason: {reasons[0]}")
        if summary.n_pruned == 0 or stop.should_stop():  # trials cut short by the deadline count as pruned
            cut = f" ({summary.n_pruned} cut short)" if summary.n_pruned else ""
            raise NoTrialInTime(f"the time budget ended before any trial completed{cut}; give a larger "
                                "--time-budget", summary)
    return summary


class NoTrialInTime(AutoDNNError):
    """The time budget ended before any trial completed (none failed, none was interrupted). ``summary`` is the
    search's all the same: ``fit`` goes on with XGBoost alone when its thread has a model, rather than lose it."""

    def __init__(self, message: str, summary: SearchSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class SharedCores:
    """A thread beside the search (``fit``'s XGBoost): the cores it holds, and a ``threading.Event`` that is
    set when it ends and frees them."""

    cores: int
    free: threading.Event


def _share_cores(options: SearchOptions, beside: SharedCores) -> tuple[SearchOptions, int]:
    """``--jobs auto`` resolved beside ``beside``: one worker here on the cores it leaves, and as many more as
    its cores make room for (``options.jobs`` counts them, for the storage; 0 where auto runs one worker)."""
    threads = max(1, available_cores() - beside.cores)
    late = min(options.jobs - 1, beside.cores // (options.threads or 1)) if options.jobs > 1 else 0
    return dataclasses.replace(options, jobs=1 + late, threads=threads), late


def _resolve_jobs(options: SearchOptions, budget: float | None) -> tuple[SearchOptions, bool]:
    """``--jobs auto`` made a number (``workers.auto_workers``), and whether it was auto. A resumed run keeps
    the storage it recorded, so a run folder whose study is SQLite resumes with one worker."""
    if options.jobs != AUTO_JOBS:
        return options, False
    run = RunDir(Path(options.out))
    storage = options.storage or (run.read_spec().get("storage") if run.exists() else None)
    jobs, threads = auto_workers(device=options.device, threads=options.threads, storage=storage, time_budget=budget)
    return dataclasses.replace(options, jobs=jobs, threads=threads), True


def _bagging_reserve(request: BaggingRequest | None, dataset: Dataset, jobs: int) -> BaggingReserve | None:
    """``fit``'s bagging request resolved on the rows: None when the rows get no bagging."""
    if request is None:
        return None
    k, repeats = bagging_folds(request.folds, len(dataset.split["train"]) + len(dataset.split["valid"]),
                               ordered=dataset.order is not None)
    if k == 1:
        return None
    return BaggingReserve(cap=request.cap, k=k, repeats=repeats, top_k=request.top_k, refit=request.refit,
                          workers=jobs)


def progress_of(study: optuna.Study, started: float, deadline: float | None) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = None
    if complete:
        best = (min if study.direction.name == "MINIMIZE" else max)(t.value for t in complete)
    now = time.time()
    return {
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING),
        "best": best,
        "elapsed": now - started,
        "remaining": None if deadline is None else max(0.0, deadline - now),
    }


def summarize(study: optuna.Study, spec: dict[str, Any], run_dir: Path, seconds: float, top: int = 5) -> SearchSummary:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    reverse = spec["direction"] == "maximize"
    complete.sort(key=lambda t: t.value, reverse=reverse)
    best = [
        {"number": t.number, "value": t.value, "params": dict(t.params), "summary": t.user_attrs.get("summary", {}),
         "epochs": t.user_attrs.get("epochs_run"), "seconds": t.user_attrs.get("train_seconds")}
        for t in complete[:top]
    ]
    return SearchSummary(
        run_dir=run_dir, study_name=spec["study_name"], storage=redact(spec["storage"]), task=spec["task"],
        metric=spec["metric"], direction=spec["direction"],
        n_complete=len(complete), n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials), seconds=seconds, best=best,
        notes=list(spec.get("notes", [])),
    )


__all__ = ["NoTrialInTime", "SearchOptions", "SearchSummary", "run_search", "summarize"]

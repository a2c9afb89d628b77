"""The Python API behind every CLI command: search, ensemble, fit, predict, report, importance, dashboard."""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pandas as pd
import torch

from automl_dnn.bagging import BAG_MODES, gbt_in_thread
from automl_dnn.budget import BaggingRequest, plan_fit
from automl_dnn.ensemble_step import EnsembleReport, ensemble_run
from automl_dnn.errors import AutoDNNError
from automl_dnn.paths import check_can_create, check_file_path, make_folder
from automl_dnn.gbt import BackgroundGBT
from automl_dnn.model_folder import check_model_dir
from automl_dnn.data import read_table
from automl_dnn.predictor import Predictor, load_model
from automl_dnn.predictor import predict_file as _predict_file
from automl_dnn.report import dashboard_app, live_progress
from automl_dnn.report_page import write_report_page
from automl_dnn.run_folder import AUTO_JOBS, RunDir, check_time_budget, check_whole_numbers
from automl_dnn.search import NoTrialInTime, OnPrepared, SearchOptions, SearchSummary, SharedCores, run_search
from automl_dnn.workers import available_cores

#: XGBoost trials in ``fit``: with a time budget the budget ends its search, without one the count does.
GBT_TRIALS_ON_BUDGET = 200
GBT_TRIALS = 10
#: ``fit --jobs auto`` on a CPU: the nets' search takes XGBoost's cores once it is done with them (and XGBoost
#: stops tuning when it trails the nets). False: the fixed split of session 18, kept for
#: ``benchmarks/search_knobs.py --experiment xgboost-cores``.
CORES_BACK_FROM_XGBOOST = True

_F = TypeVar("_F", bound=Callable[..., Any])


_KEEPING = threading.local()


@contextmanager
def callers_settings_kept() -> Iterator[None]:
    """The process-wide settings a search changes for its own trials (torch's intra-op threads, Optuna's log
    level) are the caller's again afterwards: a notebook's own torch code is not left on the search's share of
    the cores, nor its own Optuna studies silenced. Only the outermost call restores them: inside ``fit`` the
    ensemble step runs on the search's settings, as it always has (XGBoost's thread may still be busy)."""
    if getattr(_KEEPING, "active", False):
        yield
        return
    threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
    _KEEPING.active = True
    try:
        yield
    finally:
        _KEEPING.active = False
        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(verbosity)


def _keeps_callers_settings(func: _F) -> _F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with callers_settings_kept():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_keeps_callers_settings
def search(source: Any, *, out: Path, progress: bool | None = None,
           on_prepared: OnPrepared | None = None, beside: SharedCores | None = None,
           **options: Any) -> SearchSummary:
    """Run (or resume) an Optuna search over nets for ``source``; see ``SearchOptions`` for the options
    (``beside``: ``run_search``'s)."""
    opts = SearchOptions(source=source, out=Path(out), **options)
    show = (not opts.quiet) if progress is None else progress
    made = not opts.out.exists()
    try:
        with live_progress(enabled=show, n_trials=opts.n_trials, time_budget=opts.time_budget) as on_progress:
            return run_search(opts, on_progress=on_progress, on_prepared=on_prepared, beside=beside)
    except BaseException:
        if made and opts.out.is_dir() and not any(opts.out.iterdir()):
            opts.out.rmdir()  # a search refused before it wrote anything leaves no empty run folder behind
        raise


@_keeps_callers_settings
def ensemble(run_dir: Path, *, model_dir: Path | None = None, top_k: int = 5, gbt: bool | BackgroundGBT = True,
             gbt_trials: int = 10, seed: int | None = None, time_budget: float | None = None,
             threads: int | None = None, folds: int | None = None, bag_mode: str = "bag",
             device: str = "auto", bagging_until: float | None = None, jobs: int = 1) -> EnsembleReport:
    """Ensemble the best nets of a finished search (plus XGBoost) and export one model folder.

    ``folds`` > 1 bags the members first and fits the ensemble on their out-of-fold predictions; None (as
    ``automl-dnn ensemble``): chosen from the rows; 1: the validation split only. ``bag_mode`` is what a
    bagged net exports ("bag": its fold models, "refit"), and an unbagged one ("bag": its refit beside its net as
    searched, "refit": the refit alone); ``jobs`` worker processes train the nets' fold
    copies side by side. ``seed`` None is the run's own.
    """
    run_dir = Path(run_dir)
    return ensemble_run(run_dir, model_dir=Path(model_dir) if model_dir else run_dir / "model", top_k=top_k,
                        gbt=gbt, gbt_trials=gbt_trials, seed=seed, time_budget=time_budget, threads=threads,
                        folds=folds, bag_mode=bag_mode, device=device, bagging_until=bagging_until, jobs=jobs)


@_keeps_callers_settings
def fit(source: Any, *, model_dir: Path, out: Path | None = None, time_budget: float | None = None,
        top_k: int = 5, gbt: bool = True, gbt_trials: int | None = None, folds: int | None = None,
        bag_mode: str = "bag", ensemble_share: float | None = None, report_page: bool = False,
        **options: Any) -> tuple[SearchSummary, EnsembleReport]:
    """Search, ensemble and export within ``time_budget`` seconds in total.

    XGBoost is searched in a thread beside the nets, on its own share of the cores (``split_cores``),
    so both model families get the whole search time: on a small machine that beats giving XGBoost
    a slice after the nets, and on a GPU machine the CPU would idle otherwise. The planner
    (``budget``) keeps the rest of the budget for the k-fold bagging (``folds``; None: 5 up to
    100,000 rows, then the validation split), the weights and the export; ``ensemble_share`` overrides
    its share. ``report_page`` writes the report page beside the model (``report_path_for``) in the
    budget's last share; a page that fails is a warning in the report's ``warnings``, not a failed fit.
    """
    started = time.time()
    model_dir = Path(model_dir)
    out = Path(out) if out else model_dir.parent / f"{model_dir.name}-run"
    check_time_budget(time_budget)
    check_whole_numbers(top_k=top_k, gbt_trials=gbt_trials, folds=folds)
    if bag_mode not in BAG_MODES:
        raise AutoDNNError(f"bag mode must be one of {', '.join(BAG_MODES)}, got {bag_mode!r}")
    fields = {f.name for f in dataclasses.fields(SearchOptions)}
    SearchOptions(source=source, out=out, **{k: v for k, v in options.items() if k in fields})  # its checks, early
    check_model_dir(model_dir)  # a non-empty folder that is no model: refused now, not after the whole search
    check_can_create(model_dir, "model folder")  # a bad model path: refused before the search, not after
    return _fit(source, model_dir=model_dir, out=out, started=started, time_budget=time_budget, top_k=top_k,
                gbt=gbt, gbt_trials=gbt_trials, folds=folds, bag_mode=bag_mode, ensemble_share=ensemble_share,
                report_page=report_page, **options)


def _fit(source: Any, *, model_dir: Path, out: Path, started: float, time_budget: float | None, top_k: int,
         gbt: bool, gbt_trials: int | None, folds: int | None, bag_mode: str, ensemble_share: float | None,
         report_page: bool, **options: Any) -> tuple[SearchSummary, EnsembleReport]:
    if report_page:
        check_file_path(report_path_for(model_dir), "report page")  # before the search, not after
    plan = None if time_budget is None else plan_fit(time_budget, report=report_page, ensemble_share=ensemble_share,
                                                     gbt=bool(gbt))
    search_budget = None if plan is None else plan.search
    seed = options.get("seed", 0)
    background, beside = None, None
    if gbt:
        device = options.get("device", "auto")
        if (CORES_BACK_FROM_XGBOOST and options.get("jobs") == AUTO_JOBS and options.get("threads") is None
                and not _on_cuda(device)):
            # XGBoost's thread has half the cores until it is done, and tunes no longer than it keeps up with the
            # nets (gbt.NetsAhead); then the workers a nets-only search would run on its cores join the search.
            _, gbt_threads = split_cores(None, device, 1)  # half the cores
            beside = SharedCores(cores=gbt_threads, free=threading.Event())
        else:
            if options.get("jobs") == AUTO_JOBS:
                options["jobs"] = 1  # XGBoost's thread takes the cores a second worker would
            options["threads"], gbt_threads = split_cores(options.get("threads"), device, options.get("jobs", 1))
        n_trials = gbt_trials or (GBT_TRIALS_ON_BUDGET if time_budget is not None else GBT_TRIALS)
        fits_after, after = gbt_in_thread(folds, seed=seed, threads=gbt_threads) if folds != 1 else (None, None)
        background = BackgroundGBT(n_trials=n_trials, seed=seed, threads=gbt_threads, fits_after=fits_after,
                                   after=after, give_way=beside is not None,
                                   on_done=None if beside is None else beside.free.set)
    # The nets' search ends early enough for their bagging, as its trials' measured times say (``budget``).
    bagging = (BaggingRequest(cap=plan.bagging_cap, folds=folds, top_k=top_k, refit=bag_mode == "refit")
               if plan is not None and folds != 1 else None)
    try:
        summary = search(source, out=out, time_budget=search_budget, bagging=bagging,
                         on_prepared=background.start if background else None, beside=beside, **options)
    except NoTrialInTime as exc:
        summary = _xgboost_alone(exc, background)
    except BaseException:
        if background is not None:
            background.stop()
        raise
    if background is not None and summary.stopped_by == "interrupted":
        background.stop()
    now = time.time()
    left = None if plan is None else max(1.0, plan.search + plan.ensemble - (now - started))
    # The nets bag until the search's own end (XGBoost bags in its thread meanwhile); the weights and
    # the export keep the last ENSEMBLE_SHARE.
    until = None if search_budget is None else time.monotonic() + max(0.0, started + search_budget - now)
    jobs, threads = summary.jobs, summary.threads
    if summary.late:  # the late workers' cores are the bagging's too once XGBoost is done with them
        jobs, threads = (summary.jobs, summary.late_threads) if background and background.done() else (1, threads)
    report = ensemble(out, model_dir=model_dir, top_k=top_k, gbt=background or False, seed=seed,
                      time_budget=left, threads=threads, folds=folds, bag_mode=bag_mode,
                      device=options.get("device", "auto"), bagging_until=until, jobs=jobs)
    background = None  # issue 13: XGBoost's frames (0.4 GB at 1M rows) go before the page reads the table again
    if report_page:
        _write_fit_page(summary, report, options.get("seed", 0), None if plan is None else plan.report)
    return summary, report


def _xgboost_alone(exc: NoTrialInTime, background: BackgroundGBT | None) -> SearchSummary:
    """The budget ended before any net trial completed: what XGBoost's thread finished is still a model, so the fit
    goes on with it alone (the ensemble step says so in a note; the study resumes as ever). Without one, the
    search's error stands."""
    if background is None:
        raise exc
    background.skip_after()  # no net will be bagged: XGBoost's fold copies would serve nothing
    try:
        member = background.result()
    except BaseException:
        background.stop()
        raise
    if member is None:
        raise exc
    return exc.summary


def _write_fit_page(summary: SearchSummary, report: EnsembleReport, seed: int, seconds: float | None) -> None:
    """The report page of a fit, in its share of the budget; the model is written by now, so a page that
    fails is only a warning."""
    page = report_path_for(report.model_dir)
    try:
        report.page = write_report(summary.run_dir, out=page, model_dir=report.model_dir, seed=seed,
                                   time_budget=seconds)
    except AutoDNNError as exc:
        report.warnings.append(f"no report page: {exc}")


def split_cores(threads: int | None, device: str, jobs: int) -> tuple[int | None, int]:
    """Torch threads per search worker and XGBoost threads, when both train at once.

    On CUDA the nets need about one core per worker, XGBoost takes the rest; on CPU they halve the
    cores, unless ``threads`` fixes the nets' share.
    """
    cores = available_cores()
    if _on_cuda(device):
        return threads, max(1, cores - jobs * (threads or 1))
    if threads is not None:
        return threads, max(1, cores - jobs * threads)
    gbt_threads = max(1, cores // 2)
    return max(1, (cores - gbt_threads) // jobs), gbt_threads


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _on_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and _cuda_available())  # "cuda:N" too


def load(model_dir: Path) -> Predictor:
    """Load an exported model folder (verifying hashes and format version); no pickle involved."""
    return load_model(Path(model_dir))


def predict_file(model_dir: Path, data: Any, *, out: Path | None = None, mc_samples: int = 0) -> list[str]:
    """Predict a table with an exported model and write the predictions; returns notes for the user."""
    return _predict_file(Path(model_dir), data, out=Path(out) if out else None, mc_samples=mc_samples)


@_keeps_callers_settings
def write_report(run_dir: Path, *, out: Path | None = None, model_dir: Path | None = None, seed: int = 0,
                 time_budget: float | None = None) -> Path:
    """Write the HTML report page of a run: summary, leaderboard, held-out behaviour, feature importance,
    learning curves, uncertainty and the study. ``model_dir``: the model to describe (default: the one the
    run's last ensemble step exported); ``out``: default RUN_DIR/report.html; ``time_budget``: seconds the
    page may take (its permutation importance shuffles fewer rows to fit them; None: no limit)."""
    run_dir = Path(run_dir)
    RunDir(run_dir).read_spec()  # not a run folder: refused before any folder is made
    out = Path(out) if out else run_dir / "report.html"
    check_file_path(out, "report path")
    make_folder(out.parent, "report folder")
    return write_report_page(run_dir, out, model_dir=Path(model_dir) if model_dir else None, seed=seed,
                             time_budget=time_budget)


def report_path_for(model_dir: Path) -> Path:
    """Where ``fit`` writes its report page: beside the model folder, as MODEL-report.html."""
    model_dir = Path(model_dir)
    return model_dir.parent / f"{model_dir.name}-report.html"


def feature_importance(model_dir: Path, data: Any, *, target: str | None = None, repeats: int = 3,
                       max_rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Permutation importance of an exported model on a table (file, builtin:NAME or DataFrame) holding
    the target column: one row per input column, most important first (see ``Predictor.feature_importance``)."""
    predictor = load_model(Path(model_dir))
    frame = data if isinstance(data, pd.DataFrame) else read_table(data)
    return predictor.feature_importance(frame, target=target, repeats=repeats, max_rows=max_rows, seed=seed)


def serve_dashboard(*, run_dir: Path | None = None, storage: str | None = None, host: str = "127.0.0.1",
                    port: int = 8080, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve optuna-dashboard for a run folder's study (or any storage URL) until interrupted."""
    if run_dir is None and storage is None:
        raise AutoDNNError("give a run folder or --storage URL")
    app = dashboard_app(run_dir=run_dir, storage=storage)

    class _Quiet(WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    try:
        server = make_server(host, port, app, handler_class=_Quiet)
    except OSError as exc:
        raise AutoDNNError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
    url = f"http://{host}:{server.server_port}/dashboard/"
    (on_ready or (lambda u: print(f"optuna-dashboard on {u} (Ctrl-C to stop)")))(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

"""The Python API behind every CLI command: search, ensemble, fit, predict, report, dashboard."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from automl_dnn.errors import AutoDNNError

if TYPE_CHECKING:
    from automl_dnn.assemble import EnsembleReport
    from automl_dnn.export import Predictor
    from automl_dnn.search import SearchSummary

#: Share of a ``fit`` time budget kept for the ensemble step (XGBoost search, weights, export).
ENSEMBLE_SHARE = 0.25


def search(source: Any, *, out: Path, progress: bool | None = None, **options: Any) -> SearchSummary:
    """Run (or resume) an Optuna search over nets for ``source``; see ``SearchOptions`` for the options."""
    from automl_dnn.report import live_progress
    from automl_dnn.search import SearchOptions, run_search

    opts = SearchOptions(source=source, out=Path(out), **options)
    show = (not opts.quiet) if progress is None else progress
    with live_progress(enabled=show, n_trials=opts.n_trials, time_budget=opts.time_budget) as on_progress:
        return run_search(opts, on_progress=on_progress)


def ensemble(run_dir: Path, *, model_dir: Path | None = None, top_k: int = 5, gbt: bool = True,
             gbt_trials: int = 10, seed: int = 0, time_budget: float | None = None,
             threads: int | None = None) -> EnsembleReport:
    """Ensemble the best nets of a finished search (plus XGBoost) and export one model folder."""
    from automl_dnn.assemble import ensemble_run

    run_dir = Path(run_dir)
    return ensemble_run(run_dir, model_dir=Path(model_dir) if model_dir else run_dir / "model", top_k=top_k,
                        gbt=gbt, gbt_trials=gbt_trials, seed=seed, time_budget=time_budget, threads=threads)


def fit(source: Any, *, model_dir: Path, out: Path | None = None, time_budget: float | None = None,
        top_k: int = 5, gbt: bool = True, gbt_trials: int = 10, ensemble_share: float = ENSEMBLE_SHARE,
        **options: Any) -> tuple[SearchSummary, EnsembleReport]:
    """Search, ensemble and export within ``time_budget`` seconds in total (``ensemble_share`` of it after the search)."""
    from automl_dnn.run import check_output_dir

    started = time.time()
    model_dir = Path(model_dir)
    out = Path(out) if out else model_dir.parent / f"{model_dir.name}-run"
    check_output_dir(model_dir, "model folder")  # refuse a bad model path before the search, not after
    search_budget = None if time_budget is None else time_budget * (1 - ensemble_share)
    summary = search(source, out=out, time_budget=search_budget, **options)
    left = None if time_budget is None else max(1.0, time_budget - (time.time() - started))
    report = ensemble(out, model_dir=model_dir, top_k=top_k, gbt=gbt, gbt_trials=gbt_trials,
                      seed=options.get("seed", 0), time_budget=left, threads=options.get("threads"))
    return summary, report


def load(model_dir: Path) -> Predictor:
    """Load an exported model folder (verifying hashes and format version); no pickle involved."""
    from automl_dnn.export import load_model

    return load_model(Path(model_dir))


def predict_file(model_dir: Path, data: Any, *, out: Path | None = None, mc_samples: int = 0) -> list[str]:
    """Predict a table with an exported model and write the predictions; returns notes for the user."""
    from automl_dnn.export import predict_file as _predict_file

    return _predict_file(Path(model_dir), data, out=Path(out) if out else None, mc_samples=mc_samples)


def write_report(run_dir: Path, *, out: Path | None = None) -> Path:
    """Write an HTML report of a run's study."""
    from automl_dnn.report import write_html_report

    from automl_dnn.run import check_output_dir

    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report.html"
    check_output_dir(out.parent, "report folder")
    if out.is_dir():
        raise AutoDNNError(f"report path {str(out)!r} is a folder; give a file name like report.html")
    return write_html_report(run_dir, out)


def serve_dashboard(*, run_dir: Path | None = None, storage: str | None = None, host: str = "127.0.0.1",
                    port: int = 8080, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve optuna-dashboard for a run folder's study (or any storage URL) until interrupted."""
    from automl_dnn.report import dashboard_app

    if run_dir is None and storage is None:
        raise AutoDNNError("give a run folder or --storage URL")
    app = dashboard_app(run_dir=run_dir, storage=storage)
    from wsgiref.simple_server import WSGIRequestHandler, make_server

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

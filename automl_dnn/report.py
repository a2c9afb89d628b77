"""What the user sees: the live search progress, summary tables, the HTML report and the dashboard."""

from __future__ import annotations

import html
import json
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna import visualization as vis
from optuna_dashboard import wsgi
from rich.console import Console
from rich.live import Live
from rich.table import Table

from automl_dnn.ensemble_step import EnsembleReport
from automl_dnn.files import atomic_write
from automl_dnn.run_folder import RunDir
from automl_dnn.search import SearchSummary
from automl_dnn.storage import open_storage
from automl_dnn.study import open_study

console = Console(stderr=True)
out = Console()


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def _note(text: str, style: str = "dim") -> None:
    """One line of user text, printed as is: column names may contain rich markup like [x]."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def live_progress(*, enabled: bool, n_trials: int | None, time_budget: float | None
                  ) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A rich status line: trials done, best value, pruned/failed counts, elapsed/remaining time."""
    if not enabled:
        yield None
        return
    with Live(console=console, refresh_per_second=4, transient=True) as live:

        def update(p: dict[str, Any]) -> None:
            done = p["complete"] + p["pruned"]
            total = f"/{n_trials}" if n_trials else ""
            remaining = f", {p['remaining']:.0f}s left" if p["remaining"] is not None else ""
            live.update(
                f"[bold]trials[/] {done}{total} (complete {p['complete']}, pruned {p['pruned']}, "
                f"failed {p['failed']})  [bold]best[/] {_fmt(p['best'])}  "
                f"[dim]{p['elapsed']:.0f}s elapsed{remaining}[/]"
            )

        yield update


def print_search_summary(summary: SearchSummary, *, quiet: bool = False) -> None:
    """The final table of the best trials and their key hyperparameters."""
    if summary.stopped_by == "interrupted":
        console.print("[yellow]interrupted: finished trials are saved; run the same command again to resume[/]")
    if quiet:
        out.print(f"best {summary.metric}: {_fmt(summary.best[0]['value']) if summary.best else '-'}")
        return
    for note in summary.notes:
        _note(f"note: {note}")
    table = Table(title=f"Best trials of study {summary.study_name!r} ({summary.metric}, {summary.direction})")
    for column in ("trial", summary.metric, "net", "optimizer", "schedule", "epochs"):
        table.add_column(column, justify="right" if column in ("trial", summary.metric, "epochs") else "left")
    for row in summary.best:
        described = {"net": "", "optimizer": "", "schedule": "", **row.get("summary", {})}
        table.add_row(str(row["number"]), _fmt(row["value"]), described["net"], described["optimizer"],
                      described["schedule"], _fmt(row["epochs"]))
    out.print(table)
    out.print(
        f"{summary.n_complete} complete, {summary.n_pruned} pruned, {summary.n_failed} failed trials "
        f"in {summary.seconds:.0f}s; storage {summary.storage}", markup=False, highlight=False, soft_wrap=True
    )


def print_ensemble_report(report: EnsembleReport, *, quiet: bool = False) -> None:
    """The members table and the best single / equal-weight / weighted ensemble rows."""
    for note in getattr(report, "notes", []):
        _note(f"note: {note}")
    for warning in getattr(report, "warnings", []):
        _note(f"warning: {warning}", style="yellow")
    rows = getattr(report, "rows", [])
    inner = getattr(report, "inner", "valid")  # "oof" after k-fold bagging: scores of out-of-fold predictions
    if quiet:
        final = rows[-1] if rows else {}
        out.print(f"ensemble {inner} {_fmt(final.get('valid'))} test {_fmt(final.get('test'))}; "
                  f"model {report.model_dir}")
        return
    table = Table(title=f"Ensemble ({getattr(report, 'metric', '')})")
    columns = list(rows[0].keys()) if rows else []
    for column in columns:
        table.add_column(inner if column == "valid" else column,
                         justify="right" if column in ("valid", "test", "weight") else "left")
    for row in rows:
        table.add_row(*[_fmt(row.get(c)) for c in columns])
    out.print(table)
    out.print(f"model written to {report.model_dir}")


# --- HTML report ----------------------------------------------------------------------------------


def write_html_report(run_dir: Path, path: Path) -> Path:
    """Optimization history, hyperparameter importances, intermediate values and the best configs."""
    spec = RunDir(run_dir).read_spec()
    study = open_study(spec, create=False)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    sections = [f"<h1>automl-dnn study {html.escape(spec['study_name'])}</h1>",
                f"<p>task {spec['task']}, metric {spec['metric']} ({spec['direction']}), "
                f"{len(study.trials)} trials, {len(complete)} complete</p>"]
    plots: list[tuple[str, Callable[[], Any]]] = [
        ("Optimization history", lambda: vis.plot_optimization_history(study)),
        ("Validation metric by percent of planned training", lambda: vis.plot_intermediate_values(study)),
        ("Hyperparameter importances", lambda: vis.plot_param_importances(study)),
    ]
    first = True
    for title, make in plots:
        try:
            with warnings.catch_warnings():  # importances on few trials warn once per parameter
                warnings.simplefilter("ignore")
                figure = make()
        except Exception as exc:  # e.g. importances need >= 2 complete trials
            sections.append(f"<h2>{title}</h2><p>not available: {html.escape(str(exc))}</p>")
            continue
        sections.append(f"<h2>{title}</h2>" + figure.to_html(full_html=False, include_plotlyjs=first))
        first = False
    best = sorted(complete, key=lambda t: t.value, reverse=spec["direction"] == "maximize")[:10]
    rows = "".join(
        f"<tr><td>{t.number}</td><td>{t.value:.6g}</td><td><code>{html.escape(json.dumps(t.params))}</code></td></tr>"
        for t in best
    )
    sections.append(f"<h2>Best configs</h2><table border=1><tr><th>trial</th><th>{spec['metric']}</th>"
                    f"<th>params</th></tr>{rows}</table>")
    page = "<html><head><meta charset='utf-8'><title>automl-dnn report</title></head><body>" + "".join(sections) + "</body></html>"
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def dashboard_app(*, run_dir: Path | None, storage: str | None) -> Any:
    """The optuna-dashboard WSGI app over a run folder's storage (or a storage URL)."""
    url = storage or RunDir(run_dir).read_spec()["storage"]  # type: ignore[arg-type]
    return wsgi(open_storage(url))

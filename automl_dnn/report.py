"""What the user sees in the terminal: the live search progress, the summary tables, and the dashboard app.

The HTML report page is ``report_page``. Tables fit 100 columns: one line per row, long settings cut
with an ellipsis (the report page has them in full).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
from optuna_dashboard import wsgi
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from automl_dnn.ensemble_step import EnsembleReport
from automl_dnn.run_folder import RunDir
from automl_dnn.search import SearchSummary
from automl_dnn.errors import StorageError
from automl_dnn.storage import open_storage, storage_file

PIPED_WIDTH = 100  # columns when the output is not a terminal (a log file), unless COLUMNS says otherwise


def _console(*, stderr: bool = False) -> Console:
    """Rich's console, 100 columns wide when piped: rich's own 80 would cut every score in the tables to "0.…"."""
    made = Console(stderr=stderr)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = PIPED_WIDTH
    return made


console = _console(stderr=True)
out = _console()
SETTINGS_WIDTH = 40  # the settings columns of the tables: the rest of a 100-column line


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
    if summary.best:
        out.print(_best_trials_table(summary))
    else:  # ``fit`` whose budget ended before any net trial completed: XGBoost alone, no empty table
        out.print(f"No trial of study {summary.study_name!r} completed", markup=False, highlight=False, soft_wrap=True)
    out.print(
        f"{summary.n_complete} complete, {summary.n_pruned} pruned, {summary.n_failed} failed trials "
        f"in {summary.seconds:.0f}s; storage {summary.storage}", markup=False, highlight=False, soft_wrap=True
    )


def _best_trials_table(summary: SearchSummary) -> Table:
    """The best trials, one line each, with the settings that tell them apart."""
    table = Table(title=f"Best trials of study {summary.study_name!r} ({summary.metric}, {summary.direction})",
                  box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for column in ("trial", summary.metric, "net", "optimizer", "schedule", "epochs"):
        table.add_column(column, justify="right" if column in ("trial", summary.metric, "epochs") else "left",
                         no_wrap=True, overflow="ellipsis", max_width=SETTINGS_WIDTH if column == "net" else None)
    for row in summary.best:
        described = {"net": "", "optimizer": "", "schedule": "", **row.get("summary", {})}
        table.add_row(str(row["number"]), _fmt(row["value"]), Text(abbreviate(described["net"])),
                      Text(described["optimizer"]), Text(abbreviate(described["schedule"])), _fmt(row["epochs"]))
    return table


def print_ensemble_report(report: EnsembleReport, *, quiet: bool = False) -> None:
    """One line per candidate and per summary row (best single, equal weights, the weighted ensemble)."""
    for note in getattr(report, "notes", []):
        _note(f"note: {note}")
    for warning in getattr(report, "warnings", []):
        _note(f"warning: {warning}", style="yellow")
    rows = getattr(report, "rows", [])
    inner = getattr(report, "inner", "valid")  # "oof" after k-fold bagging: scores of out-of-fold predictions
    if quiet:
        final = rows[-1] if rows else {}
        out.print(f"ensemble {inner} {_fmt(final.get('valid'))} test {_fmt(final.get('test'))}; "
                  f"model {report.model_dir}", markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(ensemble_table(rows, metric=getattr(report, "metric", ""), inner=inner))
        out.print(f"model written to {report.model_dir}", markup=False, highlight=False, soft_wrap=True)
    if getattr(report, "page", None) is not None:  # the last line names the page
        out.print(f"report written to {report.page}", markup=False, highlight=False, soft_wrap=True)


def ensemble_table(rows: list[dict[str, Any]], *, metric: str, inner: str) -> Table:
    """The ensemble's rows as a table that reads at 100 columns: settings abbreviated, never wrapped."""
    table = Table(title=f"Ensemble ({metric}; {inner}: the scores the weights were fitted on)", box=box.SIMPLE_HEAD,
                  title_justify="left", pad_edge=False)
    table.add_column("model", no_wrap=True)
    table.add_column("settings", no_wrap=True, overflow="ellipsis", max_width=SETTINGS_WIDTH)
    for column in (inner, "test", "weight"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(Text(_short_name(row["model"])), Text(abbreviate(row.get("details") or "", SETTINGS_WIDTH)),
                      _fmt(row.get("valid")), _fmt(row.get("test")), _fmt(row.get("weight"), 3))
    return table


#: Shorter words for the settings column; the report page keeps the full text.
ABBREVIATIONS = (("flat_cosine", "flatcos"), ("onecycle", "1cyc"), ("cosine", "cos"), ("alpha-drop", "adrop"),
                 ("leaky_relu", "lrelu"), ("quantile", "quant"), ("momentum", "mom"), (" rounds", "r"),
                 ("depth ", "d"), ("tabm k=", "tabm"), (", ", " "))


def abbreviate(text: str, width: int = SETTINGS_WIDTH) -> str:
    """The settings in at most ``width`` characters: common words shortened, then cut with an ellipsis."""
    for long, short in ABBREVIATIONS:
        text = text.replace(long, short)
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def _short_name(name: str) -> str:
    """Summary rows' names, short: ``best single model (net-00012)`` -> ``best single (net-00012)``."""
    return name.replace("best single model", "best single").replace("equal-weight average", "equal weights")


def print_importance(table: pd.DataFrame, *, limit: int | None = None) -> None:
    """Permutation importance: one line per column, most important first, with its spread."""
    metric = table.attrs.get("metric", "score")
    shown = table if limit is None else table.head(limit)
    out.print(f"Permutation importance: the drop in {metric} when a column is shuffled ({table.attrs.get('rows', '?')} "
              f"rows, {table.attrs.get('repeats', '?')} repeats; baseline {_fmt(table.attrs.get('baseline'))})",
              markup=False, highlight=False, soft_wrap=True)
    result = Table(box=box.SIMPLE_HEAD)
    result.add_column("feature", no_wrap=True, overflow="ellipsis", max_width=40)
    result.add_column("importance", justify="right")
    result.add_column("std", justify="right")
    for row in shown.itertuples():
        result.add_row(Text(str(row.feature)), _fmt(float(row.importance)), _fmt(float(row.std)))
    out.print(result)


# --- dashboard ------------------------------------------------------------------------------------


def dashboard_app(*, run_dir: Path | None, storage: str | None) -> Any:
    """The optuna-dashboard WSGI app over a run folder's storage (or a storage URL)."""
    url = storage or RunDir(run_dir).read_spec()["storage"]  # type: ignore[arg-type]
    file = storage_file(url)
    if file is not None and not file.is_file():  # opening it would create an empty study file: a blank dashboard
        raise StorageError(f"no study storage at '{file}'; give the storage a search wrote (the \"storage\" of its "
                           "run.json), or its run folder")
    return wsgi(open_storage(url))

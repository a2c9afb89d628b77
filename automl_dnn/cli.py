"""The ``automl-dnn`` command: a thin Click shell over ``automl_dnn.api``.

Heavy libraries (torch, optuna, xgboost, pandas) are imported inside the commands, so that
``automl-dnn --help`` starts instantly. A user error (``AutoDNNError``) prints one line and exits 2;
so does a bad option or argument (Click's usage errors, shown as ``error: ...`` without the usage
block). Anything else is a bug: one line and exit 1, with the traceback under ``--debug``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from automl_dnn import tasks
from automl_dnn.errors import AutoDNNError, PathError
from automl_dnn.paths import check_file_path, check_folder_path

#: numpy, scikit-learn and XGBoost take seeds in [0, 2**32 - 1]; a negative one crashed them mid-run.
SEED = click.IntRange(0, 2**32 - 1)


class PositiveFloat(click.ParamType):
    """A number of seconds > 0 (``--time-budget``): refuses 0, negatives and text in one line."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not number > 0 or number == float("inf"):
            self.fail(f"must be a number of seconds > 0, got {value!r}", param, ctx)
        return number


class Workers(click.ParamType):
    """``--jobs``: a number of worker processes >= 1, or ``auto``."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if value == "auto":
            return value
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if number < 1:
            self.fail(f"must be a whole number >= 1 or 'auto', got {value!r}", param, ctx)
        return number


class OutputFolder(click.ParamType):
    """A folder to create or reuse: refuses an existing file, or a path under a file, before any work."""

    name = "folder"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = value if isinstance(value, Path) else Path(value)
        try:
            check_folder_path(path, "folder")
        except PathError as exc:
            self.fail(str(exc), param, ctx)
        return path


class OutputFile(click.ParamType):
    """A file to write: refuses an existing folder, or a path under a file, before any work."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = value if isinstance(value, Path) else Path(value)
        try:
            check_file_path(path, "file")
        except PathError as exc:
            self.fail(str(exc), param, ctx)
        return path


def _one_line(text: str) -> str:
    """A message on one line: a user sees one line per error or note, whatever the message holds."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class _OneLineError(click.ClickException):
    """A Click error (bad option value, missing argument, unknown command) printed as ``error: ...``."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _as_one_line(exc: click.ClickException) -> click.ClickException:
    """Click's usage errors print a usage block, a hint and the message; keep the message, on one line."""
    if isinstance(exc, _OneLineError) or isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        return exc  # bare `automl-dnn` shows the help, as Click does
    message = _one_line(exc.format_message()) or type(exc).__name__
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message = f"{message.rstrip('.')} (see '{ctx.command_path} --help')"
    new = _OneLineError(message)
    new.exit_code = exc.exit_code
    return new


def _fraction(low_inclusive: bool) -> click.FloatRange:
    return click.FloatRange(0.0, 1.0, min_open=not low_inclusive, max_open=True)


def search_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``search`` and ``fit``."""
    options = [
        click.option("--target", help="Target column (bundled datasets know their own)."),
        click.option("--task", type=click.Choice(("auto", *tasks.TASKS)), default="auto", show_default=True,
                     help="Override the inferred task."),
        click.option("--space", default="default", show_default=True,
                     help="Search space: a bundled name (default, selu, quick) or a .yaml file."),
        click.option("--time-budget", type=PositiveFloat(),
                     help="Wall-clock seconds for the whole command (default: a 600 s search, unless --n-trials "
                          "is given)."),
        click.option("--n-trials", type=click.IntRange(min=1),
                     help="Stop when the study has this many completed + pruned trials."),
        click.option("--metric", type=click.Choice(list(tasks.METRICS)),
                     help="Selection metric (default: logloss for classification, rmse for regression)."),
        click.option("--storage", help="Optuna storage URL (default: a SQLite file in the run folder; a journal "
                                        "file for several workers)."),
        click.option("--study", "study_name", help="Study name (default: the run folder's name)."),
        click.option("--artifacts", type=OutputFolder(),
                     help="Where trials store weights and predictions (default: RUN_DIR/artifacts)."),
        click.option("--jobs", type=Workers(), default="auto", show_default=True,
                     help="Worker processes on this machine. auto: one per core (at most 4) on a CPU when the "
                          "nets have the cores to themselves and the run is bounded by time (30 s or more); else 1."),
        click.option("--threads", type=click.IntRange(min=1), help="Torch threads per worker."),
        click.option("--valid-size", type=_fraction(False), default=0.15, show_default=True),
        click.option("--groups", help="A column whose rows belong together (a patient, a customer): not a feature; "
                                       "every split and fold keeps a group's rows on one side."),
        click.option("--time-column", help="A column that orders the rows in time (a date): the test split is the "
                                            "latest rows, validation the ones before, the folds are periods."),
        click.option("--categorical", multiple=True, metavar="COLUMN",
                     help="A column of codes to read as categories, not numbers (zip codes, store numbers); "
                          "repeat for several."),
        click.option("--cv-folds", type=click.IntRange(min=1), default=None,
                     help="A trial's value is its mean over K folds of the training + validation rows "
                          "(default: 5 below 2,000 such rows, else 1: the validation split)."),
        click.option("--test-size", type=_fraction(True), default=0.15, show_default=True),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--amp/--no-amp", default=None,
                     help="bf16 autocast in the training steps (validation and predictions stay float32). "
                          "Default: on for a CPU with native bf16 (AVX512-BF16, AMX), off on CUDA."),
        click.option("--pruner", type=click.Choice(["halving", "hyperband", "median", "none"]), default="halving",
                     show_default=True, help="Prunes on the percent of each trial's planned training done."),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--quiet", is_flag=True, help="No progress display."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _Group(click.Group):
    """Turns user errors into one line and exit status 2, bugs into one line and exit 1 (``--debug``: traceback)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:  # the group's own options (e.g. an unknown one before the command)
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            raise _as_one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except AutoDNNError as exc:
            if debug:
                raise
            click.echo(f"error: {_one_line(str(exc)) or type(exc).__name__}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except click.ClickException as exc:  # the command's options and arguments
            raise _as_one_line(exc) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug: keep it short unless asked
            if debug:
                raise
            click.echo(f"internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                       "(rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="automl-dnn")
@click.option("--debug", is_flag=True, help="Show Python tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Find a good deep neural network for a tabular dataset, then beat it by ensembling."""
    ctx.obj = {"debug": debug}


@cli.command()
def datasets() -> None:
    """List the bundled datasets (use them as builtin:NAME)."""
    from automl_dnn.data import BUILTINS

    for info in BUILTINS.values():
        click.echo(f"builtin:{info.name:<15} {info.task:<11} target={info.target:<8} {info.description}")


@cli.command()
@click.argument("data")
@click.option("--out", "out", required=True, type=OutputFolder(), help="Run folder.")
@search_options
def search(data: str, out: Path, **options: Any) -> None:
    """Search nets for DATA (a CSV/TSV/Parquet file or builtin:NAME) with an Optuna study."""
    from automl_dnn import api
    from automl_dnn.report import print_search_summary

    summary = api.search(data, out=out, **options)
    print_search_summary(summary, quiet=options["quiet"])
    if summary.stopped_by == "interrupted":
        sys.exit(130)


def bagging_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--folds and --bag/--refit, shared by ``ensemble`` and ``fit``."""
    command = click.option("--bag/--refit", "bag", default=True, show_default=True,
                           help="What a bagged net exports: the average of its fold models, or one refit "
                                "on every training + validation row. Unbagged: its refit beside its net as "
                                "searched, or the refit alone.")(command)
    return click.option("--folds", type=click.IntRange(min=1), default=None,
                        help="K-fold bagging: members, weights and threshold fitted on out-of-fold predictions "
                             "(default: 5 up to 100,000 rows and as the budget allows; 1: the validation "
                             "split).")(command)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=OutputFolder(), help="Model folder (default: RUN_DIR/model).")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Most nets in the ensemble.")
@click.option("--no-gbt", is_flag=True, help="Leave XGBoost out.")
@click.option("--gbt-trials", type=click.IntRange(min=1), default=10, show_default=True)
@bagging_options
@click.option("--seed", type=SEED, default=None, help="Seed of the folds, XGBoost and the weights (default: the run's "
              "own, so that a rerun goes on from its kept work).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the bagged nets train.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes that train the nets' fold copies side by side.")
@click.option("--quiet", is_flag=True)
def ensemble(run_dir: Path, model_dir: Path | None, top_k: int, no_gbt: bool, gbt_trials: int, folds: int | None,
             bag: bool, seed: int | None, device: str, jobs: int, quiet: bool) -> None:
    """Ensemble the best nets of a search with XGBoost and export one model."""
    from automl_dnn import api
    from automl_dnn.report import print_ensemble_report

    report = api.ensemble(run_dir, model_dir=model_dir, top_k=top_k, gbt=not no_gbt, gbt_trials=gbt_trials,
                          seed=seed, folds=folds, bag_mode="bag" if bag else "refit", device=device, jobs=jobs)
    print_ensemble_report(report, quiet=quiet)


@cli.command()
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=OutputFolder(), help="Model folder to write.")
@click.option("--out", "out", type=OutputFolder(), help="Run folder (default: MODEL-run, beside MODEL).")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--no-gbt", is_flag=True)
@click.option("--gbt-trials", type=click.IntRange(min=1),
              help="XGBoost trials at most (default: as many as --time-budget allows, else 10).")
@click.option("--report/--no-report", "write_page", default=True, show_default=True,
              help="Write the HTML report page beside the model, as MODEL-report.html.")
@bagging_options
@search_options
def fit(data: str, model_dir: Path, out: Path | None, top_k: int, no_gbt: bool, gbt_trials: int | None,
        write_page: bool, folds: int | None, bag: bool, **options: Any) -> None:
    """Search, ensemble and export in one go, within --time-budget seconds in total."""
    from automl_dnn import api
    from automl_dnn.report import print_ensemble_report, print_search_summary

    summary, report = api.fit(data, model_dir=model_dir, out=out, top_k=top_k, gbt=not no_gbt,
                              gbt_trials=gbt_trials, folds=folds, bag_mode="bag" if bag else "refit",
                              report_page=write_page, **options)
    print_search_summary(summary, quiet=options["quiet"])
    print_ensemble_report(report, quiet=options["quiet"])


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.option("--out", "out", type=OutputFile(), help="CSV or Parquet file (default: standard output).")
@click.option("--mc-samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="MC-dropout passes: adds the mean and standard deviation per output.")
def predict(model_dir: Path, data: str, out: Path | None, mc_samples: int) -> None:
    """Predict DATA with an exported model."""
    from automl_dnn import api

    notes = api.predict_file(model_dir, data, out=out, mc_samples=mc_samples)
    for note in notes:
        click.echo(f"note: {_one_line(note)}", err=True)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Model folder to describe (default: the one the run's last ensemble step exported).")
@click.option("--out", "out", type=OutputFile(), help="HTML file (default: RUN_DIR/report.html).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the permutation importance.")
def report(run_dir: Path, model_dir: Path | None, out: Path | None, seed: int) -> None:
    """Write one HTML page on a run: summary, leaderboard, held-out behaviour, feature importance, learning
    curves, MC-dropout uncertainty and the study."""
    from automl_dnn import api

    path = api.write_report(run_dir, out=out, model_dir=model_dir, seed=seed)
    click.echo(f"wrote {path}")


@cli.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.argument("data")
@click.option("--target", help="The column of true values (default: the model's target).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Shuffles per column.")
@click.option("--max-rows", type=click.IntRange(min=2), default=2000, show_default=True,
              help="Rows used at most (a seeded sample).")
@click.option("--seed", type=SEED, default=0, show_default=True)
def importance(model_dir: Path, data: str, target: str | None, repeats: int, max_rows: int, seed: int) -> None:
    """Permutation importance of an exported model's input columns on DATA (which holds the target)."""
    from automl_dnn import api
    from automl_dnn.report import print_importance

    print_importance(api.feature_importance(model_dir, data, target=target, repeats=repeats, max_rows=max_rows,
                                            seed=seed))


@cli.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--storage", help="Optuna storage URL instead of a run folder.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(run_dir: Path | None, storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard for a run's study."""
    from automl_dnn import api

    api.serve_dashboard(run_dir=run_dir, storage=storage, host=host, port=port)


def main() -> None:
    """Console entry point."""
    cli(prog_name="automl-dnn")

"""The ``automl-dnn`` command: help, version, datasets, a light import, one-line errors, the happy path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from automl_dnn.data import BUILTINS
from automl_dnn.errors import DataError
from tests.conftest import assert_one_line_error, invoke, lines_of, no_trial_completes, sha256

SUBCOMMANDS = ("datasets", "search", "ensemble", "fit", "predict", "report", "importance", "dashboard")


@pytest.mark.parametrize("args", [["--help"], ["-h"], *([name, "--help"] for name in SUBCOMMANDS)],
                         ids=lambda args: " ".join(args))
def test_help_exits_0(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("command", ["search", "fit"])
def test_the_help_names_the_search_s_default_time_budget(command: str) -> None:
    """Without --time-budget or --n-trials a search takes DEFAULT_TIME_BUDGET; the help did not say so."""
    from automl_dnn.search import DEFAULT_TIME_BUDGET

    help_text = " ".join(invoke(command, "--help").output.split())
    assert f"--time-budget SECONDS Wall-clock seconds for the whole command (default: a {DEFAULT_TIME_BUDGET:.0f} s " \
           "search, unless --n-trials is given)" in help_text


def test_no_arguments_shows_the_help() -> None:
    result = invoke()
    assert "Commands:" in result.output and "error" not in result.output.lower()
    for name in SUBCOMMANDS:
        assert name in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert version("automl-dnn") in result.output


def test_datasets_lists_the_four_builtins() -> None:
    result = invoke("datasets")
    assert result.exit_code == 0, result.output
    lines = lines_of(result)
    assert len(lines) == 4 == len(BUILTINS)
    assert sorted(line.split()[0] for line in lines) == sorted(f"builtin:{name}" for name in
                                                               ("breast_cancer", "digits", "wine", "diabetes"))


def test_importing_the_cli_imports_no_heavy_library() -> None:
    code = ("import automl_dnn.cli, sys; "
            "print([m for m in ('torch', 'optuna', 'xgboost', 'pandas') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_importing_the_package_makes_idle_openmp_threads_wait_passively(given: str | None, expected: str) -> None:
    """The CLI, the Python API and the estimators all import the package before torch and XGBoost; a user's own
    OMP_WAIT_POLICY wins."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({} if given is None else
                                                                           {"OMP_WAIT_POLICY": given})
    code = "import automl_dnn, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.strip() == expected, out.stderr


def test_the_api_ensemble_defaults_are_the_cli_ensemble_defaults() -> None:
    """`api.ensemble` is what `automl-dnn ensemble` runs: called without options it must bag as the command does
    (it defaulted to the validation split only)."""
    import inspect

    from automl_dnn import api
    from automl_dnn.cli import cli

    command = {p.name: p.default for p in cli.commands["ensemble"].params}
    signature = inspect.signature(api.ensemble).parameters
    for option in ("top_k", "gbt_trials", "folds", "seed", "device", "jobs"):
        assert signature[option].default == command[option], option


# --- Click's own errors: one line too ------------------------------------------------------------


USAGE_ERRORS = [
    (["bogus"], ["no such command 'bogus'"]),
    (["--bogus"], ["no such option", "--bogus"]),
    (["search", "--bogus"], ["no such option", "--bogus", "search --help"]),
    (["search"], ["missing argument 'DATA'"]),
    (["search", "data.csv"], ["missing option '--out'"]),
    (["search", "data.csv", "--out", "run", "--n-trials", "0"], ["--n-trials"]),
    (["search", "data.csv", "--out", "run", "--task", "bogus"], ["--task", "bogus"]),
    (["search", "data.csv", "--out", "run", "--valid-size", "1.5"], ["--valid-size"]),
    (["search", "data.csv", "--out", "run", "--jobs", "two"], ["--jobs", "two", "or 'auto'"]),
    (["fit", "data.csv", "--model", "m", "--jobs", "0"], ["--jobs", "'0'"]),
    (["fit", "data.csv", "--model", "m", "--metric", "f1"], ["--metric", "f1"]),
    (["predict", "model"], ["missing argument 'DATA'"]),
    (["predict", "model", "data.csv", "--mc-samples", "-1"], ["--mc-samples"]),
    (["ensemble", "run", "--top-k", "0"], ["--top-k"]),
    (["dashboard", "--port", "0"], ["--port"]),
]


@pytest.mark.parametrize("args, needles", USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line(args: list[str], needles: list[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(invoke(*args), *needles)
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


# --- bugs and --debug ------------------------------------------------------------------------------


def test_user_error_with_debug_keeps_the_traceback(tmp_path: Path) -> None:
    args = ["search", tmp_path / "missing.csv", "--target", "y", "--out", tmp_path / "run"]
    assert_one_line_error(invoke(*args), "not found")
    result = invoke("--debug", *args)
    assert isinstance(result.exception, DataError)


def test_a_bug_is_one_line_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("automl_dnn.api.search", broken)
    args = ["search", "builtin:wine", "--out", tmp_path / "run"]
    result = invoke(*args)
    assert result.exit_code == 1
    assert lines_of(result) == ["internal error: RuntimeError: boom second line "
                                "(rerun with --debug for the traceback)"]
    assert isinstance(invoke("--debug", *args).exception, RuntimeError)


def test_ctrl_c_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("automl_dnn.api.search", interrupted)
    result = invoke("search", "builtin:wine", "--out", tmp_path / "run")
    assert result.exit_code == 130 and lines_of(result) == ["interrupted"]


# --- the happy path on the shared fitted model --------------------------------------------------------


def _predict_csv(model: Path, data: Path, *extra: object) -> pd.DataFrame:
    result = invoke("predict", model, data, *extra)
    assert result.exit_code == 0, result.output
    return pd.read_csv(io.StringIO(result.stdout))


def test_fit_then_predict_one_row_per_input_row_in_order(fitted: SimpleNamespace, tmp_path: Path) -> None:
    features = fitted.frame.drop(columns="y")
    data = tmp_path / "new.csv"
    features.to_csv(data, index=False)
    digest = sha256(data)
    pred = _predict_csv(fitted.model, data)
    assert list(pred.columns) == ["prediction", "proba_no", "proba_yes"]
    assert len(pred) == len(features)
    assert set(pred["prediction"]) <= {"no", "yes"}
    np.testing.assert_allclose(pred[["proba_no", "proba_yes"]].sum(axis=1), 1.0, atol=1e-6)
    reversed_data = tmp_path / "reversed.csv"
    features.iloc[::-1].to_csv(reversed_data, index=False)
    rev = _predict_csv(fitted.model, reversed_data)
    np.testing.assert_allclose(rev["proba_yes"].to_numpy()[::-1], pred["proba_yes"].to_numpy(), rtol=1e-5)
    assert sha256(data) == digest


def test_predict_writes_a_file_and_mc_dropout_columns(fitted: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "pred.csv"
    result = invoke("predict", fitted.model, fitted.data, "--out", out, "--mc-samples", 2)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert len(pred) == len(fitted.frame)
    assert {"proba_yes", "proba_yes_std"} <= set(pred.columns)
    assert "note: dropped the target column 'y' from the input" in lines_of(result)


def test_ensemble_and_report_on_a_finished_run(fitted: SimpleNamespace, tmp_path: Path) -> None:
    model = tmp_path / "model2"
    result = invoke("ensemble", fitted.run, "--model", model, "--no-gbt", "--quiet")
    assert result.exit_code == 0, result.output
    spec = json.loads((model / "model.json").read_text())
    assert spec["task"] == "binary" and spec["classes"] == ["no", "yes"]
    html = tmp_path / "report.html"
    result = invoke("report", fitted.run, "--out", html)
    assert result.exit_code == 0, result.output
    assert html.is_file() and f"wrote {html}" in result.output


def test_fit_whose_budget_ends_before_any_net_trial_exports_xgboost_alone(tmp_path: Path, tiny_space: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The wide table on one core: no net trial completed, XGBoost's did. `fit` says so in a note, prints the search's
    counts without an empty table and exports XGBoost, which `predict` reads; `ensemble` on that run has no net to
    ensemble and `fit --no-gbt` nothing to export: each keeps its one-line error."""
    no_trial_completes(monkeypatch)
    fit = ["fit", "builtin:breast_cancer", "--space", tiny_space, "--time-budget", 600, "--gbt-trials", 1, "--folds", 1,
           "--jobs", 1, "--threads", 1, "--no-report"]
    result = invoke(*fit, "--out", tmp_path / "run", "--model", tmp_path / "model")
    assert result.exit_code == 0, result.output
    lines = lines_of(result)
    assert any(line.startswith("note: no net trial completed within the time budget, so the model is XGBoost alone")
               for line in lines), result.output
    assert "No trial of study 'run' completed" in lines and "Best trials" not in result.output
    assert any(line.startswith("0 complete, 1 pruned, 0 failed trials") for line in lines)
    assert any(line.split()[:2] == ["weighted", "ensemble"] for line in lines)
    pred = _predict_csv(tmp_path / "model", "builtin:breast_cancer")
    assert len(pred) == 569 and list(pred.columns) == ["prediction", "proba_0", "proba_1"]
    assert_one_line_error(invoke("ensemble", tmp_path / "run", "--model", tmp_path / "model2"),
                          "no completed trial", "run `automl-dnn search` first")
    assert not (tmp_path / "model2").exists()
    assert_one_line_error(invoke(*fit, "--out", tmp_path / "run3", "--model", tmp_path / "model3", "--no-gbt"),
                          "the time budget ended before any trial completed (1 cut short)")


@pytest.mark.parametrize(("flag", "amp"), [("--no-amp", False), ("--amp", True)])
def test_amp_flags_reach_the_trials_settings(tmp_path: Path, tiny_space: Path, flag: str, amp: bool) -> None:
    result = invoke("search", "builtin:breast_cancer", "--out", tmp_path / "run", "--space", tiny_space,
                    "--n-trials", 1, flag, "--quiet")
    assert result.exit_code == 0, result.output
    (config,) = (tmp_path / "run" / "artifacts").glob("*/config.json")
    assert json.loads(config.read_text())["settings"]["train"]["amp"] is amp

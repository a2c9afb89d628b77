"""Issue 6, item 4 ("Bad input"): every bad input is one line ``error: ...`` and exit status 2 (no
traceback without --debug); odd but valid inputs simply work, with a one-line note where something
was changed; the input data file is never modified.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pandas as pd
import pytest
from click.testing import Result

from automl_dnn import api
from automl_dnn.data import load_dataset
from automl_dnn.errors import AutoDNNError, DataError
from tests.conftest import POLL_LIMIT, TINY_SPACE, assert_one_line_error, invoke, lines_of, sha256, toy_frame

REPORT_BUG = "report.py"


def _search(tmp_path: Path, space: Path, data: object, *extra: object, target: str | None = "y",
            out: Path | None = None) -> Result:
    args: list[object] = ["search", data, "--out", out or tmp_path / "run", "--space", space, "--n-trials", 1,
                          "--quiet", *extra]
    if target is not None:
        args += ["--target", target]
    return invoke(*args)


# --- data files that cannot be used -------------------------------------------------------------------


def _zip_file(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("sheet.csv", toy_frame(20).to_csv(index=False))


DATA_FILES: list[tuple[str, str, Callable[[Path], object] | None, list[str]]] = [
    ("missing file", "nope.csv", None, ["not found", "nope.csv"]),
    ("empty file", "empty.csv", lambda p: p.write_bytes(b""), ["empty"]),
    ("only blank lines", "blank.csv", lambda p: p.write_text("\n \n\n"), ["empty"]),
    ("header only", "header.csv", lambda p: p.write_text("a,b,y\n"), ["no rows"]),
    ("binary garbage", "garbage.csv", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), ["binary"]),
    ("binary without NUL bytes", "noise.csv", lambda p: p.write_bytes(bytes(range(1, 256)) * 30), ["binary"]),
    ("xlsx named .csv", "book.csv", _zip_file, ["zip", "xlsx"]),
    ("HTML page", "page.csv", lambda p: p.write_text("<!DOCTYPE html>\n<html><body>404</body></html>\n"), ["html"]),
    ("Parquet named .csv", "table.csv", lambda p: toy_frame(20).to_parquet(p), ["parquet"]),
    ("unsupported extension", "data.xlsx", lambda p: p.write_text("a,y\n1,2\n"), ["unsupported file type", ".xlsx"]),
    ("a folder", "folder.csv", lambda p: p.mkdir(), ["directory"]),
    ("damaged gzip", "data.csv.gz", lambda p: p.write_bytes(b"\x1f\x8b\x08\x00broken"), ["gzip"]),
    ("ragged rows", "ragged.csv", lambda p: p.write_text("a,b,y\n1,2,x\n3,4\n5,6,z,7,8\n"), ["same number of fields"]),
]


@pytest.mark.parametrize("name, filename, make, needles", DATA_FILES, ids=[case[0] for case in DATA_FILES])
def test_unusable_data_file(name: str, filename: str, make: Callable[[Path], object] | None, needles: list[str],
                            tmp_path: Path, tiny_space: Path) -> None:
    path = tmp_path / filename
    if make is not None:
        make(path)
    assert_one_line_error(_search(tmp_path, tiny_space, path), *needles)


def test_unknown_builtin(tmp_path: Path, tiny_space: Path) -> None:
    assert_one_line_error(_search(tmp_path, tiny_space, "builtin:iris", target=None), "unknown built-in", "wine")


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "data.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_target_absent_lists_close_matches(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame().rename(columns={"y": "label"}))
    assert_one_line_error(_search(tmp_path, tiny_space, data, target="lable"), "'lable' not found",
                          "did you mean 'label'")
    assert_one_line_error(_search(tmp_path, tiny_space, data, target="zzz"), "'zzz' not found",
                          "columns: 'a', 'b', 'c', 'd', 'label'")
    assert_one_line_error(_search(tmp_path, tiny_space, data, target=None), "--target", "'label'")


TARGETS = [
    ("target all missing", [np.nan] * 40, [], ["no values", "all 40 rows are missing"]),
    ("one class only", ["yes"] * 40, [], ["single value 'yes'"]),
    ("fewer rows than the split needs", ["a", "b"] * 3, [], ["too few rows", "6 rows"]),
    ("regression on strings", ["yes", "no"] * 20, ["--task", "regression"], ["--task regression needs numbers"]),
    ("regression target beyond float32", [1e39, 2.0] * 20, ["--task", "regression"], ["beyond +-3.4e38", "rescale"]),
    ("binary with 3 classes", ["a", "b", "c", "d"] * 10, ["--task", "binary"], ["exactly 2 classes"]),
    ("regression metric for classes", ["yes", "no"] * 20, ["--metric", "rmse"], ["metric", "rmse"]),
    ("no training rows left", ["yes", "no"] * 20, ["--valid-size", "0.5", "--test-size", "0.5"],
     ["valid_size + test_size"]),
    ("roc_auc on a validation split of one class", ["no"] * 39 + ["yes"], ["--metric", "roc_auc", "--cv-folds", "1"],
     ["--metric roc_auc cannot score the validation split", "class 'yes' has 1 of the 34", "--metric logloss"]),
    ("roc_auc on a fold of one class", ["no"] * 38 + ["yes"] * 2, ["--metric", "roc_auc", "--cv-folds", "3"],
     ["--metric roc_auc cannot score a fold of the 3-fold cross-validation", "class 'yes' has 2"]),
]


@pytest.mark.parametrize("name, target_values, extra, needles", TARGETS, ids=[case[0] for case in TARGETS])
def test_unusable_target(name: str, target_values: list, extra: list[str], needles: list[str], tmp_path: Path,
                         tiny_space: Path) -> None:
    frame = toy_frame(len(target_values)).assign(y=target_values)
    assert_one_line_error(_search(tmp_path, tiny_space, _csv(tmp_path, frame), *extra), *needles)
    assert not (tmp_path / "run").exists()  # a refused search left its run folder behind, empty


# --- search spaces ---------------------------------------------------------------------------------


SPACES = [
    ("unknown top-level key", TINY_SPACE + "bogus: 1\n", ["unknown key 'bogus'"]),
    ("unknown setting", TINY_SPACE + "  n_layer: 2\n", ["unknown key 'n_layer'", "did you mean 'n_layers'"]),
    ("misspelt parameter key", TINY_SPACE + "  dropout: {low: 0.0, high: 0.3, lgo: true}\n", ["unknown key 'lgo'"]),
    ("empty choice", TINY_SPACE + "  activation: {choices: []}\n", ["'activation'", "non-empty list"]),
    ("low > high", TINY_SPACE.replace("  lr: 0.01\n", "  lr: {low: 0.1, high: 0.01}\n"), ["'lr'", "low <= high"]),
    ("log range including 0", TINY_SPACE.replace("  lr: 0.01\n", "  lr: {low: 0.0, high: 0.1, log: true}\n"),
     ["'lr'", "log range must be > 0"]),
    ("a setting the data sets", TINY_SPACE + "  embedded_columns: [0]\n",  # was kept silently, then overwritten
     ["'embedded_columns'", "set by the search from the data"]),
    ("a setting the data sets, as a field", TINY_SPACE + "  cards: {value: [3], field: categorical_cardinalities}\n",
     ["'categorical_cardinalities'", "set by the search from the data"]),
    ("not YAML", "params: [unclosed\n", ["not valid YAML"]),
    ("no params", "name: empty\n", ["'params'"]),
]


@pytest.mark.parametrize("name, text, needles", SPACES, ids=[case[0] for case in SPACES])
def test_bad_search_space(name: str, text: str, needles: list[str], tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    data = _csv(tmp_path, toy_frame(40))
    assert_one_line_error(_search(tmp_path, space, data), "search space", *needles)


def test_missing_or_unknown_search_space(tmp_path: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    assert_one_line_error(_search(tmp_path, tmp_path / "nope.yaml", data), "'", "nope.yaml", "does not exist")
    assert_one_line_error(_search(tmp_path, "fancy", data), "unknown search space 'fancy'", "default")


def test_impossible_setting_value_is_refused_before_any_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automl_dnn.workers.MAX_FAILURES_IN_A_ROW", 1)  # keep the failing search short
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE.replace("  d_hidden: 8\n", "  d_hidden: -3\n"))
    assert_one_line_error(_search(tmp_path, space, _csv(tmp_path, toy_frame(40))), "search space", "d_hidden")


def test_failed_trials_print_no_traceback(tmp_path: Path, tiny_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automl_dnn.workers.MAX_FAILURES_IN_A_ROW", 1)

    def fail(*args: object, **kwargs: object) -> None:
        raise ValueError("this trial cannot train")

    monkeypatch.setattr("automl_dnn.objective.train", fail)
    # Optuna's log handler keeps the stderr of the moment Optuna was first imported; write to the current
    # one, as in a real `automl-dnn` process.
    import logging

    import optuna  # noqa: F401  (sets up its handler first, so the patch below replaces it)

    class CurrentStderr(logging.StreamHandler):
        @property  # type: ignore[override]
        def stream(self) -> object:
            return sys.stderr

        @stream.setter
        def stream(self, value: object) -> None:
            pass

    monkeypatch.setattr(logging.getLogger("optuna"), "handlers", [CurrentStderr()])
    result = _search(tmp_path, tiny_space, _csv(tmp_path, toy_frame(40)))
    assert_one_line_error(result, "trials failed", "this trial cannot train")


# --- storage -------------------------------------------------------------------------------------------


def test_bad_storage_url(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    assert_one_line_error(_search(tmp_path, tiny_space, data, "--storage", "foo://bar"), "bad storage URL 'foo://bar'")


def test_unreachable_database(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    url = "postgresql://automl:s3cret@127.0.0.1:1/automl"
    line = assert_one_line_error(_search(tmp_path, tiny_space, data, "--storage", url), "storage", "127.0.0.1:1")
    assert "s3cret" not in line


def test_a_bad_storage_url_does_not_stick_to_the_run_folder(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    assert_one_line_error(_search(tmp_path, tiny_space, data, "--storage", "foo://bar"), "storage")
    result = _search(tmp_path, tiny_space, data)
    assert result.exit_code == 0, result.output


def test_journal_storage_on_a_file_that_is_not_a_journal(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    digest = sha256(data)
    result = _search(tmp_path, tiny_space, data, "--storage", f"journal:///{data.resolve()}")
    assert sha256(data) == digest
    assert_one_line_error(result, "storage")


# --- time budget and output paths ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["search", "fit"])
@pytest.mark.parametrize("budget", ["0", "-5", "abc", "nan", "inf", ""], ids=repr)
def test_time_budget_must_be_positive_seconds(command: str, budget: str, tmp_path: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    out = ["--out", tmp_path / "run"] if command == "search" else ["--model", tmp_path / "model"]
    result = invoke(command, data, "--target", "y", *out, "--time-budget", budget)
    assert_one_line_error(result, "--time-budget", f"{budget!r}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_output_folder_that_cannot_be_a_folder(tmp_path: Path, tiny_space: Path, fitted: SimpleNamespace) -> None:
    data = _csv(tmp_path, toy_frame(40))
    digest = sha256(data)
    assert_one_line_error(_search(tmp_path, tiny_space, data, out=data), "--out", "is a file")
    assert_one_line_error(_search(tmp_path, tiny_space, data, out=data / "run"), "--out", "under the file")
    assert_one_line_error(_search(tmp_path, tiny_space, data, "--artifacts", data), "--artifacts", "is a file")
    assert_one_line_error(invoke("fit", data, "--target", "y", "--model", data / "m", "--space", tiny_space),
                          "--model", "under the file")
    assert_one_line_error(invoke("ensemble", fitted.run, "--model", data, "--no-gbt"), "--model", "is a file")
    assert sha256(data) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv"]


def test_output_file_that_cannot_be_written(tmp_path: Path, fitted: SimpleNamespace) -> None:
    data = _csv(tmp_path, fitted.frame.head(5))
    digest = sha256(data)
    assert_one_line_error(invoke("predict", fitted.model, data, "--out", data / "p.csv"), "--out", "under the file")
    assert_one_line_error(invoke("predict", fitted.model, data, "--out", tmp_path), "--out", "is a folder")
    assert_one_line_error(invoke("predict", fitted.model, data, "--out", data), "--out", "input DATA file")
    assert_one_line_error(invoke("predict", fitted.model, data, "--out", tmp_path / "p.xlsx"), "extension")
    assert_one_line_error(invoke("report", fitted.run, "--out", data / "r.html"), "--out", "under the file")
    assert sha256(data) == digest


def test_api_write_report_under_a_file(tmp_path: Path, fitted: SimpleNamespace) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    # A path in the way: PathError (StorageError before), both AutoDNNError.
    with pytest.raises(AutoDNNError, match="is a file|under the file"):
        api.write_report(fitted.run, out=blocker / "report.html")


def test_api_predict_file_never_overwrites_its_input(tmp_path: Path, fitted: SimpleNamespace) -> None:
    data = _csv(tmp_path, fitted.frame.head(5))
    digest = sha256(data)
    with pytest.raises(AutoDNNError, match="is the input data file"):
        api.predict_file(fitted.model, data, out=data)
    assert sha256(data) == digest


def test_api_predict_file_under_a_file(tmp_path: Path, fitted: SimpleNamespace) -> None:
    data = _csv(tmp_path, fitted.frame.head(5))
    # A path in the way: PathError (StorageError before), both AutoDNNError.
    with pytest.raises(AutoDNNError, match="is a file|under the file"):
        api.predict_file(fitted.model, data, out=data / "pred.csv")


def test_api_search_checks_the_artifacts_folder_first(tmp_path: Path, tiny_space: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automl_dnn.workers.MAX_FAILURES_IN_A_ROW", 1)
    data = _csv(tmp_path, toy_frame(40))
    with pytest.raises(AutoDNNError, match="artifacts folder"):
        api.search(str(data), out=tmp_path / "run", target="y", space=str(tiny_space), n_trials=1,
                   artifacts=data, quiet=True)


def test_api_fit_checks_the_model_folder_before_searching(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    # A path in the way: PathError (StorageError before), both AutoDNNError.
    with pytest.raises(AutoDNNError, match="model folder .* is a file"):
        api.fit(str(data), model_dir=data, out=tmp_path / "run", target="y", space=str(tiny_space), n_trials=1,
                gbt=False, quiet=True)
    assert not (tmp_path / "run").exists()
    other = tmp_path / "notes"  # a folder of something else: refused before the search too, not after it
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(AutoDNNError, match="is not empty and holds no model.json"):
        api.fit(str(data), model_dir=other, out=tmp_path / "run", target="y", space=str(tiny_space), n_trials=1,
                gbt=False, quiet=True)
    assert not (tmp_path / "run").exists() and [p.name for p in other.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("command", ["search", "ensemble", "report", "importance"])
def test_a_negative_seed_is_refused_in_one_line(command: str, tmp_path: Path, fitted: SimpleNamespace) -> None:
    """numpy, scikit-learn and XGBoost take seeds from 0 to 2**32 - 1; -1 crashed them mid-run."""
    args = {"search": [fitted.data, "--target", "y"], "ensemble": [fitted.run], "report": [fitted.run],
            "importance": [fitted.model, fitted.data]}[command]
    assert_one_line_error(invoke(command, *args, "--seed", -1), "--seed", "-1 is not in the range")
    with pytest.raises(AutoDNNError, match="seed must be a whole number from 0 to 2\\*\\*32 - 1"):
        api.search(toy_frame(40), out=tmp_path / "run", target="y", seed=-1, n_trials=1, quiet=True)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_is_refused(url: str, tmp_path: Path, tiny_space: Path) -> None:
    """Its study would be gone when the command ends, and the ensemble step could not find it."""
    data = _csv(tmp_path, toy_frame(40))
    assert_one_line_error(_search(tmp_path, tiny_space, data, "--storage", url), "is in memory", "sqlite:///FILE")


def test_a_relative_storage_path_is_recorded_absolute(tmp_path: Path, tiny_space: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A later command from another folder must open the same study, not create an empty one there."""
    data = _csv(tmp_path, toy_frame(40))
    monkeypatch.chdir(tmp_path)
    for url, file in (("sqlite:///rel.db", "rel.db"), ("rel.journal", "rel.journal"),
                      ("journal:///url.journal", "url.journal")):  # three slashes: relative, as SQLite's
        out = tmp_path / file.replace(".", "-")
        assert _search(tmp_path, tiny_space, data, "--storage", url, out=out).exit_code == 0
        assert json.loads((out / "run.json").read_text())["storage"].endswith(str(tmp_path / file))
        elsewhere = tmp_path / f"elsewhere-{file}"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        result = invoke("ensemble", out, "--no-gbt", "--folds", "1", "--model", tmp_path / f"model-{file}")
        assert result.exit_code == 0, result.output
        assert list(elsewhere.iterdir()) == []
        monkeypatch.chdir(tmp_path)


def test_resuming_with_another_study_would_overwrite_artifacts_and_is_refused(tmp_path: Path,
                                                                              tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    assert _search(tmp_path, tiny_space, data, "--study", "first").exit_code == 0
    weights = (tmp_path / "run" / "artifacts" / "trial-00000" / "weights.safetensors").read_bytes()
    assert_one_line_error(_search(tmp_path, tiny_space, data, "--study", "second", "--n-trials", 2),
                          "holds study 'first'", "another --study would write its trials over", "new --out")
    assert (tmp_path / "run" / "artifacts" / "trial-00000" / "weights.safetensors").read_bytes() == weights
    resumed = _search(tmp_path, tiny_space, data, "--study", "first", "--n-trials", 2)
    assert resumed.exit_code == 0, resumed.output


def test_ensemble_on_cuda_without_a_gpu_is_one_line(fitted: SimpleNamespace, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert_one_line_error(invoke("ensemble", fitted.run, "--no-gbt", "--device", "cuda", "--model", tmp_path / "m"),
                          "--device cuda", "no CUDA GPU")


def test_api_ensemble_on_a_named_gpu_without_one_is_one_line(fitted: SimpleNamespace, tmp_path: Path) -> None:
    """device="cuda:0" passed the API's check and failed in torch mid-bagging, as device="cuda" once did."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(AutoDNNError, match="device 'cuda:0' was given but no CUDA GPU is available"):
        api.ensemble(fitted.run, model_dir=tmp_path / "m", gbt=False, device="cuda:0")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("options, needle", [
    ({"time_budget": -1}, "time_budget must be a number of seconds > 0, got -1"),
    ({"threads": 0}, "threads must be a whole number >= 1, got 0"),
    ({"gbt_trials": -2}, "gbt_trials must be a whole number >= 1, got -2"),
    ({"top_k": "2"}, "top_k must be a whole number >= 1, got '2'"),
    ({"top_k": 1.5}, "top_k must be a whole number >= 1, got 1.5"),
    ({"jobs": 0}, "jobs must be a whole number >= 1, got 0"),
])
def test_api_ensemble_checks_its_counts_and_budget_in_one_line(fitted: SimpleNamespace, tmp_path: Path,
                                                              options: dict, needle: str) -> None:
    """What the CLI's option types refuse: a negative budget, threads=0 and gbt_trials=0 were taken, a top_k of 1.5
    ended in a TypeError."""
    with pytest.raises(AutoDNNError, match=needle):
        api.ensemble(fitted.run, model_dir=tmp_path / "m", gbt=False, **options)
    assert not (tmp_path / "m").exists()


def test_api_ensemble_refuses_an_unknown_device(fitted: SimpleNamespace, tmp_path: Path) -> None:
    """device="gpu" (the CLI offers auto, cpu, cuda) failed in torch mid-bagging, and in a search every trial."""
    with pytest.raises(AutoDNNError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"):
        api.ensemble(fitted.run, model_dir=tmp_path / "m", gbt=False, device="gpu")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("options, needle", [
    ({"n_trials": 0}, "n_trials must be a whole number >= 1, got 0"),
    ({"n_trials": 2.5}, "n_trials must be a whole number"),
    ({"time_budget": -1.0}, "time_budget must be a number of seconds > 0"),
    ({"time_budget": float("nan"), "n_trials": 1}, "time_budget must be a number of seconds > 0"),
    ({"jobs": 0, "n_trials": 1}, "jobs must be a whole number >= 1"),
    ({"folds": 0, "n_trials": 1}, "folds must be a whole number >= 1, got 0"),
    ({"top_k": 1.5, "n_trials": 1}, "top_k must be a whole number >= 1, got 1.5"),
    ({"gbt_trials": 0, "n_trials": 1}, "gbt_trials must be a whole number >= 1, got 0"),
    ({"device": "gpu", "n_trials": 1}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
])
def test_api_fit_checks_its_options_before_making_folders(tmp_path: Path, options: dict, needle: str) -> None:
    """What the CLI's option types refuse, the API refuses too: one line, and no folder left behind."""
    with pytest.raises(AutoDNNError, match=needle):
        api.fit(toy_frame(40), model_dir=tmp_path / "model", target="y", gbt=False, quiet=True, **options)
    assert list(tmp_path.iterdir()) == []


def test_a_table_whose_every_feature_is_dropped_stops_before_searching(tmp_path: Path, tiny_space: Path) -> None:
    frame = pd.DataFrame({"id": np.arange(60), "c": 1, "y": np.arange(60) % 2})
    result = _search(tmp_path, tiny_space, _csv(tmp_path, frame))
    assert_one_line_error(result, "no usable feature column, every one was dropped: 'id': integers")
    assert "'c': constant" in result.output
    with pytest.raises(AutoDNNError, match="no usable feature column"):
        api.fit(frame, model_dir=tmp_path / "model", target="y", gbt=False, quiet=True, n_trials=1)
    assert not (tmp_path / "model").exists()  # the failed fit leaves no empty model folder


def test_a_fit_makes_its_model_folder_only_when_it_exports(tmp_path: Path, tiny_space: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A model folder made before the search was left empty by a fit killed mid-search (SIGKILL: no clean-up
    runs); the folders above it are made, and the folder itself appears with its files."""
    model = tmp_path / "models" / "m"
    seen = []
    search = api.search

    def watched(*args, **kwargs):
        seen.append((model.exists(), model.parent.is_dir()))
        return search(*args, **kwargs)

    monkeypatch.setattr(api, "search", watched)
    api.fit(toy_frame(60), model_dir=model, target="y", space=str(tiny_space), n_trials=1, gbt=False, folds=1,
            quiet=True, progress=False)
    assert seen == [(False, True)] and (model / "model.json").is_file()


# --- ensemble and predict ------------------------------------------------------------------------------


def test_ensemble_without_a_completed_trial(tmp_path: Path, tiny_space: Path) -> None:
    from automl_dnn.run_folder import SearchOptions, prepare_run
    from automl_dnn.study import open_study

    data = _csv(tmp_path, toy_frame(40))
    spec, _ = prepare_run(SearchOptions(source=str(data), out=tmp_path / "run", target="y", space=str(tiny_space)))
    open_study(spec)  # a study with no trial at all
    assert_one_line_error(invoke("ensemble", tmp_path / "run", "--no-gbt"), "no completed trial")
    assert_one_line_error(invoke("ensemble", tmp_path, "--no-gbt"), "not a run folder")
    assert_one_line_error(invoke("report", tmp_path), "not a run folder")


PREDICT_INPUTS = [
    ("missing column", lambda f: f.drop(columns="b"), ["missing column 'b'", "add it"]),
    ("columns named in another case", lambda f: f.rename(columns={"a": "A", "b": "B"}),
     ["missing columns 'a', 'b'", "add them", "the input has 'A', 'B': names are case-sensitive"]),
    ("numbers that cannot be read", lambda f: f.assign(a=["n/a?", "x", "y", "z", "w"]), ["'a'", "numbers"]),
    ("dates that cannot be read", lambda f: f.assign(d=["soon", "later", "x", "y", "z"]), ["'d'", "dates"]),
    ("empty table", lambda f: f.head(0), ["no rows"]),
]


@pytest.mark.parametrize("name, change, needles", PREDICT_INPUTS, ids=[case[0] for case in PREDICT_INPUTS])
def test_predict_input_that_cannot_be_used(name: str, change: Callable[[pd.DataFrame], pd.DataFrame],
                                          needles: list[str], tmp_path: Path, fitted: SimpleNamespace) -> None:
    data = _csv(tmp_path, change(fitted.frame.drop(columns="y").head(5).astype(object)))
    assert_one_line_error(invoke("predict", fitted.model, data), *needles)


def test_predict_with_no_model_folder(tmp_path: Path, fitted: SimpleNamespace) -> None:
    assert_one_line_error(invoke("predict", tmp_path / "none", fitted.data), "not found")
    assert_one_line_error(invoke("predict", fitted.run, fitted.data), "is a run folder (a search's), not a model folder")


def _tampered(fitted: SimpleNamespace, tmp_path: Path, how: str) -> Path:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(fitted.model, model)
    spec = json.loads((model / "model.json").read_text())
    member = model / sorted(spec["files"])[0]
    if how == "missing file":
        member.unlink()
    elif how == "changed file":
        blob = bytearray(member.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        member.write_bytes(bytes(blob))
    elif how == "newer format":
        spec["format_version"] += 1
        (model / "model.json").write_text(json.dumps(spec))
    elif how == "broken model.json":
        (model / "model.json").write_text("{not json")
    elif how in FIELD_EDITS:
        (model / "model.json").write_text(json.dumps({**spec, **FIELD_EDITS[how]}))
    return model


#: hand edits of model.json's fields that must fail at load in one line, not at predict time or silently
FIELD_EDITS = {"unknown task": {"task": "banana"}, "no preprocessors": {"preprocessors": None},
               "threshold not a number": {"threshold": "x"}, "one class": {"classes": [0]}}


@pytest.mark.parametrize("how, needles", [
    ("missing file", ["missing"]),
    ("changed file", ["sha256"]),
    ("newer format", ["newer", "upgrade"]),
    ("broken model.json", ["not valid JSON"]),
    ("unknown task", ["invalid", "'banana'"]),
    ("no preprocessors", ["invalid"]),
    ("threshold not a number", ["invalid", "threshold 'x'"]),
    ("one class", ["invalid", "2 classes"]),
], ids=["missing file", "changed file", "newer format", "broken model.json", *FIELD_EDITS])
def test_damaged_model_folder(how: str, needles: list[str], tmp_path: Path, fitted: SimpleNamespace) -> None:
    model = _tampered(fitted, tmp_path, how)
    assert_one_line_error(invoke("predict", model, fitted.data), *needles)


# --- odd but valid input: it works, with a one-line note where something was changed ----------------------


def _frame_with(kind: str) -> pd.DataFrame:
    frame = toy_frame()
    if kind == "all-missing column":
        frame["empty"] = np.nan
    elif kind == "infinite values":
        frame.loc[::9, "a"] = np.inf
        frame.loc[::13, "b"] = -np.inf
    elif kind == "numbers beyond float32":
        frame.loc[::7, "a"] = 1e39
        frame.loc[::11, "b"] = -3e300
    elif kind == "mixed-type column":
        frame["m"] = [str(i % 4) if i % 3 else "many" for i in range(len(frame))]
    elif kind == "missing target":
        frame.loc[::10, "y"] = np.nan
    elif kind == "thousands of levels":
        frame = toy_frame(2400)
        frame["city"] = [f"town-{i}" if i % 3 else f"city-{i % 7}" for i in range(len(frame))]
    return frame


def _write_odd(kind: str, path: Path) -> None:
    frame = _frame_with(kind)
    if kind == "duplicate column names":
        path.write_text(frame.to_csv(index=False).replace("a,b,c,d,y", "a,b,c,a,y", 1))
    elif kind in ("semicolon", "tab", "pipe"):
        frame.to_csv(path, index=False, sep={"semicolon": ";", "tab": "\t", "pipe": "|"}[kind])
    elif kind == "semicolon with decimal commas":
        frame.to_csv(path, index=False, sep=";", decimal=",")
    elif kind == "Excel sep= line":
        path.write_text("sep=;\n" + frame.to_csv(index=False, sep=";"))
    elif kind == "latin-1":
        frame.assign(c=frame["c"].map({"red": "rouge é", "green": "grün", "blue": "blå"})).to_csv(
            path, index=False, encoding="latin-1")
    elif kind == "UTF-8 with BOM":
        frame[["y", "a", "b", "c", "d"]].to_csv(path, index=False, encoding="utf-8-sig")
    else:
        frame.to_csv(path, index=False)


#: kind -> (input columns the run must have read, a phrase of the note)
ODD: dict[str, tuple[list[str], str | None]] = {
    "all-missing column": (["a", "b", "c", "d", "empty"], "dropped column 'empty'"),
    "infinite values": (["a", "b", "c", "d"], "infinite values"),
    "numbers beyond float32": (["a", "b", "c", "d"], "values beyond +-3.4e38"),
    "duplicate column names": (["a", "b", "c", "a.1"], "duplicate column names 'a'"),
    "mixed-type column": (["a", "b", "c", "d", "m"], "mixes numbers"),
    "thousands of levels": (["a", "b", "c", "d", "city"], "column 'city' has"),
    "date column": (["a", "b", "c", "d"], "read as dates"),
    "missing target": (["a", "b", "c", "d"], "dropped 20 rows with a missing target 'y'"),
    "string labels": (["a", "b", "c", "d"], "text/categories with 2 distinct values"),
    "semicolon": (["a", "b", "c", "d"], None),
    "tab": (["a", "b", "c", "d"], None),
    "pipe": (["a", "b", "c", "d"], None),
    "semicolon with decimal commas": (["a", "b", "c", "d"], "decimals with ','"),
    "Excel sep= line": (["a", "b", "c", "d"], "'sep=;' line"),
    "latin-1": (["a", "b", "c", "d"], "read it as Windows-1252 (latin-1 with"),
    "UTF-8 with BOM": (["a", "b", "c", "d"], None),
}


@pytest.fixture(scope="module")
def odd_runs(tmp_path_factory: pytest.TempPathFactory, tiny_space: Path) -> Callable[[str], SimpleNamespace]:
    """One search (1 trial, journal storage: quicker than SQLite to set up) per kind of odd input, on demand."""
    root = tmp_path_factory.mktemp("odd")
    done: dict[str, SimpleNamespace] = {}

    def get(kind: str) -> SimpleNamespace:
        if kind not in done:
            folder = root / kind.replace(" ", "_")
            folder.mkdir()
            data = folder / "data.csv"
            _write_odd(kind, data)
            before = sha256(data)
            result = invoke("search", data, "--target", "y", "--out", folder / "run", "--space", tiny_space,
                            "--n-trials", 1, "--storage", f"journal:///{(folder / 'study.log').resolve()}")
            done[kind] = SimpleNamespace(result=result, data=data, run=folder / "run", before=before)
        return done[kind]

    return get


@pytest.mark.parametrize("kind", list(ODD))
def test_odd_input_is_searched(kind: str, odd_runs: Callable[[str], SimpleNamespace]) -> None:
    run = odd_runs(kind)
    assert run.result.exit_code == 0, run.result.output
    assert "error" not in run.result.output.lower()
    assert sha256(run.data) == run.before
    spec = json.loads((run.run / "run.json").read_text())
    assert spec["task"] == "binary" and spec["classes"] == ["no", "yes"]
    schema = json.loads((run.run / "preprocess" / "standard.json").read_text())["input_schema"]
    columns, _ = ODD[kind]
    assert [item["name"] for item in schema] == columns
    numeric = {item["name"]: item["dtype"] for item in schema}
    assert numeric["b"].startswith("float"), numeric  # the numbers were read as numbers


@pytest.mark.parametrize("kind", [kind for kind, (_, note) in ODD.items() if note])
def test_odd_input_gets_a_one_line_note(kind: str, odd_runs: Callable[[str], SimpleNamespace]) -> None:
    run = odd_runs(kind)
    note = ODD[kind][1]
    assert any(line.startswith("note: ") and note in line for line in lines_of(run.result)), run.result.output


def test_every_search_note_is_one_whole_line(tmp_path: Path, tiny_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    target = "has_the_customer_cancelled_the_subscription_within_90_days"
    frame = toy_frame().rename(columns={"y": target})
    frame.loc[::10, target] = np.nan
    result = invoke("search", _csv(tmp_path, frame), "--target", target, "--out", tmp_path / "run", "--space",
                    tiny_space, "--n-trials", 1, "--storage", f"journal:///{(tmp_path / 'study.log').resolve()}")
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "run" / "run.json").read_text())["notes"]
    assert f"dropped 20 rows with a missing target {target!r}" in notes
    for note in notes:
        assert f"note: {note}" in lines_of(result), (note, result.output)


def test_notes_show_column_names_verbatim(tmp_path: Path, tiny_space: Path) -> None:
    frame = toy_frame().rename(columns={"y": "price[usd]"})
    frame.loc[::10, "price[usd]"] = np.nan
    data = _csv(tmp_path, frame)
    result = invoke("search", data, "--target", "price[usd]", "--out", tmp_path / "run", "--space", tiny_space,
                    "--n-trials", 1, "--storage", f"journal:///{(tmp_path / 'study.log').resolve()}")
    assert result.exit_code == 0, result.output
    assert "'price[usd]'" in result.output


def test_predict_turns_odd_cells_into_counted_missing_values(tmp_path: Path, fitted: SimpleNamespace) -> None:
    clean = fitted.frame.head(8).astype(object)
    odd = clean.copy()
    odd.loc[1, "a"] = "oops"
    odd.loc[2, "b"] = "inf"
    odd.loc[3, "c"] = "purple"
    odd.loc[4, "d"] = "someday"
    odd.loc[5, "a"] = "n/a?"
    odd["extra"] = "ignored"
    data, clean_data = _csv(tmp_path, odd, "odd.csv"), _csv(tmp_path, clean, "clean.csv")
    digest = sha256(data)
    result = invoke("predict", fitted.model, data)
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(io.StringIO(result.stdout))
    assert len(pred) == len(odd)
    notes = [line for line in lines_of(result) if line.startswith("note: ")]
    for phrase in ("column 'a': 2 values could not be read as numbers", "column 'b': 1 infinite values",
                   "column 'c': 1 values not seen in training", "column 'd': 1 values could not be read as dates",
                   "dropped the target column 'y'", "ignored 1 column not used in training: 'extra'"):
        assert sum(phrase in note for note in notes) == 1, (phrase, notes)
    same = pd.read_csv(io.StringIO(invoke("predict", fitted.model, clean_data).stdout))
    untouched = [0, 6, 7]  # rows without odd cells predict as in the clean table, in the same order
    np.testing.assert_allclose(pred.loc[untouched, "proba_yes"], same.loc[untouched, "proba_yes"], rtol=1e-5)
    assert sha256(data) == digest


# --- the input data file is never modified ----------------------------------------------------------


def test_the_data_file_is_never_modified(tmp_path: Path, tiny_space: Path, fitted: SimpleNamespace) -> None:
    data = _csv(tmp_path, toy_frame(40))
    digest = sha256(data)
    attempts = [
        ["search", data, "--target", "y", "--out", data],
        ["search", data, "--target", "y", "--out", tmp_path / "r1", "--artifacts", data],
        ["search", data, "--target", "y", "--out", tmp_path / "r2", "--storage", f"sqlite:///{data.resolve()}"],
        ["search", data, "--target", "y", "--out", tmp_path / "r3", "--storage", f"journal:///{data.resolve()}"],
        ["fit", data, "--target", "y", "--model", data],
        ["fit", data, "--target", "y", "--model", tmp_path / "m", "--out", data],
    ]
    for args in attempts:
        result = invoke(*args, "--space", tiny_space, "--n-trials", 1, "--no-gbt" if args[0] == "fit" else "--quiet")
        assert result.exit_code != 0, (args, result.output)
        assert sha256(data) == digest, args
    result = invoke("predict", fitted.model, data, "--out", data)
    assert result.exit_code == 2 and sha256(data) == digest


def test_predict_reads_names_that_differ_only_in_surrounding_spaces(fitted: SimpleNamespace) -> None:
    """The CLI reads a CSV header without its leading spaces and pandas with them: either model reads both."""
    model = api.load(fitted.model)
    frame = fitted.frame.drop(columns="y").head(8)
    want = model.predict_proba(frame)
    np.testing.assert_array_equal(model.predict_proba(frame.rename(columns={"a": "  a", "c": "c "})), want)
    assert "surrounding spaces: '  a' as 'a', 'c ' as 'c'" in " ".join(model.notes)
    both = frame.rename(columns={"a": " a"}).assign(**{"a ": frame["a"]})  # two candidates: no guess
    assert_one_line_error(invoke("predict", fitted.model, _parquet_of(fitted.root, both)), "missing column 'a'")


def _parquet_of(folder: Path, frame: pd.DataFrame) -> Path:
    path = folder / "spaced.parquet"  # Parquet keeps the names' spaces, which the CLI's CSV reading drops
    frame.to_parquet(path)
    return path


def _arrow_backed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as ``pd.read_parquet(..., dtype_backend="pyarrow")`` returns it: every column a ``pd.ArrowDtype``."""
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False).to_pandas(types_mapper=pd.ArrowDtype)


def test_pyarrow_backed_frames_fit_and_predict_as_numpy_ones(tmp_path: Path, tiny_space: Path) -> None:
    """date32 (whose hours Arrow cannot take), duration (read as text) and list columns (which Arrow cannot
    factorize) of a pyarrow-backed frame are read as a Parquet file's are, in fit and in predict."""
    frame = toy_frame(60).assign(wait=pd.to_timedelta(np.arange(60) % 7 * 3600, unit="s"), tags=[[1, 2]] * 60)
    frame["d"] = pd.to_datetime(frame["d"]).dt.date
    summary, _ = api.fit(_arrow_backed(frame), model_dir=tmp_path / "model", target="y", space=str(tiny_space),
                         n_trials=1, gbt=False, folds=1, quiet=True)
    assert "dropped column 'tags': its cells hold lists" in " ".join(summary.notes)
    pre = load_dataset(_arrow_backed(frame), target="y").fit_preprocessor()
    assert [(c["name"], c["kind"]) for c in pre.columns_ if c["name"] in ("d", "wait")] == [("d", "date"), ("wait", "numeric")]
    model = api.load(tmp_path / "model")
    rows = frame.drop(columns="y").head(8)
    np.testing.assert_array_equal(model.predict_proba(_arrow_backed(rows)), model.predict_proba(rows))


def test_importance_reads_labels_with_spaces_around_them_as_training_did(fitted: SimpleNamespace) -> None:
    model = api.load(fitted.model)
    frame = fitted.frame.head(40)
    padded = model.feature_importance(frame.assign(y=frame["y"] + " "), target="y", repeats=1, seed=0)
    assert padded.equals(model.feature_importance(frame, target="y", repeats=1, seed=0))


def test_a_price_target_written_with_a_currency_sign_fits_and_its_importance_reads_it(tmp_path: Path,
                                                                                         tiny_space: Path) -> None:
    """'$48,123.45' targets were 200 text classes ("too many to be classes; use --task regression", which then said
    "needs numbers"): now a regression, and importance reads the column as training did."""
    frame = toy_frame().drop(columns="y")
    price = 1000 * (3 + frame["a"] + (frame["c"] == "red"))
    frame["price"] = [f"${v:,.2f}" for v in price]
    result = invoke("fit", _csv(tmp_path, frame), "--target", "price", "--model", tmp_path / "model", "--space",
                    tiny_space, "--n-trials", 1, "--no-gbt", "--folds", 1, "--no-report")
    assert result.exit_code == 0, result.output
    assert "note: target 'price' holds text but" in result.output
    model = api.load(tmp_path / "model")
    assert model.task == "regression"
    got = model.feature_importance(frame.head(40), target="price", repeats=1, seed=0)
    pd.testing.assert_frame_equal(got, model.feature_importance(frame.head(40).assign(price=price), target="price",
                                                                repeats=1, seed=0))


def test_numbers_with_units_fit_and_predict_and_another_unit_is_missing(tmp_path: Path, tiny_space: Path) -> None:
    """A feature written '72.5 kg' and a target written '171 cm' were text (the target: "too many to be classes");
    numbers at fit and predict time, and a cell in another unit ('160 lb') or none at all is a missing cell."""
    frame = toy_frame().drop(columns="y")
    frame["weight"] = [f"{70 + 10 * v:.1f} kg" for v in frame["a"]]
    frame["height"] = [f"{170 + 10 * v + 5 * (c == 'red'):.0f} cm" for v, c in zip(frame["a"], frame["c"])]
    result = invoke("fit", _csv(tmp_path, frame.drop(columns="a")), "--target", "height", "--model", tmp_path / "model",
                    "--space", tiny_space, "--n-trials", 1, "--no-gbt", "--folds", 1, "--no-report")
    assert result.exit_code == 0, result.output
    assert "note: target 'height' holds text but" in result.output and "the unit 'cm' dropped" in result.output
    model = api.load(tmp_path / "model")
    assert model.task == "regression"
    spec = next(c for c in next(iter(model._pre.values())).columns_ if c["name"] == "weight")
    assert spec["kind"] == "numeric" and spec["text"] == {"unit": "kg"}
    new = frame.drop(columns=["a", "height"]).head(5).assign(weight=["72.5 kg", "160 lb", "heavy", "80kg", None])
    result = invoke("predict", tmp_path / "model", _csv(tmp_path, new, "new.csv"), "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "column 'weight': 2 values could not be read as numbers and were treated as missing" in result.output
    predictions = pd.read_csv(tmp_path / "p.csv")["prediction"]
    assert len(predictions) == 5 and predictions.notna().all()


def test_a_batch_written_in_another_unit_throughout_is_missing_not_refused(tmp_path: Path, tiny_space: Path) -> None:
    """A one-row batch in pounds for a column read in kg was every row unreadable, and the guard that refuses a
    column none of whose cells are numbers (a shifted column, another file) refused it; numbers in another unit
    are the right column's, missing with the counted note, as a few of them were. Words throughout stay refused."""
    frame = toy_frame()
    frame["weight"] = [f"{70 + 10 * v:.1f} kg" for v in frame["a"]]
    result = invoke("fit", _csv(tmp_path, frame.drop(columns="a")), "--target", "y", "--model", tmp_path / "model",
                    "--space", tiny_space, "--n-trials", 1, "--no-gbt", "--folds", 1, "--no-report")
    assert result.exit_code == 0, result.output
    one = frame.drop(columns=["a", "y"]).head(1).assign(weight="160 lb")
    result = invoke("predict", tmp_path / "model", _csv(tmp_path, one, "one.csv"), "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert ("column 'weight': 1 values could not be read as numbers and were treated as missing (the column is in "
            "'kg': a number in another unit is not converted)") in result.output
    assert pd.read_csv(tmp_path / "p.csv")["proba_yes"].notna().all()
    model = api.load(tmp_path / "model")
    rows = frame.drop(columns=["a", "y"]).head(4)
    in_pounds = rows.assign(weight=["160 lb", "150 lb", "170lb", None])
    got = model.predict_proba(in_pounds)
    assert "column 'weight': 3 values could not be read as numbers" in " ".join(model.notes)
    np.testing.assert_array_equal(got, model.predict_proba(rows.assign(weight=np.nan)))
    with pytest.raises(DataError, match="column 'weight' was numbers in training but none of its values"):
        model.predict(rows.assign(weight=["heavy", "light", "heavy", "?"]))
    assert_one_line_error(invoke("predict", tmp_path / "model",
                                 _csv(tmp_path, rows.assign(weight="heavy"), "words.csv")),
                          "column 'weight' was numbers in training but none of its values can be read")


def test_times_of_day_fit_from_parquet_and_predict_from_text(tmp_path: Path, tiny_space: Path) -> None:
    """A Parquet time64 column (Python times in pandas) was capped categories; seconds since midnight, read alike
    when predict gets the times as text ('14:30', '2:30 PM'), and a cell that is no time is missing, no crash."""
    import datetime

    frame = toy_frame()
    minutes = (frame["a"].rank(method="first").astype(int) * 7) % 1440
    frame["at"] = [datetime.time(m // 60, m % 60) for m in minutes]
    source = tmp_path / "train.parquet"
    frame.to_parquet(source)
    result = invoke("fit", source, "--target", "y", "--model", tmp_path / "model", "--space", tiny_space,
                    "--n-trials", 1, "--no-gbt", "--folds", 1, "--no-report")
    assert result.exit_code == 0, result.output
    assert "note: column 'at' holds times of day; read them as seconds since midnight" in result.output
    new = frame.drop(columns="y").head(5).assign(at=["14:30", "2:30 PM", "noon", "14:30:00", None])
    result = invoke("predict", tmp_path / "model", _csv(tmp_path, new, "new.csv"), "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "column 'at': 1 values could not be read as times of day and were treated as missing" in result.output
    probabilities = pd.read_csv(tmp_path / "p.csv")["proba_yes"]
    assert len(probabilities) == 5 and probabilities.notna().all()
    model = api.load(tmp_path / "model")
    same = new.head(2).assign(a=0.0, at=[datetime.time(14, 30)] * 2)  # the same time as text or as a time
    np.testing.assert_array_equal(model.predict_proba(same), model.predict_proba(same.assign(at=["14:30", "2:30 pm"])))


def test_predict_notes_a_used_column_that_is_empty_in_every_row(fitted: SimpleNamespace, tmp_path: Path) -> None:
    """A column emptied by an export (or 'n/a' throughout, which the reading makes missing) predicted silently."""
    frame = fitted.frame.drop(columns="y").head(6).assign(a="n/a", c=None)  # written to CSV: read as missing
    result = invoke("predict", fitted.model, _csv(tmp_path, frame), "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "note: column 'a' is empty in all 6 rows; it was treated as missing in every row" in result.output
    assert "column 'c' is empty in all 6 rows" in result.output
    model = api.load(fitted.model)
    model.predict(frame.head(1).assign(a=np.nan))  # one row with a missing cell is no emptied column
    assert model.notes == []


def test_predict_reads_a_series_as_one_row(fitted: SimpleNamespace) -> None:
    model = api.load(fitted.model)
    frame = fitted.frame.drop(columns="y")
    assert model.predict_proba(frame.iloc[3]).tolist() == model.predict_proba(frame.iloc[3:4]).tolist()
    assert model.predict_frame(frame.iloc[3]).index.tolist() == [3]
    assert "the input is a Series: read as one row" in " ".join(model.notes)


def test_predict_reads_a_dict_of_single_values_as_one_row(fitted: SimpleNamespace) -> None:
    """One record, as a web request's JSON gives it: it was "cannot predict from a dict; pass a pandas DataFrame"."""
    model = api.load(fitted.model)
    frame = fitted.frame.drop(columns="y")
    record = frame.iloc[3].to_dict()
    assert model.predict_proba(record).tolist() == model.predict_proba(frame.iloc[3:4]).tolist()
    assert model.predict_frame(record).index.tolist() == [0]
    assert "the input is a dict of single values: read as one row" in " ".join(model.notes)


def test_predict_of_none_says_no_input_was_given(fitted: SimpleNamespace) -> None:
    """predict(None) said "the input table has no rows", of a table never given."""
    model = api.load(fitted.model)
    with pytest.raises(DataError, match=r"no input was given \(None\)"):
        model.predict(None)


def test_predict_reads_a_name_held_twice_as_training_read_it(fitted: SimpleNamespace) -> None:
    """A frame with a name twice (built in Python) reads its first column by that name, as fit and a CSV's reading do:
    it ended with "ValueError: The truth value of a Series is ambiguous"."""
    model = api.load(fitted.model)
    frame = fitted.frame.drop(columns="y").head(5)
    doubled = pd.concat([frame, frame[["a"]].assign(a=999.0)], axis=1)
    read = model.predict_proba(doubled).tolist()
    assert "duplicate column names 'a' were made unique by adding .1, .2, ..." in model.notes
    assert read == model.predict_proba(frame).tolist()


@pytest.mark.parametrize("column, cells, phrase", [
    ("a", lambda n: np.arange(n) + 1j, "holds complex numbers"),
    ("a", lambda n: [[1.0]] * n, "holds lists, arrays or records (such as [1.0])"),
    ("c", lambda n: [["red"]] * n, "holds lists, arrays or records (such as ['red'])"),
], ids=["complex numbers", "lists in a numeric column", "lists in a categorical column"])
def test_predict_refuses_cells_no_column_reads_in_one_line(fitted: SimpleNamespace, column: str,
                                                         cells: Callable[[int], Any], phrase: str) -> None:
    """Complex cells lost their imaginary parts with only numpy's ComplexWarning (fit refuses them); list cells of a
    categorical column ended with "TypeError: unhashable type: 'list'" (fit drops such columns)."""
    model = api.load(fitted.model)
    frame = fitted.frame.drop(columns="y").head(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=re.escape(f"column {column!r} {phrase}")):
            model.predict(frame.assign(**{column: cells(len(frame))}))


def test_mc_dropout_on_nets_without_dropout_says_its_spread_is_zero(fitted: SimpleNamespace, tmp_path: Path) -> None:
    result = invoke("predict", fitted.model, fitted.data, "--mc-samples", 3, "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "no net of the model uses dropout, so MC dropout has no spread" in result.output
    assert (pd.read_csv(tmp_path / "p.csv").filter(like="_std") == 0).all().all()


def test_a_rerun_whose_trials_are_all_done_says_so(tmp_path: Path, tiny_space: Path) -> None:
    data = _csv(tmp_path, toy_frame(40))
    assert _search(tmp_path, tiny_space, data).exit_code == 0
    again = api.search(str(data), out=tmp_path / "run", target="y", space=str(tiny_space), n_trials=1, quiet=True)
    assert "the study already had 1 finished trials, --n-trials 1: none run now (a larger --n-trials adds more)" \
        in again.notes


def test_a_report_on_a_study_without_a_completed_trial_prints_no_optuna_log_line(tmp_path: Path,
                                                                                 tiny_space: Path) -> None:
    from automl_dnn.run_folder import SearchOptions, prepare_run
    from automl_dnn.study import open_study

    spec, _ = prepare_run(SearchOptions(source=str(_csv(tmp_path, toy_frame(40))), out=tmp_path / "run", target="y",
                                        space=str(tiny_space)))
    open_study(spec)  # a study with no trial at all
    result = subprocess.run([sys.executable, "-m", "automl_dnn", "report", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=POLL_LIMIT)  # a fresh process: Optuna's own logging
    assert result.returncode == 0, result.stderr
    assert "does not contain completed trials" not in result.stderr + result.stdout


def test_categorical_reaches_the_run_the_resume_and_predict(tmp_path: Path, tiny_space: Path) -> None:
    """`--categorical zip` reads the codes as levels in the search, is kept by a resume without the option, and
    the model predicts a CSV of integer codes (an unseen one too); an unknown column is one line."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"zip": rng.choice([10115, 20095, 80331], 150), "x": rng.normal(size=150),
                       "y": rng.integers(0, 2, 150)})
    df.to_csv(tmp_path / "t.csv", index=False)
    assert_one_line_error(_search(tmp_path, tiny_space, tmp_path / "t.csv", "--categorical", "zipcode"),
                          "--categorical 'zipcode' is not in the table")
    run = tmp_path / "run2"
    assert _search(tmp_path, tiny_space, tmp_path / "t.csv", "--categorical", "zip", out=run).exit_code == 0
    assert _search(tmp_path, tiny_space, tmp_path / "t.csv", out=run).exit_code == 0  # a resume keeps it
    spec = json.loads((run / "run.json").read_text())
    assert spec["categorical"] == ["zip"]
    kinds = {c["name"]: c["kind"] for c in json.loads((run / "preprocess" / "standard.json").read_text())["columns"]}
    assert kinds["zip"] == "categorical"
    result = invoke("ensemble", run, "--model", tmp_path / "m", "--no-gbt", "--folds", "1", "--quiet")
    assert result.exit_code == 0, result.output
    pd.DataFrame({"zip": [10115, 99999], "x": [0.1, 0.2]}).to_csv(tmp_path / "new.csv", index=False)
    result = invoke("predict", tmp_path / "m", tmp_path / "new.csv", "--out", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == 2


@pytest.mark.parametrize("url", ["sqlite:///typo.db", "journal:///typo.journal", "typo.journal"])
def test_a_dashboard_on_a_storage_file_that_does_not_exist_is_one_line(url: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """It created an empty study file there and served a blank dashboard: a mistyped path looked like no trials."""
    from automl_dnn.report import dashboard_app

    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoDNNError, match=r"no study storage at 'typo\.(db|journal)'; give the storage a search wrote"):
        dashboard_app(run_dir=None, storage=url)  # the app itself: without the check, the command would serve on
    assert list(tmp_path.iterdir()) == []


def test_predict_on_a_run_folder_names_where_its_model_is(tmp_path: Path) -> None:
    """A run folder given to predict (its model sits beside it, or inside it) says where the model is."""
    run = tmp_path / "m-run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(AutoDNNError, match=r"is a run folder .*`automl-dnn ensemble .*m-run` exports its model to"):
        api.load(run)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("{}")
    with pytest.raises(AutoDNNError, match=r"is a run folder .*its model is '.*/m'"):
        api.load(run)


def test_a_torch_device_is_taken_by_its_name() -> None:
    """A PyTorch user passes torch.device("cpu"): taken as "cpu"; torch.device("meta") is refused in one line."""
    import torch

    from automl_dnn.run_folder import check_device

    assert check_device(torch.device("cpu")) == "cpu" and check_device(torch.device("cuda", 1)) == "cuda:1"
    assert check_device("auto") == "auto"
    with pytest.raises(AutoDNNError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got device"):
        check_device(torch.device("meta"))


def test_a_target_mixing_text_and_numbers_fits_and_its_importance_reads_it(tmp_path: Path, tiny_space: Path) -> None:
    """1 beside 'no' in one object column ended the fit with "TypeError: '<' not supported between instances of 'int'
    and 'str'": the labels are now their text ('1', 'no'), and importance reads the same column as training did."""
    frame = toy_frame()
    frame["y"] = pd.Series([1 if label == "yes" else "no" for label in frame["y"]], dtype=object)
    api.fit(frame, target="y", model_dir=tmp_path / "model", space=tiny_space, n_trials=1, gbt=False, folds=1,
            quiet=True)
    model = api.load(tmp_path / "model")
    assert list(model.classes_) == ["1", "no"] and set(model.predict(frame.head(20))) <= {"1", "no"}
    got = model.feature_importance(frame.head(40), target="y", repeats=1, seed=0)
    pd.testing.assert_frame_equal(got, model.feature_importance(frame.head(40).assign(y=frame["y"].astype(str)),
                                                                target="y", repeats=1, seed=0))


@pytest.mark.parametrize("source", [np.zeros((10, 3)), [[1, 2], [3, 4]]])
def test_api_fit_refuses_data_that_is_not_a_table_as_a_data_error(tmp_path: Path, source: Any) -> None:
    """An array or a list was a bare TypeError, outside the AutoDNNError every user error is; it stays a TypeError
    too, and says what to pass instead."""
    for error in (DataError, TypeError):
        with pytest.raises(error, match=f"got {type(source).__name__}; for arrays use automl_dnn.sklearn"):
            api.fit(source, target="y", model_dir=tmp_path / "m", n_trials=1)
    assert not (tmp_path / "m").exists()

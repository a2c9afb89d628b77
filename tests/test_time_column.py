"""--time-column COLUMN: the test split is the latest rows, validation the ones before, the folds are
periods of time, and the column stays a feature. Bounded by trial and epoch counts on toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl_dnn import api
from automl_dnn.data import load_dataset
from automl_dnn.errors import DataError
from automl_dnn.folds import bagging_folds, make_folds
from automl_dnn.model_folder import read_spec
from automl_dnn.run_folder import RunDir
from tests.conftest import assert_one_line_error, invoke, toy_frame


def dated_frame(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Rows in shuffled order, each with a distinct day; the table's order is not the time order."""
    frame = toy_frame(n)
    days = pd.date_range("2021-01-01", periods=n, freq="D")
    frame["day"] = days[np.random.default_rng(seed).permutation(n)].strftime("%Y-%m-%d")
    return frame


def test_the_latest_rows_are_the_test_split_and_the_column_stays_a_feature() -> None:
    frame = dated_frame()
    data = load_dataset(frame, target="y", time_column="day", seed=3)
    day = pd.to_datetime(frame["day"])
    train, valid, test = (day.iloc[data.split[p]] for p in ("train", "valid", "test"))
    assert train.max() < valid.min() and valid.max() < test.min()
    assert (len(train), len(valid), len(test)) == (168, 36, 36)
    assert "day" in data.features.columns
    assert np.array_equal(np.argsort(data.order), np.argsort(day.to_numpy(), kind="stable"))
    assert any("in time order of 'day'" in note for note in data.notes)


def test_day_first_dates_order_rows_by_one_format() -> None:
    """dd/mm/yyyy read cell by cell puts 05/07 (5 July) in May beside 25/12; one format for the column."""
    frame = dated_frame()
    day = pd.to_datetime(frame["day"])
    frame["day"] = day.dt.strftime("%d/%m/%Y")
    data = load_dataset(frame, target="y", time_column="day", seed=3)
    assert np.array_equal(np.argsort(data.order), np.argsort(day.to_numpy(), kind="stable"))


def test_numbers_order_rows_too() -> None:
    frame = toy_frame(50)
    frame["t"] = np.arange(50)[::-1] * 0.5
    data = load_dataset(frame, target="y", time_column="t", test_size=0.2)
    assert set(data.split["test"]) == set(range(10))  # the largest t are the first rows


def test_time_folds_are_contiguous_periods_each_row_out_once_and_never_repeated() -> None:
    order = np.random.default_rng(1).permutation(50)
    folds = make_folds(np.zeros(50), "regression", k=5, repeats=3, order=order)
    assert folds.repeats == 1
    assert np.bincount(folds.assignment[0], minlength=5).tolist() == [10] * 5
    for fold in range(5):
        _, out = folds.rows(0, fold)
        ranks = np.sort(order[out])
        assert np.array_equal(ranks, np.arange(ranks[0], ranks[0] + 10))  # one unbroken period
    assert bagging_folds(None, 300, ordered=True) == (5, 1) and bagging_folds(None, 300) == (5, 3)


@pytest.mark.parametrize("args, needle", [
    (["--time-column", "nope"], "--time-column 'nope' is not in the table"),
    (["--time-column", "y"], "--time-column 'y' is the target"),
    (["--time-column", "when"], "--time-column 'when' has 3 rows with a missing or unreadable time"),
    (["--time-column", "day", "--groups", "x0"], "--groups and --time-column cannot be combined"),
])
def test_a_bad_time_column_is_one_clear_line(tmp_path: Path, args: list[str], needle: str) -> None:
    frame = dated_frame()
    frame["when"] = frame["day"].where(np.arange(len(frame)) >= 3, "not a date")
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    result = invoke("search", str(source), "--target", "y", "--out", str(tmp_path / "run"), *args, "--n-trials", "1")
    assert_one_line_error(result, needle)


def test_a_timed_fit_bags_on_periods_and_a_resume_keeps_the_column(tmp_path: Path, tiny_space: Path) -> None:
    frame = dated_frame()
    _, report = api.fit(frame, target="y", time_column="day", model_dir=tmp_path / "m", n_trials=2,
                        space=str(tiny_space), pruner="none", gbt=False, threads=1, seed=0, quiet=True,
                        progress=False, cv_folds=3, folds=3)
    run = RunDir(tmp_path / "m-run")
    assert run.read_spec()["time_column"] == "day" and report.folds == 3
    assert report.repeats == 1  # 204 development rows would get 3 repeats of shuffled folds
    order = run.dev_time_order()
    assert order is not None and sorted(order) == sorted(set(order))
    assert "day" in [c["name"] for c in read_spec(tmp_path / "m")["input_schema"]]
    assert len(api.load(tmp_path / "m").predict(frame.drop(columns=["y"]).head(20))) == 20
    api.search(frame, out=tmp_path / "m-run", target="y", n_trials=3, space=str(tiny_space), pruner="none",
               threads=1, seed=0, quiet=True, progress=False)
    assert RunDir(tmp_path / "m-run").read_spec()["time_column"] == "day"
    with pytest.raises(DataError, match="cannot be combined"):
        load_dataset(frame, target="y", time_column="day", groups="x0")

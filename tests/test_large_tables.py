"""Large tables (issue 13): the synthetic table generator, the search on a sample of the rows, the
preprocessing that reads a part of a table a column at a time, and chunked prediction.

Everything here runs on a few thousand rows and is bounded by trial and epoch counts; the cost curve at
10k, 100k and 1M rows is ``benchmarks/scale.py`` (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState

from automl_dnn import api, memory_guard, predictor as predictor_module, search_rows, workers
from automl_dnn.budget import MIN_SEARCH_ROWS, WATCH_ROWS, plan_search_rows, trial_share
from automl_dnn.data import FeaturePreprocessor, read_table
from automl_dnn.data import merge_counted_notes
from automl_dnn.files import load_arrays
from automl_dnn.run_folder import RunDir, SearchOptions, prepare_run
from automl_dnn.study import open_study
from tests.conftest import GUARDED_SPACE, TINY_SPACE, invoke

ROOT = Path(__file__).resolve().parents[1]


def _load_generator() -> ModuleType:
    """benchmarks/ is no package: the generator is imported from its path."""
    spec = importlib.util.spec_from_file_location("make_table", ROOT / "benchmarks" / "make_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_table"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


make_table = _load_generator()


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> object:
    """2,000 rows x 20 feature columns, binary, as Parquet."""
    return make_table.make_table(tmp_path_factory.mktemp("large") / "t.parquet", rows=2000, columns=20, seed=3)


# --- the generator ------------------------------------------------------------------------------


def test_the_table_has_the_documented_columns_kinds_and_missing_cells(table: object) -> None:
    frame = pd.read_parquet(table.path)
    numbers = [f"x{j:03d}" for j in range(18)]
    assert list(frame.columns) == ["cat", "date", *numbers, "y"] == [*table.columns, "y"]
    assert len(frame) == 2000
    assert pd.api.types.is_datetime64_any_dtype(frame["date"])
    assert all(pd.api.types.is_float_dtype(frame[c]) for c in numbers)
    assert set(frame["y"].unique()) == {0, 1}
    with_missing = [c for c in numbers if frame[c].isna().any()]
    assert with_missing == [f"x{j:03d}" for j in range(18) if j % 7 == 3]
    for column in with_missing:
        assert 0.06 < frame[column].isna().mean() < 0.14
    assert 0.005 < frame["cat"].isna().mean() < 0.04
    assert frame["date"].notna().all() and frame["date"].min() >= pd.Timestamp("2015-01-01")
    assert (frame["x003"].dropna() % 1 == 0).all()  # j mod 5 == 3: integers
    assert (frame["x002"] > 0).all()  # j mod 5 == 2: right-skewed and positive
    assert frame["x001"].mean() == pytest.approx(5000, abs=150)  # j mod 5 == 1: large scale


def test_the_many_level_column_has_as_many_levels_as_the_rows_allow(table: object) -> None:
    frame = pd.read_parquet(table.path)
    assert table.levels == 1000 == make_table.n_levels(2000)  # 2,000 rows: at most 1,000 levels
    assert frame["cat"].dropna().str.fullmatch(r"L\d{5}").all()
    assert frame["cat"].dropna().map(lambda v: int(v[1:])).max() < table.levels
    assert make_table.n_levels(20_000) == make_table.n_levels(1_000_000) == make_table.LEVELS == 10_000


def test_ten_thousand_levels_on_a_larger_table(tmp_path: Path) -> None:
    info = make_table.make_table(tmp_path / "t.parquet", rows=40_000, columns=3, seed=0)
    cat = pd.read_parquet(info.path)["cat"].dropna()
    assert info.levels == 10_000
    assert cat.map(lambda v: int(v[1:])).max() > 9_000  # the tail of the 10,000 levels is drawn too
    assert cat.nunique() > 5_000


def test_the_signal_is_the_documented_one(table: object) -> None:
    frame = pd.read_parquet(table.path)
    y = frame["y"].astype(float)
    assert frame["x000"].corr(y) > 0.2  # + z0
    assert frame["x001"].corr(y) < -0.15  # - 0.8 z1, shown as 1000 z + 5000
    assert abs(frame["x010"].corr(y)) < 0.1  # a noise column
    effects = make_table.level_effects(table.levels, 3)
    assert np.count_nonzero(effects) == table.levels // make_table.SIGNAL_LEVEL_EVERY


def test_the_same_seed_gives_the_same_table_whatever_the_chunks_and_the_format(tmp_path: Path) -> None:
    a = make_table.make_table(tmp_path / "a.parquet", rows=1500, columns=8, seed=1)
    b = make_table.make_table(tmp_path / "b.parquet", rows=1500, columns=8, seed=1, chunk_rows=400)
    c = make_table.make_table(tmp_path / "c.csv", rows=1500, columns=8, seed=1, chunk_rows=700)
    pd.testing.assert_frame_equal(pd.read_parquet(a.path), pd.read_parquet(b.path))
    parquet, csv = pd.read_parquet(a.path), pd.read_csv(c.path)
    assert list(csv.columns) == list(parquet.columns)
    np.testing.assert_allclose(csv["x000"], parquet["x000"], rtol=1e-6, atol=1e-9)
    assert (csv["date"] == parquet["date"].dt.strftime("%Y-%m-%d")).all()
    assert (csv["y"] == parquet["y"]).all()
    other = make_table.make_table(tmp_path / "d.parquet", rows=1500, columns=8, seed=2)
    assert not pd.read_parquet(other.path)["x000"].equals(parquet["x000"])


def test_a_regression_table(tmp_path: Path) -> None:
    info = make_table.make_table(tmp_path / "r.parquet", rows=1000, columns=5, task="regression", seed=0)
    frame = pd.read_parquet(info.path)
    assert pd.api.types.is_float_dtype(frame["y"]) and frame["y"].nunique() > 900
    assert frame["x000"].corr(frame["y"]) > 0.2


# --- preprocessing a part of a table ------------------------------------------------------------


def test_fit_scalings_and_row_transforms_equal_the_frame_copies(table: object) -> None:
    frame = read_table(table.path).drop(columns=["y"])
    rows = np.sort(np.random.default_rng(0).choice(len(frame), 1400, replace=False))
    rest = np.setdiff1d(np.arange(len(frame)), rows)
    fitted = FeaturePreprocessor.fit_scalings(frame, ["quantile", "robust", "standard"], rows=rows)
    part, other = frame.iloc[rows].reset_index(drop=True), frame.iloc[rest].reset_index(drop=True)
    for scaling, pre in fitted.items():
        alone = FeaturePreprocessor().fit(part, scaling)
        assert pre.to_dict() == alone.to_dict()
        np.testing.assert_array_equal(pre.transform(frame, rows=rest), alone.transform(other))
        pd.testing.assert_frame_equal(pre.transform_for_gbt(frame, rows=rest), alone.transform_for_gbt(other))


def test_the_gbt_frame_keeps_its_numbers_in_one_block_in_column_order(table: object) -> None:
    frame = read_table(table.path).drop(columns=["y"])
    gbt = FeaturePreprocessor().fit(frame).transform_for_gbt(frame)
    assert gbt.columns[0] == "cat" and isinstance(gbt["cat"].dtype, pd.CategoricalDtype)
    assert list(gbt.columns[1:6]) == [f"date__{p}" for p in ("year", "month", "day", "day_of_week", "day_of_year")]
    assert all(gbt[c].dtype == np.float32 for c in gbt.columns[1:])
    assert len({id(b) for b in gbt._mgr.blocks}) == 2  # the numbers' block and the category


def test_counted_notes_of_chunks_add_up() -> None:
    notes = ["column 'a': 3 values could not be read as numbers and were treated as missing", "ignored 1 column",
             "column 'a': 4 values could not be read as numbers and were treated as missing",
             "column 'b': 2 values not seen in training were treated as unknown", "ignored 1 column"]
    assert merge_counted_notes(notes) == [
        "column 'a': 7 values could not be read as numbers and were treated as missing", "ignored 1 column",
        "column 'b': 2 values not seen in training were treated as unknown"]


# --- the search's sample of the rows -----------------------------------------------------------


def test_small_tables_search_on_every_row() -> None:
    plan = plan_search_rows(MIN_SEARCH_ROWS, 2000, 2000, row_seconds=1.0, seconds=1.0)
    assert not plan.sampled and plan.note is None
    plan = plan_search_rows(70_000, 15_000, 15_000, row_seconds=1e-6, seconds=600)
    assert not plan.sampled and plan.note is None


def test_a_large_table_searches_on_a_sample_sized_by_the_measured_cost() -> None:
    plan = plan_search_rows(700_000, 150_000, 150_000, row_seconds=112e-6, seconds=440, budget=513)
    assert plan.sampled and plan.watch == WATCH_ROWS
    # a trial's share of the 513 s budget (513 / 8), 5 epochs, every validation and test row predicted
    steps = 513 / 8 / 112e-6 - 300_000 / 3
    assert plan.train == pytest.approx(steps / 5 - WATCH_ROWS / 3, rel=0.01)
    assert plan.note == (f"the search trains its nets on {plan.train:,} of the 700,000 training rows (each epoch "
                         "scored on 25,000 of the 150,000 validation rows) to fit the 513s budget; the final models "
                         "train on every row")
    slower = plan_search_rows(700_000, 150_000, 150_000, row_seconds=224e-6, seconds=440)
    assert MIN_SEARCH_ROWS <= slower.train < plan.train
    hopeless = plan_search_rows(700_000, 150_000, 150_000, row_seconds=1.0, seconds=10)
    assert hopeless.train == MIN_SEARCH_ROWS
    no_budget = plan_search_rows(700_000, 150_000, 150_000, row_seconds=112e-6, seconds=440)
    assert no_budget.train == pytest.approx((440 / 8 / 112e-6 - 300_000 / 3) / 5 - WATCH_ROWS / 3, rel=0.01)


def test_a_short_budget_sizes_the_sample_for_the_trials_it_runs() -> None:
    """At 60 s a trial gets a quarter of the budget (trial_share), so a mid-size table is searched on every
    row; sized for 8 trials in the time left, the search took a 16,600-row sample of diamonds' 36,679."""
    assert trial_share(52.0) == 13.0
    plan = plan_search_rows(36_679, 6_473, 0, row_seconds=65e-6, seconds=52.0, budget=52.0)
    assert not plan.sampled and plan.note is None
    sampled = plan_search_rows(36_679, 6_473, 0, row_seconds=65e-6, seconds=52.0)  # 52 s / 8 per trial
    assert sampled.sampled and sampled.train < 20_000
    # a trial's share is never more than the time left
    late = plan_search_rows(36_679, 6_473, 0, row_seconds=65e-6, seconds=10.0, budget=52.0)
    assert late.train == pytest.approx((10.0 / 65e-6 - 6_473 / 3) / 5 - 6_473 / 3, rel=0.01)


def test_rows_are_read_a_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn.files import save_arrays

    X = np.arange(1000 * 3, dtype=np.float32).reshape(1000, 3)
    save_arrays(tmp_path / "a.safetensors", {"X": X})
    monkeypatch.setattr(search_rows, "CHUNK_ROWS", 64)
    rows = search_rows.sample_positions(1000, 333, seed=0)
    assert np.all(np.diff(rows) > 0) and len(rows) == 333
    np.testing.assert_array_equal(search_rows.read_rows(tmp_path / "a.safetensors", "X", rows), X[rows])
    np.testing.assert_array_equal(search_rows.read_rows(tmp_path / "a.safetensors", "X"), X)
    np.testing.assert_array_equal(search_rows.sample_positions(1000, 333, seed=0), rows)
    assert len(search_rows.sample_positions(10, 20, seed=0)) == 10


def _sampled_run(table: object, out: Path, space: Path, storage: str | None = None) -> RunDir:
    """A run folder whose search was decided to sample 600 of its training rows (as a budget would)."""
    spec, _ = prepare_run(SearchOptions(source=table.path, out=out, target="y", space=str(space), cv_folds=1,
                                        storage=storage))
    run = RunDir(out)
    plan = search_rows.decide(run, spec, row_seconds=lambda: 1e-3, deadline=10**12, budget=60, seed=0,
                              resumed=False)
    assert plan is None or not plan.sampled  # 1,400 training rows: below the rows that are ever sampled
    split = load_arrays(run.split_path)
    split[search_rows.SEARCH_TRAIN_KEY] = search_rows.sample_positions(len(split["train"]), 600, 0)
    split[search_rows.SEARCH_WATCH_KEY] = search_rows.sample_positions(len(split["valid"]), 200, 1)
    from automl_dnn.files import save_arrays

    save_arrays(run.split_path, split)
    return run


def test_trials_read_the_sample_and_every_validation_row(table: object, tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    run = _sampled_run(table, tmp_path / "run", space)
    data = search_rows.trial_data(run, "standard")
    full = load_arrays(run.data_path("standard"))
    train, watch = search_rows.search_sample(run)
    np.testing.assert_array_equal(data["X_train"], full["X_train"][train])
    np.testing.assert_array_equal(data["y_train"], full["y_train"][train])
    np.testing.assert_array_equal(data["X_valid"], full["X_valid"])
    np.testing.assert_array_equal(data["X_test"], full["X_test"])
    assert not {"X_valid", "X_test"} & set(data.keys()), "read from the file when asked for, not held"
    np.testing.assert_array_equal(data["X_watch"], full["X_valid"][watch])
    assert set(search_rows.trial_data(RunDir(tmp_path / "run"), "standard")) == set(data)
    assert search_rows.n_search_train(run, len(full["X_train"])) == 600
    again = search_rows.decide(run, json.loads(run.spec_path.read_text()), row_seconds=lambda: 1.0, deadline=None,
                               budget=None, seed=0, resumed=True)
    assert (again.train, again.watch) == (600, 200)  # a resumed search keeps its sample


def test_a_trial_bigger_than_a_large_table_fails_with_its_reason_and_the_search_goes_on(
        table: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: in a search on a sample of a large table a trial may take the table's size in memory, whatever
    the machine has (at 1M x 100 a TabM k = 8 trial of 1,024-row batches took the fit over 4x the table)."""
    space = tmp_path / "guarded.yaml"
    space.write_text(GUARDED_SPACE)
    run = _sampled_run(table, tmp_path / "run", space)
    monkeypatch.setattr(memory_guard, "LARGE_TABLE_TRIAL_FLOOR", 20 * 2**20)  # the 2,000-row table is ~200 kB
    summary = api.search(table.path, out=run.root, target="y", space=str(space), n_trials=2, cv_folds=1,
                         pruner="none", quiet=True, progress=False)
    assert summary.n_complete == 2 and summary.n_failed >= 1  # a failed trial does not count to --n-trials
    study = open_study(run.read_spec(), create=False)
    assert {t.params["d_hidden"] for t in study.trials if t.state == TrialState.COMPLETE} == {8}
    for trial in study.get_trials(states=(TrialState.FAIL,)):
        assert trial.params["d_hidden"] == 2048
        assert trial.user_attrs["fail_reason"].startswith("too big for a table this large: needs ~")
        assert "a trial may take ~21 MB here" in trial.user_attrs["fail_reason"]


def test_the_allowance_is_the_encoded_table_or_the_floor_and_only_on_the_cpu() -> None:
    assert memory_guard.large_table_allowance(2_000_000, 118) == 944_000_000
    assert memory_guard.large_table_allowance(1_000, 118) == memory_guard.LARGE_TABLE_TRIAL_FLOOR
    from automl_dnn.space import settings_from_values

    settings = settings_from_values({"n_layers": 2, "d_hidden": 512, "batch_size": 256})
    data = {"X_train": np.zeros((1000, 10), np.float32), "y_valid": np.zeros(100)}
    reason = memory_guard.check_trial_memory(settings, data, d_out=1, device="cpu", allowance=1000,
                                             available=(10**12, "test"))
    assert reason is not None and reason.startswith("too big for a table this large")
    assert memory_guard.check_trial_memory(settings, data, d_out=1, device="cpu", allowance=10**9,
                                           available=(10**12, "test")) is None


# --- fit, export, predict ----------------------------------------------------------------------


def test_a_tiny_fit_on_the_generated_table_exports_and_predicts(table: object, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    result = invoke("fit", table.path, "--target", "y", "--model", tmp_path / "model", "--out", tmp_path / "run",
                    "--space", space, "--n-trials", 2, "--gbt-trials", 1, "--folds", 1, "--cv-folds", 1,
                    "--no-report", "--quiet")
    assert result.exit_code == 0, result.output
    frame = read_table(table.path)
    model = api.load(tmp_path / "model")
    whole = model.predict_proba(frame)
    monkeypatch.setattr(predictor_module, "PREDICT_CHUNK_ROWS", 300)  # 7 chunks
    np.testing.assert_allclose(model.predict_proba(frame), whole, rtol=1e-6, atol=1e-7)
    out = tmp_path / "pred.parquet"
    result = invoke("predict", tmp_path / "model", table.path, "--out", out)
    assert result.exit_code == 0, result.output
    predicted = pd.read_parquet(out)
    assert len(predicted) == len(frame) and set(predicted["prediction"].unique()) <= {0, 1}
    np.testing.assert_allclose(predicted["proba_1"], whole[:, 1], rtol=1e-6, atol=1e-7)


def test_a_search_on_a_sample_runs_one_worker_under_jobs_auto(table: object, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13's memory bound is one worker's: a second would hold a second copy of the sampled rows."""
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    run = _sampled_run(table, tmp_path / "run", space, storage=f"journal:///{tmp_path / 'study.journal'}")
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    summary = api.search(table.path, out=run.root, target="y", space=str(space), n_trials=2, time_budget=3600.0,
                         jobs="auto", device="cpu", cv_folds=1, quiet=True, progress=False)
    assert (summary.jobs, summary.threads) == (1, None)
    trials = open_study(run.read_spec(), create=False).trials
    assert len(trials) == 2 and {t.user_attrs["worker"]["pid"] for t in trials} == {os.getpid()}


def test_a_search_on_a_sample_trains_its_nets_on_it_and_refits_them_on_every_row(table: object,
                                                                                  tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(TINY_SPACE)
    run = _sampled_run(table, tmp_path / "run", space)
    summary = api.search(table.path, out=run.root, target="y", space=str(space), n_trials=2, cv_folds=1,
                         quiet=True, progress=False)
    assert summary.n_complete >= 1 and summary.n_complete + summary.n_pruned == 2 and summary.n_failed == 0
    report = api.ensemble(run.root, model_dir=tmp_path / "model", gbt=False, folds=1)
    assert len(report.selected) >= 1
    refit = [n for n in report.notes if "refit on every training + validation row (the search trained on 600)" in n]
    assert len(refit) == 1, report.notes
    members = json.loads((tmp_path / "model" / "model.json").read_text())["members"]
    # the exported nets saw every row: a net searched on the sample is not kept beside its refit
    assert members and all(m["name"].endswith("-refit") for m in members)
    saved = json.loads(next((run.root / "bagging").glob("net-*/refit/config.json")).read_text())
    assert saved["train_rows"] == 1400 + 300  # every training and validation row
    model = api.load(tmp_path / "model")
    frame = read_table(table.path)
    assert model.predict_proba(frame).shape == (len(frame), 2)

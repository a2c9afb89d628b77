"""--groups COLUMN: rows of one group never straddle the train/valid/test split or a fold, and the column
is no feature. Bounded by trial and epoch counts on toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from automl_dnn import api
from automl_dnn.data import load_dataset
from automl_dnn.errors import AutoDNNError, DataError
from automl_dnn.files import load_arrays
from automl_dnn.folds import make_folds
from automl_dnn.model_folder import read_spec
from automl_dnn.run_folder import RunDir
from tests.conftest import assert_one_line_error, invoke, toy_frame


def grouped_frame(n: int = 240, n_groups: int = 30):
    frame = toy_frame(n)
    frame["patient"] = [f"p{i % n_groups}" for i in range(n)]
    return frame


def test_whole_groups_fall_on_one_side_of_the_split_and_the_column_is_no_feature() -> None:
    frame = grouped_frame()
    data = load_dataset(frame, target="y", groups="patient", seed=3)
    assert "patient" not in data.features.columns and data.groups is not None
    sides = {part: set(frame["patient"].iloc[rows]) for part, rows in data.split.items()}
    assert not sides["train"] & sides["valid"] and not sides["train"] & sides["test"]
    assert not sides["valid"] & sides["test"]
    assert sum(len(rows) for rows in data.split.values()) == len(frame)
    assert any("by the 30 groups of 'patient'" in note for note in data.notes)


def test_grouped_folds_keep_each_group_out_of_one_fold() -> None:
    groups = np.repeat(np.arange(12), 5)
    y = np.tile([0, 1, 0, 1, 1], 12)
    folds = make_folds(y, "binary", k=4, repeats=2, groups=groups)
    for r in range(2):
        for g in range(12):
            assert len(set(folds.assignment[r, groups == g])) == 1
    with pytest.raises(AutoDNNError, match="3 groups are too few for 4 folds"):
        make_folds(y[:15], "binary", k=4, groups=groups[:15])


@pytest.mark.parametrize("column, needle", [("nope", "--groups column 'nope' is not in the table"),
                                            ("y", "--groups 'y' is the target")])
def test_a_bad_groups_column_is_one_clear_line(tmp_path: Path, column: str, needle: str) -> None:
    source = tmp_path / "t.csv"
    grouped_frame().to_csv(source, index=False)
    result = invoke("search", str(source), "--target", "y", "--out", str(tmp_path / "run"), "--groups", column,
                    "--n-trials", "1")
    assert_one_line_error(result, needle)


def test_too_few_groups_for_the_split_is_refused() -> None:
    with pytest.raises(DataError, match="has 2 group"):
        load_dataset(grouped_frame(n_groups=2), target="y", groups="patient")


def test_a_grouped_fit_cross_validates_and_bags_by_group_and_predicts_without_the_column(
        tmp_path: Path, tiny_space: Path) -> None:
    frame = grouped_frame()
    summary, report = api.fit(frame, target="y", groups="patient", model_dir=tmp_path / "m", n_trials=2,
                              space=str(tiny_space), pruner="none", gbt=False, threads=1, seed=0, quiet=True,
                              progress=False, cv_folds=3, folds=3)
    run = RunDir(tmp_path / "m-run")
    spec = run.read_spec()
    assert spec["groups"] == "patient" and spec["cv_folds"] == 3 and report.folds == 3
    split = load_arrays(run.split_path)
    assert len(run.dev_groups()) == len(split["train"]) + len(split["valid"])
    assert "patient" not in [c["name"] for c in read_spec(tmp_path / "m")["input_schema"]]
    pred = api.load(tmp_path / "m").predict(frame.drop(columns=["y", "patient"]).head(20))
    assert len(pred) == 20
    # a resume without --groups keeps the recorded one
    api.search(frame, out=tmp_path / "m-run", target="y", n_trials=3, space=str(tiny_space), pruner="none",
               threads=1, seed=0, quiet=True, progress=False)
    assert RunDir(tmp_path / "m-run").read_spec()["groups"] == "patient"

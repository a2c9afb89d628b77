"""ensemble_step.ensemble_run on small real searches: report, weights, XGBoost, damaged runs, threshold.

Searches are bounded by trial counts (space "quick", no pruner, one torch thread), never by wall time.
The runs and models built here are cached per test session (``searched`` / ``ensembled``) and reused
read-only by tests/test_export.py.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl_dnn import api
from automl_dnn import budget, gbt, metrics
from automl_dnn.data import read_table
from automl_dnn.ensemble import choose_threshold
from automl_dnn.ensemble_step import (REFIT_EXPORT_SHARE, EnsembleReport, ensemble_run, refit_deadline,
                                      refits_that_fit)
from automl_dnn.errors import AutoDNNError, DataError
from automl_dnn.files import load_arrays
from automl_dnn.gbt import BackgroundGBT
from automl_dnn.run_folder import RunDir, SearchOptions, load_trial, prepare_run, trial_folder
from automl_dnn.study import open_study
from tests.conftest import no_trial_completes

TASKS = {"breast_cancer": "binary", "digits": "multiclass", "diabetes": "regression"}
N_TRIALS = 3
SEARCH = dict(space="quick", pruner="none", threads=1, seed=0, quiet=True, progress=False)

_RUNS: dict[str, Path] = {}
_MODELS: dict[str, tuple[Path, EnsembleReport]] = {}


def searched(name: str, factory: pytest.TempPathFactory) -> Path:
    """A finished search of builtin:NAME (cached for the session: tests must not modify it)."""
    if name not in _RUNS:
        out = factory.mktemp(f"run-{name}") / name
        api.search(f"builtin:{name}", out=out, n_trials=N_TRIALS, **SEARCH)
        _RUNS[name] = out
    return _RUNS[name]


def ensembled(name: str, factory: pytest.TempPathFactory) -> tuple[Path, EnsembleReport]:
    """The model folder and report of ``searched(name)`` with one XGBoost trial (cached, read-only)."""
    if name not in _MODELS:
        run = searched(name, factory)
        model = factory.mktemp(f"model-{name}") / "model"
        _MODELS[name] = model, ensemble_run(run, model_dir=model, gbt_trials=1, threads=1)
    return _MODELS[name]


def small_csv_run(folder: Path, n_trials: int = 2) -> tuple[Path, Path]:
    """A private search of a CSV copy of builtin:wine, for tests that damage their run."""
    source = folder / "wine.csv"
    read_table("builtin:wine").to_csv(source, index=False)
    out = folder / "run"
    api.search(str(source), out=out, target="target", n_trials=n_trials, **SEARCH)
    return source, out


# --- the three tasks ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TASKS))
def test_ensemble_report_end_to_end(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    model, report = ensembled(name, tmp_path_factory)
    assert report.task == TASKS[name] and report.model_dir == model
    kinds = [row.kind for row in report.members]
    assert kinds.count("net") == N_TRIALS and kinds.count("xgboost") == 1
    for row in report.members:
        assert math.isfinite(row.valid) and math.isfinite(row.test) and row.description
    assert sum(row.weight for row in report.members) == pytest.approx(1.0)
    assert len(report.selected) >= 1
    names = [row.name for row in report.summary]
    assert names[0].startswith("best single model") and names[1].startswith("equal-weight average")
    assert names[2] == "weighted ensemble"
    for row in report.summary:
        assert all(math.isfinite(v) for v in (row.valid, row.test, row.valid_loss, row.test_loss))
    assert set(report.seconds) == {"gbt", "bagging", "weights", "export"} and report.folds == 1
    assert report.has_test and (model / "model.json").is_file()


@pytest.mark.parametrize("name", list(TASKS))
def test_ensemble_never_loses_to_the_best_single_model_on_validation(
        name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    _, report = ensembled(name, tmp_path_factory)
    best, _, weighted = report.summary  # the default metrics are the losses, so "best" is by loss too
    assert weighted.valid_loss <= best.valid_loss + 1e-9


def test_report_rows_feed_the_printer(tmp_path_factory: pytest.TempPathFactory) -> None:
    _, report = ensembled("digits", tmp_path_factory)
    rows = report.rows
    assert len(rows) == len(report.members) + 3
    assert all(list(r) == list(rows[0]) for r in rows)
    assert rows[-1]["model"] == "weighted ensemble"
    assert json.dumps(report.to_dict(), default=str)


def test_model_members_match_the_report(tmp_path_factory: pytest.TempPathFactory) -> None:
    model, report = ensembled("diabetes", tmp_path_factory)
    spec = json.loads((model / "model.json").read_text())
    # not bagged: each chosen net is exported as its refit on every training + validation row and as searched,
    # the two sharing its weight
    expected = {}
    for row in report.selected:
        expected.update({row.name + "-refit": row.weight / 2, row.name: row.weight / 2} if row.kind == "net"
                        else {row.name: row.weight})
    assert {m["name"]: m["weight"] for m in spec["members"]} == pytest.approx(expected)
    assert any("refit on every training + validation row, each exported beside its net as searched; weights "
               "fitted on" in n for n in report.notes)
    assert spec["threshold"] is None and spec["task"] == "regression"


def test_binary_threshold_is_stored(tmp_path_factory: pytest.TempPathFactory) -> None:
    model, report = ensembled("breast_cancer", tmp_path_factory)
    spec = json.loads((model / "model.json").read_text())
    assert spec["threshold"] == report.threshold
    assert any("decision threshold" in note for note in report.notes)


def test_no_gbt_and_top_k(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = searched("digits", tmp_path_factory)
    report = ensemble_run(run, model_dir=tmp_path / "m", gbt=False, top_k=1)
    assert [row.kind for row in report.members] == ["net"] * N_TRIALS
    assert len(report.selected) == 1 and report.selected[0].weight == pytest.approx(1.0)
    assert report.seconds["gbt"] < 0.5
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    trial = report.selected[0].name  # one net: its refit and its searched copy
    assert sorted(m["name"] for m in spec["members"]) == [trial, f"{trial}-refit"]
    assert not (tmp_path / "m" / "xgboost.ubj").exists()
    ensemble_run(run, model_dir=tmp_path / "one", gbt=False, top_k=1, bag_mode="refit")  # the refit alone
    spec = json.loads((tmp_path / "one" / "model.json").read_text())
    assert [(m["name"], m["weight"]) for m in spec["members"]] == [(f"{trial}-refit", 1.0)]


def test_no_test_split_leaves_test_scores_empty(tmp_path: Path) -> None:
    out = tmp_path / "run"
    api.search("builtin:wine", out=out, n_trials=1, test_size=0.0, **SEARCH)
    report = ensemble_run(out, model_dir=tmp_path / "m", gbt=False)
    assert not report.has_test and report.warnings == []
    assert all(math.isnan(row.test) for row in report.members + report.summary)
    assert all(math.isfinite(row.valid) for row in report.summary)


# --- damaged or unusable runs -------------------------------------------------------------------


def test_no_completed_trial_is_refused(tmp_path: Path) -> None:
    spec, _ = prepare_run(SearchOptions(source="builtin:wine", out=tmp_path / "run", space="quick"))
    open_study(spec)  # an empty study: the search never ran a trial
    with pytest.raises(AutoDNNError, match="no completed trial in .*automl-dnn search"):
        ensemble_run(tmp_path / "run", model_dir=tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_not_a_run_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AutoDNNError, match="not a run folder"):
        ensemble_run(tmp_path, model_dir=tmp_path / "m")


def test_missing_artifacts_are_skipped_with_a_note(tmp_path: Path) -> None:
    _, run = small_csv_run(tmp_path, n_trials=2)
    spec = RunDir(run).read_spec()
    folders = sorted(Path(spec["artifacts"]).glob("trial-*"))
    assert len(folders) == 2
    shutil.rmtree(folders[0])
    report = ensemble_run(run, model_dir=tmp_path / "m", gbt=False)
    assert [row.trial for row in report.members] == [int(folders[1].name[6:])]
    assert any(f"skipped trial {int(folders[0].name[6:])}" in note for note in report.notes)
    shutil.rmtree(folders[1])
    with pytest.raises(AutoDNNError, match="has its artifacts"):
        ensemble_run(run, model_dir=tmp_path / "m2", gbt=False)


def test_changed_source_is_refused_for_xgboost(tmp_path: Path) -> None:
    source, run = small_csv_run(tmp_path, n_trials=1)
    report = ensemble_run(run, model_dir=tmp_path / "m", gbt_trials=1, threads=1)
    assert any(row.kind == "xgboost" for row in report.members)
    df = pd.read_csv(source)
    df.loc[0, "alcohol"] += 1.0
    df.to_csv(source, index=False)
    with pytest.raises(AutoDNNError, match="changed since the search.*--no-gbt"):
        ensemble_run(run, model_dir=tmp_path / "m2", gbt_trials=1, threads=1)
    source.unlink()
    with pytest.raises(AutoDNNError, match="cannot reload .*--no-gbt"):
        ensemble_run(run, model_dir=tmp_path / "m2", gbt_trials=1, threads=1)
    ensemble_run(run, model_dir=tmp_path / "m2", gbt=False)  # the nets alone still work
    assert (tmp_path / "m2" / "model.json").is_file()


def test_dataframe_source_is_kept_so_xgboost_joins(tmp_path: Path) -> None:
    frame = read_table("builtin:wine")
    api.search(frame, out=tmp_path / "run", target="target", n_trials=1, **SEARCH)
    report = ensemble_run(tmp_path / "run", model_dir=tmp_path / "m", gbt_trials=1)
    assert sorted(row.kind for row in report.members) == ["net", "xgboost"]
    assert not any("XGBoost left out" in note for note in report.notes)


# --- the decision threshold ---------------------------------------------------------------------


def _shifted_scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(np.int64)  # 20 % positives whose scores sit around 0.3
    return y, np.clip(np.where(y == 1, 0.3, 0.1) + rng.normal(0, 0.05, 400), 0, 1)


@pytest.mark.parametrize("metric", ["accuracy", "balanced_accuracy"])
def test_threshold_moves_for_a_label_metric_and_maximizes_it(metric: str) -> None:
    y, p1 = _shifted_scores()
    cut, note = choose_threshold(y, p1, metric)
    assert cut is not None and 0.1 < cut < 0.3 and metric.replace("_", " ") in note
    proba = np.stack([1 - p1, p1], axis=1)
    at_cut = metrics.score(metric, y, proba, cut)
    assert at_cut > metrics.score(metric, y, proba) + 0.005
    assert all(metrics.score(metric, y, proba, float(t)) <= at_cut for t in np.arange(0.02, 0.98, 0.01))


@pytest.mark.parametrize("metric", ["logloss", "roc_auc"])
def test_threshold_never_moves_for_a_probability_metric(metric: str) -> None:
    y, p1 = _shifted_scores()  # the same scores a label metric moves the cut for
    cut, note = choose_threshold(y, p1, metric)
    assert cut is None and metric in note


def test_threshold_stays_at_half_when_nothing_is_gained() -> None:
    y = np.array([0, 0, 1, 1] * 25)
    p1 = np.where(y == 1, 0.9, 0.1)
    assert choose_threshold(y, p1, "accuracy")[0] is None


def test_label_metrics_score_the_labels_at_the_threshold() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8], [0.9, 0.1]])
    assert metrics.score("accuracy", y, proba) == 0.75  # at 0.5 the second row is wrong
    assert metrics.score("accuracy", y, proba, 0.35) == 1.0
    assert metrics.score("logloss", y, proba, 0.35) == metrics.score("logloss", y, proba)


def test_a_model_path_that_is_not_a_model_folder_is_refused_first(tmp_path_factory: pytest.TempPathFactory,
                                                                  tmp_path: Path) -> None:
    run = searched("diabetes", tmp_path_factory)
    (tmp_path / "file").write_text("x")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "keep.txt").write_text("x")
    for bad, message in ((tmp_path / "file", "is a file"), (tmp_path / "file" / "m", "lies under the file"),
                         (tmp_path / "project", "not empty and holds no model.json")):
        # A path in the way: PathError (StorageError before), both AutoDNNError.
        with pytest.raises(AutoDNNError, match=message):
            ensemble_run(run, model_dir=bad)
    assert (tmp_path / "project" / "keep.txt").read_text() == "x"


# --- XGBoost beside the search (fit) ------------------------------------------------------------


def test_background_gbt_trains_beside_the_search_and_exports_its_refit_copy(tmp_path: Path) -> None:
    background = BackgroundGBT(n_trials=2, seed=0, threads=1)
    api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=1, on_prepared=background.start, **SEARCH)
    assert background._thread is not None  # started by the search, before its first trial
    report = ensemble_run(tmp_path / "run", model_dir=tmp_path / "m", gbt=background)
    xgb_row = next(row for row in report.members if row.kind == "xgboost")
    assert any("2 trials" in n and "training + validation" in n for n in report.notes)
    assert math.isfinite(xgb_row.valid) and math.isfinite(xgb_row.test)
    # The exported copy boosts as many more rounds as it has more rows than the training split.
    rows = load_arrays(RunDir(tmp_path / "run").split_path)
    grow = (len(rows["train"]) + len(rows["valid"])) / len(rows["train"])
    train_rounds = int(xgb_row.description.split(", ")[-1].split()[0])
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    exported = next(m for m in spec["members"] if m["kind"] == "xgboost")
    assert exported["best_iteration"] + 1 == round(train_rounds * grow) > train_rounds


def test_a_fit_whose_budget_ends_before_any_net_trial_exports_xgboost_alone_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide table on one core: the budget ended before a net trial completed, while XGBoost's thread beside the
    search had its model. The fit exports XGBoost alone with a note (it failed, losing it); the model, its report
    page and the study all work, and a rerun into the same run folder resumes the study and adds nets."""
    no_trial_completes(monkeypatch)
    run, model = tmp_path / "run", tmp_path / "m"
    options = dict(out=run, model_dir=model, gbt_trials=1, jobs=1, space="quick", pruner="none", threads=1, seed=0,
                   quiet=True, progress=False)
    summary, report = api.fit("builtin:breast_cancer", time_budget=600, report_page=True, **options)
    assert (summary.n_complete, summary.n_pruned, summary.stopped_by) == (0, 1, "budget")
    assert [(row.kind, row.weight) for row in report.members] == [("xgboost", 1.0)]
    assert report.notes[0].startswith("no net trial completed within the time budget, so the model is XGBoost "
                                      "alone; a larger --time-budget adds nets")
    assert report.notes[0] in json.loads((model / "model.json").read_text())["notes"]
    predictor = api.load(model)
    frame = read_table("builtin:breast_cancer")
    assert repr(predictor).endswith("members=XGBoost)") and predictor.predict_proba(frame).shape == (len(frame), 2)
    assert report.page is not None and "No learning curve recorded for any net: no trial of the search completed" \
        in report.page.read_text()

    monkeypatch.undo()  # the search as it is: the study goes on from the cut trial, and nets join XGBoost
    summary, report = api.fit("builtin:breast_cancer", n_trials=2, folds=1, **options)
    assert (summary.n_complete, summary.n_pruned) == (1, 1)
    assert sorted(row.kind for row in report.members) == ["net", "xgboost"]
    assert not any(note.startswith("no net trial completed") for note in report.notes)


@pytest.mark.parametrize(("how", "xgboost", "error"), [
    ("cut short", "--no-gbt", r"the time budget ended before any trial completed \(1 cut short\)"),
    ("cut short", "no model", r"the time budget ended before any trial completed \(1 cut short\)"),
    ("interrupted", "a model", "interrupted before any trial completed; run the same command again to resume"),
    ("failed", "a model", "all 1 trials failed; first reason: diverged"),
])
def test_a_fit_with_no_trial_completed_keeps_its_error_unless_the_budget_ended_beside_an_xgboost_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, xgboost: str, error: str) -> None:
    """Without XGBoost beside the search (--no-gbt), or with none that finished, there is nothing to export; a Ctrl-C
    or trials that all failed say so as they did, whatever XGBoost has. No model folder is made."""
    no_trial_completes(monkeypatch, how)
    if xgboost == "no model":
        monkeypatch.setattr(gbt.BackgroundGBT, "start", lambda self, spec, dataset, deadline: None)
    with pytest.raises(AutoDNNError, match=error):
        api.fit("builtin:breast_cancer", out=tmp_path / "run", model_dir=tmp_path / "m", time_budget=600,
                gbt=xgboost != "--no-gbt", gbt_trials=1, jobs=1, space="quick", threads=1, quiet=True, progress=False)
    assert not (tmp_path / "m").exists()


def test_xgboost_bags_its_folds_in_its_thread_only_while_they_fit_before_the_deadline(tmp_path: Path) -> None:
    """A fold is started only if its estimate (the best trial's seconds, scaled to the fold's rows) ends by
    the deadline, and not at all once the nets are known not to be bagged (``skip_after``)."""
    from automl_dnn.bagging import gbt_fold_seconds, gbt_in_thread

    seen: list[tuple[bool, float | None]] = []
    background = BackgroundGBT(n_trials=1, seed=0, threads=1,
                               after=lambda run, member, stopped, deadline: seen.append((stopped(), deadline)))
    started = time.monotonic()
    api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=1,
               on_prepared=lambda spec, data, _: background.start(spec, data, time.time() + 3600), **SEARCH)
    member = background.result()
    assert member is not None and len(seen) == 1
    assert seen[0][0] is False and seen[0][1] == pytest.approx(started + 3600, abs=60)  # its deadline, monotonic
    background.skip_after()
    assert background._skip_after.is_set()

    # the fold estimate: the best trial's seconds x (fold rows / training rows)^2
    member.result.trials = [{"valid_loss": 0.5, "seconds": 4.0}, {"valid_loss": 0.2, "seconds": 2.0}]
    n_train, n_valid = len(member.labels["train"]), len(member.labels["valid"])
    fold_rows = 4 / 5 * (n_train + n_valid)
    assert gbt_fold_seconds(member, 5) == pytest.approx(2.0 * (fold_rows / n_train) ** 2)
    _, after = gbt_in_thread(5, seed=0, threads=1)
    after(RunDir(tmp_path / "run"), member, lambda: False, time.monotonic() + 1.0)  # 2.x s a fold: none starts
    assert member.bag is None and not (tmp_path / "run" / "bagging").exists()
    after(RunDir(tmp_path / "run"), member, lambda: True, None)  # stopped: none starts either
    assert member.bag is None
    after(RunDir(tmp_path / "run"), member, lambda: False, None)  # no deadline: all 5 folds
    assert member.bag is not None and member.bag.oof.shape[0] == n_train + n_valid


@pytest.mark.parametrize("xgboost_ahead", [True, False])
def test_xgboost_folds_that_cannot_end_by_the_deadline_leave_it_out_of_the_bagged_ensemble(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xgboost_ahead: bool) -> None:
    """Its thread bagged nothing (here: it never tries), and a fold would outlast the ensemble step's time:
    no fold is started and XGBoost is left out of the bagging, with a note, instead of overrunning the budget.
    An XGBoost that beats every net on validation is not dropped for a bag of weaker nets (a wide table on one
    core: ROC-AUC 0.78 bagged without it, 0.95 with it): members and weights stay on the validation split, with
    a note. One behind the nets leaves the bagging as it was. (Its validation predictions are set here, so
    that which side is ahead does not depend on one short search.)"""
    background = BackgroundGBT(n_trials=1, seed=0, threads=1, after=lambda *args: None)
    api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=1, on_prepared=background.start, **SEARCH)
    member = background.result()
    assert member is not None
    labels = member.labels["valid"]
    member.valid = (np.eye(2)[labels] * 0.98 + 0.01 if xgboost_ahead  # near-perfect, or a coin flip
                    else np.full((len(labels), 2), 0.5))
    monkeypatch.setattr("automl_dnn.bagging.gbt_fold_seconds", lambda member, k: 1e6)
    report = ensemble_run(tmp_path / "run", model_dir=tmp_path / "m", gbt=background, time_budget=600, folds=3)
    assert any("XGBoost left out of the bagged ensemble" in n for n in report.notes)
    xgb_rows = [row for row in report.members if row.kind == "xgboost"]
    if xgboost_ahead:
        assert report.folds == 1 and len(xgb_rows) == 1 and xgb_rows[0].weight > 0
        assert any("k-fold bagging set aside" in n for n in report.notes)
        model = api.load(tmp_path / "m")
        assert any(m["kind"] == "xgboost" for m in model.members)
    else:
        assert report.folds == 3 and not xgb_rows
        assert not any("k-fold bagging set aside" in n for n in report.notes)
    assert not (tmp_path / "run" / "bagging" / "xgboost").exists()


def test_xgboost_bagged_on_its_own_folds_joins_a_bag_of_the_nets_on_fewer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its thread bagged 3 folds; the nets' bagging (cut) uses 2: XGBoost joins with the thread's out-of-fold
    predictions as they are, with a note, and no fold copy of it is boosted again, even with no time to."""
    from automl_dnn.bagging import gbt_in_thread

    fits_after, after = gbt_in_thread(3, seed=0, threads=1)
    background = BackgroundGBT(n_trials=1, seed=0, threads=1, fits_after=fits_after, after=after)
    api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=1, on_prepared=background.start, **SEARCH)
    member = background.result()
    assert member is not None and member.bag is not None
    thread_folds = sorted(p.name for p in (tmp_path / "run" / "bagging" / "xgboost").iterdir())
    monkeypatch.setattr("automl_dnn.bagging.gbt_fold_seconds", lambda member, k: 1e6)
    report = ensemble_run(tmp_path / "run", model_dir=tmp_path / "m", gbt=background, time_budget=600, folds=2)
    assert report.folds == 2
    xgb_row = next(row for row in report.members if row.kind == "xgboost")
    assert xgb_row.valid == pytest.approx(metrics.score(report.loss, _dev_labels(tmp_path / "run"), member.bag.oof))
    assert any("folds its thread bagged" in n for n in report.notes)
    assert sorted(p.name for p in (tmp_path / "run" / "bagging" / "xgboost").iterdir()) == thread_folds


def test_ensemble_goes_on_from_the_xgboost_tuning_kept_in_the_run(tmp_path: Path) -> None:
    """A rerun of ``ensemble`` (after a crash, or again) resumes XGBoost's kept trials: they count toward
    --gbt-trials, and asking for fewer keeps the kept best as it is (a finished tuning is not made worse)."""
    _, run = small_csv_run(tmp_path, n_trials=1)
    ensemble_run(run, model_dir=tmp_path / "m1", gbt_trials=2, threads=1)
    second = ensemble_run(run, model_dir=tmp_path / "m2", gbt_trials=3, threads=1)
    assert any(n.startswith("XGBoost: 1 trials") and "after 2 kept" in n for n in second.notes)
    third = ensemble_run(run, model_dir=tmp_path / "m3", gbt_trials=1, threads=1)
    assert any(n.startswith("XGBoost: 0 trials") and "after 3 kept" in n for n in third.notes)
    assert len(json.loads((run / "xgboost-tuning" / "trials.json").read_text())["trials"]) == 3
    rows = [next(row for row in report.members if row.kind == "xgboost") for report in (second, third)]
    assert rows[0].valid == rows[1].valid and rows[0].test == rows[1].test  # the same best, refit alike


def _dev_labels(run_dir: Path) -> np.ndarray:
    from automl_dnn.bagging import dev_targets
    from automl_dnn.data.target import TargetEncoder
    from automl_dnn.files import read_json

    run = RunDir(run_dir)
    return dev_targets(run, TargetEncoder.from_dict(read_json(run.target_path)), "standard")


def test_background_gbt_hands_its_error_to_the_ensemble_step(tmp_path: Path) -> None:
    background = BackgroundGBT(n_trials=1)
    background.start({"run_dir": str(tmp_path / "not-a-run")}, None, None)  # the run folder fails first
    with pytest.raises(AutoDNNError, match="not-a-run.*no preprocess"):  # the thread's own error, handed over
        background.result()
    assert BackgroundGBT(n_trials=1).result() is None  # never started: no XGBoost member


def test_fit_stops_xgboost_when_the_search_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = []
    monkeypatch.setattr(gbt.BackgroundGBT, "stop", lambda self: stopped.append(self))
    with pytest.raises(DataError, match="'no-such-column' not found"):
        api.fit("builtin:breast_cancer", model_dir=tmp_path / "m", out=tmp_path / "run", space="quick",
                target="no-such-column", quiet=True)
    assert len(stopped) == 1


@pytest.mark.parametrize(("cores", "threads", "device", "jobs", "expected"), [
    (2, None, "cpu", 1, (1, 1)),
    (16, None, "cpu", 1, (8, 8)),
    (16, None, "cpu", 2, (4, 8)),
    (16, 3, "cpu", 2, (3, 10)),
    (1, None, "cpu", 1, (1, 1)),
    (16, None, "cuda", 1, (None, 15)),
    (16, 2, "cuda", 4, (2, 8)),
    (16, None, "cuda:1", 1, (None, 15)),  # one GPU of several, named: the nets need a core, not half of them
])
def test_split_cores(monkeypatch: pytest.MonkeyPatch, cores: int, threads: int | None, device: str, jobs: int,
                     expected: tuple[int | None, int]) -> None:
    monkeypatch.setattr(api, "available_cores", lambda: cores)
    assert api.split_cores(threads, device, jobs) == expected


def test_xgboost_tunes_on_a_holdout_when_the_validation_split_is_small(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = searched("breast_cancer", tmp_path_factory)  # 86 validation rows
    small = ensemble_run(run, model_dir=tmp_path_factory.mktemp("m") / "model", gbt_trials=1, threads=1)
    assert any("tuned on a holdout" in note for note in small.notes)
    monkeypatch.setattr(gbt, "VALID_TUNING_MIN_ROWS", 50)
    large = ensemble_run(run, model_dir=tmp_path_factory.mktemp("m") / "model", gbt_trials=1, threads=1)
    assert not any("tuned on a holdout" in note for note in large.notes)
    # Tuned and early-stopped on the validation rows, XGBoost looks better there than when they are unseen.
    honest = next(r.valid for r in small.members if r.kind == "xgboost")
    flattered = next(r.valid for r in large.members if r.kind == "xgboost")
    assert small.metric == "logloss" and flattered < honest


def test_fit_gives_the_nets_and_xgboost_their_own_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    real_init = gbt.BackgroundGBT.__init__

    def init(self, **kw):
        seen["gbt"] = kw
        real_init(self, **kw)

    def fake_search(source, **kw):
        seen["search"] = kw
        raise AutoDNNError("stop here")

    monkeypatch.setattr(gbt.BackgroundGBT, "__init__", init)
    monkeypatch.setattr(api, "search", fake_search)
    monkeypatch.setattr(api, "available_cores", lambda: 8)
    with pytest.raises(AutoDNNError, match="stop here"):
        api.fit("builtin:wine", model_dir=tmp_path / "m", time_budget=30, device="cpu")
    assert seen["search"]["threads"] == 4 and seen["gbt"]["threads"] == 4
    assert seen["gbt"]["n_trials"] == api.GBT_TRIALS_ON_BUDGET
    assert seen["search"]["time_budget"] == pytest.approx(30 * (1 - budget.ENSEMBLE_SHARE))
    assert seen["search"]["bagging"].cap == pytest.approx(30 * budget.BAGGING_SHARE)
    assert callable(seen["search"]["on_prepared"])
    seen.clear()
    with pytest.raises(AutoDNNError, match="stop here"):
        api.fit("builtin:wine", model_dir=tmp_path / "m", n_trials=2, gbt=False, device="cpu")
    assert "gbt" not in seen and seen["search"]["on_prepared"] is None and "threads" not in seen["search"]
    seen.clear()
    with pytest.raises(AutoDNNError, match="stop here"):
        api.fit("builtin:wine", model_dir=tmp_path / "m", time_budget=300, gbt=False, device="cpu")
    assert seen["search"]["time_budget"] == pytest.approx(300 * (1 - budget.NETS_ONLY_ENSEMBLE_SHARE))
    seen.clear()
    seen.clear()
    with pytest.raises(AutoDNNError, match="stop here"):  # fixed threads: XGBoost's thread has the other cores
        api.fit("builtin:wine", model_dir=tmp_path / "m", time_budget=30, device="cpu", jobs="auto", threads=2)
    assert seen["search"]["jobs"] == 1 and seen["search"]["threads"] == 2 and seen["gbt"]["threads"] == 6
    assert seen["search"]["beside"] is None and not seen["gbt"]["give_way"]
    seen.clear()
    with pytest.raises(AutoDNNError, match="stop here"):  # the CLI's default: the search's own workers, half of
        api.fit("builtin:wine", model_dir=tmp_path / "m", time_budget=30, device="cpu", jobs="auto")  # them waiting
    assert seen["search"]["jobs"] == "auto" and "threads" not in seen["search"] and seen["gbt"]["threads"] == 4
    beside = seen["search"]["beside"]
    assert beside.cores == 4 and seen["gbt"]["give_way"] and not beside.free.is_set()
    seen["gbt"]["on_done"]()  # XGBoost's thread ending sets the event the waiting workers watch
    assert beside.free.is_set()


def test_fit_reads_the_data_and_the_space_once(tmp_path: Path, tiny_space: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """XGBoost trains on the frames the search already read: one read of the table, one of the space."""
    from automl_dnn import run_folder, search
    from automl_dnn.data import dataset as dataset_module

    reads, spaces = [], []
    real_read, real_space = dataset_module.read_table, search.load_space
    monkeypatch.setattr(dataset_module, "read_table", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(search, "load_space", lambda *a, **k: spaces.append(a) or real_space(*a, **k))
    monkeypatch.setattr(run_folder, "load_space", lambda *a, **k: pytest.fail("prepare_run loaded the space again"))
    _, report = api.fit("builtin:wine", model_dir=tmp_path / "m", out=tmp_path / "run", space=str(tiny_space),
                        n_trials=1, gbt_trials=1, threads=1, quiet=True, progress=False)
    assert len(reads) == 1 and len(spaces) == 1
    assert sorted(row.kind for row in report.members) == ["net", "xgboost"]


def test_ensemble_and_report_need_no_space_file(tmp_path: Path, tiny_space: Path) -> None:
    """Opening the study read-only needs only the run's spec: a custom space moved away breaks nothing."""
    space = tmp_path / "space.yaml"
    space.write_text(tiny_space.read_text())
    api.search("builtin:wine", out=tmp_path / "run", space=str(space), n_trials=1, quiet=True, progress=False)
    space.rename(tmp_path / "moved.yaml")
    report = ensemble_run(tmp_path / "run", model_dir=tmp_path / "m", gbt=False)
    assert report.members and (tmp_path / "m" / "model.json").is_file()
    assert api.write_report(tmp_path / "run").is_file()


@pytest.mark.parametrize(
    ("bagging_until", "until"),
    [
        (115.0, 115.0),  # the search kept 15 s for a refit (its reserve): the refit may take all 15
        (130.0, 117.0),  # the search's end past the step's deadline: the deadline
        (105.0, 100.0 + 17.0 * (1 - REFIT_EXPORT_SHARE)),  # an early search end: the step's time but its share
        (None, 100.0 + 17.0 * (1 - REFIT_EXPORT_SHARE)),  # no search end given (``ensemble`` on its own)
    ],
)
def test_refits_may_take_the_time_the_search_kept_for_them(bagging_until: float | None, until: float) -> None:
    # 17 s left in the step at t = 100: the search's planned end leaves 2 s for the weights and the export
    assert refit_deadline(117.0, bagging_until, now=100.0) == pytest.approx(until)
    assert refit_deadline(None, bagging_until, now=100.0) is None


@pytest.mark.parametrize(("costs", "seconds", "fits"), [
    ([20.0, 5.0, 8.0], 14.0, [False, True, True]),  # the best net's copy does not fit: the quicker ones still do
    ([5.0, 5.0, 5.0], 11.0, [True, True, False]),
    ([5.0, 30.0, 4.0], 10.0, [True, False, True]),
    ([5.0, 30.0], None, [True, True]),  # no deadline: every net
    ([5.0], 0.0, [False]),
])
def test_refits_go_best_first_to_every_net_whose_copy_fits(costs: list[float], seconds: float | None,
                                                           fits: list[bool]) -> None:
    assert refits_that_fit(costs, seconds) == fits


def test_fit_gives_the_caller_back_its_torch_threads_and_optuna_log_level(tmp_path: Path) -> None:
    """A notebook that calls fit keeps its own torch thread count and Optuna verbosity (the in-process worker set
    its share of the cores and ERROR, and the study WARNING, for good)."""
    import optuna
    import torch

    threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
    try:
        torch.set_num_threads(2)
        optuna.logging.set_verbosity(optuna.logging.INFO)
        api.fit("builtin:wine", model_dir=tmp_path / "m", n_trials=1, space="quick", threads=1, gbt_trials=1,
                folds=1, quiet=True)
        assert torch.get_num_threads() == 2 and optuna.logging.get_verbosity() == optuna.logging.INFO
        api.write_report(tmp_path / "m-run", model_dir=tmp_path / "m")
        assert torch.get_num_threads() == 2 and optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        torch.set_num_threads(threads)
        optuna.logging.set_verbosity(verbosity)


def test_regression_nets_predict_within_the_training_range(tmp_path: Path, tiny_space: Path) -> None:
    """A net extrapolates linearly from rows far outside the training inputs; its values stay in the range
    the training targets span, in the exported model and in the trial's saved validation predictions."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 240)
    frame = pd.DataFrame({"x": x, "y": 100 * x + rng.normal(0, 1, 240)})
    api.fit(frame, target="y", model_dir=tmp_path / "m", n_trials=1, space=str(tiny_space), pruner="none",
            gbt=False, folds=1, bag_mode="refit", threads=1, seed=0, quiet=True, progress=False)  # one net
    run, predictor = RunDir(tmp_path / "m-run"), api.load(tmp_path / "m")
    low, high = frame["y"].iloc[load_arrays(run.split_path)["train"]].agg(["min", "max"])
    far = predictor.predict(pd.DataFrame({"x": [-50.0, 0.5, 50.0]}))
    assert np.all((low <= far) & (far <= high)) and low < far[1] < high
    assert np.isclose(far[[0, 2], None], [low, high]).any(axis=1).all()  # unclipped: 165 and -6,958 (seed 0)
    saved = load_trial(trial_folder(run.root / "artifacts", 0)).predictions["valid"]
    assert low <= saved.min() and saved.max() <= high


MAE_SPACE = """\
name: mae
params:
  n_layers: 1
  d_hidden: 16
  optimizer: adam
  lr: 0.01
  schedule: none
  batch_size: 64
  max_epochs: 40
  patience: 40
  regression_loss: l1
"""


def test_an_mae_study_resolves_the_rows_beside_a_few_extreme_targets(tmp_path: Path) -> None:
    """A 1e9 sentinel in 1 % of the rows: an MAE study's nets train on the median's robust scale and its
    weights minimize MAE, so the clean rows are predicted (on the plain standardization every clean target
    lay within 1e-7 of a unit of the others, and the net predicted about one value for all of them)."""
    rng = np.random.default_rng(0)
    n = 1200
    X = rng.normal(size=(n, 3))
    y = 100.0 + 10.0 * X[:, 0] + 5.0 * X[:, 1] + rng.normal(0.0, 1.0, n)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(y=y)
    clean_test = frame.iloc[1000:]
    train = frame.iloc[:1000].copy()
    train.loc[train.index[:10], "y"] = 1e9
    space = tmp_path / "mae.yaml"
    space.write_text(MAE_SPACE)
    api.fit(train, model_dir=tmp_path / "model", target="y", task="regression", metric="mae", space=str(space),
            n_trials=1, gbt=False, folds=1, test_size=0.0, **{k: v for k, v in SEARCH.items() if k != "space"})
    pred = api.load(tmp_path / "model").predict(clean_test.drop(columns="y"))
    error = np.abs(np.asarray(pred, dtype=np.float64) - clean_test["y"].to_numpy())
    assert np.median(error) < 3.0  # a constant (the clean median) is off by about 7.5


def test_ensemble_takes_the_runs_own_seed_and_goes_on_from_its_kept_tuning(tmp_path: Path) -> None:
    """After ``search --seed 7``, ``ensemble`` without --seed is seeded 7 (a seed 0 replaced the run's kept XGBoost
    tuning, whose key holds its seed, and drew other folds); an explicit seed still wins."""
    source = tmp_path / "wine.csv"
    read_table("builtin:wine").to_csv(source, index=False)
    run = tmp_path / "run"
    api.search(str(source), out=run, target="target", n_trials=1, **(SEARCH | {"seed": 7}))
    ensemble_run(run, model_dir=tmp_path / "m1", gbt_trials=1, threads=1, seed=7)
    again = ensemble_run(run, model_dir=tmp_path / "m2", gbt_trials=2, threads=1)
    assert any(n.startswith("XGBoost: 1 trials") and "after 1 kept" in n for n in again.notes)
    other = ensemble_run(run, model_dir=tmp_path / "m3", gbt_trials=1, threads=1, seed=0)
    assert not any("kept from an earlier run" in n for n in other.notes)

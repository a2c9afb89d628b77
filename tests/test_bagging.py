"""K-fold bagging (bagging.py, budget.py, and the ensemble step on top): folds, fixed-epoch fold copies,
out-of-fold predictions, the bag / refit exports, the planner, and a rerun that reuses finished folds.

Searches are bounded by trial counts (space "quick", no pruner, one torch thread), never by wall time.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from automl_dnn import api, bagging, budget, ensemble_step
from automl_dnn import folds as fold_rules
from automl_dnn.budget import BagPlan, plan_bagging
from automl_dnn.config import TrainConfig
from automl_dnn.ensemble_step import ensemble_run
from automl_dnn.errors import AutoDNNError
from automl_dnn.folds import make_folds, scaled_epochs
from automl_dnn.model_folder import read_spec
from automl_dnn.run_folder import RunDir
from automl_dnn.train import TrainData, train
from tests.conftest import invoke

SEARCH = dict(space="quick", pruner="none", threads=1, seed=0, quiet=True, progress=False)
_RUNS: dict[str, Path] = {}


def searched(name: str, factory: pytest.TempPathFactory, n_trials: int = 3) -> Path:
    """A finished search of builtin:NAME, cached for the session (tests that change it copy it first)."""
    if name not in _RUNS:
        out = factory.mktemp(f"bag-{name}") / "run"
        api.search(f"builtin:{name}", out=out, n_trials=n_trials, **SEARCH)
        _RUNS[name] = out
    return _RUNS[name]


def copied(name: str, factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(searched(name, factory), run)
    return run


# --- folds --------------------------------------------------------------------------------------


def test_folds_cover_every_row_once_per_repeat_and_stratify() -> None:
    y = np.array([0] * 60 + [1] * 30 + [2] * 15)
    folds = make_folds(y, "multiclass", k=5, repeats=2, seed=3)
    assert folds.assignment.shape == (2, len(y)) and folds.k == 5 and folds.repeats == 2
    for r in range(2):
        seen = np.zeros(len(y), dtype=int)
        for f in range(5):
            train_rows, out_rows = folds.rows(r, f)
            assert not set(train_rows) & set(out_rows) and len(train_rows) + len(out_rows) == len(y)
            seen[out_rows] += 1
            assert np.bincount(y[out_rows]).tolist() == [12, 6, 3]  # each class split evenly
        assert (seen == 1).all()
    assert not np.array_equal(folds.assignment[0], folds.assignment[1])  # repeats reshuffle
    assert np.array_equal(make_folds(y, "multiclass", k=5, repeats=2, seed=3).assignment, folds.assignment)


def test_folds_fall_back_to_plain_kfold_when_a_class_is_too_small() -> None:
    y = np.array([0] * 20 + [1] * 2)
    folds = make_folds(y, "binary", k=5)
    assert sorted(np.bincount(folds.assignment[0]).tolist()) == [4, 4, 4, 5, 5]


def test_too_few_rows_for_the_folds_is_a_clear_error() -> None:
    with pytest.raises(AutoDNNError, match="too few for 5 folds"):
        make_folds(np.arange(6, dtype=float), "regression", k=5)


def test_bagging_folds_resolve_the_request_on_the_rows() -> None:
    assert fold_rules.bagging_folds(None, 800) == (5, fold_rules.TINY_REPEATS)
    assert fold_rules.bagging_folds(None, 5_000) == (5, 1)
    assert fold_rules.bagging_folds(3, 5_000) == (3, 1) and fold_rules.bagging_folds(1, 500) == (1, 1)
    assert fold_rules.bagging_folds(5, 9) == (1, 1)  # too few rows for 5 folds: no bagging


def test_default_folds_and_repeats_follow_the_rows() -> None:
    assert fold_rules.default_folds(500) == 5 and fold_rules.default_folds(fold_rules.MAX_DEFAULT_BAGGED_ROWS + 1) == 1
    assert fold_rules.repeats_for(999) == fold_rules.TINY_REPEATS and fold_rules.repeats_for(1000) == 1


def test_a_fold_copy_keeps_the_trials_optimizer_steps() -> None:
    # best after 10 of 40 epochs on 700 rows; a fold of 680 rows, a refit on 850
    assert scaled_epochs(9, 40, 700, 700) == (40, 10)
    assert scaled_epochs(9, 40, 700, 850) == (33, 8)  # round(40 * 700/850), round(10 * 700/850)
    assert scaled_epochs(0, 1, 100, 10_000) == (1, 1)  # never below one epoch


def test_copies_train_to_the_recorded_copy_epoch_and_an_older_studys_to_its_best_epoch() -> None:
    from optuna.trial import create_trial

    from automl_dnn.objective import copy_seconds, epochs_to_copy

    timing = {"epoch_seconds": 12.0, "epochs_run": 12}
    recorded = create_trial(value=1.0, user_attrs={"best_epoch": 5, "copy_epoch": 9, **timing})
    older = create_trial(value=1.0, user_attrs={"best_epoch": 5, **timing})
    assert (epochs_to_copy(recorded), epochs_to_copy(older)) == (9, 5)
    assert (copy_seconds(recorded), copy_seconds(older)) == (10.0, 6.0)  # a second an epoch, to the copied epoch
    assert epochs_to_copy(create_trial(value=1.0, user_attrs={})) is None


def test_the_ensemble_step_copies_each_net_at_its_trials_copy_epoch(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # a copy epoch no best epoch of a 20-epoch trial can be, so that the best epoch cannot pass for it
    monkeypatch.setattr("automl_dnn.objective.copy_epoch", lambda history: 40)
    api.search("builtin:diabetes", out=tmp_path / "run", n_trials=2, cv_folds=1, **SEARCH)  # one split
    run = RunDir(tmp_path / "run")
    spec = run.read_spec()
    candidates = ensemble_step._net_candidates(run, spec, [])
    assert len(candidates) == 2 and {c.copy_epoch for c in candidates} == {40}
    assert all(t.user_attrs["best_epoch"] < 20 for t in ensemble_step._completed_trials(spec))


# --- the planner --------------------------------------------------------------------------------


def test_the_plan_is_everything_without_a_budget() -> None:
    assert plan_bagging([5.0, 6.0], [1.0], k=5, repeats=3, seconds=None) == BagPlan(5, 3, 2, 1)


def test_the_plan_drops_nets_then_repeats_then_folds_to_fit_the_time_left() -> None:
    costs, trees = [1.0, 1.0, 1.0], [0.5]  # per copy; 5 folds of everything: 5 * 3 + 2.5 = 17.5 s
    full = plan_bagging(costs, trees, k=5, seconds=100.0)
    assert (full.k, full.n_nets, full.note) == (5, 3, None)
    fewer = plan_bagging(costs, trees, k=5, seconds=10.0)  # 8 s usable: 2.5 + 5 for one net
    assert (fewer.k, fewer.repeats, fewer.n_nets) == (5, 1, 1) and "best 1 of 3 nets" in fewer.note
    nets_first = plan_bagging(costs, trees, k=5, repeats=3, seconds=40.0)  # 3 repeats: 7.5 + 15 per net
    assert (nets_first.k, nets_first.repeats, nets_first.n_nets) == (5, 3, 1)
    repeats = plan_bagging(costs, trees, k=5, repeats=3, seconds=20.0)  # 16 s usable: 2 repeats (5 + 10)
    assert (repeats.k, repeats.repeats, repeats.n_nets) == (5, 2, 1)
    assert "5 folds x 2 repeats instead of 5 folds x 3 repeats" in repeats.note
    folds = plan_bagging(costs, trees, k=5, seconds=6.0)  # 4.8 s usable: 3 folds of one net (1.5 + 3)
    assert (folds.k, folds.n_nets) == (3, 1) and "3 folds instead of 5" in folds.note
    # 3.2 s would fit 2 folds of one net (1 + 2), but a 2-fold copy sees half the rows: no bagging
    none = plan_bagging(costs, trees, k=5, seconds=4.0)
    assert none.k == 1 and none.note.startswith("no k-fold bagging: 3 folds of the best net need about 4s")
    assert plan_bagging(costs, trees, k=2, seconds=4.0).k == 2  # 2 folds asked for: 2 folds


def test_a_cut_keeps_the_fewest_members_asked_for_or_no_bagging(monkeypatch: pytest.MonkeyPatch) -> None:
    """MIN_CUT_MEMBERS = 1 (the default) takes 3 folds of the best net alone; at 2 that plan is refused, but
    one net with XGBoost is two members, and a lone net is all there is."""
    import automl_dnn.budget as budget

    assert plan_bagging([1.0, 1.0, 1.0], [], k=5, seconds=5.0).n_nets == 1  # 4 s usable: 3 folds of one net
    monkeypatch.setattr(budget, "MIN_CUT_MEMBERS", 2)
    refused = plan_bagging([1.0, 1.0, 1.0], [], k=5, seconds=5.0)
    assert refused.k == 1 and refused.note.startswith("no k-fold bagging")
    assert plan_bagging([1.0, 1.0, 1.0], [0.1], k=5, seconds=5.0).n_nets == 1  # + XGBoost: 2 members
    assert plan_bagging([1.0], [], k=5, seconds=5.0).n_nets == 1  # a lone net


@pytest.mark.parametrize("members_first, plan", [(False, (5, 1, 1)), (True, (3, 1, 2))])
def test_a_cut_keeps_folds_or_members_first(monkeypatch: pytest.MonkeyPatch, members_first: bool,
                                            plan: tuple[int, int, int]) -> None:
    """7 s usable: 5 folds of the best net alone (5 s) or 3 folds of the best two (6 s), not 5 folds of two."""
    import automl_dnn.budget as budget

    monkeypatch.setattr(budget, "MEMBERS_BEFORE_FOLDS", members_first)
    cut = plan_bagging([1.0, 1.0, 1.0], [], k=5, seconds=7.0 / budget.PLAN_SAFETY)
    assert (cut.k, cut.repeats, cut.n_nets) == plan
    whole = plan_bagging([1.0, 1.0, 1.0], [], k=5, seconds=15.0 / budget.PLAN_SAFETY)
    assert (whole.k, whole.n_nets, whole.note) == (5, 3, None)  # all of it fits: no cut either way


def test_a_refit_costs_one_more_copy_per_net() -> None:
    assert plan_bagging([1.0], [], k=5, seconds=6.9 / 0.8).n_nets == 1
    assert plan_bagging([1.0], [], k=5, seconds=5.9 / 0.8, refit=True).k < 5


def test_workers_that_train_side_by_side_fit_more_copies_in_the_same_time() -> None:
    costs = [1.0, 1.0, 1.0]  # 5 folds of one net: 5 s of one worker; 3 rounds of two, once they have started
    assert budget.POOL_START_SECONDS == 4.0
    assert plan_bagging(costs, [], k=5, seconds=17.5).n_nets == 2  # 14 s usable: 5 s a net
    assert plan_bagging(costs, [], k=5, seconds=17.5, workers=2).n_nets == 3  # 4 s to start, then 3 s a net
    # once the workers have started, the plan counts only their rounds: 9.6 s usable, 3 s a net
    assert plan_bagging(costs, [], k=5, seconds=12.0, workers=2).n_nets == 1
    assert plan_bagging(costs, [], k=5, seconds=12.0, workers=2, started=True).n_nets == 3


def test_workers_train_a_nets_copies_in_rounds_after_they_start() -> None:
    """Bank_marketing's 60 s fit planned 4 folds on two workers for the 7 s left as if each copy took half
    its time, with no time to start the workers, and the deadline cut the bagging off: none was left."""
    need = budget.POOL_START_SECONDS + 3 * 1.0  # 5 copies on 2 workers: 3 rounds, not 2.5 copies' time
    assert plan_bagging([1.0], [], k=5, seconds=need / 0.8, workers=2).k == 5
    assert plan_bagging([1.0], [], k=5, seconds=(need - 0.1) / 0.8, workers=2).k == 4  # 2 rounds
    refused = plan_bagging([1.0], [], k=5, seconds=(budget.POOL_START_SECONDS + 1.9) / 0.8, workers=2)
    assert refused.k == 1 and f"need about {budget.POOL_START_SECONDS + 2:.0f}s" in refused.note


# --- training a fold copy -----------------------------------------------------------------------


def test_keep_last_trains_every_epoch_and_keeps_the_last_weights() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    y_valid_wrong = 1 - y  # validation rows that get worse as training fits: early stopping would fire
    net = torch.nn.Sequential(torch.nn.Linear(4, 2))
    config = TrainConfig(optimizer="adam", lr=0.05, schedule="none", max_epochs=12, patience=2, batch_size=16)
    result = train(net, TrainData(X, y, X, y_valid_wrong), config, task="multiclass", device="cpu", keep="last")
    assert result.epochs_run == 12 and result.best_epoch == 11 and result.status == "completed"
    best = train(torch.nn.Sequential(torch.nn.Linear(4, 2)), TrainData(X, y, X, y_valid_wrong), config,
                 task="multiclass", device="cpu")
    assert best.status == "early_stopped" and best.epochs_run < 12
    with pytest.raises(ValueError, match="keep"):
        train(net, TrainData(X, y, X, y), config, task="multiclass", device="cpu", keep="first")


# --- the ensemble step with bagging -------------------------------------------------------------


def test_bagging_fits_on_oof_rows_and_exports_the_fold_models(tmp_path_factory: pytest.TempPathFactory,
                                                               tmp_path: Path) -> None:
    run = copied("breast_cancer", tmp_path_factory, tmp_path)
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=3, gbt_trials=1, threads=1, device="cpu")
    assert report.folds == 3 and report.inner == "oof" and report.repeats == fold_rules.TINY_REPEATS
    assert any(n.startswith("3-fold bagging, 3 repeats of 3 nets and XGBoost") for n in report.notes)
    y_dev = bagging.dev_targets(RunDir(run), _encoder(run), "standard")
    # every member's "valid" score is its out-of-fold score over all training + validation rows
    for row in report.members:
        folder = run / "bagging" / row.name
        assert folder.is_dir() and len(list(folder.iterdir())) == 3 * fold_rules.TINY_REPEATS
    spec = read_spec(tmp_path / "model")
    nets = [m for m in spec["members"] if m["kind"] == "net"]
    by_trial: dict[int, list[dict]] = {}
    for m in nets:
        by_trial.setdefault(m["trial"], []).append(m)
    for trial, copies in by_trial.items():
        assert [m["name"] for m in copies] == [f"net-{trial:05d}-fold{i}" for i in (1, 2, 3)]
        row = next(r for r in report.members if r.trial == trial)
        assert sum(m["weight"] for m in copies) == pytest.approx(row.weight)
    assert len(y_dev) == 483
    model = api.load(tmp_path / "model")
    assert model.predict_proba(_features(run)).shape == (len(_features(run)), 2)


def test_an_oof_prediction_comes_from_the_fold_that_never_saw_the_row(tmp_path_factory: pytest.TempPathFactory,
                                                                       tmp_path: Path) -> None:
    run = copied("diabetes", tmp_path_factory, tmp_path)
    rd = RunDir(run)
    folds = make_folds(bagging.dev_targets(rd, _encoder(run), "standard"), "regression", k=3)
    net = _net_to_bag(run)
    member = bagging.bag_net(rd, net, folds, _encoder(run), mode="bag", device="cpu", threads=1, cache={})
    assert member is not None and len(member.units) == 3
    dev = bagging.dev_data(rd, net.artifacts.config["settings"]["scaling"])
    for f, unit in enumerate(member.units):
        train_rows, out_rows = folds.rows(0, f)
        saved = bagging.load_trial(unit.folder)
        assert saved.config["train_rows"] == len(train_rows)
        np.testing.assert_allclose(member.oof[out_rows], saved.predictions["oof"])
        planned, epochs = scaled_epochs(net.copy_epoch, net.artifacts.config["settings"]["train"]["max_epochs"],
                                        dev.n_search_train, len(train_rows))
        assert (saved.config["planned_epochs"], saved.config["epochs"]) == (planned, epochs)
    np.testing.assert_allclose(member.test, np.mean([bagging.load_trial(u.folder).predictions["test"]
                                                     for u in member.units], axis=0))


def test_every_copy_of_a_net_trains_from_its_trials_seed(tmp_path_factory: pytest.TempPathFactory,
                                                          tmp_path: Path) -> None:
    """The copies differ by their rows: a seed of their own for each was measured worse on the classification
    tables (docs/benchmarks.md, "A seed of its own for every copy of a net")."""
    run = copied("diabetes", tmp_path_factory, tmp_path)
    rd, net, encoder = RunDir(run), _net_to_bag(run), _encoder(run)
    folds = make_folds(bagging.dev_targets(rd, encoder, "standard"), "regression", k=3)
    member = bagging.bag_net(rd, net, folds, encoder, mode="refit", device="cpu", threads=1, cache={})
    assert member is not None
    labels = ["r0-f0", "r0-f1", "r0-f2", "refit"]
    seeds = [bagging.load_trial(run / "bagging" / net.name / label).config["settings"]["train"]["seed"]
             for label in labels]
    trial_seed = net.artifacts.config["settings"]["train"]["seed"]
    assert seeds == [trial_seed] * len(labels)


def test_a_plateau_trials_copies_replay_its_learning_rates_not_read_their_oof_rows(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """A copy has no validation rows of its own: a plateau schedule there cut the rate on the out-of-fold rows the
    copy predicts (a leak), and a refit's, watching training rows, never cut it. The trial's cuts, scaled."""
    run = copied("diabetes", tmp_path_factory, tmp_path)
    rd, net, encoder = RunDir(run), _net_to_bag(run), _encoder(run)
    settings = net.artifacts.config["settings"]
    settings["train"].update(schedule="plateau", plateau_patience=2, plateau_factor=0.5)
    lr0, epochs = settings["train"]["lr"], settings["train"]["max_epochs"]
    trial_lrs = [lr0 * 0.5 ** ((e >= 2) + (e >= 4)) for e in range(epochs)]
    net.artifacts.config["lr_by_epoch"] = trial_lrs
    net = dataclasses.replace(net, copy_epoch=epochs - 1)
    folds = make_folds(bagging.dev_targets(rd, encoder, "standard"), "regression", k=3)
    assert bagging.bag_net(rd, net, folds, encoder, mode="refit", device="cpu", threads=1, cache={}) is not None
    n_search = bagging.dev_data(rd, settings["scaling"]).n_search_train
    for label in ["r0-f0", "r0-f1", "r0-f2", "refit"]:
        saved = bagging.load_trial(run / "bagging" / net.name / label)
        ratio = n_search / saved.config["train_rows"]
        cuts = [round(2 * ratio), round(4 * ratio)]
        expected = [lr0 * 0.5 ** sum(e >= c for c in cuts) for e in range(saved.config["epochs"])]
        np.testing.assert_allclose(saved.config["lr_by_epoch"], expected, rtol=1e-12)


def test_a_refit_reads_its_rows_from_the_file_and_trains_the_net_the_matrix_would(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: the refit of a sampled search's net trains beside XGBoost's last trial, so it holds no
    development matrix (472 MB at 1M rows); its net is the one a refit from the matrix trains."""
    run = copied("diabetes", tmp_path_factory, tmp_path)
    rd, net, encoder = RunDir(run), _net_to_bag(run), _encoder(run)
    folds = make_folds(bagging.dev_targets(rd, encoder, "standard"), "regression", k=2)
    from_matrix = bagging.bag_net(rd, net, folds, encoder, mode="refit", device="cpu", threads=1, cache={})
    assert from_matrix is not None and [u.label for u in from_matrix.units] == ["refit"]
    monkeypatch.setattr(bagging, "dev_data", lambda *a: pytest.fail("the refit loaded the development matrix"))
    monkeypatch.setattr(importlib.import_module("automl_dnn.train"), "STREAM_ROWS", 50)  # several reads an epoch
    from_file = bagging.refit_net(rd, net, encoder, device="cpu", threads=1)
    assert bagging.load_trial(from_file.units[0].folder).config["train_rows"] == folds.n_rows
    np.testing.assert_allclose(from_file.test, from_matrix.test, rtol=1e-5, atol=1e-6)


def test_refit_exports_one_copy_trained_on_every_row(tmp_path_factory: pytest.TempPathFactory,
                                                     tmp_path: Path) -> None:
    run = copied("diabetes", tmp_path_factory, tmp_path)
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=2, bag_mode="refit", gbt=False, threads=1,
                          device="cpu")
    nets = [m for m in read_spec(tmp_path / "model")["members"] if m["kind"] == "net"]
    assert nets and all(m["name"].endswith("-refit") for m in nets)
    assert any("a refit on every training + validation row" in n for n in report.notes)
    refit = bagging.load_trial(run / "bagging" / nets[0]["name"].removesuffix("-refit") / "refit")
    assert refit.config["train_rows"] == len(bagging.dev_targets(RunDir(run), _encoder(run), "standard"))
    pred = api.load(tmp_path / "model").predict(_features(run))
    assert np.isfinite(pred).all()


def test_a_rerun_reuses_the_folds_a_crash_left(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run = copied("diabetes", tmp_path_factory, tmp_path)
    real = bagging._train_and_save
    calls: list[int] = []

    def crash_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # kill -9 would leave the same: two finished folds on disk
        real(*args, **kwargs)

    monkeypatch.setattr(bagging, "_train_and_save", crash_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        ensemble_run(run, model_dir=tmp_path / "model", folds=3, gbt=False, threads=1, device="cpu", top_k=1)
    assert not (tmp_path / "model").exists()
    calls.clear()
    monkeypatch.setattr(bagging, "_train_and_save", lambda *a, **k: (calls.append(1), real(*a, **k)))
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=3, gbt=False, threads=1, device="cpu", top_k=1)
    repeats = fold_rules.TINY_REPEATS if len(bagging.dev_targets(RunDir(run), _encoder(run), "standard")) < 1000 else 1
    assert len(calls) == 3 * repeats - 2  # only the folds the crash did not finish
    assert any("2 fold models reused from an earlier run" in n for n in report.notes)


def test_jobs_spread_the_fold_copies_over_worker_processes_with_the_same_oof(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = copied("diabetes", tmp_path_factory, tmp_path)
    rd, encoder = RunDir(run), _encoder(run)
    folds = make_folds(bagging.dev_targets(rd, encoder, "standard"), "regression", k=4)
    net = _net_to_bag(run)
    with bagging.FoldPool(2, device="cpu", threads=1) as pool:
        spread = bagging.bag_net(rd, net, folds, encoder, mode="refit", device="cpu", threads=1, cache={}, pool=pool)
    assert spread is not None and spread.reused == 0
    pids = {bagging.load_trial(run / "bagging" / net.name / label).config["pid"]
            for label in ("r0-f0", "r0-f1", "r0-f2", "r0-f3", "refit")}
    assert len(pids) == 2 and os.getpid() not in pids  # both workers trained, the parent none
    shutil.rmtree(run / "bagging")
    here = bagging.bag_net(rd, net, folds, encoder, mode="refit", device="cpu", threads=1, cache={})
    assert here is not None
    np.testing.assert_allclose(spread.oof, here.oof, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(spread.test, here.test, rtol=1e-4, atol=1e-4)


def test_the_bagging_plans_again_once_its_workers_have_started(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first plan guesses how long the workers take to start (POOL_START_SECONDS); the plan it follows is
    made with the time left once they have, and have read the development rows."""
    run = copied("diabetes", tmp_path_factory, tmp_path)
    plans: list[tuple[bool, float | None, bool]] = []
    real_plan, real_wait = ensemble_step.plan_bagging, bagging.FoldPool.wait_ready
    ready: list[bool] = []

    def plan_bagging(*args: Any, **kwargs: Any) -> Any:
        plans.append((kwargs.get("started", False), kwargs["seconds"], bool(ready)))
        return real_plan(*args, **kwargs)

    def wait_ready(self: bagging.FoldPool, should_stop: Any) -> bool:
        ready.append(real_wait(self, should_stop))
        return ready[-1]

    monkeypatch.setattr(ensemble_step, "plan_bagging", plan_bagging)
    monkeypatch.setattr(bagging.FoldPool, "wait_ready", wait_ready)
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=3, gbt=False, threads=1, device="cpu", top_k=1,
                          time_budget=600, jobs=2)
    assert ready == [True] and report.inner == "oof"
    (first, before, _), (again, after, was_ready) = plans[0], plans[-1]
    assert (first, again, was_ready) == (False, True, True)
    assert after < before  # the time the workers took to start is spent, no longer guessed


def test_a_pool_that_is_stopped_before_its_workers_start_says_so() -> None:
    with bagging.FoldPool(1, device="cpu", threads=1) as pool:
        assert pool.wait_ready(lambda: True) is False
        assert pool.wait_ready(lambda: False) is True


def test_a_stopped_pool_abandons_its_copies_and_keeps_the_finished_ones(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    run = copied("diabetes", tmp_path_factory, tmp_path)
    rd, encoder = RunDir(run), _encoder(run)
    folds = make_folds(bagging.dev_targets(rd, encoder, "standard"), "regression", k=3)
    net = _net_to_bag(run)
    with bagging.FoldPool(1, device="cpu", threads=1) as pool:
        stopped = bagging.bag_net(rd, net, folds, encoder, mode="bag", device="cpu", threads=1, cache={},
                                  pool=pool, should_stop=lambda: (run / "bagging" / net.name / "r0-f0").exists())
    assert stopped is None
    done = bagging.bag_net(rd, net, folds, encoder, mode="bag", device="cpu", threads=1, cache={})
    assert done is not None and done.reused >= 1


def test_the_bagging_falls_back_to_the_validation_split_when_no_fold_fits(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copied("diabetes", tmp_path_factory, tmp_path)
    monkeypatch.setattr("automl_dnn.ensemble_step.copy_seconds", lambda trial: 1e6)  # a copy takes forever
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=5, gbt=False, threads=1, device="cpu",
                          time_budget=30)
    assert report.folds == 1 and report.inner == "valid"
    assert any(n.startswith("no k-fold bagging: 3 folds of the best net need about") for n in report.notes)
    assert not (run / "bagging").exists()


def test_the_bagging_the_search_kept_time_for_is_not_refused_by_a_second_margin(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 folds of 12 s fit in the ~40 s left, though not in PLAN_SAFETY (0.8) of it: the search's reservation
    already had that margin (adult at 300 s: 65 s needed, 80 s left, and the time went unused)."""
    run = copied("diabetes", tmp_path_factory, tmp_path)
    monkeypatch.setattr("automl_dnn.ensemble_step.copy_seconds", lambda trial: 12.0)
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=5, gbt=False, threads=1, device="cpu",
                          time_budget=40, top_k=1)
    assert report.folds == 3 and report.inner == "oof"
    assert any(n.startswith("bagging cut to fit the") and "3 folds instead of 5 folds" in n for n in report.notes)


def test_with_accuracy_the_reported_test_score_is_that_of_the_labels_predict_writes(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from automl_dnn.data import read_table
    from automl_dnn.files import load_arrays

    run = tmp_path / "run"
    api.search("builtin:breast_cancer", out=run, n_trials=2, metric="accuracy", **SEARCH)
    report = ensemble_run(run, model_dir=tmp_path / "model", folds=3, gbt=False, threads=1, device="cpu")
    assert any(n.startswith("decision threshold") and "accuracy" in n for n in report.notes)
    model = api.load(tmp_path / "model")
    assert model.threshold == report.threshold
    spec = RunDir(run).read_spec()
    table = read_table(spec["source"])
    test = table.iloc[load_arrays(RunDir(run).split_path)["test"]]
    labels = model.predict(test.drop(columns=[spec["target"]]))
    accuracy = float(np.mean(labels.astype(str) == test[spec["target"]].astype(str).to_numpy()))
    assert report.summary[-1].test == pytest.approx(accuracy)


# --- options ------------------------------------------------------------------------------------


def test_cli_folds_zero_is_refused_in_one_line(tmp_path: Path) -> None:
    result = invoke("fit", "builtin:wine", "--model", str(tmp_path / "m"), "--folds", "0", "--n-trials", "1")
    assert result.exit_code == 2 and "--folds" in result.output


def test_cli_fit_with_folds_prints_oof_scores(tmp_path: Path, tiny_space: Path) -> None:
    result = invoke("fit", "builtin:wine", "--model", str(tmp_path / "m"), "--folds", "2", "--n-trials", "2",
                    "--space", str(tiny_space), "--pruner", "none", "--no-gbt", "--threads", "1", "--refit")
    assert result.exit_code == 0, result.output
    assert "2-fold bagging" in result.output and "oof" in result.output
    assert all(m["name"].endswith("-refit") for m in read_spec(tmp_path / "m")["members"])


# --- helpers ------------------------------------------------------------------------------------


def _encoder(run: Path):
    from automl_dnn.data import TargetEncoder
    from automl_dnn.files import read_json

    return TargetEncoder.from_dict(read_json(RunDir(run).target_path))


def _features(run: Path):
    from automl_dnn.data import read_table

    spec = RunDir(run).read_spec()
    return read_table(spec["source"]).drop(columns=[spec["target"]]).head(50)


def _net_to_bag(run: Path) -> bagging.NetToBag:
    from automl_dnn.ensemble_step import _completed_trials
    from automl_dnn.run_folder import load_trial, trial_folder

    spec = RunDir(run).read_spec()
    best = _completed_trials(spec)[0]
    saved = load_trial(trial_folder(run / "artifacts", best.number))
    return bagging.NetToBag(name=f"net-{best.number:05d}", trial=best.number, artifacts=saved,
                            copy_epoch=best.user_attrs["copy_epoch"])


# --- the search keeps time for the bagging --------------------------------------------------------


def test_the_reserve_is_what_the_plan_of_the_best_nets_so_far_needs() -> None:
    from automl_dnn.budget import BaggingReserve, reserve_seconds

    reserve = BaggingReserve(cap=20.0, k=5, repeats=1, top_k=2, refit=False)
    assert reserve_seconds([], reserve) == 0.0  # no net done yet: nothing kept
    assert reserve_seconds([1.0, 1.0, 9.0], reserve) == pytest.approx(10.0 / 0.8)  # the best 2: 2 x 5 copies
    assert reserve_seconds([3.0], reserve) == pytest.approx(15.0 / 0.8)  # 5 copies of 3 s, with the safety margin
    assert reserve_seconds([3.5], reserve) == pytest.approx(4 * 3.5 / 0.8)  # 5 folds do not fit the cap: 4
    # 3 folds of 12 s do not fit the cap (16 s usable), one refit copy does: the time for it is kept
    assert reserve_seconds([12.0, 10.0], reserve) == pytest.approx(12.0 / 0.8)
    assert reserve_seconds([30.0], reserve) == 0.0  # not even one copy fits the cap: the search keeps the time
    # the refit copies train one at a time in the fit's own process, whatever workers bag the folds
    two = BaggingReserve(cap=12.0, k=5, repeats=1, top_k=2, refit=False, workers=2)
    assert reserve_seconds([5.0], two) == pytest.approx(5.0 / 0.8)  # 3 folds: 3 s + 2 rounds of 5 s > 9.6 s


def test_a_fit_with_bagging_ends_the_search_early_by_the_measured_reserve(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from automl_dnn import workers

    seen: list[float] = []
    real = workers.bagging_reserve

    def spy(study, reserve):
        seconds = real(study, reserve)
        seen.append(seconds)
        return seconds

    monkeypatch.setattr(workers, "bagging_reserve", spy)
    monkeypatch.setattr(workers, "copy_seconds", lambda trial: 0.5)  # each copy of a net: half a second
    summary, report = api.fit("builtin:wine", model_dir=tmp_path / "m", time_budget=3600, n_trials=2,
                              space="quick", pruner="none", gbt=False, threads=1, seed=0, quiet=True,
                              progress=False, cv_folds=1, folds=2, top_k=2)
    # at the worker's start (no net done: nothing kept), then after each trial: 2 folds x 3 repeats (wine is
    # tiny) x 0.5 s for each of the best nets so far
    assert seen == [0.0, pytest.approx(3.0 / 0.8), pytest.approx(6.0 / 0.8)]
    assert report.folds == 2 and summary.n_complete == 2


def test_xgboost_bags_itself_in_its_thread_and_the_ensemble_reuses_it(tmp_path: Path) -> None:
    summary, report = api.fit("builtin:breast_cancer", model_dir=tmp_path / "m", n_trials=2, space="quick",
                              pruner="none", gbt_trials=1, threads=1, seed=0, quiet=True, progress=False,
                              cv_folds=1, folds=3)
    assert report.folds == 3 and any("and XGBoost" in n for n in report.notes)
    xgb_folds = tmp_path / "m-run" / "bagging" / "xgboost"
    assert len(list(xgb_folds.iterdir())) == 3 * fold_rules.TINY_REPEATS
    assert not any("reused" in n for n in report.notes)  # the thread's folds are used as they are, not reread


# --- cross-validated trials -----------------------------------------------------------------------


def test_a_cross_validated_trial_is_the_mean_of_its_folds_and_reports_each_on_one_scale(tmp_path: Path) -> None:
    from automl_dnn.study import open_study

    api.search("builtin:breast_cancer", out=tmp_path / "run", n_trials=2, cv_folds=3, **SEARCH)
    spec = RunDir(tmp_path / "run").read_spec()
    assert spec["cv_folds"] == 3
    for trial in open_study(spec, create=False).trials:
        assert len(trial.user_attrs["cv_values"]) == 3
        assert trial.value == pytest.approx(np.mean(trial.user_attrs["cv_values"]))
        steps = sorted(trial.intermediate_values)
        # three folds on one 1..100 scale: no step twice, and later folds report past the first one's third
        assert len(steps) == len(set(steps)) and 1 <= steps[0] and steps[-1] <= 100 and steps[-1] > 67
        # the trial's own net trains on the run's 397 training rows for the folds' mean copy epoch (folds
        # of 322 rows: the same optimizer steps), keeps its last epoch, and its copies train to that
        to_copy = round(float(np.mean(trial.user_attrs["cv_copy_epochs"])))
        max_epochs = 20  # the quick space's
        assert trial.user_attrs["epochs_run"] == trial.user_attrs["best_epoch"] + 1
        assert trial.user_attrs["epochs_run"] == scaled_epochs(to_copy, max_epochs, 322, 397)[1]
        assert trial.user_attrs["copy_epoch"] == trial.user_attrs["best_epoch"]
        assert len(trial.user_attrs["cv_best_epochs"]) == 3


def test_small_tables_cross_validate_by_default_and_a_resume_keeps_the_setting(tmp_path: Path) -> None:
    out = tmp_path / "run"
    api.search("builtin:breast_cancer", out=out, n_trials=1, **SEARCH)  # 483 development rows: CV by default
    assert RunDir(out).read_spec()["cv_folds"] == fold_rules.SEARCH_CV_FOLDS
    api.search("builtin:breast_cancer", out=out, n_trials=2, **SEARCH)  # resumed: same setting, one more trial
    with pytest.raises(AutoDNNError, match="cv_folds"):
        api.search("builtin:breast_cancer", out=out, n_trials=3, cv_folds=1, **SEARCH)


def test_the_development_rows_of_one_scaling_are_held_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 13: at 1M rows each scaling's development matrix is ~470 MB; a refit of nets of two scalings
    must not hold both."""
    rd = RunDir(searched("breast_cancer", tmp_path_factory))
    scalings = rd.preprocess_keys()
    assert len(scalings) >= 2, scalings
    cache: dict = {}
    first, _ = bagging._dev_and_columns(rd, scalings[0], cache)
    assert bagging._dev_and_columns(rd, scalings[0], cache)[0] is first  # kept while it is asked for
    bagging._dev_and_columns(rd, scalings[1], cache)
    assert list(cache) == [scalings[1]]

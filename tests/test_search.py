"""The search: trial counts, resume, fingerprints, artifacts, determinism, failures, stale trials, workers."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState
from safetensors.numpy import load_file

from automl_dnn import api
from automl_dnn.errors import AutoDNNError, StorageError
from automl_dnn.objective import EpochReporter, epoch_step, progress_step, with_amp, worker_device
from automl_dnn.run_folder import RunDir
from automl_dnn.space import settings_from_values
from automl_dnn.study import DEFAULT_PRUNER, PRUNERS, make_pruner, make_sampler, open_study
from automl_dnn.train import copy_epoch
from automl_dnn import search as search_module
from automl_dnn import workers
from automl_dnn.workers import StopFlag, auto_workers
from automl_dnn.storage import _retry_racing_creation, open_storage, reap_stale_trials
from tests.conftest import TINY_SPACE, TrialGate, patch_everywhere

# Integer, float and categorical ranges and one enqueued trial (conftest's tiny_space fixes every value).
RANGED_SPACE = """
name: ranged
params:
  n_layers: {type: int, low: 1, high: 2}
  d_hidden: {type: int, low: 8, high: 32, log: true}
  activation: {choices: [relu, elu]}
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  optimizer: adam
  schedule: none
  batch_size: 64
  max_epochs: 6
  patience: 3
enqueue:
  - {n_layers: 1, d_hidden: 16, activation: elu, lr: 0.005}
"""


@pytest.fixture(scope="module")
def ranged_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "ranged.yaml"
    path.write_text(RANGED_SPACE)
    return path


def _search(out: Path, space: Path | str, n_trials: int, **kw: object):
    kw.setdefault("source", "builtin:breast_cancer")
    kw.setdefault("cv_folds", 1)  # the holdout's behaviour; cross-validated trials have their own tests
    return api.search(kw.pop("source"), out=out, space=str(space), n_trials=n_trials, quiet=True, **kw)


def _study(out: Path) -> optuna.Study:
    return open_study(RunDir(out).read_spec(), create=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, ranged_space: Path) -> Path:
    out = tmp_path_factory.mktemp("run") / "bc"
    _search(out, ranged_space, n_trials=4)
    return out


def test_trial_count_artifacts_and_user_attrs(finished_run: Path) -> None:
    study = _study(finished_run)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 4
    assert study.trials[0].params == {"n_layers": 1, "d_hidden": 16, "activation": "elu", "lr": 0.005}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        folder = Path(trial.user_attrs["artifacts"])
        config = json.loads((folder / "config.json").read_text())
        assert config["trial_number"] == trial.number
        preds = load_file(str(folder / "predictions.safetensors"))
        assert preds["valid"].shape[1] == 2 and np.allclose(preds["valid"].sum(axis=1), 1, atol=1e-5)
        assert (folder / "weights.safetensors").stat().st_size > 0
        for key in ("epochs_run", "best_epoch", "learning_curve", "n_params", "train_seconds", "device"):
            assert key in trial.user_attrs
        assert len(trial.user_attrs["learning_curve"]) == trial.user_attrs["epochs_run"]
        # its copies train to the best of its curve averaged over neighbouring epochs
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        assert trial.user_attrs["copy_epoch"] == copy_epoch([{"score": sign * v}
                                                             for v in trial.user_attrs["learning_curve"]])
        # one report per epoch at the percent of the 6 planned epochs done: 17, 34, 50, 67, 84, 100
        expected = [math.ceil(100 * (e + 1) / 6) for e in range(trial.user_attrs["epochs_run"])]
        assert sorted(trial.intermediate_values) == expected
    assert not list(Path(finished_run, "artifacts").glob(".*")), "no temporary folder is left behind"


def test_trials_train_in_bf16_autocast_on_a_cpu_by_default_and_keep_it_in_their_settings(finished_run: Path) -> None:
    for trial in _study(finished_run).get_trials(states=(TrialState.COMPLETE,)):
        config = json.loads((Path(trial.user_attrs["artifacts"]) / "config.json").read_text())
        assert config["settings"]["train"]["amp"] is True  # what its refits and fold copies train with
    settings = settings_from_values({})
    assert [with_amp(settings, amp, device).train.amp for amp, device in
            ((None, "cpu"), (None, "cuda:0"), (False, "cpu"), (True, "cuda:1"))] == [True, False, False, True]


def test_resume_keeps_trials_and_counts_to_the_new_total(finished_run: Path, ranged_space: Path) -> None:
    before = {t.number: t.value for t in _study(finished_run).trials}
    _search(finished_run, ranged_space, n_trials=6)
    study = _study(finished_run)
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6
    assert {t.number: t.value for t in study.trials if t.number in before} == before


def test_resume_with_other_data_target_or_space_is_refused(finished_run: Path, ranged_space: Path) -> None:
    with pytest.raises(StorageError, match="different data"):
        _search(finished_run, ranged_space, n_trials=1, source="builtin:wine")
    with pytest.raises(StorageError, match="different space"):
        _search(finished_run, "quick", n_trials=1)
    with pytest.raises(StorageError, match="different metric"):
        _search(finished_run, ranged_space, n_trials=1, metric="accuracy")


def test_same_seed_gives_the_same_trials(tmp_path: Path, ranged_space: Path) -> None:
    runs = []
    for name in ("a", "b"):
        _search(tmp_path / name, ranged_space, n_trials=4, seed=7)
        runs.append([(t.params, t.value, t.state) for t in _study(tmp_path / name).trials])
    assert runs[0] == runs[1]


def test_diverging_trials_fail_with_reason_and_all_failing_is_a_clear_error(tmp_path: Path) -> None:
    space = tmp_path / "diverge.yaml"
    space.write_text("params: {optimizer: sgd, lr: 1.0e+12, schedule: none, max_epochs: 3, patience: 2,"
                     " batch_size: 64, n_layers: 2, d_hidden: 64}\n")
    with pytest.raises(AutoDNNError, match="all 10 trials failed; first reason: .*diverged"):
        _search(tmp_path / "run", space, n_trials=2)
    study = _study(tmp_path / "run")
    assert all(t.state == TrialState.FAIL and "diverged" in t.user_attrs["fail_reason"] for t in study.trials)


def _pruning_worker(expire: bool):
    """A stand-in for the search's worker: one trial, pruned (cut short when ``expire`` passes the deadline)."""
    def run_worker(ctx, *, on_trial, stop, study):
        trial = study.ask()
        if expire:
            stop.deadline = time.time() - 1.0
        study.tell(trial, state=TrialState.PRUNED)
    return run_worker


def test_a_budget_that_ends_with_only_cut_short_trials_is_a_clear_error(tmp_path: Path, ranged_space: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automl_dnn.search.run_worker", _pruning_worker(expire=True))
    with pytest.raises(AutoDNNError, match=r"time budget ended before any trial completed \(1 cut short\)"):
        api.search("builtin:breast_cancer", out=tmp_path / "run", space=str(ranged_space), time_budget=600,
                   cv_folds=1, quiet=True)
    monkeypatch.setattr("automl_dnn.search.run_worker", _pruning_worker(expire=False))
    summary = _search(tmp_path / "run2", ranged_space, n_trials=1)  # pruned within --n-trials: no error
    assert (summary.n_complete, summary.n_pruned) == (0, 1)


def test_stale_trials_are_failed_not_left_running(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s")
    dead, silent, alive = study.ask(), study.ask(), study.ask()
    dead.set_user_attr("worker", {"host": socket.gethostname(), "pid": 2**22 + 12345, "heartbeat": time.time()})
    silent.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "heartbeat": time.time() - 3600})
    alive.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "heartbeat": time.time()})
    assert sorted(reap_stale_trials(study)) == [dead.number, silent.number]
    states = {t.number: t.state for t in study.trials}
    assert states == {dead.number: TrialState.FAIL, silent.number: TrialState.FAIL, alive.number: TrialState.RUNNING}
    assert "worker stopped" in study.trials[dead.number].user_attrs["fail_reason"]


def test_epoch_reporter_reports_and_cuts_short_at_the_deadline() -> None:
    stop = StopFlag(deadline=None)
    study = optuna.create_study()
    trial = study.ask()
    reporter = EpochReporter(trial, "logloss", stop.should_stop, max_epochs=8)
    assert reporter.on_epoch_end(0, {"score": 0.5, "seconds": 1.0}) is False
    stop.deadline = time.time() - 1
    assert reporter.on_epoch_end(1, {"score": 0.25, "seconds": 1.0}) is True
    assert study.trials[0].intermediate_values == {13: 0.5, 25: 0.25}  # 1 and 2 of 8 epochs; logloss as is
    assert reporter.curve == [0.5, 0.25] and reporter.epoch_seconds == 2.0


@pytest.mark.parametrize(
    ("done", "planned", "step"),
    [(1, 1, 100), (1, 3, 34), (2, 3, 67), (3, 3, 100), (1, 8, 13), (1, 200, 1), (2, 200, 1), (3, 200, 2),
     (199, 200, 100), (200, 200, 100), (7, 100, 7)],
)
def test_progress_step_is_the_percent_of_planned_training_rounded_up(done: int, planned: int, step: int) -> None:
    assert progress_step(done, planned) == step


@pytest.mark.parametrize(("done", "planned"), [(0, 5), (6, 5), (1, 0)])
def test_progress_step_refuses_work_outside_the_plan(done: int, planned: int) -> None:
    with pytest.raises(ValueError, match="1..planned"):
        progress_step(done, planned)


def test_fold_steps_share_one_scale_and_never_repeat() -> None:
    # fold f of K, epoch e of E -> percent of the K * E planned epochs
    assert [epoch_step(e, 4, fold=0, n_folds=3) for e in range(4)] == [9, 17, 25, 34]
    assert [epoch_step(e, 4, fold=1, n_folds=3) for e in range(4)] == [42, 50, 59, 67]
    assert [epoch_step(e, 4, fold=2, n_folds=3) for e in range(4)] == [75, 84, 92, 100]
    assert epoch_step(2, 4) == epoch_step(2, 4, fold=0, n_folds=1) == 75  # one fold: the default
    steps = [epoch_step(e, 60, fold=f, n_folds=5) for f in range(5) for e in range(60)]
    assert steps == sorted(steps) and steps[-1] == 100  # 300 epochs on 100 steps: repeats, never backwards
    with pytest.raises(ValueError):
        epoch_step(4, 4)
    with pytest.raises(ValueError):
        epoch_step(0, 4, fold=3, n_folds=3)


def _reports(max_epochs: int, n_epochs: int, *, n_folds: int = 1, scores: list[float] | None = None
             ) -> tuple[EpochReporter, dict[int, float]]:
    """A reporter fed `n_epochs` epochs per fold (scores 1, 2, 3, ... unless given); the reported steps."""
    study = optuna.create_study()
    trial = study.ask()
    reporter = EpochReporter(trial, "logloss", lambda: False, max_epochs=max_epochs, n_folds=n_folds)
    values = iter(scores or [float(i + 1) for i in range(n_folds * n_epochs)])
    for fold in range(n_folds):
        reporter.start_fold(fold)
        for epoch in range(n_epochs):
            reporter.on_epoch_end(epoch, {"score": next(values), "seconds": 0.0})
    return reporter, study.trials[0].intermediate_values


def test_reporter_reports_a_percent_once_and_keeps_every_epoch_in_the_curve() -> None:
    reporter, reported = _reports(max_epochs=200, n_epochs=6)
    assert reported == {1: 1.0, 2: 3.0, 3: 5.0}  # epochs 1, 3, 5 (1-based) share a percent with the one before
    assert reporter.curve == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and reporter.last_step == 3


def test_reporter_skips_a_non_finite_score_and_reports_the_next_epoch_at_its_own_step() -> None:
    _, reported = _reports(max_epochs=4, n_epochs=4, scores=[1.0, math.nan, 3.0, 4.0])
    assert reported == {25: 1.0, 75: 3.0, 100: 4.0}


def test_reporter_folds_continue_the_scale_and_report_the_running_mean_of_fold_bests() -> None:
    """A CV trial reports what its value will be so far: the finished folds' bests and the current fold's
    best so far, averaged, so a rung inside fold 2 is not decided by one epoch of a fresh fold net."""
    reporter, reported = _reports(max_epochs=2, n_epochs=2, n_folds=2)  # scores 1, 2 | 3, 4
    assert reported == {25: 1.0, 50: 1.0, 75: 2.0, 100: 2.0}  # fold bests 1 and 3: mean 2 = the trial's value
    assert reporter.curve == [1.0, 2.0, 3.0, 4.0]  # the curve keeps every epoch's own score
    _, reported = _reports(max_epochs=3, n_epochs=3, n_folds=2, scores=[5.0, 2.0, 4.0, 9.0, 6.0, 1.0])
    assert reported == {17: 5.0, 34: 2.0, 50: 2.0, 67: 5.5, 84: 4.0, 100: 1.5}
    # more epochs than steps: an unreported epoch still counts for its fold's best
    _, reported = _reports(max_epochs=150, n_epochs=150, n_folds=2,
                           scores=[1.0] + [0.5] + [2.0] * 148 + [3.0] * 150)
    assert reported[1] == 1.0 and reported[51] == (0.5 + 3.0) / 2
    with pytest.raises(ValueError, match="fold"):
        reporter.start_fold(2)


def test_halving_prunes_at_the_warm_up_percent_and_never_a_finished_trial() -> None:
    """Successive halving on the percent scale: no decision before 25%, the first rung at 25%, and a
    trial at 100% of its planned training is not pruned however bad."""
    study = optuna.create_study(pruner=make_pruner("halving"))
    trial = study.ask()  # a first trial sets the bar at the 25% and 75% rungs
    reporter = EpochReporter(trial, "logloss", lambda: False, max_epochs=8)
    for epoch in range(8):
        reporter.on_epoch_end(epoch, {"score": 0.1})
    study.tell(trial, 0.1)
    assert study.trials[0].system_attrs == {"completed_rung_0": 0.1, "completed_rung_1": 0.1}
    trial = study.ask()
    reporter = EpochReporter(trial, "logloss", lambda: False, max_epochs=8)
    reporter.on_epoch_end(0, {"score": 9.0})  # 13%: before the warm-up ends, not judged
    with pytest.raises(optuna.TrialPruned, match=r"25% of the planned training \(epoch 2 of 8\)"):
        reporter.on_epoch_end(1, {"score": 9.0})
    assert "pruned at 25%" in study.trials[-1].user_attrs["prune_reason"]

    finished = optuna.create_study(pruner=make_pruner("halving"))
    finished.tell(finished.ask(), 0.1)
    trial = finished.ask()
    EpochReporter(trial, "logloss", lambda: False, max_epochs=1).on_epoch_end(0, {"score": 9.0})  # 100%: kept
    assert finished.trials[-1].intermediate_values == {100: 9.0}


@pytest.mark.parametrize("prune_portfolio", [True, False])
def test_an_enqueued_trial_is_pruned_only_if_the_portfolio_may_be(prune_portfolio: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A protected portfolio trial still reports at the rung (it sets the bar for later trials), and goes on."""
    import automl_dnn.objective as objective

    monkeypatch.setattr(objective, "PRUNE_PORTFOLIO", prune_portfolio)
    study = optuna.create_study(pruner=make_pruner("halving"))
    trial = study.ask()
    for epoch in range(8):
        EpochReporter(trial, "logloss", lambda: False, max_epochs=8).on_epoch_end(epoch, {"score": 0.1})
    study.tell(trial, 0.1)
    study.enqueue_trial({})  # a portfolio trial (no parameters in this study)
    enqueued = study.ask()
    reporter = EpochReporter(enqueued, "logloss", lambda: False, max_epochs=8)
    reporter.on_epoch_end(0, {"score": 9.0})
    if prune_portfolio:
        with pytest.raises(optuna.TrialPruned):
            reporter.on_epoch_end(1, {"score": 9.0})
    else:
        reporter.on_epoch_end(1, {"score": 9.0})  # 25 %: worse than the first trial, and kept
        assert study.trials[-1].system_attrs["completed_rung_0"] == 9.0
    later = study.ask()  # not enqueued: pruned whatever the setting
    with pytest.raises(optuna.TrialPruned):
        for epoch in range(2):
            EpochReporter(later, "logloss", lambda: False, max_epochs=8).on_epoch_end(epoch, {"score": 5.0})


@pytest.mark.parametrize("name", ["halving", "hyperband", "median", "none"])
def test_every_pruner_works_on_the_percent_scale(name: str) -> None:
    pruner = make_pruner(name)
    if name == "halving":
        assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
        assert (pruner._min_resource, pruner._reduction_factor, pruner._min_early_stopping_rate) == (25, 3, 0)
    if name == "hyperband":
        assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == (25, 100, 3)
    if name == "median":
        assert pruner._n_warmup_steps == 25
    assert PRUNERS == ("halving", "hyperband", "median", "none") and DEFAULT_PRUNER == "halving"


def test_unknown_pruner_is_a_user_error() -> None:
    with pytest.raises(AutoDNNError, match="unknown pruner 'asha'"):
        make_pruner("asha")


def test_halving_is_the_default_everywhere() -> None:
    from automl_dnn.cli import cli
    from automl_dnn.run_folder import SearchOptions

    assert SearchOptions(source="x", out=Path("run")).pruner == DEFAULT_PRUNER
    search = next(p for p in cli.commands["search"].params if p.name == "pruner")
    assert search.default == DEFAULT_PRUNER and list(search.type.choices) == list(PRUNERS)


def test_tpe_leaves_random_sampling_after_five_trials() -> None:
    assert make_sampler(0, several_workers=False)._n_startup_trials == 5


@pytest.mark.parametrize(
    ("storage", "message"),
    [("nosuchdb://x", "bad storage URL"), ("postgresql://nobody@127.0.0.1:1/none", "cannot open storage")],
)
def test_bad_or_unreachable_storage_is_a_clear_error(tmp_path: Path, ranged_space: Path, storage: str,
                                                     message: str) -> None:
    with pytest.raises(StorageError, match=message):
        _search(tmp_path / "run", ranged_space, n_trials=1, storage=storage)


def test_sqlite_refused_for_several_workers(tmp_path: Path, ranged_space: Path) -> None:
    with pytest.raises(StorageError, match="not safe for 2 concurrent workers"):
        _search(tmp_path / "run", ranged_space, n_trials=1, storage=f"sqlite:///{tmp_path / 'x.db'}", jobs=2)


def test_output_path_that_cannot_be_a_folder(tmp_path: Path, ranged_space: Path) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    # A path in the way: PathError (StorageError before), both AutoDNNError.
    with pytest.raises(AutoDNNError, match="is a file"):
        _search(afile, ranged_space, n_trials=1)
    with pytest.raises(AutoDNNError, match="lies under the file"):
        _search(afile / "run", ranged_space, n_trials=1)


def test_parallel_workers_on_a_journal_file_give_an_exact_count(tmp_path: Path, ranged_space: Path,
                                                                trial_gate: TrialGate,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # The gate keeps each spawned worker in its first trial until the other is in one too, so both
    # workers get trials however slowly the second one starts.
    trial_gate.apply(monkeypatch, parties=2)
    summary = _search(tmp_path / "run", ranged_space, n_trials=5, jobs=2, pruner="none", threads=1)
    assert summary.storage.startswith("journal:")
    study = _study(tmp_path / "run")
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 5
    assert not study.get_trials(states=(TrialState.RUNNING,))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs["worker"]["pid"] for t in finished}
    assert len(workers) == 2 and os.getpid() not in workers
    assert trial_gate.arrived() == workers, "each worker reached its first trial"


def test_a_spawned_worker_stops_once_its_parent_is_gone(tmp_path: Path) -> None:
    """A killed ``search`` (SIGTERM, SIGKILL) leaves its workers to another parent: they cut their trial
    short after the epoch and stop, where they trained on to the deadline before."""
    assert not workers.FileStop(tmp_path / ".stop", None).should_stop()
    assert workers.FileStop(tmp_path / ".stop", None, parent=os.getpid()).should_stop()  # not this one's parent


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, (2, 1)),  # a CPU whose cores the nets have alone: one single-thread worker per core
    ({"cores": 8}, (4, 2)),  # at most MAX_AUTO_WORKERS workers; the cores left are shared out as threads
    ({"cores": 1}, (1, None)),
    ({"device": "cuda"}, (1, None)),  # trials share the one GPU
    ({"threads": 1}, (1, 1)),  # fit's XGBoost has the other core
    ({"time_budget": None}, (1, None)),  # --n-trials alone: one worker is reproducible
    ({"time_budget": 29.0}, (1, None)),  # the workers' start-up would take a tenth of the search
    ({"storage": "sqlite:///x.db"}, (1, None)),  # not safe for several
    ({"storage": "journal:///x.journal"}, (2, 1)),
    ({"storage": "postgresql://u@h/db"}, (2, 1)),
])
def test_jobs_auto(kw: dict[str, object], expected: tuple[int, int | None]) -> None:
    args = {"device": "cpu", "threads": None, "time_budget": 60.0, "storage": None, "cores": 2, **kw}
    assert auto_workers(**args) == expected


def test_jobs_auto_runs_a_worker_per_core_on_a_journal_when_bounded_by_time(
        tmp_path: Path, ranged_space: Path, trial_gate: TrialGate, monkeypatch: pytest.MonkeyPatch) -> None:
    # n_trials ends the search: the 3600 s budget only makes it a time-bounded run, as a CLI default is
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    trial_gate.apply(monkeypatch, parties=2)
    summary = _search(tmp_path / "run", ranged_space, n_trials=4, time_budget=3600.0, jobs="auto", device="cpu",
                      pruner="none")
    assert (summary.jobs, summary.threads) == (2, 1)
    assert summary.storage.startswith("journal:")
    finished = _study(tmp_path / "run").get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 4
    assert len({t.user_attrs["worker"]["pid"] for t in finished}) == 2


def test_a_worker_joins_on_the_cores_a_thread_beside_the_search_frees(
        tmp_path: Path, ranged_space: Path, trial_gate: TrialGate, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fit``'s XGBoost holds one of 2 cores: one worker runs here, a second joins once its event is set."""
    import threading

    from automl_dnn.search import SharedCores

    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    monkeypatch.setattr(search_module, "available_cores", lambda: 2)
    free = threading.Event()
    free.set()  # freed at once
    trial_gate.apply(monkeypatch, hold=0)  # the in-process worker is not gated: its trials go on
    real_run_worker = search_module.run_worker

    def run_worker_until_the_late_one_trains(ctx, **kw):  # hold this worker back until the other one is in trial 0
        deadline = time.monotonic() + 60
        while not (trial_gate.folder / "held-0").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        trial_gate.release()
        return real_run_worker(ctx, **kw)

    monkeypatch.setattr(search_module, "run_worker", run_worker_until_the_late_one_trains)
    summary = _search(tmp_path / "run", ranged_space, n_trials=4, time_budget=3600.0, jobs="auto", device="cpu",
                      pruner="none", beside=SharedCores(cores=1, free=free))
    assert (summary.jobs, summary.threads, summary.late, summary.late_started) == (2, 1, 1, 1)
    assert summary.storage.startswith("journal:")  # a second writer may come
    finished = _study(tmp_path / "run").get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    pids = {t.user_attrs["worker"]["pid"] for t in finished}
    assert len(finished) == 4 and len(pids) == 2 and os.getpid() in pids
    assert any(re.fullmatch(r"1 more worker joined the search at \d+s, once XGBoost's thread had freed its cores", n)
               for n in summary.notes)


def test_a_worker_never_given_the_cores_never_starts(tmp_path: Path, ranged_space: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from automl_dnn.search import SharedCores

    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    monkeypatch.setattr("automl_dnn.search.available_cores", lambda: 2)
    summary = _search(tmp_path / "run", ranged_space, n_trials=3, time_budget=3600.0, jobs="auto", device="cpu",
                      pruner="none", beside=SharedCores(cores=1, free=threading.Event()))
    assert (summary.jobs, summary.threads, summary.late, summary.late_started) == (2, 1, 1, 0)
    finished = _study(tmp_path / "run").get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == 3 and {t.user_attrs["worker"]["pid"] for t in finished} == {os.getpid()}
    assert not any("joined the search" in n for n in summary.notes)


def test_one_worker_beside_a_thread_takes_the_cores_the_thread_leaves(
        tmp_path: Path, ranged_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from automl_dnn.search import SharedCores

    monkeypatch.setattr(workers, "available_cores", lambda: 8)
    monkeypatch.setattr("automl_dnn.search.available_cores", lambda: 8)
    beside = SharedCores(cores=4, free=threading.Event())
    summary = _search(tmp_path / "run", ranged_space, n_trials=1, jobs="auto", device="cpu", beside=beside)
    assert (summary.jobs, summary.threads, summary.late) == (1, 4, 0)  # a count-bound search: one worker
    summary = _search(tmp_path / "run2", ranged_space, n_trials=1, time_budget=3600.0, jobs="auto", device="cpu",
                      beside=beside)  # auto: 4 workers of 2 threads; XGBoost's 4 cores make room for 2 of them
    assert (summary.jobs, summary.threads, summary.late, summary.late_threads) == (3, 4, 2, 2)


def test_jobs_auto_keeps_one_worker_for_a_count_bound_or_a_sqlite_run(tmp_path: Path, ranged_space: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "available_cores", lambda: 2)
    summary = _search(tmp_path / "run", ranged_space, n_trials=1, jobs="auto", device="cpu")
    assert (summary.jobs, summary.threads) == (1, None) and summary.storage.startswith("sqlite:")
    # resumed on a budget: the run's SQLite study takes one worker, where asking for two is an error
    summary = _search(tmp_path / "run", ranged_space, n_trials=2, time_budget=3600.0, jobs="auto", device="cpu")
    assert (summary.jobs, summary.n_complete + summary.n_pruned) == (1, 2)
    assert {t.user_attrs["worker"]["pid"] for t in _study(tmp_path / "run").trials} == {os.getpid()}


@pytest.mark.parametrize("jobs", [0, "two", None, 1.5, True])
def test_bad_jobs_is_one_line(tmp_path: Path, ranged_space: Path, jobs: object) -> None:
    with pytest.raises(AutoDNNError, match="jobs must be a whole number >= 1 or 'auto'"):
        _search(tmp_path / "run", ranged_space, n_trials=1, jobs=jobs)


def test_an_exception_inside_training_fails_that_trial_and_the_study_goes_on(
    tmp_path: Path, ranged_space: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import automl_dnn.train as train_module

    real_train, calls = train_module.train, []

    def flaky_train(*args: object, **kwargs: object):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_train(*args, **kwargs)

    patch_everywhere(monkeypatch, train_module, "train", flaky_train)
    _search(tmp_path / "run", ranged_space, n_trials=3, pruner="none")
    study = _study(tmp_path / "run")
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 1 and failed[0].number == 1
    assert failed[0].user_attrs["fail_reason"] == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3


def test_workers_spread_over_gpus_and_cpu_stays_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert worker_device("cpu", 3) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_device("auto", 0) == "cpu"
    with pytest.raises(AutoDNNError, match="no CUDA GPU"):
        worker_device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [worker_device("auto", i) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]


def test_a_named_gpu_that_is_not_there_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """device="cuda:N" (which the API accepts: one GPU of several) without a GPU, or past the last one, failed every
    trial with torch's error, as device="gpu" did, instead of stopping in one line before any work."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AutoDNNError, match="device 'cuda:0' was given but no CUDA GPU is available"):
        worker_device("cuda:0", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [worker_device("cuda:1", i) for i in range(3)] == ["cuda:1"] * 3  # the GPU named, for every worker
    with pytest.raises(AutoDNNError, match="device 'cuda:2' names GPU 2, but this machine has 2 .*cuda:0 to cuda:1"):
        worker_device("cuda:2", 0)


def test_a_moved_run_folder_still_resumes(finished_run: Path, ranged_space: Path, tmp_path: Path) -> None:
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(finished_run, moved)
    n_before = len(_study(moved).trials)
    spec = RunDir(moved).read_spec()
    assert str(moved.resolve()) in spec["storage"] and str(moved.resolve()) in spec["artifacts"]
    _search(moved, ranged_space, n_trials=len(_study(moved).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) + 1)
    assert len(_study(moved).trials) > n_before
    assert len(_study(finished_run).trials) == n_before, "the original folder is untouched"


def test_a_dataframe_source_is_kept_in_the_run_folder(tmp_path: Path, ranged_space: Path) -> None:
    from automl_dnn.data import read_table

    frame = read_table("builtin:breast_cancer")
    _search(tmp_path / "run", ranged_space, n_trials=1, source=frame, target="target")
    spec = RunDir(tmp_path / "run").read_spec()
    assert spec["source"] == str((tmp_path / "run" / "source.parquet").resolve())
    import pandas as pd

    pd.testing.assert_frame_equal(pd.read_parquet(spec["source"]), frame)


def test_a_time_budget_caps_the_epochs_so_trials_fit(tmp_path: Path, ranged_space: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap comes from the budget and the epoch estimate, not from the clock: the estimate is fixed,
    and the budget is an hour that two trials on breast_cancer never reach, so the trial count bounds the run."""
    import automl_dnn.train as train_module

    patch_everywhere(monkeypatch, train_module, "estimate_epoch_seconds", lambda *a, **k: 150.0)
    _search(tmp_path / "run", ranged_space, n_trials=2, time_budget=3600.0, pruner="none")
    # budget 3600 s / 8 trials / 150 s per epoch -> 3 epochs, raised to MIN_EPOCHS = 5 (< the space's 6)
    complete = _study(tmp_path / "run").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 2
    for trial in complete:
        assert trial.user_attrs["max_epochs_for_budget"] == 5
        assert trial.user_attrs["patience_for_budget"] == 3  # the fewest: a third of 5 epochs is 1
        assert trial.user_attrs["epochs_run"] <= 5
        # reported at the percent of the trial's own (capped) 5 epochs, not of the space's 6
        assert sorted(trial.intermediate_values) == [20 * (e + 1) for e in range(trial.user_attrs["epochs_run"])]


def test_a_capped_trial_waits_a_third_of_its_epochs_for_a_better_score() -> None:
    from automl_dnn.budget import capped_patience

    assert capped_patience(10, 19) == 6  # a quarter (4) stopped TabM-like curves before their best
    assert capped_patience(10, 60) == 10  # never more than the space's patience
    assert capped_patience(10, 5) == 3  # never fewer than 3


def test_a_short_budget_gives_each_trial_a_larger_share() -> None:
    from automl_dnn.budget import trial_share

    assert trial_share(60.0) == 15.0  # budget / 4: budget / 8 = 7.5 s is too few epochs for any net
    assert trial_share(200.0) == 30.0  # budget / 4 capped at 30 s, still above budget / 8 = 25 s
    assert trial_share(300.0) == 37.5 and trial_share(3600.0) == 450.0  # budget / 8


def _search_with_epoch_seconds(tmp_path: Path, space: Path, monkeypatch: pytest.MonkeyPatch,
                               epoch_seconds: list[float]) -> list[optuna.trial.FrozenTrial]:
    """A 3600 s search (a trial's share: 450 s) of one trial per probed epoch time, in order; its trials."""
    import automl_dnn.train as train_module

    times = iter(epoch_seconds)
    patch_everywhere(monkeypatch, train_module, "estimate_epoch_seconds", lambda *a, **k: next(times))
    _search(tmp_path / "run", space, n_trials=len(epoch_seconds), time_budget=3600.0, pruner="none")
    return sorted(_study(tmp_path / "run").trials, key=lambda t: t.number)


def test_a_trial_too_slow_for_its_share_is_not_started_once_one_has_completed(
        tmp_path: Path, ranged_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first trial runs whatever its cost (something must complete); a later one whose 5 epochs
    would take more than twice its share (3600 s / 8 = 450 s) is pruned before it trains."""
    trials = _search_with_epoch_seconds(tmp_path, ranged_space, monkeypatch, [1.0, 600.0, 100.0])
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[1].user_attrs["prune_reason"] == ("not started: 5 epochs take about 3000s, more than 2x a "
                                                    "trial's share of the budget (450s)")
    assert "epochs_run" not in trials[1].user_attrs
    assert trials[2].user_attrs["max_epochs_for_budget"] == 5  # 500 s for 5 epochs: within 2x, so it runs


def test_a_trial_the_search_end_would_cut_below_its_fewest_epochs_is_not_started(
        tmp_path: Path, ranged_space: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before any trial completes, one epoch must fit before the end (3600 s); after, MIN_EPOCHS (5) must."""
    trials = _search_with_epoch_seconds(tmp_path, ranged_space, monkeypatch, [4000.0, 1.0, 800.0, 100.0])
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.PRUNED,
                                         TrialState.COMPLETE]
    assert re.fullmatch(r"not started: an epoch takes about 4000s and the search ends in 3[56]\d\ds",
                        trials[0].user_attrs["prune_reason"])
    assert re.fullmatch(r"not started: 5 epochs take about 4000s and the search ends in 3[56]\d\ds",
                        trials[2].user_attrs["prune_reason"])
    assert "epochs_run" not in trials[2].user_attrs
    assert trials[3].user_attrs["max_epochs_for_budget"] == 5  # 500 s for 5 epochs fits: it runs


def _complete_trial(epoch_seconds: float, epochs_run: int) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=0.5, user_attrs={"epoch_seconds": epoch_seconds, "epochs_run": epochs_run})


def test_the_worker_stops_once_even_the_fastest_net_could_not_train_its_fewest_epochs() -> None:
    from automl_dnn.workers import too_late_for_a_trial

    study = optuna.create_study()
    assert not too_late_for_a_trial(study, 0.1)  # nothing measured yet: the first trial must run
    study.add_trial(_complete_trial(epoch_seconds=30.0, epochs_run=10))  # 3 s an epoch
    study.add_trial(_complete_trial(epoch_seconds=20.0, epochs_run=20))  # 1 s an epoch: the fastest
    assert too_late_for_a_trial(study, 4.9)  # 5 epochs x 1 s
    assert not too_late_for_a_trial(study, 5.0)
    assert not too_late_for_a_trial(study, None)  # no deadline (--n-trials)


def test_a_first_trial_too_slow_for_its_share_goes_behind_the_other_first_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An enqueued trial whose 5 epochs exceed its share (450 s) while another enqueued trial waits is
    pruned before it trains and enqueued again at the back; then it runs, once, whatever its cost."""
    space = tmp_path / "two-first.yaml"
    space.write_text(RANGED_SPACE + "  - {n_layers: 2, d_hidden: 8, activation: relu, lr: 0.002}\n")
    # 500 s for 5 epochs: over the share, under twice it
    trials = _search_with_epoch_seconds(tmp_path, space, monkeypatch, [100.0, 1.0, 100.0])
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["prune_reason"] == ("deferred behind the other first trials: 5 epochs take about "
                                                    "500s, more than a trial's share of the budget (450s)")
    assert "epochs_run" not in trials[0].user_attrs
    assert trials[1].params == {"n_layers": 2, "d_hidden": 8, "activation": "relu", "lr": 0.002}
    assert trials[2].params == trials[0].params and trials[2].user_attrs["deferred_from"] == 0
    assert trials[2].user_attrs["max_epochs_for_budget"] == 5


def test_a_lone_slow_first_trial_is_not_deferred(tmp_path: Path, ranged_space: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (trial,) = _search_with_epoch_seconds(tmp_path, ranged_space, monkeypatch, [100.0])
    assert trial.state == TrialState.COMPLETE and "deferred_from" not in trial.user_attrs


def test_opening_a_storage_retries_while_another_worker_creates_the_tables() -> None:
    calls = []

    def racing_open() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError('(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint')
        return "storage"

    assert _retry_racing_creation(racing_open) == "storage" and len(calls) == 3
    with pytest.raises(RuntimeError, match="password authentication failed"):
        _retry_racing_creation(lambda: (_ for _ in ()).throw(RuntimeError("password authentication failed")))


@pytest.mark.parametrize(("metric", "used"), [("mae", "l1"), ("rmse", "mse"), ("r2", "mse")])
def test_an_l1_loss_is_used_only_for_mae(tmp_path: Path, metric: str, used: str) -> None:
    """L1 fits the median, which MAE rewards and RMSE punishes: searched either way, used only for MAE."""
    space = tmp_path / "l1.yaml"
    space.write_text(TINY_SPACE + "  regression_loss: {choices: [l1]}\n")
    _search(tmp_path / "run", space, n_trials=1, metric=metric, pruner="none", source="builtin:diabetes")
    trial = _study(tmp_path / "run").trials[0]
    assert trial.params == {"regression_loss": "l1"}
    config = json.loads((Path(trial.user_attrs["artifacts"]) / "config.json").read_text())
    assert config["settings"]["train"]["regression_loss"] == used  # what the net was trained with
    # an MAE study's target is centred and scaled robustly (the median's scale), saved with the net
    assert config["settings"]["target_scale"] == ("robust" if metric == "mae" else "standard")
    assert (config["settings"]["target"] or {}).get("robust", False) == (metric == "mae")
    if used == "mse":
        assert trial.user_attrs["regression_loss_off"] == f"l1 searched, mse used: {metric} is not mae"
    else:
        assert "regression_loss_off" not in trial.user_attrs and "l1 loss" in trial.user_attrs["summary"]["optimizer"]


def test_a_classifier_does_not_show_a_regression_loss(tmp_path: Path) -> None:
    """The portfolio's trials say regression_loss l1 for any task; a classifier's tables said "l1 loss"."""
    space = tmp_path / "l1.yaml"
    space.write_text(TINY_SPACE + "  regression_loss: {choices: [l1]}\n")
    _search(tmp_path / "run", space, n_trials=1, pruner="none")
    trial = _study(tmp_path / "run").trials[0]
    assert "loss" not in trial.user_attrs["summary"]["optimizer"] and "regression_loss_off" not in trial.user_attrs


SMOOTHED_SPACE = TINY_SPACE + "  label_smoothing: {choices: [0.1]}\n"


@pytest.mark.parametrize(("metric", "used"), [("logloss", 0.0), ("roc_auc", 0.0), ("accuracy", 0.1),
                                              ("balanced_accuracy", 0.1), ("rmse", 0.0)])
def test_label_smoothing_is_used_only_for_accuracy_like_metrics(tmp_path: Path, metric: str, used: float) -> None:
    space = tmp_path / "smoothed.yaml"
    space.write_text(SMOOTHED_SPACE)
    source = "builtin:diabetes" if metric == "rmse" else "builtin:breast_cancer"
    _search(tmp_path / "run", space, n_trials=1, metric=metric, pruner="none", source=source)
    trial = _study(tmp_path / "run").trials[0]
    assert trial.params == {"label_smoothing": 0.1}  # searched either way: the space cannot see the metric
    config = json.loads((Path(trial.user_attrs["artifacts"]) / "config.json").read_text())
    assert config["settings"]["train"]["label_smoothing"] == used  # what the net was trained with
    if used == 0.0:
        assert trial.user_attrs["label_smoothing_off"] == f"0.1 searched, 0 used: {metric} is not accuracy-like"
    else:
        assert "label_smoothing_off" not in trial.user_attrs


def test_a_failed_trial_says_whether_the_net_diverged_or_only_its_score_was_undefined() -> None:
    from types import SimpleNamespace

    from automl_dnn.objective import _why_not_finite

    undefined = SimpleNamespace(history=[{"train_loss": 0.5, "valid_loss": 0.6, "score": math.nan}])
    assert _why_not_finite(undefined, "roc_auc") == "its validation roc_auc is undefined (NaN) on these rows"
    diverged = SimpleNamespace(history=[{"train_loss": math.inf, "valid_loss": math.nan, "score": math.nan}])
    assert _why_not_finite(diverged, "roc_auc").startswith("diverged")
    assert _why_not_finite(SimpleNamespace(history=[]), "logloss").startswith("diverged")


class _Killed(BaseException):
    """Stands for a SIGKILL: the process stops here, the files it wrote stay as they are."""


def test_a_preprocessing_file_a_kill_left_unwritten_is_written_by_the_rerun(tmp_path: Path, ranged_space: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The run folder is prepared scaling by scaling, data file then preprocess/<scaling>.json: a kill between
    the two left a folder the rerun took as prepared, and every trial of that scaling failed on the missing
    file (here every trial: "all 10 trials failed ... FileNotFoundError"), on every rerun."""
    import automl_dnn.run_folder as run_folder

    real = run_folder.write_json

    def killed_at_the_preprocessing(path: Path, data: object) -> None:
        if Path(path).parent.name == "preprocess":
            raise _Killed
        real(path, data)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(run_folder, "write_json", killed_at_the_preprocessing)
        with pytest.raises(_Killed):
            _search(out, ranged_space, n_trials=2)
    assert (out / "data" / "standard.safetensors").is_file() and not (out / "preprocess").exists()
    _search(out, ranged_space, n_trials=2)
    assert (out / "preprocess" / "standard.json").is_file()
    assert len(_study(out).get_trials(states=(TrialState.COMPLETE,))) >= 1


def _aged(path: Path, seconds: float) -> Path:
    import os
    import time

    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def test_a_rerun_removes_the_temporaries_killed_writers_left_in_the_run_folder(tmp_path: Path,
                                                                            ranged_space: Path) -> None:
    """A kill while a trial's artifacts, a fold copy or a JSON file were written left a hidden temporary that
    nothing read and nothing removed; the rerun removes those over an hour old (a live writer's are seconds old,
    and another machine may be writing one now)."""
    out = tmp_path / "run"
    _search(out, ranged_space, n_trials=1)
    stale = [out / "artifacts" / ".trial-00001.k2j_x9ab", out / "bagging" / "net-00000" / ".r0-f1.abcd1234",
             out / ".run.json.0123456789ab.tmp"]
    for path in stale[:2]:
        path.mkdir(parents=True)
        (path / "weights.safetensors").write_bytes(b"half")
    stale[2].write_text("{")
    fresh = out / "artifacts" / ".trial-00002.zz_yy123"
    fresh.mkdir()
    for path in stale:
        _aged(path, 2 * 3600)
    _search(out, ranged_space, n_trials=2)
    assert not any(path.exists() for path in stale)
    assert fresh.is_dir(), "a temporary under an hour old may be another worker's write in progress"
    assert len(_study(out).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2

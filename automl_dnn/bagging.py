"""K-fold bagging after the search: out-of-fold predictions that every ensemble decision can trust.

One validation split is too few rows to choose members, weights and a threshold on a small table (the
weights overfit it, and the exported nets never see it). Here each chosen member of the search (a net
trial, or the tuned XGBoost) is trained again once per fold of the development rows (train + valid):

- **Out-of-fold (OOF) predictions**: each fold model predicts the rows it never saw, so every
  development row gets an honest prediction, and the ensemble is fitted on all of them.
- **No early stopping on the OOF rows** (that would flatter them): a fold model trains for the epochs
  the search found its trial best at, on the trial's own schedule, and keeps its last weights
  (``train(keep="last")``); XGBoost boosts its tuned number of rounds. Both are scaled to the fold's
  size: a net keeps its number of optimizer steps, XGBoost grows its rounds with the rows, as its refit does.
- **The exported member** is either the average of the fold models (``bag``: the first repeat's K
  models) or one model refit on every development row (``refit``); XGBoost is always its refit copy.
- **Repeated k-fold** on tiny tables: OOF predictions are averaged over the repeats.

Every fold model is written to ``RUN_DIR/bagging/<member>/<unit>/`` when it is done, with a fingerprint
of what it was trained on, so a rerun after a crash reuses the folds that are done.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from automl_dnn.config import TrialSettings
from automl_dnn.data import Dataset, FeaturePreprocessor, TargetEncoder, net_values
from automl_dnn.errors import AutoDNNError
from automl_dnn.files import json_digest, read_json
from automl_dnn.folds import Folds, bagging_folds, make_folds, scaled_epochs
from automl_dnn.gbt import GBTMemberFit, predict_gbt, refit_booster
from automl_dnn.model import build_mlp
from automl_dnn.objective import StopAfter, embedding_inputs, target_inputs, worker_device
from automl_dnn.optim import replayed_plateau
from automl_dnn.run_folder import RunDir, TrialArtifacts, load_trial, save_trial_folder
from automl_dnn.search_rows import n_search_train, read_rows
from automl_dnn.train import StoredRows, TrainData, predict, train

BAG_MODES = ("bag", "refit")
CHECK_ROWS = 64  # a net unit's predictions of these development rows are saved, to check its export


# --- what the ensemble step gets ------------------------------------------------------------------


@dataclass
class NetUnit:
    """One trained copy of a net trial: a fold model or the refit on every development row."""

    label: str  # "r0-f2" | "refit"
    settings: dict[str, Any]  # TrialSettings.to_dict() of this copy (its own bins, its own target transform)
    d_in: int
    d_out: int
    folder: Path

    def state(self) -> dict[str, torch.Tensor]:
        return load_trial(self.folder).weights()

    def check(self) -> tuple[np.ndarray, np.ndarray]:
        """Development row positions and this copy's saved predictions of them (user space)."""
        saved = load_trial(self.folder).predictions
        return saved["check_rows"].astype(np.int64), saved["check"]


@dataclass
class BaggedMember:
    """A member's OOF predictions of the development rows and its exported form's test predictions."""

    name: str
    oof: np.ndarray
    test: np.ndarray
    units: list[NetUnit] = field(default_factory=list)  # a net's exported copies (empty for XGBoost)
    seconds: float = 0.0
    reused: int = 0  # fold models read back from an earlier run instead of trained
    folds: str = ""  # the fingerprint of the folds it was bagged on


@dataclass
class DevData:
    """One scaling's development rows (train then valid, as the run saved them) and test rows, encoded."""

    X: np.ndarray | StoredRows
    y: np.ndarray  # class indices, or the run's standardized target
    X_test: np.ndarray | StoredRows
    n_search_train: int  # rows the search trained its nets on

    def rows(self, positions: np.ndarray) -> np.ndarray:
        return self.X.take(positions) if isinstance(self.X, StoredRows) else self.X[positions]


def dev_data(run: RunDir, scaling: str) -> DevData:
    """Issue 13: the training and validation matrices are read straight into one array (no second copy of
    either, nor of the file); ``n_search_train`` is the search's sample of the training rows, if it had one."""
    path = run.data_path(scaling)
    y_train, y_valid = read_rows(path, "y_train"), read_rows(path, "y_valid")
    X_test = read_rows(path, "X_test")
    X = np.empty((len(y_train) + len(y_valid), X_test.shape[1]), dtype=X_test.dtype)
    read_rows(path, "X_train", out=X[: len(y_train)])
    read_rows(path, "X_valid", out=X[len(y_train):])
    return DevData(X=X, y=np.concatenate([y_train, y_valid]), X_test=X_test,
                   n_search_train=n_search_train(run, len(y_train)))


def stored_dev_data(run: RunDir, scaling: str) -> DevData:
    """``dev_data`` with the matrices left in the file, read a group of batches at a time by the trainer and a
    chunk at a time for the predictions (issue 13: the refit on 850,000 rows held a 472 MB matrix while
    XGBoost still boosted beside it)."""
    path = run.data_path(scaling)
    y_train, y_valid = read_rows(path, "y_train"), read_rows(path, "y_valid")
    with safe_open(str(path), framework="np") as f:
        n_test, d = f.get_slice("X_test").get_shape()
    X = StoredRows(functools.partial(_read_dev_rows, path, len(y_train)), len(y_train) + len(y_valid), d)
    X_test = StoredRows(lambda rows: read_rows(path, "X_test", rows), n_test, d)
    return DevData(X=X, y=np.concatenate([y_train, y_valid]), X_test=X_test,
                   n_search_train=n_search_train(run, len(y_train)))


def dev_rows(run: RunDir, scaling: str, rows: np.ndarray) -> np.ndarray:
    """Development rows (sorted positions in train then valid) of one scaling, read without the matrices."""
    path = run.data_path(scaling)
    return _read_dev_rows(path, len(read_rows(path, "y_train")), rows)


def _read_dev_rows(path: Path, n_train: int, rows: np.ndarray) -> np.ndarray:
    first, second = rows[rows < n_train], rows[rows >= n_train] - n_train
    return np.concatenate([read_rows(path, "X_train", first), read_rows(path, "X_valid", second)])


def dev_targets(run: RunDir, encoder: TargetEncoder, scaling: str) -> np.ndarray:
    """The development rows' targets as the metrics want them (class indices, values on the original scale)."""
    path = run.data_path(scaling)  # issue 13: the targets only, not a concatenated copy of the matrices
    y = np.concatenate([read_rows(path, "y_train"), read_rows(path, "y_valid")])
    return encoder.decode(y) if encoder.task_ == "regression" else y.astype(np.int64)


# --- nets ---------------------------------------------------------------------------------------


def _reusable(folder: Path, fingerprint: str) -> TrialArtifacts | None:
    try:
        saved = load_trial(folder)
    except (OSError, ValueError, KeyError):
        return None
    return saved if saved.config.get("fingerprint") == fingerprint else None


def _train_and_save(saved: TrialArtifacts, copy_epoch: int, dev: DevData, pre: FeaturePreprocessor,
                    encoder: TargetEncoder, *, rows: np.ndarray, predict_rows: np.ndarray | None, folder: Path,
                    fingerprint: str, device: str, threads: int | None) -> None:
    settings = TrialSettings.from_dict(saved.config["settings"])
    planned, epochs = scaled_epochs(copy_epoch, settings.train.max_epochs, dev.n_search_train, len(rows))
    replayed = replayed_plateau(settings.train, saved.config.get("lr_by_epoch") or [],
                                dev.n_search_train / max(len(rows), 1))
    settings = dataclasses.replace(settings, train=dataclasses.replace(replayed, max_epochs=planned,
                                                                       patience=planned + 1))
    X_train = dev.X if np.array_equal(rows, np.arange(len(dev.X))) else dev.rows(rows)  # every row (a refit): no copy
    watch = predict_rows if predict_rows is not None and len(predict_rows) else rows[: min(len(rows), 256)]
    settings, y_train, y_watch, target = target_inputs(settings, encoder, dev.y[rows], dev.y[watch])
    settings, bins = embedding_inputs(settings, pre, X_train, dev.y[rows])
    torch.manual_seed(settings.train.seed)
    d_out = int(saved.config["d_out"])
    model = build_mlp(settings.net, d_in=dev.X.shape[1], d_out=d_out, bins=bins)
    result = train(model, TrainData(X_train, y_train, dev.rows(watch), y_watch), settings.train, task=encoder.task_,
                   device=device, callbacks=[StopAfter(epochs)], threads=threads, keep="last")
    if result.best_epoch is None:
        raise AutoDNNError(f"a fold copy of trial {saved.config.get('trial_number')} diverged; "
                           "ensemble with --folds 1")

    def user(X: np.ndarray | StoredRows) -> np.ndarray:
        if len(X) == 0:  # no test split (--test-size 0): probabilities have one column per class
            width = () if encoder.task_ == "regression" else (len(encoder.classes_),)
            return np.zeros((0, *width))
        if isinstance(X, StoredRows):
            return np.concatenate([user(chunk) for chunk in X.chunks()])
        pred = np.asarray(predict(model, X, task=encoder.task_, device=device), dtype=np.float64)
        if encoder.task_ != "regression":
            return pred
        return net_values(pred, encoder, target)

    check_rows = np.arange(min(CHECK_ROWS, len(dev.X)))
    predictions = {"test": user(dev.X_test), "check": user(dev.rows(check_rows)), "check_rows": check_rows}
    if predict_rows is not None:
        predictions["oof"] = user(dev.rows(predict_rows))
    config = {"settings": settings.to_dict(), "d_in": int(dev.X.shape[1]), "d_out": d_out,
              "trial_number": saved.config.get("trial_number"), "fingerprint": fingerprint,
              "epochs": epochs, "planned_epochs": planned, "train_rows": len(rows),
              "lr_by_epoch": result.lr_by_epoch,
              "seconds": round(result.train_seconds, 3), "pid": os.getpid()}
    save_trial_folder(folder, state=model.state_dict(), config=config, predictions=predictions)


# --- the bagging phase --------------------------------------------------------------------------


@dataclass
class NetToBag:
    """A net trial chosen for bagging, with what planning it needs."""

    name: str
    trial: int
    artifacts: TrialArtifacts
    copy_epoch: int  # the epoch (0-based) its copies train to: ``objective.epochs_to_copy``


@dataclass
class _FoldRun:
    """The out-of-fold predictions of one member's fold models, and the saved folder of each fold."""

    oof: np.ndarray
    folders: list[Path]  # repeat 0's folds, in order
    reused: int


@dataclass(frozen=True)
class Unit:
    """One copy to train: its training rows, the rows it predicts out of fold (None: a refit), where it goes."""

    rows: np.ndarray
    out: np.ndarray | None
    folder: Path
    fingerprint: str


def _sequentially(fit: Callable[[Unit], None], should_stop: Callable[[], bool]) -> Callable[[list[Unit]], bool]:
    """Train the units one after the other in this process; False when ``should_stop`` cut them short."""
    def train_all(units: list[Unit]) -> bool:
        for unit in units:
            if should_stop():
                return False
            fit(unit)
        return True
    return train_all


def _units(run: RunDir, member: str, folds: Folds, base: dict[str, Any], *, refit: bool = False) -> list[Unit]:
    units = []
    for r in range(folds.repeats):
        for f in range(folds.k):
            train_rows, out_rows = folds.rows(r, f)
            label = f"r{r}-f{f}"
            units.append(Unit(train_rows, out_rows, bag_folder(run, member) / label,
                              json_digest({**base, "unit": label})))
    if refit:
        units.append(Unit(np.arange(folds.n_rows), None, bag_folder(run, member) / "refit",
                          json_digest({**base, "unit": "refit"})))
    return units


def _run_folds(run: RunDir, member: str, folds: Folds, base: dict[str, Any],
               train_all: Callable[[list[Unit]], bool], *, refit: bool = False) -> _FoldRun | None:
    """Train every copy (``train_all`` saves each) unless one with the same fingerprint is saved already;
    sum the OOF predictions. None when ``train_all`` was cut short (what it finished stays saved)."""
    units = _units(run, member, folds, base, refit=refit)
    missing = [unit for unit in units if _reusable(unit.folder, unit.fingerprint) is None]
    if missing and not train_all(missing):
        return None
    oof_sum: np.ndarray | None = None
    for unit in units:
        if unit.out is None:
            continue
        oof = load_trial(unit.folder).predictions["oof"]
        if oof_sum is None:
            oof_sum = np.zeros((folds.n_rows, *oof.shape[1:]))
        oof_sum[unit.out] += oof
    assert oof_sum is not None
    return _FoldRun(oof=oof_sum / folds.repeats, folders=[u.folder for u in units[: folds.k]],
                    reused=len(units) - len(missing))


def _net_unit(folder: Path, label: str) -> tuple[NetUnit, np.ndarray]:
    """A saved copy of a net and its test predictions."""
    saved = load_trial(folder)
    unit = NetUnit(label=label, settings=saved.config["settings"], d_in=int(saved.config["d_in"]),
                   d_out=int(saved.config["d_out"]), folder=folder)
    return unit, saved.predictions["test"]


def _dev_and_columns(run: RunDir, scaling: str, cache: dict[str, tuple[DevData, FeaturePreprocessor]]
                     ) -> tuple[DevData, FeaturePreprocessor]:
    """One scaling's development rows at a time (issue 13: at 1M rows each is ~470 MB; the refit of the
    nets of two scalings held both)."""
    if scaling not in cache:
        cache.clear()
        cache[scaling] = (dev_data(run, scaling), FeaturePreprocessor.from_dict(read_json(run.preprocess_path(scaling))))
    return cache[scaling]


def bag_net(run: RunDir, net: NetToBag, folds: Folds, encoder: TargetEncoder, *, mode: str, device: str,
            threads: int | None, cache: dict[str, tuple[DevData, FeaturePreprocessor]],
            should_stop: Callable[[], bool] = lambda: False, pool: FoldPool | None = None) -> BaggedMember | None:
    """Every fold copy of one net trial (and its refit), its OOF predictions and its exported form.

    ``pool`` trains the copies side by side in worker processes (``--jobs``), else they train here.
    None when ``should_stop`` turns true before it is done (the copies done so far stay saved).
    """
    started = time.monotonic()
    scaling = net.artifacts.config["settings"].get("scaling", "standard")
    dev, pre = _dev_and_columns(run, scaling, cache)
    # (its key is still "best_epoch": the copies an earlier version saved stay reusable)
    base = dict(member=net.name, trial_config=net.artifacts.config["settings"], best_epoch=net.copy_epoch,
                folds=folds.fingerprint(), seed_rows=dev.n_search_train)

    def fit(unit: Unit) -> None:
        _train_and_save(net.artifacts, net.copy_epoch, dev, pre, encoder, rows=unit.rows, predict_rows=unit.out,
                        folder=unit.folder, fingerprint=unit.fingerprint, device=device, threads=threads)

    if pool is None:
        train_all = _sequentially(fit, should_stop)
    else:
        def train_all(units: list[Unit]) -> bool:
            return pool.train([_NetJob(str(run.root), str(net.artifacts.folder), net.copy_epoch, scaling, unit)
                               for unit in units], should_stop)

    done = _run_folds(run, net.name, folds, base, train_all, refit=mode == "refit")
    if done is None:
        return None
    copies = ([_net_unit(bag_folder(run, net.name) / "refit", "refit")] if mode == "refit"
              else [_net_unit(folder, folder.name) for folder in done.folders])
    return BaggedMember(name=net.name, oof=done.oof, test=np.mean([t for _, t in copies], axis=0),
                        units=[u for u, _ in copies], seconds=time.monotonic() - started, reused=done.reused,
                        folds=folds.fingerprint())


@dataclass(frozen=True)
class _NetJob:
    """A fold copy of a net for a worker process: plain values, so it pickles to a spawned process."""

    run_root: str
    trial_folder: str
    copy_epoch: int
    scaling: str
    unit: Unit


_WORKER_CACHE: dict[str, tuple[DevData, FeaturePreprocessor]] = {}


def _train_job(job: _NetJob, device: str, threads: int | None) -> None:
    """A worker process's part: read what the copy needs (the data once per process) and train it."""
    run = RunDir(Path(job.run_root))
    dev, pre = _dev_and_columns(run, job.scaling, _WORKER_CACHE)
    encoder = TargetEncoder.from_dict(read_json(run.target_path))
    unit = job.unit
    _train_and_save(load_trial(Path(job.trial_folder)), job.copy_epoch, dev, pre, encoder, rows=unit.rows,
                    predict_rows=unit.out, folder=unit.folder, fingerprint=unit.fingerprint, device=device,
                    threads=threads)


def _warm_worker(ready: Any, warm: tuple[str, str] | None) -> None:
    """A pool worker's start: the imports (this module's) and the development rows its copies read, done before
    the bagging counts the time it has left (``FoldPool.wait_ready``)."""
    try:
        if warm is not None:
            _dev_and_columns(RunDir(Path(warm[0])), warm[1], _WORKER_CACHE)
    except Exception:  # noqa: BLE001 - only a head start: a copy that needs the rows reads them, and says what failed
        _WORKER_CACHE.clear()
    ready.put(os.getpid())


class FoldPool:
    """``--jobs`` worker processes that train fold copies side by side (spawned, as the search's workers
    are: torch is not fork-safe). Each copy is saved by the worker that trained it, as it finishes, so a
    stop (the deadline, Ctrl-C) loses only the copies in training; their rerun trains just those.

    ``warm`` (a run and a scaling): each worker reads those development rows as it starts."""

    POLL_SECONDS = 0.2

    def __init__(self, jobs: int, *, device: str, threads: int | None, warm: tuple[RunDir, str] | None = None) -> None:
        self.jobs, self.device, self.threads = jobs, device, threads
        context = mp.get_context("spawn")
        self._ready = context.SimpleQueue()
        rows = None if warm is None else (str(warm[0].root), warm[1])  # plain values for the spawned workers
        self._pool = context.Pool(jobs, initializer=_warm_worker, initargs=(self._ready, rows))

    def wait_ready(self, should_stop: Callable[[], bool]) -> bool:
        """Wait until every worker has started (imports and rows read); False if ``should_stop`` turns true first."""
        started = 0
        while started < self.jobs:
            if should_stop():
                return False
            if self._ready.empty():
                time.sleep(self.POLL_SECONDS / 4)
                continue
            self._ready.get()
            started += 1
        return True

    def train(self, jobs: list[_NetJob], should_stop: Callable[[], bool]) -> bool:
        """Train every job; False (the rest abandoned) when ``should_stop`` turns true first."""
        pending = [self._pool.apply_async(_train_job, (job, worker_device(self.device, i % self.jobs), self.threads))
                   for i, job in enumerate(jobs)]
        for result in pending:
            while not result.ready():
                if should_stop():
                    self.close(cancel=True)
                    return False
                result.wait(self.POLL_SECONDS)
            result.get()  # a worker's error (a diverged copy) is raised here, as it would be in this process
        return True

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            self._pool.terminate()
        else:
            self._pool.close()
        self._pool.join()

    def __enter__(self) -> FoldPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(cancel=exc[0] is not None)


def refit_net(run: RunDir, net: NetToBag, encoder: TargetEncoder, *, device: str, threads: int | None) -> BaggedMember:
    """Issue 13: a net of a search on a sample of the rows, trained again on every development row.

    The copy keeps its trial's optimizer steps and schedule (``scaled_epochs``: fewer epochs of more rows),
    like a fold copy; the ensemble keeps fitting its weights on the trial's validation predictions (as it
    does for XGBoost's refit copy), and the copy is what is exported and scored on the test rows. Its rows
    stay in the run's data file (``stored_dev_data``): it may train beside XGBoost's last trial.
    """
    started = time.monotonic()
    scaling = net.artifacts.config["settings"].get("scaling", "standard")
    dev = stored_dev_data(run, scaling)
    pre = FeaturePreprocessor.from_dict(read_json(run.preprocess_path(scaling)))
    folder = bag_folder(run, net.name) / "refit"
    fingerprint = json_digest({"member": net.name, "trial_config": net.artifacts.config["settings"],
                               "best_epoch": net.copy_epoch, "seed_rows": dev.n_search_train, "unit": "refit-all"})
    reused = _reusable(folder, fingerprint) is not None
    if not reused:
        _train_and_save(net.artifacts, net.copy_epoch, dev, pre, encoder, rows=np.arange(len(dev.X)), predict_rows=None,
                        folder=folder, fingerprint=fingerprint, device=device, threads=threads)
    unit, test = _net_unit(folder, "refit")
    return BaggedMember(name=net.name, oof=np.zeros(0), test=test, units=[unit], seconds=time.monotonic() - started,
                        reused=int(reused))


def bag_gbt(run: RunDir, member: GBTMemberFit, folds: Folds, task: str, *, threads: int | None,
            should_stop: Callable[[], bool] = lambda: False) -> BaggedMember | None:
    """OOF predictions of the tuned XGBoost: its parameters and rounds, boosted again on each fold.

    The exported XGBoost stays the copy refit on every development row, so its test predictions are that
    copy's.
    """
    started = time.monotonic()
    if "train" not in member.frames:  # spilled by a fit that planned no folds (gbt.fit_gbt_inputs)
        return None
    frames = pd.concat([member.frames["train"], member.frames["valid"]], ignore_index=True)
    labels = np.concatenate([member.labels["train"], member.labels["valid"]])
    if len(frames) != folds.n_rows:
        raise AutoDNNError("the XGBoost member's rows do not match the run's split; ensemble with --folds 1")
    result = member.result
    n_fit = len(member.frames["train"])
    base = dict(params=result.params, rounds=result.best_iteration + 1, folds=folds.fingerprint(), rows=n_fit)

    def fit(unit: Unit) -> None:
        rounds = (result.best_iteration + 1) * len(unit.rows) / n_fit
        booster = refit_booster(result.params, [frames.iloc[unit.rows]], [labels[unit.rows]], rounds, threads)
        oof = np.asarray(predict_gbt(booster, frames.iloc[unit.out], task=task, categories=result.categories),
                         dtype=np.float64)
        save_trial_folder(unit.folder, state={}, config={"fingerprint": unit.fingerprint, "rounds": round(rounds)},
                          predictions={"oof": oof})

    done = _run_folds(run, "xgboost", folds, base, _sequentially(fit, should_stop))
    if done is None:
        return None
    return BaggedMember(name="xgboost", oof=done.oof, test=member.test, seconds=time.monotonic() - started,
                        reused=done.reused, folds=folds.fingerprint())


def gbt_in_thread(folds: int | None, *, seed: int, threads: int | None
                  ) -> tuple[Callable[[Dataset], float],
                             Callable[[RunDir, GBTMemberFit, Callable[[], bool], float | None], None]]:
    """``BackgroundGBT``'s ``fits_after`` and ``after`` for ``fit``: XGBoost bags itself in its thread, on
    its own cores, on the folds the nets' bagging will use, while the nets still search. A fold is started
    only if it can end by the deadline, as its tuned trial's own seconds say (a 26-class XGBoost on 16,000
    rows takes ~25 s a fit: five of them would overrun a 60 s fit by two minutes); the finished folds are
    kept for the ensemble step."""

    def fits_after(dataset: Dataset) -> float:
        k, repeats = bagging_folds(folds, len(dataset.split["train"]) + len(dataset.split["valid"]),
                                   ordered=dataset.order is not None)
        return 0.0 if k == 1 else float(k * repeats)

    def after(run: RunDir, member: GBTMemberFit, stopped: Callable[[], bool], deadline: float | None) -> None:
        y_dev = np.concatenate([member.labels["train"], member.labels["valid"]])
        keys = run.fold_keys()
        k, repeats = bagging_folds(folds, len(y_dev), ordered=keys["order"] is not None)
        out_of_time = gbt_out_of_time(member, k, deadline, stopped)
        if k > 1 and not out_of_time():
            try:
                folds_ = make_folds(y_dev, member.task, k=k, repeats=repeats, seed=seed, **keys)
            except AutoDNNError:  # fewer groups than folds: the ensemble step says so
                return
            member.bag = bag_gbt(run, member, folds_, member.task, threads=threads, should_stop=out_of_time)

    return fits_after, after


def gbt_fold_seconds(member: GBTMemberFit, k: int) -> float:
    """Seconds one fold copy of the tuned XGBoost takes: its best trial's own seconds, scaled by the fold's
    rows twice (the rounds grow with the rows, and so does each round)."""
    trials = member.result.trials
    if not trials:
        return 0.0
    best = min(trials, key=lambda t: t["valid_loss"] if math.isfinite(t["valid_loss"]) else math.inf)
    n_train = len(member.labels["train"])
    rows = (k - 1) / k * (n_train + len(member.labels["valid"]))
    return float(best["seconds"]) * (rows / max(n_train, 1)) ** 2


def gbt_out_of_time(member: GBTMemberFit, k: int, deadline: float | None,
                    stopped: Callable[[], bool] = lambda: False) -> Callable[[], bool]:
    """``bag_gbt``'s ``should_stop``: true once ``stopped`` says so, or a further fold copy (``gbt_fold_seconds``)
    could not end by the deadline."""
    fold = gbt_fold_seconds(member, k)
    return lambda: stopped() or (deadline is not None and time.monotonic() + fold > deadline)


def bag_folder(run: RunDir, member: str) -> Path:
    return run.root / "bagging" / member


__all__ = ["BAG_MODES", "BaggedMember", "DevData", "FoldPool", "NetToBag", "NetUnit", "bag_gbt", "bag_net", "dev_data",
           "dev_rows", "dev_targets", "gbt_in_thread", "gbt_out_of_time", "refit_net", "stored_dev_data"]

"""The ``ensemble`` step: weight the best nets of a finished search (plus XGBoost) and export one model.

The nets are never retrained: their validation and test predictions were saved by the search, so the
weights are fit on those arrays alone (rtdl's way). Only the XGBoost member is trained here (or, in
``fit``, by ``gbt.BackgroundGBT`` in a thread beside the search), on the very split the nets used (the
row indices saved in ``split.safetensors``), after checking that the source table is unchanged. Like
the nets, it is tuned and early-stopped on the validation split (unless that split is too small to tune
on: then on a holdout of the training rows); the exported copy is then refit on training + validation
rows, and the test scores reported are the exported copy's. The exported nets are the saved weights,
checked to reproduce their saved validation predictions before they are written.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from automl_dnn import metrics
from automl_dnn.config import NetConfig, describe
from automl_dnn.bagging import (BAG_MODES, BaggedMember, FoldPool, NetToBag, bag_gbt, bag_net, dev_rows,
                                dev_targets, gbt_fold_seconds, gbt_out_of_time, refit_net)
from automl_dnn.budget import BagPlan, plan_bagging
from automl_dnn.data import TargetEncoder, TargetTransform, net_values
from automl_dnn.ensemble import blend, build_ensemble, choose_threshold, ensemble_loss, overfit_warning
from automl_dnn.errors import AutoDNNError
from automl_dnn.files import read_json, write_json
from automl_dnn.folds import Folds, bagging_folds, make_folds
from automl_dnn.gbt import BackgroundGBT, GBTMemberFit, fit_run_gbt, gbt_preprocess_key, reload_source
from automl_dnn.model import build_mlp
from automl_dnn.objective import copy_seconds, epochs_to_copy, worker_device
from automl_dnn.model_folder import GBTMember, NetMember, check_model_dir, save_model
from automl_dnn.run_folder import (RunDir, TrialArtifacts, check_device, check_time_budget, check_whole_numbers, find_trial,
                                   load_trial, trial_folder)
from automl_dnn.search_rows import read_rows, sample_sizes
from automl_dnn.study import open_study
from automl_dnn.workers import available_cores
from automl_dnn.train import predict

MAX_CANDIDATES = 30  # the best nets considered; more only slow the greedy selection down
GBT_SHARE = 0.8  # of the time left when XGBoost starts; the rest is for weights and export
REPRODUCE_TOL = 1e-3  # a rebuilt net must match its saved validation predictions this closely
REPRODUCE_ROWS = 4096  # ... on its first this many validation rows
#: Issue 13: the refits after a sampled search may use the ensemble step's time but this share of it, kept for the
#: weights and the export (which no longer wait for XGBoost: its thread ends with the search).
REFIT_EXPORT_SHARE = 0.25


@dataclass
class MemberRow:
    """One candidate of the ensemble: a net of the search or the XGBoost model."""

    name: str  # "net-00012" | "xgboost"
    kind: str  # "net" | "xgboost"
    trial: int | None
    description: str  # key hyperparameters in words
    valid: float  # the selection metric on validation
    test: float  # ... and on test (NaN without a test split)
    weight: float  # 0 for a candidate the ensemble did not select
    fit_seconds: float | None = None  # XGBoost's tuning + refit, plus a member's fold copies when bagged


@dataclass
class SummaryRow:
    """The best single model, the equal-weight average or the weighted ensemble."""

    name: str
    valid: float
    test: float
    valid_loss: float  # logloss (classification), rmse (regression) or mae (an MAE study): what the weights minimize
    test_loss: float


@dataclass
class EnsembleReport:
    task: str
    metric: str
    direction: str
    loss: str
    members: list[MemberRow]
    summary: list[SummaryRow]
    warnings: list[str]
    notes: list[str]
    model_dir: Path
    threshold: float | None
    has_test: bool
    seconds: dict[str, float] = field(default_factory=dict)  # gbt, bagging, weights, export
    folds: int = 1  # k of the k-fold bagging the weights were fitted with; 1: the validation split
    repeats: int = 1
    page: Path | None = None  # the report page ``fit`` wrote, if any

    @property
    def inner(self) -> str:
        """What the "valid" scores are measured on: ``oof`` (out-of-fold, after bagging) or ``valid``."""
        return "oof" if self.folds > 1 else "valid"

    @property
    def selected(self) -> list[MemberRow]:
        return [row for row in self.members if row.weight > 0]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One table: every candidate, then the summary rows; the weighted ensemble comes last."""
        table = [{"model": m.name, "kind": m.kind, "details": m.description, "valid": m.valid, "test": m.test,
                  "weight": m.weight} for m in self.members]
        table += [{"model": s.name, "kind": "", "details": "", "valid": s.valid, "test": s.test, "weight": None}
                  for s in self.summary]
        return table

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_dir"] = str(self.model_dir)
        return data


@dataclass
class Candidate:
    """One model the ensemble may use: its validation predictions and its exported copy's test predictions."""

    name: str
    kind: str  # "net" | "xgboost"
    trial: int | None
    description: str
    valid: np.ndarray  # the validation predictions the weights are fitted on
    test: np.ndarray  # the test predictions of the exported model (XGBoost: its copy refit on train + valid)
    scaling: str = "standard"  # the preprocessing it reads (XGBoost: the one whose transform_for_gbt it uses)
    artifacts: TrialArtifacts | None = None  # a net's saved trial
    gbt: GBTMemberFit | None = None  # the XGBoost member
    copy_epoch: int | None = None  # the epoch a net trial's copies train to (0-based), and the seconds a copy takes
    copy_seconds: float | None = None
    bag: BaggedMember | None = None  # after k-fold bagging: ``valid`` holds its OOF predictions
    # A refit of an unbagged net exported beside the net as its trial trained it (``_refit_unbagged``)
    beside_searched: bool = False


# --- the step -----------------------------------------------------------------------------------


def ensemble_run(run_dir: Path, *, model_dir: Path, top_k: int = 5, gbt: bool | BackgroundGBT = True,
                 gbt_trials: int = 10, seed: int | None = None, time_budget: float | None = None,
                 threads: int | None = None, folds: int | None = 1, bag_mode: str = "bag",
                 device: str = "auto", bagging_until: float | None = None, jobs: int = 1) -> EnsembleReport:
    """Weight the best nets of a search (plus XGBoost) and export one model folder.

    ``gbt`` may be a ``BackgroundGBT`` started beside the search (``fit``): its model is used as it is.
    ``folds`` > 1 bags the best ``top_k`` nets and XGBoost first (``bagging``), and the members, weights
    and threshold are fitted on their out-of-fold predictions; None chooses k from the rows.
    ``bag_mode`` says what a bagged net exports: its fold models' average, or a refit on every row.
    ``bagging_until`` (``time.monotonic()``) ends the nets' bagging before the time budget does.
    ``jobs`` > 1 trains the nets' fold copies side by side in that many worker processes. ``seed`` (None: the
    run's own, so that ``ensemble`` after ``search --seed 7`` draws the folds and XGBoost's trials a fit would,
    and goes on from XGBoost's kept tuning and fold copies instead of replacing them) seeds the folds, XGBoost
    and the weights. A run with no completed trial makes a model only beside a ``BackgroundGBT`` that has one
    (``fit`` whose budget ended first): XGBoost alone, with a note. On its own the step ensembles a search's nets,
    so it refuses such a run before tuning anything.
    """
    check_time_budget(time_budget)
    check_whole_numbers(jobs=jobs, top_k=top_k, folds=folds, gbt_trials=gbt_trials, threads=threads)
    if bag_mode not in BAG_MODES:
        raise AutoDNNError(f"bag mode must be one of {', '.join(BAG_MODES)}, got {bag_mode!r}")
    check_model_dir(Path(model_dir))  # before minutes of XGBoost, not after
    device = check_device(device)
    worker_device(device, 0)  # --device cuda without a GPU: one line, not torch's AssertionError mid-bagging
    started = time.monotonic()
    deadline = None if time_budget is None else started + time_budget
    run = RunDir(Path(run_dir))
    spec = run.read_spec()
    task, metric = spec["task"], spec["metric"]
    seed = int(spec.get("seed", 0)) if seed is None else seed
    encoder = TargetEncoder.from_dict(read_json(run.target_path))
    notes: list[str] = []
    candidates = _net_candidates(run, spec, notes)
    if not candidates and not isinstance(gbt, BackgroundGBT):
        # ``ensemble`` on its own ensembles a search's nets: it does not tune an XGBoost to export alone
        raise _no_trial_error(run)
    y_valid, y_test = _targets(run, candidates[0].scaling if candidates else gbt_preprocess_key(run), encoder)
    candidates = _matching_shapes(candidates, y_valid, y_test, notes)
    seconds: dict[str, float] = {}

    t0 = time.monotonic()  # the nets are bagged first: in ``fit`` XGBoost may still be busy on its own cores
    bag_deadline = deadline if bagging_until is None else min(bagging_until, deadline or math.inf)
    bagged = _bag_nets(run, encoder, candidates, folds, bag_mode=bag_mode, top_k=top_k, seed=seed,
                       deadline=bag_deadline, threads=threads, device=device, notes=notes, jobs=jobs)
    if bagged is None:  # not bagged: the best nets again on every training + validation row, as time allows
        candidates = _refit_unbagged(run, encoder, candidates, top_k=top_k,
                                     deadline=refit_deadline(deadline, bagging_until), threads=threads,
                                     device=device, notes=notes, beside_searched=bag_mode == "bag")
    seconds["bagging"] = time.monotonic() - t0

    t0 = time.monotonic()
    if bagged is None and isinstance(gbt, BackgroundGBT):
        gbt.skip_after()  # the nets are not bagged: XGBoost's fold copies in its thread would serve nothing
    member = _gbt_member(run, spec, gbt, gbt_trials, seed, deadline, threads, notes)
    if member is not None:
        candidates.append(Candidate(name="xgboost", kind="xgboost", trial=None, description=member.describe(),
                                    valid=member.valid, test=member.test, scaling=member.preprocess, gbt=member))
    if not any(c.kind == "net" for c in candidates):
        if member is None:
            raise _no_trial_error(run)
        notes.insert(0, _xgboost_alone_note(run))
    seconds["gbt"] = time.monotonic() - t0

    if bagged is not None:
        t0 = time.monotonic()
        bagged_trees = _bag_trees(run, encoder, candidates, bagged.folds, threads, deadline, notes)
        unbagged = None if bagged_trees else next((c for c in candidates if c.kind == "xgboost"), None)
        ahead = None if unbagged is None else _gbt_ahead_note(unbagged, candidates, task, metric, y_valid)
        if ahead is not None:
            # XGBoost could not be bagged, and without it a bag of weaker nets is all the ensemble has (a wide
            # table on one core: out-of-fold ROC-AUC 0.78 where XGBoost alone held 0.95): stay on the
            # validation split, where XGBoost's predictions are as honest as the searched nets'
            notes.append(ahead)
            bagged = None
        else:
            candidates = bagged.nets + bagged_trees
            y_valid = bagged.y_dev
            notes.append(_bagging_note(bagged, candidates, bag_mode))
        seconds["bagging"] += time.monotonic() - t0

    t0 = time.monotonic()
    n_gbt = sum(c.kind == "xgboost" for c in candidates)
    valid_preds = [c.valid for c in candidates]
    names = [c.name for c in candidates]
    trees = [i for i, c in enumerate(candidates) if c.kind == "xgboost"]
    result = build_ensemble(task, y_valid, valid_preds, names=names, max_members=top_k + n_gbt, seed=seed,
                            always=trees, metric=metric)
    if sum(candidates[i].kind == "net" for i in result.members) > top_k:  # top_k nets at most
        result = build_ensemble(task, y_valid, valid_preds, names=names, max_members=top_k, seed=seed, always=trees,
                                metric=metric)
    chosen = [candidates[i] for i in result.members]
    threshold = None
    if task == "binary":
        threshold, note = choose_threshold(y_valid, _blend(chosen, result.weights, "valid")[:, 1], metric)
        notes.append(note)
    report_rows = _member_rows(candidates, result, metric, y_valid, y_test)
    summary = _summary_rows(candidates, chosen, result.weights, task, metric, y_valid, y_test, threshold)
    warnings = _warnings(task, metric, result, candidates, chosen, y_test,
                         inner="validation" if bagged is None else "out-of-fold")
    seconds["weights"] = time.monotonic() - t0

    t0 = time.monotonic()
    _export(run, spec, encoder, Path(model_dir), chosen, result.weights, threshold, report_rows, summary, notes)
    seconds["export"] = time.monotonic() - t0
    report = EnsembleReport(task=task, metric=metric, direction=metrics.direction(metric),
                            loss=metrics.proper_loss(task, metric), members=report_rows, summary=summary,
                            warnings=warnings, notes=notes, model_dir=Path(model_dir), threshold=threshold,
                            has_test=len(y_test) > 0, seconds=seconds,
                            folds=1 if bagged is None else bagged.folds.k,
                            repeats=1 if bagged is None else bagged.folds.repeats)
    write_json(run.ensemble_path, _finite(report.to_dict()))  # the report page's leaderboard reads it
    return report


def refit_deadline(deadline: float | None, bagging_until: float | None, now: float | None = None) -> float | None:
    """When the refits of unbagged nets must end (``time.monotonic()``).

    They may take the time the search kept for its bagging, to its planned end (``bagging_until``): when no
    folds fit, the search's reserve is one refit copy of its best nets (``budget.reserve_seconds``). Before,
    the refits ended REFIT_EXPORT_SHARE of the step's time early, so a reserve kept for the best net's copy
    could refuse it: on california_housing at 60 s the search stopped 16 s early for a 13 s refit, which
    then had 12.75 s, and the fit ended 14 s before its budget. Beyond ``bagging_until`` they may also take
    the ensemble step's own time but REFIT_EXPORT_SHARE of it (issue 13: refits after a sampled search).
    """
    if deadline is None:
        return None
    shared = deadline - REFIT_EXPORT_SHARE * (deadline - (time.monotonic() if now is None else now))
    return shared if bagging_until is None else max(min(bagging_until, deadline), shared)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a score that does not exist (no test split) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _gbt_member(run: RunDir, spec: dict[str, Any], gbt: bool | BackgroundGBT, gbt_trials: int, seed: int,
                deadline: float | None, threads: int | None, notes: list[str]) -> GBTMemberFit | None:
    """The XGBoost member: the one ``fit`` trained beside the search, or one trained now on the reloaded data."""
    if isinstance(gbt, BackgroundGBT):
        member = gbt.result()
        notes.extend(gbt.notes)
        return member
    if not gbt:
        return None
    dataset = reload_source(spec, notes)
    if dataset is None:
        return None
    budget = None if deadline is None else max(1.0, GBT_SHARE * (deadline - time.monotonic()))
    return fit_run_gbt(run, dataset, n_trials=gbt_trials, seed=seed, time_budget=budget, threads=threads,
                       notes=notes, metric=spec["metric"])


# --- candidates ---------------------------------------------------------------------------------


def _completed_trials(spec: dict[str, Any]) -> list[FrozenTrial]:
    """COMPLETE trials with a finite value, best first (ties: the earlier trial)."""
    study = open_study(spec, create=False)
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if spec["direction"] == "maximize" else 1.0
    return sorted(trials, key=lambda t: (sign * t.value, t.number))


def _no_trial_error(run: RunDir) -> AutoDNNError:
    return AutoDNNError(f"no completed trial in {str(run.root)!r}; run `automl-dnn search` first "
                        "(or again with a larger --time-budget or --n-trials)")


def _xgboost_alone_note(run: RunDir) -> str:
    """Why a model holds no net: ``fit``'s budget ended before any net trial completed, XGBoost's had not."""
    return ("no net trial completed within the time budget, so the model is XGBoost alone; a larger --time-budget "
            f"adds nets (a rerun resumes the study in {run.root}), as does `automl-dnn ensemble` after resuming it "
            "with `automl-dnn search`")


def _net_candidates(run: RunDir, spec: dict[str, Any], notes: list[str]) -> list[Candidate]:
    """The best completed trials' saved predictions; trials whose artifacts are gone are skipped. None when no trial
    completed: the caller decides whether XGBoost alone is a model (``fit``) or an error (``ensemble``)."""
    trials = _completed_trials(spec)
    candidates: list[Candidate] = []
    for trial in trials:
        if len(candidates) == MAX_CANDIDATES:
            break
        # As recorded, else under the run's artifacts folder (a moved run).
        folder = find_trial([trial.user_attrs.get("artifacts"), trial_folder(Path(spec["artifacts"]), trial.number),
                             trial_folder(run.root / "artifacts", trial.number)])
        if folder is None:
            notes.append(f"skipped trial {trial.number}: its artifacts (weights, config, predictions) are missing")
            continue
        saved = load_trial(folder)
        settings = saved.config["settings"]
        candidates.append(Candidate(
            name=f"net-{trial.number:05d}", kind="net", trial=trial.number,
            description=", ".join(describe(settings).values()),
            valid=np.asarray(saved.predictions["valid"], dtype=np.float64),
            test=np.asarray(saved.predictions["test"], dtype=np.float64),
            scaling=settings.get("scaling", "standard"), artifacts=saved,
            copy_epoch=epochs_to_copy(trial), copy_seconds=copy_seconds(trial),
        ))
    if trials and not candidates:
        raise AutoDNNError(f"none of the {len(trials)} completed trials in {str(run.root)!r} has its artifacts; "
                           "restore the artifacts folder or run `automl-dnn search` again")
    if len(trials) > MAX_CANDIDATES:
        notes.append(f"considered the best {MAX_CANDIDATES} of {len(trials)} completed trials")
    return candidates


def _targets(run: RunDir, scaling: str, encoder: TargetEncoder) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test targets as the metrics want them: class indices, or values on the original scale."""
    path = run.data_path(scaling)  # issue 13: the two target arrays only, not the matrices beside them
    data = {key: read_rows(path, key) for key in ("y_valid", "y_test")}
    if encoder.task_ == "regression":
        return encoder.decode(data["y_valid"]), encoder.decode(data["y_test"])
    return data["y_valid"].astype(np.int64), data["y_test"].astype(np.int64)


def _matching_shapes(candidates: list[Candidate], y_valid: np.ndarray, y_test: np.ndarray,
                     notes: list[str]) -> list[Candidate]:
    """Drop candidates whose saved predictions do not cover the current split (a stale artifact)."""
    kept = []
    for c in candidates:
        if len(c.valid) == len(y_valid) and len(c.test) == len(y_test) and c.valid.shape[1:] == c.test.shape[1:]:
            kept.append(c)
        else:
            notes.append(f"skipped trial {c.trial}: its saved predictions do not match the run's split")
    if candidates and not kept:
        raise AutoDNNError("no trial's saved predictions match the run's split; run `automl-dnn search` again "
                           "into a new folder")
    return kept


# --- k-fold bagging -----------------------------------------------------------------------------


@dataclass
class _Bagged:
    nets: list[Candidate]  # with their OOF predictions as ``valid``
    y_dev: np.ndarray
    folds: Folds


def _bag_nets(run: RunDir, encoder: TargetEncoder, candidates: list[Candidate], folds: int | None, *, bag_mode: str,
              top_k: int, seed: int, deadline: float | None, threads: int | None, device: str,
              notes: list[str], jobs: int = 1) -> _Bagged | None:
    """The best ``top_k`` nets (by validation), bagged as far as the time left allows (``plan_bagging``), or
    None to stay on the validation split. A net the deadline cuts off is left out, its finished folds kept
    on disk for a rerun. ``jobs`` worker processes train the fold copies side by side.
    """
    nets = [c for c in candidates if c.kind == "net"]
    if not nets:  # XGBoost alone (``fit`` whose budget ended before a net trial completed): nothing to bag
        return None
    y_dev = dev_targets(run, encoder, nets[0].scaling)
    keys = run.fold_keys()
    k, repeats = bagging_folds(folds, len(y_dev), ordered=keys["order"] is not None)
    if k == 1:
        if folds is not None and folds > 1:
            notes.append(f"no k-fold bagging: {len(y_dev)} training + validation rows are too few for {folds} folds")
        return None
    ranked = [c for c in nets if c.copy_epoch is not None][:top_k]
    costs = [c.copy_seconds or 0.0 for c in ranked]

    def plan_now(started: bool) -> BagPlan:
        left = None if deadline is None else deadline - time.monotonic()
        plan = plan_bagging(costs, [], k=k, repeats=repeats, refit=bag_mode == "refit", seconds=left, workers=jobs,
                            started=started)
        if plan.n_nets == 0 and left is not None:
            # The search kept this time with PLAN_SAFETY's margin (reserve_seconds) and overshot its end by a
            # trial's last epoch, so the same margin again refused the plan it kept the time for (adult at 300 s:
            # 3 folds need 65 s, 80 s left) and the time went unused. Without it: a net the deadline cuts off
            # is left out all the same.
            unguarded = plan_bagging(costs, [], k=k, repeats=repeats, refit=bag_mode == "refit", seconds=left,
                                     workers=jobs, safety=1.0, started=started)
            plan = unguarded if unguarded.n_nets else plan
        return plan

    plan = plan_now(started=False)
    if plan.k == 1 or plan.n_nets == 0:
        if plan.note:
            notes.append(plan.note)
        return None
    out_of_time = (lambda: False) if deadline is None else (lambda: time.monotonic() >= deadline)
    cache: dict[str, Any] = {}
    bagged: list[Candidate] = []
    with _fold_pool(jobs, device, threads, warm=(run, ranked[0].scaling)) as pool:
        if pool is not None:
            # POOL_START_SECONDS was a guess; the plan that counts is made with the time left once the workers
            # are ready (a 60 s fit of wine_quality_white planned 4 folds, its workers took 4.6 s, not 3, to start,
            # and the deadline cut the last copies off: no bagging at all)
            plan = (plan_now(started=True) if pool.wait_ready(out_of_time)
                    else BagPlan(1, 1, 0, 0, "no k-fold bagging: the time budget ended as its workers started"))
        if plan.note:
            notes.append(plan.note)
        if plan.k == 1 or plan.n_nets == 0:
            return None
        try:
            fold_rows = make_folds(y_dev, encoder.task_, k=plan.k, repeats=plan.repeats, seed=seed, **keys)
        except AutoDNNError as exc:  # fewer groups than folds
            notes.append(f"no k-fold bagging: {exc}")
            return None
        for i, c in enumerate(ranked[: plan.n_nets]):
            assert c.copy_epoch is not None and c.trial is not None and c.artifacts is not None
            to_bag = NetToBag(name=c.name, trial=c.trial, artifacts=c.artifacts, copy_epoch=c.copy_epoch)
            member = bag_net(run, to_bag, fold_rows, encoder, mode=bag_mode, device=device, threads=threads,
                             cache=cache, should_stop=out_of_time, pool=pool)
            if member is None:
                left = ", ".join(x.name for x in ranked[i: plan.n_nets])
                notes.append(f"{left} left out of the bagging: the time budget ended (finished folds are kept for "
                             "a rerun)")
                break
            bagged.append(dataclasses.replace(c, valid=member.oof, test=member.test, bag=member))
    if not bagged:
        notes.append("no k-fold bagging: the time budget ended before a net's folds were done")
        return None
    return _Bagged(nets=bagged, y_dev=y_dev, folds=fold_rows)


@contextmanager
def _fold_pool(jobs: int, device: str, threads: int | None,
               warm: tuple[RunDir, str] | None = None) -> Iterator[FoldPool | None]:
    """``jobs`` > 1: worker processes for the fold copies, each with its share of the cores."""
    if jobs <= 1:
        yield None
        return
    with FoldPool(jobs, device=device, threads=threads or max(1, available_cores() // jobs), warm=warm) as pool:
        yield pool


def _refit_unbagged(run: RunDir, encoder: TargetEncoder, candidates: list[Candidate], *, top_k: int,
                    deadline: float | None, threads: int | None, device: str, notes: list[str],
                    beside_searched: bool = True) -> list[Candidate]:
    """The best ``top_k`` nets, when they are not bagged, refit on every development row as far as the time
    left allows (``refits_that_fit``, best first), as XGBoost's exported copy is: their trials
    trained on the training rows only (issue 13: on a sample of them). Their weights are still fitted on
    their trials' validation predictions. With ``beside_searched`` (``--bag``, the default: export averages) each
    refit is exported beside its net as searched, the trial's weight shared equally: the two trained on other rows
    from other draws, and their mean beat the refit alone on every 60 s regression run replayed (docs/benchmarks.md,
    "A refit beside its net as searched"); ``--refit``, or a search on a sample of the rows, exports the refit
    alone. A net left out keeps its trial's weights, and a note says so."""
    sizes = sample_sizes(run)
    sample = None if sizes is None or sizes["sample"] >= sizes["train"] else sizes["sample"]
    trained = "" if sample is None else f" (the search trained on {sample:,})"
    as_searched = "the training rows" if sample is None else f"{sample:,} training rows"
    ranked = [c for c in candidates if c.kind == "net" and c.copy_epoch is not None][:top_k]
    beside_searched = beside_searched and sample is None  # a net searched on a sample is the weaker copy
    left = None if deadline is None else deadline - time.monotonic()
    # the whole time left: ``refit_deadline`` keeps the export's time back already
    fits = refits_that_fit([c.copy_seconds or 0.0 for c in ranked], left)
    refit: dict[str, Candidate] = {}
    for c in [c for c, fit in zip(ranked, fits) if fit]:
        if deadline is not None and time.monotonic() >= deadline:
            break
        assert c.copy_epoch is not None and c.trial is not None and c.artifacts is not None
        to_refit = NetToBag(name=c.name, trial=c.trial, artifacts=c.artifacts, copy_epoch=c.copy_epoch)
        member = refit_net(run, to_refit, encoder, device=device, threads=threads)
        test = (member.test + c.test) / 2 if beside_searched else member.test
        refit[c.name] = dataclasses.replace(c, test=test, bag=member, beside_searched=beside_searched)
    kept = [c.name for c in ranked if c.name not in refit]
    if refit:
        beside = ", each exported beside its net as searched" if beside_searched else ""
        notes.append(f"{', '.join(refit)} refit on every training + validation row{trained}{beside}; weights fitted "
                     "on the searched nets' validation predictions")
    if kept:
        need = sum(c.copy_seconds or 0.0 for c in ranked if c.name in kept)
        left = None if deadline is None else deadline - time.monotonic()  # after the refits made
        notes.append(f"{', '.join(kept)} exported as searched, on {as_searched}: a refit on every row "
                     f"needs about {need:.0f}s{'' if left is None else f' and {max(left, 0):.0f}s were left'}")
    return [refit.get(c.name, c) for c in candidates]


def refits_that_fit(costs: list[float], seconds: float | None) -> list[bool]:
    """Which nets (best first) to refit in ``seconds``: each one whose copy still fits the time the ones before it
    left. A best net too slow to refit no longer keeps a quicker one from its refit (a 60 s diamonds fit exported
    every net as searched with 11 s left, too few for its best net's copy)."""
    left = math.inf if seconds is None else seconds
    fits = []
    for cost in costs:
        fits.append(cost <= left)
        left -= cost if fits[-1] else 0.0
    return fits


def _bag_trees(run: RunDir, encoder: TargetEncoder, candidates: list[Candidate], folds: Folds,
               threads: int | None, deadline: float | None, notes: list[str]) -> list[Candidate]:
    """XGBoost's OOF predictions of the development rows: from its thread in ``fit`` when it bagged them there,
    else its tuned trial boosted again per fold of the nets' folds now, each fold started only if it can end
    by the deadline (a wide table's tuning can leave no time for its folds: 10 fold copies of a second each
    took a 15 s fit to 27 s). Cut short, XGBoost is left out of the bagged ensemble.

    The thread's folds may differ from the nets' (a bagging cut to fewer folds): each row's prediction is
    still out of fold, which is all the weights and the threshold need, so they are used as they are. Boosted
    again on the nets' folds they cost a 60 s fit of wine_quality_white its XGBoost member (0.67 -> 0.71 RMSE).
    """
    bagged = []
    for c in candidates:
        if c.kind != "xgboost" or c.gbt is None or not c.gbt.frames:
            continue
        member = c.gbt.bag
        if member is not None and member.folds != folds.fingerprint():
            notes.append("XGBoost's out-of-fold predictions come from the folds its thread bagged beside the "
                         "search, not the nets' own")
        if member is None:
            member = bag_gbt(run, c.gbt, folds, encoder.task_, threads=threads,
                             should_stop=gbt_out_of_time(c.gbt, folds.k, deadline))
            if member is None and "train" in c.gbt.frames:
                notes.append(f"XGBoost left out of the bagged ensemble: its {folds.k * folds.repeats} fold copies "
                             f"need about {gbt_fold_seconds(c.gbt, folds.k):.1f}s each, more than the time left "
                             "(finished ones are kept for a rerun)")
        if member is None:  # out of time, or its training frame went to disk (a fit that planned no folds)
            continue
        bagged.append(dataclasses.replace(c, valid=member.oof, test=member.test, bag=member))
    return bagged


def _gbt_ahead_note(gbt: Candidate, searched: list[Candidate], task: str, metric: str,
                    y_valid: np.ndarray) -> str | None:
    """When XGBoost, left out of the bagging, beats every searched net on the validation split (the loss the
    weights minimize, on rows neither trained on): a note saying the ensemble stays on that split; else None."""
    nets = [c for c in searched if c.kind == "net"]
    if not nets or not len(y_valid):
        return None
    loss = metrics.proper_loss(task, metric)
    gbt_loss = _score(loss, y_valid, gbt.valid)
    best_net = min(_score(loss, y_valid, c.valid) for c in nets)
    if not gbt_loss < best_net:
        return None
    return (f"k-fold bagging set aside: XGBoost, which its fold copies left out, beats every net on validation "
            f"({loss} {gbt_loss:.4g} against {best_net:.4g}); members and weights fitted on the validation split, "
            "nets exported as searched")


def _bagging_note(bagged: _Bagged, candidates: list[Candidate], bag_mode: str) -> str:
    reused = sum(c.bag.reused for c in candidates if c.bag is not None)
    n_nets = sum(c.kind == "net" for c in candidates)
    kinds = f"{n_nets} net" + ("s" if n_nets > 1 else "")
    kinds += " and XGBoost" if any(c.kind == "xgboost" for c in candidates) else ""
    rep = f", {bagged.folds.repeats} repeats" if bagged.folds.repeats > 1 else ""
    return (f"{bagged.folds.k}-fold bagging{rep} of {kinds}: members, weights and threshold fitted on out-of-fold "
            f"predictions of {len(bagged.y_dev)} rows; nets exported as {_MODE_WORDS[bag_mode]}"
            + (f" ({reused} fold models reused from an earlier run)" if reused else ""))


_MODE_WORDS = {"bag": "the average of their fold models", "refit": "a refit on every training + validation row"}


# --- scores -------------------------------------------------------------------------------------


def _blend(chosen: list[Candidate], weights: list[float], part: str) -> np.ndarray:
    return blend([getattr(c, part) for c in chosen], weights)


def _score(metric: str, y: np.ndarray, pred: np.ndarray, threshold: float | None = None) -> float:
    return metrics.score(metric, y, pred, threshold) if len(y) else math.nan


def _member_rows(candidates: list[Candidate], result: Any, metric: str, y_valid: np.ndarray,
                 y_test: np.ndarray) -> list[MemberRow]:
    weight_of = dict(zip(result.members, result.weights))
    return [MemberRow(name=c.name, kind=c.kind, trial=c.trial, description=c.description,
                      valid=_score(metric, y_valid, c.valid), test=_score(metric, y_test, c.test),
                      weight=float(weight_of.get(i, 0.0)), fit_seconds=_fit_seconds(c))
            for i, c in enumerate(candidates)]


def _fit_seconds(c: Candidate) -> float | None:
    """Seconds spent fitting a candidate after its trial: XGBoost's whole search, and any bagging."""
    seconds = c.gbt.result.seconds if c.gbt is not None else 0.0
    seconds += c.bag.seconds if c.bag is not None else 0.0
    return round(seconds, 3) if seconds else None


def _summary_rows(candidates: list[Candidate], chosen: list[Candidate], weights: list[float], task: str,
                  metric: str, y_valid: np.ndarray, y_test: np.ndarray, threshold: float | None) -> list[SummaryRow]:
    """Best single model (by the selection metric on validation), equal-weight average, weighted ensemble.

    The weighted ensemble is what is exported: its label metrics use the exported decision threshold.
    """
    loss = metrics.proper_loss(task, metric)
    best = min(candidates, key=lambda c: metrics.as_loss(metric, _score(metric, y_valid, c.valid)))
    equal = [1.0 / len(chosen)] * len(chosen)
    plural = "s" if len(chosen) > 1 else ""
    rows = [(f"best single model ({best.name})", best.valid, best.test, None),
            (f"equal-weight average ({len(chosen)} member{plural})", _blend(chosen, equal, "valid"),
             _blend(chosen, equal, "test"), None),
            ("weighted ensemble", _blend(chosen, weights, "valid"), _blend(chosen, weights, "test"), threshold)]
    return [SummaryRow(name=name, valid=_score(metric, y_valid, v, cut), test=_score(metric, y_test, t, cut),
                       valid_loss=_score(loss, y_valid, v), test_loss=_score(loss, y_test, t))
            for name, v, t, cut in rows]


def _warnings(task: str, metric: str, result: Any, candidates: list[Candidate], chosen: list[Candidate],
              y_test: np.ndarray, *, inner: str) -> list[str]:
    if not len(y_test):
        return []
    best = candidates[result.best_single]
    ensemble_test = _blend(chosen, result.weights, "test")
    test_gain = ensemble_loss(task, y_test, best.test, metric) - ensemble_loss(task, y_test, ensemble_test, metric)
    warning = overfit_warning(result.valid_gain, test_gain, inner=inner)
    return [warning] if warning else []


# --- export -------------------------------------------------------------------------------------


def _export(run: RunDir, spec: dict[str, Any], encoder: TargetEncoder, model_dir: Path, chosen: list[Candidate],
            weights: list[float], threshold: float | None, rows: list[MemberRow], summary: list[SummaryRow],
            notes: list[str]) -> None:
    row_of = {row.name: row for row in rows}
    nets, gbt, scalings = [], None, set()
    X_valid: dict[str, np.ndarray] = {}  # per scaling, read once however many nets use it
    for c, w in zip(chosen, weights):
        scores = {"valid": row_of[c.name].valid, "test": row_of[c.name].test}
        scalings.add(c.scaling)
        if c.kind == "net" and c.bag is not None:
            nets.extend(_bagged_members(run, c, encoder, w / 2 if c.beside_searched else w, scores))
        if c.kind == "net" and (c.bag is None or c.beside_searched):
            if c.scaling not in X_valid:
                # issue 13: the first REPRODUCE_ROWS validation rows only (150,000 at 1M rows: ~30 s a wide net)
                X_valid[c.scaling] = read_rows(run.data_path(c.scaling), "X_valid",
                                               np.arange(min(len(c.valid), REPRODUCE_ROWS)))
            nets.append(_net_member(c, X_valid[c.scaling], encoder, w / 2 if c.beside_searched else w, scores))
        elif c.kind != "net":
            assert c.gbt is not None
            booster = c.gbt.result.exported_booster
            gbt = GBTMember(booster=booster, params=c.gbt.result.params,
                            best_iteration=booster.num_boosted_rounds() - 1, categories=c.gbt.result.categories,
                            preprocess=c.scaling, weight=w, scores=scores)
    preprocessors = {s: read_json(run.preprocess_path(s)) for s in sorted(scalings)}
    save_model(model_dir, task=spec["task"], target=spec["target"], metric=spec["metric"],
               target_encoder=encoder.to_dict(), preprocessors=preprocessors, nets=nets, gbt=gbt,
               threshold=threshold, scores={"summary": [dataclasses.asdict(r) for r in summary]},
               notes=[*spec.get("notes", []), *notes])


def _net_member(c: Candidate, X_valid: np.ndarray, encoder: TargetEncoder, weight: float,
                scores: dict[str, float]) -> NetMember:
    """The trial's saved weights, rebuilt and checked against its saved validation predictions."""
    assert c.artifacts is not None and c.trial is not None
    config = c.artifacts.config
    state = c.artifacts.weights()
    _check_reproduces(config["settings"], int(config["d_in"]), int(config["d_out"]), state, X_valid,
                      c.valid[: len(X_valid)], encoder, f"trial {c.trial}", c.artifacts.folder)
    return NetMember(trial=c.trial, settings=config["settings"], d_in=int(config["d_in"]),
                     d_out=int(config["d_out"]), state=state, weight=weight, scores=scores)


def _bagged_members(run: RunDir, c: Candidate, encoder: TargetEncoder, weight: float,
                    scores: dict[str, float]) -> list[NetMember]:
    """A bagged net's exported copies (its fold models, or its refit), sharing its weight equally."""
    assert c.bag is not None and c.trial is not None
    members = []
    for i, unit in enumerate(c.bag.units):
        state = unit.state()
        rows, saved = unit.check()
        X_check = dev_rows(run, c.scaling, rows)  # issue 13: the few checked rows, not the development matrix
        _check_reproduces(unit.settings, unit.d_in, unit.d_out, state, X_check, saved, encoder,
                          f"the {unit.label} copy of trial {c.trial}", unit.folder)
        part = "refit" if unit.label == "refit" else f"fold{i + 1}"
        members.append(NetMember(trial=c.trial, settings=unit.settings, d_in=unit.d_in, d_out=unit.d_out,
                                 state=state, weight=weight / len(c.bag.units), scores=scores, part=part))
    return members


def _check_reproduces(settings: dict[str, Any], d_in: int, d_out: int, state: dict[str, Any], X: np.ndarray,
                      saved: np.ndarray, encoder: TargetEncoder, what: str, folder: Path) -> None:
    """Refuse to export weights that do not give the predictions saved with them (a stale artifact)."""
    model = build_mlp(NetConfig(**settings["net"]), d_in=d_in, d_out=d_out)
    model.load_state_dict(state, strict=True)
    pred = np.asarray(predict(model, X, task=encoder.task_, device="cpu"), dtype=np.float64)
    atol = REPRODUCE_TOL
    target = settings.get("target")
    if encoder.task_ == "regression":  # compared on the original scale, where it was saved (clipped)
        pred = net_values(pred, encoder, TargetTransform.from_dict(target) if target else None)
        atol = REPRODUCE_TOL * encoder.std_
    if not np.allclose(pred, saved, rtol=REPRODUCE_TOL, atol=atol):
        raise AutoDNNError(f"the weights of {what} do not reproduce its saved predictions ({folder}); "
                           "run `automl-dnn search` again into a new folder")


__all__ = ["EnsembleReport", "MemberRow", "SummaryRow", "ensemble_run"]

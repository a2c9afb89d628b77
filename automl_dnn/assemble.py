"""Ensemble a finished search and export one model folder (``automl-dnn ensemble``).

The nets are never retrained: their validation and test predictions were saved by the search, so the
weights are fit on those arrays alone (rtdl's way). Only the XGBoost member is trained here (or, in
``fit``, by ``BackgroundGBT`` in a thread beside the search), on the very split the nets used (the row
indices saved in ``split.safetensors``), after checking that the source table is unchanged. Like
the nets, it is tuned and early-stopped on the validation split (unless that split is too small to tune
on: then on a holdout of the training rows); the exported copy is then refit on training + validation
rows, and the test scores reported are the exported copy's. The exported nets are the saved weights,
checked to reproduce their saved validation predictions before they are written.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl_dnn import metrics
from automl_dnn.errors import AutoDNNError, DataError
from automl_dnn.run import RunDir, load_arrays, read_json

MAX_CANDIDATES = 30  # the best nets considered; more only slow the greedy selection down
GBT_SHARE = 0.8  # of the time left when XGBoost starts; the rest is for weights and export
THRESHOLD_GRID = np.round(np.arange(0.02, 0.985, 0.01), 2)
MIN_THRESHOLD_GAIN = 0.005  # balanced accuracy a threshold must add over 0.5 on validation to be used
#: XGBoost is tuned on the validation split from this many rows; on fewer, its search would overfit them
#: (breast_cancer, 86 rows: validation log-loss 0.0045, test 0.244) and win all the ensemble weight.
VALID_TUNING_MIN_ROWS = 500
REPRODUCE_TOL = 1e-3  # a rebuilt net must match its saved validation predictions this closely


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


@dataclass
class SummaryRow:
    """The best single model, the equal-weight average or the weighted ensemble."""

    name: str
    valid: float
    test: float
    valid_loss: float  # logloss (classification) or rmse (regression): what the weights minimize
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
    seconds: dict[str, float] = field(default_factory=dict)  # gbt, weights, export

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
class _Candidate:
    name: str
    kind: str
    trial: int | None
    description: str
    valid: np.ndarray  # the validation predictions the weights are fitted on
    test: np.ndarray  # the test predictions of the exported model (XGBoost: its copy refit on train + valid)
    scaling: str = "standard"
    folder: Path | None = None  # a net's artifacts folder
    gbt: Any = None  # the GBTResult of the XGBoost candidate


# --- the step -----------------------------------------------------------------------------------


def ensemble_run(run_dir: Path, *, model_dir: Path, top_k: int = 5, gbt: bool | BackgroundGBT = True,
                 gbt_trials: int = 10, seed: int = 0, time_budget: float | None = None,
                 threads: int | None = None) -> EnsembleReport:
    """Weight the best nets of a search (plus XGBoost) on validation and export one model folder.

    ``gbt`` may be a ``BackgroundGBT`` started beside the search (``fit``): its model is used as it is.
    """
    from automl_dnn.data import TargetEncoder
    from automl_dnn.ensemble import build_ensemble
    from automl_dnn.export import check_model_dir

    if top_k < 1:
        raise AutoDNNError(f"top_k must be >= 1, got {top_k}")
    check_model_dir(Path(model_dir))  # before minutes of XGBoost, not after
    started = time.monotonic()
    deadline = None if time_budget is None else started + time_budget
    run = RunDir(Path(run_dir))
    spec = run.read_spec()
    task, metric = spec["task"], spec["metric"]
    encoder = TargetEncoder.from_dict(read_json(run.target_path))
    notes: list[str] = []
    candidates = _net_candidates(run, spec, seed, notes)
    y_valid, y_test = _targets(run, candidates[0].scaling, encoder)
    candidates = _matching_shapes(candidates, y_valid, y_test, notes)
    seconds: dict[str, float] = {}

    t0 = time.monotonic()
    if isinstance(gbt, BackgroundGBT):
        member = gbt.result()
        notes.extend(gbt.notes)
    elif gbt:
        budget = None if deadline is None else max(1.0, GBT_SHARE * (deadline - t0))
        member = _gbt_candidate(run, spec, encoder, gbt_trials, seed, budget, threads, notes)
    else:
        member = None
    if member is not None:
        candidates.append(member)
    seconds["gbt"] = time.monotonic() - t0

    t0 = time.monotonic()
    n_gbt = sum(c.kind == "xgboost" for c in candidates)
    valid_preds = [c.valid for c in candidates]
    names = [c.name for c in candidates]
    trees = [i for i, c in enumerate(candidates) if c.kind == "xgboost"]
    result = build_ensemble(task, y_valid, valid_preds, names=names, max_members=top_k + n_gbt, seed=seed,
                            always=trees)
    if sum(candidates[i].kind == "net" for i in result.members) > top_k:  # top_k nets at most
        result = build_ensemble(task, y_valid, valid_preds, names=names, max_members=top_k, seed=seed, always=trees)
    chosen = [candidates[i] for i in result.members]
    has_test = len(y_test) > 0
    threshold = None
    if task == "binary":
        threshold, note = choose_threshold(y_valid, _blend(chosen, result.weights, "valid")[:, 1])
        notes.append(note)
    report_rows = _member_rows(candidates, result, metric, y_valid, y_test)
    summary = _summary_rows(candidates, chosen, result.weights, task, metric, y_valid, y_test)
    warnings = _warnings(task, result, candidates, chosen, y_test)
    seconds["weights"] = time.monotonic() - t0

    t0 = time.monotonic()
    _export(run, spec, encoder, Path(model_dir), chosen, result.weights, threshold, report_rows, summary, notes)
    seconds["export"] = time.monotonic() - t0
    return EnsembleReport(task=task, metric=metric, direction=metrics.direction(metric),
                          loss=metrics.default_metric(task), members=report_rows, summary=summary,
                          warnings=warnings, notes=notes, model_dir=Path(model_dir), threshold=threshold,
                          has_test=has_test, seconds=seconds)


# --- candidates ---------------------------------------------------------------------------------


def _completed_trials(spec: dict[str, Any], seed: int) -> list[Any]:
    """COMPLETE trials with a finite value, best first (ties: the earlier trial)."""
    from optuna.trial import TrialState

    from automl_dnn.search import open_study

    study = open_study(spec, seed=seed, create=False)
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.value is not None and math.isfinite(t.value)]
    sign = -1.0 if spec["direction"] == "maximize" else 1.0
    return sorted(trials, key=lambda t: (sign * t.value, t.number))


def _net_candidates(run: RunDir, spec: dict[str, Any], seed: int, notes: list[str]) -> list[_Candidate]:
    """The best completed trials' saved predictions; trials whose artifacts are gone are skipped."""
    trials = _completed_trials(spec, seed)
    if not trials:
        raise AutoDNNError(f"no completed trial in {str(run.root)!r}; run `automl-dnn search` first "
                           "(or again with a larger --time-budget or --n-trials)")
    candidates: list[_Candidate] = []
    for trial in trials:
        if len(candidates) == MAX_CANDIDATES:
            break
        folder = _artifacts_folder(run, spec, trial)
        if folder is None:
            notes.append(f"skipped trial {trial.number}: its artifacts (weights, config, predictions) are missing")
            continue
        config = read_json(folder / "config.json")
        preds = load_arrays(folder / "predictions.safetensors")
        settings = config["settings"]
        candidates.append(_Candidate(
            name=f"net-{trial.number:05d}", kind="net", trial=trial.number, description=describe_net(settings),
            valid=np.asarray(preds["valid"], dtype=np.float64), test=np.asarray(preds["test"], dtype=np.float64),
            scaling=settings.get("scaling", "standard"), folder=folder,
        ))
    if not candidates:
        raise AutoDNNError(f"none of the {len(trials)} completed trials in {str(run.root)!r} has its artifacts; "
                           "restore the artifacts folder or run `automl-dnn search` again")
    if len(trials) > MAX_CANDIDATES:
        notes.append(f"considered the best {MAX_CANDIDATES} of {len(trials)} completed trials")
    return candidates


def _artifacts_folder(run: RunDir, spec: dict[str, Any], trial: Any) -> Path | None:
    """Where the trial's artifacts are: as recorded, else under the run's artifacts folder (moved runs)."""
    name = f"trial-{trial.number:05d}"
    places = [trial.user_attrs.get("artifacts"), Path(spec["artifacts"]) / name, run.root / "artifacts" / name]
    for place in places:
        if place and all((Path(place) / f).is_file() for f in ("weights.safetensors", "config.json",
                                                                 "predictions.safetensors")):
            return Path(place)
    return None


def _targets(run: RunDir, scaling: str, encoder: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validation and test targets as the metrics want them: class indices, or values on the original scale."""
    data = load_arrays(run.data_path(scaling))
    if encoder.task == "regression":
        return encoder.decode(data["y_valid"]), encoder.decode(data["y_test"])
    return data["y_valid"].astype(np.int64), data["y_test"].astype(np.int64)


def _matching_shapes(candidates: list[_Candidate], y_valid: np.ndarray, y_test: np.ndarray,
                     notes: list[str]) -> list[_Candidate]:
    """Drop candidates whose saved predictions do not cover the current split (a stale artifact)."""
    kept = []
    for c in candidates:
        if len(c.valid) == len(y_valid) and len(c.test) == len(y_test) and c.valid.shape[1:] == c.test.shape[1:]:
            kept.append(c)
        else:
            notes.append(f"skipped trial {c.trial}: its saved predictions do not match the run's split")
    if not kept:
        raise AutoDNNError("no trial's saved predictions match the run's split; run `automl-dnn search` again "
                           "into a new folder")
    return kept


def describe_net(settings: dict[str, Any]) -> str:
    """Key hyperparameters of a net in a few words: layers x width, activation, optimizer, schedule, scaling."""
    net, train = settings["net"], settings["train"]
    parts = [f"{net['n_layers']}x{net['d_hidden']} {net['activation']}"]
    if net.get("batchnorm", "none") != "none":
        parts[0] += f" bn-{net['batchnorm']}"
    if net.get("dropout", 0) > 0:
        parts[0] += f" drop {net['dropout']:.2f}"
    parts += [f"{train['optimizer']} {train['lr']:.2g}", train["schedule"], settings.get("scaling", "standard")]
    return ", ".join(parts)


def describe_gbt(result: Any) -> str:
    p = result.params
    return f"eta {p['eta']:.3g}, depth {p['max_depth']}, {result.best_iteration + 1} rounds"


# --- XGBoost ------------------------------------------------------------------------------------


class BackgroundGBT:
    """XGBoost searched in a thread while the nets search (``fit``), so that both get the search's time.

    XGBoost's C++ core and torch's kernels both release the GIL, so a thread is enough: no second process
    reads the data and imports the libraries again. Give each side its own cores (``threads`` here, the
    search's ``--threads`` there). ``start`` is the search's ``on_prepared`` hook; ``result`` waits for it.
    """

    def __init__(self, *, n_trials: int, seed: int = 0, threads: int | None = None) -> None:
        self.n_trials, self.seed, self.threads = n_trials, seed, threads
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._member: _Candidate | None = None
        self._error: BaseException | None = None

    def start(self, spec: dict[str, Any], deadline: float | None) -> None:
        """Start searching for the prepared run ``spec``, until ``deadline`` (a ``time.time()`` value)."""
        budget = None if deadline is None else max(1.0, deadline - time.time())
        self._thread = threading.Thread(target=self._run, args=(spec, budget), name="automl-dnn-xgboost",
                                        daemon=True)
        self._thread.start()

    def _run(self, spec: dict[str, Any], budget: float | None) -> None:
        from automl_dnn.data import TargetEncoder

        try:
            run = RunDir(Path(spec["run_dir"]))
            encoder = TargetEncoder.from_dict(read_json(run.target_path))
            self._member = _gbt_candidate(run, spec, encoder, self.n_trials, self.seed, budget, self.threads,
                                          self.notes, stop=self._stop)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def stop(self) -> None:
        """Stop boosting now (Ctrl-C, a failed search); result() then returns what is done, unrefitted."""
        self._stop.set()

    def result(self) -> _Candidate | None:
        """The XGBoost candidate once the thread is done; None if it never started or had no data."""
        if self._thread is None:
            return None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._member


def _gbt_candidate(run: RunDir, spec: dict[str, Any], encoder: Any, n_trials: int, seed: int,
                   time_budget: float | None, threads: int | None, notes: list[str],
                   stop: threading.Event | None = None) -> _Candidate | None:
    """Train XGBoost on the run's own split of the (unchanged) source table."""
    from automl_dnn.data import FeaturePreprocessor
    from automl_dnn.gbt import fit_gbt, fit_gbt_holdout, predict_gbt

    dataset = _reload_source(spec, notes)
    if dataset is None:
        return None
    split = {k: np.asarray(v, dtype=np.int64) for k, v in load_arrays(run.split_path).items()}
    key = _gbt_preprocess_key(run)
    pre = FeaturePreprocessor.from_dict(read_json(run.preprocess_path(key)))
    frames = {part: pre.transform_for_gbt(dataset.features.iloc[split[part]].reset_index(drop=True))
              for part in ("train", "valid", "test")}
    y_train, y_valid = dataset.y[split["train"]], dataset.y[split["valid"]]
    if encoder.task == "regression":
        y_train, y_valid = encoder.decode(y_train), encoder.decode(y_valid)
    # Tuned and early-stopped on the validation split, as the nets are: the ensemble weights, fitted on
    # that split, then see every member equally flattered. A split too small to tune on is kept unseen.
    # Either way the exported copy is refit on train + valid.
    common = dict(task=encoder.task, n_classes=len(encoder.classes), n_trials=n_trials, seed=seed,
                  time_budget=time_budget, threads=threads, stop=stop)
    if len(y_valid) >= VALID_TUNING_MIN_ROWS:
        result = fit_gbt(frames["train"], y_train, frames["valid"], y_valid, refit=True, **common)
    else:
        result = fit_gbt_holdout(frames["train"], y_train, more=(frames["valid"], y_valid), **common)
        notes.append(f"XGBoost tuned on a holdout of the training rows: {len(y_valid)} validation rows are "
                     f"too few to tune on (fewer than {VALID_TUNING_MIN_ROWS})")

    def pred(part: str, booster: Any) -> np.ndarray:
        if len(frames[part]) == 0:
            width = (len(encoder.classes),) if encoder.task != "regression" else ()
            return np.zeros((0, *width))
        return np.asarray(predict_gbt(booster, frames[part], task=encoder.task, categories=result.categories),
                          dtype=np.float64)

    refit = ("the exported copy refit on training + validation" if result.final_booster is not None
             else "not refit on training + validation (no time left, or stopped)")
    notes.append(f"XGBoost: {result.n_trials_run} trials in {result.seconds:.1f}s, {refit}")
    return _Candidate(name="xgboost", kind="xgboost", trial=None, description=describe_gbt(result),
                      valid=pred("valid", result.booster), scaling=key, gbt=result,
                      test=pred("test", result.booster if result.final_booster is None else result.final_booster))


def _reload_source(spec: dict[str, Any], notes: list[str]) -> Any:
    """The searched table again, refused if it changed; None (with a note) if it was an in-memory DataFrame."""
    from automl_dnn.data import load_dataset

    source = spec["source"]
    if source == "<DataFrame>":
        notes.append("XGBoost left out: the search ran on an in-memory DataFrame, which the run folder does not "
                     "keep; search a file to include it")
        return None
    try:
        dataset = load_dataset(source, target=spec["target"], task=spec["task"], valid_size=spec["valid_size"],
                               test_size=spec["test_size"], seed=spec["seed"])
    except DataError as exc:
        raise AutoDNNError(f"cannot reload the searched data for XGBoost ({exc}); restore {source!r} or "
                           "ensemble with --no-gbt") from None
    if dataset.fingerprint() != spec["data_fingerprint"]:
        raise AutoDNNError(f"the data in {source!r} changed since the search (its fingerprint differs); restore "
                           "the original file or ensemble with --no-gbt")
    return dataset


def _gbt_preprocess_key(run: RunDir) -> str:
    """Any saved preprocessing serves XGBoost (transform_for_gbt ignores the scaling); prefer 'standard'."""
    found = sorted(p.stem for p in (run.root / "preprocess").glob("*.json"))
    if not found:
        raise AutoDNNError(f"run folder {str(run.root)!r} has no preprocess/*.json; run `automl-dnn search` again")
    return "standard" if "standard" in found else found[0]


# --- scores -------------------------------------------------------------------------------------


def _blend(chosen: list[_Candidate], weights: list[float], part: str) -> np.ndarray:
    from automl_dnn.ensemble import blend

    return blend([getattr(c, part) for c in chosen], weights)


def _score(metric: str, y: np.ndarray, pred: np.ndarray) -> float:
    return metrics.score(metric, y, pred) if len(y) else math.nan


def _member_rows(candidates: list[_Candidate], result: Any, metric: str, y_valid: np.ndarray,
                 y_test: np.ndarray) -> list[MemberRow]:
    weight_of = dict(zip(result.members, result.weights))
    return [MemberRow(name=c.name, kind=c.kind, trial=c.trial, description=c.description,
                      valid=_score(metric, y_valid, c.valid), test=_score(metric, y_test, c.test),
                      weight=float(weight_of.get(i, 0.0)))
            for i, c in enumerate(candidates)]


def _summary_rows(candidates: list[_Candidate], chosen: list[_Candidate], weights: list[float], task: str,
                  metric: str, y_valid: np.ndarray, y_test: np.ndarray) -> list[SummaryRow]:
    """Best single model (by the selection metric on validation), equal-weight average, weighted ensemble."""
    loss = metrics.default_metric(task)
    best = min(candidates, key=lambda c: metrics.as_loss(metric, _score(metric, y_valid, c.valid)))
    equal = [1.0 / len(chosen)] * len(chosen)
    plural = "s" if len(chosen) > 1 else ""
    rows = [(f"best single model ({best.name})", best.valid, best.test),
            (f"equal-weight average ({len(chosen)} member{plural})", _blend(chosen, equal, "valid"),
             _blend(chosen, equal, "test")),
            ("weighted ensemble", _blend(chosen, weights, "valid"), _blend(chosen, weights, "test"))]
    return [SummaryRow(name=name, valid=_score(metric, y_valid, v), test=_score(metric, y_test, t),
                       valid_loss=_score(loss, y_valid, v), test_loss=_score(loss, y_test, t))
            for name, v, t in rows]


def _warnings(task: str, result: Any, candidates: list[_Candidate], chosen: list[_Candidate],
              y_test: np.ndarray) -> list[str]:
    from automl_dnn.ensemble import ensemble_loss, overfit_warning

    if not len(y_test):
        return []
    best = candidates[result.best_single]
    ensemble_test = _blend(chosen, result.weights, "test")
    test_gain = ensemble_loss(task, y_test, best.test) - ensemble_loss(task, y_test, ensemble_test)
    warning = overfit_warning(result.valid_gain, test_gain)
    return [warning] if warning else []


def choose_threshold(y: np.ndarray, p1: np.ndarray) -> tuple[float | None, str]:
    """The P(class 1) cut maximizing balanced accuracy on validation, or None (0.5) if it helps too little.

    Ties go to the cut closest to 0.5; a cut must beat 0.5 by ``MIN_THRESHOLD_GAIN`` so that noise on a
    small validation split does not move it.
    """
    def balanced(threshold: float) -> float:
        hit = (p1 >= threshold).astype(np.int64) == y
        return float(np.mean([hit[y == k].mean() for k in np.unique(y)]))

    base = balanced(0.5)
    scored = [(balanced(float(t)), -abs(float(t) - 0.5), float(t)) for t in THRESHOLD_GRID]
    best, _, cut = max(scored)
    if best < base + MIN_THRESHOLD_GAIN or len(np.unique(y)) < 2:
        return None, f"decision threshold 0.5 (balanced accuracy on validation {base:.4f}; no cut does clearly better)"
    return cut, f"decision threshold {cut:.2f}: balanced accuracy on validation {best:.4f} (vs {base:.4f} at 0.5)"


# --- export -------------------------------------------------------------------------------------


def _export(run: RunDir, spec: dict[str, Any], encoder: Any, model_dir: Path, chosen: list[_Candidate],
            weights: list[float], threshold: float | None, rows: list[MemberRow], summary: list[SummaryRow],
            notes: list[str]) -> None:
    from automl_dnn.export import GBTMember, save_model

    row_of = {row.name: row for row in rows}
    nets, gbt, scalings = [], None, set()
    for c, w in zip(chosen, weights):
        scores = {"valid": row_of[c.name].valid, "test": row_of[c.name].test}
        if c.kind == "net":
            nets.append(_net_member(run, c, encoder, w, scores))
            scalings.add(c.scaling)
        else:
            r = c.gbt
            booster = r.booster if r.final_booster is None else r.final_booster
            gbt = GBTMember(booster=booster, params=r.params, best_iteration=booster.num_boosted_rounds() - 1,
                            categories=r.categories, preprocess=c.scaling, weight=w, scores=scores)
            scalings.add(c.scaling)
    preprocessors = {s: read_json(run.preprocess_path(s)) for s in sorted(scalings)}
    save_model(model_dir, task=spec["task"], target=spec["target"], metric=spec["metric"],
               target_encoder=encoder.to_dict(), preprocessors=preprocessors, nets=nets, gbt=gbt,
               threshold=threshold, scores={"summary": [dataclasses.asdict(r) for r in summary]},
               notes=[*spec.get("notes", []), *notes])


def _net_member(run: RunDir, c: _Candidate, encoder: Any, weight: float, scores: dict[str, float]) -> Any:
    """The trial's saved weights, rebuilt and checked against its saved validation predictions."""
    from safetensors.torch import load_file

    from automl_dnn.export import NetMember
    from automl_dnn.model import NetConfig, build_mlp
    from automl_dnn.train import predict

    assert c.folder is not None and c.trial is not None
    config = read_json(c.folder / "config.json")
    state = load_file(str(c.folder / "weights.safetensors"))
    d_in, d_out = int(config["d_in"]), int(config["d_out"])
    model = build_mlp(NetConfig(**config["settings"]["net"]), d_in=d_in, d_out=d_out)
    model.load_state_dict(state, strict=True)
    X_valid = load_arrays(run.data_path(c.scaling))["X_valid"]
    pred = np.asarray(predict(model, X_valid, task=encoder.task, device="cpu"), dtype=np.float64)
    saved = c.valid
    if encoder.task == "regression":
        saved = (saved - encoder.mean) / encoder.std
    if not np.allclose(pred, saved, rtol=REPRODUCE_TOL, atol=REPRODUCE_TOL):
        raise AutoDNNError(f"the weights of trial {c.trial} do not reproduce its saved predictions ({c.folder}); "
                           "run `automl-dnn search` again into a new folder")
    return NetMember(trial=c.trial, settings=config["settings"], d_in=d_in, d_out=d_out, state=state,
                     weight=weight, scores=scores)


__all__ = ["BackgroundGBT", "EnsembleReport", "MemberRow", "SummaryRow", "choose_threshold", "describe_net", "ensemble_run"]

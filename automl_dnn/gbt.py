"""XGBoost on the same split as the nets, with its own short Optuna search.

A deep net plus gradient-boosted trees is the classic diverse pair for an ensemble (techniques.md
§10), so this member is tuned only lightly: the first trial is a strong default, then a few TPE
trials. It uses XGBoost's native categorical support and native missing values, so it reads the
DataFrame from ``FeaturePreprocessor.transform_for_gbt`` as it is (numbers as float, categoricals as
pandas ``category`` with the categories fixed at fit).

The returned booster is trimmed to its best iteration (``booster[: best_iteration + 1]``), so it needs
no ``iteration_range`` at predict time and a copy saved with ``booster.save_model("x.json")`` (JSON or
UBJ, never pickle) and reloaded predicts identically.

``fit_run_gbt`` trains the XGBoost member of a run on the run's own split and preprocessing; in
``fit``, ``BackgroundGBT`` runs it in a thread beside the search, on the data the search already read.
Its completed trials and best booster are kept in the run folder as they come (``gbt_state``), so a rerun
after a crash, or a later ``ensemble``, goes on from them instead of tuning again.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
import optuna.distributions as d
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import train_test_split

from automl_dnn import metrics
from automl_dnn.data import Dataset, FeaturePreprocessor, extreme_targets, load_dataset, release_table_memory
from automl_dnn.errors import AutoDNNError, DataError, first_line
from automl_dnn.files import file_digest, load_arrays, read_json
from automl_dnn.gbt_state import KeptTuning, Resumed, TuningLog, claimed, resume, space_key, unreadable
from automl_dnn.run_folder import RunDir
from automl_dnn.study import open_study

EARLY_STOPPING_ROUNDS = 50
MAX_BOOST_ROUNDS = 2000
MIN_FIRST_ROUNDS = 20  # the default trial boosts at least this long, whatever the deadline
REFIT_MARGIN = 1.25  # fit_gbt(refit=True) keeps this many times the refit's estimated seconds for it
#: XGBoost is tuned on the validation split from this many rows; on fewer, its search would overfit them
#: (breast_cancer, 86 rows: validation log-loss 0.0045, test 0.244) and win all the ensemble weight.
VALID_TUNING_MIN_ROWS = 500
# Issue 13: a training frame larger than this is written to the run folder once XGBoost's own matrix holds
# its rows, and read back only for the refit on train + valid (280 MB at 1M x 100 that would sit idle).
SPILL_BYTES = 64 * 2**20
# Rows predicted at a time: the aligned copy of a frame and XGBoost's matrix of it are made per chunk (at
# 150,000 rows x 100 columns ~250 MB at once; ~55 MB a chunk).
PREDICT_CHUNK_ROWS = 32_768

#: ``fit`` on a CPU: XGBoost stops tuning once its validation error is this share above the best net's so far
#: (``NetsAhead``), and the nets' search takes its cores (``workers.LateWorkers``). On letter (26 classes, 60 s) its first
#: trial took 27 s of its core for a log-loss of 0.131 against the nets' 0.108, and its second trial the rest,
#: while the nets' search ran 3 trials where it runs 7 with both cores (docs/benchmarks.md).
GIVE_WAY_MARGIN = 0.1
#: ... and a trial that has boosted longer than this share of XGBoost's time is asked between its rounds too
#: (its best round so far against the nets), every GIVE_WAY_EVERY seconds: letter's first trial is 27 s of 54.
GIVE_WAY_SLOW_SHARE, GIVE_WAY_EVERY = 0.25, 1.0

# The first trial: strong, well-known defaults (a smaller eta than XGBoost's 0.3, rows and columns
# subsampled). alpha's search range is log-scaled, so "no L1" is its lower bound, 1e-8.
DEFAULT_PARAMS: dict[str, Any] = {
    "eta": 0.05,
    "max_depth": 6,
    "min_child_weight": 1.0,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "alpha": 1e-8,
    "max_cat_to_onehot": 4,
}

_OBJECTIVE = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
_EVAL_METRIC = {"binary": "logloss", "multiclass": "mlogloss", "regression": "rmse"}


#: An MAE study's XGBoost objectives, its first two trials' (XGBoost's defaults with each): the absolute error fits
#: the median that MAE asks for and ignores a few extreme targets (0.3 % of california_housing's rows at 1e9:
#: squared error's predictions were millions off), but it learns slowly on a discrete target (wine_quality_white's
#: validation MAE 0.44 against squared error's 0.41 in a 40 s fit, where only the first trial ran). So squared
#: error goes first unless the training targets have extreme values (``extreme_targets``); the validation MAE
#: chooses between them.
MAE_OBJECTIVES = ("reg:squarederror", "reg:absoluteerror")


def search_space(mae: bool = False) -> dict[str, Any]:
    """The Optuna distributions searched after the default trial (data, so it can be shown and tested); an MAE
    study's also searches the objective (MAE_OBJECTIVES)."""
    objective = {"objective": d.CategoricalDistribution(MAE_OBJECTIVES)} if mae else {}
    return objective | {
        "eta": d.FloatDistribution(0.01, 0.3, log=True),
        "max_depth": d.IntDistribution(2, 10),
        "min_child_weight": d.FloatDistribution(0.1, 20.0, log=True),
        "subsample": d.FloatDistribution(0.5, 1.0),
        "colsample_bytree": d.FloatDistribution(0.5, 1.0),
        "lambda": d.FloatDistribution(1e-3, 100.0, log=True),
        "alpha": d.FloatDistribution(1e-8, 10.0, log=True),
        "max_cat_to_onehot": d.IntDistribution(1, 16),
    }


@dataclass
class GBTResult:
    """The best booster (trimmed to its best iteration) and how the search went."""

    booster: xgb.Booster
    params: dict[str, Any]  # the full xgboost.train params of the best trial
    best_iteration: int  # 0-based; the booster holds best_iteration + 1 rounds
    valid_loss: float  # validation logloss (classification), rmse (regression) or mae (an MAE study)
    n_trials_run: int
    seconds: float
    categories: dict[str, list[Any]] = field(default_factory=dict)  # training categories per column
    trials: list[dict[str, Any]] = field(default_factory=list)  # per trial: params, valid_loss, best_iteration, seconds
    final_booster: xgb.Booster | None = None  # fit_gbt(refit=True): the best trial refit on train + valid
    final_rows: int = 0
    n_trials_kept: int = 0  # trials read back from a kept tuning (``trials`` starts with them), not run again
    notes: list[str] = field(default_factory=list)  # about the kept tuning: ignored, or no longer written

    @property
    def exported_booster(self) -> xgb.Booster:
        """The copy refit on train + valid when there was one, else the tuned booster."""
        return self.booster if self.final_booster is None else self.final_booster

    def to_dict(self) -> dict[str, Any]:
        """Everything but the booster, JSON-able (the booster is saved separately with save_model)."""
        return {
            "params": self.params,
            "best_iteration": self.best_iteration,
            "valid_loss": self.valid_loss,
            "n_trials_run": self.n_trials_run,
            "seconds": self.seconds,
            "categories": self.categories,
            "trials": self.trials,
            "final_rows": self.final_rows,
            "n_trials_kept": self.n_trials_kept,
        }


# --- data ---------------------------------------------------------------------------------------


def _check_frame(X: Any, name: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame (FeaturePreprocessor.transform_for_gbt), got {type(X)}")
    bad = [
        c
        for c in X.columns
        if not (isinstance(X[c].dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(X[c]))
    ]
    if bad:
        raise ValueError(f"{name} columns must be numeric or 'category', got {[(c, str(X[c].dtype)) for c in bad]}")
    return X


def frame_categories(X: pd.DataFrame) -> dict[str, list[Any]]:
    """The categories of each ``category`` column: XGBoost codes categories by position, so they must match."""
    return {str(c): X[c].cat.categories.tolist() for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)}


#: XGBoost refuses feature names holding these (its own syntax for splits); a column may well be named 'x[0]'.
XGB_NAME_CHARS = {"[": "(", "]": ")", "<": "lt"}


def xgb_names(columns: Any) -> list[str]:
    """XGBoost's names for ``columns``: each as text, with '[', ']' and '<' replaced, made unique. Names without
    them are kept as they are, so a booster saved before keeps matching its frames."""
    names: list[str] = []
    taken = {str(c) for c in columns}
    for column in map(str, columns):
        name = column
        for char, instead in XGB_NAME_CHARS.items():
            name = name.replace(char, instead)
        if name != column:
            base, k = name, 1
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            taken.add(name)
        names.append(name)
    return names


def _xgb_matrix(X: pd.DataFrame, matrix: Callable[..., Any] = xgb.DMatrix, **kwargs: Any) -> Any:
    """An XGBoost matrix of ``X`` under ``xgb_names`` (``X`` itself is left unchanged)."""
    names = xgb_names(X.columns)
    if names != list(X.columns):
        X = X.set_axis(names, axis=1)  # a view: copy-on-write copies no column
    return matrix(X, enable_categorical=True, **kwargs)


def align_categories(X: pd.DataFrame, categories: Mapping[str, list[Any]]) -> pd.DataFrame:
    """Recast categorical columns to the training categories (unseen values become missing)."""
    X = X.copy()
    for col, cats in categories.items():
        values = X[col].astype(object)
        X[col] = pd.Categorical(values.where(values.isin(cats)), categories=cats)
    return X


def _labels(y: Any, task: str, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if task == "regression":
        return y.astype(np.float64)
    if (task == "binary") != (n_classes == 2) or n_classes < 2:
        raise ValueError(f"a {task} task cannot have {n_classes=}")
    if y.size and (y.min() < 0 or y.max() >= n_classes or not np.all(y == np.round(y))):
        raise ValueError(f"classification labels must be class indices 0..{n_classes - 1}, got {np.unique(y)[:10]}")
    return y.astype(np.int64)


# --- training -----------------------------------------------------------------------------------


def _base_params(task: str, n_classes: int, seed: int, threads: int | None, mae: bool = False) -> dict[str, Any]:
    """``mae``: an MAE study's XGBoost stops early on the validation MAE; its trials choose the objective
    (MAE_OBJECTIVES)."""
    params: dict[str, Any] = {
        "objective": _OBJECTIVE[task],
        "eval_metric": "mae" if mae else _EVAL_METRIC[task],
        "tree_method": "hist",
        "seed": seed,
        "verbosity": 0,
    }
    if task == "multiclass":
        params["num_class"] = n_classes
    if threads is not None:
        params["nthread"] = threads
    return params


class _Deadline(xgb.callback.TrainingCallback):
    """Stops boosting once the time budget is spent or ``stop`` is set (early stopping keeps the best round),
    or, from ``slow_after`` (``time.monotonic()``) on, once ``give_way.during`` says so of the best round.
    ``cut`` says it stopped the trial: a trial cut short is not kept for a rerun (``gbt_state``)."""

    def __init__(self, deadline: float | None, min_rounds: int = 0, stop: threading.Event | None = None,
                 give_way: NetsAhead | None = None, slow_after: float | None = None) -> None:
        super().__init__()
        self.deadline, self.min_rounds, self.stop = deadline, min_rounds, stop
        self.give_way, self.next_check = give_way, slow_after
        self.gave_way = self.cut = False

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: Any) -> bool:
        self.cut = self._stops(epoch, evals_log)
        return self.cut

    def _stops(self, epoch: int, evals_log: Any) -> bool:
        if self.stop is not None and self.stop.is_set():
            return True
        now = time.monotonic()
        if self.give_way is not None and self.next_check is not None and now >= self.next_check:
            self.next_check = now + GIVE_WAY_EVERY
            losses = next(iter(evals_log.get("valid", {}).values()), [])
            if losses and self.give_way.during(float(min(losses))):
                self.gave_way = True
                return True
        return self.deadline is not None and epoch + 1 >= self.min_rounds and now >= self.deadline


def _train_one(
    params: dict[str, Any], dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, deadline: float | None, min_rounds: int = 0,
    stop: threading.Event | None = None, give_way: NetsAhead | None = None, slow_after: float | None = None,
) -> tuple[xgb.Booster, int, bool, bool]:
    """Train with early stopping on the validation split; return the trimmed booster, its best iteration,
    whether it stopped to give way to the nets, and whether it was cut short (the deadline, ``stop``, the nets)."""
    watching = deadline is not None or stop is not None or give_way is not None
    watch = _Deadline(deadline, min_rounds, stop, give_way, slow_after)
    callbacks = [watch] if watching else None
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=MAX_BOOST_ROUNDS,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        verbose_eval=False,
        callbacks=callbacks,
    )
    try:
        best = int(booster.best_iteration)
    except AttributeError:  # stopped by _Deadline before early stopping recorded a best round
        best = booster.num_boosted_rounds() - 1
    return booster[: best + 1], best, watch.gave_way, watch.cut


def predict_gbt(
    booster: xgb.Booster, X: pd.DataFrame, *, task: str, categories: Mapping[str, list[Any]] | None = None
) -> np.ndarray:
    """Predict in the project's convention: binary -> (n, 2), multiclass -> (n, K), regression -> (n,).

    Uses every round the booster holds (``fit_gbt`` trims it to the best iteration), so a reloaded copy
    of a saved booster predicts identically. Pass the training ``categories`` to guard against a frame
    whose category order differs: XGBoost matches categories by code, not by value.
    """
    X = _check_frame(X, "X")
    chunks = []
    for lo in range(0, max(len(X), 1), PREDICT_CHUNK_ROWS):  # issue 13: one chunk's copy and matrix at a time
        part = X.iloc[lo:lo + PREDICT_CHUNK_ROWS]
        if categories:
            part = align_categories(part, categories)
        chunks.append(booster.predict(_xgb_matrix(part)))
    pred = np.concatenate(chunks)
    if task == "binary":
        p1 = pred.astype(np.float64).reshape(-1)
        return np.column_stack([1.0 - p1, p1])
    if task == "multiclass":
        if pred.ndim != 2:
            raise ValueError(f"a multiclass booster must predict (n, K), got shape {pred.shape}")
        pred = pred.astype(np.float64)  # normalized in float32, rows summed to 1 only within ~1e-7
        return pred / pred.sum(axis=1, keepdims=True)
    if task == "regression":
        return pred.reshape(-1)
    raise ValueError(f"unknown task {task!r}")


def _first_objectives(mae: bool, y_train: np.ndarray) -> tuple[str | None, ...]:
    """The objectives of the first trials (None: the task's own, one trial): an MAE study's MAE_OBJECTIVES, the
    absolute error first when a few training targets lie extremely far out."""
    if not mae:
        return (None,)
    return MAE_OBJECTIVES[::-1] if extreme_targets(y_train).any() else MAE_OBJECTIVES


def _valid_loss(task: str, y_valid: np.ndarray, pred: np.ndarray, metric: str | None = None) -> float:
    return metrics.score(metrics.proper_loss(task, metric), y_valid, pred)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """At most warnings from XGBoost's own study. In ``fit`` this runs in a thread beside the search, which
    may have quietened Optuna further meanwhile: the verbosity is put back only if nobody changed it."""
    before = optuna.logging.get_verbosity()
    quiet = max(before, optuna.logging.WARNING)
    optuna.logging.set_verbosity(quiet)
    try:
        yield
    finally:
        if optuna.logging.get_verbosity() == quiet:
            optuna.logging.set_verbosity(before)


def fit_gbt(
    X_train: pd.DataFrame,
    y_train: Any,
    X_valid: pd.DataFrame,
    y_valid: Any,
    *,
    task: str,
    n_classes: int,
    n_trials: int = 10,
    seed: int = 0,
    time_budget: float | None = None,
    threads: int | None = None,
    stop: threading.Event | None = None,
    refit: bool = False,
    reserve: float = 0.0,
    spill: Path | None = None,
    give_way: NetsAhead | None = None,
    metric: str | None = None,
    kept: KeptTuning | None = None,
) -> GBTResult:
    """Tune XGBoost briefly on the validation split and return the best trimmed booster.

    Trial 0 is ``DEFAULT_PARAMS`` and always runs, so a result exists whatever the budget (an MAE study's trials
    0 and 1 are ``DEFAULT_PARAMS`` with each of MAE_OBJECTIVES: ``_first_objectives``); later trials
    are sampled by a seeded TPE over ``search_space()``. The search stops after ``max(n_trials, 1)``
    trials or once ``time_budget`` seconds have passed (checked before each trial; a running trial,
    the first one too after ``MIN_FIRST_ROUNDS``, stops boosting at the deadline and keeps its best round).
    Setting ``stop`` (from another thread) ends it the same way at once.

    With ``refit``, the best trial is then refit on training + validation rows, its rounds scaled up by
    the larger set: ``final_booster``, the model to export once the ensemble weights are fitted with
    ``booster``'s validation predictions. The trials keep time for it (``REFIT_MARGIN`` times the
    estimate from the best trial's own seconds) unless it no longer fits at all; then the trials use the
    whole budget and ``booster`` is all there is. ``reserve`` keeps time for a later fit of the caller's
    in the same way, as a multiple of the best trial's seconds. With ``spill`` (a file path; the caller
    must hold no other reference to ``X_train``), the training frame is written there once the matrix is
    made and read back for the refit only; the file is removed at the end. ``give_way(valid_predictions)``,
    asked after each trial with the best trial's predictions, ends the tuning and skips the refit when True;
    a trial longer than GIVE_WAY_SLOW_SHARE of ``time_budget`` asks ``give_way.during`` between its rounds.
    ``metric`` (the study's) picks the objective and the validation loss (``metrics.proper_loss``).

    With ``kept`` (``gbt_state``), each trial that runs to its end is kept there, and the best booster so far;
    a tuning kept there before for the same key is resumed: its trials go to TPE and count toward ``n_trials``,
    the default trials are not run again, and its best booster is the best so far (``n_trials_kept``); ``give_way``
    is asked of it before any new trial. While another process tunes in ``kept``'s folder, nothing is kept (a note).
    """
    if task not in _OBJECTIVE:
        raise ValueError(f"task must be one of {sorted(_OBJECTIVE)}, got {task!r}")
    if n_trials < 0:
        raise ValueError(f"n_trials must be >= 0, got {n_trials=}")
    if time_budget is not None and time_budget < 0:
        raise ValueError(f"time_budget must be >= 0 seconds, got {time_budget=}")
    X_train, X_valid = _check_frame(X_train, "X_train"), _check_frame(X_valid, "X_valid")
    y_tr, y_va = _labels(y_train, task, n_classes), _labels(y_valid, task, n_classes)
    if len(X_train) != len(y_tr) or len(X_valid) != len(y_va) or len(y_tr) == 0 or len(y_va) == 0:
        raise ValueError(
            f"need non-empty aligned splits, got X_train {len(X_train)}/{len(y_tr)} rows/labels, "
            f"X_valid {len(X_valid)}/{len(y_va)}"
        )

    start = time.monotonic()
    deadline = None if time_budget is None else start + time_budget
    categories = frame_categories(X_train)
    X_valid = align_categories(X_valid, categories)
    dtrain = _xgb_matrix(X_train, xgb.QuantileDMatrix, label=y_tr, nthread=threads)
    dvalid = _xgb_matrix(X_valid, xgb.QuantileDMatrix, label=y_va, nthread=threads, ref=dtrain)
    mae = metrics.proper_loss(task, metric) == "mae"
    base = _base_params(task, n_classes, seed, threads, mae)
    space = search_space(mae)

    grow = (len(X_train) + len(X_valid)) / len(X_train)
    refit_factor = (grow if refit else 0.0) + reserve
    n_train = len(X_train)
    if spill is None:
        train_frame: Callable[[], pd.DataFrame] = lambda: X_train  # noqa: E731
    else:
        train_frame = _spill_frame(X_train, spill)
        del X_train  # XGBoost's matrix holds the rows now; the frame comes back for the refit only
    if kept is not None:
        kept = kept.keyed(_tuning_key(task, n_classes, seed, base, space, len(y_tr), len(y_va)))
    notes: list[str] = []
    lock = contextlib.ExitStack()
    try:
        kept = lock.enter_context(claimed(kept, notes))
        best: tuple[float, xgb.Booster, dict[str, Any], int, float] | None = None
        best_pred = np.empty(0)
        trials: list[dict[str, Any]] = []
        found = None if kept is None else _resume(kept, space, X_valid, y_va, task, threads, notes, metric)
        resumed: Resumed | None = None
        if found is not None:
            resumed, best_pred = found
            trials, best = list(resumed.trials), _kept_best(resumed, base)
        log = None if kept is None else TuningLog(kept, resumed, notes)
        n_kept = len(trials)
        if resumed is not None and give_way is not None and give_way(best_pred):
            refit, n_trials = False, n_kept  # the nets are ahead of the kept best already: no trial, no refit
        with _quiet_optuna():
            study = _tuning_study(seed, resumed, _first_objectives(mae, y_tr))
            for number in range(n_kept, max(n_trials, 1)):
                trial_deadline = _trial_deadline(deadline, None if best is None else refit_factor * best[4])
                if number > 0 and (_stopped(stop) or (trial_deadline is not None and time.monotonic() >= trial_deadline)):
                    break
                trial = study.ask(space)
                params = {**base, **trial.params}
                t0 = time.monotonic()
                slow_after = None if time_budget is None else t0 + GIVE_WAY_SLOW_SHARE * time_budget
                booster, best_it, gave_way, cut = _train_one(
                    params, dtrain, dvalid, deadline if number == 0 else trial_deadline,
                    min_rounds=MIN_FIRST_ROUNDS if number == 0 else 0, stop=stop, give_way=give_way,
                    slow_after=slow_after)
                seconds = time.monotonic() - t0
                pred = predict_gbt(booster, X_valid, task=task)
                loss = _valid_loss(task, y_va, pred, metric)
                study.tell(trial, loss if math.isfinite(loss) else math.inf)
                trials.append({"params": dict(trial.params), "valid_loss": loss, "best_iteration": best_it,
                               "seconds": seconds})
                if log is not None and not cut:
                    log.add(trials[-1], booster)
                if best is None or loss < best[0]:
                    best, best_pred = (loss, booster, params, best_it, seconds), pred
                if gave_way or (give_way is not None and give_way(best_pred)):
                    refit = False  # its cores go to the nets now; a member that trails them is not worth a refit
                    break

        assert best is not None  # trial 0 always runs
        loss, booster, params, best_it, best_seconds = best
        result = GBTResult(booster=booster, params=params, best_iteration=best_it, valid_loss=loss,
                           n_trials_run=len(trials) - n_kept, seconds=0.0, categories=categories, trials=trials,
                           n_trials_kept=n_kept, notes=notes)
        if refit and not _stopped(stop) and (deadline is None or time.monotonic() + grow * best_seconds <= deadline):
            result.final_booster = refit_booster(params, [train_frame(), X_valid], [y_tr, y_va], (best_it + 1) * grow,
                                                 threads)
            result.final_rows = n_train + len(X_valid)
    finally:
        lock.close()
        if spill is not None:
            spill.unlink(missing_ok=True)
    result.seconds = time.monotonic() - start
    return result


def _tuning_key(task: str, n_classes: int, seed: int, base: dict[str, Any], space: dict[str, Any],
                n_train: int, n_valid: int) -> tuple[Any, ...]:
    """What a kept tuning must share with this one to be resumed, beside its data (``KeptTuning.key``): the
    threads are left out, since they change no trial's result."""
    params = {k: v for k, v in base.items() if k != "nthread"}
    return ("fit_gbt", task, n_classes, seed, params, space_key(space), DEFAULT_PARAMS, EARLY_STOPPING_ROUNDS,
            MAX_BOOST_ROUNDS, n_train, n_valid)


def _resume(kept: KeptTuning, space: dict[str, Any], X_valid: pd.DataFrame, y_valid: np.ndarray, task: str,
            threads: int | None, notes: list[str], metric: str | None = None) -> tuple[Resumed, np.ndarray] | None:
    """The kept tuning and its best booster's validation predictions, recomputed: they must give the loss recorded
    for it, or the booster is not the one its trial trained (then the tuning is ignored with a note)."""
    found = resume(kept, space, notes)
    if found is None:
        return None
    try:
        if threads is not None:
            found.booster.set_param({"nthread": threads})
        pred = predict_gbt(found.booster, X_valid, task=task)
        loss = _valid_loss(task, y_valid, pred, metric)
    except (ValueError, xgb.core.XGBoostError) as exc:  # a booster of other columns or classes: no crash
        notes.append(unreadable(kept, f"its best booster cannot predict the validation rows: {first_line(exc)}"))
        return None
    recorded = found.best_trial["valid_loss"]
    if not math.isclose(loss, recorded, rel_tol=1e-6, abs_tol=1e-12):
        notes.append(unreadable(kept, f"its best booster scores {loss:.6g}, not the {recorded:.6g} recorded"))
        return None
    return found, pred


def _kept_best(resumed: Resumed, base: dict[str, Any]) -> tuple[float, xgb.Booster, dict[str, Any], int, float]:
    """The kept best trial as ``fit_gbt`` holds its best so far: loss, booster, params, best iteration, seconds."""
    record = resumed.best_trial
    return (record["valid_loss"], resumed.booster, {**base, **record["params"]}, record["best_iteration"],
            record["seconds"])


def _tuning_study(seed: int, resumed: Resumed | None, objectives: tuple[str | None, ...] = (None,)) -> optuna.Study:
    """XGBoost's TPE study: the kept trials told first; the default trials (one per first objective:
    ``_first_objectives``) first unless one of them ran it."""
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    kept = [] if resumed is None else resumed.trials
    if resumed is not None:
        study.add_trials(resumed.frozen)
    for objective in objectives:
        params = DEFAULT_PARAMS | ({"objective": objective} if objective else {})
        if not any(t["params"] == params for t in kept):
            study.enqueue_trial(params)
    return study


def _spill_frame(frame: pd.DataFrame, path: Path) -> Callable[[], pd.DataFrame]:
    """Write ``frame`` to ``path`` (Arrow keeps float32 and the categories as they are); return its reader."""
    plain = isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
    (frame if plain else frame.reset_index(drop=True)).to_feather(path)
    return lambda: pd.read_feather(path)


def refit_booster(params: dict[str, Any], frames: list[pd.DataFrame], labels: list[np.ndarray], rounds: float,
           threads: int | None) -> xgb.Booster:
    """Boost ``rounds`` (rounded) on the frames stacked: a tuned trial again, on more rows, no early stopping."""
    data = _xgb_matrix(pd.concat(frames, ignore_index=True), label=np.concatenate(labels), nthread=threads)
    return xgb.train(params, data, num_boost_round=max(1, round(rounds)), verbose_eval=False)


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _trial_deadline(deadline: float | None, refit_seconds: float | None) -> float | None:
    """When the next trial must end so that a refit of ``refit_seconds`` still fits before ``deadline``."""
    if deadline is None or not refit_seconds:
        return deadline
    if time.monotonic() + refit_seconds > deadline:  # no refit any more: search to the end
        return deadline
    return deadline - REFIT_MARGIN * refit_seconds


def fit_gbt_holdout(
    X: pd.DataFrame,
    y: Any,
    *,
    task: str,
    n_classes: int,
    more: tuple[pd.DataFrame, Any] | None = None,
    holdout: float = 0.15,
    n_trials: int = 10,
    seed: int = 0,
    time_budget: float | None = None,
    threads: int | None = None,
    stop: threading.Event | None = None,
    reserve: float = 0.0,
    metric: str | None = None,
    kept: KeptTuning | None = None,
) -> GBTResult:
    """Tune and early-stop XGBoost on a holdout of the rows ``X``, then refit on all of them.

    For a validation split too small to tune on: ``booster`` never sees the rows of ``more`` (the run's
    validation split), so its predictions of them are honest. With ``more``, a last refit on ``X`` plus
    those rows is ``final_booster``, the model to export. Both refits scale the rounds by the row ratio
    and happen only if they fit in the time left; the search keeps time for them. ``kept`` is ``fit_gbt``'s,
    for the tuning on the holdout (the refits run again on a rerun).
    """
    y_all = _labels(y, task, n_classes)
    index = np.arange(len(X))
    stratify = y_all if task != "regression" and len(y_all) and np.bincount(y_all).min() >= 2 else None
    try:
        fit_idx, stop_idx = train_test_split(index, test_size=holdout, random_state=seed, stratify=stratify)
    except ValueError:  # a class too small to stratify
        fit_idx, stop_idx = train_test_split(index, test_size=holdout, random_state=seed)
    fit_idx, stop_idx = np.sort(fit_idx), np.sort(stop_idx)
    start = time.monotonic()
    grow = 1.0 / (1.0 - holdout)
    more_grow = 0.0 if more is None else grow * (len(X) + len(more[0])) / len(X)
    result = fit_gbt(X.iloc[fit_idx].reset_index(drop=True), y_all[fit_idx],
                     X.iloc[stop_idx].reset_index(drop=True), y_all[stop_idx],
                     task=task, n_classes=n_classes, n_trials=n_trials, seed=seed, time_budget=time_budget,
                     threads=threads, stop=stop, refit=True, reserve=more_grow + reserve, metric=metric,
                     kept=None if kept is None else kept.keyed("holdout", holdout))
    refit_all = result.final_booster is not None
    if refit_all:  # refit on all of X: the booster that predicts ``more``
        result.booster, result.final_booster, result.final_rows = result.final_booster, None, 0
        result.best_iteration = result.booster.num_boosted_rounds() - 1
    best_seconds = min((t["seconds"] for t in result.trials if t["valid_loss"] == result.valid_loss), default=0.0)
    deadline = None if time_budget is None else start + time_budget
    if more is not None and refit_all and not _stopped(stop) and (
            deadline is None or time.monotonic() + more_grow * best_seconds <= deadline):
        X_more, y_more = align_categories(more[0], result.categories), _labels(more[1], task, n_classes)
        rounds = (result.best_iteration + 1) * (len(X) + len(X_more)) / len(X)
        result.final_booster = refit_booster(result.params, [X, X_more], [y_all, y_more], rounds, threads)
        result.final_rows = len(X) + len(X_more)
    result.seconds = time.monotonic() - start
    return result


# --- the XGBoost member of a run ----------------------------------------------------------------


@dataclass
class GBTMemberFit:
    """XGBoost fitted on a run's split: the search's result and its predictions of valid and test rows."""

    result: GBTResult
    valid: np.ndarray  # by ``result.booster``, which never trained on these rows
    test: np.ndarray  # by the exported copy (refit on train + valid when there was time)
    preprocess: str  # the run's preprocessing whose transform_for_gbt made the frames
    # The frames and labels (class indices, or values on the original scale) of each part, in memory
    # only: k-fold bagging trains the tuned booster again on folds of train + valid.
    frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    labels: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    bag: Any = None  # bagging.BaggedMember: its out-of-fold predictions, when bagged in the thread
    task: str = ""

    def describe(self) -> str:
        p = self.result.params
        return f"eta {p['eta']:.3g}, depth {p['max_depth']}, {self.result.best_iteration + 1} rounds"


@dataclass
class GBTInputs:
    """What XGBoost trains on, made from a run's table: once made, the table itself is not needed any more."""

    frames: dict[str, pd.DataFrame]  # train, valid, test: transform_for_gbt of the run's split
    y_train: np.ndarray  # class indices, or values on the original scale
    y_valid: np.ndarray
    encoder: Any  # the run's TargetEncoder
    preprocess: str  # the run's preprocessing that made the frames
    kept: KeptTuning | None = None  # where the tuning is kept in the run folder, keyed by the run's split and data


def gbt_inputs(run: RunDir, dataset: Dataset) -> GBTInputs:
    """XGBoost's frames of each part of the run's split, each read from the table by its rows (issue 13: no
    copy of a part's raw frame; the numbers of a part in one float32 block)."""
    key = gbt_preprocess_key(run)
    kept = KeptTuning(run.gbt_tuning, _run_key(run, key))
    pre = FeaturePreprocessor.from_dict(read_json(run.preprocess_path(key)))
    split = {k: np.asarray(v, dtype=np.int64) for k, v in load_arrays(run.split_path).items()}
    frames = {part: pre.transform_for_gbt(dataset.features, rows=split[part]) for part in ("train", "valid", "test")}
    encoder = dataset.target_encoder
    y_train, y_valid = dataset.y[split["train"]], dataset.y[split["valid"]]
    if encoder.task_ == "regression":
        y_train, y_valid = encoder.decode(y_train), encoder.decode(y_valid)
    return GBTInputs(frames=frames, y_train=y_train, y_valid=y_valid, encoder=encoder, preprocess=key, kept=kept)


def _run_key(run: RunDir, preprocess: str) -> str:
    """The run's data, split, target and preprocessing, as a kept tuning must share them (``gbt_state``)."""
    files = file_digest(run.split_path, run.target_path, run.preprocess_path(preprocess))
    return files + run.read_spec()["fingerprint"]


def fit_run_gbt(run: RunDir, dataset: Dataset, *, n_trials: int, seed: int, time_budget: float | None,
                threads: int | None, notes: list[str], stop: threading.Event | None = None,
                reserve: float = 0.0, metric: str | None = None) -> GBTMemberFit:
    """Train XGBoost on the run's own split of ``dataset``, with the run's preprocessing.

    Tuned and early-stopped on the validation split, as the nets are: the ensemble weights, fitted on
    that split, then see every member equally flattered. A split too small to tune on is kept unseen.
    Either way the exported copy is refit on train + valid. ``reserve`` keeps time for that many more
    fits of the best trial (k-fold bagging's) before the budget ends. The tuning is kept in the run folder
    (``RunDir.gbt_tuning``) and resumed from there, by ``fit`` and ``ensemble`` alike: only the refit and the
    k-fold copies run again.
    """
    return fit_gbt_inputs(gbt_inputs(run, dataset), n_trials=n_trials, seed=seed, time_budget=time_budget,
                          threads=threads, notes=notes, stop=stop, reserve=reserve, metric=metric)


def fit_gbt_inputs(inputs: GBTInputs, *, n_trials: int, seed: int, time_budget: float | None, threads: int | None,
                   notes: list[str], stop: threading.Event | None = None, reserve: float = 0.0,
                   spill: Path | None = None, give_way: NetsAhead | None = None,
                   metric: str | None = None) -> GBTMemberFit:
    """``fit_run_gbt`` on inputs made already (``gbt_inputs``). With ``spill`` (a file path) a training frame
    over SPILL_BYTES leaves ``inputs`` for that file while XGBoost boosts (``fit_gbt``): no k-fold bagging
    may need it afterwards. ``give_way`` (``fit_gbt``'s) is asked only when XGBoost tunes on the validation
    split, the rows the nets are scored on."""
    frames, encoder, key = inputs.frames, inputs.encoder, inputs.preprocess
    y_train, y_valid = inputs.y_train, inputs.y_valid
    common = dict(task=encoder.task_, n_classes=len(encoder.classes_), n_trials=n_trials, seed=seed,
                  time_budget=time_budget, threads=threads, stop=stop, reserve=reserve, metric=metric,
                  kept=inputs.kept)
    if len(y_valid) >= VALID_TUNING_MIN_ROWS:
        if spill is not None and frames["train"].memory_usage(deep=False).sum() > SPILL_BYTES:
            # the only reference goes to fit_gbt, which drops it once its matrix is made
            result = fit_gbt(frames.pop("train"), y_train, frames["valid"], y_valid, refit=True, spill=spill,
                             give_way=give_way, **common)
        else:
            result = fit_gbt(frames["train"], y_train, frames["valid"], y_valid, refit=True, give_way=give_way, **common)
    else:
        result = fit_gbt_holdout(frames["train"], y_train, more=(frames["valid"], y_valid), **common)
        notes.append(f"XGBoost tuned on a holdout of the training rows: {len(y_valid)} validation rows are "
                     f"too few to tune on (fewer than {VALID_TUNING_MIN_ROWS})")

    def pred(part: str, booster: xgb.Booster) -> np.ndarray:
        if len(frames[part]) == 0:
            width = (len(encoder.classes_),) if encoder.task_ != "regression" else ()
            return np.zeros((0, *width))
        return np.asarray(predict_gbt(booster, frames[part], task=encoder.task_, categories=result.categories),
                          dtype=np.float64)

    refit = ("the exported copy refit on training + validation" if result.final_booster is not None
             else "not refit on training + validation (no time left, or stopped)")
    notes.extend(result.notes)
    kept = f" after {result.n_trials_kept} kept from an earlier run" if result.n_trials_kept else ""
    notes.append(f"XGBoost: {result.n_trials_run} trials in {result.seconds:.1f}s{kept}, {refit}")
    return GBTMemberFit(result=result, valid=pred("valid", result.booster), test=pred("test", result.exported_booster),
                        preprocess=key, frames=frames, task=encoder.task_,
                        labels={"train": _labels(y_train, encoder.task_, len(encoder.classes_)),
                                "valid": _labels(y_valid, encoder.task_, len(encoder.classes_))})


def gbt_preprocess_key(run: RunDir) -> str:
    """Any saved preprocessing serves XGBoost (transform_for_gbt ignores the scaling); prefer 'standard'."""
    found = run.preprocess_keys()
    if not found:
        raise AutoDNNError(f"run folder {str(run.root)!r} has no preprocess/*.json; run `automl-dnn search` again")
    return "standard" if "standard" in found else found[0]


def reload_source(spec: dict[str, Any], notes: list[str]) -> Dataset | None:
    """The searched table again, refused if it changed; None (with a note) if it was an in-memory DataFrame."""
    source = spec["source"]
    if source == "<DataFrame>":
        notes.append("XGBoost left out: the search ran on an in-memory DataFrame, which the run folder does not "
                     "keep; search a file to include it")
        return None
    try:
        dataset = load_dataset(source, target=spec["target"], task=spec["task"], valid_size=spec["valid_size"],
                               test_size=spec["test_size"], seed=spec["seed"], groups=spec.get("groups"),
                               time_column=spec.get("time_column"), categorical=spec.get("categorical", ()))
    except DataError as exc:
        raise AutoDNNError(f"cannot reload the searched data for XGBoost ({exc}); restore {source!r} or "
                           "ensemble with --no-gbt") from None
    if dataset.fingerprint() != spec["data_fingerprint"]:
        raise AutoDNNError(f"the data in {source!r} changed since the search (its fingerprint differs); restore "
                           "the original file or ensemble with --no-gbt")
    return dataset


class NetsAhead:
    """``fit_gbt``'s ``give_way``: whether the nets' search is ahead of XGBoost's best trial by more than
    ``margin`` of its error, both scored with the study's metric on the validation split.

    The error is the metric's distance from perfect (a loss itself, 1 - the value of a score), so the
    margin means the same for log-loss, RMSE, ROC-AUC or accuracy.
    """

    def __init__(self, metric: str, labels: np.ndarray, nets_best: Callable[[], float | None],
                 margin: float | None = None, task: str | None = None) -> None:
        """``task``: XGBoost's eval metric is the study's when the study's is its proper loss (log-loss, RMSE,
        or MAE: ``metrics.proper_loss``); only then can a trial's rounds be compared while it boosts (``during``)."""
        self.metric, self.labels, self.nets_best = metric, labels, nets_best
        self.margin = GIVE_WAY_MARGIN if margin is None else margin
        self.rounds_comparable = task is not None and metrics.proper_loss(task, metric) == metric
        self.verdict: tuple[float, float] | None = None  # (XGBoost's score, the nets' best) once it gave way

    def __call__(self, valid_pred: np.ndarray) -> bool:
        return self.behind(metrics.score(self.metric, self.labels, valid_pred))

    def during(self, eval_loss: float) -> bool:
        """The same question of a round's validation loss as XGBoost logs it, where that is the study's metric."""
        return self.rounds_comparable and self.behind(eval_loss)

    def behind(self, score: float) -> bool:
        nets = self.nets_best()
        if nets is None or not math.isfinite(nets):
            return False
        if self._error(score) > (1.0 + self.margin) * self._error(nets):
            self.verdict = (score, nets)
            return True
        return False

    def _error(self, value: float) -> float:
        return value if metrics.direction(self.metric) == "minimize" else 1.0 - value

    def note(self, n_trials: int) -> str | None:
        if self.verdict is None:
            return None
        ours, nets = self.verdict
        return (f"XGBoost stopped tuning after {n_trials} trial{'s' * (n_trials != 1)}: its validation {self.metric} "
                f"{ours:.4g} trailed the nets' best {nets:.4g}, so its cores went to the nets' search (no refit, "
                "no folds of it in its thread)")


def study_best(spec: dict[str, Any]) -> Callable[[], float | None]:
    """The nets' best trial value so far, read from the run's study; None before a trial completes, or when
    the study cannot be read (then XGBoost never gives way)."""
    opened: list[optuna.Study] = []

    def best() -> float | None:
        try:
            if not opened:
                opened.append(open_study(spec, create=False))
            trials = opened[0].get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        except Exception:  # noqa: BLE001 - a study the search itself still reaches is the search's to report
            return None
        values = [t.value for t in trials if t.value is not None and math.isfinite(t.value)]
        if not values:
            return None
        return min(values) if spec["direction"] == "minimize" else max(values)

    return best


class BackgroundGBT:
    """XGBoost searched in a thread while the nets search (``fit``), so that both get the search's time.

    XGBoost's C++ core and torch's kernels both release the GIL, so a thread is enough: no second process
    reads the data and imports the libraries again, and the thread uses the frames ``fit`` already read.
    Give each side its own cores (``threads`` here, the search's ``--threads`` there). ``start`` is the
    search's ``on_prepared`` hook; ``result`` waits for it.
    """

    def __init__(self, *, n_trials: int, seed: int = 0, threads: int | None = None,
                 fits_after: Callable[[Dataset], float] | None = None,
                 after: Callable[[RunDir, GBTMemberFit, Callable[[], bool], float | None], None] | None = None,
                 give_way: bool = False, on_done: Callable[[], None] | None = None) -> None:
        """``after(run, member, stopped, deadline)`` runs in the thread once XGBoost is tuned (k-fold bagging's
        folds, on XGBoost's own cores) and must end by ``deadline`` (``time.monotonic()``, None: no limit);
        ``fits_after(dataset)`` says how many fits of the best trial it makes, so that the tuning keeps time
        for them. With ``give_way`` the tuning stops once the nets are well ahead (``NetsAhead``);
        ``on_done()`` is called when the thread ends, however it ends: its cores are free then."""
        self.n_trials, self.seed, self.threads = n_trials, seed, threads
        self.fits_after, self.after = fits_after, after
        self.give_way, self.on_done = give_way, on_done
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._skip_after = threading.Event()  # the nets were not bagged: XGBoost's folds would serve nothing
        self._thread: threading.Thread | None = None
        self._dataset: Dataset | None = None
        self._member: GBTMemberFit | None = None
        self._error: BaseException | None = None

    def start(self, spec: dict[str, Any], dataset: Dataset, deadline: float | None) -> None:
        """Start searching on the prepared run ``spec`` and its ``dataset``, until ``deadline`` (``time.time()``)."""
        budget = None if deadline is None else max(1.0, deadline - time.time())
        self._dataset = dataset  # not a thread argument: the thread would hold the table until it ends
        self._thread = threading.Thread(target=self._run, args=(spec, budget), name="automl-dnn-xgboost", daemon=True)
        self._thread.start()

    def _run(self, spec: dict[str, Any], budget: float | None) -> None:
        deadline = None if budget is None else time.monotonic() + budget
        try:
            run = RunDir(Path(spec["run_dir"]))
            dataset, self._dataset = self._dataset, None
            reserve = self.fits_after(dataset) if self.fits_after else 0.0
            inputs = gbt_inputs(run, dataset)
            del dataset  # issue 13: the table (1 GB at 1M x 100) goes once XGBoost's own frames are made
            release_table_memory()
            # no XGBoost folds after (reserve 0): its training frame may wait on disk for the refit
            spill = run.root / "xgboost-train.feather" if reserve == 0 else None
            ahead = (NetsAhead(spec["metric"], np.asarray(inputs.y_valid), study_best(spec), task=inputs.encoder.task_)
                     if self.give_way else None)
            self._member = fit_gbt_inputs(inputs, n_trials=self.n_trials, seed=self.seed, time_budget=budget,
                                          threads=self.threads, notes=self.notes, stop=self._stop, reserve=reserve,
                                          spill=spill, give_way=ahead, metric=spec["metric"])
            del inputs
            note = ahead.note(self._member.result.n_trials_run) if ahead is not None else None
            if note:
                self.notes.append(note)
            if self.after is not None and not (ahead is not None and ahead.verdict):  # gave way: no folds either
                self.after(run, self._member, lambda: self._stop.is_set() or self._skip_after.is_set(), deadline)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc
        finally:
            if self.on_done is not None:
                self.on_done()

    def stop(self) -> None:
        """Stop boosting now (Ctrl-C, a failed search); result() then returns what is done, unrefitted."""
        self._stop.set()

    def skip_after(self) -> None:
        """Skip (or stop, between two fits) the work ``after`` does: the caller no longer needs it."""
        self._skip_after.set()

    def done(self) -> bool:
        """Whether the thread has ended (its cores are free), or never started."""
        return self._thread is None or not self._thread.is_alive()

    def result(self) -> GBTMemberFit | None:
        """The fitted member once the thread is done; None if it never started."""
        if self._thread is None:
            return None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._member

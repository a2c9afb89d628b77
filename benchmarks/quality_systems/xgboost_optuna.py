"""XGBoost tuned by its own Optuna (TPE) search within the budget.

Search on an 80/20 holdout of the training part (stratified for classification) with early stopping
(50 rounds, up to 2000 trees), starting from XGBoost's default parameters (the first trial), minimizing logloss (classification) or RMSE (regression). 80 % of the
budget goes to the search, every trial stops at that deadline; then the best configuration is refit on
the whole training part with its best number of trees if the time left allows (estimated from that
trial's own fit time), else the best holdout model is kept. ``--seed`` seeds the holdout split, TPE and
XGBoost's row and column sampling.
"""

from __future__ import annotations

import time

import _common as c
import numpy as np
import optuna
import xgboost as xgb
from sklearn.model_selection import train_test_split

SEARCH_SHARE = 0.8
#: XGBoost's defaults within the search space (alpha and gamma at the space's lower ends, not 0)
DEFAULTS = {"learning_rate": 0.3, "max_depth": 6, "min_child_weight": 1.0, "subsample": 1.0,
            "colsample_bytree": 1.0, "reg_lambda": 1.0, "reg_alpha": 1e-3, "gamma": 1e-4}


class Deadline(xgb.callback.TrainingCallback):
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def after_iteration(self, model, epoch, evals_log) -> bool:  # type: ignore[no-untyped-def]
        return time.monotonic() > self.deadline


def suggest(trial: optuna.Trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.1, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10, log=True),
        "gamma": trial.suggest_float("gamma", 1e-4, 5, log=True),
    }


def main() -> None:
    args = c.parse_args()
    start = time.monotonic()
    X, y, X_test = c.load(args)
    regression = args.task == "regression"
    classes = None if regression else c.classes_of(y)
    target = y.to_numpy(np.float64) if regression else y.map({v: i for i, v in enumerate(classes)}).to_numpy()
    Model = xgb.XGBRegressor if regression else xgb.XGBClassifier
    X_tr, X_va, y_tr, y_va = train_test_split(X, target, test_size=0.2, random_state=args.seed,
                                              stratify=None if regression else target)
    search_deadline = start + SEARCH_SHARE * args.budget
    final_deadline = start + args.budget
    fits: dict[int, tuple[float, int, object]] = {}

    def objective(trial: optuna.Trial) -> float:
        t0 = time.monotonic()
        model = Model(n_estimators=2000, early_stopping_rounds=50, enable_categorical=True, random_state=args.seed,
                      callbacks=[Deadline(search_deadline)], **suggest(trial))
        model.fit(X_tr, y_tr, eval_set=[(X_va, y_va)], verbose=False)
        score = min(next(iter(model.evals_result()["validation_0"].values())))
        best_iteration = getattr(model, "best_iteration", None)
        n_trees = (best_iteration + 1) if best_iteration is not None else model.get_booster().num_boosted_rounds()
        fits[trial.number] = (time.monotonic() - t0, n_trees, model)
        for number in list(fits):  # keep only the best model in memory
            if number != trial.number and trial.study.best_trials and number != trial.study.best_trial.number:
                fits.pop(number, None)
        return score

    times: dict[str, float] = {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=args.seed))
    study.enqueue_trial(DEFAULTS)  # XGBoost's own defaults first, so the search starts from them
    fit_start = time.perf_counter()
    study.optimize(objective, timeout=max(1.0, search_deadline - time.monotonic()), gc_after_trial=False)
    best = study.best_trial
    seconds, n_trees, model = fits[best.number]
    refit = time.monotonic() + 1.25 * seconds / 0.8 < final_deadline
    if refit:
        model = Model(n_estimators=n_trees, enable_categorical=True, random_state=args.seed,
                      callbacks=[Deadline(final_deadline)], **best.params)
        model.fit(X, target, verbose=False)
    times["fit_s"] = time.perf_counter() - fit_start
    with c.timer(times, "predict_s"):
        pred = model.predict(X_test) if regression else model.predict_proba(X_test)
    info = {"trials": len(study.trials), "best_holdout": best.value, "best_params": best.params,
            "n_trees": n_trees, "refit_on_all": refit}
    c.write_result(args.out, {"xgboost-optuna": dict(times, info=info)},
                   {"xgboost-optuna": c.prediction_frame(args.task, pred, classes)}, ("xgboost", "optuna"))


if __name__ == "__main__":
    main()

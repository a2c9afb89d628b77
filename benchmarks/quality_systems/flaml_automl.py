"""FLAML ``AutoML().fit(time_budget=budget)`` with its default settings (metric, estimators, holdout/CV)."""

from __future__ import annotations

import _common as c
import numpy as np
from flaml import AutoML


def main() -> None:
    args = c.parse_args()
    X, y, X_test = c.load(args)
    regression = args.task == "regression"
    classes = None if regression else c.classes_of(y)
    target = y.to_numpy(np.float64) if regression else y.map({v: i for i, v in enumerate(classes)}).to_numpy()
    automl = AutoML()
    times: dict[str, float] = {}
    with c.timer(times, "fit_s"):
        automl.fit(X, target, task="regression" if regression else "classification", time_budget=args.budget,
                   seed=0, verbose=0)
    with c.timer(times, "predict_s"):
        pred = automl.predict(X_test) if regression else automl.predict_proba(X_test)
    info = {"best_estimator": automl.best_estimator, "best_config": automl.best_config,
            "best_loss": automl.best_loss, "metric": str(getattr(automl, "_state").metric)
            if hasattr(automl, "_state") else None}
    c.write_result(args.out, {"flaml": dict(times, info=info)},
                   {"flaml": c.prediction_frame(args.task, pred, classes)}, ("flaml", "xgboost", "lightgbm"))


if __name__ == "__main__":
    main()

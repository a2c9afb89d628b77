"""AutoGluon ``TabularPredictor(...).fit(time_limit=budget, presets="medium_quality")``.

The problem type is given; the evaluation metric is the benchmark's primary one (ROC-AUC for binary,
accuracy for multiclass, RMSE for regression: AutoGluon's defaults except binary's). The model folder is
written under the runner's output folder and removed by the benchmark afterwards.
"""

from __future__ import annotations

import _common as c
import pandas as pd
from autogluon.tabular import TabularPredictor

METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "root_mean_squared_error"}


def main() -> None:
    args = c.parse_args()
    train = pd.read_parquet(args.train)
    X_test = pd.read_parquet(args.test).drop(columns=[args.target])
    times: dict[str, float] = {}
    predictor = TabularPredictor(label=args.target, problem_type=args.task, eval_metric=METRIC[args.task],
                                 path=str(args.out / "ag_model"), verbosity=1)
    with c.timer(times, "fit_s"):
        predictor.fit(train, time_limit=args.budget, presets="medium_quality")
    with c.timer(times, "predict_s"):
        pred = predictor.predict(X_test) if args.task == "regression" else predictor.predict_proba(X_test)
    board = predictor.leaderboard(silent=True)
    info = {"best_model": predictor.model_best, "n_models": int(len(board)),
            "models": board["model"].astype(str).tolist()[:20]}
    c.write_result(args.out, {"autogluon": dict(times, info=info)},
                   {"autogluon": c.prediction_frame(args.task, pred)},
                   ("autogluon.tabular", "lightgbm", "catboost", "xgboost", "torch"))


if __name__ == "__main__":
    main()

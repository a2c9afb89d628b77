"""XGBoost with its default parameters (native categorical support: pandas ``category`` columns)."""

from __future__ import annotations

import _common as c
import numpy as np
import xgboost as xgb


def main() -> None:
    args = c.parse_args()
    X, y, X_test = c.load(args)
    times: dict[str, float] = {}
    if args.task == "regression":
        model = xgb.XGBRegressor(enable_categorical=True, random_state=0)
        with c.timer(times, "fit_s"):
            model.fit(X, y.to_numpy(np.float64))
        with c.timer(times, "predict_s"):
            pred = model.predict(X_test)
        classes = None
    else:
        classes = c.classes_of(y)
        codes = y.map({label: i for i, label in enumerate(classes)}).to_numpy()
        model = xgb.XGBClassifier(enable_categorical=True, random_state=0)
        with c.timer(times, "fit_s"):
            model.fit(X, codes)
        with c.timer(times, "predict_s"):
            pred = model.predict_proba(X_test)
    c.write_result(args.out, {"xgboost-default": dict(times, info={})},
                   {"xgboost-default": c.prediction_frame(args.task, pred, classes)}, ("xgboost",))


if __name__ == "__main__":
    main()

"""LightGBM with its default parameters (pandas ``category`` columns are used natively)."""

from __future__ import annotations

import _common as c
import lightgbm as lgb
import numpy as np


def main() -> None:
    args = c.parse_args()
    X, y, X_test = c.load(args)
    times: dict[str, float] = {}
    if args.task == "regression":
        model = lgb.LGBMRegressor(random_state=0, verbose=-1)
        with c.timer(times, "fit_s"):
            model.fit(X, y.to_numpy(np.float64))
        with c.timer(times, "predict_s"):
            pred = model.predict(X_test)
        classes = None
    else:
        classes = c.classes_of(y)
        codes = y.map({label: i for i, label in enumerate(classes)}).to_numpy()
        model = lgb.LGBMClassifier(random_state=0, verbose=-1)
        with c.timer(times, "fit_s"):
            model.fit(X, codes)
        with c.timer(times, "predict_s"):
            pred = model.predict_proba(X_test)
    c.write_result(args.out, {"lightgbm-default": dict(times, info={})},
                   {"lightgbm-default": c.prediction_frame(args.task, pred, classes)}, ("lightgbm",))


if __name__ == "__main__":
    main()

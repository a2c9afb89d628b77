"""What the pytabkit runners share (``pytabkit_realmlp.py``, ``pytabkit_tabm.py``): inputs, fit, predict.

- String columns become pandas ``category`` (``_common.load``); pytabkit treats category columns as
  categorical natively (ordinal codes into embeddings / one-hot; missing and unseen values share code 0).
- pytabkit refuses NaN in numeric columns: numeric NaN (training and test) is replaced by the training
  median of the column (0 if the column has no value at all). Boolean columns become 0/1 floats.
- ``device="cpu"``, ``n_threads`` = the machine's cores, ``random_state=0``; everything else is the
  model's default. ``time_limit`` is given to ``fit(time_to_fit_in_seconds=...)`` only where pytabkit
  honours it (RealMLP: Lightning's ``max_time``); TabM trains until its early stopping.
"""

from __future__ import annotations

import os
from typing import Any

import _common as c
import numpy as np
import pandas as pd


def prepare(X: pd.DataFrame, X_test: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    X, X_test = X.copy(), X_test.copy()
    imputed = {}
    for col in X.columns:
        if isinstance(X[col].dtype, pd.CategoricalDtype):
            continue
        if pd.api.types.is_bool_dtype(X[col]):
            X[col], X_test[col] = X[col].astype(np.float64), X_test[col].astype(np.float64)
        if X[col].isna().any() or X_test[col].isna().any():
            median = X[col].median()
            median = 0.0 if pd.isna(median) else float(median)
            imputed[col] = {"train_nan": int(X[col].isna().sum()), "test_nan": int(X_test[col].isna().sum()),
                            "median": median}
            X[col], X_test[col] = X[col].fillna(median), X_test[col].fillna(median)
    cats = [col for col in X.columns if isinstance(X[col].dtype, pd.CategoricalDtype)]
    return X, X_test, {"imputed_numeric": imputed, "categorical": cats}


def run(row: str, classifier: type, regressor: type, honours_time_limit: bool) -> None:
    args = c.parse_args()
    X, y, X_test = c.load(args)
    X, X_test, info = prepare(X, X_test)
    n_threads = os.cpu_count() or 1
    params = {"device": "cpu", "n_threads": n_threads, "random_state": 0}
    fit_kwargs = {"time_to_fit_in_seconds": args.budget} if honours_time_limit else {}
    times: dict[str, float] = {}
    if args.task == "regression":
        classes = None
        model = regressor(**params)
        with c.timer(times, "fit_s"):
            model.fit(X, y.to_numpy(np.float64), **fit_kwargs)
        with c.timer(times, "predict_s"):
            pred = model.predict(X_test)
    else:
        classes = c.classes_of(y)
        codes = y.map({label: i for i, label in enumerate(classes)}).to_numpy()
        model = classifier(**params)
        with c.timer(times, "fit_s"):
            model.fit(X, codes, **fit_kwargs)
        assert list(model.classes_) == list(range(len(classes))), model.classes_
        with c.timer(times, "predict_s"):
            pred = model.predict_proba(X_test)
    info.update(params, time_limit_s=fit_kwargs.get("time_to_fit_in_seconds"),
                model=type(model).__name__, fit_params=getattr(model, "fit_params_", None))
    c.write_result(args.out, {row: dict(times, info=info)}, {row: c.prediction_frame(args.task, pred, classes)},
                   ("pytabkit", "torch", "pytorch-lightning", "scikit-learn"))

"""What every runner shares: its arguments, reading the split, and writing predictions + result.json.

A runner is started by ``benchmarks/quality.py`` with its system's own Python as

    python RUNNER --train train.parquet --test test.parquet --task TASK --target COL --budget SECONDS --out DIR

and writes ``DIR/result.json``::

    {"rows": {ROW: {"fit_s": .., "predict_s": .., "predictions": "pred-ROW.parquet", "info": {..}}},
     "versions": {package: version}}

Predictions (one row per test row, in order): classification -> one probability column per class, named
``str(label)``; regression -> one column ``prediction`` on the original scale. Only pandas (+ pyarrow)
is needed here, since every system's environment has them.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--task", choices=["binary", "multiclass", "regression"], required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--budget", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the system's own seed (the split stays the same)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def load(args: argparse.Namespace, categorical: bool = True) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """(X_train, y_train, X_test); string columns become pandas ``category`` with the training categories."""
    train = pd.read_parquet(args.train)
    test = pd.read_parquet(args.test)
    y = train.pop(args.target)
    test = test.drop(columns=[args.target])
    if categorical:
        for col in train.columns:
            if not pd.api.types.is_numeric_dtype(train[col]):
                cats = sorted(train[col].dropna().astype(str).unique())
                train[col] = pd.Categorical(train[col].astype("string"), categories=cats)
                test[col] = pd.Categorical(test[col].astype("string"), categories=cats)  # unseen -> NaN
    return train, y, test


def classes_of(y: pd.Series) -> list[Any]:
    return sorted(pd.unique(y.dropna()).tolist())


@contextmanager
def timer(box: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        box[key] = time.perf_counter() - start


def prediction_frame(task: str, pred: Any, classes: list[Any] | None = None) -> pd.DataFrame:
    """Probabilities ``(n, K)`` with ``classes`` (their column order), or regression values ``(n,)``."""
    if task == "regression":
        return pd.DataFrame({"prediction": np.asarray(pred, dtype=np.float64).reshape(-1)})
    if isinstance(pred, pd.DataFrame):
        return pd.DataFrame({str(c): pred[c].to_numpy(np.float64) for c in pred.columns})
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim == 1:  # P(second class) for binary
        pred = np.column_stack([1 - pred, pred])
    assert classes is not None and pred.shape[1] == len(classes), (pred.shape, classes)
    return pd.DataFrame({str(c): pred[:, i] for i, c in enumerate(classes)})


def versions(*packages: str) -> dict[str, str]:
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_result(out: Path, rows: dict[str, dict[str, Any]], frames: dict[str, pd.DataFrame],
                 packages: tuple[str, ...] = ()) -> None:
    for name, frame in frames.items():
        frame.to_parquet(out / f"pred-{name}.parquet")
        rows[name]["predictions"] = f"pred-{name}.parquet"
    (out / "result.json").write_text(json.dumps({"rows": rows, "versions": versions(*packages)}, indent=1,
                                                default=str))

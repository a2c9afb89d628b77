"""Permutation importance: how much a model's score drops when one input column is shuffled.

It works on the raw input columns a user knows (not on the encoded features), through the model's own
``predict``, so it reads the same for a net, XGBoost or the whole ensemble. The cost is
``repeats x columns`` predictions of at most ``max_rows`` rows: the shuffled copies are stacked and
predicted together, up to ``BATCH_CELLS`` cells a call, because one call per copy spends most of its time
in per-call overhead (checks, preprocessing set-up) on small tables.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from automl_dnn import metrics
from automl_dnn.errors import AutoDNNError, DataError

BATCH_CELLS = 2_000_000  # rows x columns of stacked shuffled copies per prediction call

#: Predictions in user space for a table: probabilities ``(n, K)`` or values ``(n,)``.
PredictFn = Callable[[pd.DataFrame], np.ndarray]


def permutation_importance(predict_fn: PredictFn, frame: pd.DataFrame, y: np.ndarray, *, metric: str,
                           columns: Sequence[str] | None = None, repeats: int = 3, max_rows: int = 2000,
                           seed: int = 0, threshold: float | None = None) -> pd.DataFrame:
    """One row per column: the mean drop of ``metric`` over ``repeats`` shuffles (positive: the column
    helps), its standard deviation, and the drop of each repeat; sorted, most important first.

    ``y`` holds class indices (classification) or values. ``attrs`` keep the baseline score, the metric,
    the rows used and the seconds it took, for reports.
    """
    _check_arguments(frame, y, repeats, max_rows)
    started = time.perf_counter()
    columns = list(frame.columns if columns is None else columns)
    rng = np.random.default_rng(seed)
    rows = _sample_rows(len(frame), max_rows, rng)
    frame, y = frame.iloc[rows].reset_index(drop=True), np.asarray(y)[rows]
    baseline = metrics.score(metric, y, predict_fn(frame), threshold)
    if not math.isfinite(baseline):
        raise DataError(f"{metric} is undefined on these {len(y)} rows (e.g. a single class); "
                        "pass more rows or another metric")
    jobs = [(j, rng.permutation(len(frame))) for _ in range(repeats) for j in range(len(columns))]
    scores = _shuffled_scores(predict_fn, frame, y, columns, jobs, metric, threshold)
    sign = 1.0 if metrics.direction(metric) == "maximize" else -1.0
    drops = sign * (baseline - scores.reshape(repeats, len(columns)).T) + 0.0  # (columns, repeats); no -0.0
    table = pd.DataFrame({"feature": columns, "importance": drops.mean(axis=1),
                          "std": drops.std(axis=1, ddof=1) if repeats > 1 else np.zeros(len(columns))})
    for r in range(repeats):
        table[f"repeat_{r + 1}"] = drops[:, r]
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    table.attrs.update(baseline=float(baseline), metric=metric, rows=int(len(y)), repeats=int(repeats),
                       seconds=time.perf_counter() - started)
    return table


def _check_arguments(frame: pd.DataFrame, y: np.ndarray, repeats: int, max_rows: int) -> None:
    if repeats < 1:
        raise AutoDNNError(f"repeats must be >= 1, got {repeats}")
    if max_rows < 2:
        raise AutoDNNError(f"max_rows must be >= 2, got {max_rows}")
    if len(frame) != len(y):
        raise DataError(f"{len(frame)} rows but {len(y)} target values")
    if len(frame) < 2:
        raise DataError("permutation importance needs at least 2 rows with a target")


def _sample_rows(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """All rows in order, or a seeded sample of ``max_rows`` of them (kept in order)."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def _shuffled_scores(predict_fn: PredictFn, frame: pd.DataFrame, y: np.ndarray, columns: list[str],
                     jobs: list[tuple[int, np.ndarray]], metric: str, threshold: float | None) -> np.ndarray:
    """The score of each job's copy (column ``j`` shuffled by its permutation), predicted in stacked batches."""
    per_batch = max(1, BATCH_CELLS // max(1, len(frame) * max(1, frame.shape[1])))
    scores = []
    for start in range(0, len(jobs), per_batch):
        batch = jobs[start:start + per_batch]
        copies = [_shuffled(frame, columns[j], perm) for j, perm in batch]
        pred = np.asarray(predict_fn(pd.concat(copies, ignore_index=True)))
        for i in range(len(batch)):
            scores.append(metrics.score(metric, y, pred[i * len(frame):(i + 1) * len(frame)], threshold))
    return np.asarray(scores, dtype=np.float64)


def _shuffled(frame: pd.DataFrame, column: str, perm: np.ndarray) -> pd.DataFrame:
    """A copy of ``frame`` with one column's values permuted (its dtype kept, categories too)."""
    copy = frame.copy(deep=False)
    copy[column] = frame[column].iloc[perm].reset_index(drop=True)
    return copy


__all__ = ["permutation_importance"]

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
from dataclasses import dataclass
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
                           seed: int = 0, threshold: float | None = None, group_size: int = 1) -> pd.DataFrame:
    """One row per column: the mean drop of ``metric`` over ``repeats`` shuffles (positive: the column
    helps), its standard deviation, and the drop of each repeat; sorted, most important first.

    ``y`` holds class indices (classification) or values. ``attrs`` keep the baseline score, the metric,
    the rows used, the group size and the seconds it took, for reports. ``group_size`` > 1 shuffles that many
    adjacent columns together (one row per group, named 'a … c (3 columns)'): a very wide table's cost, as
    every shuffled copy is the whole table, grows with the columns squared.
    """
    _check_arguments(frame, y, repeats, max_rows)
    if group_size < 1:
        raise AutoDNNError(f"group_size must be >= 1, got {group_size}")
    started = time.perf_counter()
    columns = column_groups(list(frame.columns if columns is None else columns), group_size)
    rng = np.random.default_rng(seed)
    rows = _sample_rows(len(frame), max_rows, rng)
    frame, y = _compact(frame.iloc[rows]), np.asarray(y)[rows]
    baseline = metrics.score(metric, y, predict_fn(frame), threshold)
    if not math.isfinite(baseline):
        raise DataError(f"{metric} is undefined on these {len(y)} rows (e.g. a single class); "
                        "pass more rows or another metric")
    jobs = [(j, rng.permutation(len(frame))) for _ in range(repeats) for j in range(len(columns))]
    scores = _shuffled_scores(predict_fn, frame, y, columns, jobs, metric, threshold)
    sign = 1.0 if metrics.direction(metric) == "maximize" else -1.0
    drops = sign * (baseline - scores.reshape(repeats, len(columns)).T) + 0.0  # (columns, repeats); no -0.0
    table = pd.DataFrame({"feature": [group_name(g) for g in columns], "importance": drops.mean(axis=1),
                          "std": drops.std(axis=1, ddof=1) if repeats > 1 else np.zeros(len(columns))})
    for r in range(repeats):
        table[f"repeat_{r + 1}"] = drops[:, r]
    table = table.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    table.attrs.update(baseline=float(baseline), metric=metric, rows=int(len(y)), repeats=int(repeats),
                       group_size=int(group_size), seconds=time.perf_counter() - started)
    return table


def column_groups(columns: list[str], size: int) -> list[list[str]]:
    """The columns in runs of ``size`` adjacent ones (the last may be shorter); one each for size 1."""
    return [columns[i:i + size] for i in range(0, len(columns), size)]


def group_name(group: Sequence[str]) -> str:
    """A column's name, or a group's first and last names with its size."""
    return group[0] if len(group) == 1 else f"{group[0]} … {group[-1]} ({len(group)} columns)"


def _check_arguments(frame: pd.DataFrame, y: np.ndarray, repeats: int, max_rows: int) -> None:
    if repeats < 1:
        raise AutoDNNError(f"repeats must be >= 1, got {repeats}")
    if max_rows < 2:
        raise AutoDNNError(f"max_rows must be >= 2, got {max_rows}")
    if len(frame) != len(y):
        raise DataError(f"{len(frame)} rows but {len(y)} target values")
    if len(frame) < 2:
        raise DataError("permutation importance needs at least 2 rows with a target")


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as one consolidated frame without ``attrs``: each copy and each column read of a frame built a
    column at a time, or carrying read_table's notes (deep-copied on every access), cost 20 times more (1,500
    columns: 0.5 s instead of 0.03 s to build 29 shuffled copies)."""
    compact = frame.reset_index(drop=True).copy()
    compact.attrs = {}
    return compact


def _sample_rows(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """All rows in order, or a seeded sample of ``max_rows`` of them (kept in order)."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_rows, replace=False))


def _shuffled_scores(predict_fn: PredictFn, frame: pd.DataFrame, y: np.ndarray, columns: list[list[str]],
                     jobs: list[tuple[int, np.ndarray]], metric: str, threshold: float | None) -> np.ndarray:
    """The score of each job's copy (group ``j`` shuffled by its permutation), predicted in stacked batches."""
    per_batch = copies_per_call(len(frame), frame.shape[1])
    scores = []
    for start in range(0, len(jobs), per_batch):
        batch = jobs[start:start + per_batch]
        pred = np.asarray(predict_fn(_stacked(frame, columns, batch)))
        for i in range(len(batch)):
            scores.append(metrics.score(metric, y, pred[i * len(frame):(i + 1) * len(frame)], threshold))
    return np.asarray(scores, dtype=np.float64)


def copies_per_call(rows: int, n_frame_columns: int) -> int:
    """How many shuffled copies of ``rows`` rows one prediction call stacks: BATCH_CELLS cells, at least one."""
    return max(1, BATCH_CELLS // max(1, rows * max(1, n_frame_columns)))


def _stacked(frame: pd.DataFrame, columns: Sequence[Sequence[str]], batch: Sequence[tuple[int, np.ndarray]]
             ) -> pd.DataFrame:
    """The batch's copies of ``frame`` one under the other, each with the columns of its group ``columns[j]``
    permuted (by one permutation: a group's rows stay together)."""
    return pd.concat([_shuffled(frame, columns[j], perm) for j, perm in batch], ignore_index=True)


def _shuffled(frame: pd.DataFrame, group: Sequence[str], perm: np.ndarray) -> pd.DataFrame:
    """A copy of ``frame`` with the group's columns' values permuted (dtypes kept, categories too)."""
    copy = frame.copy(deep=False)
    for column in group:
        copy[column] = frame[column].iloc[perm].reset_index(drop=True)
    return copy


# --- what it costs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportanceCost:
    """Seconds of one prediction call of the importance: ``fixed`` (input checks, a set-up per column, which a
    wide table pays on every call whatever its rows) plus ``per_row`` for each stacked row."""

    fixed: float
    per_row: float

    def calls(self, rows: int, n_columns: int, repeats: int, group_size: int = 1) -> int:
        """The prediction calls of an importance: the unshuffled rows, then the stacked shuffled copies."""
        return 1 + math.ceil(repeats * math.ceil(n_columns / group_size) / copies_per_call(rows, n_columns))

    def seconds(self, rows: int, n_columns: int, repeats: int, group_size: int = 1) -> float:
        """What ``repeats`` shuffles of each of ``n_columns`` columns (or groups of them) on ``rows`` rows take."""
        copies = repeats * math.ceil(n_columns / group_size) + 1
        return self.calls(rows, n_columns, repeats, group_size) * self.fixed + self.per_row * rows * copies


def measure_cost(predict_fn: PredictFn, frame: pd.DataFrame, columns: Sequence[str], *, rows: int,
                 seconds: float, seed: int = 0) -> ImportanceCost:
    """The ``ImportanceCost`` of ``predict_fn`` from calls timed as the importance makes them: shuffled copies of
    ``rows`` rows of ``frame`` stacked, 1 copy, then twice as many up to one full call (or a copy of each column),
    while the calls so far took under ``seconds`` (two calls at least); fitted as fixed + per row. A prediction of
    a few rows alone says nothing of the rows: 45 rows of a 1,500-column table took 0.6 s, and so did 1,300.
    """
    rng = np.random.default_rng(seed)
    frame = _compact(frame.iloc[:max(1, min(rows, len(frame)))])  # as permutation_importance prepares it
    columns = [[c] for c in columns]
    limit = min(copies_per_call(len(frame), frame.shape[1]), len(columns))
    sizes, times, copies = [], [], 1
    while True:
        batch = [(j % len(columns), rng.permutation(len(frame))) for j in range(copies)]
        started = time.perf_counter()
        predict_fn(_stacked(frame, columns, batch))
        sizes.append(copies * len(frame))
        times.append(time.perf_counter() - started)
        if copies >= limit or (len(times) > 1 and sum(times) >= seconds):
            break
        copies = min(2 * copies, limit)
    return _fitted_cost(np.asarray(sizes, dtype=np.float64), np.asarray(times, dtype=np.float64))


def _fitted_cost(sizes: np.ndarray, times: np.ndarray) -> ImportanceCost:
    """fixed + per_row x rows by least squares, neither below zero; one call alone is taken as all per row
    (the cautious reading: more rows then cost more)."""
    if len(sizes) < 2 or np.ptp(sizes) == 0:
        return ImportanceCost(fixed=0.0, per_row=float(times.mean() / sizes.mean()))
    per_row = max(0.0, float(np.polyfit(sizes, times, 1)[0]))
    return ImportanceCost(fixed=max(0.0, float(times.mean() - per_row * sizes.mean())), per_row=per_row)


__all__ = ["ImportanceCost", "column_groups", "copies_per_call", "group_name", "measure_cost",
           "permutation_importance"]

"""Large tables (issue 13): the rows the search's trials train on, a seeded sample sized to the budget.

On 1,000,000 rows x 100 columns one epoch of the default space's first net (TabM-like, k = 8, PLE) takes
minutes on a CPU, so a 600 s search would finish no trial at all. Before the first trial the search
measures a few optimizer steps of the nets it will try first (``objective.probe_row_seconds``) and
``budget.plan_search_rows`` sizes a seeded sample of the training rows so that a few trials of a few
epochs each fit its time; each epoch then scores a sample of the validation rows too (early stopping and
pruning). A trial's value is still its score on every validation row, and it still predicts every
validation and test row, so trials and the ensemble stay comparable. What trains after the search (the
XGBoost member, the bagged or refit nets) trains on every row.

The sample is recorded in ``split.safetensors`` (``search_train``: positions in the training part,
``search_watch``: in the validation part), so every worker and a resumed search use the same rows. A
trial reads only the sampled rows of the training matrix, a chunk at a time (``trial_data``), and one
scaling's matrices at a time, not the whole matrix of every scaling.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from safetensors import safe_open

from automl_dnn.budget import MIN_SEARCH_ROWS, SearchRows, plan_search_rows
from automl_dnn.files import load_arrays, save_arrays, write_json
from automl_dnn.folds import scaled_epochs
from automl_dnn.run_folder import RunDir

SEARCH_TRAIN_KEY, SEARCH_WATCH_KEY = "search_train", "search_watch"
CHUNK_ROWS = 65_536  # rows read at a time when a sample is taken from a saved matrix


def sample_positions(n: int, m: int, seed: int) -> np.ndarray:
    """``m`` of the positions ``0..n-1``, seeded and sorted (all of them when ``m >= n``)."""
    if m >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False)).astype(np.int64)


def read_rows(path: Path, key: str, rows: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Array ``key`` of a safetensors file, only its ``rows`` (sorted positions; None: all), read
    CHUNK_ROWS rows at a time: a sample of a large matrix without loading the matrix. ``out``: the array
    to read into (e.g. a slice of a larger one), instead of a new one.

    The file is opened for each chunk: safetensors maps it into memory, and every page read stays in the
    process's resident memory until the file is closed (at 1M rows a whole matrix, ~400 MB, on top of the
    copy being made)."""
    with safe_open(str(path), framework="np") as f:
        if rows is None and out is None:
            return f.get_tensor(key)
        view = f.get_slice(key)
        shape, dtype = view.get_shape(), view[0:1].dtype
    rows = np.arange(shape[0]) if rows is None else rows
    if out is None:
        out = np.empty((len(rows), *shape[1:]), dtype=dtype)
    start = 0
    for lo in range(0, shape[0], CHUNK_ROWS):
        hi = min(lo + CHUNK_ROWS, shape[0])  # safetensors refuses a slice past the end
        stop = int(np.searchsorted(rows, hi))
        if stop > start:
            with safe_open(str(path), framework="np") as f:
                out[start:stop] = f.get_slice(key)[lo:hi][rows[start:stop] - lo]
        start = stop
    return out


def search_sample(run: RunDir) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The recorded positions of the training and the watched validation rows (None: all of them)."""
    with safe_open(str(run.split_path), framework="np") as f:
        keys = set(f.keys())
        train = f.get_tensor(SEARCH_TRAIN_KEY) if SEARCH_TRAIN_KEY in keys else None
        watch = f.get_tensor(SEARCH_WATCH_KEY) if SEARCH_WATCH_KEY in keys else None
    return train, watch


def sample_sizes(run: RunDir) -> dict[str, int] | None:
    """Rows of the search's sample and of each part (``sample``, ``watch``, ``train``, ``valid``, ``test``), or
    None when the trials train on every row; read from the split file's shapes only."""
    with safe_open(str(run.split_path), framework="np") as f:
        if SEARCH_TRAIN_KEY not in f.keys():
            return None
        sizes = {part: f.get_slice(part).get_shape()[0] for part in ("train", "valid", "test")}
        sizes["sample"] = f.get_slice(SEARCH_TRAIN_KEY).get_shape()[0]
        watch = f.get_slice(SEARCH_WATCH_KEY).get_shape()[0] if SEARCH_WATCH_KEY in f.keys() else sizes["valid"]
    return {**sizes, "watch": watch}


def refit_seconds(epoch_seconds: float, epochs_run: int, copy_epoch: int, max_epochs: int,
                  sizes: dict[str, int]) -> float:
    """Seconds a copy of a sampled trial's net takes on every development row: its epochs scaled to keep the
    trial's optimizer steps, but at least one pass over every row (``folds.scaled_epochs``), at the trial's own
    seconds per row; plus predicting the test rows (a third of a training step each)."""
    per_row = epoch_seconds / max(epochs_run, 1) / (sizes["sample"] + sizes["watch"] / 3)
    n_dev = sizes["train"] + sizes["valid"]
    _, epochs = scaled_epochs(copy_epoch, max_epochs, sizes["sample"], n_dev)
    return per_row * (epochs * n_dev + sizes["test"] / 3)


def n_search_train(run: RunDir, n_train: int) -> int:
    """How many training rows the trials trained on: the sample's size, else ``n_train``."""
    train, _ = search_sample(run)
    return n_train if train is None else len(train)


class TrialArrays(dict):
    """A trial's arrays. On a sampled search ``X_test`` (and ``X_valid``, when the epochs score a sample of
    it) is not held: each access reads it from the run folder (issue 13: 140 MB at 1M rows that a trial needs
    only at its end)."""

    def __init__(self, arrays: dict[str, np.ndarray], path: Path | None = None, lazy: tuple[str, ...] = ()) -> None:
        super().__init__(arrays)
        self.path, self.lazy = path, lazy

    def __missing__(self, key: str) -> np.ndarray:
        if key in self.lazy and self.path is not None:
            return read_rows(self.path, key)
        raise KeyError(key)


def trial_data(run: RunDir, scaling: str) -> TrialArrays:
    """What a trial reads of one scaling: the sampled training rows, every validation and test row, and the
    watched validation rows (``X_watch``, ``y_watch``) when each epoch scores a sample of them. On a sampled
    search the test matrix, and the validation matrix when it is watched through a sample, are read when
    asked for, not held."""
    path = run.data_path(scaling)
    train, watch = search_sample(run)
    with safe_open(str(path), framework="np") as f:
        keys = [k for k in f.keys() if not k.endswith("_train")]
        n_valid = f.get_slice("y_valid").get_shape()[0]
    watched = watch is not None and len(watch) < n_valid
    # X_valid is read at the trial's end only when the epochs score a sample of it; else they need it all along
    lazy = () if train is None else ("X_valid", "X_test") if watched else ("X_test",)
    data = {k: read_rows(path, k) for k in keys if k not in lazy}
    for key in ("X_train", "y_train"):
        data[key] = read_rows(path, key, train)
    if watched:
        data["X_watch"] = read_rows(path, "X_valid", np.asarray(watch))
        data["y_watch"] = data["y_valid"][watch]
    return TrialArrays(data, path, lazy)


def decide(run: RunDir, spec: dict[str, Any], *, row_seconds: Callable[[], float], deadline: float | None,
           budget: float | None, seed: int, resumed: bool) -> SearchRows | None:
    """Plan and record the search's sample once; a resumed search keeps what it decided first.

    None (every row) without a time budget, for cross-validated trials (small tables), and for a resumed
    search that started on every row. The note goes to the run's notes.
    """
    split = load_arrays(run.split_path)
    n_train, n_valid, n_test = (len(split[p]) for p in ("train", "valid", "test"))
    if SEARCH_TRAIN_KEY in split:
        train, watch = split[SEARCH_TRAIN_KEY], split.get(SEARCH_WATCH_KEY, np.arange(n_valid))
        return SearchRows(len(train), n_train, len(watch), n_valid)
    if resumed or deadline is None or int(spec.get("cv_folds", 1)) > 1 or n_train <= MIN_SEARCH_ROWS:
        return None  # (a table this small is never sampled: no probe either)
    plan = plan_search_rows(n_train, n_valid, n_test, row_seconds=row_seconds(), seconds=deadline - time.time(),
                            budget=budget)
    if not plan.sampled:
        return plan
    split[SEARCH_TRAIN_KEY] = sample_positions(n_train, plan.train, seed)
    split[SEARCH_WATCH_KEY] = sample_positions(n_valid, plan.watch, seed + 1)
    save_arrays(run.split_path, split)
    spec["notes"] = [*spec.get("notes", []), plan.note]
    write_json(run.spec_path, spec)
    return plan


__all__ = ["SEARCH_TRAIN_KEY", "SEARCH_WATCH_KEY", "decide", "n_search_train", "read_rows", "refit_seconds",
           "sample_positions", "sample_sizes", "search_sample", "trial_data"]

"""K-fold assignments of the development rows (train + valid): seeded, stratified for classification.

The search's cross-validated trials (small tables) and the bagging after the search both split with
``make_folds``; a ``Folds`` is plain arrays, so it can be fingerprinted and its folds reused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from automl_dnn.errors import AutoDNNError


@dataclass(frozen=True)
class Folds:
    """Which fold each development row is out of, per repeat: ``assignment[r, i]`` in ``0..k-1``."""

    assignment: np.ndarray  # (repeats, n_rows) int64
    k: int

    @property
    def repeats(self) -> int:
        return int(self.assignment.shape[0])

    @property
    def n_rows(self) -> int:
        return int(self.assignment.shape[1])

    def rows(self, repeat: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, out-of-fold rows) of one fold, as sorted positions in the development rows."""
        out = self.assignment[repeat] == fold
        return np.flatnonzero(~out), np.flatnonzero(out)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.assignment.astype(np.int64).tobytes()).hexdigest()[:16]


def make_folds(y: np.ndarray, task: str, *, k: int, repeats: int = 1, seed: int = 0,
               groups: np.ndarray | None = None, order: np.ndarray | None = None) -> Folds:
    """Seeded K-fold assignments: stratified for classification (when every class has k rows), shuffled;
    with ``groups``, each group's rows are out of the same fold (``--groups``); with ``order`` (each row's
    rank in time, ``--time-column``), contiguous blocks of time (``time_blocks``)."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k=}")
    if len(y) < 2 * k:
        raise AutoDNNError(f"{len(y)} training + validation rows are too few for {k} folds; use --folds 1")
    if order is not None:
        return time_blocks(order, k)
    if groups is not None and len(np.unique(groups)) < k:
        raise AutoDNNError(f"{len(np.unique(groups))} groups are too few for {k} folds; use fewer folds")
    stratify = task != "regression" and len(y) > 0 and np.bincount(np.asarray(y, dtype=np.int64)).min() >= k
    assignment = np.empty((repeats, len(y)), dtype=np.int64)
    for r in range(repeats):
        splitter = _splitter(stratify, groups is not None)(n_splits=k, shuffle=True, random_state=seed + r)
        for fold, (_, out) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            assignment[r, out] = fold
    return Folds(assignment=assignment, k=k)


def time_blocks(order: np.ndarray, k: int) -> Folds:
    """K contiguous blocks of time, earliest first: a fold's out-of-fold rows are one period, so rows next
    to each other in time (which leak into each other's predictions) stay on one side. Every row is out of
    fold once, as the ensemble's out-of-fold fit needs; the honest forward-in-time score is the test split,
    which holds the latest rows. One repeat: the blocks have no randomness to repeat over."""
    assignment = np.empty((1, len(order)), dtype=np.int64)
    for fold, rows in enumerate(np.array_split(np.argsort(order, kind="stable"), k)):
        assignment[0, rows] = fold
    return Folds(assignment=assignment, k=k)


def _splitter(stratify: bool, grouped: bool) -> type:
    if grouped:
        return StratifiedGroupKFold if stratify else GroupKFold
    return StratifiedKFold if stratify else KFold


DEFAULT_FOLDS = 5
#: ``--folds`` by default: K-fold bagging up to this many development rows, the holdout above (where one
#: validation split is already thousands of rows, and K fits cost K times the time).
MAX_DEFAULT_BAGGED_ROWS = 100_000
TINY_ROWS = 1_000  # fewer development rows than this: repeated k-fold
TINY_REPEATS = 3


def default_folds(n_dev_rows: int) -> int:
    return DEFAULT_FOLDS if n_dev_rows <= MAX_DEFAULT_BAGGED_ROWS else 1


def repeats_for(n_dev_rows: int) -> int:
    return TINY_REPEATS if n_dev_rows < TINY_ROWS else 1


def bagging_folds(requested: int | None, n_dev_rows: int, *, ordered: bool = False) -> tuple[int, int]:
    """(k, repeats) of the bagging for ``--folds`` (None: from the rows); (1, 1) means no bagging.
    Time-ordered folds (``ordered``) are not repeated."""
    k = default_folds(n_dev_rows) if requested is None else requested
    if k > 1 and n_dev_rows < 2 * k:
        return 1, 1
    return (k, 1 if ordered else repeats_for(n_dev_rows)) if k > 1 else (1, 1)


#: Cross-validated trials (``search --cv-folds``) by default below this many development rows: there one
#: validation split is a few hundred rows, too noisy for TPE and the pruner to rank trials on.
SEARCH_CV_MAX_ROWS = 2_000
SEARCH_CV_FOLDS = 5


def default_cv_folds(n_dev_rows: int) -> int:
    return SEARCH_CV_FOLDS if n_dev_rows < SEARCH_CV_MAX_ROWS else 1


def scaled_epochs(copy_epoch: int, max_epochs: int, n_search_train: int, n_train: int) -> tuple[int, int]:
    """(schedule length, epochs trained) of a copy of a trial trained on ``n_train`` rows.

    The trial was best after ``copy_epoch + 1`` of ``max_epochs`` planned epochs on ``n_search_train``
    rows (on its validation curve averaged over neighbouring epochs: ``train.copy_epoch``); the copy keeps
    both numbers of optimizer steps, so its learning-rate schedule follows the trial's, and it stops there.
    """
    ratio = n_search_train / max(n_train, 1)
    planned = max(1, round(max_epochs * ratio))
    return planned, min(planned, max(1, round((copy_epoch + 1) * ratio)))

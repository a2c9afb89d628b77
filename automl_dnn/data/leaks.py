"""Features that give the target away: a copy of it, a relabelling of the classes, a value that sorts the
two classes apart at one threshold, or a linear function of a regression target.

Such a column scores near perfectly in validation and is usually unknown when a prediction is wanted (a
"status" column filled in after the outcome). The search cannot tell, so the run names the column and
goes on; the user decides whether to drop it. Rows of the test split that stand in the training rows too,
feature for feature, flatter the held-out score the same way (``copied_rows_note``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEAK_ROWS = 50_000  # the check reads at most this many training rows (a seeded sample)
MIN_LEAK_ROWS = 30  # fewer rows prove nothing: a small table's column can name its classes by chance
MIN_THRESHOLD_ROWS = 100  # and one numeric column can sort a small table's two classes apart by chance
# a column with more distinct values than this share of the rows is an id (each row its own class), not a leak
MAX_LEVEL_SHARE = 0.2
LINEAR_CORRELATION = 0.9999  # |Pearson r| at or above this: the column is a linear function of the target
COPIED_SHARE = 0.01  # test rows that are copies of training rows: noted from this share of the test split on


def leak_notes(features: pd.DataFrame, y: np.ndarray, task: str, rows: np.ndarray, seed: int = 0) -> list[str]:
    """One note per feature column that determines the encoded target ``y`` on the training ``rows``."""
    if len(rows) > LEAK_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, LEAK_ROWS, replace=False))
    target = np.asarray(y)[rows]
    notes = []
    for name in features.columns:
        how = _gives_away(features[name].iloc[rows].reset_index(drop=True), target, task)
        if how:
            notes.append(f"column {str(name)!r} {how} in the training rows: a leak? Validation scores will "
                         f"look better than predictions can be where it is unknown; drop it if it is")
    return notes


def copied_rows_note(features: pd.DataFrame, train: np.ndarray, test: np.ndarray) -> list[str]:
    """A note when at least COPIED_SHARE of the ``test`` rows equal a ``train`` row in every feature.

    A table with repeated rows (a log that records one event twice, a table stacked onto itself) splits copies
    across the parts at random: the model has seen those test rows, so its held-out score is better than what
    new rows will get. The groups option keeps such copies on one side of the split.
    """
    if len(test) == 0 or len(train) == 0:
        return []
    hashes = pd.util.hash_pandas_object(features, index=False).to_numpy()  # a column at a time: no copy of the rows
    copied = int(np.isin(hashes[test], hashes[train]).sum())
    if copied < max(1, COPIED_SHARE * len(test)):
        return []
    return [f"{copied} of the {len(test)} test rows ({copied / len(test):.1%}) equal a training row in every feature: "
            "the held-out score flatters what new rows will get; --groups with a column that keeps copies together "
            "(or dropping the copies) makes it honest"]


def _gives_away(values: pd.Series, target: np.ndarray, task: str) -> str | None:
    known = values.notna().to_numpy()
    if known.sum() < MIN_LEAK_ROWS:
        return None
    values, target = values[known].reset_index(drop=True), target[known]
    if task == "regression":
        return _linear_in_target(values, target)
    if len(np.unique(target)) < 2:
        return None
    named = _levels_name_the_class(values, target)
    if named or task != "binary" or len(values) < MIN_THRESHOLD_ROWS:
        return named
    return _one_threshold(values, target)


def _levels_name_the_class(values: pd.Series, target: np.ndarray) -> str | None:
    codes, levels = pd.factorize(values)
    if len(levels) > MAX_LEVEL_SHARE * len(values):
        return None
    pairs = len(np.unique(codes.astype(np.int64) * (int(target.max()) + 1) + target.astype(np.int64)))
    return "names the class exactly (each of its values has one class)" if pairs == len(levels) else None


def _numbers(values: pd.Series) -> np.ndarray | None:
    """A numeric column's values as floats; None for text, dates and booleans."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return None
    return values.to_numpy(dtype=np.float64)


def _one_threshold(values: pd.Series, target: np.ndarray) -> str | None:
    numbers = _numbers(values)
    if numbers is None:
        return None
    order = np.argsort(numbers, kind="stable")
    classes, sorted_values = target[order], numbers[order]
    changes = np.flatnonzero(classes[1:] != classes[:-1])
    if len(changes) != 1 or sorted_values[changes[0]] == sorted_values[changes[0] + 1]:
        return None
    return f"sorts the two classes apart at one threshold ({sorted_values[changes[0] + 1]:g})"


def _linear_in_target(values: pd.Series, target: np.ndarray) -> str | None:
    numbers, target = _numbers(values), np.asarray(target, dtype=np.float64)
    if numbers is None or not np.isfinite(numbers).all():
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # values near 1e308 overflow the squares: r is NaN then
        if numbers.std() == 0 or target.std() == 0:
            return None
        r = float(np.corrcoef(numbers, target)[0, 1])
    return "is a linear function of the target" if abs(r) >= LINEAR_CORRELATION else None

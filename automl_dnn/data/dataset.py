"""A dataset ready for search: the rows with a target, the encoded target and a fixed, seeded split.

Every decision made on the user's behalf (dropped rows, the guessed task, the split) is a note.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from automl_dnn.data.builtins import builtin_info, is_builtin
from automl_dnn.data.leaks import copied_rows_note, leak_notes
from automl_dnn.data.preprocessing import FeaturePreprocessor, date_reading, formatted_numbers, parse_dates
from automl_dnn.data.reading import (DUPLICATES_ATTR, NOTES_ATTR, dedupe, duplicate_note, duplicated, numpy_backed,
                                     read_table)
from automl_dnn.data.target import (TargetEncoder, case_variants_note, check_target, extreme_target_note, infer_task,
                                    mixed_labels_as_text, stripped_labels)
from automl_dnn.errors import DataError, SourceTypeError
from automl_dnn.tasks import TASKS

MIN_ROWS = 10
PARTS = ("train", "valid", "test")


@dataclass
class Dataset:
    """Features and encoded target of the rows that have a target, with a fixed split."""

    task: str
    task_rule: str
    target: str
    features: pd.DataFrame
    y: np.ndarray
    target_encoder: TargetEncoder
    split: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # --groups: each row's group code (rows of a group never straddle a split)
    order: np.ndarray | None = None  # --time-column: each row's rank in time (the latest rows are the test split)

    def _part(self, part: str) -> np.ndarray:
        if part not in self.split:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        return self.split[part]

    def frame(self, part: str) -> pd.DataFrame:
        """The raw feature rows of one part, index reset to 0..n-1."""
        return self.features.iloc[self._part(part)].reset_index(drop=True)

    def labels(self, part: str) -> np.ndarray:
        """The encoded target of one part."""
        return self.y[self._part(part)]

    def fit_preprocessor(self, scaling: str = "standard", **options: Any) -> FeaturePreprocessor:
        """A FeaturePreprocessor learned on the training part only."""
        return FeaturePreprocessor(**options).fit(self.frame("train"), scaling)

    def fingerprint(self) -> str:
        """sha256 of the features, labels, target name and task: a resumed search must match it."""
        h = hashlib.sha256()
        h.update(f"{self.target}\0{self.task}\0{len(self.features)}\0".encode())
        h.update("\0".join(f"{c}:{self.features[c].dtype}" for c in self.features.columns).encode())
        h.update(pd.util.hash_pandas_object(self.features, index=False).to_numpy().tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        if self.groups is not None:
            h.update(np.ascontiguousarray(self.groups).tobytes())
        if self.order is not None:
            h.update(b"time\0" + np.ascontiguousarray(self.order).tobytes())
        return h.hexdigest()


#: Cells no column reads (Parquet's nested types). A tuple is one too when training, where its column is dropped; at
#: predict time it is hashable, an unseen level of a categorical column or a missing number.
NESTED_CELLS = (list, dict, set, np.ndarray)


def nested_cell(column: pd.Series, kinds: tuple[type, ...] = (*NESTED_CELLS, tuple)) -> Any:
    """The first cell of ``column`` that holds a list, array or record (of ``kinds``), or None."""
    if column.dtype != object or pd.api.types.infer_dtype(column, skipna=True) not in ("mixed", "unknown-array"):
        return None
    return next((v for v in column.dropna() if isinstance(v, kinds)), None)


def _refuse_complex_columns(df: pd.DataFrame) -> None:
    """A column of complex numbers (only a frame built in Python has one) is refused in one line: the preprocessing's
    cast to float dropped the imaginary parts, with nothing but numpy's ComplexWarning."""
    complex_columns = [str(c) for c in df.columns if df[c].dtype.kind == "c"]
    if complex_columns:
        raise DataError(f"column {complex_columns[0]!r} holds complex numbers, which the model cannot read; pass their "
                        "real and imaginary parts as two columns")


def _frame_from_source(source: Any, notes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """A copy with unique column names, so the user's frame is never modified; and the names that
    several columns had."""
    if isinstance(source, pd.DataFrame):
        names = [str(c) for c in source.columns]
        notes.extend(duplicate_note(names))
        df = numpy_backed(source).copy()
        df.columns = dedupe(names)
        return df.reset_index(drop=True), duplicated(names)
    if not isinstance(source, (str, os.PathLike)):
        raise SourceTypeError(f"the data must be a path, 'builtin:NAME' or a pandas DataFrame, got "
                              f"{type(source).__name__}; for arrays use automl_dnn.sklearn's AutoDNNClassifier or "
                              "AutoDNNRegressor, or pandas.DataFrame(X, columns=[...]) with the target as a column")
    df = read_table(source)
    notes.extend(df.attrs.get(NOTES_ATTR, []))
    return df.reset_index(drop=True), list(df.attrs.get(DUPLICATES_ATTR, []))


def _without_nested_columns(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Drop columns whose cells hold lists, arrays or dicts (Parquet's nested types): no model reads them,
    and they cannot be hashed or compared."""
    nested = [c for c in df.columns if nested_cell(df[c]) is not None]
    for name in nested:
        notes.append(f"dropped column {name!r}: its cells hold lists, arrays or records, not values; "
                     "flatten it into columns to use it")
    return df.drop(columns=nested) if nested else df


def _no_float16(y: pd.Series) -> pd.Series:
    """A float16 target as float32 (exactly): pandas has no float16 index, and the task's inference failed on one
    with "NotImplementedError: float16 indexes are not supported" (a frame cast down to save memory)."""
    return y.astype(np.float32) if y.dtype == np.float16 else y


def _resolve_target(df: pd.DataFrame, target: str | None, source: Any, duplicates: list[str]) -> str:
    """The target column's name; a wrong one gets close matches, so a typo is quick to fix. A name that
    several columns had is refused: which of them is the target cannot be known. Spaces around a header's
    name do not count, where only one column matches without them."""
    if target is None and is_builtin(source):
        return builtin_info(str(source)).target
    columns = [str(c) for c in df.columns]
    target = None if target is None else str(target)
    if target is None:
        raise DataError(f"no target column given; pass --target NAME (columns: {_list_names(columns)})")
    if target in duplicates:
        raise DataError(f"target {target!r} names more than one column of the table; rename the columns so "
                        f"that only the target is called {target!r}")
    if target in columns:
        return target
    spaced = [c for c in columns if c.strip() == target.strip()]
    if len(spaced) == 1:  # a header written 'a, b, y ' names 'y': predict matches such names the same way
        return spaced[0]
    lowered = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(str(target).lower(), list(lowered), n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close
            else f"columns: {_list_names(columns)}{_headerless_hint(columns)}")
    raise DataError(f"target column {target!r} not found; {hint}")


def _headerless_hint(columns: list[str]) -> str:
    """When some column names are numbers with a fraction (0.1257..., or 0.5.1 as pandas renames a repeated one),
    the first row is data, not a header: say so instead of only listing the 'names'."""
    values = [c for c in columns if re.fullmatch(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?(?:\.\d+)?", c)]
    if not values:
        return ""
    return (f" (names like {values[0]!r} look like data: does the file lack a header row? Add one line of column "
            "names at the top)")


def _list_names(names: list[str], k: int = 10) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > k else ""
    return ", ".join(repr(n) for n in names[:k]) + more


def _check_sizes(valid_size: float, test_size: float) -> None:
    if not (isinstance(valid_size, (int, float)) and 0 < valid_size < 1):
        raise DataError(f"valid_size must be between 0 and 1 (exclusive), got {valid_size!r}")
    if not (isinstance(test_size, (int, float)) and 0 <= test_size < 1):
        raise DataError(f"test_size must be in [0, 1), got {test_size!r}")
    if valid_size + test_size >= 1:
        raise DataError(f"valid_size + test_size must be below 1 to leave training rows, "
                        f"got {valid_size} + {test_size}")


def _part_sizes(n: int, valid_size: float, test_size: float) -> tuple[int, int, int]:
    """(train, valid, test) row counts of a split of ``n`` rows; too few training rows is the user's error."""
    n_test = math.ceil(test_size * n) if test_size > 0 else 0
    n_valid = math.ceil(valid_size * n)
    n_train = n - n_test - n_valid
    if n < MIN_ROWS or n_train < 2:
        raise DataError(f"too few rows: {n} rows with a target leave {n_train} for training "
                        f"(valid_size={valid_size}, test_size={test_size}); need at least {MIN_ROWS} "
                        f"rows and 2 training rows, so add rows or lower valid_size/test_size")
    return n_train, n_valid, n_test


def _split(y: pd.Series, task: str, valid_size: float, test_size: float, seed: int,
           notes: list[str]) -> dict[str, np.ndarray]:
    """Seeded train/valid/test row indices, stratified for classification when every class allows it."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_train, n_valid, n_test = _part_sizes(n, valid_size, test_size)
    idx = np.arange(n, dtype=np.int64)
    labels = y.to_numpy() if task != "regression" else None
    stratified = [labels is not None]

    def cut(rows: np.ndarray, size: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        if labels is not None:
            try:
                return train_test_split(rows, test_size=size, random_state=seed, stratify=labels[rows])
            except ValueError:  # a class with 1 row, or fewer rows in the part than classes
                stratified[0] = False
                notes.append(f"the {what} split is not stratified: some class has too few rows")
        return train_test_split(rows, test_size=size, random_state=seed)

    pinned = _rare_class_rows(labels, parts=3 if n_test else 2) if labels is not None else idx[:0]
    if n - len(pinned) - n_test - n_valid < 1:  # no training row would be left: split them like any row
        pinned = idx[:0]
    if len(pinned):
        notes.append(f"{len(pinned)} rows of classes with fewer rows than splits all stay in training, "
                     "so that every class is learned (no score measures those classes)")
        idx = np.setdiff1d(idx, pinned)
    rest, test = cut(idx, n_test, "test") if n_test else (idx, idx[:0])
    train, valid = cut(rest, n_valid, "validation")
    split = {"train": np.sort(np.concatenate([train, pinned])), "valid": np.sort(valid), "test": np.sort(test)}
    how = "stratified" if stratified[0] else "random"
    notes.append(f"split {n} rows into train {len(split['train'])} / valid {len(valid)} / test {len(test)} "
                 f"({how}, seed {seed})")
    return {k: v.astype(np.int64) for k, v in split.items()}


def _rare_class_rows(labels: np.ndarray, parts: int) -> np.ndarray:
    """Rows of the classes with fewer rows than ``parts``: a random split could leave a class out of training."""
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return np.flatnonzero(counts[inverse] < parts).astype(np.int64)


def load_dataset(source: str | os.PathLike | pd.DataFrame, *, target: str | None = None,
                 task: str = "auto", valid_size: float = 0.15, test_size: float = 0.15,
                 seed: int = 0, groups: str | None = None, time_column: str | None = None,
                 categorical: Sequence[str] = ()) -> Dataset:
    """Read the data, check and encode the target, and split the rows (seeded, reproducible).

    ``groups`` names a column whose rows belong together (a patient, a customer): it is no feature, and
    every split and fold keeps a group's rows on one side, so scores measure new groups.
    ``time_column`` orders the rows in time: the test split is the latest rows, validation the ones
    before them, and the folds are blocks of time, so scores measure the future. It stays a feature.
    ``categorical`` names columns of codes (zip codes, store numbers) to read as categories, not numbers.
    """
    if groups is not None and time_column is not None:
        raise DataError("--groups and --time-column cannot be combined; give one of them")
    if task not in ("auto", *TASKS):
        raise DataError(f"unknown task {task!r}; use auto, binary, multiclass or regression")
    _check_sizes(valid_size, test_size)
    notes: list[str] = []
    df, duplicates = _frame_from_source(source, notes)
    df = _without_nested_columns(df, notes)
    _refuse_complex_columns(df)
    target = _resolve_target(df, target, source, duplicates)
    y_all, n_stripped = stripped_labels(_no_float16(df[target]))
    if n_stripped:
        notes.append(f"{n_stripped} labels of target {target!r} had spaces around them (or were blank); read them "
                     "without (a blank one as missing)")
    numbers = formatted_numbers(y_all) if task in ("auto", "regression") else None
    if numbers is not None:
        y_all = numbers[0]
        notes.append(f"target {target!r} holds text but {numbers[1]}; read it as numbers")
    y_all, mixed = mixed_labels_as_text(y_all)
    if mixed:
        notes.append(f"target {target!r} mixes text and other values (such as numbers); read every label as text")
    notes.extend(case_variants_note(y_all, target))
    keep = y_all.notna().to_numpy()
    if not keep.any():
        check_target(y_all, task)
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows with a missing target {target!r}")
    features = df.loc[keep].drop(columns=[target]).reset_index(drop=True)
    codes = order = None
    if groups is not None:
        codes = _group_codes(features, groups, target, notes)
        features = features.drop(columns=[groups])
    if time_column is not None:
        order = _time_order(features, time_column, target)
    if features.shape[1] == 0:
        raise DataError(f"the table has no feature columns besides the target {target!r}; add features")
    features = _as_categories(features, categorical, target, groups)
    y = y_all[keep].reset_index(drop=True)
    task, rule = _choose_task(y, task, target, source)
    y = check_target(y, task).reset_index(drop=True)
    notes.append(f"task {task}: {rule}")
    if codes is not None:
        split = _group_split(codes, valid_size, test_size, seed, groups, notes)
    elif order is not None:
        split = _time_split(order, valid_size, test_size, time_column, notes)
    else:
        split = _split(y, task, valid_size, test_size, seed, notes)
    encoder = TargetEncoder().fit(y if task != "regression" else y.iloc[split["train"]], task, bounded=order is None)
    if task == "regression":
        notes.extend(extreme_target_note(y.iloc[split["train"]], target))
    encoded = encoder.encode(y)
    notes.extend(leak_notes(features, encoded, task, split["train"], seed=seed))
    if codes is None and order is None:  # groups keep copies together; a time split's copies are the future's
        notes.extend(copied_rows_note(features, split["train"], split["test"]))
    return Dataset(task=task, task_rule=rule, target=target, features=features, y=encoded,
                   target_encoder=encoder, split=split, notes=notes, groups=codes, order=order)


def _check_in_table(features: pd.DataFrame, column: str, option: str) -> None:
    """A column an option names must be a feature column of the table; the error lists the ones there are."""
    if column not in features.columns:
        raise DataError(f"{option} {column!r} is not in the table; columns: "
                        f"{_list_names(list(map(str, features.columns)))}")


def _as_categories(features: pd.DataFrame, names: Sequence[str], target: str, groups: str | None) -> pd.DataFrame:
    """The ``--categorical`` columns as pandas categories: codes that are numbers (zip codes, store numbers) would
    be read as quantities, and a net cannot learn a value per code from its magnitude (a per-code signal: ROC-AUC
    0.71 as numbers, 0.81 as categories). One name given as a string is that column, not its letters."""
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name == target:
            raise DataError(f"--categorical {name!r} is the target; name feature columns")
        if name == groups:
            raise DataError(f"--categorical {name!r} is the --groups column, which is no feature")
        _check_in_table(features, name, "--categorical")
    if not names:
        return features
    features = features.copy()
    for name in dict.fromkeys(names):
        features[name] = features[name].astype("category")
    return features


def _time_order(features: pd.DataFrame, column: str, target: str) -> np.ndarray:
    """Each row's rank in time (ties keep the table's order); numbers, or anything pandas reads as a date."""
    if column == target:
        raise DataError(f"--time-column {column!r} is the target; name the column that orders the rows in time")
    _check_in_table(features, column, "--time-column")
    values = features[column]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        keys = pd.to_numeric(values, errors="coerce").astype("float64")
    else:  # one format for the whole column, as the preprocessor reads dates (05/07 day first beside 25/12)
        stamps, _ = parse_dates(values, date_reading(values))
        keys = (stamps - pd.Timestamp(0)) / pd.Timedelta(seconds=1)  # NaT: NaN
    missing = int(keys.isna().sum())
    if missing:
        raise DataError(f"--time-column {column!r} has {missing} rows with a missing or unreadable time; "
                        "fill or drop them")
    ranks = np.empty(len(keys), dtype=np.int64)
    ranks[np.argsort(keys.to_numpy(), kind="stable")] = np.arange(len(keys))
    return ranks


def _time_split(order: np.ndarray, valid_size: float, test_size: float, column: str,
                notes: list[str]) -> dict[str, np.ndarray]:
    """Train (earliest) / valid / test (latest) row indices, cut in time order."""
    n = len(order)
    n_train, n_valid, n_test = _part_sizes(n, valid_size, test_size)
    by_time = np.argsort(order, kind="stable")
    train, valid, test = by_time[:n_train], by_time[n_train:n_train + n_valid], by_time[n_train + n_valid:]
    notes.append(f"split {n} rows in time order of {column!r} into train {n_train} (earliest) / valid {n_valid} / "
                 f"test {n_test} (latest)")
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def _group_codes(features: pd.DataFrame, column: str, target: str, notes: list[str]) -> np.ndarray:
    """Each row's group as an integer code; a missing value is a group of its own (said in a note)."""
    if column == target:
        raise DataError(f"--groups {column!r} is the target; name the column that groups the rows")
    _check_in_table(features, column, "--groups column")
    codes, _ = pd.factorize(features[column], use_na_sentinel=False)
    n_missing = int(features[column].isna().sum())
    if n_missing:
        notes.append(f"{n_missing} rows with a missing --groups {column!r} form one group of their own")
    return codes.astype(np.int64)


def _group_split(codes: np.ndarray, valid_size: float, test_size: float, seed: int, column: str,
                 notes: list[str]) -> dict[str, np.ndarray]:
    """Train/valid/test row indices with whole groups on each side (seeded; sizes are in groups)."""
    from sklearn.model_selection import GroupShuffleSplit

    n_groups = len(np.unique(codes))
    parts = 3 if test_size > 0 else 2
    if n_groups < parts:
        raise DataError(f"--groups {column!r} has {n_groups} group(s); the train/valid/test split needs at least "
                        f"{parts} groups")
    idx = np.arange(len(codes), dtype=np.int64)

    def cut(rows: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
        splitter = GroupShuffleSplit(n_splits=1, test_size=size, random_state=seed)
        keep, out = next(splitter.split(rows, groups=codes[rows]))
        return rows[keep], rows[out]

    rest, test = cut(idx, test_size) if test_size > 0 else (idx, idx[:0])
    train, valid = cut(rest, valid_size / (1 - test_size))
    if len(train) < 2:
        raise DataError(f"--groups {column!r}: the split leaves {len(train)} training rows; add groups or lower "
                        "valid_size/test_size")
    notes.append(f"split {len(codes)} rows into train {len(train)} / valid {len(valid)} / test {len(test)} by "
                 f"the {n_groups} groups of {column!r} (seed {seed})")
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def _choose_task(y: pd.Series, task: str, target: str, source: Any) -> tuple[str, str]:
    """The task and why: the user's choice, a built-in dataset's known task, else the inferred one."""
    if task != "auto":
        return task, f"set by the user (--task {task})"
    if is_builtin(source):
        info = builtin_info(str(source))
        if target == info.target:
            return info.task, f"the built-in dataset {info.name!r} is a {info.task} task"
    return infer_task(y)

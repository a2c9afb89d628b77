"""The target: infer the task, refuse a target the task cannot use, and encode it for training.

Task inference (``infer_task``), first rule that fires:

1. a boolean target -> ``binary``;
2. text or categorical values -> ``binary`` with 2 distinct values, else ``multiclass``;
3. numbers with exactly 2 distinct values -> ``binary``;
4. numbers with a non-integer value -> ``regression``;
5. integers with at most ``max(2, min(20, n // 10))`` distinct values (so each class would have about
   ten rows or more) -> ``multiclass``, otherwise ``regression``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from automl_dnn.errors import DataError, ModelFormatError
from automl_dnn.tasks import TASKS

#: The largest magnitude a number keeps: the nets and XGBoost compute in float32, where a larger finite value is an
#: infinity (XGBoost then refuses its matrix or its labels). A feature's such cells read as missing, as infinities
#: do (``FeaturePreprocessor``); a target with them is refused.
FLOAT32_MAX = float(np.finfo(np.float32).max)
BEYOND_FLOAT32 = "beyond +-3.4e38 (float32's range)"


def _distinct(y: pd.Series) -> pd.Index:
    return pd.Index(pd.unique(y.dropna()))


def _numeric_or_none(y: pd.Series) -> pd.Series | None:
    """The values as float64 when every non-missing one is a number, else None."""
    if pd.api.types.is_bool_dtype(y) or isinstance(y.dtype, pd.CategoricalDtype):
        return None
    if pd.api.types.is_numeric_dtype(y):
        return pd.Series(y.to_numpy(dtype="float64", na_value=np.nan), index=y.index, name=y.name)
    num = pd.to_numeric(y, errors="coerce")
    if num.notna().sum() == y.notna().sum():
        return num.astype("float64")
    return None


def _plain_values(y: pd.Series) -> pd.Series:
    """A target asked to be a regression's as plain values: booleans as 0 / 1 (as scikit-learn's regressors read
    them) and categories as their own values. Task inference reads both as classes; asked for a regression, the
    refusal said "text values like ;", naming none, as every value was a number to pandas."""
    if pd.api.types.is_bool_dtype(y):
        return y.astype("float64")
    if isinstance(y.dtype, pd.CategoricalDtype):
        return y.astype(object)
    return y


def infer_task(y: pd.Series) -> tuple[str, str]:
    """Guess the task from the target's values (the rule is in the module docstring).

    Returns the task and the rule that fired, in words, so the user can see why and override it.
    """
    values = y.dropna()
    _refuse_times(values, y.name)
    n_unique = len(_distinct(values))
    if n_unique < 2:
        check_target(y, "auto")  # raises the all-missing / single-value error
    if pd.api.types.is_bool_dtype(values):
        return "binary", "the target is boolean"
    num = _numeric_or_none(values)
    if num is None:
        task = "binary" if n_unique == 2 else "multiclass"
        return task, f"the target holds text/categories with {n_unique} distinct values"
    if n_unique == 2:
        return "binary", "the target has exactly 2 distinct values"
    if not np.all(np.isfinite(num)) or not np.all(np.mod(num, 1) == 0):
        return "regression", "the target has non-integer numbers (use --task multiclass to override)"
    limit = max(2, min(20, len(values) // 10))
    if n_unique <= limit:
        return "multiclass", (f"the target has {n_unique} distinct integers, at most "
                              f"max(2, min(20, rows/10)) = {limit} (use --task regression to override)")
    return "regression", (f"the target has {n_unique} distinct integers, more than "
                          f"max(2, min(20, rows/10)) = {limit} (use --task multiclass to override)")


def stripped_labels(y: pd.Series) -> tuple[pd.Series, int]:
    """Text labels without surrounding spaces (a blank one is missing), and how many cells changed: 'yes ' and
    'yes' are one class, not two (a padded spreadsheet export made a binary target a 4-class one)."""
    if not (pd.api.types.is_object_dtype(y) or pd.api.types.is_string_dtype(y)):
        return y, 0
    text = y.map(lambda v: v.strip() if isinstance(v, str) else v)
    text = text.mask(text.map(lambda v: isinstance(v, str) and not v))
    changed = int((y.notna() & (text.isna() | (text.astype(object) != y.astype(object)))).sum())
    return (text, changed) if changed else (y, 0)


def mixed_labels_as_text(y: pd.Series) -> tuple[pd.Series, bool]:
    """Labels of several kinds in one object column (1 and 'no': a frame built in Python, a spreadsheet's cells) as
    their text, so that they sort into classes (the split's np.unique ended with "TypeError: '<' not supported between
    instances of 'int' and 'str'"); and whether they were. Numbers of any type (1, 2.5, True) are one kind."""
    if not pd.api.types.is_object_dtype(y):
        return y, False
    kinds = {"text" if isinstance(v, str) else "number" if isinstance(v, numbers.Number) else type(v).__name__
             for v in pd.unique(y.dropna())}
    if len(kinds) < 2:
        return y, False
    return y.map(lambda v: v if missing_value(v) else str(v)), True


def missing_value(value: Any) -> bool:
    """Whether one cell of an object column is missing: None, NaN, pd.NA or pd.NaT (``pd.isna`` would answer a
    list cell with an array)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT


def case_variants_note(y: pd.Series, name: Any) -> list[str]:
    """A note naming text labels that differ only in case ('Yes' and 'yes'). They stay apart ('a' and 'A' may be two
    classes), but are more often one class typed two ways, which made a binary target a 3-class one unsaid."""
    variants: dict[str, list[str]] = {}
    for label in pd.unique(y.dropna()):
        if isinstance(label, str):
            variants.setdefault(label.casefold(), []).append(label)
    clashes = [sorted(group) for group in variants.values() if len(group) > 1]
    if not clashes:
        return []
    shown = "; ".join(" and ".join(map(repr, group)) for group in clashes[:3]) + ("; ..." if len(clashes) > 3 else "")
    return [f"labels of target {name!r} that differ only in case are different classes: {shown}; "
            "if they are one class, write them alike"]


def _show(values: Any, k: int = 3) -> str:
    return ", ".join(repr(to_scalar(v)) for v in list(values)[:k])


def check_target(y: pd.Series, task: str) -> pd.Series:
    """Refuse a target the task cannot use; return it without missing values (numeric for regression)."""
    name = y.name
    if task not in ("auto", *TASKS):
        raise DataError(f"unknown task {task!r}; use auto, binary, multiclass or regression")
    values = y.dropna()
    _refuse_times(values, name)
    if len(values) == 0:
        raise DataError(f"target {name!r} has no values (all {len(y)} rows are missing); "
                        f"choose another column with --target")
    distinct = _distinct(values)
    if len(distinct) < 2:
        raise DataError(f"target {name!r} has a single value {_show(distinct, 1)}; "
                        f"a model needs at least two different values")
    if task == "regression":
        num = _numeric_or_none(_plain_values(values))
        if num is None:
            text = values[pd.to_numeric(values.astype(object), errors="coerce").isna()]
            raise DataError(f"--task regression needs numbers, but target {name!r} has text values "
                            f"like {_show(text.unique(), 1)}; use --task binary or --task multiclass")
        if not np.all(np.isfinite(num)):
            raise DataError(f"target {name!r} has infinite values; remove those rows or fix them")
        if np.abs(num).max() > FLOAT32_MAX:
            raise DataError(f"target {name!r} has values {BEYOND_FLOAT32}; rescale the target "
                            "(e.g. divide it by a power of ten) or remove those rows")
        return num
    if task == "binary" and len(distinct) > 2:
        raise DataError(f"--task binary needs exactly 2 classes, but target {name!r} has "
                        f"{len(distinct)} (e.g. {_show(distinct)}); use --task multiclass")
    if task == "multiclass" and too_many_classes(len(distinct), len(values)):
        raise DataError(f"target {name!r} has {len(distinct)} distinct values in {len(values)} rows, "
                        f"too many to be classes; use --task regression")
    return values


#: A regression target value this many interquartile ranges from the median is extreme: heavy-tailed targets that
#: train well (prices, incomes, counts) reach tens of IQRs; a few values hundreds of IQRs out move the mean that RMSE
#: asks for by more than the other rows' spread (0.3 % of california_housing's rows set to 1e8, 690 IQRs out: the
#: nets' RMSE on the clean test rows 282,000, XGBoost's and HistGradientBoosting's as bad).
EXTREME_IQRS = 300.0


def extreme_targets(values: np.ndarray) -> np.ndarray:
    """Which regression targets lie over EXTREME_IQRS interquartile ranges from the median, when they are a few
    (at most 1 % of at least 20 values; more are the target's own shape): all False otherwise."""
    values = np.asarray(values, dtype=np.float64)
    none = np.zeros(len(values), dtype=bool)
    if len(values) < 20:
        return none
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    far = np.abs(values - median) > EXTREME_IQRS * (q3 - q1) if q3 > q1 else none
    return far if far.mean() <= 0.01 else none


def extreme_target_note(y: pd.Series, name: Any) -> list[str]:
    """A note when a few regression targets lie extremely far out (a sentinel such as 9999999, a unit slip): they
    dominate the models' squared-error losses and RMSE; an MAE study fits the median, which they do not move."""
    values = pd.to_numeric(y, errors="coerce").dropna().to_numpy(dtype=np.float64)
    far = extreme_targets(values)
    if not far.any():
        return []
    return [f"target {name!r}: {int(far.sum())} training value{'s' if far.sum() > 1 else ''} over "
            f"{EXTREME_IQRS:,.0f} interquartile ranges from the median (e.g. {_show(values[far], 1)}) dominate RMSE "
            "and the mean it asks for; remove or fix them if they are errors, or use --metric mae (the median)"]


def too_many_classes(n_distinct: int, n_rows: int) -> bool:
    """More distinct values than classes can be (under two rows each): a regression target."""
    return n_distinct > max(2, n_rows // 2)


def _refuse_times(values: pd.Series, name: Any) -> None:
    """Dates and durations would be read as their integer nanoseconds: a regression on 1.6e18 that predicts
    timestamps no one asked for."""
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_timedelta64_dtype(values):
        raise DataError(f"target {name!r} holds dates or durations ({values.dtype}); convert it to a number "
                        f"(e.g. days since a start date) or to text labels")


def to_scalar(v: Any) -> Any:
    """A JSON-able Python scalar: numpy scalars via .item(), integer-valued floats as ints."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _sorted_labels(values: pd.Series) -> list:
    labels = list({to_scalar(v) for v in pd.unique(values)})
    try:
        return sorted(labels)
    except TypeError:  # mixed types (text and numbers): order by their text
        return sorted(labels, key=lambda v: (type(v).__name__, str(v)))


class TargetEncoder:
    """Classes <-> indices 0..K-1 (sorted labels), or regression values <-> standardized float32.

    What ``fit`` learns ends in ``_`` (``task_``, ``classes_``, ``mean_``, ``std_``, and a regression's
    training range ``low_``, ``high_``); ``to_dict`` keeps the plain keys that saved models hold.
    """

    def __init__(self) -> None:
        self.task_: str = ""
        self.classes_: list = []
        self.mean_: float = 0.0
        self.std_: float = 1.0
        self.low_: float | None = None
        self.high_: float | None = None

    def fit(self, y: pd.Series | np.ndarray, task: str, *, bounded: bool = True) -> TargetEncoder:
        """Learn the classes (classification) or the mean, std and range (regression).

        ``bounded=False`` keeps no range, so nets' values are never clipped: a time-ordered split forecasts
        rows whose values may lie beyond every training row's.
        """
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; use binary, multiclass or regression")
        y = pd.Series(y).dropna()
        self.task_ = task
        self.low_ = self.high_ = None
        if task == "regression":
            values = y.to_numpy(dtype="float64")
            self.classes_, self.mean_, self.std_ = [], float(values.mean()), _scale(float(values.std()))
            if bounded:
                self.low_, self.high_ = float(values.min()), float(values.max())
        else:
            self.classes_, self.mean_, self.std_ = _sorted_labels(y), 0.0, 1.0
        return self

    def clip(self, values: np.ndarray) -> np.ndarray:
        """Regression values held to the training targets' range, as RealMLP-TD holds its outputs: a net
        extrapolates linearly beyond the rows it saw (a negative price, a house above a censored cap), where
        no training row says the target goes."""
        values = np.asarray(values, dtype=np.float64)
        if self.task_ != "regression" or self.low_ is None or self.high_ is None:
            return values
        return np.clip(values, self.low_, self.high_)

    @property
    def n_classes_(self) -> int:
        return len(self.classes_)

    def encode(self, y: pd.Series | np.ndarray) -> np.ndarray:
        """Class indices as int64, or standardized values as float32."""
        y = pd.Series(y)
        if self.task_ == "regression":
            values = pd.to_numeric(y, errors="coerce").to_numpy(dtype="float64")
            return ((values - self.mean_) / self.std_).astype(np.float32)
        lookup = {label: i for i, label in enumerate(self.classes_)}
        codes, uniques = pd.factorize(y, use_na_sentinel=True)
        if (codes < 0).any():
            raise DataError("the target has missing values; drop those rows before encoding")
        mapped = []
        for u in uniques:
            key = to_scalar(u)
            if key not in lookup:
                raise DataError(f"label {key!r} was not seen when the classes were learned "
                                f"(known: {_show(self.classes_, 10)})")
            mapped.append(lookup[key])
        return np.asarray(mapped, dtype=np.int64)[codes]

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Back to the user's labels (from indices or (n, K) probabilities) or original scale."""
        values = np.asarray(values)
        if self.task_ == "regression":
            return values.astype(np.float64) * self.std_ + self.mean_
        if values.ndim == 2:
            values = values.argmax(axis=1)
        mixed = len({type(c) for c in self.classes_}) > 1
        labels = np.asarray(self.classes_, dtype=object if mixed else None)
        return labels[values.astype(np.int64)]

    def to_dict(self) -> dict:
        """The saved-model JSON; its keys have no trailing underscore, so older models keep loading."""
        return {"task": self.task_, "classes": list(self.classes_), "mean": self.mean_, "std": self.std_,
                "low": self.low_, "high": self.high_}

    @classmethod
    def from_dict(cls, d: dict) -> TargetEncoder:
        enc = cls()
        try:
            enc.task_, enc.classes_ = d["task"], list(d["classes"])
            enc.mean_, enc.std_ = float(d["mean"]), float(d["std"])
            enc.low_, enc.high_ = _bound_or_none(d.get("low")), _bound_or_none(d.get("high"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"target encoder data is incomplete ({exc!r}); "
                                   f"re-export the model") from None
        if enc.task_ not in TASKS:
            raise ModelFormatError(f"target encoder has unknown task {enc.task_!r}; re-export the model")
        if enc.low_ is not None and enc.high_ is not None and not enc.low_ <= enc.high_:
            raise ModelFormatError(f"target encoder's range [{enc.low_}, {enc.high_}] is empty; re-export the model")
        return enc


def _bound_or_none(value: Any) -> float | None:
    """A saved range end (models saved before session 24 have none: their nets' values are not clipped)."""
    if value is None:
        return None
    bound = float(value)
    if not math.isfinite(bound):
        raise ValueError(f"range end {value!r} is not a finite number")
    return bound


def _scale(value: float) -> float:
    return value if value > 0 and math.isfinite(value) else 1.0


def _robust_centre_scale(t: np.ndarray) -> tuple[float, float]:
    """The median and interquartile range / 1.349 (the standard deviation when the values are normal); the
    standard deviation when half the values or more are tied (an IQR of 0)."""
    q1, median, q3 = np.percentile(t, [25, 50, 75])
    iqr = (q3 - q1) / 1.349
    return float(median), _scale(float(iqr) if iqr > 0 else float(t.std()))


def net_values(pred: np.ndarray, encoder: TargetEncoder, target: TargetTransform | None = None) -> np.ndarray:
    """A regression net's outputs on the original scale, within the training range (``TargetEncoder.clip``)."""
    values = target.inverse(pred) if target is not None else encoder.decode(pred)
    return encoder.clip(values)


TARGET_TRANSFORMS = ("none", "log1p", "quantile")
TARGET_QUANTILES = 1000  # points of the stored empirical distribution of a quantile transform
_QUANTILE_EPS = 1e-7  # probabilities kept this far from 0 and 1, so the normal scores stay finite


class TargetTransform:
    """A regression target on the scale a net trains on: transformed, then standardized (what ``fit`` saw).

    ``none`` is the plain standardization; ``log1p`` takes log(1 + y) first, for a positive, skewed target
    (refused, falling back to ``none``, when a training value is <= -1); ``quantile`` maps y through the
    training rows' empirical distribution to a standard normal. ``forward`` and ``inverse`` are exact
    inverses on the training range; ``inverse`` of a ``quantile`` transform clips to it.

    ``robust`` centres and scales the transformed target by its median and its interquartile range / 1.349 (a
    normal's standard deviation), not its mean and standard deviation: an MAE study's nets estimate the
    median, and a few extreme targets (a 1e9 sentinel) would otherwise set a scale on which the other rows'
    differences vanish (california_housing with 0.3 % such rows: MAE 80,143 -> 41,911 on the clean test rows).
    Saved as the same centre and scale, so a model loads as any other.
    """

    def __init__(self, kind: str = "none", *, robust: bool = False) -> None:
        if kind not in TARGET_TRANSFORMS:
            raise ValueError(f"target transform must be one of {TARGET_TRANSFORMS}, got {kind!r}")
        self.kind = kind
        self.robust = robust
        self.kind_ = kind
        self.mean_, self.std_ = 0.0, 1.0
        self.quantiles_: list[float] = []

    def fit(self, y: np.ndarray) -> TargetTransform:
        """Learn from the training targets (original scale)."""
        y = np.asarray(y, dtype=np.float64)
        self.kind_ = "none" if self.kind == "log1p" and not np.all(y > -1.0) else self.kind
        if self.kind_ == "quantile":
            q = np.percentile(y, np.linspace(0, 100, min(TARGET_QUANTILES, max(2, len(y)))))
            self.quantiles_ = [float(v) for v in np.maximum.accumulate(q)]
        t = self._transform(y)
        self.mean_, self.std_ = _robust_centre_scale(t) if self.robust else (float(t.mean()), _scale(float(t.std())))
        return self

    def forward(self, y: np.ndarray) -> np.ndarray:
        """Original values -> the standardized training scale (float32)."""
        return ((self._transform(np.asarray(y, dtype=np.float64)) - self.mean_) / self.std_).astype(np.float32)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        """The training scale -> original values (float64)."""
        t = np.asarray(z, dtype=np.float64) * self.std_ + self.mean_
        if self.kind_ == "log1p":
            return np.expm1(t)
        if self.kind_ == "quantile":
            from scipy.special import ndtr  # lazy, as the package's other SciPy use: start-up time

            q = np.asarray(self.quantiles_)
            return np.interp(ndtr(t), np.linspace(0.0, 1.0, len(q)), q)
        return t

    def slope(self, z: np.ndarray) -> np.ndarray:
        """d inverse / dz at z: turns a spread on the training scale into one on the original scale."""
        z = np.asarray(z, dtype=np.float64)
        h = 1e-3
        return np.abs(self.inverse(z + h) - self.inverse(z - h)) / (2 * h)

    def _transform(self, y: np.ndarray) -> np.ndarray:
        if self.kind_ == "log1p":
            return np.log1p(y)
        if self.kind_ == "quantile":
            from scipy.special import ndtri

            q = np.asarray(self.quantiles_)
            p = np.linspace(0.0, 1.0, len(q))
            u = 0.5 * (np.interp(y, q, p) - np.interp(-y, -q[::-1], -p[::-1]))  # ties map to their middle
            return ndtri(np.clip(u, _QUANTILE_EPS, 1 - _QUANTILE_EPS))
        return y

    def to_dict(self) -> dict:
        return {"kind": self.kind_, "mean": self.mean_, "std": self.std_, "quantiles": list(self.quantiles_),
                "robust": self.robust}

    @classmethod
    def from_dict(cls, d: dict) -> TargetTransform:
        try:
            t = cls(str(d["kind"]), robust=bool(d.get("robust", False)))
            t.mean_, t.std_, t.quantiles_ = float(d["mean"]), float(d["std"]), [float(v) for v in d["quantiles"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"target transform data is invalid ({exc!r}); re-export the model") from None
        if t.kind_ == "quantile" and len(t.quantiles_) < 2:
            raise ModelFormatError("a quantile target transform needs its quantiles; re-export the model")
        return t

"""Tabular data in, clean numbers out: read, infer the task, encode the target, split, preprocess.

Everything a user can get wrong here raises ``DataError`` with a one-line message. Every decision
made on the user's behalf (a dropped column, a guessed task, a fallback) is recorded as a note.

Task inference (``infer_task``), first rule that fires:

1. a boolean target -> ``binary``;
2. text or categorical values -> ``binary`` with 2 distinct values, else ``multiclass``;
3. numbers with exactly 2 distinct values -> ``binary``;
4. numbers with a non-integer value -> ``regression``;
5. integers with at most ``max(2, min(20, n // 10))`` distinct values (so each class would have about
   ten rows or more) -> ``multiclass``, otherwise ``regression``.

Feature preprocessing (``FeaturePreprocessor``), learned on the training rows only and stored as plain
JSON (no pickle, no scikit-learn objects):

- numbers: +-inf and unreadable cells become missing; missing values get the training median plus a
  ``NAME__missing`` indicator column (only for columns with missing values in training); then
  ``standard`` (mean/std), ``quantile`` (to a standard normal through stored quantiles) or ``none``;
- text: mostly numbers (>= 95 %) -> numbers; mostly dates (>= 90 % of cells, each holding digits like
  a date) -> dates; otherwise categories;
- dates -> ``NAME__year``, ``__month``, ``__day``, ``__day_of_week``, ``__day_of_year`` (and ``__hour``
  when times are not all midnight), parts constant in training left out, plus ``NAME__missing``;
- categories (booleans, text, pandas ``category``) -> one-hot ``NAME=LEVEL``; missing cells are the
  level ``__missing__``; levels seen in fewer than ``min_frequency`` training rows (default
  ``max(2, min(5, n // 100), ceil(n / 1000))``) or beyond the ``max_categories`` (64) most frequent
  share the level ``__rare__``; values outside the learned levels go to ``__rare__`` when the column
  has it, else to all zeros;
- dropped with a note: all-missing columns, constant columns, ID-like columns (at least 20 rows, all
  values different and either integers that are sorted or fill most of their range, or text keys).
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import hashlib
import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl_dnn.errors import DataError, ModelFormatError

TASKS = ("binary", "multiclass", "regression")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_FORMATS = ".csv, .tsv, .txt, .parquet, .pq, and gzip-compressed text (.csv.gz, .tsv.gz, ...)"
NOTES_ATTR = "automl_dnn_notes"  # DataFrame.attrs key carrying read_table's notes to load_dataset
MISSING_LEVEL = "__missing__"
RARE_LEVEL = "__rare__"
DATE_PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour")
MIN_ROWS = 10
ID_MIN_ROWS = 20  # below this, "every value is different" says nothing about a column being a key
DEFAULT_MAX_BYTES = 4 * 1024**3
QUANTILE_EPS = 1e-7  # clip before ndtri: +-5.2 standard deviations at most (scikit-learn's bound)
FORMAT_NAME = "automl_dnn.FeaturePreprocessor"
FORMAT_VERSION = 1

_DATE_LIKE = re.compile(r"\d{4}|\d{1,2}[-/.]\d{1,2}")


# ----------------------------------------------------------------------------------------------
# Built-in datasets


@dataclass(frozen=True)
class BuiltinInfo:
    """A dataset bundled with scikit-learn, so demos and tests need no download."""

    name: str
    task: str
    target: str
    description: str
    loader: Callable[[], pd.DataFrame]


def _sklearn_frame(loader_name: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        return getattr(datasets, loader_name)(as_frame=True).frame

    return load


BUILTINS: dict[str, BuiltinInfo] = {
    "breast_cancer": BuiltinInfo(
        "breast_cancer", "binary", "target",
        "Wisconsin breast cancer: malignant (0) or benign (1) from 30 cell measurements (569 rows)",
        _sklearn_frame("load_breast_cancer"),
    ),
    "digits": BuiltinInfo(
        "digits", "multiclass", "target",
        "8x8 images of handwritten digits 0-9, one column per pixel (1797 rows)",
        _sklearn_frame("load_digits"),
    ),
    "wine": BuiltinInfo(
        "wine", "multiclass", "target",
        "Wine cultivar (3 classes) from 13 chemical measurements (178 rows)",
        _sklearn_frame("load_wine"),
    ),
    "diabetes": BuiltinInfo(
        "diabetes", "regression", "target",
        "Diabetes progression after one year from 10 baseline measurements (442 rows)",
        _sklearn_frame("load_diabetes"),
    ),
}


def _builtin(source: str) -> BuiltinInfo:
    name = source.split(":", 1)[1].strip().lower()
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}; use one of: {', '.join(sorted(BUILTINS))}")
    return BUILTINS[name]


def _is_builtin(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith("builtin:")


# ----------------------------------------------------------------------------------------------
# Reading tables


def read_table(source: str | os.PathLike) -> pd.DataFrame:
    """Read ``builtin:NAME`` or a CSV/TSV/TXT (optionally gzipped) or Parquet file.

    Text files: the delimiter is sniffed among comma, semicolon, tab and pipe (or taken from Excel's
    ``sep=X`` first line); the encoding is UTF-8 (a BOM is allowed), UTF-16 with a BOM, else latin-1;
    a semicolon file whose numbers all use decimal commas is read with ``,`` as the decimal mark.
    Binary files (ZIP/xlsx, xls, PDF, SQLite, anything with control bytes) and HTML pages are refused.
    Notes about the reading (e.g. renamed duplicate columns) are in ``df.attrs["automl_dnn_notes"]``.
    The file is only read, never written.
    """
    if _is_builtin(source):
        df = _builtin(str(source)).loader()
        df.attrs[NOTES_ATTR] = []
        return df
    path = Path(source)
    kind = _check_file(path)
    notes: list[str] = []
    df = _read_parquet(path, notes) if kind == "parquet" else _read_text(path, notes)
    if len(df) == 0:
        raise DataError(f"data file '{path}' has column names but no rows; add data rows to it")
    df.attrs[NOTES_ATTR] = notes
    return df


def _check_file(path: Path) -> str:
    """Refuse missing, directory, empty and unsupported files; return 'parquet' or 'text'."""
    if not path.exists():
        raise DataError(f"data file '{path}' not found; check the path, or use builtin:NAME "
                        f"({', '.join(sorted(BUILTINS))})")
    if path.is_dir():
        raise DataError(f"'{path}' is a directory, not a data file; pass a file inside it")
    name = path.name.lower()
    if name.endswith(".gz"):
        kind = "text"
    elif name.endswith(PARQUET_SUFFIXES):
        kind = "parquet"
    elif name.endswith(TEXT_SUFFIXES):
        kind = "text"
    else:
        raise DataError(f"unsupported file type '{path.suffix or path.name}' for '{path}'; "
                        f"use {SUPPORTED_FORMATS}")
    if path.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty (0 bytes); pass a file with a header and rows")
    return kind


def _dedupe(names: list[str]) -> list[str]:
    """Make names unique the way pandas does for CSV headers: ``a``, ``a.1``, ``a.2``."""
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 0
        while new in seen:
            k += 1
            new = f"{name}.{k}"
        seen.add(new)
        out.append(new)
    return out


def _duplicate_note(names: list[str]) -> list[str]:
    dups = sorted({n for n in names if names.count(n) > 1})
    if not dups:
        return []
    return [f"duplicate column names {', '.join(repr(d) for d in dups)} were made unique "
            f"by adding .1, .2, ..."]


def _read_parquet(path: Path, notes: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read()  # the dataset API refuses duplicate column names
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataError(f"could not read '{path}' as Parquet ({_first_line(exc)}); "
                        f"check that it is a Parquet file") from None
    names = [str(n) for n in table.column_names]
    notes.extend(_duplicate_note(names))
    df = table.rename_columns(_dedupe(names)).to_pandas()
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()  # an index saved by pandas is data too
    return df


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _read_sample(path: Path, gz: bool, size: int = 65536) -> bytes:
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                return fh.read(size)
        with open(path, "rb") as fh:
            return fh.read(size)
    except (OSError, EOFError) as exc:
        raise DataError(f"could not read '{path}' ({_first_line(exc)}); "
                        f"check that it is a valid {'gzip' if gz else 'text'} file") from None


def _encoding(sample: bytes) -> str:
    """utf-8 (BOM allowed) when the sample decodes, latin-1 (which never fails) otherwise."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8-sig")().decode(sample, final=False)
        return "utf-8-sig"
    except UnicodeDecodeError:
        return "latin-1"


def _sniff_delimiter(text: str, preferred: str) -> str | None:
    """Pick among comma, semicolon, tab, pipe the one that splits the lines most consistently."""
    lines = [ln for ln in text.splitlines()[:-1] or text.splitlines() if ln.strip()][:50]
    if not lines:
        return None
    best, best_score = None, (0.0, 0, 0)
    for pos, delim in enumerate(sorted(",;\t|", key=lambda d: d != preferred)):
        counts = [len(row) for row in csv.reader(lines, delimiter=delim)]
        if counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts) / len(counts), counts[0], -pos)
        if score > best_score:
            best, best_score = delim, score
    return best


#: Files users pass by mistake, known by their first bytes: what they are and what to do instead.
_NOT_A_TABLE = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?); save the sheet as CSV, or unzip it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document (an Excel .xls workbook?); save the sheet as CSV"),
    (b"%PDF", "a PDF document; export the table as CSV"),
    (b"SQLite format 3\x00", "an SQLite database; export the table as CSV"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")  # C0 control characters other than tab, newlines, \v, \f
_EXCEL_SEP_LINE = re.compile(r'^\ufeff?"?sep=(.)"?\r?$')  # Excel's optional first line naming the delimiter
_COMMA_DECIMAL = re.compile(r"[-+]?\d+,\d+")
_POINT_DECIMAL = re.compile(r"[-+]?\d*\.\d+")


def _refuse_non_table(path: Path, text: str) -> None:
    """Binary files and web pages are no tables: say what the file is instead of parsing noise."""
    n_control = len(_CONTROL.findall(text))
    if n_control >= 4 and n_control > 0.01 * len(text):
        raise DataError(f"'{path}' does not look like a text table (it holds binary data); "
                        f"pass a CSV, TSV or Parquet file")
    head = text.lstrip().lower()
    if head.startswith(("<!doctype html", "<html")):
        raise DataError(f"'{path}' is an HTML page, not a table (a failed download?); pass a CSV, TSV or Parquet file")


def _decimal_mark(text: str, sep: str) -> str:
    """',' for semicolon files whose numbers all use a decimal comma (the European spreadsheet export)."""
    if sep != ";":  # elsewhere a comma between digits is more likely a thousands separator
        return "."
    lines = [ln for ln in text.splitlines()[1:-1] if ln.strip()][:200]  # no header, no cut-off last line
    comma = point = 0
    for row in csv.reader(lines, delimiter=sep):
        for cell in row:
            cell = cell.strip()
            comma += _COMMA_DECIMAL.fullmatch(cell) is not None
            point += _POINT_DECIMAL.fullmatch(cell) is not None
    return "," if comma and not point else "."


def _read_text(path: Path, notes: list[str]) -> pd.DataFrame:
    raw = _read_sample(path, gz=False, size=4)
    gz = path.name.lower().endswith(".gz") or raw.startswith(b"\x1f\x8b")
    sample = _read_sample(path, gz)
    if sample.startswith(b"PAR1"):
        raise DataError(f"'{path}' is a Parquet file with a text extension; rename it to .parquet")
    for magic, what in _NOT_A_TABLE:
        if sample.startswith(magic):
            raise DataError(f"'{path}' is {what}")
    encoding = _encoding(sample)
    if encoding != "utf-16" and b"\x00" in sample:
        raise DataError(f"'{path}' does not look like a text table (it holds binary data); "
                        f"pass a CSV, TSV or Parquet file")
    text = sample.decode(encoding, errors="replace")
    if not text.strip():
        raise DataError(f"data file '{path}' is empty (only blank lines); pass a file with a header and rows")
    _refuse_non_table(path, text)
    first_line, _, rest = text.partition("\n")
    excel_sep = _EXCEL_SEP_LINE.match(first_line)
    if excel_sep:
        sep, text = excel_sep.group(1), rest
    else:
        preferred = "\t" if ".tsv" in path.name.lower() else ","
        sep = _sniff_delimiter(text, preferred) or preferred
    decimal = _decimal_mark(text, sep)
    compression = "gzip" if gz else None
    read = dict(sep=sep, compression=compression, skiprows=1 if excel_sep else 0, decimal=decimal)
    try:
        df = _parse_csv(path, encoding=encoding, **read)
    except UnicodeDecodeError:
        encoding = "latin-1"  # bad bytes after the sample: latin-1 reads any byte
        df = _parse_csv(path, encoding=encoding, **read)
    if excel_sep:
        notes.append(f"'{path.name}' starts with Excel's 'sep={sep}' line; read {sep!r} as the delimiter")
    if decimal == ",":
        notes.append(f"'{path.name}' separates fields with ';' and writes decimals with ','; read it that way")
    notes.extend(_header_note(path, encoding=encoding, **read))
    if encoding == "latin-1":
        notes.append(f"'{path.name}' is not valid UTF-8; read it as latin-1")
    return df


def _header_note(path: Path, *, sep: str, encoding: str, compression: str | None, skiprows: int,
                 decimal: str) -> list[str]:
    """pandas renames duplicate header names silently; read the raw header to say so."""
    try:
        header = pd.read_csv(path, sep=sep, header=None, nrows=1, encoding=encoding, skiprows=skiprows,
                             compression=compression, dtype=str, skipinitialspace=True)
    except Exception:  # the header was readable moments ago; a note is not worth failing for
        return []
    return _duplicate_note([str(v) for v in header.iloc[0].tolist()]) if len(header) else []


def _parse_csv(path: Path, *, sep: str, encoding: str, compression: str | None, skiprows: int,
               decimal: str) -> pd.DataFrame:
    """The fast C engine first; Python's own sniffer only when the C engine chokes."""
    opts: dict[str, Any] = dict(encoding=encoding, compression=compression, skipinitialspace=True,
                                skiprows=skiprows, decimal=decimal)
    try:
        return pd.read_csv(path, sep=sep, low_memory=False, **opts)
    except UnicodeDecodeError:
        raise  # the caller retries as latin-1
    except pd.errors.EmptyDataError:
        raise DataError(f"data file '{path}' is empty (no header); pass a file with a header and rows") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        first = exc
    try:
        return pd.read_csv(path, sep=None, engine="python", **opts)
    except UnicodeDecodeError:
        raise
    except Exception:
        raise DataError(f"could not read '{path}' as a table ({_first_line(first)}); "
                        f"check that every row has the same number of fields") from None


# ----------------------------------------------------------------------------------------------
# Task inference and the target


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


def infer_task(y: pd.Series) -> tuple[str, str]:
    """Guess the task from the target's values (the rule is in the module docstring).

    Returns the task and the rule that fired, in words, so the user can see why and override it.
    """
    values = y.dropna()
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


def _show(values: Any, k: int = 3) -> str:
    return ", ".join(repr(_to_scalar(v)) for v in list(values)[:k])


def check_target(y: pd.Series, task: str) -> pd.Series:
    """Refuse a target the task cannot use; return it without missing values (numeric for regression)."""
    name = y.name
    if task not in ("auto", *TASKS):
        raise DataError(f"unknown task {task!r}; use auto, binary, multiclass or regression")
    values = y.dropna()
    if len(values) == 0:
        raise DataError(f"target {name!r} has no values (all {len(y)} rows are missing); "
                        f"choose another column with --target")
    distinct = _distinct(values)
    if len(distinct) < 2:
        raise DataError(f"target {name!r} has a single value {_show(distinct, 1)}; "
                        f"a model needs at least two different values")
    if task == "regression":
        num = _numeric_or_none(values)
        if num is None:
            text = values[pd.to_numeric(values.astype(object), errors="coerce").isna()]
            raise DataError(f"--task regression needs numbers, but target {name!r} has text values "
                            f"like {_show(text.unique(), 1)}; use --task binary or --task multiclass")
        if not np.all(np.isfinite(num)):
            raise DataError(f"target {name!r} has infinite values; remove those rows or fix them")
        return num
    if task == "binary" and len(distinct) > 2:
        raise DataError(f"--task binary needs exactly 2 classes, but target {name!r} has "
                        f"{len(distinct)} (e.g. {_show(distinct)}); use --task multiclass")
    if task == "multiclass" and len(distinct) > max(2, len(values) // 2):
        raise DataError(f"target {name!r} has {len(distinct)} distinct values in {len(values)} rows, "
                        f"too many to be classes; use --task regression")
    return values


def _to_scalar(v: Any) -> Any:
    """A JSON-able Python scalar: numpy scalars via .item(), integer-valued floats as ints."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _sorted_labels(values: pd.Series) -> list:
    labels = list({_to_scalar(v) for v in pd.unique(values)})
    try:
        return sorted(labels)
    except TypeError:  # mixed types (text and numbers): order by their text
        return sorted(labels, key=lambda v: (type(v).__name__, str(v)))


class TargetEncoder:
    """Classes <-> indices 0..K-1 (sorted labels), or regression values <-> standardized float32."""

    def __init__(self) -> None:
        self.task: str = ""
        self.classes: list = []
        self.mean: float = 0.0
        self.std: float = 1.0

    def fit(self, y: pd.Series | np.ndarray, task: str) -> TargetEncoder:
        """Learn the classes (classification) or the mean and std (regression)."""
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; use binary, multiclass or regression")
        y = pd.Series(y).dropna()
        self.task = task
        if task == "regression":
            values = y.to_numpy(dtype="float64")
            self.classes, self.mean = [], float(values.mean())
            std = float(values.std())
            self.std = std if std > 0 and math.isfinite(std) else 1.0
        else:
            self.classes, self.mean, self.std = _sorted_labels(y), 0.0, 1.0
        return self

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def encode(self, y: pd.Series | np.ndarray) -> np.ndarray:
        """Class indices as int64, or standardized values as float32."""
        y = pd.Series(y)
        if self.task == "regression":
            values = pd.to_numeric(y, errors="coerce").to_numpy(dtype="float64")
            return ((values - self.mean) / self.std).astype(np.float32)
        lookup = {label: i for i, label in enumerate(self.classes)}
        codes, uniques = pd.factorize(y, use_na_sentinel=True)
        if (codes < 0).any():
            raise DataError("the target has missing values; drop those rows before encoding")
        mapped = []
        for u in uniques:
            key = _to_scalar(u)
            if key not in lookup:
                raise DataError(f"label {key!r} was not seen when the classes were learned "
                                f"(known: {_show(self.classes, 10)})")
            mapped.append(lookup[key])
        return np.asarray(mapped, dtype=np.int64)[codes]

    def decode(self, values: np.ndarray) -> np.ndarray:
        """Back to the user's labels (from indices or (n, K) probabilities) or original scale."""
        values = np.asarray(values)
        if self.task == "regression":
            return values.astype(np.float64) * self.std + self.mean
        if values.ndim == 2:
            values = values.argmax(axis=1)
        mixed = len({type(c) for c in self.classes}) > 1
        labels = np.asarray(self.classes, dtype=object if mixed else None)
        return labels[values.astype(np.int64)]

    def to_dict(self) -> dict:
        return {"task": self.task, "classes": list(self.classes), "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict) -> TargetEncoder:
        enc = cls()
        try:
            enc.task, enc.classes = d["task"], list(d["classes"])
            enc.mean, enc.std = float(d["mean"]), float(d["std"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"target encoder data is incomplete ({exc!r}); "
                                   f"re-export the model") from None
        if enc.task not in TASKS:
            raise ModelFormatError(f"target encoder has unknown task {enc.task!r}; re-export the model")
        return enc


# ----------------------------------------------------------------------------------------------
# Column helpers shared by fit and transform


def _as_float(s: pd.Series) -> tuple[np.ndarray, int]:
    """The cells as float64 with NaN for missing; also how many non-missing cells were unreadable."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype="float64", na_value=np.nan), 0
    if pd.api.types.is_timedelta64_dtype(s):
        return s.dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan), 0
    num = pd.to_numeric(s.astype(object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return num, int(s.notna().sum() - np.isfinite(num).sum() - np.isinf(num).sum())


def _text_levels(s: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Factorize once, turn each distinct value into its level text (None for missing)."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes, [_level_text(u) for u in uniques]


def _level_text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))  # 3 and 3.0 are one level whatever dtype the column arrives with
    text = str(v).strip()
    return text or None


def _parse_dates(s: pd.Series) -> tuple[pd.Series, int]:
    """Cells as naive UTC datetimes (NaT if missing/unreadable), and how many were unreadable."""
    if pd.api.types.is_datetime64_any_dtype(s):
        out = pd.to_datetime(s, utc=True).dt.tz_localize(None)
        return out.reset_index(drop=True), 0
    codes, texts = _text_levels(s)
    parsed = _parse_date_texts(texts).to_numpy()
    out = pd.Series(np.append(parsed, np.array(["NaT"], dtype=parsed.dtype))[codes])  # code -1 -> NaT
    n_bad = int(((codes >= 0) & out.isna().to_numpy()).sum())
    return out, n_bad


def _parse_date_texts(texts: list[str | None]) -> pd.DatetimeIndex:
    """Parse distinct texts: the fast inferred format first, then per element for the leftovers."""
    cand = pd.Series([t if _date_like(t) else None for t in texts], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = pd.to_datetime(cand, errors="coerce", utc=True)
        retry = fast.isna() & cand.notna()
        if retry.any():
            slow = pd.to_datetime(cand[retry], format="mixed", errors="coerce", utc=True)
            fast = fast.where(~retry, slow)
    return pd.DatetimeIndex(fast).tz_localize(None)


def _date_like(text: str | None) -> bool:
    """Dates hold digits like a year or d/m; without this, dateutil reads 'may' or '3rd' as dates."""
    return text is not None and _DATE_LIKE.search(text) is not None


def _date_part(dates: pd.Series, part: str) -> np.ndarray:
    values = getattr(dates.dt, part)
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _scale_stats(observed: np.ndarray, scaling: str) -> dict:
    """What a numeric column needs: median for imputation and the scaling numbers."""
    stats: dict[str, Any] = {"median": float(np.median(observed))}
    if scaling == "standard":
        std = float(observed.std())
        stats["mean"] = float(observed.mean())
        stats["std"] = std if std > 0 and math.isfinite(std) else 1.0
    elif scaling == "quantile":
        k = int(min(1000, max(2, len(observed))))
        q = np.percentile(observed, np.linspace(0, 100, k))
        stats["quantiles"] = [float(v) for v in np.maximum.accumulate(q)]
    return stats


def _apply_scaling(x: np.ndarray, stats: dict, scaling: str) -> np.ndarray:
    """Impute with the median, then scale; x is float64 with NaN for missing."""
    x = np.where(np.isnan(x), stats["median"], x)
    if scaling == "standard":
        return (x - stats["mean"]) / stats["std"]
    if scaling == "quantile":
        from scipy.special import ndtri

        q = np.asarray(stats["quantiles"], dtype=np.float64)
        p = np.linspace(0.0, 1.0, len(q))
        # Average of interpolating up and down, so runs of equal quantiles map to their middle.
        u = 0.5 * (np.interp(x, q, p) - np.interp(-x, -q[::-1], -p[::-1]))
        return ndtri(np.clip(u, QUANTILE_EPS, 1 - QUANTILE_EPS))
    return x


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


# ----------------------------------------------------------------------------------------------
# Feature preprocessing


class FeaturePreprocessor:
    """Turns a raw feature frame into a float32 matrix, learned from the training rows only.

    ``__init__`` stores options; ``fit`` learns every number it needs and keeps them as plain JSON
    (``to_dict``), so a saved model reproduces the matrix bit for bit without pickle.
    """

    def __init__(self, *, min_frequency: int | float | None = None, max_categories: int = 64,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.min_frequency = min_frequency
        self.max_categories = max_categories
        self.max_bytes = max_bytes
        self.scaling = "standard"
        self.columns: list[dict] = []
        self.dropped: list[dict] = []
        self.input_schema: list[dict] = []
        self.notes: list[str] = []
        self._min_count = 0
        self.fitted = False

    # -- fit --------------------------------------------------------------------------------

    def fit(self, df: pd.DataFrame, scaling: str = "standard") -> FeaturePreprocessor:
        """Type every column, decide what to drop, and learn imputation, scaling and levels."""
        if scaling not in ("standard", "quantile", "none"):
            raise ValueError(f"scaling must be 'standard', 'quantile' or 'none', got {scaling!r}")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"fit expects a pandas DataFrame, got {type(df).__name__}")
        names = [str(c) for c in df.columns]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise DataError(f"duplicate column names {', '.join(map(repr, dups))}; make them unique")
        if len(df) == 0:
            raise DataError("cannot fit the preprocessing on 0 rows; pass training rows")
        self.scaling, self.columns, self.dropped, self.notes = scaling, [], [], []
        self.input_schema = [{"name": n, "dtype": str(df[c].dtype)} for n, c in zip(names, df.columns)]
        self._min_count = self._resolve_min_count(len(df))
        for name, col in zip(names, df.columns):
            spec = self._fit_column(name, df[col].reset_index(drop=True))
            if spec is not None:
                self.columns.append(spec)
        used = {c["name"] for c in self.columns}
        for item in self.input_schema:
            item["used"] = item["name"] in used
        self._guard_fit_memory(len(df))
        self.fitted = True
        return self

    def fit_transform(self, df: pd.DataFrame, scaling: str = "standard") -> np.ndarray:
        return self.fit(df, scaling).transform(df)

    def _resolve_min_count(self, n: int) -> int:
        mf = self.min_frequency
        if mf is None:
            return max(2, min(5, n // 100), math.ceil(n / 1000))
        if isinstance(mf, float) and 0 < mf < 1:
            return max(1, math.ceil(mf * n))
        if mf < 1:
            raise ValueError(f"min_frequency must be a count >= 1 or a fraction in (0, 1), got {mf!r}")
        return int(mf)

    def _drop(self, name: str, reason: str) -> None:
        self.dropped.append({"name": name, "reason": reason})
        self.notes.append(f"dropped column {name!r}: {reason}")

    def _fit_column(self, name: str, s: pd.Series) -> dict | None:
        """Route one column to numeric / date / categorical, or drop it."""
        n, n_missing = len(s), int(s.isna().sum())
        if n_missing == n:
            self._drop(name, "all values are missing")
            return None
        if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            return self._fit_categorical(name, s)
        if pd.api.types.is_datetime64_any_dtype(s):
            return self._fit_date(name, s)
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
            return self._fit_numeric(name, s, source="number")
        return self._fit_text(name, s)

    def _fit_text(self, name: str, s: pd.Series) -> dict | None:
        """Text cells: numbers, dates, a key, or categories — whichever most cells are."""
        codes, texts = _text_levels(s)
        present = np.array([t is not None for t in texts], dtype=bool)
        n_present = int(present[codes[codes >= 0]].sum()) if len(texts) else 0
        if n_present == 0:
            self._drop(name, "all values are missing")
            return None
        nums = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype="float64")
        is_num = ~np.isnan(nums) & present
        frac_num = is_num[codes[codes >= 0]].sum() / n_present
        if frac_num >= 0.95:
            rest = "" if frac_num == 1 else " (the other cells as missing)"
            self.notes.append(f"column {name!r} holds text but {frac_num:.1%} of it are numbers; "
                              f"read it as numbers{rest}")
            return self._fit_numeric(name, s, source="text")
        looks_dated = np.array([_date_like(t) for t in texts], dtype=bool)
        if looks_dated[codes[codes >= 0]].sum() >= 0.9 * n_present:
            dates, _ = _parse_dates(s)
            if dates.notna().sum() >= 0.9 * n_present:
                return self._fit_date(name, s, dates)
        if n_present == len(s) >= ID_MIN_ROWS and len(set(texts)) == len(s):
            self._drop(name, "every value is different (looks like a key or free text)")
            return None
        if frac_num > 0:
            self.notes.append(f"column {name!r} mixes numbers ({frac_num:.0%}) and text; "
                              f"treated as categories")
        return self._fit_categorical(name, s)

    def _fit_numeric(self, name: str, s: pd.Series, source: str) -> dict | None:
        x, _ = _as_float(s)
        n_inf = int(np.isinf(x).sum())
        if n_inf:
            self.notes.append(f"column {name!r}: {n_inf} infinite values treated as missing")
            x = np.where(np.isinf(x), np.nan, x)
        observed = x[~np.isnan(x)]
        if len(observed) == 0:
            self._drop(name, "no value could be read as a number")
            return None
        has_missing = len(observed) < len(x)
        if not has_missing and np.all(observed == observed[0]):
            self._drop(name, f"constant (every value is {_to_scalar(observed[0])!r})")
            return None
        if not has_missing and self._looks_like_id(observed):
            self._drop(name, "integers that are all different and sorted or fill a range (looks like a row ID)")
            return None
        return {"name": name, "kind": "numeric", "source": source, "missing_indicator": has_missing,
                "stats": _scale_stats(observed, self.scaling)}

    @staticmethod
    def _looks_like_id(x: np.ndarray) -> bool:
        n = len(x)
        if n < ID_MIN_ROWS or not np.all(np.mod(x, 1) == 0) or len(np.unique(x)) != n:
            return False
        diffs = np.diff(x)
        is_sorted = bool(np.all(diffs > 0) or np.all(diffs < 0))
        fills_range = (x.max() - x.min() + 1) <= 2 * n
        return is_sorted or fills_range

    def _fit_date(self, name: str, s: pd.Series, dates: pd.Series | None = None) -> dict | None:
        if dates is None:
            dates, _ = _parse_dates(s)
        n_bad = int(dates.isna().sum() - s.isna().sum())
        has_missing = bool(dates.isna().any())
        observed = dates.dropna()
        if not has_missing and observed.nunique() <= 1:
            self._drop(name, "constant (every value is the same date)")
            return None
        has_time = bool(((observed.dt.hour != 0) | (observed.dt.minute != 0) | (observed.dt.second != 0)).any())
        parts = []
        for part in DATE_PARTS:
            if part == "hour" and not has_time:
                continue
            x = _date_part(dates, part)
            obs = x[~np.isnan(x)]
            if len(obs) and not np.all(obs == obs[0]):
                parts.append({"part": part, "stats": _scale_stats(obs, self.scaling)})
        if not parts and not has_missing:
            self._drop(name, "constant (every date has the same parts)")
            return None
        kept = ", ".join(p["part"] for p in parts) or "none"
        extra = f"; {n_bad} unreadable dates treated as missing" if n_bad else ""
        self.notes.append(f"column {name!r} read as dates -> {kept}"
                          f"{' + missing indicator' if has_missing else ''}{extra}")
        return {"name": name, "kind": "date", "parts": parts, "missing_indicator": has_missing}

    def _fit_categorical(self, name: str, s: pd.Series) -> dict | None:
        codes, texts = _text_levels(s)
        level_of = np.array([t if t is not None else MISSING_LEVEL for t in texts] or [""], dtype=object)
        counts = pd.Series(level_of[codes[codes >= 0]]).value_counts()
        has_missing = bool((codes < 0).any()) or MISSING_LEVEL in counts.index
        counts = counts.drop(MISSING_LEVEL, errors="ignore")
        if not has_missing and len(counts) <= 1:
            self._drop(name, f"constant (every value is {counts.index[0]!r})")
            return None
        spec = {"name": name, "kind": "categorical", "counts": counts, "has_missing": has_missing}
        self._set_levels(spec, self.max_categories)
        if len(spec["levels"]) <= 1:
            self._drop(name, f"every level is rarer than {self._min_count} rows")
            return None
        if len(counts) > self.max_categories:
            self.notes.append(f"column {name!r} has {len(counts)} distinct values; kept at most the "
                              f"{self.max_categories} most frequent, the rest are {RARE_LEVEL!r}")
        return spec

    def _set_levels(self, spec: dict, cap: int) -> None:
        """Frequent levels (sorted), then __rare__ and __missing__ when needed."""
        counts: pd.Series = spec["counts"]
        ranked = sorted(((int(c), str(lvl)) for lvl, c in counts.items()), key=lambda t: (-t[0], t[1]))
        levels = sorted(lvl for c, lvl in ranked[:cap] if c >= self._min_count)
        if len(levels) < len(ranked):
            levels.append(RARE_LEVEL)
        if spec["has_missing"]:
            levels.append(MISSING_LEVEL)
        spec["levels"] = levels

    def _guard_fit_memory(self, n: int) -> None:
        """Lower the category cap (down to 8) before refusing a matrix too big for memory."""
        cap = self.max_categories
        while n * self.n_features * 4 > self.max_bytes and cap > 8:
            cap = max(8, cap // 2)
            for spec in self.columns:
                if spec["kind"] == "categorical":
                    self._set_levels(spec, cap)
        if cap != self.max_categories:
            self.notes.append(f"kept at most {cap} levels per categorical column (not "
                              f"{self.max_categories}) so the feature matrix fits in {_fmt_bytes(self.max_bytes)}")
        for spec in self.columns:
            spec.pop("counts", None)
            spec.pop("has_missing", None)
        self._check_size(n, "drop columns or sample rows, or raise max_bytes")

    def _check_size(self, n: int, fix: str) -> None:
        size = n * self.n_features * 4
        if size > self.max_bytes:
            raise DataError(f"the feature matrix would take {_fmt_bytes(size)} ({n} rows x "
                            f"{self.n_features} columns x 4 bytes), over the {_fmt_bytes(self.max_bytes)} "
                            f"limit; {fix}")

    # -- output names -----------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        names: list[str] = []
        for spec in self.columns:
            name, kind = spec["name"], spec["kind"]
            if kind == "numeric":
                names.append(name)
            elif kind == "date":
                names.extend(f"{name}__{p['part']}" for p in spec["parts"])
            else:
                names.extend(f"{name}={lvl}" for lvl in spec["levels"])
            if spec.get("missing_indicator"):
                names.append(f"{name}__missing")
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def required_columns(self) -> list[str]:
        """The input columns transform needs (dropped ones are not required)."""
        return [spec["name"] for spec in self.columns]

    # -- transform --------------------------------------------------------------------------

    def _columns(self, df: pd.DataFrame) -> dict[str, pd.Series]:
        """The required input columns by name; extra columns are ignored."""
        if not self.fitted:
            raise RuntimeError("FeaturePreprocessor is not fitted; call fit(train_frame) first")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        by_name = {str(c): c for c in df.columns}
        missing = [name for name in self.required_columns if name not in by_name]
        if missing:
            raise DataError(f"input is missing column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(m) for m in missing[:10])}; "
                            f"pass a table with the columns used in training")
        out = {}
        for name in self.required_columns:
            col = df[by_name[name]]
            if isinstance(col, pd.DataFrame):
                raise DataError(f"input has column {name!r} more than once; keep one")
            out[name] = col.reset_index(drop=True)
        return out

    def transform(self, df: pd.DataFrame, report: list[str] | None = None) -> np.ndarray:
        """The float32 (n, n_features) matrix; notes about unreadable or unseen cells go to report."""
        cols = self._columns(df)
        self._check_size(len(df), "transform the rows in smaller chunks")
        report = report if report is not None else []
        out = np.zeros((len(df), self.n_features), dtype=np.float32)
        j = 0
        for spec in self.columns:
            block = self._block(spec, cols[spec["name"]], report)
            out[:, j:j + block.shape[1]] = block
            j += block.shape[1]
        return out

    def _block(self, spec: dict, s: pd.Series, report: list[str]) -> np.ndarray:
        kind = spec["kind"]
        if kind == "categorical":
            codes = self._level_codes(spec, s, report)
            block = np.zeros((len(s), len(spec["levels"])), dtype=np.float64)
            rows = np.flatnonzero(codes >= 0)
            block[rows, codes[rows]] = 1.0
            return block
        raw, missing = self._raw_numbers(spec, s, report)
        blocks = [_apply_scaling(x, stats, self.scaling) for x, stats in raw]
        if spec["missing_indicator"]:
            blocks.append(missing.astype(np.float64))
        return np.column_stack(blocks) if blocks else np.zeros((len(s), 0))

    @staticmethod
    def _raw_numbers(spec: dict, s: pd.Series, report: list[str]
                     ) -> tuple[list[tuple[np.ndarray, dict]], np.ndarray]:
        """(values with NaN for missing, stats) per output number of a numeric or date column,
        and the rows whose cell is missing."""
        name = spec["name"]
        if spec["kind"] == "numeric":
            x, n_bad = _as_float(s)
            n_inf = int(np.isinf(x).sum())
            if n_bad:
                report.append(f"column {name!r}: {n_bad} values could not be read as numbers "
                              f"and were treated as missing")
            if n_inf:
                report.append(f"column {name!r}: {n_inf} infinite values were treated as missing")
                x = np.where(np.isinf(x), np.nan, x)
            return [(x, spec["stats"])], np.isnan(x)
        dates, n_bad = _parse_dates(s)
        if n_bad:
            report.append(f"column {name!r}: {n_bad} values could not be read as dates "
                          f"and were treated as missing")
        parts = [(_date_part(dates, p["part"]), p["stats"]) for p in spec["parts"]]
        return parts, dates.isna().to_numpy()

    @staticmethod
    def _level_codes(spec: dict, s: pd.Series, report: list[str]) -> np.ndarray:
        """Index into spec['levels'] per row, -1 for an all-zero row."""
        levels = spec["levels"]
        index = {lvl: i for i, lvl in enumerate(levels)}
        missing_code = index.get(MISSING_LEVEL, -1)
        other_code = index.get(RARE_LEVEL, -1)
        codes, texts = _text_levels(s)
        mapped = np.array([missing_code if t is None else index.get(t, other_code) for t in texts] + [missing_code],
                          dtype=np.int64)
        known = set(levels)
        unseen = np.array([t is not None and t not in known for t in texts] + [False], dtype=bool)
        n_unseen = int(unseen[codes].sum()) if len(codes) else 0
        if n_unseen and other_code < 0:
            report.append(f"column {spec['name']!r}: {n_unseen} values not seen in training were "
                          f"encoded as all zeros")
        return mapped[codes]  # code -1 picks the appended missing entry

    def transform_for_gbt(self, df: pd.DataFrame, report: list[str] | None = None) -> pd.DataFrame:
        """Same columns for XGBoost: raw float32 numbers (NaN kept), categories fixed at fit."""
        cols = self._columns(df)
        report = report if report is not None else []
        out: dict[str, Any] = {}
        for spec in self.columns:
            name, s = spec["name"], cols[spec["name"]]
            if spec["kind"] == "categorical":
                cats = [lvl for lvl in spec["levels"] if lvl != MISSING_LEVEL]
                codes = self._level_codes(spec, s, report)
                miss = spec["levels"].index(MISSING_LEVEL) if MISSING_LEVEL in spec["levels"] else -2
                codes = np.where(codes == miss, -1, codes)
                out[name] = pd.Categorical.from_codes(codes, categories=cats)
            elif spec["kind"] == "numeric":
                out[name] = self._raw_numbers(spec, s, report)[0][0][0].astype(np.float32)
            else:
                for p, (x, _) in zip(spec["parts"], self._raw_numbers(spec, s, report)[0]):
                    out[f"{name}__{p['part']}"] = x.astype(np.float32)
        return pd.DataFrame(out, index=pd.RangeIndex(len(df)))

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Everything transform needs, as plain JSON types."""
        if not self.fitted:
            raise RuntimeError("FeaturePreprocessor is not fitted; call fit(train_frame) first")
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "scaling": self.scaling,
            "min_frequency": self.min_frequency, "min_count": self._min_count,
            "max_categories": self.max_categories, "max_bytes": self.max_bytes,
            "input_schema": [dict(item) for item in self.input_schema],
            "columns": [dict(spec) for spec in self.columns],
            "dropped": [dict(item) for item in self.dropped],
            "notes": list(self.notes), "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeaturePreprocessor:
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise ModelFormatError("preprocessor data is not an automl_dnn feature preprocessor; "
                                   "re-export the model")
        if d.get("version") != FORMAT_VERSION:
            raise ModelFormatError(f"preprocessor format version {d.get('version')!r} is not "
                                   f"supported (this version reads {FORMAT_VERSION}); upgrade automl-dnn")
        try:
            pre = cls(min_frequency=d["min_frequency"], max_categories=int(d["max_categories"]),
                      max_bytes=int(d["max_bytes"]))
            pre.scaling, pre._min_count = d["scaling"], int(d["min_count"])
            pre.input_schema, pre.columns = list(d["input_schema"]), list(d["columns"])
            pre.dropped, pre.notes = list(d["dropped"]), list(d["notes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"preprocessor data is incomplete ({exc!r}); re-export the model") from None
        pre.fitted = True
        if pre.feature_names != d.get("feature_names"):
            raise ModelFormatError("preprocessor feature names do not match its columns; re-export the model")
        return pre


# ----------------------------------------------------------------------------------------------
# Dataset


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
        return h.hexdigest()


def _frame_from_source(source: Any, notes: list[str]) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        names = [str(c) for c in source.columns]
        notes.extend(_duplicate_note(names))
        df = source.copy()
        df.columns = _dedupe(names)
        return df.reset_index(drop=True)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path, 'builtin:NAME' or a DataFrame, got {type(source).__name__}")
    df = read_table(source)
    notes.extend(df.attrs.get(NOTES_ATTR, []))
    return df.reset_index(drop=True)


def _resolve_target(df: pd.DataFrame, target: str | None, source: Any) -> str:
    if target is None and _is_builtin(source):
        return _builtin(str(source)).target
    columns = [str(c) for c in df.columns]
    target = None if target is None else str(target)
    if target is None:
        raise DataError(f"no target column given; pass --target NAME (columns: {_list_names(columns)})")
    if target in columns:
        return target
    lowered = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(str(target).lower(), list(lowered), n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close
            else f"columns: {_list_names(columns)}")
    raise DataError(f"target column {target!r} not found; {hint}")


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


def _split(y: pd.Series, task: str, valid_size: float, test_size: float, seed: int,
           notes: list[str]) -> dict[str, np.ndarray]:
    """Seeded train/valid/test row indices, stratified for classification when every class allows it."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    n_test = math.ceil(test_size * n) if test_size > 0 else 0
    n_valid = math.ceil(valid_size * n)
    n_train = n - n_test - n_valid
    if n < MIN_ROWS or n_train < 2:
        raise DataError(f"too few rows: {n} rows with a target leave {n_train} for training "
                        f"(valid_size={valid_size}, test_size={test_size}); need at least {MIN_ROWS} "
                        f"rows and 2 training rows, so add rows or lower valid_size/test_size")
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

    rest, test = cut(idx, n_test, "test") if n_test else (idx, idx[:0])
    train, valid = cut(rest, n_valid, "validation")
    split = {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}
    how = "stratified" if stratified[0] else "random"
    notes.append(f"split {n} rows into train {len(train)} / valid {len(valid)} / test {len(test)} "
                 f"({how}, seed {seed})")
    return {k: v.astype(np.int64) for k, v in split.items()}


def load_dataset(source: str | os.PathLike | pd.DataFrame, *, target: str | None = None,
                 task: str = "auto", valid_size: float = 0.15, test_size: float = 0.15,
                 seed: int = 0) -> Dataset:
    """Read the data, check and encode the target, and split the rows (seeded, reproducible)."""
    if task not in ("auto", *TASKS):
        raise DataError(f"unknown task {task!r}; use auto, binary, multiclass or regression")
    _check_sizes(valid_size, test_size)
    notes: list[str] = []
    df = _frame_from_source(source, notes)
    target = _resolve_target(df, target, source)
    y_all = df[target]
    keep = y_all.notna().to_numpy()
    if not keep.any():
        check_target(y_all, task)
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows with a missing target {target!r}")
    features = df.loc[keep].drop(columns=[target]).reset_index(drop=True)
    if features.shape[1] == 0:
        raise DataError(f"the table has no feature columns besides the target {target!r}; add features")
    y = y_all[keep].reset_index(drop=True)
    task, rule = _choose_task(y, task, target, source)
    y = check_target(y, task).reset_index(drop=True)
    notes.append(f"task {task}: {rule}")
    split = _split(y, task, valid_size, test_size, seed, notes)
    encoder = TargetEncoder().fit(y if task != "regression" else y.iloc[split["train"]], task)
    return Dataset(task=task, task_rule=rule, target=target, features=features, y=encoder.encode(y),
                   target_encoder=encoder, split=split, notes=notes)


def _choose_task(y: pd.Series, task: str, target: str, source: Any) -> tuple[str, str]:
    if task != "auto":
        return task, f"set by the user (--task {task})"
    if _is_builtin(source):
        info = _builtin(str(source))
        if target == info.target:
            return info.task, f"the built-in dataset {info.name!r} is a {info.task} task"
    return infer_task(y)


__all__ = [
    "BUILTINS", "BuiltinInfo", "Dataset", "FeaturePreprocessor", "TargetEncoder", "check_target",
    "infer_task", "load_dataset", "read_table",
]

"""Feature preprocessing: raw feature columns in, a float32 matrix out, learned on training rows only.

``FeaturePreprocessor`` stores what it learns as plain JSON (no pickle, no scikit-learn objects):

- numbers: +-inf and unreadable cells become missing; missing values get the training median plus a
  ``NAME__missing`` indicator column (only for columns with missing values in training); then
  ``standard`` (mean/std), ``quantile`` (to a standard normal through stored quantiles), ``robust``
  (below) or ``none``;
- text: mostly numbers (>= 95 % of the cells not written as a missing marker such as '?', commas between
  digit groups as in 12,345.67, currency signs, percent signs, and one unit a column, 12.3 kg or USD 12.50,
  allowed) -> numbers; mostly times of day (14:30, 14:30:15, 2:05 PM, a Parquet time64's Python times) ->
  seconds since midnight, one number like the others (the dates' parts are plain numbers too, no sin/cos);
  mostly dates (>= 90 % of cells, each holding digits
  like a date) -> dates, read with one format chosen in training (day or month first) so that every
  batch reads a cell alike; otherwise categories. How a text column was read is stored (``text``);
- dates -> ``NAME__year``, ``__month``, ``__day``, ``__day_of_week``, ``__day_of_year`` (and ``__hour``
  when times are not all midnight), parts constant in training left out, plus ``NAME__missing``;
  each part is scaled like a number;
- categories (booleans, text, pandas ``category``) -> one-hot ``NAME=LEVEL``; missing cells are the
  level ``__missing__``; levels seen in fewer than ``min_frequency`` training rows (default
  ``max(2, min(5, n // 100), ceil(n / 1000))``) share the level ``__rare__``; values outside the
  learned levels go to ``__rare__`` when the column has it, else to all zeros. A column with more
  frequent levels than ``max_categories`` (64) becomes one column ``NAME__code`` of level codes instead
  (1..L, the ``CODE_MAX_LEVELS`` most frequent at most; 0 for a value not seen in training), which the
  nets look up in a learned embedding (``categorical_features_``);
- dropped with a note: all-missing columns, constant columns, ID-like columns (at least 20 rows, all
  values different and either integers that are sorted or fill most of their range, or text keys).

``robust`` scaling is RealMLP-TD's ("robust scale + smooth clip"; Holzmueller, Grinsztajn, Steinwart,
"Better by Default: Strong Pre-Tuned MLPs and Boosted Trees on Tabular Data", NeurIPS 2024; the same
steps as pytabkit's ``median_center``, ``robust_scale`` and ``smooth_clip`` transforms,
``pytabkit/models/nn_models/pipeline.py: RobustScaleFactory`` and ``models.py: smooth_clip_func``).
Per number (or date part) x, with statistics of the observed training values (missing cells are
imputed with the median first, so they map to exactly 0)::

    m = q_0.5(x)                                    the median (also the imputation value)
    s = q_0.75(x) - q_0.25(x)                       the interquartile range, or when it is 0
    s = (max(x) - min(x)) / 2                       half the range (pytabkit: 0.5 * (max - min))
    z = (x - m) / s,  z = 0 when s = 0              (a column constant in training maps to 0)
    f(z) = z / sqrt(1 + (z / 3)^2)                  smooth clipping into (-3, 3): f(z) ~ z near 0

Quantiles are numpy's linear interpolation (the default of ``np.quantile``, as pytabkit's
``torch_np_quantile``). The JSON keeps ``median`` and ``spread`` (= s) per number.

XGBoost (``transform_for_gbt``) reads categories natively, so it gets its own levels per column,
``gbt_levels`` in the JSON: every level seen in training (the ``GBT_MAX_LEVELS`` = 10,000 most frequent
at most), with no ``min_frequency`` and no ``__rare__`` folding; values outside them (unseen, or beyond
the cap) are missing. In a table of ``GBT_NARROW_CELLS`` (2**24) training cells or more, the cap is
``GBT_BYTE_LEVELS`` (256), so that XGBoost's histogram index stays one byte per cell. A column spec
saved without ``gbt_levels`` (before format version 2) keeps the one-hot levels there, as it always did.

``continuous_features_`` lists the output columns of ``transform`` that hold a number or a date part
(not missing indicators, not one-hot levels), for numeric embeddings inside the net.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from automl_dnn.data.target import BEYOND_FLOAT32, FLOAT32_MAX, missing_value, to_scalar
from automl_dnn.errors import DataError, ModelFormatError

MISSING_LEVEL = "__missing__"
RARE_LEVEL = "__rare__"
DATE_PARTS = ("year", "month", "day", "day_of_week", "day_of_year", "hour")
ID_MIN_ROWS = 20  # below this, "every value is different" says nothing about a column being a key
DEFAULT_MAX_BYTES = 4 * 1024**3
QUANTILE_EPS = 1e-7  # clip before ndtri: +-5.2 standard deviations at most (scikit-learn's bound)
SCALINGS = ("standard", "quantile", "robust", "none")
CODE_MAX_LEVELS = 10_000  # a column of level codes keeps at most this many (the most frequent) levels
SMOOTH_CLIP = 3.0  # robust scaling's smooth clip bound: f(z) = z / sqrt(1 + (z / 3)^2) (RealMLP-TD)
GBT_MAX_LEVELS = 10_000  # levels per column kept for XGBoost's native categoricals (most frequent first)
# XGBoost's histogram index takes one byte per cell while every column has at most 256 bins; one column
# with more widens the whole index (at 1M x 100, 434 MB instead of 132). A table at least this many
# cells big keeps at most GBT_BYTE_LEVELS levels per column for XGBoost (the nets keep every level).
GBT_BYTE_LEVELS = 256
GBT_NARROW_CELLS = 2**24  # 64 MiB of float32
FORMAT_NAME = "automl_dnn.FeaturePreprocessor"
#: 2 adds ``robust`` scaling and ``gbt_levels``; an older reader would ignore both and predict
#: differently, so it must refuse the file. Version 1 files still load (without ``gbt_levels``).
#: 3 adds a text column's ``text`` reading (a date format, '?' as missing, 12,345 numbers).
#: 4 adds a date column's time zone (``text``'s ``tz``: its parts on that zone's clock) and 45.3 % as a number.
#: 5 adds amounts of money as numbers (``text``'s ``currency``: $1,234.50, 12.50 €).
#: 6 adds accountants' negatives (``text``'s ``parentheses``: (1,234.50) is -1234.50), and apostrophes or spaces
#: between digit groups (``thousands``: 12'345.67, 12 345.67).
#: 7 adds numbers with a unit (``text``'s ``unit``: 12.3 kg) or a currency code before them (``prefix``: USD 12.50).
#: 8 adds times of day as seconds since midnight (``text``'s ``clock``: 14:30, 2:05 PM, Parquet's time64).
FORMAT_VERSION = 8
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)

_DATE_LIKE = re.compile(r"\d{4}|\d{1,2}[-/.]\d{1,2}")
DATE_FORMAT_SAMPLE = 200  # distinct date texts whose formats pandas guesses, month and day first
DATE_FORMAT_PROBE = 5_000  # distinct date texts each guessed format is tried on (a day > 12 shows day first)
_TIME_OFFSET = re.compile(r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|UTC|GMT|[+-]\d\d(?::?\d\d)?)$", re.IGNORECASE)
#: 12,345.67: commas between groups of three digits, or (one kind in a number) apostrophes, as Switzerland writes
#: 12'345.67, or spaces, as SI does (a no-break one from a spreadsheet)
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}([,'\u2019 \u00a0\u202f])\d{3}(?:\1\d{3})*(\.\d*)?$")
_GROUP_MARKS = re.compile(r"[,'\u2019 \u00a0\u202f]")
#: the digits of an amount: 1,234.50, 1 234.50 (spaces, no-break ones or apostrophes between digit groups), .5
_AMOUNT = r"[\d.,]*\d(?:[\d.,'\u2019 \u00a0\u202f]*[\d.,])?"
#: $1,234.50, -$5, €12 or 12.50 €, £, ¥, $1 234.50: one currency sign before or after the number (a sign first)
_CURRENCY = re.compile(rf"^([-+]?)\s?[$\u20ac\u00a3\u00a5]\s?({_AMOUNT})$|^([-+]?{_AMOUNT})\s?[$\u20ac\u00a3\u00a5]$")
#: a number and its unit after it, one space at most between: 12.3 kg, 150cm, 3.5GB, -5 °C, 90 km/h, 12 m², 5 EUR
_WITH_UNIT = re.compile(r"^([-+]?\.?\d(?:[\d.,'\u2019 \u00a0\u202f]*\d)?)\s?(°[CFK]?|[^\W\d_]{1,12}(?:/[^\W\d_]{1,4})?[²³]?)$")
NOT_UNITS = frozenset({"am", "pm"})  # 10 am is a time of day, not ten of a unit
#: a currency named before the number in letters: USD 1,234.50, CHF 12, R$ 12,50, US$5, -EUR 3
_WITH_PREFIX = re.compile(rf"^([-+]?)\s?([A-Z]{{1,3}}\$|[A-Z]{{3}}|Rs\.?)\s?([-+]?{_AMOUNT})$")
#: the ISO 4217 codes read as a currency before a number: a code of three capitals that is none (an ID like
#: ABC 123) leaves the column as text
CURRENCY_CODES = frozenset(
    "USD EUR GBP JPY CHF CAD AUD NZD CNY RMB HKD SGD TWD INR KRW SEK NOK DKK ISK PLN CZK HUF RON BGN RUB UAH TRY ILS "
    "AED SAR QAR KWD EGP ZAR NGN KES BRL MXN ARS CLP COP PEN THB IDR MYR PHP VND PKR BDT".split())
_PARENTHESES = re.compile(r"^\(\s?([^()\s-][^()]*?)\s?\)$")  # (1,234.50): an accountant's -1,234.50
_PERCENT = re.compile(r"^([-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+))\s?%$")  # 45.3%, .5 %, 12,345%
#: a time of day on a 24-hour clock: 14:30, 14:30:15, 02:05:07.25 (as Parquet's time64 and Python's time print)
_CLOCK_24 = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?))?$")
#: ... and on a 12-hour one: 2 PM, 2:05 pm, 2:05:30 p.m.
_CLOCK_12 = re.compile(r"^(\d{1,2})(?::(\d{2})(?::(\d{2}(?:\.\d+)?))?)?\s?([ap])\.?\s?m\.?$", re.IGNORECASE)
#: cells that stand for a missing value in a column of numbers (read_csv already takes NA, NaN, null, ...)
MISSING_MARKERS = frozenset({"?", "??", "-", "--", ".", "*", "n/a", "na", "n.a.", "none", "missing", "unknown"})


def read_numbers(s: pd.Series, reading: dict | None = None) -> tuple[np.ndarray, int]:
    """The cells as float64 with NaN for missing; also how many non-missing cells were unreadable.

    ``reading``: how a column of number texts was read in training (``_number_reading``), applied the same
    way to every batch."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype="float64", na_value=np.nan), 0
    if pd.api.types.is_timedelta64_dtype(s):
        return s.dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan), 0
    if reading:
        codes, texts = _text_levels(s)
        nums, marker = _numbers_from_texts(texts, reading)
        bad = np.append(np.array([t is not None for t in texts], dtype=bool) & np.isnan(nums) & ~marker, False)
        return np.append(nums, np.nan)[codes], int(bad[codes].sum())
    num = pd.to_numeric(s.astype(object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return num, int(s.notna().sum() - np.isfinite(num).sum() - np.isinf(num).sum())


def _negated(t: str) -> str:
    """'(1,234.50)' -> '-1,234.50', '($5)' -> '-$5'; any other text as it is."""
    match = _PARENTHESES.match(t)
    return t if match is None else "-" + match.group(1)


def _without_currency(t: str) -> str:
    """'$1,234.50' -> '1,234.50', '-$5' -> '-5', '12 €' -> '12'; any other text as it is."""
    match = _CURRENCY.match(t)
    if match is None:
        return t
    return match.group(3) if match.group(3) is not None else match.group(1) + match.group(2)


def _clock_seconds(t: str) -> float:
    """Seconds since midnight of a time of day ('14:30' -> 52200, '2:05 PM' -> 50700); NaN for any other text,
    an hour or minute off the clock ('25:00', '13 PM') included."""
    match = _CLOCK_24.match(t)
    if match is not None:
        hour, minute, second = int(match.group(1)), int(match.group(2)), float(match.group(3) or 0)
        valid = hour < 24
    else:
        match = _CLOCK_12.match(t)
        if match is None:
            return math.nan
        hour, minute, second = int(match.group(1)), int(match.group(2) or 0), float(match.group(3) or 0)
        valid = 1 <= hour <= 12
        hour = hour % 12 + (12 if match.group(4).casefold() == "p" else 0)
    return hour * 3600 + minute * 60 + second if valid and minute < 60 and second < 60 else math.nan


def _is_clock(t: str) -> bool:
    """Whether a text is written like a time of day (a valid one or not)."""
    return _CLOCK_24.match(t) is not None or _CLOCK_12.match(t) is not None


def _mostly_times(texts: list[str | None]) -> bool:
    """Whether at least half the distinct texts (missing markers aside) are times of day: a column of numbers
    with a stray '9:00' stays numbers."""
    cells = [t for t in texts if t is not None and t.casefold() not in MISSING_MARKERS]
    others = 0
    for t in cells:  # stops once more than half are no time: a long column of other text costs half a look
        others += not _is_clock(t)
        if 2 * others > len(cells):
            return False
    return bool(cells)


def _affix(t: str) -> tuple[dict, str]:
    """The unit after a number ('12.3 kg': {'unit': 'kg'}) or the currency code before it ('USD -5': {'prefix':
    'USD'}), and the number without it ('12.3', '-5'); an empty dict and the text for any other ('A12', '10 am')."""
    match = _WITH_UNIT.match(t)
    if match is not None and match.group(2).casefold() not in NOT_UNITS:
        return {"unit": match.group(2)}, match.group(1)
    match = _WITH_PREFIX.match(t)
    if match is not None and (match.group(2) in CURRENCY_CODES or match.group(2).endswith("$")
                              or match.group(2).startswith("Rs")):
        return {"prefix": match.group(2)}, _signed(match.group(1), match.group(3))
    return {}, t


def _without_affix(t: str, reading: dict) -> str:
    """'12.3 kg' -> '12.3' when the column's unit is 'kg', 'USD -5' -> '-5' when its prefix is 'USD'; any other
    text (another unit: '3 lb') as it is, which then reads as missing."""
    affix, number = _affix(t)
    return number if affix and affix == {k: reading[k] for k in ("unit", "prefix") if k in reading} else t


def other_unit_numbers(s: pd.Series, reading: dict | None) -> int:
    """How many cells of a column read with a unit (or currency code) are numbers written with another one: '160 lb'
    in a column of kg. They are not converted (missing, with the counted note), but they show that the column holds
    its numbers, as a shifted column or another file's ('heavy') would not."""
    own = {k: v for k, v in (reading or {}).items() if k in ("unit", "prefix")}
    if not own:
        return 0
    codes, texts = _text_levels(s)
    other = np.array([t is not None and _in_other_unit(t, own) for t in texts] + [False], dtype=bool)
    return int(other[codes].sum())


def _in_other_unit(t: str, own: dict) -> bool:
    """Whether a text is a number with a unit or currency code other than ``own`` ('160 lb' when own is kg)."""
    affix, number = _affix(t)
    return bool(affix) and affix != own and _is_number(number)


def _signed(sign: str, number: str) -> str:
    """'-' and '5' -> '-5'; '-' and '-5' (written twice) -> '-5' too."""
    return number if number[:1] in "+-" else sign + number


def _common_affix(texts: list[str]) -> dict:
    """The unit (or currency code) that every text not a missing marker carries, one and the same: a column
    mixing units (12 kg, 3 lb) has none, and stays text."""
    common: dict = {}
    for t in texts:  # stops at the first text without it: free text costs one look
        if t.casefold() in MISSING_MARKERS:
            continue
        found = _affix(t)[0]
        if not found or (common and found != common):
            return {}
        common = found
    return common


def _numbers_from_texts(texts: list[str | None], reading: dict) -> tuple[np.ndarray, np.ndarray]:
    """Distinct texts as numbers by a column's reading, NaN where unreadable; and which are missing markers."""
    markers = {m.casefold() for m in reading.get("missing", [])}
    is_marker = np.array([t is not None and t.casefold() in markers for t in texts], dtype=bool)
    if reading.get("clock"):  # times of day only: a plain number (1430?) is no time
        nums = np.array([math.nan if t is None else _clock_seconds(t) for t in texts], dtype=np.float64)
        return np.where(is_marker, np.nan, nums), is_marker
    if reading.get("unit") or reading.get("prefix"):
        texts = [t if t is None else _without_affix(t, reading) for t in texts]
    if reading.get("parentheses"):
        texts = [t if t is None else _negated(t) for t in texts]
    if reading.get("currency"):
        texts = [t if t is None else _without_currency(t) for t in texts]
    percent = [_PERCENT.match(t) if t is not None and reading.get("percent") else None for t in texts]
    cells = [match.group(1) if match else t for t, match in zip(texts, percent)]
    cells = [_GROUP_MARKS.sub("", t) if t is not None and reading.get("thousands") and _THOUSANDS.match(t) else t
             for t in cells]
    nums = pd.to_numeric(pd.Series(cells, dtype=object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    nums = np.where([match is not None for match in percent], nums / 100, nums)  # 45.3 % is 0.453
    return np.where(is_marker, np.nan, nums), is_marker


def _marker_words(reading: dict, n_marked: int) -> list[str]:
    """'10 cells written '?' read as missing', when the reading has missing markers."""
    return ([f"{n_marked} cells written {' or '.join(map(repr, reading['missing']))} read as missing"]
            if reading.get("missing") else [])


def _number_note(reading: dict, n_marked: int, frac_num: float) -> str:
    """What a column of number texts holds, and what reading it needed ('?' as missing, 12,345.67)."""
    how = _marker_words(reading, n_marked)
    if reading.get("unit"):
        how.append(f"the unit {reading['unit']!r} dropped")
    if reading.get("prefix"):
        how.append(f"the currency {reading['prefix']!r} dropped")
    if reading.get("parentheses"):
        how.append("(12.50) read as -12.50")
    if reading.get("currency"):
        how.append("currency signs dropped")
    if reading.get("thousands"):
        how.append("commas, apostrophes or spaces between digit groups dropped")
    if reading.get("percent"):
        how.append("percentages read as fractions, 45 % as 0.45")
    return f"{frac_num:.1%} of {'the rest' if n_marked else 'it'} are numbers" + (f" ({'; '.join(how)})" if how else "")


def _clock_note(reading: dict, n_marked: int, frac_num: float) -> str:
    """What else a column of times of day holds: missing markers, and cells that are no time (read as missing)."""
    how = _marker_words(reading, n_marked)
    if frac_num < 1:
        how.append(f"{1 - frac_num:.1%} of the {'other ' if n_marked else ''}cells are no time and read as missing")
    return f" ({'; '.join(how)})" if how else ""


def _number_reading(texts: list[str | None]) -> dict:
    """How to read a text column as numbers: ``thousands`` when some cells write 12,345.67 (a comma between
    groups of three digits), ``percent`` when some write 45.3 % (read as 0.453), ``missing`` the markers such
    as '?' that stand for a missing cell (UCI files write '?'), ``unit`` (or ``prefix``) when every other cell is a
    number with one and the same unit after it, 12.3 kg (or currency code before it, USD 12.50), ``clock`` when most
    are times of day (14:30, 2:05 PM: seconds since midnight). Empty when plain parsing is all a column needs."""
    if _mostly_times(texts):
        markers = sorted({t for t in texts if t is not None and t.casefold() in MISSING_MARKERS})
        return {"clock": True, "missing": markers} if markers else {"clock": True}
    plain = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    rest = [t for t, x in zip(texts, plain) if t is not None and np.isnan(x)]
    reading: dict[str, Any] = _common_affix(rest)  # 12.3 kg reads as 12.3, then as below (1,234 kg)
    if reading:
        rest = [_without_affix(t, reading) for t in rest]
    negated = [_negated(t) for t in rest]
    if any(_is_number(n) for n in [n for t, n in zip(rest, negated) if n != t][:100]):
        reading["parentheses"] = True  # only when what they hold reads as a number: '(n/a)' is no negative
        rest = negated
    if any(_CURRENCY.match(t) for t in rest):  # amounts of money: $1,234.50 reads as 1,234.50, then as below
        reading["currency"] = True
        rest = [_without_currency(t) for t in rest]
    matches = [_PERCENT.match(t) for t in rest]
    if any(matches):  # their numbers stay for the checks below (12,345 %)
        reading["percent"] = True
        rest = [match.group(1) if match else t for t, match in zip(rest, matches)]
    if any(_THOUSANDS.match(t) for t in rest):
        reading["thousands"] = True
        rest = [t for t in rest if not _THOUSANDS.match(t)]
    markers = sorted({t for t in rest if t.casefold() in MISSING_MARKERS})
    if markers:
        reading["missing"] = markers
    return reading


def formatted_numbers(s: pd.Series) -> tuple[pd.Series, str] | None:
    """A text column whose every value is a number, some written with a currency sign, commas between digit
    groups, a percent sign or a unit ('$48,123.45', '45.3 %', '12.3 kg'), as float64, with how it was read; None for
    any other. A target of prices or weights so written is a regression, not 400 text classes, as the same column as
    a feature is numbers."""
    if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)):
        return None
    codes, texts = _text_levels(s)
    reading = {k: v for k, v in _number_reading(texts).items() if k != "missing"}
    if not reading or reading.get("clock"):  # a target of times of day stays text, as one of dates is refused
        return None
    nums = _numbers_from_texts(texts, reading)[0]
    if any(t is not None and np.isnan(x) for t, x in zip(texts, nums)):
        return None
    return pd.Series(np.append(nums, np.nan)[codes], index=s.index, name=s.name), _number_note(reading, 0, 1.0)


def _is_number(t: str) -> bool:
    """Whether one text reads as a number by the reading it alone asks for ('-1,234.50', '-$5')."""
    return not np.isnan(_numbers_from_texts([t], _number_reading([t]))[0][0])


def _text_levels(s: pd.Series) -> tuple[np.ndarray, list[str | None]]:
    """Factorize once, turn each distinct value into its level text (None for missing)."""
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    return codes, [_level_text(u) for u in uniques]


_BOOLEAN_TEXTS = {"1": "True", "0": "False", "true": "True", "false": "False"}


def _as_known_booleans(texts: list[str | None], known: set[str]) -> list[str | None]:
    """A column trained as booleans (levels True / False) reads 1 / 0 and true / false as them: the same
    values, written as numbers or in lower case by another tool, are not unseen levels."""
    if not known & {"True", "False"} or not known <= {"True", "False", MISSING_LEVEL, RARE_LEVEL}:
        return texts
    return [t if t is None or t in known else _BOOLEAN_TEXTS.get(t.casefold(), t) for t in texts]


def _level_text(v: Any) -> str | None:
    if missing_value(v):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))  # 3 and 3.0 are one level whatever dtype the column arrives with
    text = str(v).strip()
    return text or None


def parse_dates(s: pd.Series, reading: dict | None = None) -> tuple[pd.Series, int]:
    """Cells as naive datetimes (NaT if missing/unreadable), and how many were unreadable.

    ``reading`` (``date_reading``: a format and whether the day comes first) makes every batch read alike:
    without it pandas guesses the format from a batch's first cell, so '05/07/2021' would be 5 July beside
    '25/12/2021' and 7 May alone. Public so that checks outside fitting read dates as the preprocessor does.
    Its ``tz``, the time zone of a column trained with one, gives the clock the date parts are taken on: a
    time with a zone or an offset is converted to that zone's clock, one without is taken as written (a
    shop's 9 am is its own 9 am, whichever file it comes from). Without ``tz``, times with a zone are UTC.
    """
    zone = (reading or {}).get("tz")
    if pd.api.types.is_datetime64_any_dtype(s):
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            s = s.dt.tz_convert(zone or "UTC").dt.tz_localize(None)
        return s.reset_index(drop=True), 0
    codes, texts = _text_levels(s)
    parsed = _parse_date_texts(texts, reading).to_numpy()
    out = pd.Series(np.append(parsed, np.array(["NaT"], dtype=parsed.dtype))[codes])  # code -1 -> NaT
    n_bad = int(((codes >= 0) & out.isna().to_numpy()).sum())
    return out, n_bad


def date_reading(s: pd.Series) -> dict:
    """The one format a column of date texts is read with: of the formats pandas guesses for a sample of
    its cells, month or day first, the one that reads the most of them (ties: month first, pandas'
    default). Whether the day comes first also steers the cells that format does not read."""
    return {} if pd.api.types.is_datetime64_any_dtype(s) else _date_reading_of(_text_levels(s)[1])


def _date_reading_of(texts: list[str | None]) -> dict:
    """``date_reading`` of a column's distinct texts."""
    cand = [t for t in texts if _date_like(t)]
    probe = pd.Series(cand[:: max(1, len(cand) // DATE_FORMAT_PROBE)], dtype=object)  # spread over the column
    sample = probe.iloc[:: max(1, len(probe) // DATE_FORMAT_SAMPLE)][:DATE_FORMAT_SAMPLE]
    guesses: dict[str, int] = {}
    best, best_read = None, 0
    with warnings.catch_warnings():  # "Parsing dates in %d/%m/%Y format when dayfirst=False": asked for
        warnings.simplefilter("ignore")
        for text in sample:
            for dayfirst in (False, True):
                fmt = guess_datetime_format(text, dayfirst=dayfirst)
                if fmt is not None:
                    guesses[fmt] = guesses.get(fmt, 0) + 1
        for fmt in sorted(guesses, key=guesses.__getitem__, reverse=True)[:4]:
            read = int(pd.to_datetime(probe, format=fmt, errors="coerce", utc=True).notna().sum())
            if read > best_read:
                best, best_read = fmt, read
    if best is None:
        return {}
    day, month = best.find("%d"), best.find("%m")
    return {"format": best, "dayfirst": bool(0 <= day < month)}


def _parse_date_texts(texts: list[str | None], reading: dict | None = None) -> pd.DatetimeIndex:
    """Parse distinct texts: by the stored format (else the format pandas infers), then the leftovers as
    ISO 8601, then per element, day first where the format says so."""
    reading = reading or {}
    cand = pd.Series([t if _date_like(t) else None for t in texts], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = pd.to_datetime(cand, errors="coerce", utc=True, format=reading.get("format"))
        for fallback in ("ISO8601", "mixed"):  # ISO first: dateutil reads 2021-07-05 day first as 7 May
            retry = fast.isna() & cand.notna()
            if retry.any():
                slow = pd.to_datetime(cand[retry], format=fallback, errors="coerce", utc=True,
                                      dayfirst=bool(reading.get("dayfirst")))
                fast = fast.where(~retry, slow)
    stamps, zone = pd.DatetimeIndex(fast), reading.get("tz")
    if zone is None:
        return stamps.tz_localize(None)
    with_offset = cand.map(lambda t: t is not None and _TIME_OFFSET.search(t) is not None).to_numpy(dtype=bool)
    local = stamps.tz_convert(zone).tz_localize(None)  # an offset's time on the zone's clock
    return local.where(with_offset, stamps.tz_localize(None))  # no offset: as written


def _check_zone(spec: dict) -> None:
    """Refuse a stored date column whose time zone this machine cannot read: predictions would fail later."""
    zone = (spec.get("text") or {}).get("tz") if isinstance(spec, dict) and spec.get("kind") == "date" else None
    if zone is None:
        return
    try:
        pd.Timestamp(0, tz="UTC").tz_convert(zone)
    except Exception:  # pytz, zoneinfo and dateutil each raise their own error for an unknown zone
        raise ModelFormatError(f"preprocessor column {spec.get('name')!r} has time zone {zone!r}, which this machine "
                               "does not know; update its time zone data (tzdata) or re-export the model") from None


def _date_like(text: str | None) -> bool:
    """Dates hold digits like a year or d/m; without this, dateutil reads 'may' or '3rd' as dates."""
    return text is not None and _DATE_LIKE.search(text) is not None


def _date_part(dates: pd.Series, part: str) -> np.ndarray:
    values = getattr(dates.dt, part)
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _scale_stats(observed: np.ndarray, scaling: str, ordered: np.ndarray | None = None) -> dict:
    """What a numeric column needs: median for imputation and the scaling numbers.

    ``ordered`` is ``observed`` sorted, when the caller has it: the order statistics (median, quantiles,
    range) read it, with the same values as from ``observed``; mean and std keep ``observed``'s order.
    """
    ranked = observed if ordered is None else ordered
    stats: dict[str, Any] = {"median": float(np.median(ranked))}
    if scaling == "standard":
        std = float(observed.std())
        stats["mean"] = float(observed.mean())
        stats["std"] = std if std > 0 and math.isfinite(std) else 1.0
    elif scaling == "quantile":
        k = int(min(1000, max(2, len(observed))))
        q = np.percentile(ranked, np.linspace(0, 100, k))
        stats["quantiles"] = [float(v) for v in np.maximum.accumulate(q)]
    elif scaling == "robust":
        q25, q75 = np.quantile(ranked, [0.25, 0.75])
        spread = float(q75 - q25)
        if not spread > 0:  # the middle half is one value: half the range (0 for a constant column)
            spread = 0.5 * float(ranked.max() - ranked.min())
        stats["spread"] = spread if spread > 0 and math.isfinite(spread) else 0.0
    return stats


def _stats_by_scaling(observed: np.ndarray, scalings: tuple[str, ...]) -> dict[str, dict]:
    """``_scale_stats`` of every scaling, sorting the values once when more than one asks for them."""
    ordered = np.sort(observed) if len(scalings) > 1 else None
    return {s: _scale_stats(observed, s, ordered) for s in scalings}


def _take(s: pd.Series, rows: np.ndarray | None) -> pd.Series:
    """The cells at positions ``rows`` (None: all), index 0..n-1: one column at a time, so a part of a
    large table is never copied whole."""
    return s.reset_index(drop=True) if rows is None else s.iloc[rows].reset_index(drop=True)


def smooth_clip(z: np.ndarray) -> np.ndarray:
    """RealMLP's smooth clipping f(z) = z / sqrt(1 + (z / 3)^2): ~z near 0, tends to +-3.

    Written as z / hypot(1, z / 3) so that huge |z| gives +-3 instead of overflowing to 0 or NaN.
    """
    z = np.clip(z, -1e300, 1e300)
    return z / np.hypot(1.0, z / SMOOTH_CLIP)


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
    if scaling == "robust":
        spread = stats["spread"]
        z = (x - stats["median"]) / spread if spread > 0 else np.zeros_like(x)
        return smooth_clip(z)
    return x


def _no_feature_left(dropped: list[dict]) -> str:
    """One line on why nothing is left to learn from: each dropped column with its reason."""
    why = "; ".join(f"{d['name']!r}: {d['reason']}" for d in dropped[:5])
    more = f"; and {len(dropped) - 5} more" if len(dropped) > 5 else ""
    return f"no usable feature column, every one was dropped: {why}{more}"


def _unseen_note(name: str, n: int) -> str:
    """One wording for both paths (the nets: all zeros; XGBoost: missing), so a prediction's notes,
    which drop repeats, show one line per column."""
    return f"column {name!r}: {n} values not seen in training were treated as unknown"


_COUNTED_NOTE = re.compile(r"^(column .*?: )(\d+)( .*)$")


def merge_counted_notes(notes: list[str]) -> list[str]:
    """Notes of rows transformed a chunk at a time, as one transform of them all would word them: the
    counts of the same note about the same column are added ("column 'a': 3 values ..." once, not per chunk)."""
    totals: dict[tuple[str, str], int] = {}
    merged: list[str | tuple[str, str]] = []
    for note in notes:
        match = _COUNTED_NOTE.match(note)
        if match is None:
            merged.append(note)
            continue
        key = (match.group(1), match.group(3))
        if key not in totals:
            merged.append(key)
        totals[key] = totals.get(key, 0) + int(match.group(2))
    return list(dict.fromkeys(m if isinstance(m, str) else f"{m[0]}{totals[m]}{m[1]}" for m in merged))


def _unit_hint(reading: dict | None) -> str:
    """What a column read with a unit adds to its note of unreadable cells: another unit is not converted (the
    same words for every chunk of rows, so that their counts add up)."""
    reading = reading or {}
    if reading.get("unit"):
        return f" (the column is in {reading['unit']!r}: a number in another unit is not converted)"
    if reading.get("prefix"):
        return f" (the column is in {reading['prefix']!r}: an amount in another currency is not converted)"
    return ""


def _beyond_float32(x: np.ndarray) -> np.ndarray:
    """Infinities, and finite values too large for float32 (FLOAT32_MAX): the cells read as missing."""
    with np.errstate(invalid="ignore"):
        return np.abs(x) > FLOAT32_MAX


def _beyond_notes(name: str, x: np.ndarray, beyond: np.ndarray, what: str) -> list[str]:
    """One counted note per kind (infinite, too large), so that ``merge_counted_notes`` adds up each."""
    n_inf = int(np.isinf(x[beyond]).sum())
    counts = {"infinite values": n_inf, f"values {BEYOND_FLOAT32}": int(beyond.sum()) - n_inf}
    return [f"column {name!r}: {n} {kind} {what}" for kind, n in counts.items() if n]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class FeaturePreprocessor:
    """Turns a raw feature frame into a float32 matrix, learned from the training rows only.

    ``__init__`` stores options; ``fit`` learns every number it needs and keeps them as plain JSON
    (``to_dict``), so a saved model reproduces the matrix bit for bit without pickle. What ``fit``
    learns ends in ``_`` (scikit-learn's convention); the JSON keys keep their names without it.
    """

    def __init__(self, *, min_frequency: int | float | None = None, max_categories: int = 64,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.min_frequency = min_frequency
        self.max_categories = max_categories
        self.max_bytes = max_bytes
        self.scaling_ = "standard"
        self.columns_: list[dict] = []
        self.dropped_: list[dict] = []
        self.input_schema_: list[dict] = []
        self.notes_: list[str] = []
        self.min_count_ = 0
        self.fitted_ = False
        self._scalings: tuple[str, ...] = ()  # fit_scalings: every scaling whose statistics fit keeps

    # -- fit --------------------------------------------------------------------------------

    def fit(self, df: pd.DataFrame, scaling: str = "standard", *, rows: np.ndarray | None = None
            ) -> FeaturePreprocessor:
        """Type every column, decide what to drop, and learn imputation, scaling and levels.

        ``rows``: the positions of the rows to learn from (None: all), read a column at a time.
        """
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {', '.join(map(repr, SCALINGS))}, got {scaling!r}")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"fit expects a pandas DataFrame, got {type(df).__name__}")
        names = [str(c) for c in df.columns]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise DataError(f"duplicate column names {', '.join(map(repr, dups))}; make them unique")
        n = len(df) if rows is None else len(rows)
        if n == 0:
            raise DataError("cannot fit the preprocessing on 0 rows; pass training rows")
        self.scaling_, self.columns_, self.dropped_, self.notes_ = scaling, [], [], []
        self.input_schema_ = [{"name": n, "dtype": str(df[c].dtype)} for n, c in zip(names, df.columns)]
        self.min_count_ = self._resolve_min_count(n)
        for name, col in zip(names, df.columns):
            spec = self._fit_column(name, _take(df[col], rows))
            if spec is not None:
                self.columns_.append(spec)
        if not self.columns_:
            raise DataError(_no_feature_left(self.dropped_))
        used = {c["name"] for c in self.columns_}
        for item in self.input_schema_:
            item["used"] = item["name"] in used
        self._guard_fit_memory(n)
        self.fitted_ = True
        return self

    @classmethod
    def fit_scalings(cls, df: pd.DataFrame, scalings: list[str] | tuple[str, ...], *,
                     rows: np.ndarray | None = None, **options: Any) -> dict[str, FeaturePreprocessor]:
        """One fitted preprocessor per scaling, equal to ``fit(df, scaling)`` of each.

        Only the numbers' statistics differ between scalings, so the columns are read, typed and
        sorted once instead of once per scaling (1M rows x 100 columns, 3 scalings: ~3x faster).
        """
        scalings = tuple(dict.fromkeys(scalings))
        if not scalings or any(s not in SCALINGS for s in scalings):
            raise ValueError(f"scalings must be among {', '.join(map(repr, SCALINGS))}, got {scalings!r}")
        first = cls(**options)
        first._scalings = scalings
        first.fit(df, scalings[0], rows=rows)
        first._scalings = ()
        return {s: first._with_scaling(s) for s in scalings}

    def _with_scaling(self, scaling: str) -> FeaturePreprocessor:
        """A copy that scales with ``scaling``'s statistics, kept by a fit of ``fit_scalings``."""
        pre = copy.deepcopy(self)
        pre.scaling_ = scaling
        for spec in pre.columns_:
            for holder in [spec] if spec["kind"] == "numeric" else spec.get("parts", []):
                holder["stats"] = holder.pop("stats_by")[scaling]
        return pre

    def _stats(self, observed: np.ndarray, holder: dict) -> dict:
        """The statistics of this fit's scaling, into ``holder``; under ``fit_scalings`` every scaling's too."""
        if not self._scalings:
            holder["stats"] = _scale_stats(observed, self.scaling_)
            return holder
        holder["stats_by"] = _stats_by_scaling(observed, self._scalings)
        holder["stats"] = holder["stats_by"][self.scaling_]
        return holder

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
        self.dropped_.append({"name": name, "reason": reason})
        self.notes_.append(f"dropped column {name!r}: {reason}")

    def _fit_column(self, name: str, s: pd.Series) -> dict | None:
        """Route one column to numeric / date / categorical, or drop it."""
        n, n_missing = len(s), int(s.isna().sum())
        if n_missing == n:
            self._drop(name, "all values are missing")
            return None
        if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            return self._fit_categorical(name, s)
        if pd.api.types.is_datetime64_any_dtype(s):
            zoned = {"tz": str(s.dt.tz)} if isinstance(s.dtype, pd.DatetimeTZDtype) else {}  # parts on its clock
            return self._fit_date(name, s, parse_dates(s, zoned)[0], zoned)
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
        reading = _number_reading(texts)
        nums, marker = _numbers_from_texts(texts, reading)
        counted = codes[codes >= 0]
        n_numbers = int((~np.isnan(nums) & present)[counted].sum())
        n_marked = int(marker[counted].sum())
        if n_marked == n_present:
            self._drop(name, f"all values are missing (written {', '.join(map(repr, reading['missing']))})")
            return None
        frac_num = n_numbers / (n_present - n_marked)
        if frac_num >= 0.95 and reading.get("clock"):
            self.notes_.append(f"column {name!r} holds times of day; read them as seconds since midnight"
                               f"{_clock_note(reading, n_marked, frac_num)}")
            return self._fit_numeric(name, s, source="text", reading=reading)
        if frac_num >= 0.95:
            self.notes_.append(f"column {name!r} holds text but {_number_note(reading, n_marked, frac_num)}; "
                               f"read it as numbers{'' if frac_num == 1 else ' (the other cells as missing)'}")
            return self._fit_numeric(name, s, source="text", reading=reading)
        looks_dated = np.array([_date_like(t) for t in texts], dtype=bool)
        if looks_dated[codes[codes >= 0]].sum() >= 0.9 * n_present:
            reading = _date_reading_of(texts)  # the distinct texts this column was factorized into above
            dates, _ = parse_dates(s, reading)
            if dates.notna().sum() >= 0.9 * n_present:
                return self._fit_date(name, s, dates, reading)
        if n_present == len(s) >= ID_MIN_ROWS and len(set(texts)) == len(s):
            self._drop(name, "every value is different (looks like a key or free text)")
            return None
        if frac_num > 0:
            self.notes_.append(f"column {name!r} mixes numbers ({frac_num:.0%}) and text; "
                               f"treated as categories")
        return self._fit_categorical(name, s)

    def _fit_numeric(self, name: str, s: pd.Series, source: str, reading: dict | None = None) -> dict | None:
        x, _ = read_numbers(s, reading)
        beyond = _beyond_float32(x)
        if beyond.any():
            self.notes_.extend(_beyond_notes(name, x, beyond, "treated as missing"))
            x = np.where(beyond, np.nan, x)
        observed = x[~np.isnan(x)]
        if len(observed) == 0:
            self._drop(name, "no value could be read as a number")
            return None
        has_missing = len(observed) < len(x)
        if not has_missing and np.all(observed == observed[0]):
            self._drop(name, f"constant (every value is {to_scalar(observed[0])!r})")
            return None
        if not has_missing and not (reading or {}).get("clock") and self._looks_like_id(observed):
            self._drop(name, "integers that are all different and sorted or fill a range (looks like a row ID)")
            return None
        spec = {"name": name, "kind": "numeric", "source": source, "missing_indicator": has_missing}
        if reading:
            spec["text"] = reading
        return self._stats(observed, spec)

    @staticmethod
    def _looks_like_id(x: np.ndarray) -> bool:
        n = len(x)
        if n < ID_MIN_ROWS or not np.all(np.mod(x, 1) == 0) or len(np.unique(x)) != n:
            return False
        diffs = np.diff(x)
        is_sorted = bool(np.all(diffs > 0) or np.all(diffs < 0))
        fills_range = (x.max() - x.min() + 1) <= 2 * n
        return is_sorted or fills_range

    def _fit_date(self, name: str, s: pd.Series, dates: pd.Series | None = None,
                  reading: dict | None = None) -> dict | None:
        if dates is None:
            dates, _ = parse_dates(s)
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
                parts.append(self._stats(obs, {"part": part}))
        if not parts and not has_missing:
            self._drop(name, "constant (every date has the same parts)")
            return None
        kept = ", ".join(p["part"] for p in parts) or "none"
        extra = f"; {n_bad} unreadable dates treated as missing" if n_bad else ""
        self.notes_.append(f"column {name!r} read as dates -> {kept}"
                           f"{' + missing indicator' if has_missing else ''}{extra}")
        if reading and reading.get("dayfirst"):
            self.notes_[-1] += f" (day before month: {reading['format']})"
        if reading and reading.get("tz"):
            self.notes_[-1] += f" (on the clock of {reading['tz']})"
        spec = {"name": name, "kind": "date", "parts": parts, "missing_indicator": has_missing}
        return {**spec, "text": reading} if reading else spec

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
        frequent = int((counts >= self.min_count_).sum())
        if frequent > self.max_categories:  # too many for one-hot: one column of codes, embedded by the net
            spec["encoding"] = "code"
        self._set_levels(spec, CODE_MAX_LEVELS if spec.get("encoding") == "code" else self.max_categories)
        if len(spec["levels"]) <= 1:
            self._drop(name, f"every level is rarer than {self.min_count_} rows")
            return None
        if spec.get("encoding") == "code":
            self.notes_.append(f"column {name!r} has {frequent} frequent values (more than {self.max_categories}): "
                               "the nets learn an embedding per level instead of one-hot columns")
        elif len(counts) > self.max_categories:
            self.notes_.append(f"column {name!r} has {len(counts)} distinct values; kept at most the "
                               f"{self.max_categories} most frequent, the rest are {RARE_LEVEL!r}")
        spec["gbt_levels"] = self._gbt_levels(counts)
        if len(counts) > GBT_MAX_LEVELS:
            self.notes_.append(f"column {name!r}: XGBoost keeps the {GBT_MAX_LEVELS} most frequent of its "
                               f"{len(counts)} values; the others are missing for it")
        return spec

    @staticmethod
    def _gbt_levels(counts: pd.Series, cap: int | None = None) -> list[str]:
        """XGBoost's levels: every training level (sorted), the ``cap`` (GBT_MAX_LEVELS) most frequent at most.

        No min_frequency here: XGBoost's own knobs (max_cat_to_onehot, min_child_weight, lambda on the
        sort key G / (H + lambda) of its partition splits) decide what a rare level is worth.
        """
        cap = GBT_MAX_LEVELS if cap is None else cap
        if len(counts) <= cap:
            return sorted(str(lvl) for lvl in counts.index)
        ranked = sorted(((int(c), str(lvl)) for lvl, c in counts.items()), key=lambda t: (-t[0], t[1]))
        return sorted(lvl for _, lvl in ranked[:cap])

    def _narrow_gbt_levels(self, n: int) -> None:
        """In a big table, XGBoost's levels per column fit its one-byte bin index (GBT_BYTE_LEVELS)."""
        if n * len(self._gbt_names()) < GBT_NARROW_CELLS:
            return
        for spec in self.columns_:
            if spec["kind"] == "categorical" and len(spec.get("gbt_levels", ())) > GBT_BYTE_LEVELS:
                spec["gbt_levels"] = self._gbt_levels(spec["counts"], GBT_BYTE_LEVELS)
                self.notes_.append(f"column {spec['name']!r}: XGBoost keeps the {GBT_BYTE_LEVELS} most frequent "
                                   f"of its {len(spec['counts'])} values in a table this big (its bin index "
                                   "stays one byte per cell); the others are missing for it, the nets keep them")

    def _set_levels(self, spec: dict, cap: int) -> None:
        """Frequent levels (sorted), then __rare__ and __missing__ when needed."""
        counts: pd.Series = spec["counts"]
        ranked = sorted(((int(c), str(lvl)) for lvl, c in counts.items()), key=lambda t: (-t[0], t[1]))
        levels = sorted(lvl for c, lvl in ranked[:cap] if c >= self.min_count_)
        if len(levels) < len(ranked):
            levels.append(RARE_LEVEL)
        if spec["has_missing"]:
            levels.append(MISSING_LEVEL)
        spec["levels"] = levels

    def _guard_fit_memory(self, n: int) -> None:
        """Lower the category cap (down to 8) before refusing a matrix too big for memory."""
        self._narrow_gbt_levels(n)
        cap = self.max_categories
        while n * self.n_features_ * 4 > self.max_bytes and cap > 8:
            cap = max(8, cap // 2)
            for spec in self.columns_:
                if spec["kind"] == "categorical" and spec.get("encoding") != "code":
                    self._set_levels(spec, cap)
        if cap != self.max_categories:
            self.notes_.append(f"kept at most {cap} levels per categorical column (not "
                               f"{self.max_categories}) so the feature matrix fits in {_fmt_bytes(self.max_bytes)}")
        for spec in self.columns_:
            spec.pop("counts", None)
            spec.pop("has_missing", None)
        self._check_size(n, "drop columns or sample rows, or raise max_bytes")

    def _check_size(self, n: int, fix: str) -> None:
        size = n * self.n_features_ * 4
        if size > self.max_bytes:
            raise DataError(f"the feature matrix would take {_fmt_bytes(size)} ({n} rows x "
                            f"{self.n_features_} columns x 4 bytes), over the {_fmt_bytes(self.max_bytes)} "
                            f"limit; {fix}")

    # -- output names -----------------------------------------------------------------------

    def _outputs(self) -> list[tuple[str, bool]]:
        """(name, holds a number or date part) per output column of transform, in order."""
        out: list[tuple[str, bool]] = []
        for spec in self.columns_:
            name, kind = spec["name"], spec["kind"]
            if kind == "numeric":
                out.append((name, True))
            elif kind == "date":
                out.extend((f"{name}__{p['part']}", True) for p in spec["parts"])
            elif spec.get("encoding") == "code":
                out.append((f"{name}__code", False))
            else:
                out.extend((f"{name}={lvl}", False) for lvl in spec["levels"])
            if spec.get("missing_indicator"):
                out.append((f"{name}__missing", False))
        return out

    @property
    def feature_names_(self) -> list[str]:
        return [name for name, _ in self._outputs()]

    @property
    def continuous_features_(self) -> list[int]:
        """Indices of transform's output columns that come from numbers or date parts (scaled values),
        not missing indicators or one-hot levels: the columns numeric embeddings apply to."""
        return [j for j, (_, continuous) in enumerate(self._outputs()) if continuous]

    @property
    def categorical_features_(self) -> list[tuple[int, int]]:
        """(output column, number of codes) of each column of level codes: 0 is a level not seen in training,
        1..L the training levels; the nets look them up in learned embeddings."""
        found, j = [], 0
        for spec in self.columns_:
            if spec.get("encoding") == "code":
                found.append((j, len(spec["levels"]) + 1))
            j += self._width(spec)
        return found

    @staticmethod
    def _width(spec: dict) -> int:
        """How many output columns a column spec makes."""
        if spec["kind"] == "numeric":
            width = 1
        elif spec["kind"] == "date":
            width = len(spec["parts"])
        else:
            width = 1 if spec.get("encoding") == "code" else len(spec["levels"])
        return width + int(bool(spec.get("missing_indicator")))

    @property
    def n_features_(self) -> int:
        return len(self.feature_names_)

    @property
    def required_columns_(self) -> list[str]:
        """The input columns transform needs (dropped ones are not required)."""
        return [spec["name"] for spec in self.columns_]

    # -- transform --------------------------------------------------------------------------

    def _columns(self, df: pd.DataFrame) -> dict[str, pd.Series]:
        """The required input columns by name; extra columns are ignored."""
        if not self.fitted_:
            raise RuntimeError("FeaturePreprocessor is not fitted; call fit(train_frame) first")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        by_name = {str(c): c for c in df.columns}
        missing = [name for name in self.required_columns_ if name not in by_name]
        if missing:
            raise DataError(f"input is missing column{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(repr(m) for m in missing[:10])}; "
                            f"pass a table with the columns used in training")
        out = {}
        for name in self.required_columns_:
            col = df[by_name[name]]
            if isinstance(col, pd.DataFrame):
                raise DataError(f"input has column {name!r} more than once; keep one")
            out[name] = col
        return out

    def transform(self, df: pd.DataFrame, report: list[str] | None = None, *,
                  rows: np.ndarray | None = None) -> np.ndarray:
        """The float32 (n, n_features_) matrix; notes about unreadable or unseen cells go to report.

        ``rows``: the positions of the rows to transform (None: all), read a column at a time, so a
        part of a large table needs no copy of that part's frame.
        """
        cols = self._columns(df)
        n = len(df) if rows is None else len(rows)
        self._check_size(n, "transform the rows in smaller chunks")
        report = report if report is not None else []
        out = np.zeros((n, self.n_features_), dtype=np.float32)
        j = 0
        for spec in self.columns_:
            block = self._block(spec, _take(cols[spec["name"]], rows), report)
            out[:, j:j + block.shape[1]] = block
            j += block.shape[1]
        return out

    def _block(self, spec: dict, s: pd.Series, report: list[str]) -> np.ndarray:
        kind = spec["kind"]
        if kind == "categorical" and spec.get("encoding") == "code":
            return (self._level_codes(spec, s, report) + 1).astype(np.float64)[:, None]  # unseen (-1) -> 0
        if kind == "categorical":
            codes = self._level_codes(spec, s, report)
            block = np.zeros((len(s), len(spec["levels"])), dtype=np.float64)
            rows = np.flatnonzero(codes >= 0)
            block[rows, codes[rows]] = 1.0
            return block
        raw, missing = self._raw_numbers(spec, s, report)
        blocks = [_apply_scaling(x, stats, self.scaling_) for x, stats in raw]
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
            x, n_bad = read_numbers(s, spec.get("text"))
            beyond = _beyond_float32(x)
            if n_bad:
                what = "times of day" if (spec.get("text") or {}).get("clock") else "numbers"
                report.append(f"column {name!r}: {n_bad} values could not be read as {what} "
                              f"and were treated as missing{_unit_hint(spec.get('text'))}")
            if beyond.any():
                report.extend(_beyond_notes(name, x, beyond, "were treated as missing"))
                x = np.where(beyond, np.nan, x)
            return [(x, spec["stats"])], np.isnan(x)
        dates, n_bad = parse_dates(s, spec.get("text"))
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
        texts = _as_known_booleans(texts, set(levels))
        mapped = np.array([missing_code if t is None else index.get(t, other_code) for t in texts] + [missing_code],
                          dtype=np.int64)
        known = set(levels)
        unseen = np.array([t is not None and t not in known for t in texts] + [False], dtype=bool)
        n_unseen = int(unseen[codes].sum()) if len(codes) else 0
        if n_unseen and other_code < 0:
            report.append(_unseen_note(spec["name"], n_unseen))
        return mapped[codes]  # code -1 picks the appended missing entry

    def transform_for_gbt(self, df: pd.DataFrame, report: list[str] | None = None, *,
                          rows: np.ndarray | None = None) -> pd.DataFrame:
        """Same columns for XGBoost: raw float32 numbers (NaN kept), categories fixed at fit.

        The numbers are written into one float32 block that the frame keeps without a copy (a frame
        built from a dict of columns would stack them into a second block); ``rows`` as in ``transform``.
        """
        cols = self._columns(df)
        n = len(df) if rows is None else len(rows)
        report = report if report is not None else []
        names = self._gbt_names()
        numbers = [name for name, is_number in names if is_number]
        block = np.empty((len(numbers), n), dtype=np.float32)  # pandas keeps a block as (columns, rows)
        categories: list[tuple[int, str, pd.Categorical]] = []
        k = 0
        for spec in self.columns_:
            name, s = spec["name"], _take(cols[spec["name"]], rows)
            if spec["kind"] == "categorical":
                categories.append((len(categories) + k, name, self._gbt_categories(spec, s, report)))
            elif spec["kind"] == "numeric":
                block[k] = self._raw_numbers(spec, s, report)[0][0][0]
                k += 1
            else:
                for x, _ in self._raw_numbers(spec, s, report)[0]:
                    block[k] = x
                    k += 1
        frame = pd.DataFrame(block.T, columns=numbers, index=pd.RangeIndex(n), copy=False)
        for position, name, values in categories:  # each its own block: the numbers stay as they are
            frame.insert(position, name, values)
        return frame

    def _gbt_names(self) -> list[tuple[str, bool]]:
        """(name, is a number) of each column of ``transform_for_gbt``, in order, each once: a date's part is
        NAME__PART, with '_' added while another column has that name (a table may hold 'd' and 'd__year')."""
        out: list[tuple[str, bool]] = []
        taken = {spec["name"] for spec in self.columns_}
        for spec in self.columns_:
            if spec["kind"] == "categorical":
                out.append((spec["name"], False))
            elif spec["kind"] == "numeric":
                out.append((spec["name"], True))
            else:
                for p in spec["parts"]:
                    name = f"{spec['name']}__{p['part']}"
                    while name in taken:
                        name += "_"
                    taken.add(name)
                    out.append((name, True))
        return out

    def _gbt_categories(self, spec: dict, s: pd.Series, report: list[str]) -> pd.Categorical:
        """A categorical column for XGBoost: its gbt_levels, or (saved before them) its one-hot levels."""
        if "gbt_levels" in spec:
            return self._gbt_categorical(spec, s, report)
        cats = [lvl for lvl in spec["levels"] if lvl != MISSING_LEVEL]
        codes = self._level_codes(spec, s, report)
        miss = spec["levels"].index(MISSING_LEVEL) if MISSING_LEVEL in spec["levels"] else -2
        codes = np.where(codes == miss, -1, codes)
        return pd.Categorical.from_codes(codes, categories=cats)

    @staticmethod
    def _gbt_categorical(spec: dict, s: pd.Series, report: list[str]) -> pd.Categorical:
        """The column as a Categorical over its gbt_levels; missing, unseen or past-the-cap -> NaN.

        Work is per distinct value plus one code per row: nothing rows x levels wide.
        """
        levels = spec["gbt_levels"]
        index = {lvl: i for i, lvl in enumerate(levels)}
        codes, texts = _text_levels(s)
        texts = _as_known_booleans(texts, set(levels))
        mapped = np.array([index.get(t, -1) if t is not None else -1 for t in texts] + [-1], dtype=np.int64)
        unseen = np.array([t is not None and t != MISSING_LEVEL and t not in index for t in texts] + [False],
                          dtype=bool)
        n_unseen = int(unseen[codes].sum()) if len(codes) else 0
        if n_unseen:
            report.append(_unseen_note(spec["name"], n_unseen))
        return pd.Categorical.from_codes(mapped[codes], categories=levels)  # -1 is NaN

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Everything transform needs, as plain JSON types."""
        if not self.fitted_:
            raise RuntimeError("FeaturePreprocessor is not fitted; call fit(train_frame) first")
        return {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "scaling": self.scaling_,
            "min_frequency": self.min_frequency, "min_count": self.min_count_,
            "max_categories": self.max_categories, "max_bytes": self.max_bytes,
            "input_schema": [dict(item) for item in self.input_schema_],
            "columns": [dict(spec) for spec in self.columns_],
            "dropped": [dict(item) for item in self.dropped_],
            "notes": list(self.notes_), "feature_names": self.feature_names_,
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeaturePreprocessor:
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise ModelFormatError("preprocessor data is not an automl_dnn feature preprocessor; "
                                   "re-export the model")
        if d.get("version") not in READABLE_VERSIONS:
            raise ModelFormatError(f"preprocessor format version {d.get('version')!r} is not "
                                   f"supported (this version reads {READABLE_VERSIONS[0]} to "
                                   f"{READABLE_VERSIONS[-1]}); upgrade automl-dnn")
        if d.get("scaling") not in SCALINGS:
            raise ModelFormatError(f"preprocessor scaling {d.get('scaling')!r} is not known to this version "
                                   f"({', '.join(SCALINGS)}); upgrade automl-dnn")
        try:
            pre = cls(min_frequency=d["min_frequency"], max_categories=int(d["max_categories"]),
                      max_bytes=int(d["max_bytes"]))
            pre.scaling_, pre.min_count_ = d["scaling"], int(d["min_count"])
            pre.input_schema_, pre.columns_ = list(d["input_schema"]), list(d["columns"])
            pre.dropped_, pre.notes_ = list(d["dropped"]), list(d["notes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(f"preprocessor data is incomplete ({exc!r}); re-export the model") from None
        pre.fitted_ = True
        if pre.feature_names_ != d.get("feature_names"):
            raise ModelFormatError("preprocessor feature names do not match its columns; re-export the model")
        for spec in pre.columns_:
            _check_zone(spec)
        return pre

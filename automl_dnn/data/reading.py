"""Reading a table: ``builtin:NAME``, CSV/TSV/TXT (optionally compressed) or Parquet, never written to.

Text files are sniffed (encoding, delimiter, decimal mark) rather than configured, files that are no
table (binary, HTML) are refused with a one-line ``DataError``, and what was decided on the user's
behalf is kept as notes in ``df.attrs[NOTES_ATTR]``.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import gzip
import lzma
import os
import re
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from automl_dnn.data.builtins import BUILTINS, builtin_info, is_builtin
from automl_dnn.errors import DataError, first_line

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_FORMATS = ".csv, .tsv, .txt, .parquet, .pq, and compressed text (.csv.gz, .csv.bz2, .csv.xz, .csv.zip, ...)"
#: compressed text by its suffix: pandas' name of the compression (a downloaded table often comes zipped)
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}
NOTES_ATTR = "automl_dnn_notes"  # DataFrame.attrs key carrying read_table's notes to load_dataset
DUPLICATES_ATTR = "automl_dnn_duplicates"  # ... and the names that several columns had before ``dedupe``
PARQUET_BUFFER = 1 << 20  # bytes read at a time from a Parquet file (pre-buffering off: see _read_parquet)


def read_table(source: str | os.PathLike) -> pd.DataFrame:
    """Read ``builtin:NAME`` or a CSV/TSV/TXT (optionally gzip, bz2, xz or ZIP compressed: one table, beside
    what macOS adds) or Parquet file.

    Text files: the delimiter is sniffed among comma, semicolon, tab and pipe (or taken from Excel's
    ``sep=X`` first line); the encoding is UTF-8 (a BOM is allowed), UTF-16 (with a BOM, or without one when every
    other byte is NUL), else Windows-1252, else latin-1; a semicolon file whose numbers all use decimal commas is
    read with ``,`` as the decimal mark.
    Binary files (ZIP/xlsx, xls, PDF, SQLite, anything with control bytes) and HTML pages are refused.
    Notes about the reading (e.g. renamed duplicate columns) are in ``df.attrs["automl_dnn_notes"]``.
    The file is only read, never written.
    """
    if is_builtin(source):
        df = builtin_info(str(source)).loader()
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


def numpy_backed(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with its pyarrow-backed columns (``pd.ArrowDtype``, as ``pd.read_parquet(dtype_backend="pyarrow")``
    makes them) converted as ``read_table`` converts a Parquet file's: the preprocessing reads numpy and pandas
    dtypes, and Arrow's own crash it (a ``date32`` column, a list column) or read a ``duration`` as text."""
    arrow = [j for j, dtype in enumerate(df.dtypes) if isinstance(dtype, pd.ArrowDtype)]
    if not arrow:
        return df
    import pyarrow as pa

    df = df.copy(deep=False)
    for j in arrow:
        column = pa.chunked_array(df.iloc[:, j].array.__arrow_array__()).to_pandas()
        df.isetitem(j, column.set_axis(df.index))
    return df


def release_table_memory() -> None:
    """Hand the memory of freed Parquet tables back to the system (call once the table's frame is gone).

    Arrow's allocator keeps what it freed for reuse: without this a dropped 1M x 100 frame (~1 GB)
    stays in the process's resident memory for good. Nothing to do when no Parquet file was read.
    """
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None:
        pyarrow.default_memory_pool().release_unused()


def _check_file(path: Path) -> str:
    """Refuse missing, directory, empty and unsupported files; return 'parquet' or 'text'."""
    if not path.exists():
        raise DataError(f"data file '{path}' not found; check the path, or use builtin:NAME "
                        f"({', '.join(sorted(BUILTINS))})")
    if path.is_dir():
        raise DataError(f"'{path}' is a directory, not a data file; pass a file inside it")
    name = path.name.lower()
    if _compression(path) is not None:
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


def dedupe(names: list[str]) -> list[str]:
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


def duplicated(names: list[str]) -> list[str]:
    """The names that more than one column has."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def duplicate_note(names: list[str]) -> list[str]:
    """The note saying which duplicate names were renamed (none when all are unique)."""
    dups = duplicated(names)
    if not dups:
        return []
    return [f"duplicate column names {', '.join(repr(d) for d in dups)} were made unique "
            f"by adding .1, .2, ..."]


def _read_parquet(path: Path, notes: list[str]) -> pd.DataFrame:
    """The table with one copy of the data in memory, not three.

    ``pre_buffer=False`` decodes column chunk by column chunk instead of first loading the whole
    (compressed) file (1M x 100: 1.7 GB -> 1.0 GB peak); ``split_blocks`` + ``self_destruct`` hand
    each column's Arrow buffer to pandas (numbers without a copy) instead of consolidating them into
    one 2-D block beside the Arrow table (twice the table).
    """
    import pyarrow.parquet as pq

    try:  # the dataset API refuses duplicate column names
        table = pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_BUFFER).read()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise DataError(f"could not read '{path}' as Parquet ({first_line(exc)}); "
                        f"check that it is a Parquet file") from None
    names = [str(n) for n in table.column_names]
    notes.extend(duplicate_note(names))
    table = table.rename_columns(dedupe(names))
    df = table.to_pandas(split_blocks=True, self_destruct=True)
    del table  # self_destruct: the Arrow buffers go as their columns are converted
    if not isinstance(df.index, pd.RangeIndex):
        df = df.reset_index()  # an index saved by pandas is data too
    df.attrs[DUPLICATES_ATTR] = duplicated(names)
    return df


def _compression(path: Path) -> str | None:
    """The compression its suffix names (``COMPRESSIONS``), None for plain text or Parquet."""
    name = path.name.lower()
    return next((how for suffix, how in COMPRESSIONS.items() if name.endswith(suffix)), None)


def _open(path: Path, compression: str | None) -> Any:
    """The file's text bytes, uncompressed; a ZIP archive must hold one table (``_zip_member``)."""
    if compression == "zip":
        with zipfile.ZipFile(path) as archive:  # closed at once on an error; the member keeps the file open
            return archive.open(_zip_member(path, archive))
    opener = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}.get(compression or "", open)
    return opener(path, "rb")


#: what macOS's Finder and zip add to an archive beside the files: resource forks under __MACOSX/, AppleDouble
#: ``._NAME`` files, and the folder's .DS_Store
_ZIP_NOISE = re.compile(r"(^|/)(__MACOSX/|\._[^/]*$|\.DS_Store$)")


def _zip_member(path: Path, archive: zipfile.ZipFile) -> str:
    """The one file of a ZIP archive, leaving out folders and what macOS adds (``_ZIP_NOISE``); several files are
    refused naming them (which one is the table is the user's call)."""
    names = [name for name in archive.namelist() if not name.endswith("/") and not _ZIP_NOISE.search(name)]
    if len(names) != 1:
        raise DataError(f"'{path}' holds {len(names)} files ({', '.join(map(repr, names[:3]))}"
                        f"{', ...' if len(names) > 3 else ''}); a ZIP archive must hold one table: extract the "
                        "one to use and pass it")
    return names[0]


@contextlib.contextmanager
def _csv_source(path: Path, compression: str | None) -> Iterator[tuple[Any, str | None]]:
    """What pandas reads and the compression it is told: a ZIP archive's one table as an open member (pandas
    refuses an archive of several entries, macOS's resource forks included), any other file by its path."""
    if compression != "zip":
        yield path, compression
        return
    with _open(path, compression) as member:
        yield member, None


def _read_sample(path: Path, compression: str | None, size: int = 65536) -> bytes:
    try:
        with _open(path, compression) as fh:
            return fh.read(size)
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise DataError(f"could not read '{path}' ({first_line(exc)}); "
                        f"check that it is a valid {compression or 'text'} file") from None


def _encoding(sample: bytes) -> str:
    """utf-8 (BOM allowed) when the sample decodes, else Windows-1252 (Excel's 'CSV' on Windows: latin-1's letters
    plus € and curly quotes where latin-1 has unprintable codes), else latin-1 (which never fails)."""
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
            return encoding
        except UnicodeDecodeError:
            continue
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


UTF16_NAMES = {"utf-16-le": "UTF-16 (little-endian)", "utf-16-be": "UTF-16 (big-endian)"}
UTF16_MIN_CHARS = 8  # fewer characters than this tell UTF-16 from binary data too weakly


def _utf16_byte_order(sample: bytes) -> tuple[str, bool] | None:
    """('utf-16-le' or 'utf-16-be', reliably) when the sample's NUL bytes sit where UTF-16 puts the high bytes of
    ASCII and latin-1 characters: reliably when at least every other byte of one parity is NUL and at most one in
    twenty of the other (a CJK character like U+4E00 has a NUL low byte); not reliably (text mostly CJK, say) when
    one parity still has over three times the other's NULs; None otherwise (binary data)."""
    n_chars = len(sample) // 2
    if n_chars < UTF16_MIN_CHARS:
        return None
    nul_even, nul_odd = sample[0:2 * n_chars:2].count(0), sample[1:2 * n_chars:2].count(0)
    for encoding, high, low in (("utf-16-le", nul_odd, nul_even), ("utf-16-be", nul_even, nul_odd)):
        if high >= n_chars / 2 and low <= high / 20:
            return encoding, True
        if high >= n_chars / 8 and low < high / 3:
            return encoding, False
    return None


def _utf16_without_bom(path: Path, sample: bytes) -> str:
    """The encoding of a sample holding NUL bytes: UTF-16 without a BOM (Windows' "Unicode text", PowerShell 5's
    redirections) when its NULs and characters say so reliably; else the file is refused in one line, naming
    UTF-16 and the conversion when it looks like UTF-16, as binary data otherwise."""
    found = _utf16_byte_order(sample)
    if found is None:
        raise DataError(f"'{path}' does not look like a text table (it holds binary data); "
                        f"pass a CSV, TSV or Parquet file")
    encoding, reliably = found
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=False)
    if not reliably or "\ufffd" in text or "\x00" in text:  # a lone surrogate or a NUL character: no UTF-16 text
        raise DataError(f"'{path}' looks like {UTF16_NAMES[encoding]} text without a byte-order mark, but cannot be "
                        f"read as such with certainty; save it as UTF-8 (e.g. {_iconv(path, encoding)})")
    return encoding


def _iconv(path: Path, encoding: str) -> str:
    """The command that converts a UTF-16 file to UTF-8 beside it."""
    order = "UTF-16LE" if encoding.endswith("le") else "UTF-16BE" if encoding.endswith("be") else "UTF-16"
    return f"iconv -f {order} -t UTF-8 {path.name} > utf8-{path.name}"


#: Files users pass by mistake, known by their first bytes: what they are and what to do instead.
_NOT_A_TABLE = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?); save the sheet as CSV, or unzip it"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Office document (an Excel .xls workbook?); save the sheet as CSV"),
    (b"%PDF", "a PDF document; export the table as CSV"),
    (b"SQLite format 3\x00", "an SQLite database; export the table as CSV"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")  # C0 control characters other than tab, newlines, \v, \f
_EXCEL_SEP_LINE = re.compile(r'^\ufeff?"?sep=(.)"?\r?$')  # Excel's optional first line naming the delimiter
#: the whole part of a decimal-comma number: 1234, or groups of three digits after points or spaces (1.234, 1 234;
#: France writes a no-break space, U+00A0 or U+202F, between them), one kind of mark in a number
_COMMA_WHOLE = r"(?:\d{1,3}(?:\.\d{3})+|\d{1,3}(?: \d{3})+|\d{1,3}(?:\u00a0\d{3})+|\d{1,3}(?:\u202f\d{3})+|\d+)"
_COMMA_DECIMAL = re.compile(rf"[-+]?{_COMMA_WHOLE},\d+")  # 3,5, 1.234,56 and 1 234,56
#: an amount of a decimal-comma file: 1.234,56, 1 234,56, 3,5, 12, with at most one currency sign before or after
#: (12,50 €)
_COMMA_AMOUNT = re.compile(rf"([-+]?)\s?[$\u20ac\u00a3\u00a5]?\s?({_COMMA_WHOLE}(?:,\d+)?)\s?[$\u20ac\u00a3\u00a5]?")
_DIGIT_GROUP_MARKS = re.compile("[. \u00a0\u202f]")
_POINT_DECIMAL = re.compile(r"[-+]?\d*\.\d+")
_THOUSANDS_POINT = re.compile(r"[-+]?\d{1,3}(?:\.\d{3})+")  # 1.234: beside decimal commas, a thousands point


def _refuse_non_table(path: Path, text: str) -> None:
    """Binary files and web pages are no tables: say what the file is instead of parsing noise."""
    n_control = len(_CONTROL.findall(text))
    if n_control >= 4 and n_control > 0.01 * len(text):
        raise DataError(f"'{path}' does not look like a text table (it holds binary data); "
                        f"pass a CSV, TSV or Parquet file")
    head = text.lstrip().lower()
    if head.startswith(("<!doctype html", "<html")):
        raise DataError(f"'{path}' is an HTML page, not a table (a failed download?); pass a CSV, TSV or Parquet file")


def _comment_lines(text: str, preferred: str) -> int:
    """How many lines at the top are comments (and blank lines between them): they start with '#' and split into
    fewer fields than the header below them (without this the whole file was one column named after the comment).
    A header whose first name is '#' (a row-number column) splits like its rows and stays the header."""
    lines = text.splitlines()
    n = next((i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")), len(lines))
    if not lines[0].startswith("#") or n == len(lines):
        return 0
    body = "\n".join(lines[n:])
    sep = _sniff_delimiter(body, preferred) or preferred
    width = len(next(csv.reader([lines[n]], delimiter=sep)))
    narrower = all(len(next(csv.reader([line], delimiter=sep))) < width for line in lines[:n] if line.strip())
    return n if narrower else 0


def _decimal_mark(text: str, sep: str) -> str:
    """',' for semicolon files whose numbers all use a decimal comma (the European spreadsheet export); 1.234 counts
    for neither mark, 1.234,56 for the comma."""
    if sep != ";":  # elsewhere a comma between digits is more likely a thousands separator
        return "."
    lines = [ln for ln in text.splitlines()[1:-1] if ln.strip()][:200]  # no header, no cut-off last line
    comma = point = 0
    for row in csv.reader(lines, delimiter=sep):
        for cell in row:
            cell = cell.strip()
            comma += _COMMA_DECIMAL.fullmatch(cell) is not None
            point += _POINT_DECIMAL.fullmatch(cell) is not None and _THOUSANDS_POINT.fullmatch(cell) is None
    return "," if comma and not point else "."


def _read_text(path: Path, notes: list[str]) -> pd.DataFrame:
    raw = _read_sample(path, None, size=4)
    compression = _compression(path) or ("gzip" if raw.startswith(b"\x1f\x8b") else None)
    sample = _read_sample(path, compression)
    if sample.startswith(b"PAR1"):
        raise DataError(f"'{path}' is a Parquet file with a text extension; rename it to .parquet")
    for magic, what in _NOT_A_TABLE:
        if sample.startswith(magic):
            raise DataError(f"'{path}' is {what}")
    encoding = _encoding(sample)
    if encoding != "utf-16" and b"\x00" in sample:
        encoding = _utf16_without_bom(path, sample)
        notes.append(f"'{path.name}' is {UTF16_NAMES[encoding]} without a byte-order mark; read it as such")
    text = sample.decode(encoding, errors="replace")
    if not text.strip():
        raise DataError(f"data file '{path}' is empty (only blank lines); pass a file with a header and rows")
    _refuse_non_table(path, text)
    top_line, _, rest = text.partition("\n")
    excel_sep = _EXCEL_SEP_LINE.match(top_line)
    if excel_sep:
        sep, text = excel_sep.group(1), rest
        n_comments = 0
    else:
        preferred = "\t" if ".tsv" in path.name.lower() else ","
        n_comments = _comment_lines(text, preferred)
        text = "\n".join(text.splitlines()[n_comments:]) if n_comments else text
        sep = _sniff_delimiter(text, preferred) or preferred
    decimal = _decimal_mark(text, sep)
    read = dict(sep=sep, compression=compression, skiprows=n_comments + bool(excel_sep), decimal=decimal)
    df = None
    fallbacks = () if encoding.startswith("utf-16") else ("cp1252", "latin-1")  # UTF-16 read as 8-bit is noise
    for encoding in dict.fromkeys((encoding, *fallbacks)):  # bad bytes after the sample: the next one
        try:
            df = _parse_csv(path, encoding=encoding, **read)
            break
        except UnicodeDecodeError:
            if not fallbacks:
                raise DataError(f"'{path}' starts as UTF-16 text but is not valid UTF-16 further on; "
                                f"save it as UTF-8 (e.g. {_iconv(path, encoding)})") from None
            continue  # latin-1 reads any byte
    assert df is not None
    if _trailing_delimiters(df):
        df = _parse_csv(path, encoding=encoding, index_col=False, **read)
        notes.append(f"the rows of '{path.name}' end with a {sep!r} that the header does not; ignored it")
    if excel_sep:
        notes.append(f"'{path.name}' starts with Excel's 'sep={sep}' line; read {sep!r} as the delimiter")
    if n_comments:
        notes.append(f"skipped the {n_comments} line{'s' if n_comments > 1 else ''} of comments ('#') above the "
                     f"header of '{path.name}'")
    if decimal == ",":
        notes.append(f"'{path.name}' separates fields with ';' and writes decimals with ','; read it that way")
        notes.extend(_grouped_numbers(df))
    header = _raw_header(path, encoding=encoding, **read)
    named = [name for name in header if name.strip()]  # empty ones get their own note, not "'' made unique by .1"
    notes.extend(duplicate_note(named) + _unnamed_note(header, list(df.columns)))
    df.attrs[DUPLICATES_ATTR] = duplicated(named)
    if encoding in ("cp1252", "latin-1"):
        how = "latin-1" if encoding == "latin-1" else "Windows-1252 (latin-1 with €, curly quotes and dashes)"
        notes.append(f"'{path.name}' is not valid UTF-8; read it as {how}")
    return df


def _grouped_numbers(df: pd.DataFrame) -> list[str]:
    """Turn the text columns of a decimal-comma file whose cells are all amounts like 1.234,56 or 12,50 € into
    numbers (in place); the note naming them. pandas' ``decimal=','`` leaves such cells as text (the column was then
    dropped as all-rare levels), and its ``thousands='.'`` would read the date 01.02.2020 as 1022020."""
    amounts = []
    for j, name in enumerate(df.columns):
        column = df.iloc[:, j]
        if not (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)):
            continue
        parts = column.dropna().astype(str).str.strip().str.extract(f"^{_COMMA_AMOUNT.pattern}$")
        if len(parts) == 0 or parts[1].isna().any():
            continue
        plain = parts[0] + parts[1].str.replace(_DIGIT_GROUP_MARKS, "", regex=True).str.replace(",", ".", regex=False)
        df.isetitem(j, pd.to_numeric(plain).astype("float64").reindex(column.index))
        amounts.append(repr(str(name)))
    if not amounts:
        return []
    return [f"column{'s' if len(amounts) > 1 else ''} {', '.join(amounts[:5])}{', ...' if len(amounts) > 5 else ''}: "
            "numbers written like 1.234,56 € read as 1234.56 (thousands points or spaces and currency signs dropped)"]


def _raw_header(path: Path, *, sep: str, encoding: str, compression: str | None, skiprows: int,
                decimal: str) -> list[str]:
    """The header's names as written: pandas renames duplicate and empty names silently (empty: '')."""
    try:
        with _csv_source(path, compression) as (source, how):
            header = pd.read_csv(source, sep=sep, header=None, nrows=1, encoding=encoding, skiprows=skiprows,
                                 compression=how, dtype=str, skipinitialspace=True, keep_default_na=False)
    except Exception:  # the header was readable moments ago; a note is not worth failing for
        return []
    return [str(v) for v in header.iloc[0].tolist()] if len(header) else []


def _unnamed_note(header: list[str], columns: list[str]) -> list[str]:
    """The note naming the columns whose header cell is empty by the names pandas gave them."""
    unnamed = [repr(str(name)) for raw, name in zip(header, columns) if not raw.strip()]
    if not unnamed or len(header) != len(columns):
        return []
    return [f"{len(unnamed)} column{'s' if len(unnamed) > 1 else ''} without a name in the header, called "
            f"{', '.join(unnamed[:5])}{', ...' if len(unnamed) > 5 else ''}"]


def _trailing_delimiters(df: pd.DataFrame) -> bool:
    """Rows with one field more than the header, the last one empty: every line ends with the delimiter. pandas
    then takes the first column as the row index and shifts every name one column right (the target was empty).
    A header one name short above a filled first column (R's row names) is that index indeed."""
    return not df.index.equals(pd.RangeIndex(len(df))) and df.shape[1] > 0 and bool(df.iloc[:, -1].isna().all())


def _parse_csv(path: Path, *, sep: str, encoding: str, compression: str | None, skiprows: int,
               decimal: str, index_col: bool | None = None) -> pd.DataFrame:
    """The fast C engine first; Python's own sniffer only when the C engine chokes."""
    opts: dict[str, Any] = dict(encoding=encoding, skipinitialspace=True, skiprows=skiprows, decimal=decimal,
                                index_col=index_col)
    try:
        with _csv_source(path, compression) as (source, how):
            return pd.read_csv(source, sep=sep, low_memory=False, compression=how, **opts)
    except UnicodeDecodeError:
        raise  # the caller retries as Windows-1252, then latin-1
    except pd.errors.EmptyDataError:
        raise DataError(f"data file '{path}' is empty (no header); pass a file with a header and rows") from None
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        first = exc
    try:
        with _csv_source(path, compression) as (source, how):
            return pd.read_csv(source, sep=None, engine="python", compression=how, **opts)
    except UnicodeDecodeError:
        raise
    except Exception:
        raise DataError(f"could not read '{path}' as a table ({first_line(first)}); "
                        f"check that every row has the same number of fields") from None

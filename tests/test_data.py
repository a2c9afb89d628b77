"""Tests for automl_dnn.data: reading, task inference, target encoding, split, preprocessing."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from automl_dnn.data import (
    BUILTINS,
    NOTES_ATTR,
    FeaturePreprocessor,
    TargetEncoder,
    TargetTransform,
    check_target,
    infer_task,
    load_dataset,
    net_values,
    read_table,
)
from automl_dnn.data.preprocessing import other_unit_numbers, smooth_clip
from automl_dnn.errors import AutoDNNError, DataError, ModelFormatError

# ---------------------------------------------------------------------------------------------
# fixtures


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "age": rng.integers(18, 80, n).astype(float),
        "city": rng.choice(["paris", "lyon", "nice"], n),
        "y": rng.choice(["yes", "no"], n),
    })


@pytest.fixture
def messy() -> pd.DataFrame:
    """One column per preprocessing case, 200 rows."""
    rng = np.random.default_rng(1)
    n = 200
    num = rng.normal(10.0, 3.0, n)
    num[:5] = np.nan
    num[5:7] = [np.inf, -np.inf]
    mixed = np.where(np.arange(n) % 2 == 0, "7", "seven").astype(object)
    numtext = rng.integers(0, 100, n).astype(str).astype(object)
    numtext[0] = "n/a?"
    return pd.DataFrame({
        "num": num,
        "color": rng.choice(["red", "green", "blue", None], n, p=[.4, .3, .2, .1]),
        "when": pd.date_range("2020-01-01 00:00", periods=n, freq="73h").strftime("%Y-%m-%d %H:%M"),
        "row_id": np.arange(1000, 1000 + n),
        "key": [f"k{i:04d}" for i in range(n)],
        "const": 3,
        "empty": np.nan,
        "mixed": mixed,
        "numtext": numtext,
        "huge": [f"lvl{i}" for i in rng.integers(0, 3000, n)],
        "flag": rng.random(n) > 0.5,
    })


# ---------------------------------------------------------------------------------------------
# read_table


def test_read_csv_tsv_semicolon_gz(tmp_path):
    df = _frame()
    (tmp_path / "a.csv").write_text(df.to_csv(index=False))
    (tmp_path / "a.tsv").write_text(df.to_csv(index=False, sep="\t"))
    (tmp_path / "semi.csv").write_text(df.to_csv(index=False, sep=";"))
    (tmp_path / "pipe.txt").write_text(df.to_csv(index=False, sep="|"))
    with gzip.open(tmp_path / "a.csv.gz", "wt") as fh:
        fh.write(df.to_csv(index=False))
    for name in ("a.csv", "a.tsv", "semi.csv", "pipe.txt", "a.csv.gz"):
        got = read_table(tmp_path / name)
        assert list(got.columns) == ["age", "city", "y"], name
        assert len(got) == 40
        np.testing.assert_allclose(got["age"], df["age"])


def test_read_semicolon_with_decimal_commas(tmp_path):
    (tmp_path / "eu.csv").write_text("a;b;c\n1,5;x;2\n2,5;y;3\n3,5;z;4\n")
    got = read_table(tmp_path / "eu.csv")
    assert list(got.columns) == ["a", "b", "c"]


def test_read_semicolon_with_thousands_points_and_decimal_commas(tmp_path):
    """1.234,56 is a number in a European export (it was text, then dropped as all-rare levels); dates with points
    and other texts stay text."""
    (tmp_path / "eu.csv").write_text("amount;n;when;code;c\n1.234,5;1.234;01.02.2020;1.2.3;x\n12,0;;15.03.2021;4;y\n"
                                     "-7,25;12;16.03.2021;5;z\n3,5;2.000;17.03.2021;6;x\n")
    got = read_table(tmp_path / "eu.csv")
    assert got["amount"].tolist() == [1234.5, 12.0, -7.25, 3.5]
    assert got["n"].tolist()[:1] + got["n"].tolist()[2:] == [1234.0, 12.0, 2000.0] and np.isnan(got["n"][1])
    assert got["when"].tolist()[0] == "01.02.2020" and got["code"].tolist()[0] == "1.2.3"
    assert "columns 'amount', 'n': numbers written like 1.234,56 € read as 1234.56" \
        in " ".join(got.attrs[NOTES_ATTR])


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u202f"], ids=["space", "no-break space", "narrow no-break space"])
def test_read_semicolon_with_spaces_between_digit_groups(tmp_path, space):
    """A French export writes 1 234,56 (a no-break space between digit groups): the column was text, every value
    different, and dropped as a key. Numbers, as 1.234,56 are; one kind of mark per number."""
    (tmp_path / "fr.csv").write_text(f"amount;x;code\n12{space}573,02 \u20ac;1,5;a\n-1{space}210{space}000,5;2,5;b\n"
                                     f"7,25;3,5;c\n950;4,5;d\n", encoding="utf-8")
    got = read_table(tmp_path / "fr.csv")
    assert got["amount"].tolist() == [12573.02, -1210000.5, 7.25, 950.0]
    assert "column 'amount': numbers written like 1.234,56 € read as 1234.56" in " ".join(got.attrs[NOTES_ATTR])
    (tmp_path / "mixed.csv").write_text(f"amount;x\n1.234{space}567,5;1,5\n2,5;2,5\n", encoding="utf-8")
    assert read_table(tmp_path / "mixed.csv")["amount"].tolist() == ["1.234" + space + "567,5", "2,5"]


def test_read_semicolon_amounts_with_a_currency_sign(tmp_path):
    """12,50 € in a decimal-comma file: text to pandas, and the preprocessing's currency reading knows only 12.50."""
    (tmp_path / "eur.csv").write_text("price;x;y\n12,50 \u20ac;1,5;a\n\u20ac 1.234,00;2,5;b\n-3,00 \u20ac;3,5;a\n"
                                      "7 \u20ac;4,5;b\n", encoding="utf-8")
    got = read_table(tmp_path / "eur.csv")
    assert got["price"].tolist() == [12.5, 1234.0, -3.0, 7.0]
    assert "column 'price': numbers written like 1.234,56 € read as 1234.56" in " ".join(got.attrs[NOTES_ATTR])


def test_comment_lines_above_the_header_are_skipped(tmp_path):
    """'# exported by ...' above the header made the whole file one column named after the comment; a header whose
    first name is '#' stays the header."""
    (tmp_path / "c.csv").write_text("# exported by tool\n\n#\na,b,y\n1,x,0\n2,y,1\n")
    got = read_table(tmp_path / "c.csv")
    assert list(got.columns) == ["a", "b", "y"] and got["a"].tolist() == [1, 2]
    assert "skipped the 3 lines of comments ('#') above the header of 'c.csv'" in got.attrs[NOTES_ATTR]
    (tmp_path / "n.csv").write_text("#,name,y\n1,x,0\n2,y,1\n")
    assert list(read_table(tmp_path / "n.csv").columns) == ["#", "name", "y"]


def test_rows_ending_with_a_delimiter_the_header_lacks(tmp_path):
    """Every row ending with ',' made pandas take the first column as the index: each name moved one column right,
    and the target read as all missing. R's row names (a filled first column under a short header) stay an index."""
    (tmp_path / "t.csv").write_text("a,b,y\n1,x,0,\n2,y,1,\n")
    got = read_table(tmp_path / "t.csv")
    assert got.to_dict("list") == {"a": [1, 2], "b": ["x", "y"], "y": [0, 1]}
    assert "the rows of 't.csv' end with a ',' that the header does not; ignored it" in got.attrs[NOTES_ATTR]
    (tmp_path / "r.csv").write_text("a,b,y\nr1,1,x,0\nr2,2,y,1\n")
    assert read_table(tmp_path / "r.csv").to_dict("list") == {"a": [1, 2], "b": ["x", "y"], "y": [0, 1]}


def test_read_parquet(tmp_path):
    df = _frame()
    df.to_parquet(tmp_path / "a.parquet")
    df.to_parquet(tmp_path / "b.pq")
    for name in ("a.parquet", "b.pq"):
        got = read_table(tmp_path / name)
        assert list(got.columns) == ["age", "city", "y"]
        assert len(got) == 40


def test_read_latin1_and_bom(tmp_path):
    (tmp_path / "l1.csv").write_bytes("name,v\ncaf\xe9,1\nna\xefve,2\n".encode("latin-1"))
    got = read_table(tmp_path / "l1.csv")
    assert got["name"].tolist() == ["café", "naïve"]
    assert any("latin-1" in n for n in got.attrs["automl_dnn_notes"])
    (tmp_path / "bom.csv").write_bytes("\ufeffname,v\nx,1\n".encode("utf-8"))
    assert list(read_table(tmp_path / "bom.csv").columns) == ["name", "v"]


@pytest.mark.parametrize("encoding, order", [("utf-16-le", "little-endian"), ("utf-16-be", "big-endian")])
def test_utf16_without_a_bom_is_read(tmp_path, encoding, order):
    """Windows' "Unicode text" and PowerShell 5's redirections write UTF-16 without a BOM: it was refused as
    "binary data" (every other byte is NUL)."""
    text = "name,v,y\n" + "".join(f"caf\xe9 {i % 3},{i}.5,{i % 2}\n" for i in range(30))
    (tmp_path / "u.csv").write_bytes(text.encode(encoding))
    got = read_table(tmp_path / "u.csv")
    assert list(got.columns) == ["name", "v", "y"] and len(got) == 30
    assert got["name"][4] == "caf\xe9 1" and got["v"][2] == 2.5
    assert f"UTF-16 ({order}) without a byte-order mark" in " ".join(got.attrs[NOTES_ATTR])
    with gzip.open(tmp_path / "u.csv.gz", "wb") as fh:
        fh.write(text.encode(encoding))
    assert read_table(tmp_path / "u.csv.gz").equals(got)


def test_utf16_that_cannot_be_read_with_certainty_names_the_encoding_and_the_conversion(tmp_path):
    """UTF-16 without a BOM whose text is mostly CJK (its NULs are not every other byte), or whose characters are no
    UTF-16 (a lone surrogate), is refused naming UTF-16 and iconv, not as binary data; binary data with NULs anywhere
    is still binary data."""
    text = "a,b\n" + "1,2\n" * 20
    (tmp_path / "s.csv").write_bytes(text.encode("utf-16-le") + b"\x00\xd8" + "3,4\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"UTF-16 \(little-endian\).*iconv -f UTF-16LE -t UTF-8") as info:
        read_table(tmp_path / "s.csv")
    assert "\n" not in str(info.value)
    cjk = "\u540d\u524d,y\n" + "".join(f"\u4e00\u4e8c\u4e09{i % 3},{i % 2}\n" for i in range(30))
    (tmp_path / "cjk.csv").write_bytes(cjk.encode("utf-16-be"))
    with pytest.raises(DataError, match=r"UTF-16 \(big-endian\).*iconv -f UTF-16BE -t UTF-8 cjk.csv"):
        read_table(tmp_path / "cjk.csv")
    (tmp_path / "bin.csv").write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(DataError, match="binary data"):
        read_table(tmp_path / "bin.csv")
    (tmp_path / "ints.csv").write_bytes(np.arange(3000, dtype="<u4").tobytes())  # NULs at both parities
    with pytest.raises(DataError, match="binary data"):
        read_table(tmp_path / "ints.csv")


def test_windows_1252_text_keeps_its_euro_signs_and_quotes(tmp_path):
    """Excel's 'CSV' on Windows is cp1252: read as latin-1, € became the control character \\x80 and an amount
    column capped categories instead of numbers."""
    rows = "".join(f"\u20ac{v}.50,\u201cq{v % 3}\u201d,{v % 2}\n" for v in range(30))
    (tmp_path / "w.csv").write_bytes(("price,quote,y\n" + rows).encode("cp1252"))
    got = read_table(tmp_path / "w.csv")
    assert got["price"][3] == "\u20ac3.50" and got["quote"][1] == "\u201cq1\u201d"
    assert "read it as Windows-1252" in " ".join(got.attrs[NOTES_ATTR])
    pre = FeaturePreprocessor().fit(got.drop(columns="y"))
    assert [c["kind"] for c in pre.columns_] == ["numeric", "categorical"]


def test_duplicate_columns_made_unique(tmp_path):
    (tmp_path / "d.csv").write_text("a,a,b\n1,2,3\n4,5,6\n")
    got = read_table(tmp_path / "d.csv")
    assert list(got.columns) == ["a", "a.1", "b"]
    assert any("duplicate" in n for n in got.attrs["automl_dnn_notes"])
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table([[1, 2], [3, 4]], names=["a", "a"]), tmp_path / "d.parquet")
    got = read_table(tmp_path / "d.parquet")
    assert list(got.columns) == ["a", "a.1"]
    assert got["a.1"].tolist() == [3, 4]


def test_input_file_not_modified(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(_frame().to_csv(index=False))
    before = path.read_bytes()
    load_dataset(path, target="y")
    assert path.read_bytes() == before


@pytest.mark.parametrize("name, content, needle", [
    ("missing.csv", None, "not found"),
    ("empty.csv", b"", "empty"),
    ("blank.csv", b"\n\n  \n", "empty"),
    ("header.csv", b"a,b,c\n", "no rows"),
    ("bin.csv", bytes(range(256)) * 20, "binary"),
    ("bad.csv", b'a,b\n1,2\n"3,4\n5,6\n', "could not read"),
    ("bad.parquet", b"not parquet at all", "Parquet"),
    ("bad.csv.gz", b"not gzip at all", "gzip"),
    ("data.xlsx", b"PK\x03\x04", "unsupported"),
])
def test_read_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=needle) as info:
        read_table(path)
    assert "\n" not in str(info.value)
    assert name in str(info.value)


def test_read_bz2_xz_and_zip_compressed_text(tmp_path):
    """A downloaded table often comes zipped (data.csv.zip) or as .bz2 / .xz: all were "unsupported file type". Read
    as the plain file is; a ZIP of several files names them."""
    import bz2
    import lzma
    import zipfile

    frame = _frame(30)
    text = frame.to_csv(index=False).encode()
    (tmp_path / "d.csv.bz2").write_bytes(bz2.compress(text))
    (tmp_path / "d.tsv.xz").write_bytes(lzma.compress(frame.to_csv(index=False, sep="\t").encode()))
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as archive:
        archive.writestr("data/d.csv", text)
    for name in ("d.csv.bz2", "d.tsv.xz", "d.zip"):
        pd.testing.assert_frame_equal(read_table(tmp_path / name), frame, check_like=False)
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.csv", text)
        archive.writestr("b.csv", text)
    with pytest.raises(DataError, match="holds 2 files \\('a.csv', 'b.csv'\\); a ZIP archive must hold one table"):
        read_table(tmp_path / "two.zip")
    (tmp_path / "bad.csv.xz").write_bytes(b"not xz at all")
    with pytest.raises(DataError, match="valid xz file"):
        read_table(tmp_path / "bad.csv.xz")


def test_a_zip_made_on_a_mac_reads_its_one_table(tmp_path, monkeypatch):
    """macOS's Finder and zip add __MACOSX/ resource forks, ._NAME files and .DS_Store beside the table: such an
    archive was refused as "a ZIP of several files". They are left out; the archive is closed on a refusal too."""
    import zipfile

    frame = _frame(30)
    text = frame.to_csv(index=False).encode()
    with zipfile.ZipFile(tmp_path / "mac.zip", "w") as archive:
        archive.writestr("data/", b"")
        archive.writestr("data/d.csv", text)
        archive.writestr("__MACOSX/data/._d.csv", b"\x00\x05\x16\x07Mac OS X resource fork")
        archive.writestr("data/.DS_Store", b"Bud1\x00\x00")
        archive.writestr("._d.csv", b"\x00\x05\x16\x07")
    got = read_table(tmp_path / "mac.zip")
    pd.testing.assert_frame_equal(got, frame)
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        for name in ("a.csv", "b.csv", "__MACOSX/._a.csv"):
            archive.writestr(name, text)
    opened: list[zipfile.ZipFile] = []

    class Recorded(zipfile.ZipFile):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(zipfile, "ZipFile", Recorded)
    with pytest.raises(DataError, match="holds 2 files \\('a.csv', 'b.csv'\\); a ZIP archive must hold one table"):
        read_table(tmp_path / "two.zip")
    assert opened and all(archive.fp is None for archive in opened)  # the refused archive's file is closed


def test_read_directory_and_unknown_builtin(tmp_path):
    with pytest.raises(DataError, match="directory"):
        read_table(tmp_path)
    with pytest.raises(DataError, match="breast_cancer") as info:
        read_table("builtin:nope")
    assert "'nope'" in str(info.value)


def test_unsupported_extension_lists_formats(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match=r"\.csv.*\.parquet"):
        read_table(tmp_path / "x.json")


# ---------------------------------------------------------------------------------------------
# infer_task / check_target


@pytest.mark.parametrize("values, task", [
    (["a", "b", "a", "b"] * 10, "binary"),
    (["a", "b", "c", "a"] * 10, "multiclass"),
    ([True, False] * 20, "binary"),
    ([3, 7] * 20, "binary"),
    (list(np.linspace(0, 1, 40)), "regression"),
    ([0.5, 1.0, 2.0] * 20, "regression"),
    ([0, 1, 2, 3] * 25, "multiclass"),
    (list(range(100)), "regression"),
    ([1.0, 2.0, 3.0] * 20, "multiclass"),
])
def test_infer_task(values, task):
    got, rule = infer_task(pd.Series(values))
    assert got == task
    assert isinstance(rule, str) and rule


def test_infer_task_category_dtype_and_few_rows():
    assert infer_task(pd.Series(pd.Categorical([1, 2, 3] * 4)))[0] == "multiclass"
    # 12 integer rows: at most max(2, min(20, 1)) = 2 classes, so 3 distinct ints -> regression
    assert infer_task(pd.Series([1, 2, 3] * 4))[0] == "regression"


@pytest.mark.parametrize("values, task, needle", [
    ([None, None, None], "auto", "no values"),
    (["a", "a", None], "auto", "single value 'a'"),
    (["yes", "no", "yes"], "regression", "text values like 'yes'"),
    (["a", "b", "c"], "binary", "--task multiclass"),
    ([1.0, 2.0], "ordinal", "unknown task"),
])
def test_check_target_errors(values, task, needle):
    with pytest.raises(DataError, match=needle):
        check_target(pd.Series(values, name="t", dtype=object), task)


def test_check_target_regression_numeric_text():
    got = check_target(pd.Series(["1.5", "2", None], name="t"), "regression")
    assert got.tolist() == [1.5, 2.0]


# ---------------------------------------------------------------------------------------------
# TargetEncoder


def test_target_encoder_string_labels_round_trip():
    y = pd.Series(["cat", "dog", "bird", "dog"])
    enc = TargetEncoder().fit(y, "multiclass")
    assert enc.classes_ == ["bird", "cat", "dog"]
    codes = enc.encode(y)
    assert codes.dtype == np.int64 and codes.tolist() == [1, 2, 0, 2]
    assert enc.decode(codes).tolist() == y.tolist()
    assert enc.decode(np.eye(3)[[2, 0]]).tolist() == ["dog", "bird"]  # probabilities -> argmax
    enc2 = TargetEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert enc2.encode(y).tolist() == codes.tolist()
    with pytest.raises(DataError, match="'fish'"):
        enc.encode(pd.Series(["fish"]))


def test_target_encoder_numpy_labels_are_json_scalars():
    enc = TargetEncoder().fit(pd.Series(np.array([1.0, 0.0, 1.0])), "binary")
    assert enc.classes_ == [0, 1] and all(type(c) is int for c in enc.classes_)
    enc = TargetEncoder().fit(pd.Series([True, False]), "binary")
    assert enc.classes_ == [False, True] and type(enc.classes_[0]) is bool
    json.dumps(enc.to_dict())


def test_target_encoder_regression():
    y = pd.Series([10.0, 20.0, 30.0, 40.0])
    enc = TargetEncoder().fit(y, "regression")
    z = enc.encode(y)
    assert z.dtype == np.float32
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6
    np.testing.assert_allclose(enc.decode(z), y, rtol=1e-6)
    assert enc.mean_ == 25.0 and enc.classes_ == []


def test_target_encoder_clips_regression_values_to_the_training_range():
    enc = TargetEncoder().fit(pd.Series([10.0, 20.0, 30.0, 40.0]), "regression")
    assert (enc.low_, enc.high_) == (10.0, 40.0)
    assert enc.clip(np.array([-5.0, 10.0, 25.5, 41.0])).tolist() == [10.0, 10.0, 25.5, 40.0]
    z = np.array([-3.0, 0.0, 3.0], dtype=np.float32)  # a net's standardized outputs: 11.5, 25, 58.5 before
    assert net_values(z, enc).tolist() == pytest.approx([10.0, 25.0, 40.0])
    saved = TargetEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert saved.clip(np.array([99.0])).tolist() == [40.0]
    older = {k: v for k, v in enc.to_dict().items() if k not in ("low", "high")}  # saved before the range
    assert TargetEncoder.from_dict(older).clip(np.array([99.0])).tolist() == [99.0]
    forecast = TargetEncoder().fit(pd.Series([10.0, 40.0]), "regression", bounded=False)
    assert forecast.low_ is None and forecast.clip(np.array([99.0])).tolist() == [99.0]
    with pytest.raises(ModelFormatError, match="range"):
        TargetEncoder.from_dict({**enc.to_dict(), "low": 50.0})
    classes = TargetEncoder().fit(pd.Series(["a", "b"]), "binary")
    assert classes.low_ is None and classes.clip(np.array([0.2, 0.9])).tolist() == [0.2, 0.9]


def test_a_few_extreme_regression_targets_are_named_in_a_note():
    rng = np.random.default_rng(0)
    x = rng.normal(size=600)
    y = 3 * x + rng.normal(size=600)
    y[[5, 50, 500]] = [1e6, -2e6, 5e7]  # sentinels / unit slips among values of spread ~4
    notes = load_dataset(pd.DataFrame({"x": x, "y": y}), target="y", seed=0).notes
    extreme = [n for n in notes if "interquartile ranges from the median" in n]
    assert len(extreme) == 1 and "--metric mae" in extreme[0]
    y[[5, 50, 500]] = y[0]
    y[[7, 70, 300]] = np.median(y) + 500 * np.subtract(*np.percentile(y, [75, 25]))  # 500 IQRs out: noted too
    notes = load_dataset(pd.DataFrame({"x": x, "y": y}), target="y", seed=0).notes
    assert any("over 300 interquartile ranges from the median" in n for n in notes)
    skewed = np.exp(rng.normal(0, 1.5, 600))  # a heavy tail that trains well (an income, a price): no note
    notes = load_dataset(pd.DataFrame({"x": x, "y": skewed}), target="y", seed=0).notes
    assert not any("interquartile ranges" in n for n in notes)


def test_a_time_ordered_split_keeps_no_range_to_clip_to():
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    frame = pd.DataFrame({"day": days, "x": np.arange(60.0), "y": np.arange(60.0) * 2})
    assert load_dataset(frame, target="y", time_column="day").target_encoder.low_ is None
    plain = load_dataset(frame.drop(columns="day"), target="y", seed=0)
    train = frame["y"].iloc[plain.split["train"]]  # the training rows' range, not the validation rows'
    assert (plain.target_encoder.low_, plain.target_encoder.high_) == (train.min(), train.max())


# ---------------------------------------------------------------------------------------------
# load_dataset and the split


@pytest.mark.parametrize("name, task, k", [
    ("breast_cancer", "binary", 2), ("digits", "multiclass", 10),
    ("wine", "multiclass", 3), ("diabetes", "regression", 0),
])
def test_builtins(name, task, k):
    ds = load_dataset(f"builtin:{name}")
    assert ds.task == task == BUILTINS[name].task
    assert ds.target == "target" and "target" not in ds.features.columns
    assert len(ds.target_encoder.classes_) == k
    assert infer_task(pd.Series(ds.target_encoder.decode(ds.y)))[0] == task  # the rule agrees


def test_split_sizes_determinism_stratification():
    df = pd.DataFrame({"x": np.arange(1000) * 0.5 % 7, "y": np.repeat(["a", "b", "c", "d"], [700, 200, 80, 20])})
    ds = load_dataset(df, target="y", seed=3)
    sizes = {k: len(v) for k, v in ds.split.items()}
    assert sizes == {"train": 700, "valid": 150, "test": 150}
    all_idx = np.concatenate(list(ds.split.values()))
    assert sorted(all_idx.tolist()) == list(range(1000))
    assert all(v.dtype == np.int64 for v in ds.split.values())
    again = load_dataset(df, target="y", seed=3)
    assert all(np.array_equal(ds.split[k], again.split[k]) for k in ds.split)
    other = load_dataset(df, target="y", seed=4)
    assert not np.array_equal(ds.split["valid"], other.split["valid"])
    for part in ("valid", "test"):  # stratified: class shares match to within one row
        counts = np.bincount(ds.labels(part), minlength=4)
        np.testing.assert_allclose(counts, [105, 30, 12, 3], atol=1)
    assert ds.frame("valid").index.tolist() == list(range(150))
    assert ds.frame("valid")["x"].tolist() == df["x"].iloc[ds.split["valid"]].tolist()


def test_split_keeps_a_rare_class_in_training_and_test_size_zero():
    df = pd.DataFrame({"x": np.arange(40.0) % 3, "y": ["a"] * 39 + ["b"]})
    ds = load_dataset(df, target="y", test_size=0)
    assert len(ds.split["test"]) == 0 and ds.split["test"].dtype == np.int64
    assert len(ds.split["train"]) + len(ds.split["valid"]) == 40
    assert 39 in ds.split["train"]  # the one 'b' row: a random split could leave the class unlearned
    assert any("1 rows of classes with fewer rows than splits all stay in training" in n for n in ds.notes)
    assert any(f"into train {len(ds.split['train'])} / valid" in n for n in ds.notes)  # the 'b' row counted
    assert ds.labels("test").shape == (0,)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_split_with_a_test_part_keeps_every_class_of_two_rows_in_training(seed):
    df = pd.DataFrame({"x": np.arange(60.0) % 5, "y": ["a"] * 56 + ["b", "b", "c", "c"]})
    ds = load_dataset(df, target="y", seed=seed)
    assert set(ds.labels("train").tolist()) == {0, 1, 2}
    assert {len(v) for v in ds.split.values()} == {42, 9}  # sizes as asked; the 'a' rows stratified
    assert not any("not stratified" in n for n in ds.notes)


def test_split_falls_back_to_random_when_a_part_has_fewer_rows_than_classes():
    df = pd.DataFrame({"x": np.arange(40.0), "y": [f"k{i % 10}" for i in range(40)]})  # 10 classes of 4 rows
    ds = load_dataset(df, target="y", valid_size=0.05, test_size=0.05)  # 2 rows each
    assert any("not stratified" in n for n in ds.notes)
    assert sorted(np.concatenate(list(ds.split.values())).tolist()) == list(range(40))


def test_load_dataset_drops_missing_target_rows_and_regression_uses_train_stats():
    df = pd.DataFrame({"x": np.arange(50.0) % 7, "y": [np.nan] * 5 + list(np.linspace(0, 10, 45) ** 2)})
    ds = load_dataset(df, target="y")
    assert len(ds.features) == 45 and any("dropped 5 rows" in n for n in ds.notes)
    train_y = ds.target_encoder.decode(ds.labels("train"))
    assert ds.task == "regression"
    assert ds.target_encoder.mean_ == pytest.approx(train_y.mean(), rel=1e-5)


def test_load_dataset_from_frame_does_not_modify_it():
    df = _frame()
    copy = df.copy()
    ds = load_dataset(df, target="y")
    ds.fit_preprocessor().transform(ds.frame("train"))
    pd.testing.assert_frame_equal(df, copy)


def test_task_override_and_rule_in_notes():
    df = pd.DataFrame({"x": np.arange(100.0) % 9, "y": np.arange(100) % 4})
    assert load_dataset(df, target="y").task == "multiclass"
    ds = load_dataset(df, target="y", task="regression")
    assert ds.task == "regression" and ds.y.dtype == np.float32
    assert any("task regression" in n for n in ds.notes)


def test_fingerprint_changes_with_data():
    df = _frame()
    fp = load_dataset(df, target="y").fingerprint()
    assert fp == load_dataset(df.copy(), target="y").fingerprint() and len(fp) == 64
    changed = df.copy()
    changed.loc[0, "age"] += 1
    assert load_dataset(changed, target="y").fingerprint() != fp
    assert load_dataset(df, target="y", task="multiclass").fingerprint() != fp


@pytest.mark.parametrize("kwargs, needle", [
    (dict(target=None), "pass --target"),
    (dict(target="Citty"), "did you mean 'city'"),
    (dict(target="zzz"), "columns: 'age'"),
    (dict(target="y", valid_size=0), "valid_size"),
    (dict(target="y", valid_size=1.2), "valid_size"),
    (dict(target="y", test_size=-0.1), "test_size"),
    (dict(target="y", valid_size=0.5, test_size=0.5), "below 1"),
    (dict(target="y", task="ranking"), "unknown task"),
    (dict(target="y", task="regression"), "text values like"),
])
def test_load_dataset_errors(kwargs, needle):
    with pytest.raises(DataError, match=needle) as info:
        load_dataset(_frame(), **kwargs)
    assert "\n" not in str(info.value)


def test_a_target_name_with_spaces_around_it_in_the_header_is_found():
    """A header written 'age,city, y ' holds the target ' y ': --target y was refused with "did you mean ' y '?".
    Two columns that match without their spaces stay ambiguous."""
    frame = _frame().rename(columns={"y": " y "})
    spaced, plain = load_dataset(frame, target="y"), load_dataset(_frame(), target="y")
    assert spaced.target == " y " and np.array_equal(spaced.y, plain.y)
    frame["y"] = frame[" y "]
    assert load_dataset(frame, target="y").target == "y"  # the exact name first
    with pytest.raises(DataError, match="not found"):
        load_dataset(frame.rename(columns={"y": "y "}), target="y")


def test_labels_with_spaces_around_them_are_one_class():
    """'yes ' and 'yes' are one class (a padded export made a binary target a 4-class one); a blank one is missing."""
    frame = _frame(40)
    frame["y"] = ["yes ", "yes", " no", "no"] * 9 + ["  ", "no", "yes", "no"]
    data = load_dataset(frame, target="y")
    assert (data.task, data.target_encoder.classes_, len(data.y)) == ("binary", ["no", "yes"], 39)
    assert "19 labels of target 'y' had spaces around them (or were blank)" in " ".join(data.notes)


def test_a_file_without_a_header_row_is_named_in_the_error(tmp_path):
    _frame().to_csv(tmp_path / "raw.csv", index=False, header=False)
    with pytest.raises(DataError, match=r"look like data: does the file lack a header row\?") as info:
        load_dataset(tmp_path / "raw.csv", target="y")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError) as info:  # names that are whole numbers are names
        load_dataset(_frame().set_axis(["0", "1", "2"], axis=1), target="y")
    assert "header" not in str(info.value)


def test_load_dataset_too_few_rows_and_single_class():
    with pytest.raises(DataError, match="too few rows"):
        load_dataset(_frame(n=8), target="y")
    with pytest.raises(DataError, match="too few rows"):
        load_dataset(_frame(n=12), target="y", valid_size=0.45, test_size=0.45)
    df = _frame()
    df["y"] = "same"
    with pytest.raises(DataError, match="single value"):
        load_dataset(df, target="y")
    df["y"] = np.nan
    with pytest.raises(DataError, match="no values"):
        load_dataset(df, target="y")


def test_file_target_required(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(_frame().to_csv(index=False))
    with pytest.raises(DataError, match="--target"):
        load_dataset(path)
    assert load_dataset(path, target="y").task == "binary"


# ---------------------------------------------------------------------------------------------
# FeaturePreprocessor


def test_preprocessor_column_decisions(messy):
    pre = FeaturePreprocessor().fit(messy)
    dropped = {d["name"] for d in pre.dropped_}
    assert dropped == {"row_id", "key", "const", "empty"}
    kinds = {c["name"]: c["kind"] for c in pre.columns_}
    assert kinds == {"num": "numeric", "color": "categorical", "when": "date", "mixed": "categorical",
                     "numtext": "numeric", "huge": "categorical", "flag": "categorical"}
    names = pre.feature_names_
    assert {"num", "num__missing", "color=__missing__", "when__year", "when__hour", "when__day_of_week",
            "mixed=7", "mixed=seven", "numtext", "numtext__missing", "flag=True", "flag=False"} <= set(names)
    assert "color=red" in names and "huge=__rare__" in names
    assert sum(n.startswith("huge=") for n in names) <= 64 + 1
    text = " ".join(pre.notes_)
    for needle in ("'row_id'", "'key'", "'const'", "'empty'", "infinite", "'mixed' mixes numbers",
                   "'numtext' holds text", "'when' read as dates", "'huge' has"):
        assert needle in text
    assert [s["name"] for s in pre.input_schema_] == list(messy.columns)
    assert all(isinstance(s["dtype"], str) for s in pre.input_schema_)
    X = pre.transform(messy)
    assert X.dtype == np.float32 and X.shape == (200, pre.n_features_) and np.isfinite(X).all()
    # inf and NaN were both imputed and flagged
    j, k = names.index("num"), names.index("num__missing")
    assert X[:7, k].tolist() == [1.0] * 7 and X[7:, k].sum() == 0
    assert np.allclose(X[:7, j], X[0, j])


def test_preprocessor_fitted_on_given_rows_only(messy):
    train, other = messy.iloc[:100], messy.iloc[100:]
    pre = FeaturePreprocessor().fit(train)
    stats = next(c for c in pre.columns_ if c["name"] == "num")["stats"]
    train_num = train["num"].replace([np.inf, -np.inf], np.nan).dropna()
    assert stats["mean"] == pytest.approx(train_num.mean())
    assert stats["std"] == pytest.approx(train_num.std(ddof=0))
    X = pre.transform(other)
    j = pre.feature_names_.index("num")
    assert X.shape[0] == 100
    assert pre.transform(train)[:, j][7:].mean() == pytest.approx(0.0, abs=0.05)


def test_quantile_scaling_is_standard_normal():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"skewed": rng.exponential(5.0, 5000), "ints": rng.integers(0, 1000, 5000)})
    pre = FeaturePreprocessor().fit(df, scaling="quantile")
    X = pre.transform(df)
    assert np.abs(X.mean(axis=0)).max() < 0.05
    assert np.abs(X.std(axis=0) - 1).max() < 0.05
    assert np.abs(X).max() < 5.3
    wild = pre.transform(pd.DataFrame({"skewed": [-1e9, 1e9], "ints": [5, 5]}))
    assert np.isfinite(wild).all()


def test_json_round_trip_is_bit_identical(messy):
    for scaling in ("standard", "quantile", "robust", "none"):
        pre = FeaturePreprocessor().fit(messy.iloc[:150], scaling=scaling)
        pre2 = FeaturePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
        test = messy.iloc[150:]
        assert np.array_equal(pre.transform(test), pre2.transform(test))
        assert pre2.feature_names_ == pre.feature_names_ and pre2.notes_ == pre.notes_
        pd.testing.assert_frame_equal(pre.transform_for_gbt(test), pre2.transform_for_gbt(test))


def test_a_date_s_parts_never_share_a_name_with_another_column():
    """A table with a date 'd' and numbers named 'd__year' (an export of derived columns): XGBoost's frame held
    'd__year' twice, and fit ended with "internal error: AttributeError: 'DataFrame' object has no attribute
    'dtype'". The date's part takes another name; the user's column keeps its own."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"d": pd.date_range("2020-01-01", periods=60, freq="7D").strftime("%Y-%m-%d"),
                       "d__year": rng.normal(size=60), "d__year_": rng.normal(size=60)})
    frame = FeaturePreprocessor().fit(df).transform_for_gbt(df)
    assert frame.columns.is_unique
    np.testing.assert_array_equal(frame["d__year"], df["d__year"].to_numpy(np.float32))
    assert frame["d__year__"].tolist() == pd.to_datetime(df["d"]).dt.year.tolist()


def test_from_dict_refuses_foreign_data():
    with pytest.raises(AutoDNNError, match="preprocessor"):
        FeaturePreprocessor.from_dict({"format": "other"})


def test_transform_unseen_missing_extra_and_odd_cells(messy):
    pre = FeaturePreprocessor().fit(messy)
    new = messy.iloc[:10].copy()
    new["color"] = ["purple"] * 10  # unseen, and color has no __rare__ level -> all zeros
    new["huge"] = ["never-seen"] * 10  # unseen -> __rare__
    new["num"] = new["num"].astype(object)
    new.loc[new.index[:3], "num"] = "oops"
    new["unused"] = "ignored"
    report: list[str] = []
    X = pre.transform(new, report=report)
    names = pre.feature_names_
    color_cols = [i for i, n in enumerate(names) if n.startswith("color=")]
    assert X[:, color_cols].sum() == 0
    assert X[:, names.index("huge=__rare__")].tolist() == [1.0] * 10
    assert X[:3, names.index("num__missing")].tolist() == [1.0] * 3
    text = " ".join(report)
    assert "column 'num': 3 values could not be read as numbers" in text
    assert "column 'color': 10 values not seen in training" in text
    with pytest.raises(DataError, match="'when'"):
        pre.transform(messy.drop(columns=["when"]))
    pre.transform(messy.drop(columns=["key", "row_id"]))  # dropped columns are not required


def test_dates_unreadable_at_transform(messy):
    pre = FeaturePreprocessor().fit(messy)
    new = messy.iloc[:4].copy()
    new["when"] = ["2021-02-03 10:00", "garbage", None, "2021-02-04 00:00"]
    report: list[str] = []
    X = pre.transform(new, report=report)
    assert "column 'when': 1 values could not be read as dates" in " ".join(report)
    assert np.isfinite(X).all()


def _day_first_dates(n: int = 120) -> pd.DataFrame:
    days = pd.date_range("2021-01-01", periods=n, freq="3D")
    return pd.DataFrame({"when": days.strftime("%d/%m/%Y"), "x": np.arange(n) % 7})


def test_day_first_dates_read_alike_in_any_batch():
    """dd/mm/yyyy: the format is chosen once in training, so a row reads the same alone or beside others
    (pandas alone guesses from a batch's first cell: '05/07/2021' is 7 May alone, 5 July after '25/12/2021')."""
    frame = _day_first_dates()  # its first cells have a day <= 12: month first would read them too
    pre = FeaturePreprocessor().fit(frame)
    spec = next(c for c in pre.columns_ if c["name"] == "when")
    assert spec["text"] == {"format": "%d/%m/%Y", "dayfirst": True}
    assert any("day before month" in n for n in pre.notes_)
    month = pre.feature_names_.index("when__month")
    raw = pre.from_dict(pre.to_dict())  # the reading survives the JSON round trip
    alone = raw.transform(pd.DataFrame({"when": ["05/07/2021"], "x": [1]}))[:, month]
    beside = raw.transform(pd.DataFrame({"when": ["25/12/2021", "05/07/2021"], "x": [1, 1]}))[1:, month]
    july = raw.transform(pd.DataFrame({"when": ["2021-07-05"], "x": [1]}))[:, month]  # ISO: no ambiguity
    assert alone == pytest.approx(beside) and alone == pytest.approx(july)


def test_month_first_dates_stay_month_first():
    frame = pd.DataFrame({"when": pd.date_range("2021-01-01", periods=120, freq="3D").strftime("%m/%d/%Y"),
                          "x": np.arange(120) % 7})
    spec = next(c for c in FeaturePreprocessor().fit(frame).columns_ if c["name"] == "when")
    assert spec["text"] == {"format": "%m/%d/%Y", "dayfirst": False}


def test_numbers_with_thousands_and_question_marks():
    """'12,345.67' and a '?' for missing (UCI files) are numbers, not 64 capped categories."""
    amounts = [f"{v:,.2f}" for v in np.linspace(100, 90_000, 200)]
    amounts[::20] = ["?"] * 10
    frame = pd.DataFrame({"amount": amounts, "q": [str(i) if i % 10 else "?" for i in range(200)]})
    pre = FeaturePreprocessor().fit(frame)
    specs = {c["name"]: c for c in pre.columns_}
    assert specs["amount"]["kind"] == "numeric" and specs["amount"]["text"] == {"thousands": True, "missing": ["?"]}
    assert specs["q"]["kind"] == "numeric" and specs["q"]["text"] == {"missing": ["?"]}
    assert any("10 cells written '?' read as missing" in n and "commas" in n for n in pre.notes_)
    report: list[str] = []
    raw = pre.transform_for_gbt(pd.DataFrame({"amount": ["1,234.5", "?", "n/a?"], "q": ["7", "?", "3"]}), report)
    assert raw["amount"].iloc[0] == pytest.approx(1234.5) and np.isnan(raw["amount"].iloc[1:]).all()
    assert raw["q"].tolist()[0] == 7 and np.isnan(raw["q"].iloc[1])
    assert report == ["column 'amount': 1 values could not be read as numbers and were treated as missing"]


def test_numbers_beyond_float32_are_missing_as_infinities_are():
    """1e39 is finite in float64 but an infinity in the float32 the nets and XGBoost compute in (XGBoost refused
    the matrix: "Input data contains `inf` or a value too large"): such cells read as missing, with a note per kind."""
    x = np.linspace(-5.0, 5.0, 60)
    x[[3, 7]], x[11], x[13] = [1e39, -3e300], np.inf, 3.4e38  # the last is float32's largest order: kept
    pre = FeaturePreprocessor().fit(pd.DataFrame({"x": x}))
    assert "column 'x': 2 values beyond +-3.4e38 (float32's range) treated as missing" in pre.notes_
    assert "column 'x': 1 infinite values treated as missing" in pre.notes_
    report: list[str] = []
    raw = pre.transform_for_gbt(pd.DataFrame({"x": [1e39, 2.0, 3.4e38, -1e300]}), report)["x"].to_numpy()
    assert raw.dtype == np.float32 and np.isnan(raw[[0, 3]]).all() and np.isfinite(raw[[1, 2]]).all()
    assert report == ["column 'x': 2 values beyond +-3.4e38 (float32's range) were treated as missing"]
    assert np.isfinite(pre.transform(pd.DataFrame({"x": [1e39, 2.0]}))).all()  # the nets' matrix: imputed


def test_a_column_of_missing_markers_is_dropped():
    pre = FeaturePreprocessor().fit(pd.DataFrame({"m": ["?"] * 50, "x": np.arange(50) % 3}))
    assert [c["name"] for c in pre.columns_] == ["x"]
    assert any("'m'" in n and "written '?'" in n for n in pre.notes_)


def test_nested_columns_are_dropped_with_a_note():
    frame = pd.DataFrame({"lst": [[1, 2]] * 30, "rec": [{"a": 1}] * 30, "x": np.arange(30) % 4, "y": np.arange(30) % 2})
    data = load_dataset(frame, target="y")
    assert list(data.features.columns) == ["x"]
    assert sum("holds lists" in n or "hold lists" in n for n in data.notes) == 2
    assert len(data.fingerprint()) == 64


def test_transform_for_gbt(messy):
    pre = FeaturePreprocessor().fit(messy.iloc[:150])
    gbt = pre.transform_for_gbt(messy.iloc[150:])
    assert list(gbt.columns) == ["num", "color", "when__year", "when__month", "when__day", "when__day_of_week",
                                 "when__day_of_year", "when__hour", "mixed", "numtext", "huge", "flag"]
    assert gbt["num"].dtype == np.float32
    assert gbt["num"].isna().sum() == 0  # rows 150+ have no missing; no imputation anyway:
    assert pre.transform_for_gbt(messy.iloc[:7])["num"].isna().sum() == 7  # NaN and +-inf stay missing
    assert isinstance(gbt["color"].dtype, pd.CategoricalDtype)
    assert list(gbt["color"].cat.categories) == ["blue", "green", "red"]
    assert gbt["color"].isna().sum() == messy["color"].iloc[150:].isna().sum()
    unseen = messy.iloc[:3].copy()
    unseen["color"] = "purple"
    assert pre.transform_for_gbt(unseen)["color"].isna().all()
    assert list(pre.transform_for_gbt(unseen)["huge"].cat.categories) == list(gbt["huge"].cat.categories)


def test_min_frequency_and_max_categories():
    df = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 3 + ["d"] * 2, "x": np.arange(85.0) % 5})
    pre = FeaturePreprocessor(min_frequency=5).fit(df)
    assert [n for n in pre.feature_names_ if n.startswith("c=")] == ["c=a", "c=b", "c=__rare__"]
    # more frequent levels than max_categories: one column of level codes for the nets' embeddings
    pre = FeaturePreprocessor(min_frequency=1, max_categories=2).fit(df)
    assert [n for n in pre.feature_names_ if n.startswith("c")] == ["c__code"]
    assert pre.categorical_features_ == [(0, 5)]  # a, b, c, d and the reserved 0
    codes = pre.transform(pd.DataFrame({"c": ["a", "d", "zz"], "x": [0.0] * 3}))[:, 0]
    assert codes.tolist() == [1.0, 4.0, 0.0]


def test_memory_guard(messy):
    wide = _many_levels(60, 4)  # 60 one-hot levels (not more than max_categories: no codes)
    pre = FeaturePreprocessor(max_bytes=240 * 12 * 4, min_frequency=1).fit(wide)
    assert any("at most 8 levels" in n for n in pre.notes_)
    assert sum(n.startswith("c=") for n in pre.feature_names_) == 9  # 8 levels + __rare__
    with pytest.raises(DataError, match="feature matrix would take") as info:
        FeaturePreprocessor(max_bytes=1000).fit(messy)
    assert "200 rows" in str(info.value)


def test_preprocessor_does_not_modify_input(messy):
    copy = messy.copy()
    pre = FeaturePreprocessor().fit(messy, scaling="quantile")
    pre.transform(messy)
    pre.transform_for_gbt(messy)
    pd.testing.assert_frame_equal(messy, copy)


def test_preprocessor_on_csv_round_trip(tmp_path, messy):
    """A frame written to CSV and read back (pandas 3 'str' dtype) gives the same matrix."""
    path = tmp_path / "m.csv"
    messy.to_csv(path, index=False)
    back = read_table(path)
    pre = FeaturePreprocessor().fit(messy)
    np.testing.assert_allclose(pre.transform(back), pre.transform(messy), atol=1e-6)


def test_latin1_byte_after_the_sniffed_sample(tmp_path):
    rows = "".join(f"{i},plain\n" for i in range(12000))  # > 64 KiB of ASCII first
    (tmp_path / "late.csv").write_bytes(("id,word\n" + rows + "99999,caf\xe9\n").encode("latin-1"))
    got = read_table(tmp_path / "late.csv")
    assert got["word"].iloc[-1] == "café" and len(got) == 12001


def test_id_detection_sorted_or_range():
    rng = np.random.default_rng(0)
    n = 50
    df = pd.DataFrame({
        "sorted_ts": np.cumsum(rng.integers(100, 10_000, n)),  # unique, increasing, sparse
        "shuffled_ids": rng.permutation(np.arange(n) * 2),  # unique, fills its range half-densely
        "unique_sparse": rng.choice(10**6, n, replace=False),  # unique but neither: a real feature
        "x": rng.normal(size=n),
    })
    pre = FeaturePreprocessor().fit(df)
    assert {d["name"] for d in pre.dropped_} == {"sorted_ts", "shuffled_ids"}
    small = FeaturePreprocessor().fit(df.iloc[:15])  # too few rows to call anything an ID
    assert small.dropped_ == []


# ---------------------------------------------------------------------------------------------
# robust scaling (RealMLP-TD: median, IQR, smooth clip)


def _clip(z: float) -> float:
    return z / np.sqrt(1 + (z / 3) ** 2)


def test_robust_scaling_exact_values():
    train = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 100.0, np.nan]})
    pre = FeaturePreprocessor().fit(train, scaling="robust")
    stats = pre.columns_[0]["stats"]
    # observed 1, 2, 3, 4, 100: median 3, q25 = 2, q75 = 4 (linear interpolation) -> spread 2
    assert stats == {"median": 3.0, "spread": 2.0}
    X = pre.transform(pd.DataFrame({"x": [3.0, 9.0, 1.0, 100.0, np.nan, -3e38, 3e38, 1e308]}))
    assert pre.feature_names_ == ["x", "x__missing"]
    assert X[0, 0] == 0.0 and X[4, 0] == 0.0  # the median, and a missing cell imputed with it
    assert X[1, 0] == pytest.approx(3 / np.sqrt(2), rel=1e-6)  # z = (9 - 3) / 2 = 3 -> 3 / sqrt(2)
    assert X[2, 0] == pytest.approx(-3 / np.sqrt(10), rel=1e-6)  # z = -1 -> -1 / sqrt(1 + 1/9)
    assert X[3, 0] == pytest.approx(_clip(48.5), rel=1e-6)
    assert X[5, 0] == pytest.approx(-3.0) and X[6, 0] == pytest.approx(3.0)  # no overflow to 0 or NaN
    assert X[7, 0] == 0.0  # beyond float32's range: missing, imputed (test_numbers_beyond_float32_...)
    assert X[:, 1].tolist() == [0, 0, 0, 0, 1, 0, 0, 1]
    assert np.abs(X[:, 0]).max() <= 3.0
    assert smooth_clip(np.array([-1e308, 1e308])) == pytest.approx([-3.0, 3.0])  # no overflow to 0 or NaN


def test_robust_scaling_zero_iqr_falls_back_to_half_range():
    # more than half the rows are 0: q25 = q75 = 0, so the spread is (max - min) / 2 = (10 - -2) / 2 = 6
    train = pd.DataFrame({"x": [0.0] * 6 + [-2.0, 10.0]})
    pre = FeaturePreprocessor().fit(train, scaling="robust")
    assert pre.columns_[0]["stats"] == {"median": 0.0, "spread": 6.0}
    X = pre.transform(train)[:, 0]
    assert X[:6].tolist() == [0.0] * 6
    assert X[7] == pytest.approx(_clip(10 / 6), rel=1e-6)
    assert X[6] == pytest.approx(_clip(-2 / 6), rel=1e-6)


def test_robust_scaling_column_constant_in_training_maps_to_zero():
    # constant with missing cells: kept (its indicator carries information), spread 0 -> the values are 0
    when = pd.Series(["2021-03-01", "2021-03-02", "2021-03-03", "2021-03-04"] * 2)
    train = pd.DataFrame({"x": [5.0, 5.0, np.nan, 5.0] * 2, "when": when})
    pre = FeaturePreprocessor().fit(train, scaling="robust")
    assert pre.columns_[0]["stats"] == {"median": 5.0, "spread": 0.0}
    X = pre.transform(pd.DataFrame({"x": [5.0, 1e6, np.nan, -3.0], "when": when[:4]}))
    names = pre.feature_names_
    assert X[:, names.index("x")].tolist() == [0.0] * 4
    assert X[:, names.index("x__missing")].tolist() == [0, 0, 1, 0]
    # a date part: day 1..4 -> median 2.5, q25 = 1.75, q75 = 3.25, spread 1.5
    day = next(p for p in pre.columns_[1]["parts"] if p["part"] == "day")
    assert day["stats"] == {"median": 2.5, "spread": 1.5}
    np.testing.assert_allclose(X[:, names.index("when__day")], [_clip(v / 1.5) for v in (-1.5, -0.5, 0.5, 1.5)],
                               rtol=1e-6)


def test_robust_scaling_bounded_on_messy_data(messy):
    pre = FeaturePreprocessor().fit(messy.iloc[:150], scaling="robust")
    X = pre.transform(messy)
    assert np.isfinite(X).all() and np.abs(X).max() <= 3.0
    assert pre.to_dict()["scaling"] == "robust"


def test_from_dict_refuses_unknown_scaling_and_version(messy):
    d = FeaturePreprocessor().fit(messy).to_dict()
    with pytest.raises(AutoDNNError, match="scaling 'fancy'"):
        FeaturePreprocessor.from_dict(dict(d, scaling="fancy"))
    with pytest.raises(AutoDNNError, match="version 99"):
        FeaturePreprocessor.from_dict(dict(d, version=99))
    with pytest.raises(ValueError, match="'robust'"):
        FeaturePreprocessor().fit(messy, scaling="minmax")


# ---------------------------------------------------------------------------------------------
# XGBoost's categories: every training level, no 64 cap


def _many_levels(n_levels: int, per_level: int) -> pd.DataFrame:
    levels = [f"v{i:05d}" for i in range(n_levels)]
    return pd.DataFrame({"c": np.repeat(levels, per_level), "x": np.arange(n_levels * per_level) % 7 * 1.0})


def test_gbt_keeps_every_level_while_the_nets_get_codes():
    train = _many_levels(200, 5)  # 1000 rows, min_count 5: 200 frequent levels, more than one-hot's 64
    pre = FeaturePreprocessor().fit(train)
    assert pre.feature_names_ == ["c__code", "x"] and pre.categorical_features_ == [(0, 201)]
    gbt = pre.transform_for_gbt(train)
    assert list(gbt["c"].cat.categories) == sorted(train["c"].unique()) and len(gbt["c"].cat.categories) == 200
    assert gbt["c"].astype(str).tolist() == train["c"].tolist()  # no level folded, none missing
    # levels seen once are kept too (XGBoost's min_child_weight / lambda judge them, not min_frequency)
    once = pd.concat([train, pd.DataFrame({"c": ["solo"], "x": [1.0]})], ignore_index=True)
    assert "solo" in FeaturePreprocessor().fit(once).transform_for_gbt(once)["c"].cat.categories
    back = FeaturePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    pd.testing.assert_frame_equal(back.transform_for_gbt(train), gbt)


def test_gbt_unseen_level_is_missing():
    train = _many_levels(200, 5)
    train.loc[::50, "c"] = None  # a missing level too
    pre = FeaturePreprocessor().fit(train)
    new = pd.DataFrame({"c": ["v00003", "never-seen", None, "v00199"], "x": [1.0] * 4})
    report: list[str] = []
    got = pre.transform_for_gbt(new, report=report)["c"]
    assert got.isna().tolist() == [False, True, True, False]
    assert got.astype(object).tolist()[0] == "v00003"
    assert report == ["column 'c': 1 values not seen in training were treated as unknown"]
    # the nets' codes map the same unseen value to __rare__ (this column has it), without a note
    X = pre.transform(new, report=report)
    levels = pre.columns_[0]["levels"]
    assert X[1, pre.feature_names_.index("c__code")] == levels.index("__rare__") + 1 and len(report) == 1


def test_gbt_and_nets_share_one_note_for_an_unseen_level(messy):
    pre = FeaturePreprocessor().fit(messy)
    new = messy.iloc[10:14].copy()  # rows without odd cells
    new["color"] = "purple"  # color has no __rare__: all zeros for the nets, missing for XGBoost
    notes: list[str] = []
    pre.transform(new, report=notes)
    pre.transform_for_gbt(new, report=notes)
    assert set(notes) == {"column 'color': 4 values not seen in training were treated as unknown"}


def test_gbt_old_format_spec_still_transforms():
    train = pd.concat([_many_levels(60, 5), pd.DataFrame({"c": [f"once{i}" for i in range(10)], "x": [0.0] * 10})],
                      ignore_index=True)  # 60 one-hot levels and 10 rare ones folded into __rare__
    pre = FeaturePreprocessor().fit(train)
    old = pre.to_dict()
    old["version"] = 1
    for spec in old["columns"]:
        spec.pop("gbt_levels", None)
    pre_old = FeaturePreprocessor.from_dict(json.loads(json.dumps(old)))
    gbt = pre_old.transform_for_gbt(pd.concat([train, pd.DataFrame({"c": ["new"], "x": [0.0]})], ignore_index=True))
    cats = list(gbt["c"].cat.categories)
    assert len(cats) == 61 and cats[-1] == "__rare__"  # the one-hot levels, as before gbt_levels
    assert gbt["c"].iloc[-1] == "__rare__" and not gbt["c"].isna().any()
    np.testing.assert_array_equal(pre_old.transform(train), pre.transform(train))


def test_gbt_ten_thousand_levels_stay_narrow():
    train = _many_levels(10_000, 2)
    pre = FeaturePreprocessor(min_frequency=1).fit(train)
    assert pre.n_features_ == 2 and pre.categorical_features_ == [(0, 10_001)]  # codes, and x
    gbt = pre.transform_for_gbt(train)
    assert gbt.shape == (20_000, 2) and len(gbt["c"].cat.categories) == 10_000
    assert gbt["c"].cat.codes.dtype == np.int16  # one small code per row, nothing rows x levels wide
    assert not any("XGBoost keeps" in n for n in pre.notes_)


def test_gbt_levels_capped_at_the_most_frequent(monkeypatch):
    from automl_dnn.data import preprocessing

    monkeypatch.setattr(preprocessing, "GBT_MAX_LEVELS", 3)
    train = pd.DataFrame({"c": list("aaaabbbccd") * 3, "x": np.arange(30.0) % 4})
    pre = FeaturePreprocessor(min_frequency=1).fit(train)
    assert pre.columns_[0]["gbt_levels"] == ["a", "b", "c"]
    assert pre.transform_for_gbt(train)["c"].isna().sum() == 3  # the 3 rows of 'd'
    assert any("XGBoost keeps the 3 most frequent of its 4 values" in n for n in pre.notes_)


def test_gbt_levels_fit_a_one_byte_bin_index_in_a_big_table(monkeypatch):
    """Issue 13: past GBT_NARROW_CELLS training cells XGBoost keeps GBT_BYTE_LEVELS levels; the nets all."""
    from automl_dnn.data import preprocessing

    monkeypatch.setattr(preprocessing, "GBT_BYTE_LEVELS", 3)
    train = pd.DataFrame({"c": list("aaaabbbccd") * 3, "x": np.arange(30.0) % 4})  # 30 rows x 2 columns
    monkeypatch.setattr(preprocessing, "GBT_NARROW_CELLS", 61)
    small = FeaturePreprocessor(min_frequency=1).fit(train)
    assert small.columns_[0]["gbt_levels"] == ["a", "b", "c", "d"]
    monkeypatch.setattr(preprocessing, "GBT_NARROW_CELLS", 60)
    big = FeaturePreprocessor(min_frequency=1).fit(train)
    assert big.columns_[0]["gbt_levels"] == ["a", "b", "c"]
    assert big.columns_[0]["levels"] == small.columns_[0]["levels"]  # the nets' levels are not narrowed
    assert big.transform_for_gbt(train)["c"].isna().sum() == 3  # the 3 rows of 'd'
    assert any("XGBoost keeps the 3 most frequent of its 4 values in a table this big" in n for n in big.notes_)
    again = FeaturePreprocessor.from_dict(big.to_dict())
    assert again.transform_for_gbt(train)["c"].isna().sum() == 3


# ---------------------------------------------------------------------------------------------
# continuous features (for numeric embeddings)


def test_continuous_features_are_numbers_and_date_parts():
    df = pd.DataFrame({
        "num": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
        "cat": ["a", "b", "a", "b", "a", "b"],
        "when": ["2020-01-01", "2020-02-03", "2021-03-05", None, "2022-05-09", "2023-07-11"],
        "full": [0.5, 1.5, 2.5, 3.5, 4.5, 0.0],
    })
    pre = FeaturePreprocessor(min_frequency=1).fit(df)
    names = pre.feature_names_
    assert names == ["num", "num__missing", "cat=a", "cat=b", "when__year", "when__month", "when__day",
                     "when__day_of_week", "when__day_of_year", "when__missing", "full"]
    expected = [0, 4, 5, 6, 7, 8, 10]
    assert pre.continuous_features_ == expected
    loaded = FeaturePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert loaded.continuous_features_ == expected
    X = pre.transform(df)
    indicators = [j for j in range(len(names)) if j not in expected]
    assert set(np.unique(X[:, indicators])) <= {0.0, 1.0}


# ---------------------------------------------------------------------------------------------
# odd tables a user may bring (a robustness sweep's findings)


def test_a_target_name_that_several_columns_have_is_refused(tmp_path):
    rows = "".join(f"{i * 0.5},{i % 3},{'yes' if i % 2 else 'no'}\n" for i in range(40))
    (tmp_path / "d.csv").write_text("y,b,y\n" + rows)
    with pytest.raises(DataError, match="target 'y' names more than one column of the table; rename"):
        load_dataset(tmp_path / "d.csv", target="y")
    frame = pd.read_csv(tmp_path / "d.csv").set_axis(["y", "b", "y"], axis=1)  # a DataFrame source too
    with pytest.raises(DataError, match="target 'y' names more than one column"):
        load_dataset(frame, target="y")
    data = load_dataset(tmp_path / "d.csv", target="b", task="multiclass")  # another target: the copies are features
    assert list(data.features.columns) == ["y", "y.1"]


def test_a_column_without_a_name_gets_a_note(tmp_path):
    (tmp_path / "u.csv").write_text("a,,y\n1,2,yes\n3,4,no\n")
    got = read_table(tmp_path / "u.csv")
    assert list(got.columns) == ["a", "Unnamed: 1", "y"]
    assert "1 column without a name in the header, called 'Unnamed: 1'" in got.attrs["automl_dnn_notes"]


def test_several_columns_without_a_name_are_no_duplicate_names(tmp_path):
    """A header ending with two empty names (a spreadsheet's trailing empty columns) also said "duplicate column names
    '' were made unique by adding .1, .2, ...", which named neither the names pandas gave them nor the fix."""
    (tmp_path / "u.csv").write_text("a,b,y,,\n1,2,yes,,\n3,4,no,,\n")
    got = read_table(tmp_path / "u.csv")
    assert got.attrs["automl_dnn_notes"] == ["2 columns without a name in the header, called 'Unnamed: 3', 'Unnamed: 4'"]


@pytest.mark.parametrize("values", [pd.date_range("2020-01-01", periods=40, freq="D"),
                                    pd.to_timedelta(np.arange(40), unit="D")], ids=["dates", "durations"])
@pytest.mark.parametrize("task", ["auto", "regression", "multiclass"])
def test_a_date_or_duration_target_is_refused(values, task):
    """Read as numbers they would be nanoseconds: a regression that predicts 1.6e18."""
    with pytest.raises(DataError, match="target 'y' holds dates or durations .*; convert it to a number"):
        load_dataset(_frame().assign(y=values), target="y", task=task)


def test_percentages_are_read_as_fractions():
    frame = pd.DataFrame({"pct": [f"{v:g}%" for v in range(40)], "x": np.arange(40) % 7})
    frame.loc[3, "pct"] = "?"
    pre = FeaturePreprocessor().fit(frame)
    spec = next(c for c in pre.columns_ if c["name"] == "pct")
    assert spec["kind"] == "numeric" and spec["text"] == {"percent": True, "missing": ["?"]}
    assert any("percentages read as fractions" in n for n in pre.notes_)
    col = pre.feature_names_.index("pct")
    same = FeaturePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    got = same.transform(pd.DataFrame({"pct": ["12.5 %", "0.125"], "x": [1, 1]}))[:, col]
    assert got[0] == pytest.approx(got[1])  # 12.5 % is 0.125


def test_zoned_dates_give_their_parts_on_their_own_clock():
    """The hour and weekday of a zoned time are those of its zone's clock (a shop's 9 am), whether it arrives
    zoned in any zone, as text with an offset, or as the same wall-clock time without a zone."""
    when = pd.date_range("2020-01-03 20:00", periods=60, freq="5h", tz="Europe/Paris")
    zoned = pd.DataFrame({"when": when, "x": np.arange(60) % 5})
    pre = FeaturePreprocessor().fit(zoned)
    assert next(c for c in pre.columns_ if c["name"] == "when")["text"] == {"tz": "Europe/Paris"}
    local = FeaturePreprocessor().fit(zoned.assign(when=when.tz_localize(None)))
    want = local.transform(zoned.assign(when=when.tz_localize(None)))
    same = FeaturePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    for arrives in (when, when.tz_convert("UTC"), when.tz_localize(None), when.astype(str)):
        np.testing.assert_array_equal(same.transform(zoned.assign(when=arrives)), want)


def test_a_boolean_column_reads_1_0_and_lower_case_as_its_levels():
    frame = pd.DataFrame({"flag": [True, False, False] * 20, "x": np.arange(60) % 7})
    pre = FeaturePreprocessor().fit(frame)
    want, want_gbt = pre.transform(frame.head(4)), pre.transform_for_gbt(frame.head(4))
    for other in ([1, 0, 0, 1], ["true", "False", "FALSE", "True"]):
        report: list[str] = []
        np.testing.assert_array_equal(pre.transform(frame.head(4).assign(flag=other), report=report), want)
        gbt = pre.transform_for_gbt(frame.head(4).assign(flag=other), report=report)
        assert gbt["flag"].tolist() == want_gbt["flag"].tolist() and report == []


def test_rows_without_a_group_are_one_group_and_a_note_says_so():
    frame = _frame(60).assign(g=[None if i % 10 == 0 else f"g{i // 3}" for i in range(60)])
    data = load_dataset(frame, target="y", groups="g")
    assert "6 rows with a missing --groups 'g' form one group of their own" in data.notes
    missing = frame["g"].isna().to_numpy()
    parts = [part for part, rows in data.split.items() if missing[rows].any()]
    assert len(parts) == 1  # all on one side of the split


def test_a_stored_time_zone_this_machine_cannot_read_is_refused_at_load():
    when = pd.date_range("2020-01-03", periods=30, freq="5h", tz="Europe/Paris")
    d = FeaturePreprocessor().fit(pd.DataFrame({"when": when, "x": np.arange(30) % 4})).to_dict()
    spec = next(c for c in d["columns"] if c["name"] == "when")
    spec["text"]["tz"] = "Mars/Olympus_Mons"
    with pytest.raises(AutoDNNError, match="time zone 'Mars/Olympus_Mons', which this machine does not know"):
        FeaturePreprocessor.from_dict(d)


def test_categorical_columns_of_codes_are_read_as_categories() -> None:
    """Zip codes are numbers that name places: read as quantities, a net cannot learn a value per code."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"zip": rng.choice([10115, 20095, 80331, 50667], 200), "x": rng.normal(size=200),
                       "y": rng.integers(0, 2, 200)})
    plain = load_dataset(df, target="y", test_size=0.0)
    coded = load_dataset(df, target="y", test_size=0.0, categorical=["zip"])
    assert load_dataset(df, target="y", test_size=0.0, categorical="zip").fingerprint() == coded.fingerprint(), \
        "one name as a string is that column, not its letters"
    kinds = [{c["name"]: c["kind"] for c in FeaturePreprocessor().fit(d.features).columns_} for d in (plain, coded)]
    assert kinds == [{"zip": "numeric", "x": "numeric"}, {"zip": "categorical", "x": "numeric"}]
    assert plain.fingerprint() != coded.fingerprint(), "a resume must read the column as the search did"
    pre = FeaturePreprocessor().fit(coded.features)
    codes = pre.transform(pd.DataFrame({"zip": [80331, 99999], "x": [0.0, 0.0]}))  # ints at predict, one unseen
    assert not np.array_equal(codes[0], codes[1])
    for name, needle in (("y", "is the target"), ("zipcode", "is not in the table")):
        with pytest.raises(DataError, match=f"--categorical '{name}' {needle}"):
            load_dataset(df, target="y", categorical=[name])


@pytest.mark.parametrize("write", [lambda v: f"${v:,.2f}", lambda v: f"{v:,.2f}", lambda v: f"{v / 1e3:.5f}%",
                                   lambda v: f"{v:.2f} kg", lambda v: f"USD {v:,.2f}".replace(",", " ")],
                         ids=["currency", "thousands", "percent", "unit", "currency code and spaces"])
def test_a_target_of_formatted_numbers_is_a_regression(write) -> None:
    """A price target written '$48,123.45' (or 48,123.45, or 45.3%), which a feature column of the same cells reads
    as numbers, was 400 text classes: "too many to be classes; use --task regression", and with that option
    "--task regression needs numbers". It is read as numbers, with a note."""
    rng = np.random.default_rng(0)
    values = np.round(np.exp(rng.normal(10.5, 0.6, 200)), 2)
    frame = pd.DataFrame({"x": np.log(values) + rng.normal(0, 0.1, 200), "price": [write(v) for v in values]})
    frame.loc[3, "price"] = None
    for task in ("auto", "regression"):
        ds = load_dataset(frame, target="price", task=task)
        assert ds.task == "regression"
        got = ds.target_encoder.decode(ds.y)
        want = np.delete(values, 3) / (1e5 if "%" in frame["price"].iloc[0] else 1)
        np.testing.assert_allclose(got, want, rtol=1e-6)  # y is encoded in float32
        assert any("target 'price' holds text" in note and "read it as numbers" in note for note in ds.notes)
    labels = pd.DataFrame({"x": np.arange(200), "y": ["$5"] * 100 + ["five dollars"] * 100})
    assert load_dataset(labels, target="y").task == "binary"  # not every label a number: text classes as before
    weights = [f"{i % 3 + 1} kg" if i % 2 else f"{i % 3 + 1} lb" for i in range(200)]
    units = pd.DataFrame({"x": np.arange(200), "y": weights})
    assert load_dataset(units, target="y").task == "multiclass"  # two units: text classes as before


def test_a_float16_target_is_read(tmp_path) -> None:
    """A Parquet file (or a frame) whose target was cast to float16 to save memory: "internal error:
    NotImplementedError: float16 indexes are not supported" before the search began."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=100), "y": rng.normal(size=100).astype(np.float16),
                          "c": rng.choice([0.5, 1.5], 100).astype(np.float16)})
    frame.to_parquet(tmp_path / "half.parquet")
    ds = load_dataset(tmp_path / "half.parquet", target="y")
    assert ds.task == "regression"
    np.testing.assert_allclose(ds.target_encoder.decode(ds.y), frame["y"].astype(np.float64), rtol=1e-6)
    assert load_dataset(frame, target="c").task == "binary"


@pytest.mark.parametrize("dtype", ["bool", "boolean", "category"])
def test_a_boolean_or_categorical_target_asked_to_be_a_regression_is_read_as_numbers(dtype: str) -> None:
    """--task regression (or AutoDNNRegressor) on True / False, or on categories of numbers, was refused with
    "--task regression needs numbers, but target 'y' has text values like ;", naming no text value."""
    rng = np.random.default_rng(0)
    flags = rng.normal(size=100) > 0
    y = pd.Series(flags, dtype=dtype) if dtype != "category" else pd.Series(flags.astype(float) * 2.5, dtype=dtype)
    ds = load_dataset(pd.DataFrame({"x": rng.normal(size=100), "y": y}), target="y", task="regression")
    assert ds.task == "regression"
    expected = flags.astype(float) * (2.5 if dtype == "category" else 1.0)
    np.testing.assert_allclose(ds.target_encoder.decode(ds.y), expected, atol=1e-6)


def test_a_text_target_asked_to_be_a_regression_names_its_text() -> None:
    frame = pd.DataFrame({"x": np.arange(40), "y": pd.Categorical(["yes", "no"] * 20)})
    with pytest.raises(DataError, match="needs numbers, but target 'y' has text values like '(yes|no)'"):
        load_dataset(frame, target="y", task="regression")


def test_labels_that_differ_only_in_case_are_named_in_a_note() -> None:
    """'Yes', 'yes' and 'no' made a 3-class target with no word said; they stay apart ('a' and 'A' may be two
    classes) and a note names them."""
    frame = pd.DataFrame({"x": np.arange(60), "y": ["yes", "no", "Yes"] * 20})
    ds = load_dataset(frame, target="y")
    assert ds.task == "multiclass"
    assert "labels of target 'y' that differ only in case are different classes: 'Yes' and 'yes'; if they are one " \
           "class, write them alike" in ds.notes
    assert not any("differ only in case" in note for note in load_dataset(frame.replace("Yes", "yes"), target="y").notes)


@pytest.mark.parametrize("mark", ["'", "\u2019", " ", "\u00a0", "\u202f"])
def test_apostrophes_or_spaces_between_digit_groups_are_numbers(mark: str) -> None:
    """12'345.67 (Switzerland) and 12 345.67 (SI, a spreadsheet's no-break space) were text, every value different,
    and the column was dropped as a key; numbers, as 12,345.67 are. One kind of mark in a number."""
    rng = np.random.default_rng(0)
    values = np.abs(np.round(rng.normal(0, 1e5, 100)))
    frame = pd.DataFrame({"amount": [f"{v:,.0f}".replace(",", mark) + ".5" for v in values],
                          "mixed": ["1'234 567", "5", "6", "7"] * 25})
    pre = FeaturePreprocessor().fit(frame)
    specs = {c["name"]: c for c in pre.columns_}
    assert specs["amount"]["kind"] == "numeric" and specs["amount"]["text"] == {"thousands": True}
    assert specs["mixed"]["kind"] == "categorical"
    np.testing.assert_allclose(pre.transform_for_gbt(frame)["amount"], values + 0.5, rtol=1e-6)


def test_accountants_negatives_in_parentheses_are_numbers() -> None:
    """A ledger export writes -1,234.50 as (1,234.50), and ($5) for -$5: the column mixed numbers and text and was
    read as capped categories. Negative numbers, by a reading saved with the model; '(n/a)' stays text."""
    rng = np.random.default_rng(0)
    values = np.round(rng.normal(0, 2000, 200))  # whole: values / 100 writes exactly with 2 decimals
    frame = pd.DataFrame({"pnl": [f"({-v:,.2f})" if v < 0 else f"{v:,.2f}" for v in values],
                          "fee": [f"(${-v:,.2f})" if v < 0 else f"${v:,.2f}" for v in values / 100],
                          "tag": rng.choice(["(n/a)", "(x)", "y"], 200)})
    pre = FeaturePreprocessor().fit(frame)
    specs = {c["name"]: c for c in pre.columns_}
    assert specs["pnl"]["kind"] == "numeric" and specs["pnl"]["text"] == {"parentheses": True, "thousands": True}
    assert specs["fee"]["kind"] == "numeric" and specs["tag"]["kind"] == "categorical"
    assert any("'pnl'" in note and "(12.50) read as -12.50" in note for note in pre.notes_)
    raw = pre.transform_for_gbt(frame)
    np.testing.assert_allclose(raw["pnl"], values, rtol=1e-6)
    np.testing.assert_allclose(raw["fee"], values / 100, rtol=1e-6)
    again = FeaturePreprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again.to_dict()["version"] >= 6  # an older reader would read (1.50) as missing: it must refuse the file
    pd.testing.assert_frame_equal(again.transform_for_gbt(frame), raw)


def test_currency_amounts_are_read_as_numbers() -> None:
    """Amounts of money written with a currency sign ($1,234.50) are numbers, not a column of all-rare levels
    (it was dropped: "every level is rarer than 5 rows", AUC 0.865 where the parsed column gives 0.943)."""
    rng = np.random.default_rng(0)
    income = np.exp(rng.normal(10.5, 0.6, 300))
    cells = [f"${v:,.2f}" for v in income]
    cells[::30] = ["?"] * 10
    frame = pd.DataFrame({"income": cells, "fee": [f"{v:.2f} \u20ac" for v in income / 100],
                          "x": np.arange(300) % 7})
    pre = FeaturePreprocessor().fit(frame)
    specs = {c["name"]: c for c in pre.columns_}
    assert specs["income"]["kind"] == "numeric"  # was dropped: "every level is rarer than 5 rows"
    assert specs["income"]["text"] == {"currency": True, "thousands": True, "missing": ["?"]}
    assert specs["fee"]["kind"] == "numeric" and specs["fee"]["text"] == {"currency": True}
    assert any("'income'" in n and "currency signs dropped" in n for n in pre.notes_)
    report: list[str] = []
    raw = pre.transform_for_gbt(pd.DataFrame({"income": ["$1,234.50", "-$5", "?", "$abc"],
                                              "fee": ["12.50 \u20ac", "3 \u20ac", "7", "\u20ac"], "x": [1, 2, 3, 4]}), report)
    assert raw["income"].tolist()[:2] == pytest.approx([1234.5, -5.0]) and np.isnan(raw["income"].iloc[2:]).all()
    assert raw["fee"].tolist()[:3] == pytest.approx([12.5, 3.0, 7.0]) and np.isnan(raw["fee"].iloc[3])
    assert report == ["column 'income': 1 values could not be read as numbers and were treated as missing",
                      "column 'fee': 1 values could not be read as numbers and were treated as missing"]
    again = FeaturePreprocessor.from_dict(pre.to_dict())  # the reading survives the saved JSON
    assert np.allclose(again.transform(frame), pre.transform(frame))


def test_numbers_in_another_unit_or_currency_are_counted_and_words_are_not() -> None:
    """What tells predict's guard that a column in pounds is still the kg column (its cells then missing), where a
    column of words is another column."""
    cells = pd.Series(["160 lb", "12 kg", "heavy", None, "EUR 5", "A12", "3.5GB"])
    assert other_unit_numbers(cells, {"unit": "kg"}) == 3  # 160 lb, EUR 5, 3.5GB
    assert other_unit_numbers(cells, {"prefix": "USD"}) == 4  # and 12 kg
    assert other_unit_numbers(cells, {"thousands": True}) == 0 == other_unit_numbers(cells, None)  # no unit read
    assert other_unit_numbers(pd.Series(["heavy", "light"] * 3), {"unit": "kg"}) == 0


def test_numbers_with_one_unit_are_numbers_and_mixed_units_stay_text() -> None:
    """12.3 kg, 150 cm, 3.5GB and USD 1,234.50 (a unit after the number, a currency code before it) and $1 234.50
    (spaces between digit groups) were text: capped categories, or dropped as keys. Numbers, by a reading saved with
    the model; a column mixing units (12 kg, 3 lb), IDs like A12 and codes of three capitals stay text."""
    rng = np.random.default_rng(0)
    n = 120
    kg = np.round(rng.uniform(40, 120, n), 1)
    cm = rng.integers(140, 200, n)
    gb = np.round(rng.uniform(0.5, 64, n), 1)
    usd = np.round(rng.uniform(100, 90_000, n), 2)
    frame = pd.DataFrame({
        "weight": [f"{v} kg" for v in kg], "height": [f"{v}cm" for v in cm], "disk": [f"{v}GB" for v in gb],
        "price": [f"${v:,.2f}".replace(",", " ") for v in usd], "fee": [f"USD {v:,.2f}" for v in usd],
        "mixed": [f"{v:g} kg" if i % 2 else f"{v:g} lb" for i, v in enumerate(kg)],
        "rupees": [f"Rs {v}" for v in cm], "ids": [f"A{v}" for v in cm], "codes": [f"ABC {v}" for v in cm],
        "x": np.arange(n) % 7})
    frame.loc[5, "weight"] = "?"
    pre = FeaturePreprocessor().fit(frame)
    specs = {c["name"]: c for c in pre.columns_}
    assert specs["weight"]["text"] == {"unit": "kg", "missing": ["?"]}
    assert specs["height"]["text"] == {"unit": "cm"} and specs["disk"]["text"] == {"unit": "GB"}
    assert specs["price"]["text"] == {"currency": True, "thousands": True}
    assert specs["fee"]["text"] == {"prefix": "USD", "thousands": True} and specs["rupees"]["text"] == {"prefix": "Rs"}
    assert {specs[c]["kind"] for c in ("weight", "height", "disk", "price", "fee", "rupees")} == {"numeric"}
    assert {specs[c]["kind"] for c in ("mixed", "ids", "codes")} == {"categorical"}
    assert any("'weight'" in n and "the unit 'kg' dropped" in n for n in pre.notes_)
    raw = pre.transform_for_gbt(frame)
    np.testing.assert_allclose(raw["weight"].drop(index=5), np.delete(kg, 5), rtol=1e-6)
    assert np.isnan(raw["weight"].iloc[5])
    np.testing.assert_allclose(raw[["height", "disk"]], np.c_[cm, gb], rtol=1e-6)
    np.testing.assert_allclose(raw["price"], usd, rtol=1e-6)
    np.testing.assert_allclose(raw["fee"], usd, rtol=1e-6)
    saved = json.loads(json.dumps(pre.to_dict()))
    assert saved["version"] >= 7  # an older reader would read 12.3 kg as missing: it must refuse the file
    again = FeaturePreprocessor.from_dict(saved)
    new = frame.head(4).assign(weight=["70 kg", "154 lb", "heavy", "71kg"], fee=["USD 5", "EUR 5", "USD -1 000", "5"])
    report: list[str] = []
    got = again.transform_for_gbt(new, report)
    np.testing.assert_array_equal(got["weight"], [70, np.nan, np.nan, 71])  # another unit: missing, not 154
    np.testing.assert_array_equal(got["fee"], [5, np.nan, -1000, 5])
    assert ("column 'weight': 2 values could not be read as numbers and were treated as missing (the column is in "
            "'kg': a number in another unit is not converted)") in report
    assert ("column 'fee': 1 values could not be read as numbers and were treated as missing (the column is in 'USD': "
            "an amount in another currency is not converted)") in report
    assert np.isfinite(again.transform(new, report)).all()


def test_a_preprocessor_saved_by_the_previous_version_still_loads() -> None:
    frame = pd.DataFrame({"amount": [f"${v:,.2f}" for v in range(1000, 1040)], "x": np.arange(40) % 3})
    pre = FeaturePreprocessor().fit(frame)
    for version in (6, 7):
        old = FeaturePreprocessor.from_dict(dict(json.loads(json.dumps(pre.to_dict())), version=version))
        np.testing.assert_array_equal(old.transform(frame), pre.transform(frame))


def test_times_of_day_are_seconds_since_midnight(tmp_path) -> None:
    """14:30, 14:30:15, 2:05 PM and Parquet's time64 (Python times in pandas) were capped categories: a clock read
    as 64 levels at most. Seconds since midnight, by a reading saved with the model, whichever way a batch writes
    them; a cell that is no time ('noon', '25:00') is missing with a note, and sorted times are no row ID."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 120
    seconds = np.sort(rng.choice(86_400, n, replace=False))  # all different and sorted, like a row ID's
    times = [datetime.time(int(v) // 3600, int(v) // 60 % 60, int(v) % 60) for v in seconds]
    table = pa.table({"at": pa.array(times, pa.time64("us")), "x": np.arange(n) % 7})
    pq.write_table(table, tmp_path / "t.parquet")
    frame = read_table(tmp_path / "t.parquet").assign(
        hhmm=[t.strftime("%H:%M") for t in times], ampm=[t.strftime("%I:%M:%S %p").lstrip("0") for t in times],
        hours=[t.strftime("%I %p").lstrip("0").lower() for t in times])
    frame.loc[4, "hhmm"] = "?"
    assert frame["at"].dtype == object and isinstance(frame["at"].iloc[0], datetime.time)
    pre = FeaturePreprocessor().fit(frame)
    specs = {c["name"]: c for c in pre.columns_}
    assert {name: (spec["kind"], spec.get("text")) for name, spec in specs.items() if name != "x"} == {
        "at": ("numeric", {"clock": True}), "hhmm": ("numeric", {"clock": True, "missing": ["?"]}),
        "ampm": ("numeric", {"clock": True}), "hours": ("numeric", {"clock": True})}
    assert "column 'at' holds times of day; read them as seconds since midnight" in pre.notes_
    raw = pre.transform_for_gbt(frame)
    np.testing.assert_array_equal(raw["at"], seconds)
    np.testing.assert_array_equal(raw["ampm"], seconds)
    np.testing.assert_array_equal(raw["hhmm"].drop(index=4), np.delete(seconds // 60 * 60, 4))
    np.testing.assert_array_equal(raw["hours"], seconds // 3600 * 3600)
    saved = json.loads(json.dumps(pre.to_dict()))
    assert saved["version"] == 8  # an older reader would read 14:30 as missing: it must refuse the file
    again = FeaturePreprocessor.from_dict(saved)
    new = frame.head(4).assign(at=["14:30", "2:30 PM", "noon", None], hhmm=[datetime.time(14, 30), "25:00", "?", "3"])
    report: list[str] = []
    got = again.transform_for_gbt(new, report)
    np.testing.assert_array_equal(got["at"], [52_200, 52_200, np.nan, np.nan])
    np.testing.assert_array_equal(got["hhmm"], [52_200, np.nan, np.nan, np.nan])
    assert report == ["column 'at': 1 values could not be read as times of day and were treated as missing",
                      "column 'hhmm': 2 values could not be read as times of day and were treated as missing"]
    assert np.isfinite(again.transform(new)).all()
    numbers = pd.DataFrame({"n": ["9:00"] + [str(v) for v in range(40)], "x": np.arange(41) % 3})
    assert "clock" not in FeaturePreprocessor().fit(numbers).columns_[0].get("text", {})  # a stray time: numbers
    target = pd.DataFrame({"x": np.arange(60), "y": ["9:00", "17:30", "12:00"] * 20})
    assert load_dataset(target, target="y").task == "multiclass"  # a target of times stays text, as before


def test_text_with_a_dollar_sign_stays_text() -> None:
    frame = pd.DataFrame({"plan": ["$ tier", "Gold $", "basic"] * 40, "x": np.arange(120) % 5})
    spec = next(c for c in FeaturePreprocessor().fit(frame).columns_ if c["name"] == "plan")
    assert spec["kind"] == "categorical"


def test_a_robust_target_scale_is_the_median_and_iqr_and_keeps_the_clean_rows_apart():
    """An MAE study's nets train on (y - median) / (IQR / 1.349): a 1e9 sentinel in 0.5 % of the rows no longer
    sets the scale (the standard deviation would squeeze the other rows into 1e-6 of a unit)."""
    rng = np.random.default_rng(0)
    y = rng.normal(100.0, 10.0, 2000)
    y[:10] = 1e9
    robust = TargetTransform("none", robust=True).fit(y)
    q1, median, q3 = np.percentile(y, [25, 50, 75])
    assert robust.mean_ == pytest.approx(median) and robust.std_ == pytest.approx((q3 - q1) / 1.349)
    clean = robust.forward(y[10:])
    assert 0.8 < clean.std() < 1.2 and abs(float(np.median(clean))) < 0.05
    assert TargetTransform("none").fit(y).forward(y[10:]).std() < 1e-5  # the plain standardization
    assert np.allclose(robust.inverse(robust.forward(y[10:])), y[10:], rtol=1e-5)
    again = TargetTransform.from_dict(json.loads(json.dumps(robust.to_dict())))
    assert again.robust and np.array_equal(again.forward(y), robust.forward(y))
    tied = TargetTransform("none", robust=True).fit(np.r_[np.zeros(900), rng.normal(5.0, 2.0, 100)])
    assert tied.std_ > 0 and tied.mean_ == 0.0  # an IQR of 0 falls back to the standard deviation


def test_a_target_mixing_text_and_numbers_is_read_as_text_labels():
    """1 beside 'no' in one object column (a frame built in Python, a spreadsheet's cells) ended with "TypeError: '<'
    not supported between instances of 'int' and 'str'" in the split; its labels are now their text, with a note."""
    frame = _frame(40)
    frame["y"] = pd.Series([1, "no", 1, "no"] * 9 + [None, "no", 1, "no"], dtype=object)
    data = load_dataset(frame, target="y")
    assert (data.task, data.target_encoder.classes_, len(data.y)) == ("binary", ["1", "no"], 39)
    assert "target 'y' mixes text and other values (such as numbers); read every label as text" in data.notes
    numbers = frame.assign(y=pd.Series([1, 2.5, True, 4] * 10, dtype=object))  # numbers of any type are one kind
    assert load_dataset(numbers, target="y").task == "regression"


def test_a_column_of_complex_numbers_is_refused_in_one_line():
    """Only a frame built in Python has one: the preprocessing's cast to float dropped the imaginary parts, with
    nothing but numpy's ComplexWarning."""
    frame = _frame(40)
    frame["z"] = frame["age"].to_numpy() + 1j
    with pytest.raises(DataError, match="column 'z' holds complex numbers, which the model cannot read"):
        load_dataset(frame, target="y")
    assert list(load_dataset(frame.drop(columns=["z"]), target="y").features.columns) == ["age", "city"]

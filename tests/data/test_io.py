"""read_table and file_fingerprint on small generated files."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pandas as pd
import pytest

from autodl.data import file_fingerprint, read_table
from autodl.data.io import MISSING_MARKERS, sniff_delimiter
from autodl.errors import DataError

EXPECTED = pd.DataFrame({"age": [39, 50, 38], "city": ["paris", "lyon", "nice"], "y": ["no", "yes", "no"]})


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def as_csv(sep: str) -> str:
    lines = [sep.join(EXPECTED.columns)] + [sep.join(str(v) for v in row) for row in EXPECTED.itertuples(index=False)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path, sep):
    df = read_table(write(tmp_path, "d.csv", as_csv(sep)))
    pd.testing.assert_frame_equal(df, EXPECTED, check_dtype=False)
    assert pd.api.types.is_integer_dtype(df["age"])


def test_tsv_extension_means_tab(tmp_path):
    # A single column with commas inside: only the extension says tab.
    df = read_table(write(tmp_path, "d.tsv", "note\tn\na,b\t1\nc,d\t2\n"))
    assert list(df.columns) == ["note", "n"]
    assert df["note"].tolist() == ["a,b", "c,d"]


def test_quoted_fields_keep_their_delimiters(tmp_path):
    text = 'name;comment;n\n"Smith; John";"said ""hi""; left";1\n"Doe, Jane";plain;2\n'
    df = read_table(write(tmp_path, "q.csv", text))
    assert list(df.columns) == ["name", "comment", "n"]
    assert df["name"].tolist() == ["Smith; John", "Doe, Jane"]
    assert df["comment"].tolist() == ['said "hi"; left', "plain"]


def test_sniffer_ignores_delimiters_inside_quotes():
    assert sniff_delimiter('a;b\n"x,y,z";1\n"p,q";2\n') == ";"
    assert sniff_delimiter("only_one_column\n1\n2\n") == ","


def test_adult_style_comma_space_separator_and_question_marks(tmp_path):
    text = (
        'age, workclass, fnlwgt, name, income\n39, State-gov, 77516, "Smith, J", <=50K\n'
        '50, ?, 83311, "Doe, A", >50K\n38, Private, ?, Roe, <=50K\n'
    )
    df = read_table(write(tmp_path, "adult.data", text))
    assert list(df.columns) == ["age", "workclass", "fnlwgt", "name", "income"]
    assert df["name"].tolist() == ["Smith, J", "Doe, A", "Roe"]  # quotes after ", " still quote
    assert df["workclass"].tolist()[0] == "State-gov"
    assert df["workclass"].isna().tolist() == [False, True, False]
    assert df["income"].tolist() == ["<=50K", ">50K", "<=50K"]
    # The '?' did not turn the numeric column into strings.
    assert pd.api.types.is_numeric_dtype(df["fnlwgt"])
    assert df["fnlwgt"].isna().tolist() == [False, False, True]


@pytest.mark.parametrize("marker", MISSING_MARKERS)
def test_missing_markers_become_nan(tmp_path, marker):
    text = f"s,x\nred,1.5\n{marker},{marker}\nblue,2.5\n"
    df = read_table(write(tmp_path, "m.csv", text))
    assert df["s"].isna().tolist() == [False, True, False]
    assert df["x"].isna().tolist() == [False, True, False]
    assert pd.api.types.is_numeric_dtype(df["x"])


def test_padded_cells_and_names_are_stripped(tmp_path):
    text = '  a  ,b\n"  padded  ", 1 \n" ? ",2\n'
    df = read_table(write(tmp_path, "p.csv", text))
    assert list(df.columns) == ["a", "b"]
    assert df["a"].iloc[0] == "padded"
    assert pd.isna(df["a"].iloc[1])
    assert df["b"].tolist() == [1, 2]


def test_utf8_bom_does_not_stick_to_the_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfid,caf\xc3\xa9\n1,cr\xc3\xa8me\n2,br\xc3\xbbl\xc3\xa9e\n")
    df = read_table(path)
    assert list(df.columns) == ["id", "café"]
    assert df["café"].tolist() == ["crème", "brûlée"]


def test_latin1_fallback(tmp_path):
    df = read_table(write(tmp_path, "l.csv", "name,city\nJosé,Zürich\nAnne,Köln\n", encoding="latin-1"))
    assert df["name"].tolist() == ["José", "Anne"]
    assert df["city"].tolist() == ["Zürich", "Köln"]


def test_semicolon_file_with_decimal_commas(tmp_path):
    df = read_table(write(tmp_path, "eu.csv", "price;label\n2,5;a\n3;b\n-1,25;c\n"))
    assert df["price"].tolist() == [2.5, 3.0, -1.25]
    assert df["label"].tolist() == ["a", "b", "c"]


def test_gzipped_csv(tmp_path):
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(as_csv(";"))
    pd.testing.assert_frame_equal(read_table(path), EXPECTED, check_dtype=False)


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip(tmp_path, suffix):
    original = pd.DataFrame(
        {
            "x": [1.5, np.nan, 3.0],
            "n": [1, 2, 3],
            "s": ["a", None, "c"],
            "b": [True, False, True],
            "t": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01"]),
        }
    )
    path = tmp_path / f"d{suffix}"
    original.to_parquet(path)
    df = read_table(path)
    pd.testing.assert_frame_equal(df, original, check_dtype=False)
    assert pd.api.types.is_bool_dtype(df["b"]) and pd.api.types.is_datetime64_any_dtype(df["t"])


# --- errors ------------------------------------------------------------------


def test_missing_file(tmp_path, one_line):
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "x.csv")
    message = one_line(excinfo)
    assert "data file" in message and "x.csv" in message and "does not exist" in message


def test_role_names_the_file_in_messages(tmp_path, one_line):
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path / "t.csv", role="test")
    assert one_line(excinfo).startswith("test file ")


def test_directory(tmp_path, one_line):
    with pytest.raises(DataError) as excinfo:
        read_table(tmp_path)
    assert "directory" in one_line(excinfo)


@pytest.mark.parametrize("content", ["", "   \n\n\t\n"])
def test_empty_file(tmp_path, one_line, content):
    with pytest.raises(DataError) as excinfo:
        read_table(write(tmp_path, "e.csv", content))
    assert "empty" in one_line(excinfo)


def test_header_only(tmp_path, one_line):
    with pytest.raises(DataError) as excinfo:
        read_table(write(tmp_path, "h.csv", "a,b,c\n"))
    assert "no data rows" in one_line(excinfo)


def test_header_only_parquet(tmp_path, one_line):
    path = tmp_path / "h.parquet"
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(path)
    with pytest.raises(DataError) as excinfo:
        read_table(path)
    assert "no data rows" in one_line(excinfo)


def test_garbage_bytes(tmp_path, one_line):
    path = tmp_path / "g.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as excinfo:
        read_table(path)
    assert "binary" in one_line(excinfo)


def test_excel_file_named_csv(tmp_path, one_line):
    path = tmp_path / "book.csv"
    path.write_bytes(b"PK\x03\x04" + os.urandom(200))
    with pytest.raises(DataError) as excinfo:
        read_table(path)
    assert "Excel" in one_line(excinfo)


def test_corrupt_parquet(tmp_path, one_line):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all\n")
    with pytest.raises(DataError) as excinfo:
        read_table(path)
    assert "parquet" in one_line(excinfo)


def test_ragged_rows_report_pandas_reason(tmp_path, one_line):
    with pytest.raises(DataError) as excinfo:
        read_table(write(tmp_path, "r.csv", "a,b\n1,2\n3,4,5,6\n"))
    message = one_line(excinfo)
    assert message.startswith("could not parse data file") and "Expected 2 fields" in message


@pytest.mark.parametrize("header", ["a,b,a", "a, b ,b"])
def test_duplicate_column_names(tmp_path, one_line, header):
    with pytest.raises(DataError) as excinfo:
        read_table(write(tmp_path, "dup.csv", f"{header}\n1,2,3\n"))
    assert "duplicate column names" in one_line(excinfo)


# --- fingerprint ----------------------------------------------------------------


def test_file_fingerprint(tmp_path, one_line):
    a = write(tmp_path, "a.csv", as_csv(","))
    b = write(tmp_path, "b.csv", as_csv(","))
    c = write(tmp_path, "c.csv", as_csv(";"))
    assert file_fingerprint(a) == file_fingerprint(str(b)) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert file_fingerprint(a) != file_fingerprint(c)
    with pytest.raises(DataError) as excinfo:
        file_fingerprint(tmp_path / "nope.csv")
    assert "does not exist" in one_line(excinfo)


def test_broken_bytes_in_utf8_text_are_replaced_and_counted(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes("review,y\nTrès bon café,1\nmauvais \xff\xfe plat,0\nnaïve déjà vu,1\n".encode("utf-8")
                     .replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe"))
    with pytest.warns(UserWarning, match="2 byte sequence"):
        df = read_table(path)
    assert df["review"].tolist() == ["Très bon café", "mauvais \ufffd\ufffd plat", "naïve déjà vu"]
    assert df.attrs["replaced_bytes"] == 2

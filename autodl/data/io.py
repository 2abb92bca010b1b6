"""Reading tables from disk: CSV (any common delimiter) and parquet.

``read_table`` turns a file into a DataFrame or raises a one-line
``DataError`` that says what is wrong with the file and what to do. CSV files
are read forgivingly: the delimiter is sniffed among ``,`` ``;`` tab and ``|``,
spaces after delimiters are skipped (UCI Adult uses ``", "``), string cells
and column names are stripped, and the usual missing-value markers (``?``,
``NA``, ``null``, empty, ...) become NaN.

Example:

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "adult.csv"
>>> _ = path.write_text("age, workclass, income\\n39, State-gov, <=50K\\n50, ?, >50K\\n")
>>> df = read_table(path)
>>> list(df.columns), df["workclass"].isna().tolist()
(['age', 'workclass', 'income'], [False, True])
>>> len(file_fingerprint(path))
64
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import lzma
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Callable

import pandas as pd

from autodl.errors import DataError

__all__ = ["MISSING_MARKERS", "read_table", "file_fingerprint"]

# Cells equal to one of these (after stripping) are missing values.
MISSING_MARKERS: tuple[str, ...] = ("?", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None", "")
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
PARQUET_SUFFIXES: tuple[str, ...] = (".parquet", ".pq")
# Enough to see the header and a few dozen rows of even a wide table.
SAMPLE_BYTES = 64 * 1024

_OPENERS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_PURE_WHITESPACE = re.compile(rb"^\s*$")
_DECIMAL_COMMA = r"[-+]?\d+(?:,\d+)?"


def read_table(path: str | os.PathLike[str], *, role: str = "data") -> pd.DataFrame:
    """Reads a CSV/TSV (optionally .gz/.bz2/.xz) or parquet file into a cleaned DataFrame.

    ``role`` names the file in error messages ("test file 'x.csv' ...").
    Raises ``DataError`` for a missing, empty, header-only, unparseable or
    binary file, and for duplicate column names.
    """
    p = _existing_file(path, role)
    if _format_suffix(p) in PARQUET_SUFFIXES:
        df = _read_parquet(p, role)
    else:
        df = _read_csv(p, role)
    df = _clean(df, p, role)
    if len(df) == 0:
        raise DataError(f"{role} file '{p}' has a header but no data rows; add rows or pick another file")
    return df


def iter_table(path: str | os.PathLike[str], *, chunk_rows: int, role: str = "data") -> Iterator[pd.DataFrame]:
    """The rows of a CSV or parquet file in cleaned chunks of ``chunk_rows``, never the whole file at once.

    The same checks and cleaning as ``read_table``, chunk by chunk; bytes that are
    not UTF-8 are replaced (the streaming path cannot re-read a file as latin-1).
    """
    p = _existing_file(path, role)
    if _format_suffix(p) in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq  # noqa: PLC0415

        try:
            batches = pq.ParquetFile(p).iter_batches(batch_size=chunk_rows)
        except Exception as exc:  # pyarrow raises many types; all mean "not a readable parquet file"
            raise DataError(f"could not read {role} file '{p}' as parquet: {_short(exc)}") from exc
        for batch in batches:
            yield _clean(batch.to_pandas(), p, role)
        return
    raw = _head_bytes(p, role)
    _reject_binary(raw, p, role)
    text = _decode_sample(raw)
    sep = "\t" if _format_suffix(p) == ".tsv" else sniff_delimiter(text)
    _check_header(text, sep, p, role)
    try:
        reader = pd.read_csv(
            p, sep=sep, skipinitialspace=True, na_values=list(MISSING_MARKERS), keep_default_na=True,
            encoding="utf-8-sig", encoding_errors="replace", chunksize=chunk_rows, low_memory=False,
        )
        for chunk in reader:
            yield _clean(_decimal_commas(chunk) if sep == ";" else chunk, p, role)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{role} file '{p}' has no columns; pass a CSV file with a header and rows") from exc
    except (pd.errors.ParserError, csv.Error) as exc:
        raise DataError(f"could not parse {role} file '{p}' (delimiter {sep!r}): {_short(exc)}; "
                        "check that every row has as many fields as the header and quotes are balanced") from exc


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """SHA-256 of the file's bytes (hex), so a resumed run can check it sees the same data."""
    p = _existing_file(path, "data")
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing_file(path: str | os.PathLike[str], role: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"{role} file must be a path, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise DataError(f"{role} file '{p}' does not exist; check the path")
    if p.is_dir():
        raise DataError(f"{role} file '{p}' is a directory; pass the CSV or parquet file inside it")
    if p.stat().st_size == 0:
        raise DataError(f"{role} file '{p}' is empty (0 bytes); pass a CSV or parquet file with a header and rows")
    return p


def _read_parquet(p: Path, role: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(p)
    except Exception as exc:  # pyarrow raises many types; all mean "not a readable parquet file"
        raise DataError(f"could not read {role} file '{p}' as parquet: {_short(exc)}") from exc


def _read_csv(p: Path, role: str) -> pd.DataFrame:
    raw = _head_bytes(p, role)
    if _PURE_WHITESPACE.match(raw) and len(raw) < SAMPLE_BYTES:
        raise DataError(f"{role} file '{p}' is empty (only whitespace); pass a CSV file with a header and rows")
    _reject_binary(raw, p, role)
    text = _decode_sample(raw)
    sep = "\t" if _format_suffix(p) == ".tsv" else sniff_delimiter(text)
    _check_header(text, sep, p, role)
    # utf-8-sig drops a BOM that would otherwise glue itself to the first column name.
    try:
        df = _parse_csv(p, sep, role, encoding="utf-8-sig")
    except UnicodeDecodeError:
        bad, good = _utf8_damage(p)
        if good <= bad:
            # Legacy 8-bit text (Windows-1252 spreadsheets): latin-1 reads every byte as a character.
            df = _parse_csv(p, sep, role, encoding="latin-1")
        else:
            # UTF-8 text with a few broken bytes: keep the UTF-8 and mark only the broken ones.
            df = _parse_csv(p, sep, role, encoding="utf-8-sig", encoding_errors="replace")
            df.attrs["replaced_bytes"] = bad
            warnings.warn(f"{role} file '{p}': {bad} byte sequence(s) that are not valid UTF-8 were replaced "
                          "with U+FFFD", UserWarning, stacklevel=3)
    return _decimal_commas(df) if sep == ";" else df


def _parse_csv(p: Path, sep: str, role: str, *, encoding: str, encoding_errors: str = "strict") -> pd.DataFrame:
    try:
        return pd.read_csv(
            p,
            sep=sep,
            skipinitialspace=True,
            na_values=list(MISSING_MARKERS),
            keep_default_na=True,
            encoding=encoding,
            encoding_errors=encoding_errors,
            low_memory=False,
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{role} file '{p}' has no columns; pass a CSV file with a header and rows") from exc
    except (pd.errors.ParserError, ValueError, csv.Error) as exc:
        if isinstance(exc, UnicodeDecodeError):
            raise
        raise DataError(
            f"could not parse {role} file '{p}' (delimiter {sep!r}): {_short(exc)}; "
            "check that every row has as many fields as the header and quotes are balanced"
        ) from exc


def _utf8_damage(p: Path) -> tuple[int, int]:
    """Invalid UTF-8 sequences, and valid non-ASCII characters, in the whole file."""
    opener = _OPENERS.get(p.suffix.lower()) or open
    with opener(p, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    return bad, sum(1 for ch in text if ord(ch) > 127) - bad


def _format_suffix(p: Path) -> str:
    """The suffix that says the format, looking past a compression suffix (``x.tsv.gz`` → ``.tsv``)."""
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in _OPENERS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def _decimal_commas(df: pd.DataFrame) -> pd.DataFrame:
    """Reads "2,5" as 2.5 in ';'-separated files, the usual export from European spreadsheets."""
    for name in df.columns:
        s = df[name]
        # is_string_dtype on a Series also accepts object columns holding only strings (pandas 2).
        if not pd.api.types.is_string_dtype(s):
            continue
        present = s.dropna().str.strip()
        if len(present) and present.str.fullmatch(_DECIMAL_COMMA).all() and present.str.contains(",").any():
            df[name] = pd.to_numeric(s.str.strip().str.replace(",", ".", regex=False), errors="coerce")
    return df


def _head_bytes(p: Path, role: str) -> bytes:
    opener = _OPENERS.get(p.suffix.lower())
    try:
        if opener is not None:
            with opener(p, "rb") as f:
                return f.read(SAMPLE_BYTES)
        with p.open("rb") as f:
            return f.read(SAMPLE_BYTES)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise DataError(f"could not read {role} file '{p}': {_short(exc)}") from exc


def _reject_binary(raw: bytes, p: Path, role: str) -> None:
    if raw.startswith(b"PK\x03\x04") or raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise DataError(
            f"{role} file '{p}' looks like an Excel or zip file, not CSV; export it as CSV or parquet first"
        )
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{role} file '{p}' is UTF-16 encoded; save it as UTF-8 (or latin-1) CSV")
    if raw.startswith(b"PAR1"):
        raise DataError(f"{role} file '{p}' is a parquet file; give it a .parquet extension")
    # Text never holds NUL bytes, and rarely many other control characters.
    controls = sum(1 for b in raw if b < 32 and b not in (9, 10, 13, 12))
    if b"\x00" in raw or controls > 0.05 * len(raw):
        raise DataError(f"{role} file '{p}' looks binary, not a CSV table; pass a CSV or parquet file")


def _decode_sample(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # The sample may end inside a multi-byte character; only that is forgivable.
        if exc.start >= len(raw) - 3:
            return raw[: exc.start].decode("utf-8-sig")
        return raw.decode("latin-1")


def sniff_delimiter(text: str) -> str:
    """The most plausible delimiter among ``,`` ``;`` tab ``|`` for a sample of CSV text.

    >>> sniff_delimiter("a;b;c\\n1;2,5;3\\n")
    ';'
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may cut the last line short
    lines = lines[:50]
    if not lines:
        return ","
    header = lines[0]
    try:
        sniffed = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        sniffed = None
    # The sniffer can be fooled by delimiters inside quoted fields; a delimiter
    # that does not split the header and the rows the same way is wrong.
    if sniffed is not None and _consistency(lines, sniffed) > 0:
        return sniffed
    best = max(DELIMITERS, key=lambda d: (_consistency(lines, d), _unquoted(header).count(d)))
    return best if _unquoted(header).count(best) > 0 else ","


def _unquoted(line: str) -> str:
    return re.sub(r'"[^"]*"', "", line)


def _consistency(lines: list[str], delimiter: str) -> float:
    """Fraction of lines with as many fields as the header, 0 if the header is not split."""
    counts = [_unquoted(line).count(delimiter) for line in lines]
    if counts[0] == 0:
        return 0.0
    if len(counts) == 1:
        return 1.0
    return sum(1 for c in counts[1:] if c == counts[0]) / (len(counts) - 1)


def _check_header(text: str, sep: str, p: Path, role: str) -> None:
    # pandas silently renames duplicates ("a", "a.1"), so look at the raw header.
    try:
        header = next(csv.reader(io.StringIO(text), delimiter=sep, skipinitialspace=True), [])
    except csv.Error:
        return  # pandas gives the better parse error
    names = [h.strip() for h in header]
    dupes = [name for name, n in Counter(names).items() if n > 1 and name]
    if dupes:
        raise DataError(
            f"{role} file '{p}' has duplicate column names: {', '.join(repr(d) for d in dupes[:5])}; "
            "rename them so each column has a unique name"
        )


def _clean(df: pd.DataFrame, p: Path, role: str) -> pd.DataFrame:
    df.columns = [str(c).strip() for c in df.columns]
    dupes = [name for name, n in Counter(df.columns).items() if n > 1]
    if dupes:
        raise DataError(
            f"{role} file '{p}' has duplicate column names: {', '.join(repr(d) for d in dupes[:5])}; "
            "rename them so each column has a unique name"
        )
    markers = set(MISSING_MARKERS)
    for name in df.columns:
        s = df[name]
        if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
            stripped = s.str.strip()
        elif pd.api.types.is_object_dtype(s.dtype):
            stripped = s.map(lambda v: v.strip() if isinstance(v, str) else v)
        else:
            continue
        # Markers padded with spaces (" ? ") escape the parser's na_values.
        stripped = stripped.mask(stripped.isin(markers))
        changed = not stripped.equals(s)
        if changed:
            numbers = pd.to_numeric(stripped, errors="coerce")
            # A column that is all numbers once the padding is gone is what the
            # parser would have produced from clean input.
            if stripped.notna().any() and numbers.notna().sum() == stripped.notna().sum():
                stripped = numbers
        df[name] = stripped
    return df


def _short(exc: BaseException) -> str:
    """The gist of an exception message, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    text = re.sub(r"^Error tokenizing data\. C error: ", "", text)
    return text if len(text) <= 200 else text[:197] + "..."

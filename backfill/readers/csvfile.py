"""CSV reader: pandas' C parser, every column kept as text, read in chunks."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import Iterator

import pandas as pd

from backfill.errors import ReaderError
from backfill.readers import CHUNK_ROWS, ROW, RowChunk, SourceConfig

DELIMITERS = (",", ";", "\t", "|")
SNIFF_BYTES = 64 * 1024


def _encoding(source: SourceConfig) -> str:
    encoding = source.encoding or "utf-8-sig"
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ReaderError(f"unknown encoding {encoding!r} in source.encoding") from None
    # utf-8 given by name still tolerates a BOM
    return "utf-8-sig" if name == "utf-8" else encoding


def detect_delimiter(path: Path, encoding: str) -> str:
    """The delimiter among , ; tab | that splits the header and the first rows most consistently."""
    try:
        with open(path, encoding=encoding, newline="") as handle:
            sample = handle.read(SNIFF_BYTES)
    except UnicodeDecodeError as exc:
        raise ReaderError(
            f"{path}: not valid {_label(encoding)} text (byte {exc.start}); "
            "set source.encoding in the mapping (e.g. latin-1, cp1252)"
        ) from None
    if not sample.strip():
        raise ReaderError(f"{path}: the file is empty; a CSV needs a header row")
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        header = sample.splitlines()[0]
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","


def check_header(path: Path, encoding: str, delimiter: str) -> None:
    """Refuse a header that names a column twice: pandas would silently rename the second
    (`build` -> `build.1`), and the mapping would read the first without a word."""
    try:
        with open(path, encoding=encoding, newline="") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), None)
    except UnicodeDecodeError as exc:
        raise ReaderError(
            f"{path}: not valid {_label(encoding)} text (byte {exc.start}); "
            "set source.encoding in the mapping (e.g. latin-1, cp1252)"
        ) from None
    except (csv.Error, TypeError, ValueError):
        return  # an unusual header (a huge field, an odd delimiter): pandas reports what is wrong
    seen: set[str] = set()
    for name in header or ():
        if name and name in seen:  # empty names (`a,b,,`) become distinct "Unnamed: n"
            raise ReaderError(f"{path}: the header names column {name!r} twice; rename one")
        seen.add(name)


def _drop_empty_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Without blank lines and rows whose every field is empty (they hold no deployment), and
    how many there were, so the report still accounts for them."""
    fields = frame.columns[:-1]  # all but ROW
    if not len(fields):
        return frame, 0
    candidates = frame[fields[0]] == ""
    if not candidates.any():
        return frame, 0
    empty = candidates.copy()
    empty[candidates] = frame.loc[candidates, fields].eq("").all(axis=1).to_numpy(dtype=bool)
    return frame[~empty], int(empty.sum())


def _label(encoding: str) -> str:
    return "UTF-8" if encoding == "utf-8-sig" else encoding


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Yield the file's rows in chunks; `_row` is the spreadsheet row number (header = row 1)."""
    if not path.exists():
        raise ReaderError(f"{path}: no such file")
    if path.is_dir():
        raise ReaderError(f"{path}: is a directory, not a file")
    encoding = _encoding(source)
    delimiter = source.delimiter or detect_delimiter(path, encoding)
    check_header(path, encoding, delimiter)
    try:
        reader = pd.read_csv(
            path,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,  # every value stays text; no NA detection to pay for
            encoding=encoding,
            chunksize=CHUNK_ROWS,
            engine="c",
            skip_blank_lines=False,  # blank lines still count, so row numbers match the spreadsheet's
        )
        with reader:
            first = 2
            for frame in reader:
                if first == 2 and not isinstance(frame.index, pd.RangeIndex):
                    # pandas silently takes an extra first column as the index: refuse, never misalign
                    raise ReaderError(
                        f"{path}: row 2 has more fields than the header ({len(frame.columns)} columns) "
                        f"with delimiter {delimiter!r}; check the quoting of that row or set source.delimiter"
                    )
                frame[ROW] = range(first, first + len(frame))
                first += len(frame)
                rows, empty = _drop_empty_rows(frame)
                yield RowChunk(rows, unit="row", empty=empty)
    except pd.errors.EmptyDataError:
        raise ReaderError(f"{path}: the file is empty; a CSV needs a header row") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().replace("Error tokenizing data. C error: ", "")
        raise ReaderError(
            f"{path}: cannot parse CSV with delimiter {delimiter!r}: {detail}; "
            "check the quoting of that row or set source.delimiter"
        ) from None
    except UnicodeDecodeError as exc:
        raise ReaderError(
            f"{path}: not valid {_label(encoding)} text (byte {exc.start}); "
            "set source.encoding in the mapping (e.g. latin-1, cp1252)"
        ) from None

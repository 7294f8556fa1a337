"""CSV reader: pandas' C parser, every column kept as text, read in chunks."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

import pandas as pd

from backfill.errors import ReaderError
from backfill.readers import CHUNK_ROWS, ROW, RowChunk, SourceConfig
from backfill.readers.inputs import HEAD_BYTES, open_input

DELIMITERS = (",", ";", "\t", "|")
SNIFF_ROWS = 50  # rows after the header that settle a tie between delimiters


def head_text(head: bytes) -> str:
    """The sniffing window as text: whole lines only, unless it is the whole file."""
    cut = head.rfind(b"\n") if len(head) >= HEAD_BYTES else len(head)
    return head[: cut if cut > 0 else len(head)].decode("utf-8", "ignore")


def _first_row(lines, **options) -> list[str]:
    """The first row the csv module reads, or none when it refuses the text (a bare CR inside a
    field): the reader then reports the file or row itself."""
    try:
        return next(csv.reader(lines, **options), [])
    except csv.Error:
        return []


def detect_delimiter(sample: str) -> str:
    """The delimiter among , ; tab |: the header line's decides; a tie between several is settled
    by which splits the next rows into as many fields as the header (bounded: SNIFF_ROWS rows of
    the sniffing window, each parsed once per candidate by the csv module)."""
    header = _first_row(io.StringIO(sample))
    header_line = sample.split("\n", 1)[0]
    counts = {d: len(_first_row([header_line], delimiter=d)) - 1 for d in DELIMITERS}
    found = [d for d in DELIMITERS if counts[d] > 0]
    if not header or not found:
        return ","
    if len(found) == 1:
        return found[0]
    scores = {}
    for d in found:
        rows = csv.reader(io.StringIO(sample), delimiter=d)
        try:
            width = len(next(rows))
            same = sum(1 for _, row in zip(range(SNIFF_ROWS), rows) if len(row) == width)
        except csv.Error:
            same = -1
        scores[d] = (same, counts[d])
    return max(found, key=lambda d: scores[d])


def check_header(path: Path, sample: str, delimiter: str) -> None:
    """Refuse a header that names a column twice: pandas would silently rename the second
    (`build` -> `build.1`), and the mapping would read the first without a word."""
    try:
        header = next(csv.reader(io.StringIO(sample), delimiter=delimiter), None)
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


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Yield the file's rows in chunks; `_row` is the spreadsheet row number (header = row 1)."""
    with open_input(path, source.encoding) as data:
        sample = head_text(data.head)
        if not sample.strip():
            raise ReaderError(f"{path}: the file is empty; a CSV needs a header row")
        delimiter = source.delimiter or detect_delimiter(sample)
        check_header(path, sample, delimiter)
        yield from _read_frames(path, data, delimiter)


def _read_frames(path: Path, data: io.RawIOBase, delimiter: str) -> Iterator[RowChunk]:
    try:
        reader = pd.read_csv(
            io.BufferedReader(data, HEAD_BYTES),
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,  # every value stays text; no NA detection to pay for
            encoding="utf-8",  # the input's text as UTF-8, whatever the file's encoding
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

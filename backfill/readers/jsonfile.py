"""JSON and NDJSON readers: nested objects flattened to dotted columns, numbers kept as written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from backfill.errors import ReaderError
from backfill.readers import (
    CHUNK_ROWS,
    BadRow,
    JSONNumber,
    RowChunk,
    SourceConfig,
    flatten,
    frame_from_records,
    lone_surrogate,
    loads,
    read_text,
    records_chunks,
    scalar_text,
)


def _kind(value: Any) -> str:
    """A parsed JSON value in JSON's words (numbers are parsed as text, so not told from strings)."""
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "a single value"


def _record_kind(value: Any) -> str:
    """What a record that is not an object is, read with numbers as JSONNumber."""
    if isinstance(value, JSONNumber):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _kind(value)


def find_records(doc: Any, records_path: str | None, path: Path) -> list:
    """The array of records: the document itself, or the array at a dotted path inside it."""
    node = doc
    if records_path:
        walked = []
        for part in records_path.split("."):
            walked.append(part)
            if not isinstance(node, dict) or part not in node:
                keys = ", ".join(list(node)[:20]) if isinstance(node, dict) else f"none, it is {_kind(node)}"
                raise ReaderError(
                    f"{path}: source.records {records_path!r}: no key {'.'.join(walked)!r} "
                    f"(keys there: {keys})"
                )
            node = node[part]
    if isinstance(node, dict):
        hint = ", ".join(k for k, v in node.items() if isinstance(v, list)) or "none"
        raise ReaderError(
            f"{path}: expected an array of records but found an object; "
            f"set source.records to the key of the array (arrays here: {hint})"
        )
    if not isinstance(node, list):
        raise ReaderError(f"{path}: expected an array of records, found {_kind(node)}")
    return node


def read_json(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """A top-level array of objects, or the array at `source.records`."""
    doc = loads(read_text(path, source.encoding), path, numbers=JSONNumber)
    items = find_records(doc, source.records, path)
    records, bad = [], []
    for number, item in enumerate(items, start=1):
        if isinstance(item, dict):
            records.append(flatten(item))
        else:
            records.append({})
            bad.append(BadRow(number, f"record is {_record_kind(item)}, not an object", _snippet(item)))
    chunks = list(records_chunks(records, unit="record"))
    if bad:
        bad_numbers = {b.row for b in bad}
        for chunk in chunks:
            chunk.frame = chunk.frame[~chunk.frame["_row"].isin(bad_numbers)]
        chunks[0].bad = bad
    yield from chunks


def read_ndjson(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """One object per line; blank lines ignored; a line that is not a JSON object is a bad row."""
    try:
        handle = open(path, encoding=source.encoding or "utf-8-sig")
    except FileNotFoundError:
        raise ReaderError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReaderError(f"{path}: is a directory, not a file") from None
    except LookupError:
        raise ReaderError(f"{path}: unknown encoding {source.encoding!r} in source.encoding") from None
    except OSError as exc:
        raise ReaderError(f"{path}: cannot read: {exc.strerror}") from None
    records: list[dict] = []
    rows: list[int] = []
    bad: list[BadRow] = []
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line.rstrip("\r\n"), parse_int=str, parse_float=str, parse_constant=str)
                except json.JSONDecodeError as exc:  # the row is the line; only the column is news
                    bad.append(BadRow(number, f"invalid JSON at column {exc.pos + 1}: {exc.msg}", line.strip()[:200]))
                    continue
                if not isinstance(item, dict):
                    bad.append(BadRow(number, f"line is {_kind(item)}, not an object", line.strip()[:200]))
                    continue
                lone = lone_surrogate(line)  # one regex search unless the line has a surrogate escape
                if lone is not None:
                    bad.append(BadRow(
                        number,
                        f"a lone UTF-16 surrogate escape {lone[1]} at column {lone[0] + 1} cannot be sent "
                        "as UTF-8; remove it or replace it with the intended character",
                        line.strip()[:200],
                    ))
                    continue
                records.append(flatten(item))
                rows.append(number)
                if len(records) >= CHUNK_ROWS:
                    yield _chunk(records, rows, bad)
                    records, rows, bad = [], [], []
        except UnicodeDecodeError as exc:
            raise ReaderError(
                f"{path}: not valid {source.encoding or 'UTF-8'} text (byte {exc.start}); "
                "set source.encoding in the mapping"
            ) from None
    yield _chunk(records, rows, bad)


def _snippet(item: Any) -> str:
    """A record that is not an object, as it was written (for the invalid-rows report)."""
    return (scalar_text(item) or "null")[:200]


def _chunk(records: list[dict], rows: list[int], bad: list[BadRow]) -> RowChunk:
    frame = frame_from_records(records)
    frame["_row"] = rows
    return RowChunk(frame, unit="line", bad=bad)

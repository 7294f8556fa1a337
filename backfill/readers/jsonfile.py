"""JSON and NDJSON readers: nested objects flattened to dotted columns, numbers kept as written.

Both stream: the JSON reader walks to the records array (the document itself, or the array at
`source.records`) and decodes one record at a time (see readers/jsonstream.py); the NDJSON reader
decodes one line at a time. Memory holds a chunk of flat rows, never the file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

from backfill.errors import ReaderError
from backfill.readers import (
    CHUNK_ROWS,
    JSONNumber,
    RowChunk,
    SourceConfig,
    flatten,
    lone_surrogate,
    scalar_text,
)
from backfill.readers.jsonstream import (
    JSONStream,
    Rows,
    StreamError,
    SurrogateError,
    TooDeep,
    check_encoding,
    kind,
    open_binary,
    surrogate_message,
)

# the interpreter decodes JSON about this deep before RecursionError; deeper is one bad record
TOO_DEEP = "nested too deeply (more than about 900 levels of arrays or objects); a deployment record is never that deep"


def _record_kind(value: Any) -> str:
    """What a record that is not an object is, in JSON's words."""
    return kind(value)


def read_json(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """A top-level array of objects, or the array at `source.records`."""
    with open_binary(path, source.encoding) as handle:
        try:
            stream = JSONStream(handle, path, encoding=source.encoding)
            if stream.at_end():
                raise stream.error("Expecting value")
            rows = Rows("record")
            yield from _descend(stream, path, source.records, source.records.split(".") if source.records else [], [], rows)
            if not stream.at_end():
                raise stream.error("Extra data")
        except SurrogateError as exc:
            raise ReaderError(surrogate_message(path, exc)) from None
        except StreamError as exc:
            raise ReaderError(f"{path}: invalid JSON at line {exc.line}, column {exc.column}: {exc.msg}") from None
        except TooDeep as exc:
            raise ReaderError(f"{path}: line {exc.line}, column {exc.column}: {TOO_DEEP}") from None
    yield rows.take()


def _descend(
    stream: JSONStream, path: Path, records_path: str | None, parts: list[str], walked: list[str], rows: Rows
) -> Iterator[RowChunk]:
    """Walk down `parts` of `source.records` to the array of records, then read it."""
    if not parts:
        yield from _records(stream, path, walked, rows)
        return
    part = parts[0]
    if stream.peek() != "{":
        node = stream.value()
        raise ReaderError(
            f"{path}: source.records {records_path!r}: no key {'.'.join([*walked, part])!r} "
            f"(keys there: none, it is {kind(node)})"
        )
    keys: list[str] = []
    found = False
    for key in stream.members():
        if key == part and not found:
            found = True
            yield from _descend(stream, path, records_path, parts[1:], [*walked, part], rows)
        else:
            keys.append(key)
            stream.skip()
    if not found:
        raise ReaderError(
            f"{path}: source.records {records_path!r}: no key {'.'.join([*walked, part])!r} "
            f"(keys there: {', '.join(keys[:20])})"
        )


def _records(stream: JSONStream, path: Path, walked: list[str], rows: Rows) -> Iterator[RowChunk]:
    char = stream.peek()
    if char == "{":
        arrays = _array_paths(stream, walked)
        hint = ", ".join(arrays[:10]) or "none"
        raise ReaderError(
            f"{path}: expected an array of records but found an object; "
            f"set source.records to the dotted path of the array (arrays here: {hint})"
        )
    if char != "[":
        raise ReaderError(f"{path}: expected an array of records, found {kind(stream.value())}")
    for _ in stream.elements():
        try:
            item = stream.value()
        except TooDeep:
            rows.bad(f"record is {TOO_DEEP}")
            continue
        if isinstance(item, dict):
            try:
                rows.add_object(item)
            except RecursionError:
                rows.bad(f"record is {TOO_DEEP}")
        else:
            rows.bad(f"record is {_record_kind(item)}, not an object", _snippet(item))
        if rows.ready():
            yield rows.take()


def _array_paths(stream: JSONStream, walked: list[str], depth: int = 2) -> list[str]:
    """The dotted paths of the arrays inside the object at the cursor, `depth` levels down (consumed)."""
    found: list[str] = []
    for key in stream.members():
        name = ".".join([*walked, key])
        char = stream.peek()
        if char == "[":
            found.append(name)
            stream.skip()
        elif char == "{" and depth > 1:
            found += _array_paths(stream, [*walked, key], depth - 1)
        else:
            stream.skip()
    return found


_LINE_DECODER = json.JSONDecoder(parse_int=JSONNumber, parse_float=JSONNumber, parse_constant=JSONNumber)


def read_ndjson(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """One object per line; blank lines ignored; a line that is not a JSON object is a bad row."""
    handle = io.TextIOWrapper(io.BufferedReader(open_binary(path, source.encoding)), encoding="utf-8")
    rows = Rows("line", CHUNK_ROWS)
    decode = _LINE_DECODER.decode
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = decode(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:  # the row is the line; only the column is news
                rows.bad(f"invalid JSON at column {exc.pos + 1}: {exc.msg}", line.strip()[:200], number)
                continue
            except RecursionError:
                rows.bad(f"line is {TOO_DEEP}", line.strip()[:200], number)
                continue
            if not isinstance(item, dict):
                rows.bad(f"line is {kind(item)}, not an object", line.strip()[:200], number)
                continue
            lone = lone_surrogate(line)  # one regex search unless the line has a surrogate escape
            if lone is not None:
                rows.bad(
                    f"a lone UTF-16 surrogate escape {lone[1]} at column {lone[0] + 1} cannot be sent "
                    "as UTF-8; remove it or replace it with the intended character",
                    line.strip()[:200],
                    number,
                )
                continue
            try:
                rows.add(flatten(item), number)
            except RecursionError:
                rows.bad(f"line is {TOO_DEEP}", line.strip()[:200], number)
                continue
            if rows.ready():
                yield rows.take()
    yield rows.take()


def _snippet(item: Any) -> str:
    """A record that is not an object, as it was written (for the invalid-rows report)."""
    return (scalar_text(item) or "null")[:200]

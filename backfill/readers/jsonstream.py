"""Streaming JSON: read a JSON file a window at a time, one record in memory, never the whole file.

The JSON readers (json, ndjson, jenkins, gitlab; the GitHub readers build on it too) walk the
structure above their records with a `JSONStream` and decode each record whole with the standard
library's C scanner, so that memory depends on the largest record, not on the file, and the time
is close to a plain `json.load`. Numbers keep their written text: `5551` is `JSONNumber("5551")`,
`1.50` stays `"1.50"` (see `dumps` for lists and objects).

API (a cursor over the text; every method skips the JSON whitespace before what it reads):

    stream = JSONStream(binary_handle, path, encoding=None)  # UTF-8 by default, a BOM is dropped
    stream.peek()            -> the next character ("" at the end of the text), not consumed
    stream.value()           -> the next value, decoded whole (numbers as JSONNumber)
                                raises TooDeep (the value consumed) when it nests deeper than the
                                interpreter can decode, so the caller can report one bad record
    stream.skip()            -> consume the next value without keeping it (memory: one element)
    stream.elements()        -> inside an array: `for _ in stream.elements(): stream.value()` reads
                                each element; the `[`, commas and `]` are consumed by the loop
    stream.members()         -> inside an object: yields each key; the caller reads or skips its value
    stream.at_end()          -> True when only whitespace is left
    stream.error(msg, where) -> StreamError with the file's line and column (`where`: a position
                                from `stream.position()`; default: the cursor)
    every decoded value and key is checked for lone UTF-16 surrogate escapes: one raises
    SurrogateError (a StreamError with line and column; `surrogate_message` words it)

Errors: `StreamError(msg, line, column)`; the messages are the json module's ("Expecting ','
delimiter", "Extra data", ...), with line and column counted in the whole file, so a reader's
error is the same as when it parsed the whole text at once. Undecodable bytes raise
`ReaderError` naming the byte offset, as `read_text` does.

Helpers: `iter_top_values(stream)` (one document, appended documents, or NDJSON-like values on
lines, separated by any whitespace), `dumps(value)` (compact JSON text with numbers as written),
`kind(value)` (a value's JSON type in JSON's words), `open_binary(path, encoding)` (the input
opened through readers.inputs).

Rows: `Rows(unit)` numbers a file's rows and packs them into RowChunks of JSON_CHUNK_ROWS rows,
column by column as arrow text: `add(flat_record)`, `add_object(decoded_object, first, extra)`
(flattened straight into the columns), `bad(reason, text)`, `ready()` / `take()`, `facts`.

A reader on this layer (see read_values below, used by the GitLab, Jenkins and GitHub readers):

    with open_binary(path, enc) as handle, stream_values(handle, path, enc) as (stream, tops):
        rows = Rows("record")
        for _ in tops:                       # each top-level value (appended pages too)
            if stream.peek() == "[":
                for _ in stream.elements():  # one record at a time
                    record = stream.value()  # TooDeep -> rows.bad(...)
                    rows.add_object(record) if isinstance(record, dict) else rows.bad(...)
                    if rows.ready():
                        yield rows.take()
    yield rows.take()
"""

from __future__ import annotations

import codecs
import json
import re
from json.decoder import scanstring
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from backfill.errors import ReaderError
from backfill.readers.inputs import InputFile, open_input, text_encoding
from backfill.readers import BadRow, JSONNumber, RowChunk, SourceConfig, dumps, lone_surrogate, scalar_text  # noqa: F401 (dumps: API)

WINDOW = 1 << 20  # characters decoded per read
# rows per chunk of the JSON readers: wide rows (GitLab: ~45 columns) make a chunk costly while
# the planner maps it; 25,000 keeps the peak low at no measurable cost in time
JSON_CHUNK_ROWS = 25_000
_WS = re.compile(r"[ \t\n\r]*")
_ANY_WS = re.compile(r"\s*")  # between top-level values (as the appended-pages readers always allowed)
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
_STRUCTURE = re.compile(r'["\[\]{}]')
_STRING_END = re.compile(r'(?:[^"\\]|\\.)*"', re.S)
_DECODER = json.JSONDecoder(parse_int=JSONNumber, parse_float=JSONNumber, parse_constant=JSONNumber)
_SCAN = _DECODER.scan_once


class StreamError(Exception):
    """Invalid JSON at a line and column of the file (1-based, as the json module counts)."""

    def __init__(self, msg: str, line: int, column: int):
        super().__init__(f"{msg}: line {line} column {column}")
        self.msg, self.line, self.column = msg, line, column


class TooDeep(Exception):
    """A value nested too deeply to decode; it has been consumed. `line` is where it starts."""

    def __init__(self, line: int, column: int):
        super().__init__(f"nested too deeply at line {line} column {column}")
        self.line, self.column = line, column


def kind(value: Any) -> str:
    """A decoded value's JSON type in JSON's words: object, array, string, number, true, false, null."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, JSONNumber):
        return "a number"
    return "a string"


class JSONStream:
    """A cursor over the JSON text of a binary stream, decoded a window at a time (see module doc)."""

    def __init__(
        self,
        handle: BinaryIO,
        path: Path | str,
        *,
        encoding: str | None = None,
        window: int | None = None,
        surrogates: str = "error",
    ):
        self.path = path
        self._handle = handle
        if isinstance(handle, InputFile):
            encoding = None  # already checked (or transcoded) to UTF-8 by readers.inputs
        self._encoding = encoding or "utf-8"
        name = codecs.lookup(self._encoding).name
        # a UTF-8 BOM is dropped whether or not the mapping names the encoding
        self._decoder = codecs.getincrementaldecoder("utf-8-sig" if name == "utf-8" else self._encoding)()
        self._window = window or WINDOW
        self._surrogates = surrogates
        self._buf = ""
        self._pos = 0
        self._base = 0  # characters of the file before _buf[0]
        self._lines = 0  # newlines before _buf[0]
        self._last_nl = -1  # file position of the last newline before _buf[0]
        self._bytes = 0  # bytes fed to the decoder
        self._eof = False
        self._more()
        if self._buf.startswith("\ufeff"):
            self._pos = 1  # a BOM the codec kept (utf-16 and others): not part of the JSON

    # --- reading and positions ----------------------------------------------------------------

    def _more(self) -> bool:
        """Append the next window of text; False at the end of the file."""
        if self._eof:
            return False
        if self._pos > self._window // 2:
            self._compact()
        size = max(self._window, len(self._buf))  # doubling: a huge value is re-scanned log(n) times
        while True:
            data = self._handle.read(size)
            pending = len(self._decoder.getstate()[0])
            try:
                text = self._decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                offset = self._bytes - pending + exc.start
                raise ReaderError(
                    f"{self.path}: not valid {self._label()} text (byte {offset}); "
                    "set source.encoding in the mapping (e.g. latin-1, cp1252)"
                ) from None
            self._bytes += len(data)
            if not data:
                self._eof = True
            if text or self._eof:
                break
        self._buf += text
        return bool(text) or not self._eof

    def _label(self) -> str:
        return self._encoding if self._encoding != "utf-8" else "UTF-8"

    def _compact(self) -> None:
        buf, pos = self._buf, self._pos
        self._lines += buf.count("\n", 0, pos)
        last = buf.rfind("\n", 0, pos)
        if last >= 0:
            self._last_nl = self._base + last
        self._base += pos
        self._buf = buf[pos:]
        self._pos = 0

    def position(self) -> int:
        """The cursor as a position in the file's text (for `error`)."""
        return self._base + self._pos

    def location(self, where: int | None = None) -> tuple[int, int]:
        """(line, column), 1-based, of a file position at or after the current window's start."""
        at = (self.position() if where is None else where) - self._base
        at = max(0, min(at, len(self._buf)))
        line = self._lines + self._buf.count("\n", 0, at) + 1
        last = self._buf.rfind("\n", 0, at)
        column = at - last if last >= 0 else self._base + at - self._last_nl
        return line, column

    def error(self, msg: str, where: int | None = None) -> StreamError:
        return StreamError(msg, *self.location(where))

    def _ws(self, pattern: re.Pattern[str] = _WS) -> None:
        while True:
            self._pos = pattern.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf) or not self._more():
                return

    def peek(self) -> str:
        self._ws()
        return self._buf[self._pos] if self._pos < len(self._buf) else ""

    def at_end(self, pattern: re.Pattern[str] = _WS) -> bool:
        self._ws(pattern)
        return self._pos >= len(self._buf)

    def _expect(self, char: str, msg: str) -> None:
        if self.peek() != char:
            raise self.error(msg)
        self._pos += 1

    # --- values -------------------------------------------------------------------------------

    def value(self) -> Any:
        """The next value, decoded whole."""
        self._ws()
        while True:
            start = self._pos
            try:
                value, end = _SCAN(self._buf, start)
            except StopIteration as stop:
                where = self._base + stop.value  # before a retry moves the window
                if self._retry(stop.value, "Expecting value"):
                    continue
                raise self.error("Expecting value", where) from None
            except json.JSONDecodeError as exc:
                where = self._base + exc.pos
                if self._retry(exc.pos, exc.msg):
                    continue
                raise self.error(exc.msg, where) from None
            except RecursionError:
                line, column = self.location()
                self._skip_deep()
                raise TooDeep(line, column) from None
            if end >= len(self._buf) and not self._eof and self._more():
                continue  # a number at the window's end may go on in the next one
            self._pos = end
            if self._surrogates == "error" and _SURROGATE_HINT.search(self._buf, start, end):
                self._check_surrogates(start, end)
            return value

    def _retry(self, at: int, msg: str) -> bool:
        """After a failed decode: read more and try again when the failure may be the window's end."""
        if self._eof:
            return False
        if at < len(self._buf) - 8 and not msg.startswith("Unterminated string"):
            return False  # a real error well inside the text read so far
        return self._more()

    def _check_surrogates(self, start: int, end: int) -> None:
        found = lone_surrogate(self._buf[start:end])
        if found is not None:
            position, escape = found
            line, column = self.location(self._base + start + position)
            raise SurrogateError(escape, line, column)

    def skip(self, depth: int = 0) -> None:
        """Consume the next value; an array or object is walked one element at a time (so a big
        array is never held), down to a few levels, below which values are decoded whole (a value
        too deep to decode is passed over by counting brackets)."""
        char = self.peek()
        if char == "[" and depth < 8:
            for _ in self.elements():
                self.skip(depth + 1)
        elif char == "{" and depth < 8:
            for _ in self.members():
                self.skip(depth + 1)
        else:
            try:
                self.value()
            except TooDeep:
                pass

    def _skip_deep(self) -> None:
        """Consume a value (from the cursor) by counting brackets, for one too deep to decode."""
        depth = 0
        while True:
            match = _STRUCTURE.search(self._buf, self._pos)
            if match is None:
                self._pos = len(self._buf)
                if not self._more():
                    return
                continue
            char, self._pos = match.group(), match.end()
            if char == '"':
                end = _STRING_END.match(self._buf, self._pos)
                while end is None and self._more():
                    end = _STRING_END.match(self._buf, self._pos)
                if end is None:
                    self._pos = len(self._buf)
                    return
                self._pos = end.end()
                if depth == 0:
                    return
                continue
            depth += 1 if char in "[{" else -1
            if depth <= 0:
                return

    # --- containers, walked -------------------------------------------------------------------

    def elements(self) -> Iterator[None]:
        """Walk an array: yields once per element, with the cursor at it (the caller must consume it)."""
        self._expect("[", "Expecting value")
        if self.peek() == "]":
            self._pos += 1
            return
        while True:
            if self.peek() == "":
                raise self.error("Expecting value")
            yield
            char = self.peek()
            self._pos += 1
            if char == "]":
                return
            if char != ",":
                self._pos -= 1
                raise self.error("Expecting ',' delimiter")

    def members(self) -> Iterator[str]:
        """Walk an object: yields each key, with the cursor at its value (the caller must consume it)."""
        self._expect("{", "Expecting value")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            key = self._key()
            self._expect(":", "Expecting ':' delimiter")
            self._ws()
            yield key
            char = self.peek()
            self._pos += 1
            if char == "}":
                return
            if char != ",":
                self._pos -= 1
                raise self.error("Expecting ',' delimiter")

    def _key(self) -> str:
        if self.peek() != '"':
            raise self.error("Expecting property name enclosed in double quotes")
        while True:
            try:
                key, end = scanstring(self._buf, self._pos + 1, True)
            except json.JSONDecodeError as exc:
                where = self._base + exc.pos
                if self._retry(exc.pos, exc.msg):
                    continue
                raise self.error(exc.msg, where) from None
            start, self._pos = self._pos, end
            if self._surrogates == "error" and _SURROGATE_HINT.search(self._buf, start, end):
                self._check_surrogates(start, end)
            return key


class SurrogateError(StreamError):
    """A lone UTF-16 surrogate escape (half of a character) at a line and column."""

    def __init__(self, escape: str, line: int, column: int):
        super().__init__(f"a lone UTF-16 surrogate escape {escape}", line, column)
        self.escape = escape


def surrogate_message(path: Path | str, exc: SurrogateError) -> str:
    return (
        f"{path}: line {exc.line}, column {exc.column}: a lone UTF-16 surrogate escape {exc.escape} "
        "(half of a character) cannot be sent as UTF-8; remove it or replace it with the intended "
        "character, then read the file again"
    )


def iter_top_values(stream: JSONStream) -> Iterator[None]:
    """Yields once per top-level value (one document, or several appended, separated by any
    whitespace or nothing), with the cursor at it; the caller consumes each."""
    while not stream.at_end(_ANY_WS):
        yield


def check_encoding(path: Path | str, encoding: str | None) -> None:
    """A ReaderError unless `encoding` (source.encoding) is a known text encoding."""
    try:
        text_encoding(encoding)
    except ReaderError as exc:
        raise ReaderError(f"{path}: {exc}") from None


def open_binary(path: Path, encoding: str | None) -> BinaryIO:
    """The file opened for a JSONStream: `readers.inputs.open_input`, the one way every reader
    opens its input (the bytes it gives are UTF-8, whatever the file's encoding)."""
    return open_input(path, encoding)


class Rows:
    """The rows of one file, numbered in reading order, gathered into RowChunks.

    `add(record)` takes a flat record (a good row), `bad(reason, text)` a record the reader could not
    turn into a row; both take the next number (`count + 1`; or the `number` given, for a caller
    that numbers rows itself: NDJSON lines, rows held back and added later). `ready()` says a chunk
    of `chunk_rows` good rows is waiting for `take()`; `take()` at the end gives the rest (always
    one chunk per file at least). `good` counts the good rows; `facts` go out with the next chunk.

    Values are kept column by column and packed into arrow text every BLOCK rows, so a chunk of
    100,000 rows costs about its text, not 100,000 dicts of Python strings; the chunk's frame has
    arrow-backed text columns (missing values NaN), columns in order of first appearance.
    """

    BLOCK = 2048

    def __init__(self, unit: str = "record", chunk_rows: int | None = None):
        from backfill.readers import CHUNK_ROWS

        self.unit = unit
        self.count = 0
        self.good = 0
        self.first_bad: BadRow | None = None
        self.facts: dict[str, Any] = {}
        self._chunk_rows = chunk_rows or min(CHUNK_ROWS, JSON_CHUNK_ROWS)
        self._columns: dict[str, list[str | None]] = {}  # the open block's values, by column
        self._packed: dict[str, list[tuple[int, Any]]] = {}  # column -> [(block, arrow array)]
        self._sizes: list[int] = []  # rows per packed block
        self._open = 0  # rows in the open block
        self._rows = 0  # rows in the chunk
        self._numbers: list[int] = []
        self._bad: list[BadRow] = []

    def add(self, record: dict[str, str | None], number: int | None = None) -> None:
        """A good row: the next number, or `number` when the caller numbers the rows itself."""
        if number is None:
            self.count += 1
            number = self.count
        self.good += 1
        n = self._open
        columns = self._columns
        for key, value in record.items():
            column = columns.get(key)
            if column is None:
                columns[key] = column = [None] * n
            elif len(column) != n:
                column.extend([None] * (n - len(column)))
            column.append(value)
        self._open = n + 1
        self._rows += 1
        self._numbers.append(number)
        if self._open >= self.BLOCK:
            self._pack()

    def add_object(self, obj: dict, first: tuple[str, ...] = (), extra: dict[str, str | None] | None = None) -> None:
        """A good row from a decoded JSON object, flattened straight into the columns: the same
        row as `add(flatten(obj) | extra)` (columns `first` come first, as `dict.fromkeys(first)`
        would put them), without building the dict."""
        n = self._open
        columns = self._columns
        for name in first:
            if name not in columns:
                columns[name] = [None] * n
        try:
            self._flatten_into(obj, "", n)
        except RecursionError:
            for column in columns.values():  # nothing of a row that could not be read stays
                del column[n:]
            raise
        for name, value in (extra or {}).items():
            self._set(name, value, n)
        self.count += 1
        self.good += 1
        self._open = n + 1
        self._rows += 1
        self._numbers.append(self.count)
        if self._open >= self.BLOCK:
            self._pack()

    def _flatten_into(self, obj: dict, prefix: str, n: int) -> None:
        columns = self._columns
        for key, value in obj.items():
            kind = type(value)
            if kind is str:
                text: str | None = value
            elif kind is JSONNumber:
                text = str.__str__(value)
            elif kind is dict:
                if value:
                    self._flatten_into(value, f"{prefix}{key}.", n)
                    continue
                text = "{}"
            elif value is None:
                column = columns.get(prefix + key)
                if column is None:
                    columns[prefix + key] = [None] * n
                elif len(column) > n:
                    column[n] = None  # a later duplicate name wins, as in a dict
                continue
            else:
                text = scalar_text(value)
            name = prefix + key  # `_set` written out here: a call per field is a third of this loop's time
            column = columns.get(name)
            if column is None:
                columns[name] = column = [None] * n
            else:
                size = len(column)
                if size > n:
                    column[n] = text
                    continue
                if size < n:
                    column.extend([None] * (n - size))
            column.append(text)

    def _set(self, name: str, value: str | None, n: int) -> None:
        column = self._columns.get(name)
        if column is None:
            self._columns[name] = column = [None] * n
        size = len(column)
        if size > n:
            column[n] = value
            return
        if size < n:
            column.extend([None] * (n - size))
        column.append(value)

    def _pack(self) -> None:
        import pyarrow as pa

        n, block = self._open, len(self._sizes)
        for key, column in self._columns.items():
            if len(column) != n:
                column.extend([None] * (n - len(column)))
            if column.count(None) != n:  # a block without any value of the column stays implicit
                self._packed.setdefault(key, []).append((block, pa.array(column, type=pa.string())))
            else:
                self._packed.setdefault(key, [])
        self._columns = {key: [] for key in self._columns}
        self._sizes.append(n)
        self._open = 0

    def bad(self, reason: str, text: str = "", number: int | None = None) -> None:
        if number is None:
            self.count += 1
            number = self.count
        row = BadRow(number, reason, text)
        self._bad.append(row)
        if self.first_bad is None:
            self.first_bad = row

    def ready(self) -> bool:
        return self._rows >= self._chunk_rows

    def take(self) -> RowChunk:
        import pandas as pd
        import pyarrow as pa

        from backfill.normalize import TEXT
        from backfill.readers import ROW

        if self._open or not self._sizes:
            self._pack()
        data: dict[str, Any] = {}
        for key, blocks in self._packed.items():
            present = dict(blocks)
            parts = [present[i] if i in present else pa.nulls(size, pa.string()) for i, size in enumerate(self._sizes)]
            data[key] = pd.Series(pa.chunked_array(parts, type=pa.string()), dtype=TEXT, copy=False)
        frame = pd.DataFrame(data, copy=False) if data else pd.DataFrame(index=range(self._rows))
        frame[ROW] = self._numbers
        chunk = RowChunk(frame, unit=self.unit, bad=self._bad, facts=self.facts)
        self._columns, self._packed, self._sizes, self._open, self._rows = {}, {}, [], 0, 0
        self._numbers, self._bad, self.facts = [], [], {}
        return chunk


# --- the shape every JSON reader takes (GitLab, Jenkins, GitHub) --------------------------

TOO_DEEP = "nested too deeply (more than about 900 levels of arrays or objects)"


def iter_json_values(text: str, path: Path | str) -> Iterator[Any]:
    """Every JSON value in `text`: one document, several appended ones, or NDJSON lines (numbers
    as JSONNumber). Errors as `stream_values` gives them."""
    import io

    with stream_values(io.BytesIO(text.encode("utf-8")), path, None) as (stream, values):
        for _ in values:
            yield stream.value()


class stream_values:
    """`with stream_values(handle, path, encoding) as (stream, tops):` a JSONStream over the file and
    an iterator over its top-level values (one document, appended pages, NDJSON lines); the caller
    consumes each value at the cursor. StreamError, SurrogateError and TooDeep at the top become a
    ReaderError naming the file, line and column; an empty file is one too."""

    def __init__(self, handle: Any, path: Path | str, encoding: str | None):
        self.path = path
        self.stream = JSONStream(handle, path, encoding=encoding)
        self._found = False

    def _tops(self) -> Iterator[None]:
        for _ in iter_top_values(self.stream):
            self._found = True
            yield

    def __enter__(self) -> tuple[JSONStream, Iterator[None]]:
        return self.stream, self._tops()

    def __exit__(self, kind_: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, SurrogateError):
            raise ReaderError(surrogate_message(self.path, exc)) from None
        if isinstance(exc, StreamError):
            raise ReaderError(
                f"{self.path}: invalid JSON at line {exc.line}, column {exc.column}: {exc.msg}; "
                "fix the file or export it again"
            ) from None
        if isinstance(exc, TooDeep):
            raise ReaderError(f"{self.path}: line {exc.line}, column {exc.column}: {TOO_DEEP}") from None
        if exc is None and not self._found:
            raise ReaderError(f"{self.path}: the file is empty; expected JSON exported from the API")
        return False


def reject_if_nothing_read(path: Path | str, rows: Rows | list[tuple[Any, BadRow | None]], expected: str) -> None:
    """A file where every object was unrecognised is the wrong format: one error, not N bad rows.
    `rows`: the file's Rows, or (for readers that collect a list first) its numbered items
    `(record or None, BadRow or None)`."""
    if isinstance(rows, Rows):
        if rows.count and not rows.good:
            reason = rows.first_bad.reason if rows.first_bad else "nothing recognised"
            raise ReaderError(f"{path}: no {expected} found; record 1: {reason}")
        return
    if rows and all(record is None for record, _ in rows):
        first = rows[0][1]
        reason = first.reason if first else "nothing recognised"
        raise ReaderError(f"{path}: no {expected} found; record 1: {reason}")


def read_values(
    path: Path, source: SourceConfig, expected: str, collect: Callable[[JSONStream, Rows], Iterator[RowChunk]],
    finish: Callable[[Rows], None] | None = None,
) -> Iterator[RowChunk]:
    """The rows of a file of appended JSON values: `collect(stream, rows)` consumes one top-level
    value at the cursor, adds its rows and yields `rows.take()` whenever `rows.ready()`; so a
    chunk goes out as soon as it is full, which needs a recognised row (a file of nothing but
    unrecognised objects is rejected as a whole). `finish(rows)` runs at the end of the file."""
    with open_binary(path, source.encoding) as handle, stream_values(handle, path, source.encoding) as (stream, tops):
        rows = Rows("record")
        for _ in tops:
            yield from collect(stream, rows)
        if finish is not None:
            finish(rows)
    reject_if_nothing_read(path, rows, expected)
    yield rows.take()

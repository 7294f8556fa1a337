"""CSV reader: the input read once as a stream, cut into blocks of whole records, each block parsed
by arrow's C++ CSV parser (every column kept as text), with the quoting of every block checked.

    input (readers/inputs: UTF-8 bytes) -> `sep=` line -> delimiter -> header
        -> blocks of whole records (cut at a line end outside quotes)
        -> quoting checked per block (numpy, over the quote characters only)
        -> a clean block: arrow's parser; otherwise, and after it, Python's csv module (strict)

Row numbers are spreadsheet rows: the header is row 1 (an Excel `sep=` line is not a row), a
blank line is a row, a record whose quoted value holds line breaks is one row.

Quoting: a block is handed to arrow only when every quote in it opens a field (at a field's
start) or closes one (before a delimiter or a line end), or is a doubled quote inside a quoted
field. Then the quote count before each line end tells exactly whether the line end is inside a
quoted value, and no rows can have merged. Any other quote (`5" screen`, `="0042"`, text after a
closing quote, or a quote that never closes) sends the rest of the file to Python's csv module in
strict mode, which reads a quote inside an unquoted value as text, as arrow does, and stops with
the row of a quote that runs on to a later line or is followed by text.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv

from backfill.errors import ReaderError
from backfill.normalize import MAYBE_BLANK, TEXT, text_bytes
from backfill.readers import CHUNK_ROWS, ROW, RowChunk, SourceConfig
from backfill.readers.inputs import HEAD_BYTES, InputFile, open_input

DELIMITERS = (",", ";", "\t", "|")
SNIFF_ROWS = 50  # rows after the header that settle a tie between delimiters
BLOCK_BYTES = 8 << 20  # bytes of whole records parsed at a time
_EXCEL_SEP = re.compile(r"sep=(.)(\r\n|\n|\r|$)")
_QUOTE, _LF, _CR = 0x22, 0x0A, 0x0D


def head_text(head: bytes) -> str:
    """The sniffing window as text: whole lines only, unless it is the whole file."""
    cut = head.rfind(b"\n") if len(head) >= HEAD_BYTES else len(head)
    return head[: cut if cut > 0 else len(head)].decode("utf-8", "ignore")


def excel_sep(sample: str) -> tuple[str | None, int]:
    """Excel's `sep=;` first line: (its delimiter, its length in bytes), or (None, 0)."""
    match = _EXCEL_SEP.match(sample)
    if match is None or match.group(1) in "\r\n\"":
        return None, 0
    return match.group(1), len(match.group(0).encode("utf-8"))


def detect_delimiter(sample: str) -> str:
    """The delimiter among , ; tab |: the header line's decides; a tie between several is settled
    by which splits the next rows into as many fields as the header (bounded: SNIFF_ROWS rows of
    the sniffing window, each parsed once per candidate by the csv module)."""
    header_line = sample.splitlines()[0] if sample else ""
    counts = {d: _fields(header_line, d) - 1 for d in DELIMITERS}
    found = [d for d in DELIMITERS if counts[d] > 0]
    if not found:
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


def _fields(line: str, delimiter: str) -> int:
    """How many fields one line has with `delimiter` (quotes respected; 1 if it cannot be split)."""
    try:
        return len(next(csv.reader([line], delimiter=delimiter), []))
    except csv.Error:
        return 1


def column_names(header: list[str], path: Path) -> list[str]:
    """The header's names as pandas gives them (an empty name is `Unnamed: i`); a name given twice
    is refused: the mapping would read one of them without a word."""
    seen: set[str] = set()
    for name in header:
        if name and name in seen:
            raise ReaderError(f"{path}: the header names column {name!r} twice; rename one")
        seen.add(name)
    return [name or f"Unnamed: {i}" for i, name in enumerate(header)]


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Yield the file's rows in chunks; `_row` is the spreadsheet row number (header = row 1)."""
    with open_input(path, source.encoding) as data:
        sample = head_text(data.head)
        sep, skip = excel_sep(sample)
        if skip:
            data.read(skip)
            sample = sample[skip:]
        if not sample.strip():
            raise ReaderError(f"{path}: the file is empty; a CSV needs a header row")
        delimiter = source.delimiter or sep or detect_delimiter(sample)
        yield from _Parser(path, data, delimiter).chunks()


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class _Parser:
    def __init__(self, path: Path, data: InputFile, delimiter: str):
        self.path, self.data, self.delimiter = path, data, delimiter
        self.structural = np.zeros(256, dtype=bool)  # bytes a field may end (or start) beside
        for byte in (ord(delimiter), _LF, _CR):
            self.structural[byte] = True
        self.names: list[str] = []
        self.row = 1  # the spreadsheet row of the last record read
        self.lines = 0  # line ends before the current block, for messages

    # --- blocks of whole records -----------------------------------------------------------

    def _blocks(self) -> Iterator[tuple[bytes, bool]]:
        """(bytes of whole records, clean) until the end; `clean` is False from the first block
        whose quoting arrow could read differently from the csv module, and for all after it."""
        carry = b""
        while True:
            more = self.data.read(BLOCK_BYTES)
            buf = carry + more if carry else more
            end = not more
            if not buf:
                return
            cut, clean = self._cut(buf, end)
            if not clean:
                yield buf, False  # this block and the rest go to the csv module, as they come
                while more := self.data.read(BLOCK_BYTES):
                    yield more, False
                return
            if cut == 0 and not end:  # one record longer than a block: read on
                carry = buf
                continue
            block, carry = buf[:cut], buf[cut:]
            del buf, more  # only the block is alive while it is parsed and its rows mapped
            yield block, True
            del block
            if end:
                if carry:
                    yield carry, True
                return

    def _cut(self, buf: bytes, end: bool) -> tuple[int, bool]:
        """Where the last whole record of `buf` ends (all of it at the end of the file), and
        whether every quote before there opens or closes a field (see the module docstring)."""
        if buf.find(b'"') < 0:
            if end:
                return len(buf), True
            return self._last_line_end(buf) + 1, True
        arr = np.frombuffer(buf, dtype=np.uint8)
        quotes = np.flatnonzero(arr == _QUOTE)
        before = np.empty(len(quotes), dtype=np.uint8)
        before[1:] = arr[quotes[1:] - 1]
        after = np.empty(len(quotes), dtype=np.uint8)
        after[:-1] = arr[quotes[:-1] + 1]
        opens = np.zeros(len(quotes), dtype=bool)
        opens[0::2] = True
        # an opening quote stands at a field's start (or is the second of a doubled quote)
        ok_open = self.structural[before] | (before == _QUOTE)
        ok_open[0] = quotes[0] == 0 or self.structural[arr[quotes[0] - 1]]
        ok_close = self.structural[after] | (after == _QUOTE)
        last_at_end = quotes[-1] == len(buf) - 1
        if last_at_end:
            ok_close[-1] = True  # the end of the file, or of the block (checked again with the next)
        else:
            ok_close[-1] = self.structural[arr[quotes[-1] + 1]] or arr[quotes[-1] + 1] == _QUOTE
        good = np.where(opens, ok_open, ok_close)
        if end:
            if len(quotes) % 2:
                return len(buf), False  # a quote that never closes
            return len(buf), bool(good.all())
        line_ends = np.flatnonzero(arr == _LF) if buf.find(b"\n") >= 0 else np.flatnonzero(arr[:-1] == _CR)
        outside = line_ends[np.searchsorted(quotes, line_ends) % 2 == 0]
        if not len(outside):
            return 0, bool(good.all())
        cut = int(outside[-1]) + 1
        checked = quotes < cut
        return cut, bool(good[checked].all())

    def _last_line_end(self, buf: bytes) -> int:
        """The last line end of `buf` (-1 if none): a LF, or in a file of CR line ends a CR
        known not to be the first half of a CR LF."""
        at = buf.rfind(b"\n")
        if at >= 0:
            return at
        return buf.rfind(b"\r", 0, len(buf) - 1)

    # --- rows --------------------------------------------------------------------------------

    def chunks(self) -> Iterator[RowChunk]:
        blocks = self._blocks()
        for block, clean in blocks:
            if not self.names:
                block = self._header(block)
            if not clean:
                yield from self._exact(itertools.chain([block], (b for b, _ in blocks)))
                return
            frame = self._arrow(block)
            lines = int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == _LF))
            if frame is None:  # rows of the wrong width: padded (short) or named (long) by the csv module
                yield from self._exact([block])
            else:
                del block  # parsed: not kept while the chunk is mapped
                yield self._chunk(frame)
            self.lines += lines
        if not self.names:
            raise ReaderError(f"{self.path}: the file is empty; a CSV needs a header row")

    def _header(self, block: bytes) -> bytes:
        """Read the header record off the first block; return the rest of the block."""
        lines: list[bytes] = []  # the lines the csv module asks for: the header's (not the block split whole)

        def pulled() -> Iterator[str]:
            for match in _LINE.finditer(block):  # as bytes.splitlines(keepends=True) splits, lazily
                line = match.group()
                lines.append(line)
                yield line.decode("utf-8")

        reader = csv.reader(pulled(), delimiter=self.delimiter, strict=True)
        try:
            header = next(reader)
        except (csv.Error, StopIteration):
            raise ReaderError(
                f"{self.path}: cannot read the header row with delimiter {self.delimiter!r}: check its quoting "
                "or set source.delimiter"
            ) from None
        self.names = column_names(header, self.path)
        self.lines = reader.line_num
        return block[sum(len(line) for line in lines[: reader.line_num]):]

    def _arrow(self, block: bytes) -> pd.DataFrame | None:
        """The block's rows by arrow's parser, or None when a row has the wrong number of fields."""
        if not block:
            return pd.DataFrame({name: pd.Series([], dtype=TEXT) for name in self.names})
        wrong = []
        generic = [f"c{i}" for i in range(len(self.names))]

        def on_wrong_width(row: object) -> str:
            wrong.append(row)
            return "skip"

        table = pv.read_csv(
            io.BytesIO(block),
            read_options=pv.ReadOptions(column_names=generic),
            parse_options=pv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=b'"' in block,
                ignore_empty_lines=False,
                invalid_row_handler=on_wrong_width,
            ),
            convert_options=pv.ConvertOptions(
                column_types={name: pa.string() for name in generic},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=False,  # checked as it was read
            ),
        )
        if wrong:
            return None
        frame = table.to_pandas(types_mapper={pa.string(): TEXT}.get)
        frame.columns = self.names
        return frame

    def _exact(self, pieces: Iterable[bytes]) -> Iterator[RowChunk]:
        """Rows by Python's csv module in strict mode (see the module docstring), streamed."""
        width = len(self.names)
        stream = io.TextIOWrapper(io.BufferedReader(_Chain(pieces)), encoding="utf-8", newline="")
        reader = csv.reader(stream, delimiter=self.delimiter, strict=True)
        rows: list[list[str]] = []
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise self._quote_error(exc, self.lines + reader.line_num, len(rows)) from None
            if len(record) != width:
                if len(record) < width:
                    record += [""] * (width - len(record))  # a blank line is a row of empty fields
                else:
                    self._too_wide(self.row + len(rows) + 1, len(record))
            rows.append(record)
            if len(rows) >= CHUNK_ROWS:
                yield self._chunk(_frame(rows, self.names))
                rows = []
        if rows:
            yield self._chunk(_frame(rows, self.names))

    def _quote_error(self, exc: csv.Error, line: int, read: int) -> ReaderError:
        row = self.row + read + 1
        where = f"row {row}" if line == row else f"row {row} (line {line} of the file)"
        if "unexpected end of data" in str(exc):
            return ReaderError(
                f"{self.path}: {where}: a quote opens a field and never closes, so every line after it would "
                "be read into that field; close the quote (a quote inside a field is written twice: \"\")"
            )
        return ReaderError(
            f"{self.path}: {where}: text follows a closing quote (or a quote opened on an earlier line of this "
            "row never closed, merging the lines after it into this row); quote the whole field and write a "
            "quote inside it twice (\"\")"
        )

    def _too_wide(self, row: int, fields: int) -> None:
        if row == 2:
            raise ReaderError(
                f"{self.path}: row 2 has more fields than the header ({len(self.names)} columns) "
                f"with delimiter {self.delimiter!r}; check the quoting of that row or set source.delimiter"
            )
        raise ReaderError(
            f"{self.path}: cannot parse CSV with delimiter {self.delimiter!r}: Expected {len(self.names)} fields "
            f"in line {row}, saw {fields}; check the quoting of that row or set source.delimiter"
        )

    def _chunk(self, frame: pd.DataFrame) -> RowChunk:
        _excel_text_formulas(frame)
        first = self.row + 1
        frame[ROW] = np.arange(first, first + len(frame), dtype=np.int64)
        self.row += len(frame)
        rows, empty = _drop_empty_rows(frame)
        return RowChunk(rows, unit="row", empty=empty)


class _Chain(io.RawIOBase):
    """Byte strings as one read-once stream."""

    def __init__(self, pieces: Iterable[bytes]):
        super().__init__()
        self._pieces = iter(pieces)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._buf:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buf = piece
        n = min(len(buffer), len(self._buf))
        buffer[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def _frame(rows: list[list[str]], names: list[str]) -> pd.DataFrame:
    columns = list(zip(*rows)) if rows else [()] * len(names)
    return pd.DataFrame({name: pd.Series(list(col), dtype=TEXT) for name, col in zip(names, columns)})


def _excel_text_formulas(frame: pd.DataFrame) -> None:
    """Excel's text-formula cells, `="0042"` (how Excel keeps leading zeros), as Excel shows them:
    0042. Only a whole value of that form; a doubled quote inside is one quote."""
    for name in frame.columns:
        values = pa.array(frame[name].array)
        if not _some_first_byte(values, _IS_EQUALS):  # one numpy scan, the usual answer
            continue
        formula = pc.and_(pc.starts_with(values, '="'), pc.ends_with(values, '"'))
        formula = pc.and_(formula, pc.greater_equal(pc.utf8_length(values), 3))
        if not pc.any(formula).as_py():
            continue
        inner = pc.replace_substring(pc.utf8_slice_codeunits(values, 2, -1), '""', '"')
        frame[name] = pd.Series(pc.if_else(formula, inner, values), index=frame.index, dtype=TEXT)


def _drop_empty_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Without blank lines and rows whose every field is empty or blanks (they hold no deployment),
    and how many there were, so the report still accounts for them."""
    fields = frame.columns[:-1]  # all but ROW
    if not len(fields):
        return frame, 0
    first = pa.array(frame[fields[0]].array)
    if not _some_first_byte(first, MAYBE_BLANK, empty=True):
        return frame, 0
    candidates = _blank(first)
    if not candidates.any():
        return frame, 0
    empty = candidates.copy()
    for name in fields[1:]:
        values = pa.array(frame[name].array).filter(pa.array(empty))
        empty[empty] = _blank(values)
        if not empty.any():
            return frame, 0
    return frame[~empty], int(empty.sum())


_IS_EQUALS = np.zeros(256, dtype=bool)
_IS_EQUALS[ord("=")] = True


def _some_first_byte(values: pa.Array | pa.ChunkedArray, table: np.ndarray, *, empty: bool = False) -> bool:
    """Whether a value starts with a byte `table` marks (or, with `empty`, is empty or null): a
    gather of one byte per value, to skip the kernels when no value can need them."""
    for chunk in getattr(values, "chunks", [values]):
        if empty and chunk.null_count:
            return True
        bounds, raw = text_bytes(chunk)
        if empty and (bounds[1:] == bounds[:-1]).any():
            return True
        if bounds[-1] > bounds[0]:
            # an empty value reads its neighbour's first byte: at worst a kernel runs for nothing
            if table[raw[np.minimum(bounds[:-1], bounds[-1] - 1)]].any():
                return True
    return False


def _blank(values: pa.Array) -> np.ndarray:
    """True where a value is empty or only blanks (spaces, tabs)."""
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.fill_null(pc.equal(trimmed, ""), True).to_numpy(zero_copy_only=False)

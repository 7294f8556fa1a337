"""Opening an input file: the one place every reader gets its bytes from.

    with open_input(path, source.encoding) as data:
        data.head          # the first bytes (up to HEAD_BYTES), for sniffing, not consumed
        data.read(n)       # the file's text as UTF-8 bytes, in order, each byte read once
        data.text()        # or the rest as one str

The file is opened once and read once, front to back, so FIFOs and `<(...)` process
substitution work. What a reader gets is always UTF-8 text: a UTF-8 byte-order mark is dropped
(whether or not `encoding: utf-8` is given), UTF-8 is checked as it streams past, and any other
encoding named in the mapping is transcoded to UTF-8 on the way. Every failure is a one-line
`ReaderError` (exit 3) naming the file:

- no such file, a directory, permission denied, any other OS error, at open or while reading;
- an unknown encoding, or a codec that is not a text encoding (`hex`, `base64`, `rot13`, `zlib`);
- bytes that are not valid text in the encoding, with their byte offset;
- a UTF-16 or UTF-32 file (by its byte-order mark, or UTF-16 by its NUL bytes) when the mapping
  does not say so: Excel's "Unicode Text" export; the message says how to convert it;
- a binary file recognised by its magic bytes (Excel workbook, ZIP, gzip, ...): the message says
  what it is and what to do.
"""

from __future__ import annotations

import codecs
import io
import re
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from backfill.errors import ReaderError

HEAD_BYTES = 64 * 1024
BLOCK_BYTES = 1 << 20
UTF8_BOM = codecs.BOM_UTF8

# (magic at offset 0, what it is, what to do); checked in order, before any decoding
_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel 97-2003 workbook (.xls) or another Office document",
     "open it in Excel and save it as CSV UTF-8"),
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip FILE), then read the result"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz FILE), then read the result"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (unzstd FILE), then read the result"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the file from it first"),
    (b"%PDF-", "a PDF document", "export the data from the program that made it as CSV or JSON"),
    (b"SQLite format 3\x00", "an SQLite database",
     "export the table as CSV (sqlite3 -header -csv FILE 'select * from TABLE')"),
)
_BZIP2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")
_UTF32 = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"))  # before UTF-16: FF FE 00 00
_UTF16 = ((codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def text_encoding(name: str | None) -> str | None:
    """The Python codec name of a `source.encoding` value (None for the default, UTF-8), or a
    ReaderError without a file name (the caller adds it) when it is not a text encoding."""
    if name is None:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, TypeError, ValueError):
        raise ReaderError(f"unknown encoding {name!r} in source.encoding") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ReaderError(
            f"source.encoding {name!r} is not a text encoding; name the file's character set (e.g. utf-8, latin-1, cp1252)"
        )
    return info.name


def _utf8(codec: str | None) -> bool:
    return codec in (None, "utf-8", "utf-8-sig")


def decode_error(path: Path | str, label: str, offset: int) -> ReaderError:
    """The one-line error for bytes that are not valid text (offset counted from 0, after a BOM)."""
    return ReaderError(
        f"{path}: not valid {label} text (byte {offset}); "
        "set source.encoding in the mapping (e.g. latin-1, cp1252)"
    )


def _binary_kind(head: bytes) -> tuple[str, str] | None:
    """(what the file is, what to do) for a binary format recognised by its first bytes."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if b"xl/" in head[:HEAD_BYTES] or b"[Content_Types].xml" in head[:HEAD_BYTES]:
            return "an Excel workbook (.xlsx)", "open it in Excel and save it as CSV UTF-8"
        if b"opendocument.spreadsheet" in head[:200]:
            return "an OpenDocument spreadsheet (.ods)", "open it and save it as CSV (UTF-8)"
        return "a ZIP archive", "extract the file from it first (unzip FILE)"
    for magic, kind, advice in _MAGIC:
        if head.startswith(magic):
            return kind, advice
    if _BZIP2.match(head):
        return "bzip2-compressed", "decompress it first (bunzip2 FILE), then read the result"
    if head.startswith(b"PAR1") and b"\x00" in head[:1024]:
        return "an Apache Parquet file", "convert it to CSV first (e.g. pandas: read_parquet(...).to_csv(...))"
    return None


def _wide_kind(head: bytes) -> str | None:
    """"UTF-16" or "UTF-32" for a byte-order mark of either, or UTF-16 text without one (every
    other byte NUL, as ASCII text in UTF-16 is)."""
    for bom, kind in _UTF32 + _UTF16:
        if head.startswith(bom):
            return kind
    sample = head[:4096]
    if len(sample) >= 8:
        even, odd = sample[0::2], sample[1::2]
        for zeros, other in ((odd, even), (even, odd)):
            if zeros.count(0) >= 0.9 * len(zeros) and other.count(0) <= 0.1 * len(other):
                return "UTF-16"
    return None


class InputFile(io.RawIOBase):
    """An input's text as a read-once stream of UTF-8 bytes; see the module docstring."""

    def __init__(self, path: Path | str, encoding: str | None = None):
        super().__init__()
        self.path = path
        try:
            self.codec = text_encoding(encoding)
        except ReaderError as exc:
            raise ReaderError(f"{path}: {exc}") from None
        self.label = "UTF-8" if _utf8(self.codec) else str(encoding)
        self._raw: BinaryIO | None = None
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise ReaderError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ReaderError(f"{path}: is a directory, not a file") from None
        except OSError as exc:
            raise ReaderError(f"{path}: cannot read: {exc.strerror or exc}") from None
        self._decoder = codecs.getincrementaldecoder(self.codec or "utf-8")("strict")
        self._pending = b""  # converted bytes not read yet
        self._offset = 0  # raw bytes consumed (after a BOM), for error offsets
        self._eof = False
        self.head = b""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        first = self._read_raw(HEAD_BYTES)
        while len(first) < 4 and not self._eof:  # a slow pipe: enough bytes for a BOM
            first += self._read_raw(HEAD_BYTES)
        self._check_start(first)
        if first.startswith(UTF8_BOM) and _utf8(self.codec):
            first = first[len(UTF8_BOM):]
        self._convert(first)
        self.head = self._fill(HEAD_BYTES)[:HEAD_BYTES]  # may end inside a character

    # --- the start of the file --------------------------------------------------------------

    def _check_start(self, first: bytes) -> None:
        binary = _binary_kind(first)
        if binary is not None:
            kind, advice = binary
            raise ReaderError(f"{self.path}: this is {kind}, not a text file: {advice}")
        codec = self.codec or ""
        wide = _wide_kind(first)
        if wide is not None and not codec.startswith(wide.lower()):
            excel = " (Excel 'Unicode Text')" if wide == "UTF-16" else ""
            raise ReaderError(
                f"{self.path}: this file is {wide}{excel}, not UTF-8: save it as UTF-8 (in Excel: Save As "
                f"'CSV UTF-8'; or iconv -f {wide} -t UTF-8 FILE > NEW), or set source.encoding: {wide.lower()} "
                "in the mapping"
            )
        if first.startswith(UTF8_BOM) and not _utf8(self.codec):
            raise ReaderError(
                f"{self.path}: the file starts with a UTF-8 byte-order mark, so it is UTF-8 text, but "
                f"source.encoding is {self.label!r}; remove source.encoding from the mapping"
            )

    # --- reading ------------------------------------------------------------------------------

    def _read_raw(self, size: int) -> bytes:
        assert self._raw is not None
        try:
            data = self._raw.read(size)
        except OSError as exc:
            raise ReaderError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        if not data:
            self._eof = True
        return data

    def _convert(self, data: bytes) -> None:
        """Check (UTF-8) or transcode (anything else) raw bytes into the pending UTF-8 bytes."""
        held = self._decoder.getstate()[0]  # the start of a character split by the last block
        if _utf8(self.codec) and not held and data.isascii():
            self._pending += data
            self._offset += len(data)
            return
        try:
            text = self._decoder.decode(data, self._eof)
        except UnicodeDecodeError as exc:
            raise decode_error(self.path, self.label, self._offset - len(held) + exc.start) from None
        if _utf8(self.codec):  # valid as it is: passed on without re-encoding, less a split character
            now_held = len(self._decoder.getstate()[0])
            self._pending += held + data[: len(data) - now_held]
        else:
            converted = text.encode("utf-8")
            if self._offset == 0 and converted.startswith(UTF8_BOM):  # utf-16-le/-be keep their BOM
                converted = converted[len(UTF8_BOM):]
            self._pending += converted
        self._offset += len(data)

    def _fill(self, size: int) -> bytes:
        """Convert until `size` bytes are pending (or the end); return the pending bytes."""
        while len(self._pending) < size and not self._eof:
            # a large request reads just what it lacks (then no slicing copies the block); a small one a block
            data = self._read_raw(max(size - len(self._pending), BLOCK_BYTES if size <= BLOCK_BYTES else 0))
            self._convert(data)
        return self._pending

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        pending = self._fill(1) if not self._pending else self._pending
        n = min(len(view), len(pending))
        view[:n] = pending[:n]
        self._pending = pending[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all the rest if negative); fewer only at the end of the file."""
        if size is None or size < 0:
            return self.readall()
        pending = self._fill(size)
        if len(pending) <= size:
            self._pending = b""
            return pending
        out, self._pending = pending[:size], pending[size:]
        return out

    def readall(self) -> bytes:
        parts = [self._pending]
        self._pending = b""
        while not self._eof:
            self._convert(self._read_raw(BLOCK_BYTES))
            parts.append(self._pending)
            self._pending = b""
        return b"".join(parts)

    def text(self) -> str:
        """The rest of the file as one str."""
        return self.readall().decode("utf-8")

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        super().close()

    def __enter__(self) -> "InputFile":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_input(path: Path | str, encoding: str | None = None) -> InputFile:
    """Open an input file once for reading as UTF-8 text; see the module docstring."""
    return InputFile(path, encoding)

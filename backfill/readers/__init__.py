"""Readers turn one input file into chunks of rows.

Every reader yields `RowChunk`s: a DataFrame whose columns are the file's fields (nested JSON
objects flattened to dotted names such as `environment.name`), every value text or missing,
plus the column `_row` (1-based position in the file, see `RowChunk.unit`); and the rows the
reader itself could not parse (an NDJSON line that is not JSON), which are reported as invalid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from backfill.errors import ReaderError

ROW = "_row"
CHUNK_ROWS = 100_000


@dataclass(frozen=True)
class SourceConfig:
    """The `source:` section of a mapping: how to read the input files."""

    format: str = "csv"
    delimiter: str | None = None  # csv: detected when None
    encoding: str | None = None  # default UTF-8 (BOM or not)
    records: str | None = None  # json: dotted path to the array of records
    timezone: str = "UTC"  # zone of naive timestamps
    repo_url_matches: str | None = None  # jenkins: regex picking the BuildData of the app's repository


@dataclass
class BadRow:
    """A row the reader could not turn into fields."""

    row: int
    reason: str
    text: str = ""


@dataclass
class RowChunk:
    frame: pd.DataFrame
    unit: str = "row"  # how `_row` counts: "row" (CSV, header is row 1), "line" (NDJSON), "record"
    bad: list[BadRow] = field(default_factory=list)
    empty: int = 0  # rows with no value at all (a spreadsheet's trailing `,,,` rows), counted not mapped
    facts: dict[str, Any] = field(default_factory=dict)  # about the file as a whole, for the preview report


def scalar_text(value: Any) -> str | None:
    """A JSON scalar as text, in its written form; None for null. Containers become compact JSON."""
    if value is None:
        return None
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)  # a JSONNumber as a plain str
    if isinstance(value, (dict, list)):
        return dumps(value)
    return str(value)


def dumps(value: Any) -> str:
    """Compact JSON text of a decoded value, numbers (JSONNumber, int) as they were written:
    `[42, 1.50]` stays `[42,1.50]`. Strings as `json.dumps(ensure_ascii=False)` writes them."""
    if isinstance(value, str):
        return str.__str__(value) if isinstance(value, JSONNumber) else _encode_string(value)
    if isinstance(value, list):
        return "[" + ",".join([dumps(v) for v in value]) + "]"
    if isinstance(value, dict):
        return "{" + ",".join([f"{_encode_string(str(k))}:{dumps(v)}" for k, v in value.items()]) + "}"
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def flatten(obj: dict, prefix: str = "", out: dict | None = None) -> dict[str, str | None]:
    """Flatten nested objects to dotted keys; lists stay whole as compact JSON text. The values
    come out as `scalar_text` gives them (dispatch on the exact type: this runs for every field
    of every JSON record)."""
    out = {} if out is None else out
    for key, value in obj.items():
        kind = type(value)
        if kind is str:
            out[prefix + key] = value
        elif kind is JSONNumber:
            out[prefix + key] = str.__str__(value)
        elif value is None:
            out[prefix + key] = None
        elif kind is dict:
            if value:
                flatten(value, f"{prefix}{key}.", out)
            else:
                out[prefix + key] = "{}"
        else:
            out[prefix + key] = scalar_text(value)
    return out


class JSONNumber(str):
    """A JSON number as its written text, told apart from a string where the reader needs to say
    what a non-object record is. `scalar_text` turns it into a plain str."""

    __slots__ = ()


def loads(text: str, path: Path | str, numbers: type = str) -> Any:
    """Parse JSON, keeping numbers in their written form (5551 stays "5551").

    A syntax error, or a lone UTF-16 surrogate escape, becomes a ReaderError naming the file,
    line and column.
    """
    try:
        doc = json.loads(text, parse_int=numbers, parse_float=numbers, parse_constant=numbers)
    except json.JSONDecodeError as exc:
        raise ReaderError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    check_surrogates(text, path)
    return doc


# `\ud800`-`\udfff` (JSON allows the hex digits in either case); a cheap test before the exact scan
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]")
# every surrogate escape with the run of backslashes before it: an odd run is an escape, an even
# one is escaped backslashes followed by the literal text "ud800"
_SURROGATE_ESCAPE = re.compile(r"(\\+)u([dD][89a-fA-F][0-9a-fA-F]{2})")


def lone_surrogate(text: str) -> tuple[int, str] | None:
    r"""The position and text (`\ud800`) of the first `\uXXXX` escape in JSON text that is a UTF-16
    surrogate not in a high+low pair, or None. Such an escape parses into a str that cannot be
    encoded as UTF-8 (so it could never be sent). Cheap when there is none: one regex search."""
    if _SURROGATE_HINT.search(text) is None:
        return None
    pending: tuple[int, int, str] | None = None  # an unpaired high surrogate: (start, end, escape)
    for match in _SURROGATE_ESCAPE.finditer(text):
        if len(match.group(1)) % 2 == 0:
            continue  # "\\ud800": an escaped backslash, then plain text
        start = match.end() - 6
        escape = text[start : match.end()]
        high = int(match.group(2), 16) < 0xDC00
        if pending is not None:
            if high or start != pending[1]:
                return pending[0], pending[2]  # a high surrogate not followed by a low one
            pending = None  # a valid pair
            continue
        if not high:
            return start, escape  # a low surrogate with no high one before it
        pending = (start, match.end(), escape)
    return (pending[0], pending[2]) if pending is not None else None


def check_surrogates(text: str, path: Path | str) -> None:
    """A ReaderError naming file, line and column of a lone surrogate escape in a JSON document."""
    found = lone_surrogate(text)
    if found is None:
        return
    position, escape = found
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    raise ReaderError(
        f"{path}: line {line}, column {column}: a lone UTF-16 surrogate escape {escape} "
        "(half of a character) cannot be sent as UTF-8; remove it or replace it with the intended "
        "character, then read the file again"
    )


def read_text(path: Path, encoding: str | None = None) -> str:
    """The whole file as text (BOM removed), with a clear error when it cannot be read
    (see `backfill.readers.inputs`)."""
    from backfill.readers.inputs import open_input

    with open_input(path, encoding) as data:
        return data.text()


def frame_from_records(records: list[dict[str, str | None]], first_row: int = 1) -> pd.DataFrame:
    """A DataFrame of text columns from flat records, numbered from `first_row`."""
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    frame = frame.astype(object).where(frame.notna(), None) if len(frame.columns) else frame
    frame[ROW] = range(first_row, first_row + len(records))
    return frame


def records_chunks(records: list[dict], unit: str = "record") -> Iterator[RowChunk]:
    """Flat records as RowChunks of at most CHUNK_ROWS rows."""
    for start in range(0, max(len(records), 1), CHUNK_ROWS):
        part = records[start : start + CHUNK_ROWS]
        yield RowChunk(frame_from_records(part, start + 1), unit=unit)


Reader = Callable[[Path, SourceConfig], Iterator[RowChunk]]


def get_reader(fmt: str) -> Reader:
    """The reader function for a `source.format` value (one of FORMATS)."""
    from backfill.readers import csvfile, github_actions, github_deployments, gitlab, jenkins, jsonfile

    readers: dict[str, Reader] = {
        "csv": csvfile.read,
        "json": jsonfile.read_json,
        "ndjson": jsonfile.read_ndjson,
        "jenkins": jenkins.read,
        "gitlab": gitlab.read,
        "github-actions": github_actions.read,
        "github-deployments": github_deployments.read,
    }
    return readers[fmt]


def reader_for(fmt: str, paths: Sequence[Path], source: SourceConfig) -> Reader:
    """The reader for one run over `paths`, called once per file in that order. A reader module
    that must see every input first (github-actions: the attempts of one re-run spread over several
    files) declares `prepare(paths, source) -> Reader`; the others are `get_reader(fmt)` itself."""
    import importlib

    reader = get_reader(fmt)
    prepare = getattr(importlib.import_module(reader.__module__), "prepare", None)
    return prepare(list(paths), source) if prepare is not None else reader


def reader_notes(fmt: str) -> dict[str, tuple[str, str]]:
    """What the preview counts for a format: {row field: (sentence for 1, sentence for n)}, each
    with `{n}`, counting the planned events whose source row has the field `true`. A reader
    module declares them as `NOTES`."""
    import importlib

    module = importlib.import_module(get_reader(fmt).__module__)
    return dict(getattr(module, "NOTES", {}))


FORMATS = ("csv", "json", "ndjson", "jenkins", "gitlab", "github-actions", "github-deployments")

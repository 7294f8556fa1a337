"""Rows -> validated events: the whole planning flow.

    read (chunks) -> filter rules -> field rules -> normalize -> invalid rows reported
                  -> --since/--until -> dedupe (first kept) -> sort oldest first (ids on first use)

Every row read ends in exactly one bucket: planned, filtered (by which rule), outside the date
range, duplicate, or invalid (with its reason). `PlanReport.accounted` checks that.
"""

from __future__ import annotations

import json
import math
import os
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.types import union_categoricals

from backfill import source_facts
from backfill.display import cut, line as display_line
from backfill.errors import MappingError, UsageError
from backfill.events import ATTRIBUTES, DATE_ATTRIBUTES, EVENT_TYPE, MAX_BATCH
from backfill.inputs import check_distinct_inputs, copies_of_earlier
from backfill.mapping import FieldRule, Mapping, template_fields
from backfill.normalize import (
    TEXT, UTC_DTYPE, arrow_text, format_utc, map_values, normalize_status, nul_reasons, parse_datetimes, stripped,
    text_bytes,
)
from backfill.patterns import search
from backfill.readers import ROW, reader_for, reader_notes

FILE = "_file"
TS = "_ts"
KEY = "_key"
ROW_HASH = "_row_hash"
VALID = "_valid"
COMMIT_TS = "_commit_ts"  # the mapping's report.commit_time, parsed (the report's lead time; never sent)
BUILD = "_build"  # the mapping's report.build fields joined by \x1f (never sent)
NOTE = "_note:"  # + a reader's note field: True where the planned event's row has it `true`
REASON_LIMIT = 20


@dataclass
class InvalidRow:
    file: str
    row: int
    unit: str
    reason: str
    values: dict[str, str]

    def to_json(self) -> dict:
        return {"file": self.file, self.unit: self.row, "reason": self.reason, "values": self.values}

    def __str__(self) -> str:
        """One line for the terminal: long values cut, control characters escaped (backfill.display)."""
        return display_line(f"{self.file} {self.unit} {self.row}: {self.reason}")


KEEP_INVALID = 1000  # invalid rows kept with their values; the rest are counted by reason
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


class InvalidRows(list):
    """Every invalid row of a plan, kept compactly whatever their number.

    `len()` counts every one; the list itself holds the first KEEP_INVALID with their values (what
    the summary shows); `by_reason` counts every one by its reason with the quoted values left
    out (`entityId: '…' is not in the lookup ...`). With a `sink` (--invalid-out) every row, with
    its values, is written there as it is found, so memory does not grow with their number.
    """

    def __init__(self, rows: Iterable[InvalidRow] = (), *, keep: int | None = None, sink: IO[str] | None = None):
        super().__init__()
        self.keep = KEEP_INVALID if keep is None else keep
        self.sink, self.total = sink, 0
        self.by_reason: Counter = Counter()
        self.extend(rows)

    def __len__(self) -> int:
        return self.total

    def __bool__(self) -> bool:
        return self.total > 0

    def append(self, row: InvalidRow) -> None:  # type: ignore[override]
        self.total += 1
        self.by_reason[_QUOTED.sub("'…'", row.reason)] += 1
        if self.sink is not None:
            self.sink.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
        if list.__len__(self) < self.keep:
            super().append(row)

    def extend(self, rows: Iterable[InvalidRow]) -> None:  # type: ignore[override]
        for row in rows:
            self.append(row)

    def add_chunk(self, frame: pd.DataFrame, reasons: pd.Series, path: str, unit: str) -> None:
        """A chunk's invalid rows: values are read (per row) only for the rows kept or written;
        the others are counted by reason in one vectorized pass."""
        room = max(self.keep - list.__len__(self), 0)
        detailed = len(reasons) if self.sink is not None else min(room, len(reasons))
        self.extend(_invalid_rows(frame, reasons.iloc[:detailed], path, unit))
        rest = reasons.iloc[detailed:]
        if len(rest):
            self.total += len(rest)
            self.by_reason.update(rest.astype(str).str.replace(_QUOTED, "'…'", regex=True).value_counts().to_dict())


@dataclass
class PlanReport:
    files: list[tuple[str, int]] = field(default_factory=list)  # (path, rows read)
    filtered: Counter = field(default_factory=Counter)  # filter rule label -> rows skipped
    outside_range: int = 0
    duplicates: int = 0
    empty: int = 0  # CSV rows without any value
    notes: dict[str, int] = field(default_factory=dict)  # reader note field -> planned events with it (readers.reader_notes)
    copies: list[tuple[str, int, str]] = field(default_factory=list)  # (input, rows copied, of which earlier input)
    invalid: InvalidRows = field(default_factory=InvalidRows)  # len() counts all; the first kept with values
    planned: int = 0
    facts: dict[str, dict] = field(default_factory=dict)  # path -> what the report needs of the file as a whole

    @property
    def rows_read(self) -> int:
        return sum(n for _, n in self.files)

    @property
    def accounted(self) -> int:
        return (
            self.planned + sum(self.filtered.values()) + self.outside_range + self.duplicates + len(self.invalid)
            + self.empty
        )


@dataclass
class Plan:
    """Planned events, oldest first, plus the report of every row that is not one."""

    mapping: Mapping
    files: list[str]
    events: pd.DataFrame  # TS, "timestamp", "entityId", attribute columns, FILE (index into files), ROW;
    # "timestamp" and the date attributes are UTC instants, formatted as text only in bodies (`timestamps()`)
    report: PlanReport
    keys: pd.Series | None = None  # the dedupe key per event (values joined by \x1f), with dedupe
    row_hashes: np.ndarray | None = None  # hash of each event's source row, when planned for import
    folded: pd.DataFrame | None = None  # with dedupe: the rows of every key seen twice (kept and folded)
    _ids: pd.Series | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.events)

    def event_ids(self) -> pd.Series:
        """Each event's stable id (computed on first use: a preview does not need them)."""
        if self._ids is None:
            self._ids = _event_ids(self)
        return self._ids

    @property
    def attribute_columns(self) -> list[str]:
        return [a for a in ATTRIBUTES if a in self.events.columns]

    def timestamps(self, start: int = 0, stop: int | None = None) -> pd.Series:
        """The `timestamp` of events[start:stop] as it is sent (`YYYY-MM-DDTHH:MM:SSZ`)."""
        return format_utc(self.events["timestamp"].iloc[start:stop])

    def bodies(self, start: int = 0, stop: int | None = None) -> pd.Series:
        """The JSON text of events[start:stop], exactly as each goes into a request."""
        return event_bodies(self.events.iloc[start:stop], self.attribute_columns)

    def request_blocks(self, batch_size: int = MAX_BATCH, slice_size: int = 30_000) -> Iterator[tuple[int, bytes]]:
        """Every request body `{"events":[...]}` in order, as UTF-8 blocks of whole lines
        (`(requests, bytes)`), each block joined by arrow kernels from one slice of the plan."""
        slice_size = max(batch_size, slice_size - slice_size % batch_size)  # whole batches per slice
        for start in range(0, len(self.events), slice_size):
            bodies = arrow_text(self.bodies(start, start + slice_size))
            offsets = pa.array(list(range(0, len(bodies), batch_size)) + [len(bodies)], type=pa.int32())
            requests = pc.binary_join(pa.ListArray.from_arrays(offsets, bodies), ",")
            whole = pa.ListArray.from_arrays(pa.array([0, len(requests)], type=pa.int32()), requests)
            block = pc.binary_join(whole, ']}\n{"events":[')[0].as_buffer()
            text, count = b"".join((b'{"events":[', block, b"]}\n")), len(requests)  # one copy of the block
            del bodies, requests, whole, block
            _release_memory()  # the slice's pieces, before the next slice makes its own
            yield count, text

    def request_bodies(self, batch_size: int = MAX_BATCH, slice_size: int = 30_000) -> Iterator[str]:
        """Every request body `{"events":[...]}` in order, one string each."""
        for _, block in self.request_blocks(batch_size, slice_size):
            yield from block.decode("utf-8").split("\n")[:-1]

    def source_of(self, position: int) -> tuple[str, int]:
        row = self.events.iloc[position]
        return self.files[int(row[FILE])], int(row[ROW])

    def requests(self, batch_size: int = MAX_BATCH) -> int:
        return math.ceil(len(self.events) / batch_size)


# --- JSON building, vectorized -------------------------------------------------------------

_NEEDS_ESCAPE = r'["\\\x00-\x1f]'  # plain ASCII class: runs as an arrow (RE2) kernel
# Valid raw in JSON, but line breaks to str.splitlines(): escaped so every body stays one line.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _dumps(value: str) -> str:
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)


def _literals(values: pa.Array, *, safe: bool = False, prefix: str = "") -> pa.Array:
    """`prefix` and each string as a JSON string literal (null stays null). Values with quotes,
    backslashes, control or non-ASCII characters (few) go through json.dumps; the rest are quoted."""
    quoted = pc.binary_join_element_wise(prefix + '"', values, '"', "")
    if safe or len(values) == 0 or _plain_ascii(values):
        return quoted
    special = pc.or_(pc.match_substring_regex(values, _NEEDS_ESCAPE), pc.invert(pc.string_is_ascii(values)))
    special = pc.fill_null(special, False)
    if not pc.any(special).as_py():
        return quoted
    fixed = pa.array([prefix + _dumps(v) for v in pc.filter(values, special).to_pylist()], type=pa.string())
    return pc.replace_with_mask(quoted, special, fixed)


def _plain_ascii(values: pa.Array) -> bool:
    """True when no value holds a quote, a backslash, a control or a non-ASCII character: one
    numpy pass over the array's UTF-8 bytes, the common case for ids, SHAs and URLs."""
    bounds, raw = text_bytes(values)
    raw = raw[bounds[0] : bounds[-1]]
    if not len(raw):
        return True
    # min/max first (vectorized reductions, no temporary), then the two exact bytes
    return not (raw.max() >= 0x80 or raw.min() < 0x20 or (raw == 0x22).any() or (raw == 0x5C).any())


def _arrow_literals(values: pd.Series, *, safe: bool = False, prefix: str = "") -> pa.Array:
    """A column as an arrow array of `prefix` + JSON literal; categories are encoded once each."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = pa.array(values.cat.categories.astype(object), type=pa.string())
        codes = values.cat.codes.to_numpy()
        indices = pa.array(codes, mask=codes < 0, type=pa.int32())
        literals = _literals(categories, safe=safe, prefix=prefix)
        return pa.DictionaryArray.from_arrays(indices, literals).cast(pa.string())
    array = arrow_text(values)
    if isinstance(array, pa.ChunkedArray):  # one chunk (a slice of the ordered plan) needs no copy
        array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
    return _literals(array, safe=safe, prefix=prefix)


def json_strings(values: pd.Series) -> pd.Series:
    """Each text value as a JSON string literal (missing stays missing)."""
    return pd.Series(_arrow_literals(values), index=values.index, dtype=TEXT)


def event_bodies(events: pd.DataFrame, attributes: Sequence[str]) -> pd.Series:
    """The JSON text of each event, built column-wise by arrow kernels (no per-row Python) and
    joined in one pass. A column every event has whose values need no escaping goes into the join
    as it is, between its constant `,"name":"` and `"`; any other becomes one `,"name":"value"`
    literal per row first (null where the event lacks it, which the join leaves out)."""
    present = [name for name in attributes if events[name].notna().any()]
    # The first attribute goes without its comma when every event has it (the usual case);
    # otherwise the joined attributes lose their leading comma by a slice.
    bare_first = bool(present) and bool(events[present[0]].notna().all())
    parts: list[object] = []
    _add_piece(parts, events["timestamp"], f'{{"type":"{EVENT_TYPE}","timestamp":', safe=True)
    _add_piece(parts, events["entityId"], ',"entityId":')
    parts.append(',"attributes":{')
    if bare_first or not present:
        for i, name in enumerate(present):
            _add_piece(parts, events[name], f'{"" if i == 0 else ","}"{name}":', safe=name in DATE_ATTRIBUTES)
    else:
        pieces = [_arrow_literals(_sent_text(events[name]), safe=name in DATE_ATTRIBUTES, prefix=f',"{name}":')
                  for name in present]
        joined = pc.binary_join_element_wise(*pieces, "", null_handling="replace", null_replacement="")
        parts.append(pc.utf8_slice_codeunits(joined, 1))
    parts.append("}}")
    merged: list[object] = []
    for part in parts:  # neighbouring constants as one
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    body = pc.binary_join_element_wise(*merged, "", null_handling="replace", null_replacement="")
    return pd.Series(body, index=events.index, dtype=TEXT)


def _sent_text(values: pd.Series) -> pd.Series:
    """A column as the text it is sent as: instants as `YYYY-MM-DDTHH:MM:SSZ`, text as it is."""
    return format_utc(values) if pd.api.types.is_datetime64_any_dtype(values.dtype) else values


def _add_piece(parts: list[object], values: pd.Series, prefix: str, *, safe: bool = False) -> None:
    """One column's part of the bodies: the raw values between constants when every event has
    one and none needs escaping, else `prefix` + a JSON literal per row (null where missing).
    Instants (the timestamp, date attributes) are formatted here, a slice at a time."""
    values = _sent_text(values)
    if not isinstance(values.dtype, pd.CategoricalDtype) and not values.isna().to_numpy().any():
        array = arrow_text(values)
        if isinstance(array, pa.ChunkedArray):
            array = array.chunk(0) if array.num_chunks == 1 else array.combine_chunks()
        if safe or _plain_ascii(array):
            parts += [prefix + '"', array, '"']
            return
    parts.append(_arrow_literals(values, safe=safe, prefix=prefix))


# --- planning -------------------------------------------------------------------------------


def _text(frame: pd.DataFrame, name: str) -> pd.Series:
    """A field's values stripped, empty as NaN; a field the chunk lacks is all NaN."""
    if name not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype=TEXT)
    return pd.Series(stripped(arrow_text(frame[name])), index=frame.index, dtype=TEXT)


class _Chunk:
    """One chunk of rows being mapped: cached stripped columns and the first reason per row."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.columns: dict[str, pd.Series] = {}
        self.reason = pd.Series(np.nan, index=frame.index, dtype=object)

    def text(self, name: str) -> pd.Series:
        if name not in self.columns:
            self.columns[name] = _text(self.frame, name)
        return self.columns[name]

    def fail(self, why: pd.Series) -> None:
        if why.notna().to_numpy().any():
            self.reason = self.reason.where(self.reason.notna(), why)

    def value(self, rule: FieldRule) -> pd.Series:
        """The rule's raw value per row, before lookup and default."""
        index = self.frame.index
        if rule.value is not None:
            return pd.Series(rule.value, index=index, dtype=TEXT)
        if rule.template is not None:
            parts: list[object] = []
            for literal, name, _, _ in string.Formatter().parse(rule.template):
                if literal:
                    parts.append(literal)
                if name is not None:
                    parts.append(arrow_text(self.text(name)))
            # one kernel for the whole template; empty (null) if any placeholder is empty
            return pd.Series(pc.binary_join_element_wise(*parts, ""), index=index, dtype=TEXT)
        out = self.text(rule.sources[0])
        for name in rule.sources[1:]:
            out = out.fillna(self.text(name))
        return out

    def apply(self, rule: FieldRule) -> pd.Series:
        """The rule's final value: lookup, default; an unknown lookup value is a reason."""
        raw = self.value(rule)
        self.fail(nul_reasons(raw, rule.key))
        out = raw
        if rule.lookup is not None:
            out = map_values(raw, rule.lookup)
            unknown = raw.notna() & out.isna()
            if unknown.any() and rule.default is None:
                known = ", ".join(list(rule.lookup)[:8])
                self.fail(
                    (f"{rule.key}: " + raw[unknown].astype(str).map(cut).map(repr)
                     + f" is not in the lookup (known: {known}); add it to the lookup (line {rule.line}) or give a default")
                    .reindex(raw.index)
                )
        if rule.default is not None:
            out = out.fillna(rule.default)
        return out.astype(TEXT)


def _source_description(rule: FieldRule) -> str:
    if rule.template is not None:
        return f"template {rule.template!r}"
    return ", ".join(rule.sources)


def _check_fields(mapping: Mapping, seen: set[str], path: str) -> None:
    """A field the mapping reads that the file does not have at all is a mapping error."""
    missing: list[tuple[str, tuple[str, ...]]] = []
    for rule in mapping.rules():
        if rule.sources and not any(s in seen for s in rule.sources):
            missing.append((rule.key, rule.sources))
        if rule.template is not None:
            missing += [(rule.key, (f,)) for f in template_fields(rule.template) if f not in seen]
    missing += [(f"filter (line {f.line})", (f.field,)) for f in mapping.filters if f.field not in seen]
    missing += [("dedupe", (name,)) for name in mapping.dedupe if name not in seen]
    if missing:
        key, names = missing[0]
        columns = sorted(c for c in seen if not c.startswith("_"))
        have = ", ".join(repr(c) for c in columns[:40]) or "none"  # quoted: ' ts' shows its blank
        near = [c for c in columns if c.strip() in names or c.strip().lower() in {n.lower() for n in names}]
        if near:
            hint = (f"; the input has {near[0]!r}: remove the blanks after the delimiters in its header, "
                    f"or read from: {near[0]!r}" if near[0].strip() != near[0] else f"; did you mean {near[0]!r}?")
        elif key.startswith("attributes.") and mapping.path:
            hint = f"; or set it with --set {key.split('.', 1)[1]}=VALUE"
        else:
            hint = ""
        raise MappingError(
            f"{path}: {mapping.path}: {key} reads {' or '.join(names)!r}, which the input lacks (it has: {have}){hint}"
        )


def row_hashes(frame: pd.DataFrame, rows: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit hash of each row's source values (not of the mapping's output), so an event keeps
    its id when the mapping changes. A sum over the non-empty fields of hash(name, value): the
    order of columns and fields absent from a row (JSON) do not change it. `rows`: a mask of the
    rows wanted (the others are left 0, not hashed)."""
    total = np.zeros(len(frame), dtype=np.uint64)
    for name in frame.columns:
        if name == ROW:
            continue
        values = arrow_text(frame[name])
        present = pc.fill_null(pc.not_equal(values, ""), False).to_numpy(zero_copy_only=False)
        if rows is not None:
            present &= rows  # the others stay 0
        if present.any():
            named = pc.binary_join_element_wise(name, pc.filter(values, present), "\x1f")
            total[present] += pd.util.hash_array(named.to_numpy(zero_copy_only=False).astype(object), categorize=False)
    return total


def map_chunk(
    mapping: Mapping, frame: pd.DataFrame, file_index: int, *, with_row_hashes: bool = False
) -> tuple[pd.DataFrame, pd.Series, Counter]:
    """Map one chunk of rows. Returns (events, with VALID False on the invalid rows; their reasons;
    rows skipped per filter rule)."""
    chunk = _Chunk(frame)
    keep = pd.Series(True, index=frame.index)
    skipped: Counter = Counter()
    for rule in mapping.filters:
        values = chunk.text(rule.field).fillna("")
        if rule.op == "in":
            ok = values.isin(rule.values)
        elif rule.op == "not_in":
            ok = ~values.isin(rule.values)
        else:
            ok = search(values, rule.values[0])  # RE2: linear time
        drop = keep & ~ok
        if drop.any():
            skipped[rule.label] += int(drop.sum())
        keep &= ok
    if not keep.all():
        # only the fields the mapping reads, and the ones already stripped are kept, not redone
        needed = [c for c in frame.columns if c in mapping.fields or c == ROW]
        filtered = _Chunk(frame.loc[keep.to_numpy(), needed])
        filtered.columns = {name: column[keep] for name, column in chunk.columns.items()}
        chunk = filtered

    out = pd.DataFrame(index=chunk.frame.index)
    if mapping.entity is None:
        raise MappingError(f"{mapping.path}: no entityId rule; add `entityId: {{from: FIELD}}` or pass --entity-id")
    entity = chunk.apply(mapping.entity)
    chunk.fail(_missing(entity, mapping.entity, "entityId"))
    out["entityId"] = entity.astype("category")  # few distinct values: a small code per event

    ts_rule = mapping.timestamp
    raw_ts = chunk.apply(ts_rule)
    times, why = parse_datetimes(
        raw_ts, timezone=ts_rule.timezone or mapping.source.timezone, fmt=ts_rule.format, unit=ts_rule.unit
    )
    chunk.fail(why)
    chunk.fail(_missing(raw_ts, ts_rule, "timestamp"))
    out[TS] = times  # formatted as text once the plan is ordered (8 bytes a row until then)

    for name in ATTRIBUTES:
        rule = mapping.attributes.get(name)
        if rule is None:
            continue
        values = chunk.apply(rule)
        if name in DATE_ATTRIBUTES:
            parsed, why = parse_datetimes(
                values,
                timezone=rule.timezone or mapping.source.timezone,
                fmt=rule.format,
                unit=rule.unit,
                label=rule.key,
            )
            chunk.fail(why)
            values = parsed  # formatted with the timestamp, after ordering
        elif name == "status" and rule.lookup is None and rule.value is None:
            values, why = normalize_status(values, rule.key)
            chunk.fail(why)
        out[name] = values.astype("category") if name in ("env", "status") else values

    if mapping.dedupe:
        # the key's values joined by a unit separator: compared as text, hashed only for ids. A key
        # with an empty part is null: such a row is never folded into another.
        parts = [arrow_text(chunk.text(k)) for k in mapping.dedupe]
        out[KEY] = pd.Series(pc.binary_join_element_wise(*parts, "\x1f"), index=chunk.frame.index, dtype=TEXT)
    if mapping.report.commit_time is not None:  # read for the report only: an unreadable one is no row error
        rule = mapping.report.commit_time
        out[COMMIT_TS], _ = parse_datetimes(chunk.value(rule), timezone=rule.timezone or mapping.source.timezone,
                                            fmt=rule.format, unit=rule.unit, label=rule.key)
    if mapping.report.build:
        parts = [arrow_text(chunk.text(k)) for k in mapping.report.build]
        out[BUILD] = pd.Series(pc.binary_join_element_wise(*parts, "\x1f"), index=chunk.frame.index, dtype=TEXT)
    if with_row_hashes:  # for the ids of rows without a complete dedupe key (a key gives the id)
        rows = keep.to_numpy().copy()
        if KEY in out.columns:
            rows[rows] = out[KEY].isna().to_numpy()
        out[ROW_HASH] = row_hashes(frame, rows)[keep.to_numpy()]
    for name in reader_notes(mapping.source.format):
        if name in frame.columns:
            out[NOTE + name] = frame[name].to_numpy(dtype=object)[keep.to_numpy()] == "true"
    out[FILE] = np.full(len(out), file_index, dtype=np.int32)
    out[ROW] = chunk.frame[ROW].to_numpy()
    bad = chunk.reason.notna()
    # invalid rows stay in, marked: the plan drops them in its one final `take`, not a copy a chunk
    out[VALID] = ~bad.to_numpy()
    return out, chunk.reason[bad], skipped


def _missing(values: pd.Series, rule: FieldRule, what: str) -> pd.Series:
    why = pd.Series(np.nan, index=values.index, dtype=object)
    why[values.isna()] = f"{what} is empty ({_source_description(rule)}); every event needs one"
    return why


def _invalid_rows(frame: pd.DataFrame, reasons: pd.Series, path: str, unit: str) -> list[InvalidRow]:
    rows = frame.loc[reasons.index]
    records = rows.drop(columns=[ROW]).to_dict(orient="records")
    return [
        InvalidRow(path, int(row), unit, str(reason), {k: v for k, v in rec.items() if isinstance(v, str) and v != ""})
        for row, reason, rec in zip(rows[ROW], reasons, records)
    ]


def build_plan(
    paths: Sequence[str | Path],
    mapping: Mapping,
    *,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    with_row_hashes: bool = False,
    invalid_out: str | os.PathLike[str] | None = None,
) -> Plan:
    """Read every input through the mapping and return the ordered, deduplicated plan.
    `invalid_out`: a file to write every invalid row to (JSON Lines, with its values), streamed
    as the rows are found and moved into place when the plan is complete."""
    if not invalid_out:
        return _build_plan(paths, mapping, since, until, with_row_hashes, None)
    target = Path(invalid_out)
    temp = target.with_name(f".{target.name}.partial")
    try:
        sink = open(temp, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise UsageError(f"--invalid-out {invalid_out}: cannot write: {exc.strerror}") from None
    try:
        with sink:
            plan = _build_plan(paths, mapping, since, until, with_row_hashes, sink)
        os.replace(temp, target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UsageError(f"--invalid-out {invalid_out}: cannot write: {exc.strerror}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return plan


def _build_plan(
    paths: Sequence[str | Path],
    mapping: Mapping,
    since: pd.Timestamp | None,
    until: pd.Timestamp | None,
    with_row_hashes: bool,
    sink: IO[str] | None,
) -> Plan:
    report = PlanReport(invalid=InvalidRows(sink=sink))
    parts: list[pd.DataFrame] = []
    files = [str(p) for p in paths]
    check_distinct_inputs(files)
    source_hashes: list[list[np.ndarray]] = []  # with several inputs: to count rows copied between them
    reader = reader_for(mapping.source.format, [Path(p) for p in files], mapping.source)
    for index, path in enumerate(files):
        rows = good = 0
        seen: set[str] = set()
        source_hashes.append([])
        for chunk in reader(Path(path), mapping.source):
            frame = chunk.frame
            rows += len(frame) + len(chunk.bad) + chunk.empty
            good += len(frame)
            report.empty += chunk.empty
            source_facts.observe(report.facts.setdefault(path, {}), mapping.source.format, chunk)
            seen.update(frame.columns)
            if mapping.source.format == "csv":
                _check_fields(mapping, seen, path)
            for bad in chunk.bad:
                report.invalid.append(InvalidRow(path, bad.row, chunk.unit, bad.reason, {"text": bad.text} if bad.text else {}))
            if not len(frame):
                continue
            if len(files) > 1:
                source_hashes[-1].append(row_hashes(frame))
            _release_memory()  # what parsing the chunk freed, before mapping it takes more
            events, reasons, skipped = map_chunk(mapping, frame, index, with_row_hashes=with_row_hashes)
            report.filtered.update(skipped)
            if len(reasons):
                report.invalid.add_chunk(frame, reasons, path, chunk.unit)
            parts.append(events)
            _release_memory()
        if good and mapping.source.format != "csv":  # rows the reader could not read are reported as such
            _check_fields(mapping, seen, path)
        report.files.append((path, rows))
    for index, copied, earlier in copies_of_earlier([np.concatenate(h) if h else np.array([], "uint64") for h in source_hashes]):
        report.copies.append((files[index], copied, files[earlier]))

    events = _concat_columns(parts) if parts else _empty_events(mapping)
    del parts
    # Range, dedupe and order are folded into one `take`, so the plan is copied once.
    keep = events.pop(VALID).to_numpy(dtype=bool, copy=True)
    if since is not None or until is not None:
        ts = events[TS]
        inside = np.ones(len(events), dtype=bool)
        if since is not None:
            inside &= (ts >= since).to_numpy()
        if until is not None:
            inside &= (ts < until).to_numpy()
        report.outside_range = int((keep & ~inside).sum())  # of the valid rows
        keep &= inside
    folded = None
    if mapping.dedupe:
        dup = np.zeros(len(events), dtype=bool)
        keyed = keep & events[KEY].notna().to_numpy()
        seen_before, repeated = _first_and_repeated(events[KEY], keyed)
        dup[keyed] = seen_before
        report.duplicates = int(dup.sum())
        if report.duplicates:  # for the report: did the folded rows say the same as the kept ones?
            twice = np.zeros(len(events), dtype=bool)
            twice[keyed] = repeated
            folded = events.loc[twice, [c for c in (KEY, TS, "env", "status", "build_commit_sha", FILE, ROW)
                                        if c in events.columns]].reset_index(drop=True)
        keep &= ~dup
        _release_memory()  # the key's hash table, before the ordering copies the columns
    rows = np.flatnonzero(keep)
    order = rows[np.argsort(events[TS].array.asi8[rows], kind="stable")]
    keys = events.pop(KEY).take(order).reset_index(drop=True) if KEY in events.columns else None
    hashes = events.pop(ROW_HASH).to_numpy()[order] if ROW_HASH in events.columns else None
    for name in [c for c in events.columns if c.startswith(NOTE)]:
        flags = events.pop(name).to_numpy(dtype=object)[order] == True  # noqa: E712 (missing in some chunks)
        report.notes[name[len(NOTE):]] = int(flags.sum())
    categorical = [name for name in ("entityId", "env", "status") if name in events.columns]
    # few distinct values: coded before the take, so the take moves small codes, not text
    columns = {name: events[name].astype("category") if name in categorical else events[name] for name in events.columns}
    del events
    events = _take_columns(columns, order)
    # the times stay 8-byte instants (the same column as TS); each slice of bodies formats its own
    events.insert(1, "timestamp", events[TS])
    for name in categorical:  # the values of rows not planned (invalid, duplicates) go with them
        events[name] = events[name].cat.remove_unused_categories()
    report.planned = len(events)
    return Plan(mapping, files, events, report, keys, hashes, folded=folded)


def _first_and_repeated(values: pd.Series, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of the `rows` (a mask) of a text column, where no value is missing: (each value already seen
    in an earlier of those rows, each value there more than once). One arrow hash pass codes the
    whole column (no copy of the rows' text), numpy finds each code's first row among them."""
    array = arrow_text(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    codes = pc.fill_null(pc.dictionary_encode(array).indices, -1).to_numpy(zero_copy_only=False)[rows]
    seen_before = np.ones(len(codes), dtype=bool)
    if len(codes):
        _, first = np.unique(codes, return_index=True)
        seen_before[first] = False
    repeated = np.bincount(codes + 1)[codes + 1] > 1 if len(codes) else np.zeros(0, dtype=bool)
    return seen_before, repeated


def _concat_columns(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The chunks' events as one frame, joined a column at a time, each column taken out of the
    chunks as it is joined: the peak is the events once plus one column, not twice (pd.concat)."""
    names = list(dict.fromkeys(name for part in parts for name in part.columns))
    columns = {}
    for name in names:
        pieces = [
            part.pop(name) if name in part.columns else pd.Series(None, index=part.index, dtype=object)
            for part in parts
        ]
        if all(isinstance(piece.dtype, pd.CategoricalDtype) for piece in pieces):
            # each chunk codes its own values: joined on the union of them, sorted as astype() sorts
            try:
                joined = union_categoricals([piece.array for piece in pieces], sort_categories=True)
            except TypeError:  # older pandas: a chunk with no value has categories of another dtype
                joined = pd.concat([piece.astype(TEXT) for piece in pieces], ignore_index=True).astype("category")
            columns[name] = pd.Series(joined, copy=False)
        elif all(isinstance(piece.dtype, pd.StringDtype) for piece in pieces):
            # one contiguous array (pd.concat keeps the chunks, and a take of chunks copies them
            # into one first: another whole column at the peak)
            chunks = [chunk for piece in pieces for chunk in _chunks_of(arrow_text(piece))]
            columns[name] = pd.Series(pa.concat_arrays(chunks) if chunks else pa.array([], pa.string()), dtype=TEXT)
            del chunks
        else:
            columns[name] = pd.concat(pieces, ignore_index=True)
        del pieces
        _release_memory()
    parts.clear()
    return pd.DataFrame(columns, copy=False)


def _chunks_of(array: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return array.chunks if isinstance(array, pa.ChunkedArray) else [array]


def _take_columns(columns: dict[str, pd.Series], order: np.ndarray) -> pd.DataFrame:
    """The columns taken in `order`, two at a time on two threads (a take of text is memory-bound
    C++ that releases the GIL), each source column freed as soon as it is copied: the peak is the
    plan plus two columns, not the plan twice."""
    from concurrent.futures import ThreadPoolExecutor

    def take(column: pd.Series) -> pd.Series:
        return column.take(order).reset_index(drop=True)

    taken: dict[str, pd.Series] = {}
    names = list(columns)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backfill-take") as pool:
        for first in range(0, len(names), 2):
            pair = names[first : first + 2]
            for name, column in zip(pair, pool.map(take, [columns.pop(name) for name in pair])):
                taken[name] = column
            _release_memory()
    return pd.DataFrame({name: taken[name] for name in names}, copy=False)


def _release_memory() -> None:
    """Hand memory freed by arrow and by the C heap back to the system now rather than later, to
    keep the peak low (freed chunk temporaries otherwise stay in the process as free heap)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover
        return
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    """glibc, for malloc_trim (None elsewhere: musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def _empty_events(mapping: Mapping) -> pd.DataFrame:
    columns = {TS: pd.Series(dtype=UTC_DTYPE), "entityId": pd.Series(dtype=TEXT)}
    columns.update({
        name: pd.Series(dtype=UTC_DTYPE if name in DATE_ATTRIBUTES else TEXT) for name in mapping.attributes
    })
    if mapping.dedupe:
        columns[KEY] = pd.Series(dtype=TEXT)
    columns[ROW_HASH] = pd.Series(dtype="uint64")
    columns[VALID] = pd.Series(dtype=bool)
    columns[FILE] = pd.Series(dtype="int64")
    columns[ROW] = pd.Series(dtype="int64")
    return pd.DataFrame(columns)


def _event_ids(plan: Plan) -> pd.Series:
    """Stable ids, the same when the same import is planned again:

    - `k...`: the hash of the dedupe key, where the mapping has one and the row's key is complete;
    - `r...`: otherwise the hash of the row's source values (planned with row hashes, for import),
      so a changed mapping does not make an event look new;
    - `e...`: otherwise (a preview) the hash of the event itself.
    Identical `r`/`e` hashes get a counter: identical rows are distinct deployments.
    """
    n = len(plan.events)
    if plan.row_hashes is not None:
        digest = pd.Series(plan.row_hashes, dtype="uint64")
        prefix = "r"
    else:
        hashes = [
            pd.util.hash_pandas_object(plan.bodies(start, start + 30_000).astype(object), index=False).to_numpy()
            for start in range(0, n, 30_000)
        ]
        digest = pd.Series(np.concatenate(hashes) if hashes else np.array([], dtype="uint64"), dtype="uint64")
        prefix = "e"
    ids = _hex(digest, prefix)
    keyed = plan.keys.notna() if plan.keys is not None else pd.Series(False, index=digest.index)
    plain = digest[~keyed.to_numpy()]  # keyed events take their key's id (their row hash is not computed)
    repeat = plain.groupby(plain).cumcount().reindex(digest.index, fill_value=0)
    ids[repeat > 0] = ids[repeat > 0] + "-" + repeat[repeat > 0].astype(str).astype(TEXT)
    if plan.keys is not None:
        if keyed.any():
            ids[keyed] = _hex(pd.util.hash_pandas_object(plan.keys[keyed].astype(object), index=False, categorize=False), "k")
    return ids.astype(TEXT)


def _hex(hashes: pd.Series, prefix: str = "") -> pd.Series:
    """64-bit hashes as `prefix` + 16 hex digits, vectorized: bytes -> nibbles -> a lookup of hex
    digits, written into one buffer that becomes an arrow string array as it is (no Python text)."""
    raw = hashes.to_numpy(dtype="uint64").astype(">u8").view(np.uint8).reshape(-1, 8)
    lead = prefix.encode("ascii")
    width = len(lead) + 16
    text = np.empty((len(raw), width), dtype=np.uint8)
    text[:, : len(lead)] = np.frombuffer(lead, dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text[:, len(lead) :: 2] = digits[raw >> 4]
    text[:, len(lead) + 1 :: 2] = digits[raw & 0x0F]
    offsets = pa.py_buffer(np.arange(0, width * (len(raw) + 1), width, dtype=np.int32))
    strings = pa.StringArray.from_buffers(len(raw), offsets, pa.py_buffer(text))
    return pd.Series(strings, index=hashes.index, dtype=TEXT)

"""The figures of the preview report, computed column-wise from a plan's events (no per-event Python).

    plan.events -> seconds, ISO week (Monday 00:00 UTC), month, group (entity + environment)
                -> per group and for all: weekly and monthly counts, medians, DORA band,
                   change failure rate per month, lead time (where commit times exist)
                -> warnings, each with a count and the first examples (file, row); for an export
                   written by `backfill fetch`, truncation as its completeness checks found it
                   (backfill.fetch.record), else guessed from the file's pages (source_facts)

The result is plain data (dicts, lists, numbers, text), the one source the terminal text, the JSON
file and the HTML page are rendered from, so all three show the same numbers. `DEFINITIONS` says
what each figure is computed from; the renderers print it beside the figure.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from backfill.fetch import record as fetch_record
from backfill.normalize import arrow_text
from backfill.plan import BUILD, COMMIT_TS, FILE, KEY, ROW, TS, Plan

DAY = 86_400
EARLIEST = int(pd.Timestamp("2005-01-01", tz="UTC").timestamp())  # before this: likely a unit or parsing error
EXAMPLES = 5  # examples kept per warning (the HTML page lists up to LISTED for the lists the issue asks for)
LISTED = 200
BUSY_MONTH = 4  # a month with at least this many deployments (about one a week) is busy
MANY_ENVS = 6  # more distinct environment names than this: suggest a lookup
JENKINS_CAP = 100  # the `builds` field of Jenkins' job API holds the newest 100 builds only
GITLAB_PAGE = 100  # per_page maximum of GitLab's API
JENKINS_LATE_START = 10  # a job whose lowest build number is above this: earlier builds are missing
ALL = "all"

DEFINITIONS: dict[str, str] = {
    "weeks": "ISO weeks, Monday 00:00 to Monday 00:00 UTC, labelled YYYY-Www (the ISO year, so 2020-W53 "
             "runs into January 2021); every planned event is one deployment, counted in the week of its timestamp",
    "months": "calendar months in UTC, counted from the planned events' timestamps",
    "median_per_week": "median of the weekly deployment counts over every ISO week from the group's first "
                       "deployment to its last, weeks without deployments counted as 0",
    "median_per_month": "median of the monthly deployment counts over every month from the group's first "
                        "deployment to its last, months without deployments counted as 0",
    "band": "DORA deployment frequency band (the 2019 State of DevOps Report's) from the medians: on demand "
            "(multiple deploys per day: median per week above 7), between once per day and once per week (median "
            "per week 1 to 7), between once per week and once per month (median per month at least 1), else less "
            "than once per month",
    "change_failure_rate": "failed deployments / all deployments (status failed over all planned events), "
                           "per month and over the whole history",
    "lead_time": "deployment timestamp minus the deployed commit's time (the mapping's report.commit_time), "
                 "over successful deployments that have one; commits made after their deployment are left out",
}

BANDS = (
    ("on demand (multiple deploys per day)", "median per week > 7"),
    ("between once per day and once per week", "median per week >= 1"),
    ("between once per week and once per month", "median per month >= 1"),
    ("less than once per month", "median per month < 1"),
)


# --- columns --------------------------------------------------------------------------------

class _Columns:
    """The plan's events as numpy arrays in time order: seconds, day, ISO week and month numbers,
    a dense code per entity and environment pair ("group"). Views of the plan's columns where
    possible and 32-bit numbers elsewhere, so that the figures add little to a large plan's memory."""

    def __init__(self, plan: Plan):
        events = plan.events
        self.plan = plan
        self.n = len(events)
        secs = _seconds(events[TS])
        self.order: np.ndarray | None = None  # the planner sorts oldest first; a plan built otherwise is sorted here
        if self.n > 1 and not bool((secs[1:] >= secs[:-1]).all()):  # as the planner orders: time, file, row
            self.order = np.lexsort((events[ROW].to_numpy(), events[FILE].to_numpy(), secs))
            secs = secs[self.order]
        self.secs = secs
        self.entity = _categories(events, "entityId", self.order)
        self.env = _categories(events, "env", self.order)
        width = len(self.env[0]) + 1
        combined = self.entity[1].astype(np.int64) * width + self.env[1] + 1  # int64 from the first term on
        size = max(1, len(self.entity[0])) * width
        if size <= 4 * self.n + 4096:
            self.pairs = np.flatnonzero(np.bincount(combined, minlength=size))  # the pairs present, as entity*width+env+1
            remap = np.zeros(size, dtype=np.int32)
            remap[self.pairs] = np.arange(len(self.pairs), dtype=np.int32)
            self.group = remap[combined]
        else:
            codes, self.pairs = pd.factorize(combined, sort=True)
            self.group = codes.astype(np.int32)
        del combined
        self.groups = len(self.pairs)
        self.failed = self._reorder(
            (events["status"] == "failed").fillna(False).to_numpy(dtype=bool) if "status" in events.columns
            else np.zeros(self.n, dtype=bool))
        self.file = events[FILE].to_numpy()
        self.row = events[ROW].to_numpy()

    def periods(self) -> tuple[np.ndarray, np.ndarray]:
        """Each event's ISO week (weeks since Monday 1969-12-29; 1970-01-01 was a Thursday) and month
        (since 1970-01), made when needed and dropped after counting."""
        day = self.secs // DAY
        day += 3
        day //= 7
        weekno = day.astype(np.int32)
        del day
        return weekno, self.secs.view("datetime64[s]").astype("datetime64[M]").astype(np.int32)

    def _reorder(self, values: np.ndarray) -> np.ndarray:
        return values if self.order is None else values[self.order]

    def text(self, column: str) -> pa.StringArray:
        """A text column of the plan as one arrow string array, in time order."""
        array = arrow_text(self.plan.events[column])
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        return array if self.order is None else array.take(pa.array(self.order))

    def group_name(self, code: int) -> tuple[str, str | None]:
        width = len(self.env[0]) + 1
        ent, env = divmod(int(self.pairs[int(code)]), width)
        return str(self.entity[0][ent]), (str(self.env[0][env - 1]) if env else None)

    def group_ends(self) -> tuple[np.ndarray, np.ndarray]:
        """The position of each group's first and of its last event."""
        positions = np.arange(self.n)
        first = np.full(self.groups, self.n, dtype=np.int64)
        np.minimum.at(first, self.group, positions)
        last = np.zeros(self.groups, dtype=np.int64)
        np.maximum.at(last, self.group, positions)
        return first, last

    def where(self, position: int) -> dict[str, Any]:
        index = int(position) if self.order is None else int(self.order[int(position)])
        return {"file": self.plan.files[int(self.file[index])], "row": int(self.row[index])}


def _seconds(ts: pd.Series) -> np.ndarray:
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    if ts.dt.unit != "s":
        ts = ts.dt.as_unit("s")
    return np.asarray(ts.array.asi8, dtype=np.int64)  # epoch seconds (UTC): a view of the plan's column


def _categories(events: pd.DataFrame, column: str, order: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    if column not in events.columns:
        return [], np.full(len(events), -1, dtype=np.int32)
    values = events[column]
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")
    codes = values.cat.codes.to_numpy()  # int8 for a few names: kept so
    return [str(c) for c in values.cat.categories], codes if order is None else codes[order]


# --- repeated values, by a fast 64-bit key and then exactly --------------------------------

_WORDS = 16  # a value's first 128 bytes (and its length) make its fast key; equal fast keys are compared in full
_CHUNK = 1 << 16  # values keyed at a time, so the temporary arrays stay small
_MIX = np.random.default_rng(20240615).integers(0, 2**64 - 1, _WORDS + 2, dtype=np.uint64, endpoint=True) | np.uint64(1)


def _fast_keys(text: pa.StringArray, scope: np.ndarray | None) -> np.ndarray | None:
    """A 32-bit key per value (and scope code): equal values, equal keys; distinct values seldom
    share one. Sums of the value's 8-byte words times fixed odd numbers, read from arrow's buffers
    as a matrix: values of one length as they are, others (ASCII) padded with NUL to one width.
    None when the values are neither (the caller compares them exactly)."""
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * text.offset)
    valid = text.is_valid().to_numpy(zero_copy_only=False) if text.null_count else None
    lengths = np.diff(offsets)
    if valid is not None and lengths[~valid].any():  # arrow lets a missing value have bytes; ours have none
        return None
    present = lengths if valid is None else lengths[valid]
    key = np.zeros(n, dtype=np.uint32)
    if not len(present):
        return key
    shortest, longest = int(present.min()), int(present.max())
    del present
    if shortest != longest and (longest > 8 * _WORDS or pc.all(pc.string_is_ascii(text)).as_py() is False):
        return None
    width = longest if shortest == longest else -(-longest // 8) * 8
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        rows = slice(start, stop) if valid is None else start + np.flatnonzero(valid[start:stop])
        if not width:  # only empty values
            matrix = np.zeros((0, 0), dtype=np.uint8)
        elif shortest == longest:  # the values' bytes lie one after another in the data buffer: a matrix as is
            matrix = np.frombuffer(text.buffers()[2], dtype=np.uint8)[offsets[start]:offsets[stop]].reshape(-1, width)
        else:
            padded = pc.utf8_rpad(text.slice(start, stop - start), width, "\0")
            ends = np.frombuffer(padded.buffers()[1], dtype=np.int32, count=len(padded) + 1, offset=4 * padded.offset)
            if ends[-1] - ends[0] != width * (len(padded) - padded.null_count):
                return None
            matrix = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[ends[0]:ends[-1]].reshape(-1, width)
        hashed = lengths[rows].astype(np.uint64) * _MIX[0]
        if scope is not None:
            hashed += scope[rows].astype(np.uint64) * _MIX[-1]
        words = matrix.view("<u8") if width % 8 == 0 else None  # 8-byte words as they lie, else copied out
        for index in range(min(_WORDS, -(-width // 8))):
            if words is not None:
                word = words[:, index]
            else:
                block = np.zeros((len(matrix), 8), dtype=np.uint8)
                part = matrix[:, 8 * index:8 * index + 8]
                block[:, :part.shape[1]] = part
                word = block.view("<u8")[:, 0]
            hashed += word * _MIX[index + 1]
        key[rows] = hashed >> np.uint64(32)
    return key


def _maybe_repeated(key: np.ndarray) -> np.ndarray:
    """Positions whose key occurs more than once."""
    ordered = np.sort(key)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return np.zeros(0, dtype=np.int64)
    values = np.unique(ordered[1:][same])
    del ordered, same
    buckets = np.zeros(1 << 20, dtype=bool)  # a first look by the top 20 bits, then the few in full
    buckets[values >> np.uint32(12)] = True
    near = np.flatnonzero(buckets[key >> np.uint32(12)])
    return near[np.isin(key[near], values)]


def _repeated(cols: _Columns, column: str, *, scoped: bool) -> tuple[np.ndarray, np.ndarray, pa.StringArray]:
    """The events whose value of a text column occurs more than once (within their entity and
    environment when `scoped`): positions ordered by group, value and time, a run number per
    position (equal for one value), and the column. Missing values never repeat. A fast key finds
    the few candidates; only they are compared in full."""
    text = cols.text(column)
    key = _fast_keys(text, cols.group if scoped else None)
    candidates = np.arange(cols.n) if key is None else _maybe_repeated(key)
    del key
    if text.null_count and len(candidates):
        candidates = candidates[text.take(pa.array(candidates)).is_valid().to_numpy(zero_copy_only=False)]
    if len(candidates) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), text
    encoded = pc.dictionary_encode(text.take(pa.array(candidates)))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    exact = cols.group[candidates] * np.int64(len(encoded.dictionary) + 1) + codes if scoped else codes
    positions, runs = _repeats(exact)
    return candidates[positions], runs, text


def iso_text(secs: int) -> str:
    return datetime.fromtimestamp(int(secs), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _week_label(day: int) -> tuple[str, str]:
    date = datetime.fromtimestamp(int(day) * DAY, tz=timezone.utc).date()
    year, week, _ = date.isocalendar()
    return f"{year}-W{week:02d}", date.isoformat()


def _month_label(month: int) -> str:
    return str(np.datetime64(int(month), "M"))


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else 0.0


def band(median_week: float, median_month: float) -> str:
    if median_week > 7:  # more than one a day: "multiple deploys per day"; once a day is the next band
        return BANDS[0][0]
    if median_week >= 1:
        return BANDS[1][0]
    if median_month >= 1:
        return BANDS[2][0]
    return BANDS[3][0]


# --- figures --------------------------------------------------------------------------------

class _Counts:
    """Events per period (ISO week or month) for every group at once: group g's counts, from its
    first period to its last, are `total[base[g]:base[g + 1]]` (and `failed[...]`), starting at
    period `first[g]`. One bincount over all events, no sort (events are in time order, so a
    group's first and last periods are those of its first and last events)."""

    def __init__(self, cols: _Columns, period: np.ndarray, ends: tuple[np.ndarray, np.ndarray]):
        self.first = period[ends[0]].astype(np.int64)
        self.base = np.zeros(cols.groups + 1, dtype=np.int64)
        np.cumsum(period[ends[1]] - self.first + 1, out=self.base[1:])
        cell = (self.base[:-1] - self.first)[cols.group]
        cell += period
        cells = int(self.base[-1])
        self.total = np.bincount(cell, minlength=cells)
        self.failed = np.bincount(cell[cols.failed], minlength=cells)
        del cell
        self.all_first = int(period[0])
        span = int(period[-1]) - self.all_first + 1
        self.all_total, self.all_failed = np.zeros(span, dtype=np.int64), np.zeros(span, dtype=np.int64)
        for g in range(cols.groups):  # all events: the groups' counts added up
            at, total, failed = self.of(g)
            self.all_total[at - self.all_first:at - self.all_first + len(total)] += total
            self.all_failed[at - self.all_first:at - self.all_first + len(total)] += failed

    def of(self, g: int | None) -> tuple[int, np.ndarray, np.ndarray]:
        """(first period, counts, failed counts) of group g, or of all events for None."""
        if g is None:
            return self.all_first, self.all_total, self.all_failed
        span = slice(int(self.base[g]), int(self.base[g + 1]))
        return int(self.first[g]), self.total[span], self.failed[span]


def _series(weeks: _Counts, months: _Counts, g: int | None, first_last: tuple[int, int],
            lead: np.ndarray | None) -> dict[str, Any]:
    """The figures of one group (None: all events)."""
    first_week, total_w, failed_w = weeks.of(g)
    first_month, total_m, failed_m = months.of(g)
    labels = [_week_label(7 * (first_week + i) - 3) for i in range(len(total_w))]
    per_week, per_month = _median(total_w), _median(total_m)
    n, n_failed = int(total_m.sum()), int(failed_m.sum())
    out: dict[str, Any] = {
        "deployments": n,
        "failed": n_failed,
        "first": iso_text(first_last[0]),
        "last": iso_text(first_last[1]),
        "weeks_spanned": len(total_w),
        "months_spanned": len(total_m),
        "median_per_week": per_week,
        "median_per_month": per_month,
        "band": band(per_week, per_month),
        "change_failure_rate": round(n_failed / n, 4),
        "weeks": [
            {"week": label, "start": start, "deployments": int(t), "success": int(t - f), "failed": int(f)}
            for (label, start), t, f in zip(labels, total_w.tolist(), failed_w.tolist())
        ],
        "months": [
            {"month": _month_label(first_month + i), "deployments": int(t), "failed": int(f),
             "change_failure_rate": round(f / t, 4) if t else None}
            for i, (t, f) in enumerate(zip(total_m.tolist(), failed_m.tolist()))
        ],
    }
    if lead is not None:
        out["lead_time"] = {
            "deployments_with_commit_time": int(len(lead)),
            "median_hours": round(float(np.median(lead)), 2) if len(lead) else None,
            "p90_hours": round(float(np.percentile(lead, 90)), 2) if len(lead) else None,
        }
    return out


def _lead_hours(cols: _Columns) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, int]]:
    """Hours from commit to deployment of the usable events (successful, commit not after the
    deployment), their groups, and what was left out."""
    events = cols.plan.events
    if COMMIT_TS not in events.columns:
        return None, None, {}
    commit = events[COMMIT_TS]
    has = cols._reorder(commit.notna().to_numpy())
    csecs = np.zeros(cols.n, dtype=np.int64)
    if has.any():
        csecs[has] = cols._reorder(_seconds(commit.fillna(pd.Timestamp(0, tz="UTC"))))[has]
    hours = (cols.secs - csecs) / 3600.0
    del csecs
    negative = has & (hours < 0)
    usable = has & ~negative & ~cols.failed
    return hours[usable], cols.group[usable], {
        "with_commit_time": int(has.sum()), "commit_after_deployment": int(negative.sum()),
        "failed_left_out": int((has & cols.failed).sum())}


def _by_group(values: np.ndarray, groups: np.ndarray, count: int) -> list[np.ndarray]:
    """values split by group code (0..count-1), each part in its original order."""
    order = np.argsort(groups.astype(np.uint16) if count <= 2**16 else groups, kind="stable")  # radix for small codes
    ends = np.cumsum(np.bincount(groups, minlength=count))
    return np.split(values[order], ends[:-1])


def compute(plan: Plan, *, now: datetime | None = None) -> dict[str, Any]:
    """Every figure and warning of the report, as plain data (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    cols = _Columns(plan)
    lead, lead_groups, lead_notes = _lead_hours(cols)
    groups: list[dict[str, Any]] = []
    overall: dict[str, Any] | None = None
    months: _Counts | None = None
    if cols.n:
        ends = cols.group_ends()
        weekno, month = cols.periods()
        weeks, months = _Counts(cols, weekno, ends), _Counts(cols, month, ends)
        del weekno, month
        lowest, highest = cols.secs[ends[0]], cols.secs[ends[1]]
        leads = _by_group(lead, lead_groups, cols.groups) if lead is not None else [None] * cols.groups
        overall = {"entity": ALL, "env": None,
                   **_series(weeks, months, None, (int(cols.secs[0]), int(cols.secs[-1])), lead)}
        for g in range(cols.groups):
            entity, env = cols.group_name(g)
            groups.append({"entity": entity, "env": env,
                           **_series(weeks, months, g, (int(lowest[g]), int(highest[g])), leads[g])})
        groups.sort(key=lambda g: (-g["deployments"], g["entity"], g["env"] or ""))
    report = plan.report
    return {
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": [{"file": path, "rows": rows} for path, rows in report.files],
        "mapping": plan.mapping.path,
        "rows": {"read": report.rows_read, "planned": report.planned, "filtered": sum(report.filtered.values()),
                 "duplicates": report.duplicates, "invalid": len(report.invalid),
                 "outside_range": report.outside_range, "empty": report.empty},
        "definitions": DEFINITIONS,
        "lead_time_source": _lead_source(plan, lead_notes),
        "all": overall,
        "groups": groups,
        "warnings": warnings(cols, plan, now, lead_notes, months),
    }


def _lead_source(plan: Plan, notes: dict[str, int]) -> str:
    rule = plan.mapping.report.commit_time
    if rule is None:
        return "not computed: the mapping has no report.commit_time (see README, 'The preview report')"
    return (f"report.commit_time ({', '.join(rule.sources)}): {notes.get('with_commit_time', 0)} planned events "
            f"have one; {notes.get('failed_left_out', 0)} failed deployments and "
            f"{notes.get('commit_after_deployment', 0)} with a commit time after the deployment left out")


# --- warnings -------------------------------------------------------------------------------

def _warning(code: str, title: str, count: int, advice: str, examples: list[dict[str, Any]],
             listed: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"code": code, "title": title, "count": int(count), "advice": advice,
            "examples": examples[:EXAMPLES], **({"listed": listed[:LISTED]} if listed is not None else {})}


def warnings(cols: _Columns, plan: Plan, now: datetime, lead_notes: dict[str, int],
             months: _Counts | None = None) -> list[dict[str, Any]]:
    found = [
        *_time_range(cols, now), *_same_second(cols), *_same_build(cols, plan), *_missing_sha(cols, plan),
        *_env_names(cols), *_truncated(plan), *_redeployments(cols, plan), *_gaps(cols, months),
        *_commit_field(plan, lead_notes), *_first_deployments(cols),
    ]
    return [w for w in found if w["count"]]


def _time_range(cols: _Columns, now: datetime) -> list[dict[str, Any]]:
    limit = int(now.timestamp())
    future = np.flatnonzero(cols.secs > limit)
    early = np.flatnonzero(cols.secs < EARLIEST)
    out = []
    for code, title, rows in (("future", "timestamps in the future", future),
                              ("before_2005", "timestamps before 2005", early)):
        out.append(_warning(code, title, len(rows),
                            "likely a parsing or unit error (seconds read as milliseconds, a day-month swap, a "
                            "wrong time zone); check the timestamp rule's format and unit",
                            [{**cols.where(p), "detail": iso_text(cols.secs[p])} for p in rows[:EXAMPLES]]))
    return out


def _repeats(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the events whose key occurs more than once, ordered by key and then position,
    and a run number per position (equal for equal keys). Keys below 0 (missing) never repeat."""
    if len(key) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    same = ordered[1:] == ordered[:-1]
    same &= ordered[1:] >= 0
    after, before = np.r_[False, same], np.r_[same, False]
    runs = np.cumsum(~after)
    inside = after | before
    return order[inside], runs[inside]


def _same_second(cols: _Columns) -> list[dict[str, Any]]:
    # events are in time order: only events in the same second as a neighbour can share a second
    same = cols.secs[1:] == cols.secs[:-1]
    near = np.flatnonzero(np.r_[same, False] | np.r_[False, same])
    key = cols.group[near] * np.int64(1 << 34) + (cols.secs[near] + (1 << 32))  # years 1834-2514 fit in 34 bits
    positions, runs = _repeats(key)
    positions = near[positions]
    examples = []
    for run in np.unique(runs)[:EXAMPLES]:
        members = positions[runs == run]
        entity, env = cols.group_name(cols.group[members[0]])
        rows = ", ".join(f"{cols.where(p)['file']} row {cols.where(p)['row']}" for p in members[1:4])
        examples.append({**cols.where(members[0]), "detail": f"{len(members)} events of {entity} / {env or '-'} "
                                                            f"at {iso_text(cols.secs[members[0]])}, also {rows}"})
    return [_warning("same_second", "two or more events of one entity and environment in the same second",
                     len(positions), "probably one deployment seen twice (overlapping pages or exports without a "
                     "dedupe key); add a `dedupe:` key to the mapping, or remove the overlap", examples)]


def _value_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in (TS, "env", "status", "build_commit_sha") if c in frame.columns]


def _differing(frame: pd.DataFrame, key: str | list[str]) -> pd.Series:
    """Per key value: does any of the event values differ between its rows?"""
    values = _value_columns(frame)
    keys = [key] if isinstance(key, str) else key
    counts = frame[[*keys, *values]].astype({c: object for c in values}).groupby(keys, sort=False).nunique(dropna=False)
    return (counts > 1).any(axis=1)


def _same_build(cols: _Columns, plan: Plan) -> list[dict[str, Any]]:
    events = plan.events
    examples: list[dict[str, Any]] = []
    count = 0
    column = BUILD if BUILD in events.columns else "build_id" if "build_id" in events.columns else None
    if column is not None and cols.n:
        # report.build names a build on its own; a build_id is a number within one entity's environment
        positions, runs, text = _repeated(cols, column, scoped=column != BUILD)
        if len(positions):
            source = positions if cols.order is None else cols.order[positions]
            frame = events.iloc[source][_value_columns(events)].reset_index(drop=True)
            frame["_run"], frame["_p"] = runs, positions
            differs = _differing(frame, "_run")
            count += int(differs.sum())
            for run in differs.index[differs.to_numpy()][:EXAMPLES]:
                first, *others = frame["_p"][frame["_run"] == run].to_numpy()
                also = ", ".join(f"row {cols.where(p)['row']}" for p in others[:3])
                entity, env = cols.group_name(cols.group[first])
                owner = f" of {entity} / {env or '-'}" if column != BUILD else ""
                examples.append({**cols.where(first), "detail": f"build {text[int(first)].as_py().replace(chr(31), ', ')!r}"
                                 f"{owner} planned {len(others) + 1} times with different values (also {also})"})
    folded = plan.folded
    if folded is not None and len(folded):
        differs = _differing(folded, KEY)
        count += int(differs.sum())
        bad = folded[folded[KEY].isin(differs.index[differs.to_numpy()])]
        for key, rows in itertools.islice(bad.groupby(KEY, sort=False), EXAMPLES):
            kept, other = rows.iloc[0], rows.iloc[1]
            changed = [c for c in _value_columns(rows) if str(kept[c]) != str(other[c])]
            what = ", ".join(f"{'timestamp' if c == TS else c} {_short(kept[c])} vs {_short(other[c])}" for c in changed)
            examples.append({"file": plan.files[int(other[FILE])], "row": int(other[ROW]),
                             "detail": f"folded by dedupe ({', '.join(plan.mapping.dedupe)} = "
                                       f"{key.replace(chr(31), ', ')}) into row {int(kept[ROW])}, "
                                       f"which says otherwise: {what}"})
    return [_warning("same_build", "the same build twice with different values", count,
                     "one build should be one deployment: check for re-exported or edited rows; with dedupe the "
                     "first row is kept and the others are dropped", examples)]


def _short(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return "(none)" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _missing_sha(cols: _Columns, plan: Plan) -> list[dict[str, Any]]:
    events = plan.events
    if not cols.n:
        return []
    missing = (cols._reorder(events["build_commit_sha"].isna().to_numpy()) if "build_commit_sha" in events.columns
               else np.ones(cols.n, dtype=bool))
    ent, entities = cols.entity[1], len(cols.entity[0])
    at = np.flatnonzero(missing)
    totals = np.bincount(ent, minlength=entities)
    lacking = np.bincount(ent[at], minlength=entities)
    first = np.full(entities, cols.n, dtype=np.int64)
    np.minimum.at(first, ent[at], at)
    examples = []
    for code in np.flatnonzero(lacking):
        examples.append({**cols.where(first[code]), "detail": f"{cols.entity[0][code]}: {lacking[code]} of "
                         f"{totals[code]} events ({100 * lacking[code] / totals[code]:.1f}%) without build_commit_sha"})
    return [_warning("no_commit_sha", "events without build_commit_sha", len(at),
                     "lead time for changes cannot be computed for them; map build_commit_sha from the export's "
                     "commit field", examples)]


_SYNONYMS = {
    "production": ("prod", "prd", "production", "live", "prodn"),
    "staging": ("stg", "stage", "staging", "preprod", "preproduction"),
    "development": ("dev", "develop", "development"),
    "test": ("test", "testing", "tst", "qa"),
    "uat": ("uat", "acceptance"),
}
_CANONICAL = {alias: name for name, aliases in _SYNONYMS.items() for alias in aliases}


def _env_key(name: str) -> str:
    plain = re.sub(r"[^0-9a-z]", "", name.lower())
    return _CANONICAL.get(plain, plain)


def _env_names(cols: _Columns) -> list[dict[str, Any]]:
    names = cols.env[0]
    if not names:
        return []
    counts = np.bincount(cols.env[1][cols.env[1] >= 0], minlength=len(names))
    present = [(name, int(n)) for name, n in zip(names, counts) if n]
    alike: dict[str, list[tuple[str, int]]] = {}
    for name, n in present:
        alike.setdefault(_env_key(name), []).append((name, n))
    examples = []
    for key, members in alike.items():
        if len(members) > 1:
            first = int(np.flatnonzero(cols.env[1] == names.index(members[1][0]))[0])
            listed = ", ".join(f"{name!r} ({n})" for name, n in members)
            examples.append({**cols.where(first), "detail": f"{listed} look like one environment ({key})"})
    out = [_warning("env_lookalike", "environment names that look alike", len(examples),
                    "DevGrid treats each name as its own environment; map them to one name with a lookup "
                    "(attributes.env.lookup)", examples)]
    if len(present) > MANY_ENVS:
        listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(present, key=lambda p: -p[1]))
        out.append(_warning("many_envs", f"more than {MANY_ENVS} distinct environment names", len(present),
                            "suggest a lookup that maps them to the few environments you report on",
                            [{"file": "", "row": 0, "detail": listed}]))
    return out


def _truncated(plan: Plan) -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = []
    jobs_seen: dict[str, list] = {}
    for path, facts in plan.report.facts.items():
        fetched = fetch_record.read(path)
        if fetched is not None:  # written by `backfill fetch`, which checked it against the API's totals
            examples += [{"file": path, "row": 0, "detail": f"backfill fetch found fewer than the API's totals: {text}; "
                          "rerun the fetch"} for text in fetched["shortfalls"]]
            examples += [{"file": path, "row": 0, "detail": f"backfill fetch: {text}"} for text in fetched["gaps"]]
            continue
        for job, (size, low, _high) in facts.get("jenkins_jobs", {}).items():
            jobs_seen.setdefault(job, [path, 0, math.nan])
            entry = jobs_seen[job]
            entry[1] += size
            entry[2] = low if math.isnan(entry[2]) else min(entry[2], low) if not math.isnan(low) else entry[2]
        pages = facts.get("gitlab_pages", [])
        if pages and pages[-1] == GITLAB_PAGE:
            examples.append({"file": path, "row": 0, "detail": f"its last page holds exactly {GITLAB_PAGE} "
                             f"deployments and no page follows ({len(pages)} pages): fetch the next page"})
        runs = facts.get("github_runs", [])
        total, held = max((int(t) for t, _ in runs), default=0), sum(n for _, n in runs)
        if total > held:
            examples.append({"file": path, "row": 0, "detail": f"total_count is {total} but the file holds {held} "
                             f"runs in {len(runs)} page{'s' if len(runs) != 1 else ''}: fetch the remaining pages "
                             "(gh api --paginate)"})
    for job, (path, size, low) in jobs_seen.items():
        if size == JENKINS_CAP:
            examples.append({"file": path, "row": 0, "detail": f"job {job!r} has exactly {JENKINS_CAP} builds, the "
                             "cap of the `builds` field: export `allBuilds` for the whole history"})
        elif not math.isnan(low) and low > JENKINS_LATE_START:
            examples.append({"file": path, "row": 0, "detail": f"job {job!r}: the history starts at #{int(low)}: "
                             f"builds #1-#{int(low) - 1} are not in the export (discarded by Jenkins, or not exported)"})
    return [_warning("truncated", "likely truncated exports", len(examples),
                     "DevGrid will show no deployments before the export's first one; export the full history "
                     "if you have it", examples)]


def _redeployments(cols: _Columns, plan: Plan) -> list[dict[str, Any]]:
    if "build_commit_sha" not in plan.events.columns or not cols.n:
        return []
    positions, runs, sha = _repeated(cols, "build_commit_sha", scoped=True)  # by group and SHA, then oldest first
    again = np.r_[False, runs[1:] == runs[:-1]] if len(runs) else np.zeros(0, dtype=bool)
    previous = np.r_[positions[:1], positions[:-1]]
    listed = []
    later, earlier = positions[again], previous[again]
    by_time = np.argsort(later, kind="stable")[:LISTED]  # listed oldest first
    for p, prev in zip(later[by_time], earlier[by_time]):
        entity, env = cols.group_name(cols.group[p])
        between = int(np.count_nonzero(cols.group[prev + 1:p] == cols.group[p]))
        kind = (f"rollback: {between} other deployment{'s' if between != 1 else ''} in between" if between
                else "again right after the previous one")
        listed.append({**cols.where(p), "detail": f"{entity} / {env or '-'}: {sha[int(p)].as_py()[:12]} at "
                       f"{iso_text(cols.secs[p])} ({kind})"})
    return [_warning("redeployed_sha", "redeployments of a SHA deployed earlier to the same entity and environment",
                     int(again.sum()), "DevGrid counts each as a deployment; a rollback is often one. Leave them in "
                     "if they were real deployments", listed, listed)]


def _gaps(cols: _Columns, months: _Counts | None) -> list[dict[str, Any]]:
    if not cols.n or months is None:
        return []
    examples = []
    count = 0
    for g in range(cols.groups):
        first, per, _ = months.of(g)
        nonzero = np.flatnonzero(per)
        # a run of empty months between two consecutive non-empty months that are both busy
        for before, after in zip(nonzero[:-1].tolist(), nonzero[1:].tolist()):
            if after - before > 1 and per[before] >= BUSY_MONTH and per[after] >= BUSY_MONTH:
                count += after - before - 1
                entity, env = cols.group_name(g)
                gap = (_month_label(first + before + 1) if after - before == 2
                       else f"{_month_label(first + before + 1)} .. {_month_label(first + after - 1)}")
                bounds = np.array([first + before, first + before + 1], dtype="datetime64[M]").astype("datetime64[s]")
                low, high = np.searchsorted(cols.secs, bounds.astype(np.int64))  # events are in time order
                last_before = low + int(np.flatnonzero(cols.group[low:high] == g)[-1])
                examples.append({**cols.where(last_before), "detail": f"{entity} / {env or '-'}: no deployments in "
                                 f"{gap}, between {per[before]} in {_month_label(first + before)} and "
                                 f"{per[after]} in {_month_label(first + after)}"})
    return [_warning("gap", "long gaps: empty months between busy months", count,
                     f"often a missing export page or file (busy = at least {BUSY_MONTH} deployments in the month)",
                     examples, examples)]


def _commit_field(plan: Plan, notes: dict[str, int]) -> list[dict[str, Any]]:
    rule = plan.mapping.report.commit_time
    if rule is None or not len(plan.events) or notes.get("with_commit_time"):
        return []
    return [_warning("no_commit_time", "no planned event has a commit time", len(plan.events),
                     f"report.commit_time reads {', '.join(rule.sources)} (mapping line {rule.line}), which is empty "
                     "or unreadable in every planned row: lead time is not computed", [])]


def _first_deployments(cols: _Columns) -> list[dict[str, Any]]:
    if not cols.n:
        return []
    ent = cols.entity[1]
    first = np.full(len(cols.entity[0]), cols.n, dtype=np.int64)
    np.minimum.at(first, ent, np.arange(cols.n))  # events are oldest first
    first = first[first < cols.n]
    listed = [{**cols.where(p), "detail": f"{cols.entity[0][ent[p]]}: first imported deployment "
               f"{iso_text(cols.secs[p])}"} for p in first]
    return [_warning("first_deployment", "first imported deployment of each entity", len(first),
                     "commits older than it will have their lead time measured to it, so the first lead times "
                     "can look long", listed, listed)]

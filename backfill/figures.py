"""The figures of the preview report, computed column-wise from a plan's events (no per-event Python).

    plan.events -> seconds, ISO week (Monday 00:00 UTC), month, group (entity + environment)
                -> per group and for all: weekly and monthly counts, medians, DORA band,
                   change failure rate per month, lead time (where commit times exist)
                -> warnings, each with a count and the first examples (file, row)

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
    "band": "DORA deployment frequency band from the medians: on demand (median per week >= 7, i.e. daily "
            "or more), between once per day and once per week (median per week >= 1), between once per week "
            "and once per month (median per month >= 1), else less than once per month",
    "change_failure_rate": "failed deployments / all deployments (status failed over all planned events), "
                           "per month and over the whole history",
    "lead_time": "deployment timestamp minus the deployed commit's time (the mapping's report.commit_time), "
                 "over successful deployments that have one; commits made after their deployment are left out",
}

BANDS = (
    ("on demand (daily or more)", "median per week >= 7"),
    ("between once per day and once per week", "median per week >= 1"),
    ("between once per week and once per month", "median per month >= 1"),
    ("less than once per month", "median per month < 1"),
)


# --- columns --------------------------------------------------------------------------------

class _Columns:
    """The plan's events as plain numpy arrays: seconds, week and month numbers, group codes."""

    def __init__(self, plan: Plan):
        events = plan.events
        self.plan = plan
        self.n = len(events)
        self.secs = _seconds(events[TS])
        days = self.secs // DAY
        self.week = days - (days + 3) % 7  # day number of the ISO week's Monday (1970-01-01 was a Thursday)
        self.month = self.secs.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
        self.entity = _categories(events, "entityId")
        self.env = _categories(events, "env")
        ent_codes, env_codes = self.entity[1], self.env[1]
        self.group = ent_codes.astype(np.int64) * (len(self.env[0]) + 1) + (env_codes.astype(np.int64) + 1)
        self.failed = (events["status"] == "failed").fillna(False).to_numpy(dtype=bool) if "status" in events.columns \
            else np.zeros(self.n, dtype=bool)
        self.file = events[FILE].to_numpy(dtype=np.int64)
        self.row = events[ROW].to_numpy(dtype=np.int64)

    def group_name(self, code: int) -> tuple[str, str | None]:
        width = len(self.env[0]) + 1
        ent, env = divmod(int(code), width)
        return str(self.entity[0][ent]), (str(self.env[0][env - 1]) if env else None)

    def where(self, position: int) -> dict[str, Any]:
        return {"file": self.plan.files[int(self.file[position])], "row": int(self.row[position])}


def _seconds(ts: pd.Series) -> np.ndarray:
    if not len(ts):
        return np.zeros(0, dtype=np.int64)
    return ts.dt.as_unit("s").array.asi8.astype(np.int64)  # epoch seconds (UTC)


def _codes(values: pd.Series) -> tuple[Any, np.ndarray]:
    """A text column as (distinct values, indexable; code per row, -1 where missing), by arrow's hash
    kernel. The distinct values stay an arrow array: only the few shown in examples become Python."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [str(c) for c in values.cat.categories], values.cat.codes.to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(arrow_text(values))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return _Names(encoded.dictionary), codes


class _Names:
    """Distinct values of a column as an arrow array, read one at a time as text."""

    def __init__(self, array: pa.Array):
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, code: int) -> str:
        return str(self.array[int(code)].as_py())


def _categories(events: pd.DataFrame, column: str) -> tuple[list[str], np.ndarray]:
    if column not in events.columns:
        return [], np.full(len(events), -1, dtype=np.int64)
    values = events[column]
    if not isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype("category")
    return [str(c) for c in values.cat.categories], values.cat.codes.to_numpy()


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
    if median_week >= 7:
        return BANDS[0][0]
    if median_week >= 1:
        return BANDS[1][0]
    if median_month >= 1:
        return BANDS[2][0]
    return BANDS[3][0]


# --- figures --------------------------------------------------------------------------------

def _series(cols: _Columns, members: np.ndarray, lead: np.ndarray | None) -> dict[str, Any]:
    """The figures of one group (the events at `members`, oldest first)."""
    secs, week, month, failed = cols.secs[members], cols.week[members], cols.month[members], cols.failed[members]
    first_week, last_week = int(week.min()), int(week.max())
    slot = (week - first_week) // 7
    weeks_n = (last_week - first_week) // 7 + 1
    total_w = np.bincount(slot, minlength=weeks_n)
    failed_w = np.bincount(slot, weights=failed, minlength=weeks_n).astype(np.int64)
    first_month, last_month = int(month.min()), int(month.max())
    mslot = month - first_month
    months_n = last_month - first_month + 1
    total_m = np.bincount(mslot, minlength=months_n)
    failed_m = np.bincount(mslot, weights=failed, minlength=months_n).astype(np.int64)
    labels = [_week_label(first_week + 7 * i) for i in range(weeks_n)]
    per_week, per_month = _median(total_w), _median(total_m)
    n, n_failed = int(len(members)), int(failed.sum())
    out: dict[str, Any] = {
        "deployments": n,
        "failed": n_failed,
        "first": iso_text(secs[0]),
        "last": iso_text(secs[-1]),
        "weeks_spanned": int(weeks_n),
        "months_spanned": int(months_n),
        "median_per_week": per_week,
        "median_per_month": per_month,
        "band": band(per_week, per_month),
        "change_failure_rate": round(n_failed / n, 4),
        "weeks": [
            {"week": label, "start": start, "deployments": int(t), "success": int(t - f), "failed": int(f)}
            for (label, start), t, f in zip(labels, total_w, failed_w)
        ],
        "months": [
            {"month": _month_label(first_month + i), "deployments": int(t), "failed": int(f),
             "change_failure_rate": round(f / t, 4) if t else None}
            for i, (t, f) in enumerate(zip(total_m, failed_m))
        ],
    }
    if lead is not None:
        hours = lead[members]
        usable = hours[~np.isnan(hours)]
        out["lead_time"] = {
            "deployments_with_commit_time": int(len(usable)),
            "median_hours": round(float(np.median(usable)), 2) if len(usable) else None,
            "p90_hours": round(float(np.percentile(usable, 90)), 2) if len(usable) else None,
        }
    return out


def _lead_hours(cols: _Columns) -> tuple[np.ndarray | None, dict[str, int]]:
    """Hours from commit to deployment per event (NaN where not usable), and what was left out."""
    events = cols.plan.events
    if COMMIT_TS not in events.columns:
        return None, {}
    commit = events[COMMIT_TS]
    has = commit.notna().to_numpy()
    csecs = np.zeros(cols.n, dtype=np.int64)
    if has.any():
        csecs[has] = _seconds(commit[has])
    hours = (cols.secs - csecs) / 3600.0
    negative = has & (hours < 0)
    usable = has & ~negative & ~cols.failed
    hours = np.where(usable, hours, np.nan)
    return hours, {"with_commit_time": int(has.sum()), "commit_after_deployment": int(negative.sum()),
                   "failed_left_out": int((has & cols.failed).sum())}


def compute(plan: Plan, *, now: datetime | None = None) -> dict[str, Any]:
    """Every figure and warning of the report, as plain data (see the module docstring)."""
    now = now or datetime.now(timezone.utc)
    cols = _Columns(plan)
    lead, lead_notes = _lead_hours(cols)
    groups: list[dict[str, Any]] = []
    overall: dict[str, Any] | None = None
    if cols.n:
        overall = {"entity": ALL, "env": None, **_series(cols, np.arange(cols.n), lead)}
        order = np.argsort(cols.group, kind="stable")  # each group's events stay oldest first
        codes, starts = np.unique(cols.group[order], return_index=True)
        for code, members in zip(codes, np.split(order, starts[1:])):
            entity, env = cols.group_name(code)
            groups.append({"entity": entity, "env": env, **_series(cols, members, lead)})
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
        "warnings": warnings(cols, plan, now, lead_notes),
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


def warnings(cols: _Columns, plan: Plan, now: datetime, lead_notes: dict[str, int]) -> list[dict[str, Any]]:
    found = [
        *_time_range(cols, now), *_same_second(cols), *_same_build(cols, plan), *_missing_sha(cols, plan),
        *_env_names(cols), *_truncated(plan), *_redeployments(cols, plan), *_gaps(cols), *_commit_field(plan, lead_notes),
        *_first_deployments(cols),
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
    key = cols.group * (1 << 34) + (cols.secs + (1 << 32))  # years 1834-2514 fit in 34 bits
    positions, runs = _repeats(key)
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
        names, codes = _codes(events[column])
        # report.build names a build on its own; a build_id is a number within one entity's environment
        key = codes if column == BUILD else np.where(codes >= 0, cols.group * (len(names) + 1) + codes, -1)
        positions, runs = _repeats(key)
        if len(positions):
            frame = events.iloc[positions][_value_columns(events)].reset_index(drop=True)
            frame["_run"], frame["_p"] = runs, positions
            differs = _differing(frame, "_run")
            count += int(differs.sum())
            for run in differs.index[differs.to_numpy()][:EXAMPLES]:
                first, *others = frame["_p"][frame["_run"] == run].to_numpy()
                also = ", ".join(f"row {cols.where(p)['row']}" for p in others[:3])
                entity, env = cols.group_name(cols.group[first])
                owner = f" of {entity} / {env or '-'}" if column != BUILD else ""
                examples.append({**cols.where(first), "detail": f"build {names[codes[first]].replace(chr(31), ', ')!r}"
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
    missing = (events["build_commit_sha"].isna().to_numpy() if "build_commit_sha" in events.columns
               else np.ones(cols.n, dtype=bool))
    ent = cols.entity[1]
    totals = np.bincount(ent, minlength=len(cols.entity[0]))
    lacking = np.bincount(ent, weights=missing, minlength=len(cols.entity[0])).astype(np.int64)
    examples = []
    for code in np.flatnonzero(lacking):
        first = int(np.flatnonzero(missing & (ent == code))[0])
        examples.append({**cols.where(first), "detail": f"{cols.entity[0][code]}: {lacking[code]} of "
                         f"{totals[code]} events ({100 * lacking[code] / totals[code]:.1f}%) without build_commit_sha"})
    return [_warning("no_commit_sha", "events without build_commit_sha", int(missing.sum()),
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
    events = plan.events
    if "build_commit_sha" not in events.columns or not cols.n:
        return []
    names, sha = _codes(events["build_commit_sha"])
    by_group = np.argsort(cols.group, kind="stable")  # each group's events, oldest first
    starts = np.r_[0, np.flatnonzero(np.diff(cols.group[by_group])) + 1]
    rank = np.empty(cols.n, dtype=np.int64)  # position of each event within its group
    rank[by_group] = np.arange(cols.n) - np.repeat(starts, np.diff(np.r_[starts, cols.n]))
    key = np.where(sha >= 0, cols.group * (len(names) + 1) + sha, -1)
    positions, runs = _repeats(key)  # ordered by key, then oldest first
    again = np.r_[False, runs[1:] == runs[:-1]] if len(runs) else np.zeros(0, dtype=bool)
    previous = np.r_[positions[:1], positions[:-1]]
    listed = []
    later, earlier = positions[again], previous[again]
    by_time = np.argsort(later, kind="stable")[:LISTED]  # listed oldest first
    for p, prev in zip(later[by_time], earlier[by_time]):
        entity, env = cols.group_name(cols.group[p])
        between = int(rank[p] - rank[prev] - 1)
        kind = (f"rollback: {between} other deployment{'s' if between != 1 else ''} in between" if between
                else "again right after the previous one")
        listed.append({**cols.where(p), "detail": f"{entity} / {env or '-'}: {names[sha[p]][:12]} at "
                       f"{iso_text(cols.secs[p])} ({kind})"})
    return [_warning("redeployed_sha", "redeployments of a SHA deployed earlier to the same entity and environment",
                     int(again.sum()), "DevGrid counts each as a deployment; a rollback is often one. Leave them in "
                     "if they were real deployments", listed, listed)]


def _gaps(cols: _Columns) -> list[dict[str, Any]]:
    if not cols.n:
        return []
    examples = []
    count = 0
    order = np.argsort(cols.group, kind="stable")
    codes, starts = np.unique(cols.group[order], return_index=True)
    for code, members in zip(codes, np.split(order, starts[1:])):
        months = cols.month[members]
        first = int(months.min())
        per = np.bincount(months - first)
        busy = np.flatnonzero(per >= BUSY_MONTH)
        nonzero = np.flatnonzero(per)
        # a run of empty months between two consecutive non-empty months that are both busy
        for before, after in zip(nonzero[:-1], nonzero[1:]):
            if after - before > 1 and before in busy and after in busy:
                count += int(after - before - 1)
                entity, env = cols.group_name(code)
                gap = (_month_label(first + before + 1) if after - before == 2
                       else f"{_month_label(first + before + 1)} .. {_month_label(first + after - 1)}")
                last_before = members[months == first + before][-1]
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
    _, first = np.unique(ent, return_index=True)  # events are oldest first
    listed = [{**cols.where(p), "detail": f"{cols.entity[0][ent[p]]}: first imported deployment "
               f"{iso_text(cols.secs[p])}"} for p in first]
    return [_warning("first_deployment", "first imported deployment of each entity", len(first),
                     "commits older than it will have their lead time measured to it, so the first lead times "
                     "can look long", listed, listed)]

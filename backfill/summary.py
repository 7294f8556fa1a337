"""Human-readable text for a plan: what preview prints and what import shows before it asks."""

from __future__ import annotations

import json
from typing import Sequence

import pandas as pd

from backfill.display import LINE_LIMIT, cut, printable
from backfill.events import MAX_BATCH
from backfill.plan import REASON_LIMIT, TS, Plan
from backfill.readers import reader_notes
from backfill.throttle import DEFAULT_LIMITS, RateLimit, Throttle, duration_text  # noqa: F401  (re-exported)


def upload_seconds(requests: int, limits: Sequence[RateLimit] = DEFAULT_LIMITS) -> float:
    """Time the rate limits alone impose on `requests` requests (network time not included)."""
    return Throttle(limits, clock=lambda: 0.0).schedule_seconds(requests, now=0.0)


def _counts(plan: Plan, column: str) -> str:
    if column not in plan.events.columns or not len(plan.events):
        return "-"
    counts = plan.events[column].value_counts(dropna=False)  # counted on categories, not per row
    counts = counts[counts > 0].sort_values(ascending=False, kind="stable")
    return ", ".join(f"{'(none)' if pd.isna(name) else cut(str(name))} {n}" for name, n in counts.items())


def note_lines(plan: Plan) -> list[str]:
    """The reader's counted notes on the planned events (readers.reader_notes), one line each."""
    texts = reader_notes(plan.mapping.source.format)
    return [
        texts[name][0 if n == 1 else 1].format(n=n)
        for name, n in plan.report.notes.items()
        if n and name in texts
    ]


def plan_summary(
    plan: Plan,
    *,
    batch_size: int = MAX_BATCH,
    limits: Sequence[RateLimit] = DEFAULT_LIMITS,
    show_invalid: int = REASON_LIMIT,
) -> str:
    report = plan.report
    lines = [f"Mapping {plan.mapping.path} (format {plan.mapping.source.format})"]
    for path, rows in report.files:
        lines.append(f"  {path}: {rows} rows read")
    lines.append(
        f"Rows: {report.rows_read} read = {report.planned} planned + {sum(report.filtered.values())} filtered"
        f" + {report.duplicates} duplicates + {len(report.invalid)} invalid"
        + (f" + {report.outside_range} outside --since/--until" if report.outside_range else "")
        + (f" + {report.empty} empty rows" if report.empty else "")
    )
    for path, copied, earlier in report.copies:
        folded = "folded as duplicates only where the dedupe key is complete" if plan.mapping.dedupe else (
            "planned again; if the exports overlap, add a dedupe: key to the mapping"
        )
        lines.append(f"Warning: {path}: {copied} rows are copies of rows of {earlier} (the same value in every field); {folded}")
    for label, n in report.filtered.items():
        lines.append(f"  skipped by filter {label}: {n}")
    if report.duplicates:
        keys = ", ".join(plan.mapping.dedupe)
        lines.append(f"  duplicates folded (same {keys}; first kept): {report.duplicates}")
    if report.invalid:
        shown = report.invalid[:show_invalid]
        more = len(report.invalid) - len(shown)
        lines.append(f"Invalid rows: {len(report.invalid)}" + (f" (first {len(shown)} shown)" if more else ""))
        lines.extend(f"  {cut(str(row), LINE_LIMIT)}" for row in shown)
    if len(plan.events):
        ts = plan.events[TS]
        first, last = plan.timestamps(0, 1).iloc[0], plan.timestamps(len(plan) - 1).iloc[0]
        lines.append(f"Date range: {first} .. {last} ({(ts.iloc[-1] - ts.iloc[0]).days} days)")
        lines.append(f"By entity: {_counts(plan, 'entityId')}")
        lines.append(f"By env: {_counts(plan, 'env')}")
        lines.append(f"By status: {_counts(plan, 'status')}")
        lines.extend(note_lines(plan))
    requests = plan.requests(batch_size)
    limit_text = ", ".join(str(limit) for limit in limits)
    lines.append(
        f"Requests: {requests} (batches of up to {batch_size}); at the rate limits ({limit_text}) "
        f"the upload takes at least {duration_text(upload_seconds(requests, limits))}"
    )
    return "\n".join(printable(text) for text in lines)  # a value cannot forge a line of its own


def _cut_values(event: dict) -> dict:
    """An event with each long text value cut for the screen (the files written keep them whole)."""
    return {k: _cut_values(v) if isinstance(v, dict) else cut(v) if isinstance(v, str) else v for k, v in event.items()}


def first_payloads(plan: Plan, *, requests: int = 1, events: int = 3, batch_size: int = MAX_BATCH) -> str:
    """The first request bodies pretty-printed, each cut to its first few events."""
    out = []
    for number, body in enumerate(plan.request_bodies(batch_size, slice_size=batch_size * requests)):
        if number >= requests:
            break
        doc = json.loads(body)
        total = len(doc["events"])
        doc["events"] = [_cut_values(event) for event in doc["events"][:events]]
        text = printable(json.dumps(doc, indent=2, ensure_ascii=False), layout=True)
        more = f"\n  ... and {total - events} more events in this request" if total > events else ""
        out.append(f"Request {number + 1} of {plan.requests(batch_size)} ({total} events):\n{text}{more}")
    return "\n".join(out) if out else "No events to send."

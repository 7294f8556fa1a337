"""GitHub Actions reader: workflow-runs API responses, one row per run.

Accepted input (in any mix, in one file; several files may be given):

- workflow-runs pages `{"total_count": N, "workflow_runs": [...]}` from `GET /repos/{o}/{r}/actions/runs`
  or `.../actions/workflows/{id}/runs`, several appended one after another (what
  `gh api --paginate` writes), or a JSON array of such pages;
- a bare JSON array of runs, NDJSON (one run per line), a single run (`.../actions/runs/{id}`).

A run may embed its jobs as `jobs`: the array `.../actions/runs/{id}/jobs` returns (or that
whole response, `{"total_count": N, "jobs": [...]}`).

Row fields: every field of the run, nested objects flattened to dotted names (`actor.login`,
`triggering_actor.login`, `head_commit.timestamp`, `head_repository.full_name`), values as
written (numbers keep their text, lists become compact JSON, null becomes empty). Runs from
2020 lack `name`, `path`, `display_title`, `run_started_at`, `run_attempt`, `actor` and
`triggering_actor`; so that one mapping fits every export, these columns are always present
(empty when the export lacks them): `id`, `name`, `display_title`, `path`, `event`, `status`,
`conclusion`, `head_branch`, `head_sha`, `run_number`, `run_attempt`, `html_url`, `created_at`,
`updated_at`, `run_started_at`, `actor.login`, `triggering_actor.login`,
`head_repository.full_name`, `head_commit.timestamp`. Derived fields:

| field | value |
|---|---|
| `finished_at` | for a `completed` run: the latest `completed_at` of its embedded `jobs` (compared as instants, written as found), else `updated_at`. Empty for a run that is not completed. GitHub's run has no finish time of its own, and `updated_at` is "last changed": a run touched again later (a re-run, a retention job) carries a later `updated_at` |
| `started_at` | `run_started_at`, else `created_at` |
| `workflow_file` | the file name of `path` (`.github/workflows/deploy.yml` -> `deploy.yml`) |
| `latest_attempt` | `true` for the one row that stands for its run `id` in the file, `false` for the others: the highest `run_attempt` (missing counts as 1); among copies of that attempt (overlapping pages), a completed one before one that is not; then the earliest `finished_at`; then the first in the file. Whatever the order of the pages |

Objects that are not runs (a jobs response on its own, a `workflow_run` webhook payload, an
unrelated object) are reported as invalid rows; a file with nothing but such objects is rejected.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from backfill.errors import ReaderError
from backfill.readers import BadRow, RowChunk, SourceConfig, flatten, read_text, scalar_text
from backfill.readers.gitlab import iter_json_values, reject_if_nothing_read, rows_to_chunks

Row = dict[str, str | None]
Item = tuple[Row | None, BadRow | None]

BASE_FIELDS = (
    "id", "name", "display_title", "path", "workflow_file", "event", "status", "conclusion", "head_branch",
    "head_sha", "run_number", "run_attempt", "html_url", "created_at", "updated_at", "run_started_at",
    "started_at", "finished_at", "latest_attempt", "actor.login", "triggering_actor.login",
    "head_repository.full_name", "head_commit.timestamp",
)
"""Columns every row has, so that a mapping reading them works on exports of any age."""


# --- one record -> one row (pure; independent of how records are pulled from the file) ---------

def workflow_file(path: str | None) -> str | None:
    """`.github/workflows/deploy.yml` -> `deploy.yml` (a `path@ref` suffix is dropped)."""
    if not path:
        return None
    name = path.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return name or None


def parse_instant(text: str | None) -> datetime | None:
    """An ISO 8601 time with a zone (`Z` or an offset) as an aware datetime; None otherwise."""
    if not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def latest_time(values: list[str | None]) -> str | None:
    """The latest of several time texts, as written. Values that are not ISO times with a zone
    are ignored, unless nothing else is there: then the last one is kept (the plan reports it)."""
    present = [v for v in values if v]
    timed = [(moment, v) for v in present if (moment := parse_instant(v)) is not None]
    if timed:
        return max(timed, key=lambda pair: pair[0])[1]
    return present[-1] if present else None


def _jobs(run: dict[str, Any]) -> list[dict[str, Any]] | None:
    jobs = run.get("jobs")
    if isinstance(jobs, dict):  # the whole `/runs/{id}/jobs` response
        jobs = jobs.get("jobs")
    if not isinstance(jobs, list):
        return None
    return [job for job in jobs if isinstance(job, dict)]


def finished_at(run: dict[str, Any]) -> str | None:
    """When a completed run ended (see the module docstring)."""
    if scalar_text(run.get("status")) != "completed":
        return None
    jobs = _jobs(run)
    if jobs:
        end = latest_time([_text(job.get("completed_at")) for job in jobs])
        if end:
            return end
    return _text(run.get("updated_at"))


def run_row(run: dict[str, Any]) -> Row:
    """One run as a row: its fields by dotted path, the guaranteed columns, the derived fields
    (`latest_attempt` is set once the whole file is known, see `mark_latest_attempts`)."""
    row: Row = dict.fromkeys(BASE_FIELDS)
    flatten(run, out=row)
    row["finished_at"] = finished_at(run)
    row["started_at"] = row.get("run_started_at") or row.get("created_at")
    row["workflow_file"] = workflow_file(row.get("path"))
    row["latest_attempt"] = None
    return row


def classify(node: dict[str, Any]) -> str:
    """What a JSON object is: `page` (workflow-runs page), `run`, or the reason it is neither."""
    if isinstance(node.get("workflow_runs"), list):
        return "page"
    if "workflow_run" in node and ("action" in node or "sender" in node):
        return ("a workflow_run webhook payload, not a runs API object; export with "
                "gh api --paginate repos/OWNER/REPO/actions/runs instead")
    if isinstance(node.get("jobs"), list) and "id" not in node:
        return ("a jobs response on its own; embed it in its run as `jobs` "
                "(see the README, GitHub Actions) or export the runs")
    if "id" in node and any(key in node for key in ("run_number", "workflow_id", "head_sha", "run_attempt")):
        return "run"
    keys = ", ".join(list(node)[:8])
    return f"not a GitHub Actions workflow run (keys: {keys})"


# --- re-runs: one row per run id --------------------------------------------------------------

def _attempt(row: Row) -> int:
    text = (row.get("run_attempt") or "").strip()
    return int(text) if text.isdigit() else 1


def _rank(row: Row, position: int) -> tuple:
    """Greater is the row that stands for its run: highest attempt, completed, earliest end, first."""
    end = parse_instant(row.get("finished_at"))
    end_key = -end.timestamp() if end is not None else float("-inf")
    return (_attempt(row), row.get("status") == "completed", end_key, -position)


def mark_latest_attempts(rows: list[tuple[int, Row]]) -> None:
    """Set `latest_attempt` on numbered rows: `true` on the one row per run id that stands for
    the run, `false` on the rest. Rows without an id each stand for themselves."""
    best: dict[str, tuple[tuple, int]] = {}
    for position, row in rows:
        key = row.get("id")
        if key is None:
            continue
        rank = _rank(row, position)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, position)
    winners = {position for _, position in best.values()}
    for position, row in rows:
        row["latest_attempt"] = "true" if row.get("id") is None or position in winners else "false"


# --- pulling records from the file ------------------------------------------------------------

def read_items(path: Path, source: SourceConfig, collect: Callable[[Any, list[Item]], None], expected: str) -> list[Item]:
    """Every JSON value in the file through `collect`: numbered rows and bad rows, in file order.
    A file with nothing but unrecognised objects is rejected as not `expected`."""
    text = read_text(path, source.encoding)
    items: list[Item] = []
    try:
        for value in iter_json_values(text, path):
            collect(value, items)
    except RecursionError:  # Python's JSON parser (and flattening) recurse once per level
        raise ReaderError(
            f"{path}: JSON nested too deeply to read (hundreds of levels, after record {len(items)}); "
            "this is not an API export: export it again"
        ) from None
    reject_if_nothing_read(path, items, expected)
    return items


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Rows of GitHub Actions workflow runs from one file (see the module docstring)."""
    items = read_items(path, source, _collect, "GitHub Actions workflow runs")
    mark_latest_attempts([(n, row) for n, (row, _) in enumerate(items) if row is not None])
    yield from rows_to_chunks(items)


def _collect(node: Any, items: list[Item]) -> None:
    if isinstance(node, list):
        for element in node:
            _collect(element, items)
        return
    number = len(items) + 1
    if not isinstance(node, dict):
        items.append((None, BadRow(number, f"a JSON {_kind(node)}, not a workflow run", _snippet(node))))
        return
    kind = classify(node)
    if kind == "page":
        _collect(node["workflow_runs"], items)
    elif kind == "run":
        items.append((run_row(node), None))
    else:
        items.append((None, BadRow(number, kind, _snippet(node))))


def _text(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) else scalar_text(value)


def _kind(value: Any) -> str:
    """A JSON value that is not an object (numbers are read as their text)."""
    return "null" if value is None else "string or number" if isinstance(value, str) else type(value).__name__


def _snippet(value: Any) -> str:
    return (scalar_text(value) or "")[:200]


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
| `latest_attempt` | `true` for the one row that stands for its run `id` in the input (all files of the run), `false` for the others: the highest `run_attempt` (missing counts as 1); among copies of that attempt (overlapping pages or files), a completed one before one that is not; then the earliest `finished_at`; then the first (file order, then record order). Whatever the order of the pages |

Objects that are not runs (a jobs response on its own, a `workflow_run` webhook payload, an
unrelated object) are reported as invalid rows; a file with nothing but such objects is rejected.

The file is streamed (`readers.jsonstream`): one top-level value (a page, or one element of an
array) in memory at a time. Files are read twice (a pipe once, its rows held): the first pass ranks the records of each run id
over every input file of the run (memory: one entry per id; see `prepare`), the second makes the
rows. So `latest_attempt` holds across several files too: one `true` per run id in the whole input.
"""

from __future__ import annotations

import itertools
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from backfill.readers import ROW, RowChunk, SourceConfig, flatten, scalar_text
from backfill.readers.jsonstream import TOO_DEEP, read_values, stream_values
from backfill.readers.jsonstream import JSONStream, TooDeep, kind, open_binary

Row = dict[str, str | None]

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


def _flat(value: Any) -> str | None:
    """A top-level field's value as `flatten` writes it in the row (a non-empty object becomes
    dotted columns of its own, so the field itself is empty)."""
    return None if isinstance(value, dict) and value else scalar_text(value)


def derived(run: dict[str, Any], latest: bool) -> Row:
    """The derived fields of a run's row (`latest`: whether this row stands for its run id, see
    `Attempts`), computed from the run as decoded."""
    return {
        "finished_at": finished_at(run),
        "started_at": _flat(run.get("run_started_at")) or _flat(run.get("created_at")),
        "workflow_file": workflow_file(_flat(run.get("path"))),
        "latest_attempt": "true" if latest else "false",
    }


def run_row(run: dict[str, Any], latest: bool) -> Row:
    """One run as a row: its fields by dotted path, the guaranteed columns, the derived fields.
    The reader builds the same row straight into its columns (`Rows.add_object`)."""
    row: Row = dict.fromkeys(BASE_FIELDS)
    flatten(run, out=row)
    row.update(derived(run, latest))
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

Position = tuple[int, int]  # (input file index, record number in that file)
_FILE = 1 << 40  # a position packed into one int: file index * _FILE + record number


def rank(run: dict[str, Any], position: Position) -> tuple:
    """Greater is the record that stands for its run: highest attempt (missing counts as 1),
    completed, earliest end, first in the input (file order, then record order). One flat tuple,
    the position packed into one int (what `Attempts` keeps for every run id)."""
    attempt = (_text(run.get("run_attempt")) or "").strip()
    end = parse_instant(finished_at(run))
    return (
        int(attempt) if attempt.isdigit() else 1,
        scalar_text(run.get("status")) == "completed",
        -end.timestamp() if end is not None else float("-inf"),
        -(position[0] * _FILE + position[1]),
    )


class Attempts:
    """Which record stands for each run id, over every input file: offered every run with its
    position (first pass), then asked about each (second pass). Memory: one entry per run id, its
    key and `rank` (about 250 bytes)."""

    def __init__(self) -> None:
        self._best: dict[str, tuple] = {}

    def offer(self, run: dict[str, Any], position: Position) -> None:
        key = _text(run.get("id"))
        if key is None:
            return
        mine = rank(run, position)
        best = self._best.get(key)
        if best is None or mine > best:
            self._best[key] = mine

    def is_latest(self, run: dict[str, Any], position: Position) -> bool:
        key = _text(run.get("id"))
        best = None if key is None else self._best.get(key)
        return best is None or best[3] == -(position[0] * _FILE + position[1])


# --- pulling records from the file ------------------------------------------------------------

class _Offers:
    """The first pass's sink: numbers the records exactly as `Rows` does (a bad record takes a
    number too) and offers each run to `Attempts`; keeps no rows."""

    def __init__(self, attempts: Attempts, file_index: int):
        self.attempts = attempts
        self.file_index = file_index
        self.count = 0

    def run(self, run: dict[str, Any]) -> None:
        self.count += 1
        self.attempts.offer(run, (self.file_index, self.count))

    def bad(self, reason: str, text: str = "", number: int | None = None) -> None:
        self.count += 1

    def ready(self) -> bool:
        return False

    def take(self) -> RowChunk:  # pragma: no cover - never ready
        raise NotImplementedError


ARRAY_LEVELS = 32  # arrays of arrays streamed element by element; deeper ones are decoded whole


def walk_values(
    stream: JSONStream, sink: Any, collect: Callable[[Any, Any], None], what: str, depth: int = 0
) -> Iterator[RowChunk]:
    """The value at the cursor: an array one element at a time, anything else decoded whole and
    given to `collect(value, sink)`; a chunk goes out whenever the sink has one ready. A value nested
    too deeply is one bad record (arrays below ARRAY_LEVELS are decoded whole, so that the walk's
    own recursion stays bounded)."""
    if stream.peek() == "[" and depth < ARRAY_LEVELS:
        for _ in stream.elements():
            yield from walk_values(stream, sink, collect, what, depth + 1)
        return
    try:
        value = stream.value()
    except TooDeep:
        sink.bad(f"a value {TOO_DEEP}, not {what}")
        return
    try:
        collect(value, sink)
    except RecursionError:
        sink.bad(f"a value {TOO_DEEP}, not {what}")
    if sink.ready():
        yield sink.take()


def rereadable(path: Path) -> bool:
    """A regular file can be read twice; a FIFO or `<(...)` process substitution only once."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # the first pass's open reports the error, as every reader does


def prepare(paths: Sequence[Path], source: SourceConfig) -> Callable[[Path, SourceConfig], Iterator[RowChunk]]:
    """The reader for one run over `paths` (readers.reader_for): the first pass ranks the records
    of each run id over *every* file, so that a re-run's attempts in different files still give one
    row with `latest_attempt: true`; the reader returned then makes each file's rows (the files in
    the same order). A regular file is streamed twice; an input that can be read only once (a pipe)
    is read once in the first pass and its rows are held until its turn."""
    attempts = Attempts()
    held: dict[int, list[RowChunk]] = {}
    for index, path in enumerate(paths):
        if not rereadable(path):
            held[index] = list(_read_file(path, source, attempts, index, offer=True))
            continue
        offers = _Offers(attempts, index)
        with open_binary(path, source.encoding) as handle, stream_values(handle, path, source.encoding) as (stream, tops):
            for _ in tops:
                for _chunk in walk_values(stream, offers, _collect, "a workflow run"):
                    pass
    files = itertools.count()

    def read_prepared(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
        index = next(files)
        if index in held:
            return _marked(held.pop(index), attempts, index)
        return _read_file(path, source, attempts, index)

    return read_prepared


def _read_file(path: Path, source: SourceConfig, attempts: Attempts, index: int, offer: bool = False) -> Iterator[RowChunk]:
    def collect(value: Any, rows: Any) -> None:
        _collect(value, rows, attempts, index, offer)

    return read_values(
        path, source, "GitHub Actions workflow runs",
        lambda stream, rows: walk_values(stream, rows, collect, "a workflow run"),
    )


def _marked(chunks: list[RowChunk], attempts: Attempts, index: int) -> Iterator[RowChunk]:
    """Held rows (an input read once) with `latest_attempt` set now that every input is ranked."""
    for chunk in chunks:
        frame = chunk.frame
        if len(frame):
            frame["latest_attempt"] = [
                "true" if attempts.is_latest({"id": key}, (index, int(number))) else "false"
                for key, number in zip(frame["id"], frame[ROW])
            ]
        yield chunk


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Rows of GitHub Actions workflow runs from one file (see the module docstring). Two passes
    over the file: the first finds which record stands for each run id, the second makes the rows."""
    return prepare([path], source)(path, source)


def _collect(
    node: Any, sink: Any, attempts: Attempts | None = None, file_index: int = 0, offer: bool = False
) -> None:
    """Rows (or, in the first pass, offers) for one decoded value. `offer`: the one pass over an
    input read once, which both offers each run and makes its row (marked later, see `_marked`)."""
    if isinstance(node, list):
        for element in node:
            _collect(element, sink, attempts, file_index, offer)
        return
    if not isinstance(node, dict):
        sink.bad(f"{kind(node)}, not a workflow run", _snippet(node))
        return
    what = classify(node)
    if what == "page":
        total, facts = _text(node.get("total_count")), getattr(sink, "facts", None)  # Rows have facts, _Offers not
        if facts is not None and total is not None and total.isdigit():  # for the report: missing pages
            facts.setdefault("github_runs", []).append((total, len(node["workflow_runs"])))
        _collect(node["workflow_runs"], sink, attempts, file_index, offer)
    elif what != "run":
        sink.bad(what, _snippet(node))
    elif isinstance(sink, _Offers):
        sink.run(node)
    else:
        position = (file_index, sink.count + 1)
        if offer and attempts is not None:
            attempts.offer(node, position)
        latest = attempts is None or offer or attempts.is_latest(node, position)
        sink.add_object(node, BASE_FIELDS, derived(node, latest))  # run_row's row, without the dict


def _text(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) else scalar_text(value)


def _snippet(value: Any) -> str:
    return (scalar_text(value) or "")[:200]

"""The import checkpoint: one SQLite database per import, holding the plan and every event's state.

Durability: WAL journal, `synchronous=FULL`, and every state change is one transaction committed
before the method returns, so an acknowledged change survives `kill -9` and power loss. After each
transaction the WAL is checkpointed into the main file, so a checkpoint copied, or cleaned up,
without its `-wal` file still holds every change but the one being made when the process died:
losing that one can only make events uncertain, or leave unsent ones pending, never make sent
events look new. The file is created atomically (built under a temporary name without WAL, the
plan included, in one transaction: `Journal.draft`; then synced, verified and hard-linked into
place), so a checkpoint path either does not exist or holds a complete checkpoint. A full disk is
`DiskFull`: the transaction is rolled back, nothing committed is lost.

Counts by state live in `state_counts`, kept by triggers in the transaction of each change, so
`counts()` (status, the start and end of every run) reads five rows; `next_batch` walks the
`(state, seq)` index. What resume and status read does not grow with the plan.

Event life cycle (the uploader drives it; `begin_request` is written *before* the HTTP request):

    pending --begin_request--> in_flight --finish_request--> sent | rejected | uncertain | pending
    uncertain --begin_request (include_uncertain)--> in_flight, and resent_after_uncertain = 1
    uncertain --skip_uncertain--> uncertain, skipped_uncertain = 1 (never sent again)
    in_flight at open (the process died mid-request) --> uncertain

The API key is never stored: there is no column for it, and `options` refuses secret-looking keys.

A writer (`Journal.open`, `Journal.create`) holds an advisory lock on `<path>-lock` so that two
processes never upload from one checkpoint, and so that open-time recovery never turns another
live process's in-flight events into uncertain ones. `Journal.open(path, read_only=True)` takes
no lock and changes nothing (for `status`-like commands while an upload runs).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from glob import escape as glob_escape
from itertools import islice
from pathlib import Path
from typing import Any

from backfill.errors import CheckpointError, DiskFull

try:  # POSIX only; without it (Windows) the writer lock is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

STATES = ("pending", "in_flight", "sent", "rejected", "uncertain")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x44474246  # "DGBF" in the SQLite header: marks a devgrid-backfill checkpoint
BUSY_TIMEOUT_S = 10.0
# Events per transaction in add_events. 10,000 was twice as slow for 1M events: each commit rewrites
# most pages of the (random) event_id index. A run that dies mid-plan redoes the plan anyway.
ADD_CHUNK = 100_000
CACHE_KIB = 65_536  # page cache per connection; keeps the event_id index hot during a bulk add
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # truncate the WAL back to this after checkpoints

# Option names that look like a credential; options are stored in clear, so these are refused.
_SECRET_OPTION = re.compile(r"api[_-]?key|token|secret|password|passwd", re.IGNORECASE)

_UNCERTAIN_SENDS_TABLE = """CREATE TABLE IF NOT EXISTS uncertain_sends (
        event_id TEXT PRIMARY KEY,          -- an event that became uncertain
        n        INTEGER NOT NULL           -- how many of its sends ended uncertain
    ) WITHOUT ROWID"""


# The CHECKs are written with OR, not IN (...): with IN lists, SQLite took about twice as long to
# store a plan of 570,000 events (measured: 2.6-3.0 s against 1.2-1.5 s for the rows alone).
_EVENTS_TABLE = """CREATE TABLE events (
        event_id    TEXT NOT NULL,         -- stable id from the planner (unique: events_by_id)
        seq         INTEGER NOT NULL,      -- send order, oldest first
        body        TEXT NOT NULL,         -- the event's JSON object exactly as POSTed
        source_file TEXT NOT NULL,
        source_row  INTEGER NOT NULL,
        timestamp   TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state = 'pending' OR state = 'in_flight' OR state = 'sent' OR state = 'rejected'
                           OR state = 'uncertain'),
        request_no  INTEGER,               -- the last request that carried the event
        server_id   TEXT,                  -- when sent
        reason      TEXT,                  -- when rejected
        resent_after_uncertain INTEGER NOT NULL DEFAULT 0 CHECK (resent_after_uncertain = 0 OR resent_after_uncertain = 1),
        skipped_uncertain      INTEGER NOT NULL DEFAULT 0 CHECK (skipped_uncertain = 0 OR skipped_uncertain = 1),
        CHECK (state <> 'in_flight' OR request_no IS NOT NULL),
        CHECK (skipped_uncertain = 0 OR state = 'uncertain')
    )"""

_SCHEMA = (
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL                -- JSON
    ) WITHOUT ROWID""",
    _EVENTS_TABLE,
    # Tiny partial indices: the flags are rare, and counts() must not scan a million rows for them.
    # (Made empty with the table: a new plan's events have neither flag.)
    "CREATE INDEX events_resent ON events (state) WHERE resent_after_uncertain = 1",
    "CREATE INDEX events_skipped ON events (state) WHERE skipped_uncertain = 1",
    """CREATE TABLE requests (
        request_no  INTEGER PRIMARY KEY,
        started_at  REAL NOT NULL,         -- wall clock, time.time()
        finished_at REAL,
        outcome     TEXT,                  -- "201", "429", "timeout", ...; "interrupted" if the process died
        n_events    INTEGER NOT NULL
    )""",
    "CREATE INDEX requests_by_start ON requests (started_at)",
    _UNCERTAIN_SENDS_TABLE,
    """CREATE TABLE runs (
        run_id       INTEGER PRIMARY KEY,
        started_at   REAL NOT NULL,
        ended_at     REAL,
        argv_summary TEXT NOT NULL,
        outcome      TEXT,                 -- "interrupted" if the process died
        counts       TEXT                  -- JSON of counts() at the end
    )""",
)

# The events' indexes, built once the plan is in (one sort instead of a random insert per event).
# Checkpoints made before the plan was stored this way have event_id as the table's primary key
# instead of events_by_id: every query works on both.
_EVENT_INDEXES = (
    "CREATE UNIQUE INDEX events_by_id ON events (event_id)",
    # next_batch walks this in (state, seq, rowid) order.
    "CREATE INDEX events_by_state ON events (state, seq)",
)

# How many events are in each state, kept by triggers in the transaction that changes them, so that
# counts() (status, every run's start and end) reads five rows, not an index of every event.
# Checkpoints made before it get it when a writer opens them (_recover); read-only, counts() counts.
_STATE_COUNTS = (
    """CREATE TABLE state_counts (
        state TEXT PRIMARY KEY,
        n     INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "INSERT INTO state_counts (state, n) SELECT value, 0 FROM json_each(?)",
    "UPDATE state_counts SET n = (SELECT count(*) FROM events WHERE events.state = state_counts.state)",
    """CREATE TRIGGER events_counted_insert AFTER INSERT ON events BEGIN
        UPDATE state_counts SET n = n + 1 WHERE state = new.state;
    END""",
    """CREATE TRIGGER events_counted_delete AFTER DELETE ON events BEGIN
        UPDATE state_counts SET n = n - 1 WHERE state = old.state;
    END""",
    """CREATE TRIGGER events_counted_update AFTER UPDATE OF state ON events WHEN new.state IS NOT old.state BEGIN
        UPDATE state_counts SET n = n - 1 WHERE state = old.state;
        UPDATE state_counts SET n = n + 1 WHERE state = new.state;
    END""",
)


def _add_state_counts(conn: sqlite3.Connection) -> None:
    """The state_counts table, filled from the events, and its triggers (inside the caller's transaction)."""
    for statement in _STATE_COUNTS:
        conn.execute(statement, (json.dumps(STATES),) if "?" in statement else ())


_EVENT_COLUMNS = "event_id, seq, body, source_file, source_row, timestamp"
_SENDABLE = "(state = 'pending' OR (state = 'uncertain' AND skipped_uncertain = 0))"


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    event_id: str
    seq: int
    body: str
    source_file: str
    source_row: int
    timestamp: str


class Journal:
    """An open checkpoint. Create with `Journal.create` or `Journal.open`; single-threaded."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock_fd: int | None, read_only: bool):
        self._path = path
        self._conn = conn
        self._lock_fd = lock_fd
        self._read_only = read_only
        # How many in-flight events open() turned into uncertain ones (the last process died mid-request).
        self.recovered_in_flight = 0

    # ----------------------------------------------------------------- opening and closing

    @classmethod
    def create(cls, path: str | os.PathLike[str], **fields: Any) -> Journal:
        """Create a new, empty checkpoint at `path` and open it; `fields` as for Journal.draft
        (target, base_url, fingerprints, options, created_at). Refuses an existing file."""
        with cls.draft(path, **fields) as draft:
            return draft.publish()

    @classmethod
    def draft(
        cls,
        path: str | os.PathLike[str],
        *,
        target: str,
        base_url: str,
        fingerprints: Mapping[str, str],
        options: Mapping[str, Any],
        created_at: float | None = None,
    ) -> Draft:
        """Start building a new checkpoint for `path` under a temporary name beside it: add the plan
        (Draft.add), then Draft.publish() makes it the checkpoint at `path`, complete, in one step;
        leaving the `with` block without publishing removes it. Refuses an existing file."""
        path = Path(path)
        if os.path.lexists(path):
            raise CheckpointError(f"checkpoint already exists: {path}")
        _check_options(options)
        meta = {
            "tool": "devgrid-backfill",
            "created_at": time.time() if created_at is None else created_at,
            "target": target,
            "base_url": base_url,
            "fingerprints": dict(fingerprints),
            "options": dict(options),
            "uid": uuid.uuid4().hex,
        }
        _check_directory(path)
        _remove_stale_drafts(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.creating")
        _remove_database(tmp)
        with _creating(path, tmp):
            conn = _connect(tmp, "rwc")
            try:
                # The rollback journal in memory (a new file's pages need none) and no fsync while
                # building: nothing can see the file until publish() has committed it, synced it and
                # checked it; a run that dies meanwhile leaves a temporary file (removed by the next
                # one), never a checkpoint.
                conn.execute("PRAGMA journal_mode = MEMORY")
                conn.execute("PRAGMA synchronous = OFF")
                conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [(k, json.dumps(v, sort_keys=True)) for k, v in meta.items()],
                )
            except BaseException:
                conn.close()
                raise
        return Draft(path, tmp, conn)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, read_only: bool = False) -> Journal:
        """Open an existing checkpoint.

        A writer (the default) takes the checkpoint's lock and turns events left in flight by a
        process that died into uncertain ones. `read_only=True` takes no lock and writes nothing.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        if read_only and not _can_write_beside(path):
            return cls._open_immutable(path)
        try:
            conn = _connect(path, "rw")
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot open checkpoint {path}: {exc}") from exc
        lock_fd = None
        try:
            _check_identity(conn, path)  # before any pragma that could write to a foreign file
            if not read_only:
                lock_fd = _lock(path)
            _configure(conn, path, read_only=read_only)
            journal = cls(path, conn, lock_fd, read_only)
            if not read_only:
                journal._recover()
        except BaseException:
            conn.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return journal

    @classmethod
    def _open_immutable(cls, path: Path) -> Journal:
        """A checkpoint on read-only media (a CD, a read-only mount or directory): SQLite cannot make
        the -shm file WAL readers need, but nothing can change the file either, so it is read as
        immutable. (A -wal left beside it is not read; checkpoints are folded into the main file
        after every change, so at most the change a killed process was making is not seen.)"""
        try:
            conn = _connect(path, "ro", immutable=True)
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot open checkpoint {path}: {exc}") from exc
        try:
            _check_identity(conn, path)
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, None, True)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock; the -lock file itself stays
            self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self._path)!r}{', read_only=True' if self._read_only else ''})"

    def _recover(self) -> None:
        with self._write() as conn:
            conn.execute(_UNCERTAIN_SENDS_TABLE)  # checkpoints made before the table existed get it here
            if not _has_table(conn, "state_counts"):  # nor had these: filled from the events, once
                _add_state_counts(conn)
            in_flight = [row[0] for row in conn.execute("SELECT event_id FROM events WHERE state = 'in_flight'")]
            self.recovered_in_flight = _become_uncertain(conn, in_flight, "state = 'in_flight'", ())
            conn.execute(
                "UPDATE requests SET outcome = 'interrupted' WHERE finished_at IS NULL AND outcome IS NULL"
            )
            conn.execute("UPDATE runs SET outcome = 'interrupted' WHERE ended_at IS NULL AND outcome IS NULL")

    # ----------------------------------------------------------------- transactions

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed (and fsynced) before the block's caller proceeds, then
        checkpointed into the main file."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if _is_disk_full(exc):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise DiskFull(
                    f"the disk holding the checkpoint {self._path} is full; nothing committed is lost: "
                    f"free some space, then rerun the command (or backfill resume {self._path})"
                ) from None
            raise
        # FULL waits (busy timeout) for a reader of an older snapshot, e.g. a `status` running now.
        # A checkpoint that cannot finish (disk full, busy) leaves the change safe in the WAL.
        try:
            conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        except sqlite3.OperationalError:
            pass

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One snapshot for several SELECTs, consistent even while another process writes."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    # ----------------------------------------------------------------- meta

    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    @property
    def created_at(self) -> float:
        return float(self._meta("created_at"))

    @property
    def target(self) -> str:
        return str(self._meta("target"))

    @property
    def base_url(self) -> str:
        return str(self._meta("base_url"))

    @property
    def fingerprints(self) -> dict[str, str]:
        return dict(self._meta("fingerprints"))

    @property
    def options(self) -> dict[str, Any]:
        return dict(self._meta("options"))

    @property
    def uid(self) -> str:
        """A stable id of this import, the same on every machine the file is copied to (the ledger's name for it)."""
        stored = self._meta("uid")
        if stored:
            return str(stored)
        seed = json.dumps([self.created_at, self.target, self.base_url], sort_keys=True)  # checkpoints made before uids
        return "c" + hashlib.sha256(seed.encode()).hexdigest()[:31]

    @property
    def invalid_count(self) -> int:
        value = self._meta("invalid_count")
        return 0 if value is None else int(value)

    @property
    def plan_complete(self) -> bool:
        """True once set_invalid_count has been called after the last create / set_fingerprints.

        The planner calls set_invalid_count last, so False means a run died while storing the plan
        and it must be stored again (add_events is idempotent).
        """
        return self._meta("invalid_count") is not None

    def set_fingerprints(self, fingerprints: Mapping[str, str], options: Mapping[str, Any]) -> None:
        """Record new input fingerprints and options (after --replan). Marks the plan incomplete
        until set_invalid_count is called again."""
        _check_options(options)
        with self._write() as conn:
            self._set_meta(conn, "fingerprints", dict(fingerprints))
            self._set_meta(conn, "options", dict(options))
            conn.execute("DELETE FROM meta WHERE key = 'invalid_count'")

    def set_invalid_count(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"invalid count must be >= 0, got {n}")
        with self._write() as conn:
            self._set_meta(conn, "invalid_count", int(n))

    def _meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True))
        )

    # ----------------------------------------------------------------- the plan

    def add_events(self, events: Iterable[PlannedEvent]) -> int:
        """Insert new events as pending; events already planned keep their state. Returns how many were new."""
        rows = ((e.event_id, e.seq, e.body, e.source_file, e.source_row, e.timestamp) for e in events)
        added = 0
        while chunk := list(islice(rows, ADD_CHUNK)):
            with self._write() as conn:
                added += _changed(conn.executemany(
                    f"INSERT OR IGNORE INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", chunk))
        return added

    def replan(self, events: Iterable[PlannedEvent]) -> dict[str, int]:
        """Bring the plan in line with a new one (--replan), in one transaction:

        - `added`: events not planned before, as pending;
        - `updated`: pending events (never sent) take the new body, order and source;
        - `dropped`: pending events not in the new plan are removed;
        - `changed_after_sending`: events sent, rejected or uncertain whose new body differs; they
          are never sent again, only counted so the user knows;
        - `identical_to_sent`: events of the new plan, under another id, whose body is byte for byte
          that of an event already sent, uncertain or in flight (a cosmetic edit of a sent row:
          `success` -> `SUCCESS`): they are not planned, since sending them would store a copy.
        """
        rows = ((e.event_id, e.seq, e.body, e.source_file, e.source_row, e.timestamp) for e in events)
        with self._write() as conn:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS new_events (event_id TEXT PRIMARY KEY, seq INTEGER, body TEXT, "
                "source_file TEXT, source_row INTEGER, timestamp TEXT) WITHOUT ROWID"
            )
            conn.execute("DELETE FROM new_events")
            while chunk := list(islice(rows, ADD_CHUNK)):
                conn.executemany("INSERT OR IGNORE INTO new_events VALUES (?, ?, ?, ?, ?, ?)", chunk)
            fresh = "state = 'pending' AND resent_after_uncertain = 0"
            carried = f"SELECT {{}} FROM events WHERE NOT ({fresh}) AND state <> 'rejected'"
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS identical (event_id TEXT PRIMARY KEY) WITHOUT ROWID")
            conn.execute("DELETE FROM identical")
            identical = conn.execute(
                "INSERT INTO identical SELECT event_id FROM new_events "
                f"WHERE body IN ({carried.format('body')}) AND event_id NOT IN ({carried.format('event_id')})"
            ).rowcount
            conn.execute("DELETE FROM new_events WHERE event_id IN (SELECT event_id FROM identical)")
            conn.execute(f"DELETE FROM events WHERE {fresh} AND event_id IN (SELECT event_id FROM identical)")
            changed = conn.execute(
                "SELECT count(*) FROM events e JOIN new_events n USING (event_id) "
                f"WHERE NOT ({fresh.replace('state', 'e.state').replace('resent', 'e.resent')}) AND e.body <> n.body"
            ).fetchone()[0]
            dropped = conn.execute(
                f"DELETE FROM events WHERE {fresh} AND event_id NOT IN (SELECT event_id FROM new_events)"
            ).rowcount
            updated = conn.execute(
                "UPDATE events SET "
                + ", ".join(
                    f"{c} = (SELECT n.{c} FROM new_events n WHERE n.event_id = events.event_id)"
                    for c in ("seq", "body", "source_file", "source_row", "timestamp")
                )
                + f" WHERE {fresh} AND event_id IN (SELECT n.event_id FROM new_events n "
                "WHERE n.event_id = events.event_id AND (n.body <> events.body OR n.seq <> events.seq))"
            ).rowcount
            added = conn.execute(
                f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM new_events "
                "WHERE event_id NOT IN (SELECT event_id FROM events)"
            ).rowcount
            conn.execute("DELETE FROM new_events")
            conn.execute("DELETE FROM identical")
        return {"added": added, "updated": updated, "dropped": dropped, "changed_after_sending": changed,
                "identical_to_sent": identical}

    def next_batch(self, size: int, *, include_uncertain: bool) -> list[PlannedEvent]:
        """The next `size` events to send, lowest seq first: pending ones, and uncertain ones
        (not skipped) when include_uncertain."""
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        # Two index range scans merged here: one OR query would sort every pending event.
        queries = [f"SELECT {_EVENT_COLUMNS}, rowid FROM events WHERE state = 'pending' ORDER BY seq, rowid LIMIT ?"]
        if include_uncertain:
            queries.append(
                f"SELECT {_EVENT_COLUMNS}, rowid FROM events WHERE state = 'uncertain' AND skipped_uncertain = 0 "
                "ORDER BY seq, rowid LIMIT ?"
            )
        with self._read() as conn:
            rows = [row for query in queries for row in conn.execute(query, (size,))]
        rows.sort(key=lambda row: (row[1], row[6]))
        return [PlannedEvent(*row[:6]) for row in rows[:size]]

    # ----------------------------------------------------------------- requests

    def begin_request(self, event_ids: Sequence[str], started_at: float) -> int:
        """Write-ahead, before the HTTP request: record the request and mark its events in flight.

        Returns the request number. Each event must be pending, or uncertain and not skipped (it
        then gets resent_after_uncertain); anything else is a bug and changes nothing.
        """
        ids = list(event_ids)
        if not ids:
            raise ValueError("a request needs at least one event")
        with self._write() as conn:
            request_no = conn.execute(
                "INSERT INTO requests (started_at, n_events) VALUES (?, ?)", (started_at, len(ids))
            ).lastrowid
            assert request_no is not None
            changed = _changed(conn.executemany(
                "UPDATE events SET state = 'in_flight', request_no = ?, "
                "resent_after_uncertain = (resent_after_uncertain OR state = 'uncertain') "
                f"WHERE event_id = ? AND {_SENDABLE}",
                [(request_no, event_id) for event_id in ids],
            ))
            if changed != len(ids):
                conn.execute("ROLLBACK")  # first, so that the message describes the events as they were
                raise ValueError(f"cannot send these events: {self._unexpected(conn, ids, _SENDABLE, ())}")
        return request_no

    def finish_request(
        self,
        request_no: int,
        *,
        finished_at: float,
        outcome: str,
        sent: Mapping[str, str] | None = None,
        rejected: Mapping[str, str] | None = None,
        uncertain: Sequence[str] = (),
        pending: Sequence[str] = (),
    ) -> None:
        """Record a request's outcome in one transaction.

        sent: event_id -> server id; rejected: event_id -> reason; uncertain: the server may or may
        not have stored them; pending: the server stored nothing (429, 413, 400), send again.
        Every event of the request must be named exactly once.
        """
        sent = dict(sent or {})
        rejected = dict(rejected or {})
        uncertain = list(uncertain)
        pending = list(pending)
        named = [*sent, *rejected, *uncertain, *pending]
        with self._write() as conn:
            row = conn.execute(
                "SELECT n_events, finished_at FROM requests WHERE request_no = ?", (request_no,)
            ).fetchone()
            if row is None:
                raise ValueError(f"unknown request {request_no}")
            if row[1] is not None:
                raise ValueError(f"request {request_no} is already finished")
            if len(named) != row[0]:
                raise ValueError(f"request {request_no} carried {row[0]} events, but the outcome names {len(named)}")
            mine = "state = 'in_flight' AND request_no = ?"
            # rowcount, not total_changes: the state_counts triggers change rows too
            changed = _changed(conn.executemany(
                f"UPDATE events SET state = 'sent', server_id = ?, reason = NULL WHERE event_id = ? AND {mine}",
                [(server_id, event_id, request_no) for event_id, server_id in sent.items()],
            ))
            changed += _changed(conn.executemany(
                f"UPDATE events SET state = 'rejected', reason = ?, server_id = NULL WHERE event_id = ? AND {mine}",
                [(reason, event_id, request_no) for event_id, reason in rejected.items()],
            ))
            changed += _changed(conn.executemany(
                f"UPDATE events SET state = 'pending' WHERE event_id = ? AND {mine}",
                [(event_id, request_no) for event_id in pending],
            ))
            changed += _become_uncertain(conn, uncertain, mine, (request_no,))
            if changed != len(named):
                conn.execute("ROLLBACK")  # first, so that the message describes the events as they were
                problem = self._unexpected(conn, named, mine, (request_no,))
                raise ValueError(f"request {request_no} did not carry these events: {problem}")
            conn.execute(
                "UPDATE requests SET finished_at = ?, outcome = ? WHERE request_no = ?",
                (finished_at, outcome, request_no),
            )

    @staticmethod
    def _unexpected(conn: sqlite3.Connection, ids: list[str], condition: str, params: tuple[Any, ...]) -> str:
        """Describe the events of `ids` that do not meet `condition` (for an error message)."""
        seen: set[str] = set()
        problems = []
        for event_id in ids:
            if event_id in seen:
                problems.append(f"{event_id} (named twice)")
                continue
            seen.add(event_id)
            row = conn.execute(
                f"SELECT state, skipped_uncertain, {condition} FROM events WHERE event_id = ?", (*params, event_id)
            ).fetchone()
            if row is None:
                problems.append(f"{event_id} (not in the plan)")
            elif not row[2]:
                problems.append(f"{event_id} ({row[0]}{', skipped' if row[1] else ''})")
        return ", ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else "")

    def skip_uncertain(self) -> int:
        """Never resend the events now uncertain (--on-uncertain skip); they count as possibly missing."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE events SET skipped_uncertain = 1 WHERE state = 'uncertain' AND skipped_uncertain = 0"
            ).rowcount

    def request_times(self, since: float) -> list[float]:
        """Times of the requests since `since`, oldest first, for the rate limiter: when the answer
        came (the server saw the request no later), else when it was sent."""
        rows = self._conn.execute(
            "SELECT t FROM (SELECT COALESCE(finished_at, started_at) AS t FROM requests "
            "WHERE started_at >= ? - 3600) WHERE t >= ? ORDER BY t",
            (since, since),
        )
        return [row[0] for row in rows]

    # ----------------------------------------------------------------- reports

    def counts(self) -> dict[str, int]:
        with self._read() as conn:
            if _has_table(conn, "state_counts"):
                by_state = dict(conn.execute("SELECT state, n FROM state_counts").fetchall())
            else:  # a checkpoint of an earlier version, read-only (a writer adds the table)
                by_state = dict(conn.execute("SELECT state, count(*) FROM events GROUP BY state").fetchall())
            duplicated = conn.execute(
                "SELECT count(*) FROM events WHERE resent_after_uncertain = 1 AND state = 'sent'"
            ).fetchone()[0]
            missing = conn.execute("SELECT count(*) FROM events WHERE skipped_uncertain = 1").fetchone()[0]
            requests = conn.execute("SELECT count(*) FROM requests").fetchone()[0]
            invalid = self.invalid_count
        return {
            "planned": sum(by_state.values()),
            **{state: by_state.get(state, 0) for state in STATES},
            "invalid": invalid,
            "possibly_duplicated": duplicated,
            "possibly_missing": missing,
            "requests": requests,
        }

    def uncertain_events(self) -> list[dict[str, Any]]:
        """Events the server may hold zero or two copies of.

        status: "duplicated" (uncertain, then sent again), "missing" (uncertain and skipped),
        "possibly stored" (uncertain, then rejected when resent), "unresolved" (uncertain and not
        resent yet, or resent without a final answer). `copies_at_most`: how many copies the server
        may hold (each send that ended uncertain, plus the acknowledged one).
        """
        has_counts = _has_table(self._conn, "uncertain_sends")
        sends = "COALESCE((SELECT n FROM uncertain_sends u WHERE u.event_id = events.event_id), 1)" if has_counts else "1"
        rows = self._conn.execute(
            f"SELECT event_id, source_file, source_row, timestamp, state, skipped_uncertain, {sends} FROM events "
            "WHERE rowid IN (SELECT rowid FROM events WHERE state = 'uncertain' "
            "UNION ALL SELECT rowid FROM events WHERE resent_after_uncertain = 1) ORDER BY seq, rowid"
        )
        result = []
        for event_id, source_file, source_row, timestamp, state, skipped, uncertain_sends in rows:
            if skipped:
                status = "missing"
            elif state == "sent":
                status = "duplicated"
            elif state == "rejected":  # the resend was refused; the first attempt may have been stored
                status = "possibly stored"
            else:
                status = "unresolved"
            result.append(
                {
                    "event_id": event_id,
                    "source_file": source_file,
                    "source_row": source_row,
                    "timestamp": timestamp,
                    "state": state,
                    "status": status,
                    "copies_at_most": int(uncertain_sends) + (state == "sent"),
                }
            )
        return result

    def rejected_events(self) -> Iterator[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT event_id, source_file, source_row, reason, body FROM events "
            "WHERE state = 'rejected' ORDER BY seq, rowid"
        )
        for event_id, source_file, source_row, reason, body in rows:
            yield {
                "event_id": event_id,
                "source_file": source_file,
                "source_row": source_row,
                "reason": reason,
                "body": body,
            }

    def sent_events(self) -> Iterator[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT event_id, source_file, source_row, server_id, body FROM events "
            "WHERE state = 'sent' ORDER BY seq, rowid"
        )
        for event_id, source_file, source_row, server_id, body in rows:
            yield {
                "event_id": event_id,
                "source_file": source_file,
                "source_row": source_row,
                "server_id": server_id,
                "body": body,
            }

    # ----------------------------------------------------------------- the ledger's view

    def forget_elsewhere(self, event_ids: Sequence[str], by: Mapping[str, int]) -> int:
        """Drop events not yet settled here (pending, or uncertain and not skipped) that another import
        to the same target sent or may have sent: they are never sent from here. `by` (checkpoint ->
        count) is added to the record of such events."""
        with self._write() as conn:
            removed = 0
            for start in range(0, len(event_ids), 500):
                part = list(event_ids[start : start + 500])
                removed += conn.execute(
                    f"DELETE FROM events WHERE {_SENDABLE} AND resent_after_uncertain = 0 "
                    f"AND event_id IN ({','.join('?' * len(part))})", part
                ).rowcount
            record = self._meta("sent_elsewhere") or {}
            for name, n in by.items():
                record[name] = int(record.get(name, 0)) + int(n)
            self._set_meta(conn, "sent_elsewhere", record)
        return removed

    @property
    def sent_elsewhere(self) -> dict[str, int]:
        """checkpoint -> events left out of this import because that import sent them (the ledger said so)."""
        return dict(self._meta("sent_elsewhere") or {})

    def states_of(self, event_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """event_id -> (state, server_id) for the ids planned here."""
        out: dict[str, tuple[str, str | None]] = {}
        ids = list(event_ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows = self._conn.execute(
                f"SELECT event_id, state, server_id FROM events WHERE event_id IN ({','.join('?' * len(part))})", part
            )
            out.update((event_id, (state, server_id)) for event_id, state, server_id in rows)
        return out

    def events_by_id(self, event_ids: Iterable[str]) -> list[PlannedEvent]:
        ids = list(event_ids)
        out: list[PlannedEvent] = []
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            out += [PlannedEvent(*row) for row in self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id IN ({','.join('?' * len(part))})", part)]
        return out

    def settled_events(self) -> Iterator[tuple[str, str, str, str | None, str]]:
        """(event_id, body, 'sent' | 'uncertain', server_id, "file:row") of every event the server
        holds or may hold: sent, uncertain, in flight, or resent after an uncertain attempt."""
        rows = self._conn.execute(
            "SELECT event_id, body, CASE WHEN state = 'sent' THEN 'sent' ELSE 'uncertain' END, server_id, "
            "source_file || ':' || source_row FROM events WHERE rowid IN ("
            "SELECT rowid FROM events WHERE state IN ('sent', 'uncertain', 'in_flight') "
            "UNION SELECT rowid FROM events WHERE resent_after_uncertain = 1)"
        )
        yield from rows

    def ledger_adopted(self) -> str | None:
        """The ledger this checkpoint's earlier history was copied into (None: never)."""
        value = self._meta("ledger_adopted")
        return None if value is None else str(value)

    def set_ledger_adopted(self, ledger_key: str) -> None:
        with self._write() as conn:
            self._set_meta(conn, "ledger_adopted", ledger_key)

    # ----------------------------------------------------------------- runs

    def start_run(self, started_at: float, argv_summary: str) -> int:
        with self._write() as conn:
            run_id = conn.execute(
                "INSERT INTO runs (started_at, argv_summary) VALUES (?, ?)", (started_at, argv_summary)
            ).lastrowid
        assert run_id is not None
        return run_id

    def end_run(self, run_id: int, ended_at: float, outcome: str) -> None:
        """Close a run, storing the counts at its end."""
        counts = json.dumps(self.counts(), sort_keys=True)
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE runs SET ended_at = ?, outcome = ?, counts = ? WHERE run_id = ?",
                (ended_at, outcome, counts, run_id),
            ).rowcount
            if changed != 1:
                raise ValueError(f"unknown run {run_id}")

    def runs(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT run_id, started_at, ended_at, argv_summary, outcome, counts FROM runs ORDER BY run_id"
        )
        return [
            {
                "run_id": run_id,
                "started_at": started_at,
                "ended_at": ended_at,
                "argv_summary": argv_summary,
                "outcome": outcome,
                "counts": None if counts is None else json.loads(counts),
            }
            for run_id, started_at, ended_at, argv_summary, outcome, counts in rows
        ]

    def activity(self) -> dict[str, float | None]:
        """created_at, first_request_at, last_request_at and last_activity_at (all wall-clock seconds)."""
        with self._read() as conn:
            first_request, last_request, last_finish = conn.execute(
                "SELECT min(started_at), max(started_at), max(finished_at) FROM requests"
            ).fetchone()
            last_run_start, last_run_end = conn.execute("SELECT max(started_at), max(ended_at) FROM runs").fetchone()
            created_at = self.created_at
        moments = [t for t in (created_at, last_request, last_finish, last_run_start, last_run_end) if t is not None]
        return {
            "created_at": created_at,
            "first_request_at": first_request,
            "last_request_at": last_request,
            "last_activity_at": max(moments),
        }


class Draft:
    """A new checkpoint being built (see Journal.draft): one transaction on a file nothing else sees.

    add() takes the plan's events as rows, publish() builds the indexes and the state counts, writes
    the meta, commits, syncs, checks the file and links it into place, then opens it as a Journal."""

    def __init__(self, path: Path, tmp: Path, conn: sqlite3.Connection):
        self._path = path
        self._tmp = tmp
        self._conn: sqlite3.Connection | None = conn

    def __enter__(self) -> Draft:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.discard()

    def add(self, rows: Iterable[tuple[str, int, str, str, int, str]]) -> None:
        """(event_id, seq, body, source_file, source_row, timestamp) rows, as pending events. An
        event id given twice keeps its first row (as Journal.add_events does)."""
        conn = self._live()
        with _creating(self._path, self._tmp):
            conn.executemany(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def publish(self, *, leave_out: Sequence[int] = (), invalid_count: int | None = None,
                meta: Mapping[str, Any] | None = None) -> Journal:
        """Make the draft the checkpoint at its path and open it. `leave_out`: seqs of added events
        not to keep (the ledger knows them); `invalid_count` marks the plan complete (see
        Journal.plan_complete); `meta`: more meta values (e.g. sent_elsewhere)."""
        conn = self._live()
        with _creating(self._path, self._tmp):
            by_id, *others = _EVENT_INDEXES
            try:
                conn.execute(by_id)
            except sqlite3.IntegrityError:  # an id given twice: its first row is kept
                conn.execute("DELETE FROM events WHERE rowid NOT IN (SELECT min(rowid) FROM events GROUP BY event_id)")
                conn.execute(by_id)
            for statement in others:
                conn.execute(statement)
            skip = sorted(set(leave_out))
            for start in range(0, len(skip), 500):
                part = skip[start : start + 500]
                conn.execute(f"DELETE FROM events WHERE state = 'pending' AND seq IN ({','.join('?' * len(part))})", part)
            _add_state_counts(conn)
            values = dict(meta or {})
            if invalid_count is not None:
                if invalid_count < 0:
                    raise ValueError(f"invalid count must be >= 0, got {invalid_count}")
                values["invalid_count"] = int(invalid_count)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                             [(k, json.dumps(v, sort_keys=True)) for k, v in values.items()])
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            conn.execute("COMMIT")
            conn.close()
            self._conn = None
            _verify_created(self._tmp, self._path, events=stored)
            _publish(self._tmp, self._path)
        _remove_database(self._tmp)
        return Journal.open(self._path)

    def discard(self) -> None:
        """Remove the draft (nothing was published)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        _remove_database(self._tmp)

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"the draft of {self._path} is already published or discarded")
        return self._conn


# --------------------------------------------------------------------- helpers


def _can_write_beside(path: Path) -> bool:
    """Whether SQLite can create its -shm (and -wal) files beside the checkpoint."""
    parent = path.parent if str(path.parent) else Path(".")
    shm = Path(f"{path}-shm")
    if shm.exists():
        return os.access(shm, os.R_OK | os.W_OK)
    return os.access(parent, os.W_OK | os.X_OK) and not _read_only_mount(parent)


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _connect(path: Path, mode: str, *, immutable: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit); `mode` "rw" never creates a file."""
    uri = f"{path.resolve().as_uri()}?mode={mode}{'&immutable=1' if immutable else ''}"
    # One thread at a time uses a journal, but not always the one that opened it (an HTTP request
    # runs on a worker thread, and a test's fake server may look at the journal from there).
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


def _become_uncertain(conn: sqlite3.Connection, ids: Sequence[str], condition: str, params: tuple[Any, ...]) -> int:
    """The one transition to 'uncertain' (an answer that settled nothing, or a death mid-request):
    the events' state, and the count of their sends that may each have stored a copy."""
    changed = 0
    for event_id in ids:
        cursor = conn.execute(f"UPDATE events SET state = 'uncertain' WHERE event_id = ? AND {condition}", (event_id, *params))
        if cursor.rowcount:
            changed += cursor.rowcount
            conn.execute(
                "INSERT INTO uncertain_sends (event_id, n) VALUES (?, 1) ON CONFLICT (event_id) DO UPDATE SET n = n + 1",
                (event_id,),
            )
    return changed


def _changed(cursor: sqlite3.Cursor) -> int:
    """Rows the statement changed itself (not its triggers'), 0 for an executemany of nothing."""
    return max(0, cursor.rowcount)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()[0] > 0


def _is_disk_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL if code is not None else "database or disk is full" in str(exc)


def _check_identity(conn: sqlite3.Connection, path: Path) -> None:
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.OperationalError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise CheckpointError(f"{path}: not a devgrid-backfill checkpoint ({exc})") from exc
    if application_id != APPLICATION_ID:
        raise CheckpointError(f"{path}: not a devgrid-backfill checkpoint")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint schema version {version} is not supported "
            f"(this devgrid-backfill reads version {SCHEMA_VERSION})"
        )


def _configure(conn: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    if not read_only:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise CheckpointError(f"{path}: SQLite cannot use WAL mode here (got {mode!r}); use a local disk")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    conn.execute("PRAGMA synchronous = FULL")  # per connection: a commit is on disk when it returns
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    if read_only:
        conn.execute("PRAGMA query_only = ON")


def _lock(path: Path) -> int | None:
    """Take the writer lock (released by the kernel if the process dies), or refuse."""
    if fcntl is None:  # pragma: no cover
        return None
    lock_path = f"{path}-lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(f"cannot create lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            raise CheckpointError(f"checkpoint {path} is in use by another devgrid-backfill process") from exc
        raise CheckpointError(f"cannot lock checkpoint {path}: {exc.strerror}") from exc
    return fd


def _check_directory(path: Path) -> None:
    """Refuse, before any work, a checkpoint that cannot be created where it is asked for."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CheckpointError(f"cannot create checkpoint {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(
            f"cannot create checkpoint {path}: the directory {parent} is not writable (read-only or no permission); "
            "give --checkpoint a path in a writable directory"
        )


def check_writable(path: str | os.PathLike[str]) -> None:
    """Fail now, before planning, if the checkpoint at `path` could not be created or updated."""
    path = Path(path)
    if os.path.lexists(path):
        if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent if str(path.parent) else ".", os.W_OK):
            raise CheckpointError(
                f"checkpoint {path} cannot be updated here (read-only file or directory); "
                "copy it to a writable directory and resume from there, or use backfill status to read it"
            )
        return
    _check_directory(path)
    probe = path.with_name(f".{path.name}.{os.getpid()}.probe")
    try:
        with open(probe, "xb") as handle:
            handle.write(b"x")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"cannot create checkpoint {path}: the disk is full; free some space and rerun") from None
        raise CheckpointError(
            f"cannot create checkpoint {path}: {exc.strerror or exc} (read-only file system?); "
            "give --checkpoint a path in a writable directory"
        ) from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass


@contextmanager
def _creating(path: Path, tmp: Path) -> Iterator[None]:
    """While a new checkpoint is built: errors in one line; on any failure the temporary file goes."""
    try:
        yield
    except BaseException as exc:
        _remove_database(tmp)
        if isinstance(exc, sqlite3.Error):
            if _is_disk_full(exc):
                raise DiskFull(f"cannot create checkpoint {path}: the disk is full; nothing was sent: "
                               "free some space and rerun") from None
            raise CheckpointError(f"cannot create checkpoint {path}: {exc}") from exc
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOSPC:
                raise DiskFull(f"cannot create checkpoint {path}: the disk is full; nothing was sent: "
                               "free some space and rerun") from None
            raise CheckpointError(f"cannot create checkpoint {path}: {exc.strerror or exc}") from None
        raise


def _remove_stale_drafts(path: Path) -> None:
    """Remove the temporary files of drafts of `path` whose process is gone (killed while planning)."""
    parent = path.parent if str(path.parent) else Path(".")
    for candidate in parent.glob(f".{glob_escape(path.name)}.*.creating"):
        pid = candidate.name[len(path.name) + 2 : -len(".creating")]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _remove_database(candidate)
        except OSError:  # another user's process: alive
            pass


def _verify_created(tmp: Path, path: Path, *, events: int = 0) -> None:
    """The new file holds the whole schema, meta and plan, on disk, before it is published."""
    conn = _connect(tmp, "ro")
    try:
        _check_identity(conn, path)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "events", "requests", "runs", "state_counts"} <= tables \
                or conn.execute("SELECT count(*) FROM meta").fetchone()[0] < 6 \
                or conn.execute("SELECT count(*) FROM events").fetchone()[0] != events \
                or conn.execute("SELECT sum(n) FROM state_counts").fetchone()[0] != events:
            raise CheckpointError(f"cannot create checkpoint {path}: the new file is incomplete")
    finally:
        conn.close()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, path: Path) -> None:
    """Move the finished file into place atomically, never over an existing file; sync the directory."""
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise CheckpointError(f"checkpoint already exists: {path}") from exc
    except OSError:  # no hard links on this file system
        if os.path.lexists(path):
            raise CheckpointError(f"checkpoint already exists: {path}") from None
        os.rename(tmp, path)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_database(path: Path) -> None:
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def _check_options(options: Mapping[str, Any]) -> None:
    secret = [key for key in options if _SECRET_OPTION.search(key)]
    if secret:
        raise ValueError(f"options must not include credentials (the checkpoint is stored in clear): {secret}")
    json.dumps(dict(options))  # fail now, not halfway through a transaction

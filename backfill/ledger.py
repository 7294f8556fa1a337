"""The ledger: one SQLite file per DevGrid target and API key, shared by every import to them.

The API has no idempotency key, no read-back and no delete, so a checkpoint alone cannot stop a
second import (another export of the same history, another terminal, another machine) from sending
a deployment again. The ledger remembers every event that any checkpoint sent to the target, or may
have sent, and every request time, so that:

- planning leaves out events already sent (or possibly sent) by an earlier import, recognised by
  event id and by a fingerprint of the body as sent;
- an event is *claimed* in the ledger before its request goes out, so two imports running at once
  never both send it;
- two imports with one key share the key's rate budget.

Identity: the file is named after the target's host and a salted hash of the key (`key_id`); the
key itself is never stored.

Consistency with the checkpoints, whose state is the truth for their own events (the two files
cannot share one atomic SQLite transaction in WAL mode, so the writes are ordered):

    claim (ledger: in_flight)  ->  begin_request (checkpoint)  ->  POST  ->
    finish_request (checkpoint)  ->  settle (ledger: sent | uncertain | released)

A process killed between two of these steps leaves `in_flight` rows in the ledger for its checkpoint,
and only then. `reconcile` (run whenever that checkpoint is opened for sending) settles them from the
checkpoint's states. Until then, other imports treat them as possibly sent: never resent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from backfill.errors import LedgerError

__all__ = [
    "Ledger",
    "LedgerMatches",
    "default_ledger_path",
    "fingerprint",
    "key_id",
    "LEDGER_ENV",
]

LEDGER_ENV = "BACKFILL_LEDGER"
APPLICATION_ID = 0x4447424C  # "DGBL"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
# A ledger of at most this many entries, and a quarter of the plan's size or less, is read into
# memory to find the planned events it knows (faster than a temporary table of the whole plan).
SMALL_LEDGER = 100_000
EXPORT_FORMAT = "devgrid-backfill-ledger"
_KEY_SALT = b"devgrid-backfill ledger key v1\x00"
_KEY_ITERATIONS = 100_000

_SCHEMA = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE entries (
        checkpoint  TEXT NOT NULL,         -- the checkpoint's uid
        event_id    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,         -- sha256 of the body as sent, nulls dropped
        state       TEXT NOT NULL CHECK (state IN ('in_flight', 'sent', 'uncertain')),
        server_id   TEXT,
        source      TEXT,                  -- "file:row" of the event in that import
        at          REAL NOT NULL,         -- wall clock of the last change
        PRIMARY KEY (checkpoint, event_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX entries_by_id ON entries (event_id)",
    "CREATE INDEX entries_by_fingerprint ON entries (fingerprint)",
    "CREATE INDEX entries_in_flight ON entries (checkpoint) WHERE state = 'in_flight'",
    """CREATE TABLE checkpoints (
        uid        TEXT PRIMARY KEY,
        path       TEXT NOT NULL,
        host       TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen  REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE requests (
        request_id INTEGER PRIMARY KEY,
        t          REAL NOT NULL,          -- wall clock: when the server saw it at the latest
        boot_id    TEXT NOT NULL,          -- the machine boot the monotonic time belongs to
        boot_t     REAL NOT NULL,          -- CLOCK_BOOTTIME of the same moment
        pid        INTEGER NOT NULL
    )""",
    "CREATE INDEX requests_by_t ON requests (t)",
)

# Structural `"name":null` members of the planner's bodies (an attribute mapped but empty): two
# mappings that differ only in mapping an attribute that is always empty make the same event. Inside
# a JSON string a quote is escaped, so these patterns only ever match members. RE2-compatible, so the
# vectorized form (arrow) and the one-event form (re) are the same rule.
_NULL_LATER = r',"[a-z_]+":null'
_NULL_FIRST = r'\{"[a-z_]+":null,?'
_NULL_LATER_RE = re.compile(_NULL_LATER)
_NULL_FIRST_RE = re.compile(_NULL_FIRST)


def _strip_nulls(body: str) -> str:
    return _NULL_FIRST_RE.sub("{", _NULL_LATER_RE.sub("", body))


def fingerprint(body: str) -> str:
    """The content identity of an event body as sent (type, entityId, timestamp, attributes)."""
    return hashlib.sha256(_strip_nulls(body).encode("utf-8")).hexdigest()


def fingerprints(bodies: Any) -> list[str]:
    """fingerprint() of every body of a pandas Series or arrow array of text: nulls stripped by arrow
    kernels (only in the bodies that hold one), then one sha256 per event."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = pa.array(bodies, type=pa.string()) if not isinstance(bodies, (pa.Array, pa.ChunkedArray)) else bodies
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    texts = array.cast(pa.binary()).to_pylist()
    having = pc.indices_nonzero(pc.match_substring(array, '":null'))
    if len(having):
        stripped = pc.replace_substring_regex(array.take(having), _NULL_LATER, "")
        stripped = pc.replace_substring_regex(stripped, _NULL_FIRST, "{").cast(pa.binary()).to_pylist()
        for position, text in zip(having.to_pylist(), stripped):
            texts[position] = text
    sha = hashlib.sha256
    return [sha(text).hexdigest() for text in texts]


def key_id(base_url: str, api_key: str) -> str:
    """A salted, slow hash that names the key in the ledger; the key cannot be recovered from it."""
    salt = _KEY_SALT + base_url.rstrip("/").encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", api_key.encode("utf-8"), salt, _KEY_ITERATIONS).hex()[:32]


def default_ledger_path(base_url: str, kid: str, environ: Mapping[str, str] = os.environ) -> Path:
    """$BACKFILL_LEDGER, else <user state dir>/devgrid-backfill/ledgers/<host>-<key id>.sqlite."""
    override = environ.get(LEDGER_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    parts = urlsplit(base_url)
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", parts.hostname or "target").strip("-") or "target"
    if parts.port:
        slug += f"-{parts.port}"
    return ledger_dir() / f"{slug}-{kid[:16]}.sqlite"


def ledger_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_state_dir("devgrid-backfill")) / "ledgers"


def open_for(base_url: str, api_key: str, *, path: str | os.PathLike[str] | None = None) -> Ledger:
    """The ledger of this target and key: `path`, else $BACKFILL_LEDGER, else the default place."""
    kid = key_id(base_url, api_key)
    return Ledger.open(Path(path) if path else default_ledger_path(base_url, kid), base_url=base_url, key_id=kid)


def all_ledgers() -> list[Path]:
    """The ledgers in the default place (and $BACKFILL_LEDGER), for `ledger show` without a target."""
    found = sorted(ledger_dir().glob("*.sqlite")) if ledger_dir().is_dir() else []
    override = os.environ.get(LEDGER_ENV, "").strip()
    if override and Path(override).expanduser().exists():
        found.insert(0, Path(override).expanduser())
    return found


def import_file(source: str | os.PathLike[str], *, path: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, int]]:
    """Merge a `ledger export` file into the ledger it belongs to (its header names target and key id)."""
    try:
        with open(source, encoding="utf-8") as handle:
            first = handle.readline()
            try:
                header = json.loads(first)
            except ValueError:
                header = None
            if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
                raise LedgerError(f"{source}: not a `backfill ledger export` file (line 1 has no ledger header)")
            base_url, kid = str(header.get("base_url")), str(header.get("key_id"))
            target = Path(path) if path else default_ledger_path(base_url, kid)
            handle.seek(0)
            with Ledger.open(target, base_url=base_url, key_id=kid) as ledger:
                return target, ledger.import_lines(handle, str(source))
    except OSError as exc:
        raise LedgerError(f"{source}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise LedgerError(f"{source}: not UTF-8 text; is this a `backfill ledger export` file?") from None


def _boot() -> tuple[str, float]:
    """(boot id, seconds since boot including suspend): one clock for every process on this machine."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot_id = handle.read().strip()
    except OSError:
        boot_id = f"{socket.gethostname()}-unknown-boot"
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return boot_id, time.clock_gettime(clock)


@dataclass(frozen=True)
class LedgerMatches:
    """Which planned events the ledger already knows, and from where."""

    by_id: list[int]  # positions known by event id (sent or possibly sent by another import)
    by_fingerprint: list[int]  # positions known only by content
    checkpoints: dict[str, int]  # checkpoint path -> events it accounts for
    uncertain: int  # of the matches, how many the ledger holds as uncertain or in flight

    @property
    def positions(self) -> list[int]:
        return sorted(self.by_id + self.by_fingerprint)

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_fingerprint)


class Ledger:
    """An open ledger. `Ledger.open(path, base_url=..., key_id=...)` creates it when missing."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self._conn = conn
        self._answers: list[tuple[int, float, str, float]] = []  # answer times not yet written
        self._durable = True  # the connection's synchronous mode: FULL

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, base_url: str | None, key_id: str | None, create: bool = True) -> Ledger:
        """Open (or create) the ledger at `path`; refuse one that belongs to another target or key.

        base_url/key_id None: accept whatever the ledger holds (`ledger show`, `ledger export`).
        """
        path = Path(path)
        exists = path.exists()
        if not exists and not create:
            raise LedgerError(f"ledger not found: {path}")
        if not exists:
            _create(path, base_url, key_id)
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=BUSY_TIMEOUT_S,
                                   isolation_level=None)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}; check the file, or pass --ledger PATH") from exc
        try:
            _check(conn, path)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
                raise LedgerError(f"{path}: SQLite cannot use WAL mode here; put the ledger on a local disk (--ledger PATH)")
            conn.execute("PRAGMA synchronous = FULL")
            ledger = cls(path, conn)
            for name, expected in (("base_url", base_url), ("key_id", key_id)):
                stored = ledger._meta(name)
                if expected is not None and stored != expected:
                    what = "target" if name == "base_url" else "API key"
                    raise LedgerError(
                        f"ledger {path} belongs to another {what}"
                        + (f" ({stored})" if name == "base_url" else "")
                        + "; use the ledger of this target and key (unset BACKFILL_LEDGER or pass another --ledger)"
                    )
        except sqlite3.Error as exc:
            conn.close()
            raise LedgerError(f"ledger {path} is unreadable ({exc}); move it away to start a new one, "
                              "or restore it from a `backfill ledger export`") from exc
        except BaseException:
            conn.close()
            raise
        return ledger

    def close(self) -> None:
        if self._conn is not None:
            if self._answers:
                with contextlib.suppress(LedgerError, sqlite3.Error):
                    with self._write():
                        pass
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        return str(self._meta("base_url"))

    @property
    def key_id(self) -> str:
        return str(self._meta("key_id"))

    def _meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. durable=False: on disk against a killed process, not against power
        loss (no fsync): for what a lost write cannot turn into a second copy (see settle, reserve)."""
        conn = self._conn
        if durable != self._durable:
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise LedgerError(f"ledger {self.path} is locked ({exc}) by another process for over "
                              f"{BUSY_TIMEOUT_S:.0f} s; retry, or pass --ledger PATH") from exc
        try:
            self._flush_answers(conn)
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LedgerError(f"cannot write the ledger {self.path}: {exc}") from exc
        self._answers.clear()

    def _flush_answers(self, conn: sqlite3.Connection) -> None:
        """Answer times noted since the last write go in with this one (a commit fewer per request)."""
        if not self._answers:
            return
        conn.executemany("UPDATE requests SET t = max(t, ?), boot_id = ?, boot_t = ? WHERE request_id = ?",
                         [(wall, boot_id, boot_t, request_id) for request_id, wall, boot_id, boot_t in self._answers])
        oldest = min(wall for _, wall, _, _ in self._answers) - 86400.0
        conn.execute("DELETE FROM requests WHERE t < ?", (oldest,))

    # ----------------------------------------------------------------- checkpoints

    def register(self, uid: str, path: str) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO checkpoints (uid, path, host, first_seen, last_seen) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (uid) DO UPDATE SET path = excluded.path, host = excluded.host, last_seen = excluded.last_seen",
                (uid, os.path.abspath(path), socket.gethostname(), now, now),
            )

    def adopt(self, uid: str, events: Iterable[tuple[str, str, str, str | None, str]]) -> int:
        """Record a checkpoint's settled events (event_id, body, state, server_id, source) in one
        transaction; entries already there are kept. For checkpoints that sent before they had a ledger."""
        now = time.time()
        rows = ((uid, event_id, fingerprint(body), state, server_id, source, now)
                for event_id, body, state, server_id, source in events)
        with self._write() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            return conn.total_changes - before

    # ----------------------------------------------------------------- planning

    def is_empty(self) -> bool:
        """True when no import has sent (or claimed) anything here yet: planning needs no lookups."""
        return self._conn.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is None

    def known(self, event_ids: Sequence[str], prints: Sequence[str], *, checkpoint: str | None) -> LedgerMatches:
        """The planned events (by position) that another import sent or may have sent.

        Entries of `checkpoint` itself with the same event id are its own business (its checkpoint
        never sends an event twice); a same-content entry under another id counts, even in it.
        """
        conn = self._conn
        mine = checkpoint or ""
        conn.execute("BEGIN")
        try:
            entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
            if entries <= SMALL_LEDGER and entries * 4 <= len(event_ids):
                by_id, by_fp = self._known_in_memory(conn, event_ids, prints, mine)
            else:
                by_id, by_fp = self._known_by_join(conn, event_ids, prints, mine)
            paths = dict(conn.execute("SELECT uid, path FROM checkpoints").fetchall())
        finally:
            conn.execute("COMMIT")
        id_positions = {pos for pos, _, _ in by_id}
        by_fp = [row for row in by_fp if row[0] not in id_positions]
        per_checkpoint: dict[str, int] = {}
        for _, uid, _ in (*by_id, *by_fp):
            name = paths.get(uid, uid)
            per_checkpoint[name] = per_checkpoint.get(name, 0) + 1
        return LedgerMatches(
            by_id=sorted(id_positions),
            by_fingerprint=sorted(pos for pos, _, _ in by_fp),
            checkpoints=per_checkpoint,
            uncertain=sum(1 for _, _, unsure in (*by_id, *by_fp) if unsure),
        )

    @staticmethod
    def _known_by_join(conn: sqlite3.Connection, event_ids: Sequence[str], prints: Sequence[str],
                       mine: str) -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
        """(position, first checkpoint, any not sent) of the planned events known by id, and by
        content under another id: the plan in a temporary table, joined with the entries' indexes."""
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS planned (pos INTEGER PRIMARY KEY, event_id TEXT, fingerprint TEXT)")
        try:
            conn.execute("DELETE FROM planned")
            conn.executemany("INSERT INTO planned VALUES (?, ?, ?)", zip(range(len(event_ids)), event_ids, prints))
            by_id = conn.execute(
                "SELECT p.pos, min(e.checkpoint), max(e.state <> 'sent') FROM planned p JOIN entries e "
                "ON e.event_id = p.event_id AND e.checkpoint <> ? GROUP BY p.pos", (mine,)
            ).fetchall()
            by_fp = conn.execute(
                "SELECT p.pos, min(e.checkpoint), max(e.state <> 'sent') FROM planned p JOIN entries e "
                "ON e.fingerprint = p.fingerprint AND NOT (e.checkpoint = ? AND e.event_id = p.event_id) "
                "GROUP BY p.pos", (mine,)
            ).fetchall()
        finally:
            conn.execute("DELETE FROM planned")
        return by_id, by_fp

    @staticmethod
    def _known_in_memory(conn: sqlite3.Connection, event_ids: Sequence[str], prints: Sequence[str],
                         mine: str) -> tuple[list[tuple[int, str, int]], list[tuple[int, str, int]]]:
        """As _known_by_join, for a ledger much smaller than the plan: its entries read into memory,
        the plan's ids and fingerprints looked up among them by pandas' hash tables (C)."""
        import pandas as pd

        ids_of: dict[str, list[tuple[str, int]]] = {}
        prints_of: dict[str, list[tuple[str, str, int]]] = {}
        for uid, event_id, fp, unsure in conn.execute("SELECT checkpoint, event_id, fingerprint, state <> 'sent' FROM entries"):
            if uid != mine:
                ids_of.setdefault(event_id, []).append((uid, unsure))
            prints_of.setdefault(fp, []).append((uid, event_id, unsure))

        def matches(values: Sequence[str], table: dict[str, list]) -> list[int]:
            if not table:
                return []
            return pd.Index(values, dtype=object).isin(list(table)).nonzero()[0].tolist()

        by_id = []
        for pos in matches(event_ids, ids_of):
            found = ids_of[event_ids[pos]]
            by_id.append((pos, min(uid for uid, _ in found), max(unsure for _, unsure in found)))
        by_fp = []
        for pos in matches(prints, prints_of):
            found = [(uid, unsure) for uid, event_id, unsure in prints_of[prints[pos]]
                     if not (uid == mine and event_id == event_ids[pos])]
            if found:
                by_fp.append((pos, min(uid for uid, _ in found), max(unsure for _, unsure in found)))
        return by_id, by_fp

    # ----------------------------------------------------------------- sending

    def claim(self, uid: str, events: Sequence[tuple[str, str, str]], *, check: bool = True) -> list[str]:
        """Before a request: record its events (event_id, body, source) as in flight for checkpoint
        `uid`, in one transaction. Returns the ids that another import sent or may have sent meanwhile:
        those are not claimed and must not be sent. check=False claims without looking."""
        now = time.time()
        conflicts: list[str] = []
        with self._write() as conn:
            for event_id, body, source in events:
                fp = fingerprint(body)
                if check:
                    other = conn.execute(
                        "SELECT 1 FROM entries WHERE (event_id = ? AND checkpoint <> ?) "
                        "OR (fingerprint = ? AND NOT (checkpoint = ? AND event_id = ?)) LIMIT 1",
                        (event_id, uid, fp, uid, event_id),
                    ).fetchone()
                    if other:
                        conflicts.append(event_id)
                        continue
                conn.execute(
                    "INSERT INTO entries VALUES (?, ?, ?, 'in_flight', NULL, ?, ?) "
                    "ON CONFLICT (checkpoint, event_id) DO NOTHING",
                    (uid, event_id, fp, source, now),
                )
        return conflicts

    def settle(self, uid: str, *, sent: Mapping[str, str] = {}, uncertain: Iterable[str] = (),
               released: Iterable[str] = ()) -> None:
        """After the checkpoint recorded a request's outcome: sent (id -> server id), uncertain,
        released (not stored: pending again or rejected; only a fresh claim is removed).

        Not fsynced: if power loss takes it, the claims stay in flight (other imports never resend
        them) and the checkpoint's next run settles them again from its own, fsynced, state."""
        now = time.time()
        with self._write(durable=False) as conn:
            conn.executemany(
                "UPDATE entries SET state = 'sent', server_id = ?, at = ? WHERE checkpoint = ? AND event_id = ?",
                [(server_id, now, uid, event_id) for event_id, server_id in sent.items()],
            )
            conn.executemany(
                "UPDATE entries SET state = 'uncertain', at = ? WHERE checkpoint = ? AND event_id = ? AND state <> 'sent'",
                [(now, uid, event_id) for event_id in uncertain],
            )
            conn.executemany(
                "DELETE FROM entries WHERE checkpoint = ? AND event_id = ? AND state = 'in_flight'",
                [(uid, event_id) for event_id in released],
            )

    def in_flight(self, uid: str) -> list[str]:
        return [row[0] for row in self._conn.execute(
            "SELECT event_id FROM entries WHERE checkpoint = ? AND state = 'in_flight'", (uid,))]

    def reconcile(self, uid: str, states: Mapping[str, tuple[str, str | None]]) -> dict[str, int]:
        """Settle the in-flight entries a killed process left for checkpoint `uid`, from the
        checkpoint's states (event_id -> (state, server_id)); run while holding its writer lock."""
        sent: dict[str, str] = {}
        uncertain: list[str] = []
        released: list[str] = []
        for event_id in self.in_flight(uid):
            state, server_id = states.get(event_id, ("pending", None))
            if state == "sent":
                sent[event_id] = server_id or ""
            elif state in ("uncertain", "in_flight"):
                uncertain.append(event_id)
            else:
                released.append(event_id)
        if sent or uncertain or released:
            self.settle(uid, sent=sent, uncertain=uncertain, released=released)
        return {"sent": len(sent), "uncertain": len(uncertain), "released": len(released)}

    # ----------------------------------------------------------------- the shared rate budget

    def request_times(self, since: float) -> list[tuple[float, str, float]]:
        """(wall time, boot id, boot time) of the key's requests since `since` (wall clock)."""
        return self._conn.execute(
            "SELECT t, boot_id, boot_t FROM requests WHERE t >= ? ORDER BY t", (since,)
        ).fetchall()

    @contextmanager
    def budget(self) -> Iterator[sqlite3.Connection]:
        """The key's request times under the ledger's write lock: read, decide, reserve, commit.
        Not fsynced: power loss can only make the windows forget a few requests (then a 429)."""
        with self._write(durable=False) as conn:
            yield conn

    def reserve(self, conn: sqlite3.Connection, wall: float) -> int:
        boot_id, boot_t = _boot()
        request_id = conn.execute(
            "INSERT INTO requests (t, boot_id, boot_t, pid) VALUES (?, ?, ?, ?)", (wall, boot_id, boot_t, os.getpid())
        ).lastrowid
        assert request_id is not None
        return request_id

    def answered(self, request_id: int, wall: float, *, now: bool = False) -> None:
        """The request's answer came at `wall`: the server counted it no later. Written with the next
        write (the settling of the same request follows at once), or at once with now=True."""
        boot_id, boot_t = _boot()
        self._answers.append((request_id, wall, boot_id, boot_t))
        if now:
            with self._write():
                pass

    # ----------------------------------------------------------------- reports and transfer

    def summary(self) -> dict[str, Any]:
        conn = self._conn
        by_checkpoint = conn.execute(
            "SELECT c.path, c.host, e.state, count(*), min(e.at), max(e.at) FROM entries e "
            "LEFT JOIN checkpoints c ON c.uid = e.checkpoint GROUP BY e.checkpoint, e.state ORDER BY min(e.at)"
        ).fetchall()
        by_date = conn.execute(
            "SELECT date(at, 'unixepoch'), state, count(*) FROM entries GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
        totals = dict(conn.execute("SELECT state, count(*) FROM entries GROUP BY state").fetchall())
        return {
            "ledger": str(self.path),
            "base_url": self.base_url,
            "totals": {state: totals.get(state, 0) for state in ("sent", "uncertain", "in_flight")},
            "checkpoints": [
                {"checkpoint": path or "(unknown)", "host": host, "state": state, "events": n,
                 "first": _iso(first), "last": _iso(last)}
                for path, host, state, n, first, last in by_checkpoint
            ],
            "dates": [{"date": day, "state": state, "events": n} for day, state, n in by_date],
        }

    def export(self, out: IO[str]) -> int:
        """JSON Lines: a header, then every checkpoint and every entry. Returns the entries written."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            out.write(json.dumps({"format": EXPORT_FORMAT, "version": SCHEMA_VERSION, "base_url": self.base_url,
                                  "key_id": self.key_id}) + "\n")
            for uid, path, host, first, last in conn.execute("SELECT uid, path, host, first_seen, last_seen FROM checkpoints"):
                out.write(json.dumps({"checkpoint": uid, "path": path, "host": host, "first_seen": first,
                                      "last_seen": last}) + "\n")
            n = 0
            for row in conn.execute("SELECT checkpoint, event_id, fingerprint, state, server_id, source, at FROM entries"):
                uid, event_id, fp, state, server_id, source, at = row
                out.write(json.dumps({"entry": event_id, "checkpoint": uid, "fingerprint": fp, "state": state,
                                      "server_id": server_id, "source": source, "at": at}) + "\n")
                n += 1
        finally:
            conn.execute("COMMIT")
        return n

    def import_lines(self, lines: Iterable[str], name: str) -> dict[str, int]:
        """Merge an export into this ledger: nothing is lost; a sent entry wins over an uncertain one."""
        header: dict[str, Any] | None = None
        added = upgraded = 0
        with self._write() as conn:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except (ValueError, RecursionError):
                    raise LedgerError(f"{name} line {number}: not JSON; is this a `backfill ledger export` file?") from None
                if not isinstance(doc, dict):
                    raise LedgerError(f"{name} line {number}: not a ledger record")
                if header is None:
                    if doc.get("format") != EXPORT_FORMAT:
                        raise LedgerError(f"{name}: not a `backfill ledger export` file (line 1 has no ledger header)")
                    if doc.get("base_url") != self.base_url or doc.get("key_id") != self.key_id:
                        raise LedgerError(
                            f"{name} is the ledger of {doc.get('base_url')} with another API key or target; "
                            "import it with that target and key"
                        )
                    header = doc
                    continue
                try:
                    if "entry" in doc:
                        state = doc["state"] if doc["state"] in ("sent", "uncertain") else "uncertain"
                        values = (doc["checkpoint"], doc["entry"], doc["fingerprint"], state,
                                  doc.get("server_id"), doc.get("source"), float(doc["at"]))
                        if not all(isinstance(v, str) and v for v in values[:3]):
                            raise TypeError
                        before = conn.total_changes
                        conn.execute("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", values)
                        if conn.total_changes > before:
                            added += 1
                        elif state == "sent":
                            upgraded += conn.execute(
                                "UPDATE entries SET state = 'sent', server_id = ? WHERE checkpoint = ? AND event_id = ? "
                                "AND state <> 'sent'", (values[4], values[0], values[1])
                            ).rowcount
                    elif "checkpoint" in doc:
                        conn.execute(
                            "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                            (str(doc["checkpoint"]), str(doc["path"]), str(doc.get("host") or ""),
                             float(doc["first_seen"]), float(doc["last_seen"])),
                        )
                    else:
                        raise TypeError
                except (KeyError, TypeError, ValueError):
                    raise LedgerError(f"{name} line {number}: not a ledger entry or checkpoint record") from None
            if header is None:
                raise LedgerError(f"{name}: empty; nothing to import")
        return {"added": added, "upgraded": upgraded}


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _create(path: Path, base_url: str | None, kid: str | None) -> None:
    if base_url is None or kid is None:
        raise LedgerError(f"ledger not found: {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.creating")
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in
                 {"base_url": base_url, "key_id": kid, "created_at": time.time(), "tool": "devgrid-backfill"}.items()],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # never over a ledger another process created meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise LedgerError(f"cannot create the ledger {path}: {exc.strerror or exc}; "
                          "pass --ledger PATH (or set BACKFILL_LEDGER) to put it elsewhere") from None
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot create the ledger {path}: {exc}; pass --ledger PATH to put it elsewhere") from None


def _check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path}: not a devgrid-backfill ledger ({exc}); move it away to start a new one, "
                          "or restore it from a `backfill ledger export`") from exc
    if application_id != APPLICATION_ID:
        raise LedgerError(f"{path}: not a devgrid-backfill ledger; pass the right --ledger PATH")
    if version != SCHEMA_VERSION:
        raise LedgerError(f"{path}: ledger version {version} is not supported by this devgrid-backfill")


# How often a process waiting for the shared budget looks again: another process's requests move the
# windows, and its answers arrive later than its reservations.
BUDGET_POLL_S = 2.0


class SharedBudget:
    """The key's rate budget shared by every process that sends with it, through the ledger.

    Each request is reserved under the ledger's write lock once the windows, holding every process's
    requests, allow it; its time moves to the answer's when that comes (the server saw it no later).
    Times are kept on the machine's boot clock (monotonic, counts suspend, one for all processes) and
    the wall clock for other machines' copies; a wall-clock step changes no wait.
    """

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def _local_times(self, conn: sqlite3.Connection, now: float, longest: float) -> list[float]:
        wall = time.time()
        boot_id, boot_now = _boot()
        rows = conn.execute(
            "SELECT t, boot_id, boot_t FROM requests WHERE t >= ? OR (boot_id = ? AND boot_t >= ?)",
            (wall - longest - 60.0, boot_id, boot_now - longest - 60.0),
        ).fetchall()
        out = []
        for t, row_boot, boot_t in rows:
            age = boot_now - boot_t if row_boot == boot_id else wall - t
            if age <= longest:
                out.append(now - max(0.0, age))
        return out

    def wait_turn(self, throttle: Any, *, sleep: Any, on_wait: Any = None) -> int:
        """Sleep until every window (all processes' requests) allows one more; reserve it. Returns its id."""
        announced: float | None = None
        longest = max((limit.period for limit in throttle.limits), default=0.0)
        while True:
            with self.ledger.budget() as conn:
                now = throttle._clock()
                throttle.reset_history(self._local_times(conn, now, longest))
                delay = throttle.delay(now)
                if delay <= 0:
                    return self.ledger.reserve(conn, time.time())
            deadline = now + delay
            if on_wait is not None and (announced is None or abs(deadline - announced) > 1.0):
                on_wait(delay, throttle.binding_limit(now))
                announced = deadline
            sleep(min(delay, BUDGET_POLL_S))

    def answered(self, request_id: int) -> None:
        self.ledger.answered(request_id, time.time())

    def cancel(self, request_id: int) -> None:
        with self.ledger.budget() as conn:
            conn.execute("DELETE FROM requests WHERE request_id = ?", (request_id,))


class LedgeredJournal:
    """A checkpoint whose sends are recorded in the target's ledger; the uploader uses it as a Journal.

    next_batch claims the batch in the ledger and leaves out what another import sent meanwhile;
    begin_request makes sure the claim exists (bisected halves come back without next_batch);
    finish_request settles the ledger after the checkpoint. Opening it copies the checkpoint's earlier
    sends into the ledger once, and settles what a killed run left in flight.
    """

    def __init__(self, journal: Any, ledger: Ledger, *, resend_sent: bool = False):
        self._journal = journal
        self.ledger = ledger
        self.uid = journal.uid
        self.resend_sent = resend_sent
        self.sent_meanwhile = 0  # events another import sent while this one ran: not sent from here
        self._claimed: set[str] = set()  # claimed by next_batch and not released since
        ledger.register(self.uid, str(journal.path))
        adopted_as = f"{ledger.base_url} {ledger.key_id}"
        if journal.ledger_adopted() != adopted_as:
            ledger.adopt(self.uid, journal.settled_events())
            journal.set_ledger_adopted(adopted_as)
        self.reconciled = ledger.reconcile(self.uid, journal.states_of(ledger.in_flight(self.uid)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    @staticmethod
    def _claims(batch: Sequence[Any]) -> list[tuple[str, str, str]]:
        return [(e.event_id, e.body, f"{e.source_file}:{e.source_row}") for e in batch]

    def next_batch(self, size: int, *, include_uncertain: bool) -> list[Any]:
        while True:
            batch = self._journal.next_batch(size, include_uncertain=include_uncertain)
            if not batch:
                return batch
            conflicts = set(self.ledger.claim(self.uid, self._claims(batch), check=not self.resend_sent))
            self._claimed.update(e.event_id for e in batch if e.event_id not in conflicts)
            if not conflicts:
                return batch
            self.sent_meanwhile += self._journal.forget_elsewhere(sorted(conflicts), {"(imports running meanwhile)": len(conflicts)})
            batch = [e for e in batch if e.event_id not in conflicts]
            if batch:
                return batch

    def begin_request(self, event_ids: Sequence[str], started_at: float) -> int:
        # Usually claimed by next_batch already; a bisected half was released when its batch came
        # back 400 and goes out again without next_batch.
        unclaimed = [i for i in event_ids if i not in self._claimed]
        if unclaimed:
            self.ledger.claim(self.uid, self._claims(self._journal.events_by_id(unclaimed)), check=False)
            self._claimed.update(unclaimed)
        return self._journal.begin_request(event_ids, started_at)

    def finish_request(self, request_no: int, **outcome: Any) -> None:
        self._journal.finish_request(request_no, **outcome)
        sent = outcome.get("sent") or {}
        uncertain = outcome.get("uncertain") or ()
        released = [*(outcome.get("rejected") or {}), *(outcome.get("pending") or ())]
        self.ledger.settle(self.uid, sent=sent, uncertain=uncertain, released=released)
        self._claimed.difference_update([*sent, *uncertain, *released])

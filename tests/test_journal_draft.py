"""The checkpoint built in one piece (Journal.draft), its state counts kept by triggers, the work
resume and status do not growing with the plan, and checkpoints written by the previous format."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import backfill.journal as journal_module
from backfill import importer
from backfill.errors import CheckpointError, DiskFull
from backfill.journal import STATES, Journal, PlannedEvent
from backfill.sandbox import Sandbox, SandboxConfig
from test_hostile_disk import new_checkpoints_hold_at_most

BASE_URL = "http://127.0.0.1:9"


def row(i: int, seq: int | None = None) -> tuple[str, int, str, str, int, str]:
    stamp = f"2025-10-29T18:{i % 60:02d}:00Z"
    body = json.dumps({"type": "event-deploy", "timestamp": stamp, "entityId": f"app-{i % 7}",
                       "attributes": {"build_id": str(i)}}, separators=(",", ":"))
    return (f"ev-{i:07d}", i if seq is None else seq, body, "deploys.csv", i + 2, stamp)


def draft(path: Path) -> journal_module.Draft:
    return Journal.draft(path, target="custom", base_url=BASE_URL, fingerprints={}, options={})


def truth(j: Journal) -> dict[str, int]:
    """The counts by state, counted from the events themselves."""
    by_state = dict(j._conn.execute("SELECT state, count(*) FROM events GROUP BY state"))
    return {state: by_state.get(state, 0) for state in STATES}


def counted(j: Journal) -> dict[str, int]:
    counts = j.counts()
    return {state: counts[state] for state in STATES}


# --------------------------------------------------------------------- the draft


def test_a_draft_is_published_complete_or_not_at_all(tmp_path: Path) -> None:
    path = tmp_path / "new.checkpoint"
    with draft(path) as d:
        d.add(row(i) for i in range(0, 60))
        d.add(row(i) for i in range(60, 100))
        assert not path.exists()  # nothing at the path until it is complete
        journal = d.publish(leave_out=[3, 50, 50], invalid_count=7, meta={"sent_elsewhere": {"/old.checkpoint": 2}})
    with journal:
        assert journal.plan_complete and journal.invalid_count == 7
        assert journal.sent_elsewhere == {"/old.checkpoint": 2}
        assert journal.counts()["planned"] == journal.counts()["pending"] == 98
        ids = [e.event_id for e in journal.next_batch(100, include_uncertain=True)]
        assert ids == [f"ev-{i:07d}" for i in range(100) if i not in (3, 50)]
        assert journal._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.checkpoint", "new.checkpoint-lock"]


def test_a_draft_left_unpublished_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "new.checkpoint"
    with pytest.raises(KeyboardInterrupt):
        with draft(path) as d:
            d.add(row(i) for i in range(10))
            raise KeyboardInterrupt  # Ctrl-C at the confirmation question
    assert list(tmp_path.iterdir()) == []
    with draft(path) as d:
        d.add(row(i) for i in range(10))
    assert list(tmp_path.iterdir()) == []  # declined: the draft goes


def test_a_draft_keeps_the_first_row_of_an_event_id_given_twice(tmp_path: Path) -> None:
    with draft(tmp_path / "c.checkpoint") as d:
        d.add([row(1, seq=0), row(2, seq=1), (*row(1, seq=2)[:2], "{}", *row(1)[3:])])
        journal = d.publish(invalid_count=0)
    with journal:
        batch = journal.next_batch(10, include_uncertain=True)
        assert [(e.event_id, e.seq) for e in batch] == [("ev-0000001", 0), ("ev-0000002", 1)]
        assert journal.counts()["planned"] == 2


def test_a_draft_of_a_process_that_died_is_removed_by_the_next(tmp_path: Path) -> None:
    path = tmp_path / "c.checkpoint"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".c.checkpoint.{dead.pid}.creating"
    stale.write_bytes(b"half a plan")
    alive = tmp_path / f".c.checkpoint.{os.getppid()}.creating"  # a live process's draft is left alone
    alive.write_bytes(b"being built")
    with draft(path) as d:
        d.publish().close()
    assert not stale.exists() and alive.exists()


def test_a_full_disk_while_the_plan_is_stored_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new_checkpoints_hold_at_most(monkeypatch, 40)
    with pytest.raises(DiskFull, match="disk is full; nothing was sent"):
        with draft(tmp_path / "c.checkpoint") as d:
            d.add(row(i) for i in range(5000))
            d.publish(invalid_count=0)
    assert list(tmp_path.iterdir()) == []


def test_a_draft_refuses_an_existing_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "c.checkpoint"
    path.write_text("x")
    with pytest.raises(CheckpointError, match="already exists"):
        draft(path)


# --------------------------------------------------------------------- state counts


def test_state_counts_stay_right_through_many_runs(tmp_path: Path) -> None:
    """Random requests and outcomes, kills mid-request, replans, skips: the kept counts always equal
    the events counted one by one."""
    rng = random.Random(11)
    path = tmp_path / "c.checkpoint"
    with draft(path) as d:
        d.add(row(i) for i in range(400))
        journal = d.publish(invalid_count=0)
    for run in range(12):
        for _ in range(rng.randint(3, 12)):
            batch = journal.next_batch(rng.randint(1, 15), include_uncertain=rng.random() < 0.7)
            if not batch:
                break
            ids = [e.event_id for e in batch]
            request_no = journal.begin_request(ids, time.time())
            roll = rng.random()
            if roll < 0.15:
                break  # killed mid-request: reopening makes them uncertain
            half = len(ids) // 2
            outcome = [
                {"sent": {i: "s" for i in ids}},
                {"sent": {i: "s" for i in ids[half:]}, "rejected": {i: "bad" for i in ids[:half]}},
                {"pending": ids},
                {"uncertain": ids},
            ][rng.randrange(4)]
            journal.finish_request(request_no, finished_at=time.time(), outcome="x", **outcome)
            assert counted(journal) == truth(journal)
        if run % 4 == 3:
            journal.skip_uncertain()
        if run % 3 == 2:  # a replan: some events dropped, some added
            keep = [PlannedEvent(*row(i)) for i in range(400 + run * 10) if i % 9]
            journal.replan(keep)
        if run % 5 == 4:
            pending = [e.event_id for e in journal.next_batch(5, include_uncertain=False)]
            journal.forget_elsewhere(pending, {"other": len(pending)})
        journal.close()
        journal = Journal.open(path)
        assert counted(journal) == truth(journal)
        with Journal.open(path, read_only=True) as reader:
            assert counted(reader) == truth(journal)
    journal.close()


# --------------------------------------------------------------------- what resume and status read


def _steps(path: Path, work) -> int:
    """SQLite virtual-machine steps (in thousands) spent by work(path) on the checkpoint's connections."""
    steps = [0]
    connect = journal_module._connect

    def counting(*args, **kwargs) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)

        def tick() -> int:
            steps[0] += 1
            return 0

        conn.set_progress_handler(tick, 1000)
        return conn

    journal_module._connect = counting
    try:
        work(path)
    finally:
        journal_module._connect = connect
    return steps[0]


def _sent_some(path: Path, n: int) -> None:
    with draft(path) as d:
        d.add(row(i) for i in range(n))
        journal = d.publish(invalid_count=3)
    with journal:
        for _ in range(10):  # a few runs' worth of history: sent, rejected, uncertain
            batch = journal.next_batch(15, include_uncertain=True)
            ids = [e.event_id for e in batch]
            request_no = journal.begin_request(ids, time.time())
            journal.finish_request(request_no, finished_at=time.time(), outcome="201",
                                   sent={i: "s" for i in ids[2:]}, rejected={ids[0]: "bad"}, uncertain=ids[1:2])


def _resume_until_first_batch(path: Path) -> None:
    with Journal.open(path) as journal:  # recovery, as resume does
        journal.counts()
        list(journal.settled_events())
        journal.next_batch(15, include_uncertain=True)
        journal.counts()


def _status(path: Path) -> None:
    with Journal.open(path, read_only=True) as journal:
        importer.status_document(journal)


@pytest.mark.parametrize("work", [_resume_until_first_batch, _status], ids=["resume", "status"])
def test_resume_and_status_read_only_what_they_need(tmp_path: Path, work) -> None:
    """The work to start sending again, or to say where an import stands, does not grow with the
    number of pending events (20,000 here against 300)."""
    small, large = tmp_path / "small.checkpoint", tmp_path / "large.checkpoint"
    _sent_some(small, 300)
    _sent_some(large, 20_000)
    few, many = _steps(small, work), _steps(large, work)
    assert many < few * 1.5 + 20, (few, many)  # counting 20,000 index entries alone is ~200 thousand steps


# --------------------------------------------------------------------- the previous format

# The events table and its indexes as checkpoints were written before the plan was stored in one
# piece (event_id the primary key, CHECKs with IN, no state_counts).
PREVIOUS_EVENTS = (
    """CREATE TABLE events (
        event_id    TEXT PRIMARY KEY, seq INTEGER NOT NULL, body TEXT NOT NULL, source_file TEXT NOT NULL,
        source_row  INTEGER NOT NULL, timestamp TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'sent', 'rejected', 'uncertain')),
        request_no  INTEGER, server_id TEXT, reason TEXT,
        resent_after_uncertain INTEGER NOT NULL DEFAULT 0 CHECK (resent_after_uncertain IN (0, 1)),
        skipped_uncertain      INTEGER NOT NULL DEFAULT 0 CHECK (skipped_uncertain IN (0, 1)),
        CHECK (state <> 'in_flight' OR request_no IS NOT NULL),
        CHECK (skipped_uncertain = 0 OR state = 'uncertain')
    )""",
    "CREATE INDEX events_by_state ON events (state, seq)",
    "CREATE INDEX events_resent ON events (state) WHERE resent_after_uncertain = 1",
    "CREATE INDEX events_skipped ON events (state) WHERE skipped_uncertain = 1",
)


def previous_format_checkpoint(path: Path, base_url: str, n: int, sent: int) -> None:
    """A checkpoint as the previous format wrote it: n events, the first `sent` of them sent, one in
    flight (its run was killed)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for statement in journal_module._SCHEMA:
        if "events" not in statement.split("(")[0]:  # the same meta, requests, runs tables
            conn.execute(statement)
    for statement in PREVIOUS_EVENTS:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {journal_module.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    meta = {"tool": "devgrid-backfill", "created_at": 1.7e9, "target": "custom", "base_url": base_url,
            "fingerprints": {}, "options": {"batch_size": 15}, "uid": "previous-format", "invalid_count": 0}
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    conn.executemany("INSERT INTO events (event_id, seq, body, source_file, source_row, timestamp) VALUES (?, ?, ?, ?, ?, ?)",
                     [row(i) for i in range(n)])
    conn.execute("INSERT INTO requests (request_no, started_at, finished_at, outcome, n_events) VALUES (1, 1.7e9, 1.7e9, '201', ?)",
                 (sent,))
    conn.execute("INSERT INTO requests (request_no, started_at, n_events) VALUES (2, 1.7e9, 1)")
    conn.execute("UPDATE events SET state = 'sent', server_id = 'old', request_no = 1 WHERE seq < ?", (sent,))
    conn.execute("UPDATE events SET state = 'in_flight', request_no = 2 WHERE seq = ?", (sent,))
    conn.execute("COMMIT")
    conn.close()


def test_a_checkpoint_of_the_previous_format_is_read_and_resumed(tmp_path: Path) -> None:
    path = tmp_path / "old.checkpoint"
    with Sandbox(SandboxConfig(api_key="k")) as box:
        previous_format_checkpoint(path, box.url, 40, sent=10)
        before = path.read_bytes()
        doc = importer.status(path).document  # read-only: counted from the events, nothing written
        assert (doc["planned"], doc["sent"], doc["pending"], doc["in_flight"]) == (40, 10, 29, 1)
        assert path.read_bytes() == before
        result = importer.resume(path, api_key="k", ledger=tmp_path / "ledger.sqlite")
        stored = sorted(int(e["attributes"]["build_id"]) for e in box.stored)
    assert stored == list(range(10, 40))  # the pending ones and the one in flight (resent), none sent before
    assert result.counts["sent"] == 40 and result.counts["pending"] == 0 and result.counts["possibly_duplicated"] == 1
    with Journal.open(path, read_only=True) as journal:
        assert counted(journal) == truth(journal)
        assert journal._conn.execute("SELECT count(*) FROM state_counts").fetchone()[0] == len(STATES)


LOADED = """
import os, sys
from backfill.cli import main
from backfill.sandbox import Sandbox, SandboxConfig
path, ledger = sys.argv[1], sys.argv[2]
os.environ["DEVGRID_API_KEY"] = "k"
with Sandbox(SandboxConfig(api_key="k")) as box:
    import sqlite3
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'base_url'", ('"' + box.url + '"',))
    conn.commit()
    conn.close()
    status = main(["status", path])
    after_status = sorted(m for m in ("pandas", "pyarrow", "numpy", "backfill.plan") if m in sys.modules)
    resumed = main(["resume", path, "--ledger", ledger])
    after_resume = sorted(m for m in ("pandas", "pyarrow", "backfill.plan") if m in sys.modules)
print("RESULT", status, after_status, resumed, after_resume, len(box.stored))
"""


def test_status_and_resume_start_without_pandas_or_the_planner(tmp_path: Path) -> None:
    """Most of what `status` and `resume` took was Python importing pandas: they need neither it nor
    pyarrow (status not even numpy)."""
    path = tmp_path / "c.checkpoint"
    with draft(path) as d:
        d.add(row(i) for i in range(40))
        d.publish(invalid_count=0).close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", LOADED, str(path), str(tmp_path / "ledger.sqlite")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = done.stdout.splitlines()[-1]
    assert result == "RESULT 0 [] 0 [] 40", done.stdout


# --------------------------------------------------------------------- event ids for the checkpoint

IDS_MAPPING = """\
source: {format: csv}
entityId: {from: service}
timestamp: {from: finished}
attributes:
  build_id: build
"""


def test_row_hashes_only_for_events_without_a_key_and_the_same_ids(tmp_path: Path) -> None:
    """Planned for import, an event whose dedupe key is complete takes its id from the key, so its
    row is not hashed; the others keep the ids (and counters for identical rows) they get when no
    event has a key."""
    from backfill.mapping import parse_mapping
    from backfill.plan import build_plan

    csv = tmp_path / "in.csv"
    csv.write_text(
        "service,finished,build\n"
        "web,2023-01-01T00:00:00Z,\n"  # no build: no key
        "web,2023-01-01T00:00:00Z,\n"  # the same row again: a second deployment
        "web,2023-01-02T00:00:00Z,7\n"
        "pay,2023-01-03T00:00:00Z,\n"
        "web,2023-01-01T00:00:00Z,\n"
    )
    keyed = build_plan([str(csv)], parse_mapping(IDS_MAPPING + "dedupe: [service, build]\n", "m.yaml"), with_row_hashes=True)
    plain = build_plan([str(csv)], parse_mapping(IDS_MAPPING, "m.yaml"), with_row_hashes=True)
    ids, plain_ids = keyed.event_ids().tolist(), plain.event_ids().tolist()
    assert [i[0] for i in ids] == ["r", "r", "r", "k", "r"]
    assert [i for i in ids if i[0] == "r"] == [plain_ids[n] for n in (0, 1, 2, 4)]
    assert ids[1] == ids[0] + "-1" and ids[2] == ids[0] + "-2"
    assert keyed.row_hashes[3] == 0 and plain.row_hashes[3] != 0  # the keyed event's row was not hashed


# --------------------------------------------------------------------- the ledger's lookups


@pytest.mark.parametrize("seed", range(6))
def test_a_small_ledger_read_into_memory_finds_what_the_join_finds(tmp_path: Path, seed: int) -> None:
    """Planning looks a small ledger up in memory and a large one by a join: the same matches (by id
    and by content, other checkpoints and this one, sent and uncertain), whatever the mix."""
    from backfill.ledger import Ledger

    rng = random.Random(seed)
    book = Ledger.open(tmp_path / "l.sqlite", base_url=BASE_URL, key_id="k")
    uids = ["c1", "c2", "mine"]
    entries = {(rng.choice(uids), f"e{rng.randrange(60)}"): (f"f{rng.randrange(40)}", rng.choice(["sent", "uncertain", "in_flight"]))
               for _ in range(rng.randrange(1, 50))}
    with book._write() as conn:
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, NULL, 'x:1', 0)",
                         [(uid, event_id, fp, state) for (uid, event_id), (fp, state) in entries.items()])
        conn.execute("INSERT INTO checkpoints VALUES ('c1', '/one.checkpoint', 'h', 0, 0)")
    ids = [f"e{rng.randrange(80)}" for _ in range(300)]
    prints = [f"f{rng.randrange(60)}" for _ in range(300)]
    conn = book._conn
    for mine in ("mine", "", "c1"):
        by_join = Ledger._known_by_join(conn, ids, prints, mine)
        in_memory = Ledger._known_in_memory(conn, ids, prints, mine)
        assert [sorted(rows) for rows in in_memory] == [sorted(rows) for rows in by_join], mine
    by_id, by_fp = Ledger._known_by_join(conn, ids, prints, "mine")
    expected = sorted({pos for pos, _, _ in by_id} | {pos for pos, _, _ in by_fp})
    assert book.known(ids, prints, checkpoint="mine").positions == expected  # 300 planned, < 50 entries: in memory
    book.close()

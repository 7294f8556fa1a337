"""The SQLite checkpoint: round trips, refusals, state transitions, crash safety and bulk speed."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import backfill.journal as journal_module
from backfill.errors import CheckpointError
from backfill.journal import STATES, Journal, PlannedEvent

FINGERPRINTS = {"deploys.csv": "a" * 64, "mapping.yaml": "b" * 64}
OPTIONS = {"batch_size": 15, "since": None, "env": ["production"]}
BASE_URL = "https://prod.api.devgrid.io"


def event(i: int, seq: int | None = None) -> PlannedEvent:
    body = json.dumps({"type": "event-deploy", "timestamp": f"2025-10-29T18:{i % 60:02d}:00Z", "entityId": f"app-{i}"})
    return PlannedEvent(f"ev-{i:07d}", i if seq is None else seq, body, "deploys.csv", i + 2, "2025-10-29T18:30:00Z")


def events(n: int, start: int = 0) -> list[PlannedEvent]:
    return [event(i) for i in range(start, start + n)]


def create(path: Path, **overrides) -> Journal:
    kwargs = {"target": "prod", "base_url": BASE_URL, "fingerprints": FINGERPRINTS, "options": OPTIONS}
    return Journal.create(path, **{**kwargs, **overrides})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "import.checkpoint"


@pytest.fixture
def journal(path: Path) -> Iterator[Journal]:
    with create(path) as j:
        yield j


def states(j: Journal) -> dict[str, str]:
    return dict(j._conn.execute("SELECT event_id, state FROM events"))


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# --------------------------------------------------------------------- create / open


def test_create_open_round_trip(path: Path) -> None:
    with create(path, created_at=1_761_760_000.0) as j:
        assert not j.plan_complete
        assert j.add_events(events(3)) == 3
        j.set_invalid_count(2)
    with Journal.open(path) as j:
        assert (j.target, j.base_url, j.fingerprints, j.options) == ("prod", BASE_URL, FINGERPRINTS, OPTIONS)
        assert j.schema_version == journal_module.SCHEMA_VERSION
        assert j.created_at == 1_761_760_000.0
        assert j.plan_complete and j.invalid_count == 2
        assert j.next_batch(15, include_uncertain=False) == events(3)
        assert j.recovered_in_flight == 0
        j.set_fingerprints({"new.csv": "c" * 64}, {"batch_size": 10})
        assert not j.plan_complete  # until the replanned events are stored and counted
    with Journal.open(path, read_only=True) as j:
        assert (j.fingerprints, j.options) == ({"new.csv": "c" * 64}, {"batch_size": 10})
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{path.name}-lock"]  # no temporary left


def test_pragmas(journal: Journal) -> None:
    conn = journal._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


@pytest.mark.parametrize("existing", [b"", b"some notes\n", "checkpoint"])
def test_create_refuses_an_existing_file(path: Path, existing: bytes | str) -> None:
    if existing == "checkpoint":
        create(path).close()
    else:
        path.write_bytes(existing)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=f"checkpoint already exists: {path}"):
        create(path)
    assert path.read_bytes() == before


def test_open_refuses_a_missing_file(path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {path}"):
        Journal.open(path)
    assert not path.exists()


def _other_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.write_text("event_id,seq\nx,1\n"), id="csv"),
        pytest.param(lambda p: p.write_bytes(bytes(range(256)) * 64), id="binary"),
        pytest.param(_other_sqlite, id="other-sqlite"),
    ],
)
@pytest.mark.parametrize("read_only", [False, True])
def test_open_refuses_a_file_that_is_not_a_checkpoint(path: Path, make, read_only: bool) -> None:
    make(path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=f"{path}: not a devgrid-backfill checkpoint"):
        Journal.open(path, read_only=read_only)
    assert path.read_bytes() == before  # not switched to WAL or otherwise touched
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.parametrize("version", [0, 2, 99])
def test_open_refuses_an_unknown_schema_version(path: Path, version: int) -> None:
    create(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(CheckpointError, match=f"schema version {version} is not supported"):
        Journal.open(path)


@pytest.mark.parametrize("key", ["api_key", "API-KEY", "apikey", "token", "client_secret"])
def test_credentials_are_never_stored(path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="credentials"):
        create(path, options={key: "dg_live_123"})
    assert not path.exists()
    with create(path) as j:
        with pytest.raises(ValueError, match="credentials"):
            j.set_fingerprints(FINGERPRINTS, {key: "dg_live_123"})
        columns = [
            row[1]
            for table in ("meta", "events", "requests", "runs")
            for row in j._conn.execute(f"PRAGMA table_info({table})")
        ]
    assert not [c for c in columns if "api" in c or "secret" in c]


def test_one_writer_at_a_time_and_read_only_changes_nothing(path: Path) -> None:
    with create(path) as writer:
        writer.add_events(events(2))
        request_no = writer.begin_request(["ev-0000000"], 1.0)
        with pytest.raises(CheckpointError, match="in use by another devgrid-backfill process"):
            Journal.open(path)
        with Journal.open(path, read_only=True) as reader:
            assert reader.recovered_in_flight == 0  # the writer's request is live, not interrupted
            assert nonzero(reader.counts()) == {"planned": 2, "pending": 1, "in_flight": 1, "requests": 1}
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                reader.skip_uncertain()
        writer.finish_request(request_no, finished_at=2.0, outcome="201", sent={"ev-0000000": "srv-0"})
    with Journal.open(path) as again:  # the lock went with the writer
        assert again.counts()["sent"] == 1


# --------------------------------------------------------------------- the plan


def test_add_events_is_idempotent(journal: Journal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "ADD_CHUNK", 7)  # several transactions
    assert journal.add_events(events(20)) == 20
    request_no = journal.begin_request(["ev-0000000", "ev-0000001"], 1.0)
    journal.finish_request(
        request_no, finished_at=2.0, outcome="201", sent={"ev-0000000": "s0"}, rejected={"ev-0000001": "bad"}
    )
    before = journal._conn.execute("SELECT * FROM events ORDER BY event_id").fetchall()
    changed = [PlannedEvent(e.event_id, e.seq + 100, '{"changed": true}', "other.csv", 0, "x") for e in events(20)]
    assert journal.add_events(changed) == 0
    assert journal._conn.execute("SELECT * FROM events ORDER BY event_id").fetchall() == before
    assert journal.add_events(events(25)) == 5  # a replan that found 5 more
    assert nonzero(journal.counts()) == {"planned": 25, "pending": 23, "sent": 1, "rejected": 1, "requests": 1}


def test_next_batch_order_and_size(journal: Journal) -> None:
    seqs = list(range(40))
    random.Random(7).shuffle(seqs)
    journal.add_events(event(i, seq) for i, seq in enumerate(seqs))
    batch = journal.next_batch(15, include_uncertain=False)
    assert [e.seq for e in batch] == list(range(15))
    assert batch[0] == event(seqs.index(0), 0)
    assert len(journal.next_batch(100, include_uncertain=True)) == 40
    assert journal.next_batch(1, include_uncertain=False) == batch[:1]  # reading changes nothing
    with pytest.raises(ValueError, match="batch size"):
        journal.next_batch(0, include_uncertain=False)


# --------------------------------------------------------------------- requests

IDS = ["ev-0000000", "ev-0000001", "ev-0000002"]


@pytest.mark.parametrize(
    ("outcome", "result", "expected_states", "detail"),
    [
        ("201", {"sent": {i: f"srv-{i}" for i in IDS}}, ["sent"] * 3, ("server_id", "srv-ev-0000000")),
        (
            "201",
            {"sent": {IDS[0]: "srv-a", IDS[2]: "srv-c"}, "rejected": {IDS[1]: "Entity not found"}},
            ["sent", "rejected", "sent"],
            ("reason", None),
        ),
        ("400", {"rejected": {i: "Invalid value" for i in IDS}}, ["rejected"] * 3, ("reason", "Invalid value")),
        ("timeout", {"uncertain": IDS}, ["uncertain"] * 3, ("server_id", None)),
        ("500", {"uncertain": IDS}, ["uncertain"] * 3, ("server_id", None)),
        ("429", {"pending": IDS}, ["pending"] * 3, ("server_id", None)),
        ("413", {"pending": IDS[:2], "uncertain": IDS[2:]}, ["pending", "pending", "uncertain"], ("reason", None)),
    ],
)
def test_begin_and_finish_request(journal: Journal, outcome, result, expected_states, detail) -> None:
    journal.add_events(events(5))
    request_no = journal.begin_request(IDS, started_at=100.0)
    assert [states(journal)[i] for i in IDS] == ["in_flight"] * 3
    assert journal.counts()["in_flight"] == 3
    journal.finish_request(request_no, finished_at=101.5, outcome=outcome, **result)
    assert [states(journal)[i] for i in IDS] == expected_states
    column, value = detail
    assert journal._conn.execute(f"SELECT {column} FROM events WHERE event_id = ?", (IDS[0],)).fetchone()[0] == value
    assert journal._conn.execute("SELECT * FROM requests").fetchall() == [(request_no, 100.0, 101.5, outcome, 3)]
    counts = journal.counts()
    assert counts["planned"] == sum(counts[s] for s in STATES) == 5
    sendable = {e.event_id for e in journal.next_batch(15, include_uncertain=True)}
    assert sendable == {i for i, s in states(journal).items() if s in ("pending", "uncertain")}


def test_begin_request_refuses_events_that_are_not_sendable(journal: Journal) -> None:
    journal.add_events(events(4))
    first = journal.begin_request(IDS[:1], 1.0)
    journal.finish_request(first, finished_at=2.0, outcome="201", sent={IDS[0]: "srv"})
    for bad, why in [
        ([IDS[1], IDS[0]], "ev-0000000 \\(sent\\)"),
        ([IDS[1], "nope"], "nope \\(not in the plan\\)"),
        ([IDS[1], IDS[1]], "named twice"),
    ]:
        with pytest.raises(ValueError, match=why):
            journal.begin_request(bad, 3.0)
    with pytest.raises(ValueError, match="at least one event"):
        journal.begin_request([], 3.0)
    assert nonzero(journal.counts()) == {"planned": 4, "pending": 3, "sent": 1, "requests": 1}  # all rolled back


def test_finish_request_refuses_an_inconsistent_outcome(journal: Journal) -> None:
    journal.add_events(events(4))
    request_no = journal.begin_request(IDS[:2], 1.0)
    for kwargs, why in [
        ({"sent": {IDS[0]: "s"}}, "carried 2 events, but the outcome names 1"),
        ({"sent": {IDS[0]: "s"}, "pending": [IDS[2]]}, "did not carry these events: ev-0000002 \\(pending\\)"),
        ({"sent": {IDS[0]: "s"}, "uncertain": [IDS[0]]}, "named twice"),
    ]:
        with pytest.raises(ValueError, match=why):
            journal.finish_request(request_no, finished_at=2.0, outcome="201", **kwargs)
    assert journal.counts()["in_flight"] == 2  # all rolled back
    with pytest.raises(ValueError, match="unknown request 99"):
        journal.finish_request(99, finished_at=2.0, outcome="201")
    journal.finish_request(request_no, finished_at=2.0, outcome="429", pending=IDS[:2])
    with pytest.raises(ValueError, match="already finished"):
        journal.finish_request(request_no, finished_at=3.0, outcome="429", pending=IDS[:2])


def test_reopening_after_a_crash_mid_request_makes_events_uncertain(path: Path) -> None:
    with create(path) as j:
        j.add_events(events(5))
        j.start_run(10.0, "upload deploys.csv")
        done = j.begin_request(IDS[:1], 11.0)
        j.finish_request(done, finished_at=11.5, outcome="201", sent={IDS[0]: "srv"})
        j.begin_request(IDS[1:], 12.0)
        # the process dies here: no finish_request, no end_run
    with Journal.open(path) as j:
        assert j.recovered_in_flight == 2
        assert nonzero(j.counts()) == {"planned": 5, "pending": 2, "sent": 1, "uncertain": 2, "requests": 2}
        outcomes = [r[0] for r in j._conn.execute("SELECT outcome FROM requests ORDER BY request_no")]
        assert outcomes == ["201", "interrupted"]
        assert [(r["outcome"], r["ended_at"]) for r in j.runs()] == [("interrupted", None)]
        assert [e.event_id for e in j.next_batch(15, include_uncertain=False)] == ["ev-0000003", "ev-0000004"]
    with Journal.open(path) as j:
        assert j.recovered_in_flight == 0


def test_uncertain_events_resent_or_skipped(journal: Journal) -> None:
    journal.add_events(events(6))
    r1 = journal.begin_request(IDS, 1.0)
    journal.finish_request(r1, finished_at=2.0, outcome="timeout", uncertain=IDS)
    assert [e.seq for e in journal.next_batch(15, include_uncertain=False)] == [3, 4, 5]
    assert [e.seq for e in journal.next_batch(4, include_uncertain=True)] == [0, 1, 2, 3]  # merged by seq
    assert {e["status"] for e in journal.uncertain_events()} == {"unresolved"}

    # Resend two of them: one is stored (possibly twice now), one gets a 429 and waits.
    r2 = journal.begin_request(IDS[:2], 3.0)
    journal.finish_request(r2, finished_at=4.0, outcome="201", sent={IDS[0]: "srv-0"}, pending=IDS[1:2])
    # Skip the rest: the third stays uncertain, never to be sent again.
    assert journal.skip_uncertain() == 1
    assert journal.skip_uncertain() == 0
    assert IDS[2] not in {e.event_id for e in journal.next_batch(15, include_uncertain=True)}
    with pytest.raises(ValueError, match="uncertain, skipped"):
        journal.begin_request(IDS[2:], 5.0)
    counts = journal.counts()
    assert (counts["possibly_duplicated"], counts["possibly_missing"], counts["uncertain"]) == (1, 1, 1)
    assert [(e["event_id"], e["state"], e["status"]) for e in journal.uncertain_events()] == [
        (IDS[0], "sent", "duplicated"),
        (IDS[1], "pending", "unresolved"),
        (IDS[2], "uncertain", "missing"),
    ]
    keys = {"event_id", "source_file", "source_row", "timestamp", "state", "status", "copies_at_most"}
    assert set(journal.uncertain_events()[0]) == keys
    assert [e["copies_at_most"] for e in journal.uncertain_events()] == [2, 1, 1]
    r3 = journal.begin_request(IDS[1:2], 6.0)  # the 429'd one goes again, still flagged
    journal.finish_request(r3, finished_at=7.0, outcome="201", sent={IDS[1]: "srv-1"})
    assert journal.counts()["possibly_duplicated"] == 2


def test_reports_request_times_runs_and_activity(journal: Journal) -> None:
    assert journal.activity() == {
        "created_at": journal.created_at,
        "first_request_at": None,
        "last_request_at": None,
        "last_activity_at": journal.created_at,
    }
    t0 = journal.created_at + 10
    journal.add_events(events(3))
    run_id = journal.start_run(t0, "upload deploys.csv --target prod")
    r1 = journal.begin_request(IDS[:1], t0 + 1)
    journal.finish_request(r1, finished_at=t0 + 2, outcome="201", sent={IDS[0]: "srv-0"})
    r2 = journal.begin_request(IDS[1:], t0 + 3)
    journal.finish_request(
        r2, finished_at=t0 + 4, outcome="201", sent={IDS[1]: "srv-1"}, rejected={IDS[2]: "Entity not found"}
    )
    journal.end_run(run_id, t0 + 5, "finished")
    # the time the answer came: the server saw each request no later than that
    assert journal.request_times(since=0) == [t0 + 2, t0 + 4]
    assert journal.request_times(since=t0 + 3) == [t0 + 4]
    [run] = journal.runs()
    assert (run["run_id"], run["argv_summary"]) == (run_id, "upload deploys.csv --target prod")
    assert (run["outcome"], run["ended_at"]) == ("finished", t0 + 5)
    assert run["counts"]["sent"] == 2 and run["counts"]["requests"] == 2
    assert journal.activity() == {
        "created_at": journal.created_at,
        "first_request_at": t0 + 1,
        "last_request_at": t0 + 3,
        "last_activity_at": t0 + 5,
    }
    assert [e["server_id"] for e in journal.sent_events()] == ["srv-0", "srv-1"]
    assert list(journal.rejected_events()) == [
        {
            "event_id": IDS[2],
            "source_file": "deploys.csv",
            "source_row": 4,
            "reason": "Entity not found",
            "body": event(2).body,
        }
    ]
    with pytest.raises(ValueError, match="unknown run"):
        journal.end_run(run_id + 1, t0, "finished")


# --------------------------------------------------------------------- crash safety

CHILD = textwrap.dedent(
    """
    import os, random, sys, time
    from backfill.journal import Journal, PlannedEvent

    path, server_log, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    events = [PlannedEvent(f"e{i:06d}", i, '{"type": "event-deploy"}', "in.csv", i + 2, "t") for i in range(n)]
    if os.path.exists(path):
        journal = Journal.open(path)
    else:
        journal = Journal.create(path, target="t", base_url="http://sandbox", fingerprints={}, options={})
    if not journal.plan_complete:
        journal.add_events(events)
        journal.set_invalid_count(0)
    log = os.open(server_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def store(ids):  # the fake server stores events: one write, before the answer
        os.write(log, "".join(f"{i}\\n" for i in ids).encode())

    print("ready", flush=True)
    while batch := journal.next_batch(rng.randint(1, 15), include_uncertain=True):
        ids = [e.event_id for e in batch]
        request_no = journal.begin_request(ids, time.time())
        roll = rng.random()
        if roll < 0.6:
            store(ids)
            journal.finish_request(request_no, finished_at=time.time(), outcome="201", sent={i: "s-" + i for i in ids})
        elif roll < 0.7:
            store(ids[1:])
            journal.finish_request(request_no, finished_at=time.time(), outcome="201",
                                   sent={i: "s-" + i for i in ids[1:]}, rejected={ids[0]: "Entity not found"})
        elif roll < 0.8:
            journal.finish_request(request_no, finished_at=time.time(), outcome="429", pending=ids)
        elif roll < 0.9:
            store(ids)
            journal.finish_request(request_no, finished_at=time.time(), outcome="timeout", uncertain=ids)
        else:
            journal.finish_request(request_no, finished_at=time.time(), outcome="500", uncertain=ids)
    journal.close()
    print("done", flush=True)
    """
)


def check_consistent(path: Path, server_log: Path, n: int) -> dict[str, int]:
    stored = Counter(line for line in server_log.read_text().split("\n")[:-1]) if server_log.exists() else Counter()
    with Journal.open(path) as j:
        conn = j._conn
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counts = j.counts()
        assert counts["planned"] in (0, n)
        assert counts["in_flight"] == 0
        assert counts["planned"] == sum(counts[s] for s in STATES)
        unfinished = "SELECT count(*) FROM requests WHERE finished_at IS NULL AND outcome IS NULL"
        assert conn.execute(unfinished).fetchone() == (0,)
        rows = conn.execute("SELECT event_id, state, server_id, reason, resent_after_uncertain FROM events").fetchall()
        for event_id, state, server_id, reason, resent in rows:
            copies = stored[event_id]
            if state == "sent":
                assert server_id == "s-" + event_id and copies >= 1, event_id  # acknowledged => stored
            if state == "rejected":
                assert reason == "Entity not found"
            if copies > 1 or (copies and state not in ("sent", "uncertain")):
                assert resent, (event_id, state, copies)  # a second copy is always flagged possibly duplicated
            if state == "pending" and not resent:
                assert copies == 0, event_id
        sendable = {e.event_id for e in j.next_batch(n, include_uncertain=True)}
        state_of = dict((r[0], r[1]) for r in rows)
        assert {state_of[i] for i in sendable} <= {"pending", "uncertain"}  # never a sent event again
    return counts


def test_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    path, server_log, n = tmp_path / "crash.checkpoint", tmp_path / "server.log", 6000
    rng = random.Random(20251029)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    kills = 0
    for round_no in range(10):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(server_log), str(n), str(round_no)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if round_no % 2:  # mid-upload
            assert child.stdout is not None
            child.stdout.readline()
            time.sleep(rng.uniform(0.0, 0.15))
        else:  # anywhere, creating and planning included
            time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate(timeout=10)
        assert child.returncode in (-signal.SIGKILL, 0), err
        kills += child.returncode == -signal.SIGKILL
        if path.exists():
            check_consistent(path, server_log, n)
    assert kills >= 8

    # A last run to the end: everything is sent or rejected, and every duplicate is flagged.
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(server_log), str(n), "99"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert done.returncode == 0 and done.stdout.endswith("done\n"), done.stderr
    counts = check_consistent(path, server_log, n)
    assert counts["pending"] == counts["uncertain"] == 0
    assert counts["sent"] + counts["rejected"] == n
    duplicated = sum(1 for copies in Counter(server_log.read_text().split()).values() if copies > 1)
    assert counts["possibly_duplicated"] >= duplicated


# --------------------------------------------------------------------- size


def test_adds_200_000_events_in_reasonable_time(journal: Journal) -> None:
    body = json.dumps({"type": "event-deploy", "timestamp": "2025-10-29T18:30:00Z", "entityId": "app-123",
                       "attributes": {"env": "production", "status": "success", "build_commit_sha": "a1b2c3d4e5f6789"}})
    planned = (PlannedEvent(f"{i * 2654435761 % 2**64:016x}-{i}", i, body, "big.csv", i + 2, "2025-10-29T18:30:00Z")
               for i in range(200_000))
    started = time.perf_counter()
    assert journal.add_events(planned) == 200_000
    added = time.perf_counter() - started
    started = time.perf_counter()
    counts = journal.counts()
    counted = time.perf_counter() - started
    print(f"\nadd_events: 200,000 events in {added:.2f} s; counts() in {counted * 1000:.0f} ms")
    assert counts["pending"] == 200_000


def test_an_uncertain_event_rejected_when_resent_is_reported_as_possibly_stored(tmp_path):
    journal = Journal.create(tmp_path / "u.checkpoint", target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={})
    journal.add_events([PlannedEvent("e0", 0, "{}", "f.csv", 2, "2023-01-01T00:00:00Z")])
    req = journal.begin_request(["e0"], started_at=1.0)
    journal.finish_request(req, finished_at=2.0, outcome="timeout", uncertain=["e0"])
    req = journal.begin_request(["e0"], started_at=3.0)
    journal.finish_request(req, finished_at=4.0, outcome="201", rejected={"e0": "Entity not found"})
    [event] = journal.uncertain_events()
    assert (event["event_id"], event["state"], event["status"]) == ("e0", "rejected", "possibly stored")
    journal.close()


def test_replan_adds_updates_pending_drops_stale_and_counts_changed_sent_events(tmp_path):
    journal = Journal.create(tmp_path / "p.checkpoint", target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={})
    old = [PlannedEvent(f"e{i}", i, f'{{"v":{i}}}', "f.csv", i + 2, "2023-01-01T00:00:00Z") for i in range(4)]
    journal.add_events(old)
    req = journal.begin_request(["e0"], started_at=1.0)
    journal.finish_request(req, finished_at=2.0, outcome="201", sent={"e0": "s0"})
    new = [
        PlannedEvent("e0", 0, '{"v":"changed"}', "f.csv", 2, "2023-01-01T00:00:00Z"),  # sent: never again
        PlannedEvent("e1", 1, '{"v":"fixed"}', "f.csv", 3, "2023-01-01T00:00:00Z"),  # pending: updated
        PlannedEvent("e2", 2, '{"v":2}', "f.csv", 4, "2023-01-01T00:00:00Z"),  # pending, same
        PlannedEvent("e9", 9, '{"v":9}', "f.csv", 11, "2023-01-01T00:00:00Z"),  # new
    ]  # e3 (pending) is no longer planned
    assert journal.replan(new) == {"added": 1, "updated": 1, "dropped": 1, "changed_after_sending": 1,
                                   "identical_to_sent": 0}
    bodies = {e.event_id: e.body for e in journal.next_batch(15, include_uncertain=True)}
    assert bodies == {"e1": '{"v":"fixed"}', "e2": '{"v":2}', "e9": '{"v":9}'}
    assert [e["body"] for e in journal.sent_events()] == ['{"v":0}']
    journal.close()


def test_replan_never_plans_again_a_body_identical_to_one_already_sent(tmp_path):
    journal = Journal.create(tmp_path / "p.checkpoint", target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={})
    journal.add_events([PlannedEvent(f"e{i}", i, f'{{"v":{i}}}', "f.csv", i + 2, "2023-01-01T00:00:00Z") for i in range(4)])
    req = journal.begin_request(["e0", "e1"], started_at=1.0)
    journal.finish_request(req, finished_at=2.0, outcome="201", sent={"e0": "s0"}, uncertain=["e1"])
    # A cosmetic edit of rows 2 and 3 (sent, uncertain) gives them new ids but the same bodies;
    # pending e2 is edited into the body of sent e0.
    new = [
        PlannedEvent("x0", 0, '{"v":0}', "f.csv", 2, "2023-01-01T00:00:00Z"),
        PlannedEvent("x1", 1, '{"v":1}', "f.csv", 3, "2023-01-01T00:00:00Z"),
        PlannedEvent("e2", 2, '{"v":0}', "f.csv", 4, "2023-01-01T00:00:00Z"),
        PlannedEvent("e3", 3, '{"v":3}', "f.csv", 5, "2023-01-01T00:00:00Z"),
    ]
    change = journal.replan(new)
    assert change["identical_to_sent"] == 3 and change["added"] == 0
    pending = [e.body for e in journal.next_batch(15, include_uncertain=False)]
    assert pending == ['{"v":3}']
    journal.close()


def test_copies_count_every_send_that_ended_uncertain(tmp_path: Path) -> None:
    path = tmp_path / "c.checkpoint"
    with Journal.create(path, target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={}) as journal:
        journal.add_events(events(1))
        for attempt in range(3):
            request = journal.begin_request(IDS[:1], float(attempt))
            journal.finish_request(request, finished_at=attempt + 0.5, outcome="500", uncertain=IDS[:1])
        [event] = journal.uncertain_events()
        assert (event["status"], event["copies_at_most"]) == ("unresolved", 3)
        journal.begin_request(IDS[:1], 9.0)  # and the process dies with it in flight
    with Journal.open(path) as journal:
        assert journal.recovered_in_flight == 1
        request = journal.begin_request(IDS[:1], 10.0)
        journal.finish_request(request, finished_at=11.0, outcome="201", sent={IDS[0]: "s"})
        [event] = journal.uncertain_events()
        assert (event["status"], event["copies_at_most"]) == ("duplicated", 5)

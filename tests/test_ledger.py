"""The per-target ledger: identity, claims and settling, the kill windows, planning look-ups, transfer."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.errors import LedgerError
from backfill.journal import Journal, PlannedEvent
from backfill.ledger import Ledger, LedgeredJournal, default_ledger_path, fingerprint, fingerprints, key_id

BASE = "https://prod.api.devgrid.io"
KEY = "dg_live_0123456789abcdef"


def body(i: int, *, extra_null: bool = False) -> str:
    nulls = ',"description":null' if extra_null else ""
    return (f'{{"type":"event-deploy","timestamp":"2025-10-29T18:{i % 60:02d}:00Z","entityId":"app",'
            f'"attributes":{{"env":"production","status":"success","build_id":"{i}"{nulls}}}}}')


def event(i: int, *, prefix: str = "ev", extra_null: bool = False) -> PlannedEvent:
    return PlannedEvent(f"{prefix}-{i}", i, body(i, extra_null=extra_null), "deploys.csv", i + 2, "2025-10-29T18:00:00Z")


@pytest.fixture
def ledger(tmp_path: Path):
    kid = key_id(BASE, KEY)
    with Ledger.open(tmp_path / "ledger.sqlite", base_url=BASE, key_id=kid) as led:
        yield led


def checkpoint(tmp_path: Path, name: str, events: list[PlannedEvent]) -> Journal:
    journal = Journal.create(tmp_path / name, target="production", base_url=BASE, fingerprints={}, options={})
    journal.add_events(events)
    journal.set_invalid_count(0)
    return journal


def send(lj: LedgeredJournal, n: int) -> list[PlannedEvent]:
    """One request through the ledgered journal, answered 201 for every event."""
    batch = lj.next_batch(n, include_uncertain=True)
    if batch:
        request_no = lj.begin_request([e.event_id for e in batch], 1.0)
        lj.finish_request(request_no, finished_at=2.0, outcome="201",
                          sent={e.event_id: f"srv-{e.event_id}" for e in batch})
    return batch


# --------------------------------------------------------------------- identity


def test_key_id_is_stable_salted_and_never_the_key():
    kid = key_id(BASE, KEY)
    assert kid == key_id(BASE, KEY) and len(kid) == 32
    assert KEY not in kid
    assert key_id(BASE, KEY + "x") != kid
    assert key_id("https://dev.api.devgrid.io", KEY) != kid


def test_default_path_names_host_and_key_id_not_the_key(monkeypatch):
    monkeypatch.delenv("BACKFILL_LEDGER", raising=False)
    path = default_ledger_path("http://127.0.0.1:8123", key_id(BASE, KEY))
    assert path.name.startswith("127.0.0.1-8123-") and KEY not in str(path)
    assert "devgrid-backfill" in str(path)
    assert default_ledger_path(BASE, "k", {"BACKFILL_LEDGER": "/x/l.sqlite"}) == Path("/x/l.sqlite")


def test_ledger_of_another_key_or_target_is_refused(tmp_path: Path, ledger: Ledger):
    with pytest.raises(LedgerError, match="another API key"):
        Ledger.open(ledger.path, base_url=BASE, key_id=key_id(BASE, "other"))
    with pytest.raises(LedgerError, match="another target"):
        Ledger.open(ledger.path, base_url="https://dev.api.devgrid.io", key_id=key_id(BASE, KEY))


@pytest.mark.parametrize("content", [b"garbage, not a database at all" * 100, b""])
def test_corrupt_or_foreign_file_is_one_line_error(tmp_path: Path, content: bytes):
    path = tmp_path / "ledger.sqlite"
    path.write_bytes(content)
    with pytest.raises(LedgerError) as info:
        Ledger.open(path, base_url=BASE, key_id="k")
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_ledger_without_create(tmp_path: Path):
    with pytest.raises(LedgerError, match="ledger not found"):
        Ledger.open(tmp_path / "none.sqlite", base_url=None, key_id=None, create=False)


def test_unwritable_directory_is_one_line_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="cannot create the ledger"):
        Ledger.open(blocker / "sub" / "ledger.sqlite", base_url=BASE, key_id="k")


def test_key_is_not_in_the_ledger_file(tmp_path: Path, ledger: Ledger):
    ledger.register("uid", "x.checkpoint")
    ledger.close()
    assert KEY.encode() not in (tmp_path / "ledger.sqlite").read_bytes()


# --------------------------------------------------------------------- fingerprints


def test_fingerprint_ignores_null_attributes_only():
    assert fingerprint(body(1)) == fingerprint(body(1, extra_null=True))
    assert fingerprint(body(1)) != fingerprint(body(2))
    first_null = body(1).replace('{"env":"production",', '{"change_id":null,"env":"production",')
    assert fingerprint(first_null) == fingerprint(body(1))
    quoted = body(1).replace('"build_id":"1"', '"build_id":"x\\",\\"description\\":null"')
    assert fingerprint(quoted) != fingerprint(body(1).replace('"build_id":"1"', '"build_id":"x\\""'))


text = st.text(alphabet=st.sampled_from('ab",:{}\\n\x1fé'), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(text, st.booleans(), st.booleans()), min_size=1, max_size=5))
def test_vectorized_fingerprints_equal_single_ones(values):
    bodies = []
    for value, null_first, null_last in values:
        attrs = ('"change_id":null,' if null_first else "") + f'"env":{json.dumps(value)}' + (
            ',"description":null' if null_last else "")
        bodies.append(f'{{"type":"event-deploy","attributes":{{{attrs}}}}}')
    assert fingerprints(bodies) == [fingerprint(b) for b in bodies]


# --------------------------------------------------------------------- claims, settling, kill windows


def test_sent_events_are_known_to_other_imports_by_id_and_by_content(tmp_path: Path, ledger: Ledger):
    first = LedgeredJournal(checkpoint(tmp_path, "a.checkpoint", [event(i) for i in range(5)]), ledger)
    assert len(send(first, 5)) == 5
    second = checkpoint(tmp_path, "b.checkpoint", [event(i) for i in range(3, 8)])
    renamed = [event(i, prefix="renamed", extra_null=True) for i in range(0, 2)]  # other ids, same content
    ids = [f"ev-{i}" for i in range(3, 8)] + [e.event_id for e in renamed]
    prints = [fingerprint(body(i)) for i in range(3, 8)] + [fingerprint(e.body) for e in renamed]
    found = ledger.known(ids, prints, checkpoint=second.uid)
    assert found.by_id == [0, 1] and found.by_fingerprint == [5, 6]
    assert found.checkpoints == {str(tmp_path / "a.checkpoint"): 4} and found.uncertain == 0
    # its own entries with the same id are the checkpoint's own business
    assert ledger.known(["ev-0"], [fingerprint(body(0))], checkpoint=first.uid).positions == []
    assert ledger.known(["other"], [fingerprint(body(0))], checkpoint=first.uid).positions == [0]


def test_claim_leaves_out_what_another_running_import_holds(tmp_path: Path, ledger: Ledger):
    one = LedgeredJournal(checkpoint(tmp_path, "a.checkpoint", [event(i) for i in range(4)]), ledger)
    two = LedgeredJournal(checkpoint(tmp_path, "b.checkpoint", [event(i) for i in range(2, 6)]), ledger)
    batch = one.next_batch(4, include_uncertain=True)  # claimed, not sent yet
    assert [e.event_id for e in batch] == [f"ev-{i}" for i in range(4)]
    assert [e.event_id for e in send(two, 4)] == ["ev-4", "ev-5"]
    assert two.sent_meanwhile == 2 and two.counts()["planned"] == 2
    assert two.sent_elsewhere == {"(imports running meanwhile)": 2}


def test_resend_sent_claims_without_looking(tmp_path: Path, ledger: Ledger):
    one = LedgeredJournal(checkpoint(tmp_path, "a.checkpoint", [event(1)]), ledger)
    send(one, 1)
    two = LedgeredJournal(checkpoint(tmp_path, "b.checkpoint", [event(1)]), ledger, resend_sent=True)
    assert [e.event_id for e in send(two, 1)] == ["ev-1"]


def ledger_rows(ledger: Ledger) -> list[tuple[str, str, str | None]]:
    return ledger._conn.execute("SELECT event_id, state, server_id FROM entries ORDER BY event_id").fetchall()


def test_killed_after_claim_before_checkpoint_write_releases_on_reopen(tmp_path: Path, ledger: Ledger):
    journal = checkpoint(tmp_path, "a.checkpoint", [event(1), event(2)])
    lj = LedgeredJournal(journal, ledger)
    lj.next_batch(2, include_uncertain=True)  # ledger: in flight; the checkpoint was never written
    assert [r[1] for r in ledger_rows(ledger)] == ["in_flight", "in_flight"]
    journal.close()  # the process dies here
    reopened = LedgeredJournal(Journal.open(tmp_path / "a.checkpoint"), ledger)
    assert reopened.reconciled == {"sent": 0, "uncertain": 0, "released": 2}
    assert ledger_rows(ledger) == []


def test_killed_after_checkpoint_ack_before_ledger_settle_is_settled_on_reopen(tmp_path: Path, ledger: Ledger,
                                                                               monkeypatch):
    journal = checkpoint(tmp_path, "a.checkpoint", [event(1), event(2)])
    lj = LedgeredJournal(journal, ledger)

    def die(*args, **kwargs):
        raise SystemExit("killed between the checkpoint's write and the ledger's")

    monkeypatch.setattr(ledger, "settle", die)
    with pytest.raises(SystemExit):
        send(lj, 2)
    monkeypatch.undo()
    # meanwhile, another import sees the in-flight claims as possibly sent: never resends them
    other = checkpoint(tmp_path, "b.checkpoint", [event(1)])
    found = ledger.known(["ev-1"], [fingerprint(body(1))], checkpoint=other.uid)
    assert found.positions == [0] and found.uncertain == 1
    journal.close()
    reopened = LedgeredJournal(Journal.open(tmp_path / "a.checkpoint"), ledger)
    assert reopened.reconciled == {"sent": 2, "uncertain": 0, "released": 0}
    assert ledger_rows(ledger) == [("ev-1", "sent", "srv-ev-1"), ("ev-2", "sent", "srv-ev-2")]


def test_killed_in_flight_becomes_uncertain_in_both(tmp_path: Path, ledger: Ledger):
    journal = checkpoint(tmp_path, "a.checkpoint", [event(1)])
    lj = LedgeredJournal(journal, ledger)
    batch = lj.next_batch(1, include_uncertain=True)
    lj.begin_request([e.event_id for e in batch], 1.0)  # then the process dies with the request out
    journal.close()
    reopened = LedgeredJournal(Journal.open(tmp_path / "a.checkpoint"), ledger)
    assert reopened.reconciled["uncertain"] == 1
    assert ledger_rows(ledger) == [("ev-1", "uncertain", None)]


def test_rejected_and_pending_outcomes_release_the_claim(tmp_path: Path, ledger: Ledger):
    lj = LedgeredJournal(checkpoint(tmp_path, "a.checkpoint", [event(1), event(2)]), ledger)
    batch = lj.next_batch(2, include_uncertain=True)
    request_no = lj.begin_request([e.event_id for e in batch], 1.0)
    lj.finish_request(request_no, finished_at=2.0, outcome="400", rejected={"ev-1": "bad"}, pending=["ev-2"])
    assert ledger_rows(ledger) == []
    # a bisected half goes out again without next_batch: begin_request claims it
    request_no = lj.begin_request(["ev-2"], 3.0)
    assert ledger_rows(ledger) == [("ev-2", "in_flight", None)]
    lj.finish_request(request_no, finished_at=4.0, outcome="201", sent={"ev-2": "s2"})
    assert ledger_rows(ledger) == [("ev-2", "sent", "s2")]


def test_a_checkpoint_that_sent_before_the_ledger_is_adopted_once(tmp_path: Path, ledger: Ledger):
    journal = checkpoint(tmp_path, "old.checkpoint", [event(1), event(2)])
    batch = journal.next_batch(2, include_uncertain=True)
    request_no = journal.begin_request([e.event_id for e in batch], 1.0)
    journal.finish_request(request_no, finished_at=2.0, outcome="201", sent={"ev-1": "s1"}, uncertain=["ev-2"])
    LedgeredJournal(journal, ledger)
    assert ledger_rows(ledger) == [("ev-1", "sent", "s1"), ("ev-2", "uncertain", None)]
    ledger._conn.execute("DELETE FROM entries")
    LedgeredJournal(journal, ledger)  # adopted already: not copied again
    assert ledger_rows(ledger) == []


# --------------------------------------------------------------------- transfer and reports


def test_export_then_import_into_an_empty_ledger_keeps_everything(tmp_path: Path, ledger: Ledger):
    lj = LedgeredJournal(checkpoint(tmp_path, "a.checkpoint", [event(i) for i in range(3)]), ledger)
    send(lj, 3)
    out = io.StringIO()
    assert ledger.export(out) == 3
    lines = out.getvalue().splitlines()
    assert KEY not in out.getvalue()
    with Ledger.open(tmp_path / "other.sqlite", base_url=BASE, key_id=key_id(BASE, KEY)) as fresh:
        assert fresh.import_lines(lines, "export.jsonl") == {"added": 3, "upgraded": 0}
        assert fresh.import_lines(lines, "export.jsonl") == {"added": 0, "upgraded": 0}  # merging twice adds nothing
        assert ledger_rows(fresh) == ledger_rows(ledger)
        assert fresh.summary()["totals"] == {"sent": 3, "uncertain": 0, "in_flight": 0}
        assert fresh.summary()["checkpoints"][0]["checkpoint"] == str(tmp_path / "a.checkpoint")


def test_import_never_downgrades_and_upgrades_uncertain_to_sent(tmp_path: Path, ledger: Ledger):
    ledger.adopt("uid", [("ev-1", body(1), "uncertain", None, "f:1")])
    header = json.dumps({"format": "devgrid-backfill-ledger", "version": 1, "base_url": BASE, "key_id": ledger.key_id})
    entry = {"entry": "ev-1", "checkpoint": "uid", "fingerprint": fingerprint(body(1)), "state": "sent",
             "server_id": "s1", "source": "f:1", "at": 1.0}
    assert ledger.import_lines([header, json.dumps(entry)], "x")["upgraded"] == 1
    assert ledger.import_lines([header, json.dumps({**entry, "state": "uncertain"})], "x")["upgraded"] == 0
    assert ledger_rows(ledger) == [("ev-1", "sent", "s1")]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "empty"),
        (["not json"], "line 1: not JSON"),
        (['{"format": "something else"}'], "not a `backfill ledger export` file"),
        (['{"format": "devgrid-backfill-ledger", "base_url": "https://x", "key_id": "k"}'], "another API key or target"),
        (["HEADER", '{"entry": "e"}'], "line 2: not a ledger entry"),
        (["HEADER", "[1, 2]"], "line 2: not a ledger record"),
        (["HEADER", "[" * 100000], "line 2: not JSON"),
    ],
)
def test_bad_import_files_are_one_line_errors_and_change_nothing(ledger: Ledger, lines, message):
    header = json.dumps({"format": "devgrid-backfill-ledger", "base_url": BASE, "key_id": ledger.key_id})
    lines = [header if line == "HEADER" else line for line in lines]
    with pytest.raises(LedgerError, match=message):
        ledger.import_lines(lines, "x.jsonl")
    assert ledger_rows(ledger) == []


def test_locked_ledger_is_a_one_line_error(ledger: Ledger, monkeypatch):
    import backfill.ledger as module

    other = sqlite3.connect(str(ledger.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(module, "BUSY_TIMEOUT_S", 0.1)
    ledger._conn.execute("PRAGMA busy_timeout = 100")
    try:
        with pytest.raises(LedgerError, match="is locked"):
            ledger.register("uid", "x")
    finally:
        other.execute("ROLLBACK")
        other.close()


# --------------------------------------------------------------------- one rate budget per key


def test_two_processes_with_one_key_share_the_windows(tmp_path: Path, ledger: Ledger):
    """Two senders (threads, each with its own connection, as two processes would have) stay together
    within 3 requests per 0.4 s: every window of the combined request times holds at most 3."""
    import threading
    import time as real_time

    from backfill.ledger import SharedBudget
    from backfill.throttle import RateLimit, Throttle

    limit = RateLimit(3, 0.4)
    times: list[float] = []
    lock = threading.Lock()

    kid = ledger.key_id

    def sender() -> None:
        with Ledger.open(ledger.path, base_url=BASE, key_id=kid) as own:
            budget = SharedBudget(own)
            throttle = Throttle([limit], clock=real_time.monotonic)
            for _ in range(5):
                ticket = budget.wait_turn(throttle, sleep=lambda s: real_time.sleep(min(s, 0.02)))
                with lock:
                    times.append(real_time.monotonic())
                budget.answered(ticket)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    times.sort()
    assert len(times) == 10
    for j in range(limit.count, len(times)):
        assert times[j] - times[j - limit.count] >= limit.period - 0.01, (j, times)
    assert len(ledger.request_times(0.0)) == 10

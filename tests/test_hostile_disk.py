"""Disks that fill up, directories that are read-only, checkpoints that lose their -wal file."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from backfill import journal as journal_module
from backfill.errors import CheckpointError, DiskFull
from backfill.journal import Journal, PlannedEvent, check_writable
from backfill.throttle import RateLimit
from test_uploader import FakeApi, Harness


def events(n: int, start: int = 0, size: int = 1) -> list[PlannedEvent]:
    return [PlannedEvent(f"e{i}", i, '{"v":"%s"}' % (str(i) * size), "f.csv", i + 2, "t") for i in range(start, start + n)]


def fill_disk(journal: Journal) -> None:
    """From now on the database cannot grow: SQLite answers SQLITE_FULL, as on a full disk."""
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages}")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_a_full_disk_while_planning_is_a_clean_error_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "x.checkpoint"
    journal = Journal.create(path, target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={})
    journal.add_events(events(100))
    fill_disk(journal)
    with pytest.raises(DiskFull, match="is full; nothing committed is lost"):
        journal.add_events(events(2000, start=100, size=40))
    journal.close()
    with Journal.open(path) as again:
        assert again.counts()["pending"] == 100


def test_a_full_disk_mid_upload_stops_cleanly_and_every_request_stays_accounted_for(h: Harness) -> None:
    h.create(900)
    fake = FakeApi(h.clock)
    uploader = h.uploader(fake, batch_size=1, limits=(RateLimit(10**6, 1.0),))
    calls = Counter[str]()

    def after() -> None:  # the server has answered the third request; then the disk fills
        calls["n"] += 1
        if calls["n"] == 3:
            fill_disk(h.journal)

    fake.hooks["after"] = after
    with pytest.raises(DiskFull, match="is full; nothing committed is lost"):
        uploader.run()
    assert 3 < len(fake.requests) < 900
    h.reopen()
    counts = h.journal.counts()
    sent = {e["event_id"] for e in h.journal.sent_events()}
    assert sent == {f"ev-{number:03d}" for number in fake.times_stored()}  # every stored event is known as sent
    assert counts["in_flight"] == counts["uncertain"] == 0 and counts["pending"] == 900 - len(sent)


def new_checkpoints_hold_at_most(monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
    """A disk that fills up: every checkpoint file created from now on holds at most `pages` pages."""
    connect = journal_module._connect

    def small(path: Path, mode: str) -> sqlite3.Connection:
        conn = connect(path, mode)
        if mode == "rwc":
            conn.execute(f"PRAGMA max_page_count = {pages}")
        return conn

    monkeypatch.setattr(journal_module, "_connect", small)


def test_creating_a_checkpoint_on_a_full_disk_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new_checkpoints_hold_at_most(monkeypatch, 2)
    path = tmp_path / "new.checkpoint"
    with pytest.raises(DiskFull, match="disk is full; nothing was sent"):
        Journal.create(path, target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={})
    assert sorted(os.listdir(tmp_path)) == []  # neither the checkpoint nor a temporary file is left


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_directory_is_said_before_planning(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="not writable"):
            check_writable(ro / "x.checkpoint")
    finally:
        ro.chmod(0o755)


def test_a_directory_that_does_not_exist_is_said_before_planning(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        check_writable(tmp_path / "nowhere" / "x.checkpoint")


def test_a_read_only_file_system_is_said_before_planning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "x" in mode and str(file).endswith(".probe"):
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    with pytest.raises(CheckpointError, match="Read-only file system"):
        check_writable(tmp_path / "x.checkpoint")


def test_the_main_file_alone_holds_every_committed_change(tmp_path: Path) -> None:
    """What a copy without -wal (or a cleanup that drops it) keeps: every finished transaction."""
    path = tmp_path / "x.checkpoint"
    journal = Journal.create(path, target="t", base_url="http://127.0.0.1:1", fingerprints={}, options={})
    journal.add_events(events(30))
    journal.set_invalid_count(0)
    request = journal.begin_request(["e0", "e1"], started_at=1.0)
    journal.finish_request(request, finished_at=2.0, outcome="201", sent={"e0": "s0", "e1": "s1"})
    in_flight = journal.begin_request(["e2"], started_at=3.0)
    assert in_flight
    copy = tmp_path / "copy.checkpoint"
    copy.write_bytes(path.read_bytes())  # the main file only, while the writer still holds it open
    journal.close()
    with Journal.open(copy) as restored:
        counts = restored.counts()
        assert (counts["sent"], counts["uncertain"], counts["pending"]) == (2, 1, 27)
        assert restored.plan_complete
        assert restored.recovered_in_flight == 1

"""End to end: the per-target ledger across imports, checkpoints, terminals and machines (real
`backfill` subprocesses against the sandbox on 127.0.0.1)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from e2e_helpers import ROOT, Processes, content, status, wait_until, write_release_log

MAPPING = ROOT / "mappings" / "release-log.yaml"
FAST = ["--rate-limit", "20/0.2s"]


def import_args(inputs: list[Path], url: str, checkpoint: Path, *extra: str, mapping: Path = MAPPING) -> list[str]:
    return ["import", *map(str, inputs), "-m", str(mapping), "--base-url", url, "--yes",
            "--checkpoint", str(checkpoint), *FAST, *extra]


def history(tmp_path: Path, rows: int) -> list[str]:
    """The lines of one release log of `rows` distinct deployments (header first)."""
    whole = tmp_path / "whole.csv"
    write_release_log(whole, rows, seed=11)
    return whole.read_text(encoding="utf-8").splitlines()


def export(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored_once(box) -> Counter:
    return Counter(content(event) for event in box.recorded())


def test_overlapping_exports_through_two_checkpoints_store_each_event_once(tmp_path: Path, procs: Processes,
                                                                         monkeypatch):
    from e2e_helpers import cli

    lines = history(tmp_path, 60)
    january = export(tmp_path / "january.csv", lines[:41])  # rows 1-40
    march = export(tmp_path / "march.csv", [lines[0], *lines[21:]])  # rows 21-60: 20 already sent
    box = procs.sandbox(*FAST)
    monkeypatch.setenv("DEVGRID_API_KEY", "sandbox")
    code, out = cli("preview", march, "-m", MAPPING, "--base-url", box.url, "--show", 0)
    assert code == 0 and "No ledger for custom" in out

    first = procs.run(import_args([january], box.url, tmp_path / "jan.checkpoint"))
    assert first.returncode == 0, first
    code, out = cli("preview", march, "-m", MAPPING, "--base-url", box.url, "--show", 0)
    assert code == 0 and "events were already sent to custom by earlier imports (1 checkpoint; " in out
    code, out = cli("preview", january, "-m", MAPPING, "--show", 0)
    assert code == 0 and "already sent" not in out  # not told the target: no look-up
    second = procs.run(import_args([march], box.url, tmp_path / "mar.checkpoint"))
    assert second.returncode == 0, second

    counts = stored_once(box)
    assert len(counts) == box.stats()["events_stored"] and set(counts.values()) == {1}
    sent_first = status(tmp_path / "jan.checkpoint", tmp_path).doc["sent"]
    sent_second = status(tmp_path / "mar.checkpoint", tmp_path).doc["sent"]
    assert sent_first + sent_second == len(counts)
    skipped = sent_first + status(tmp_path / "mar.checkpoint", tmp_path).doc["planned"] - len(counts)
    assert skipped == 0  # what was left out is not in the second plan at all
    assert "were already sent to custom by earlier imports (1 checkpoint; " in second.stdout
    known = int(second.stdout.split(" events were already sent")[0].split("\n")[-1].replace(",", ""))
    assert known > 0 and sent_second == len(counts) - sent_first
    assert "not sent again" in second.stdout
    doc = status(tmp_path / "mar.checkpoint", tmp_path).doc
    assert doc["sent_elsewhere"] == {str(tmp_path / "jan.checkpoint"): known}


def test_shuffled_reexport_through_a_renamed_mapping_sends_nothing_new(tmp_path: Path, procs: Processes):
    lines = history(tmp_path, 30)
    original = export(tmp_path / "deploys.csv", lines)
    body = lines[1:]
    random.Random(5).shuffle(body)
    reexport = export(tmp_path / "deploys-2026-03.csv", [lines[0], *body])
    # another file name, and another dedupe key: other event ids, the same bodies
    renamed = tmp_path / "release-log-v2.yaml"
    renamed.write_text(MAPPING.read_text(encoding="utf-8").replace("dedupe: [service, build]", "dedupe: [build, service, sha]"),
                       encoding="utf-8")
    box = procs.sandbox(*FAST)

    first = procs.run(import_args([original], box.url, tmp_path / "one.checkpoint"))
    assert first.returncode == 0, first
    stored = box.stats()["events_stored"]
    again = procs.run(import_args([reexport], box.url, tmp_path / "two.checkpoint", mapping=renamed))

    assert again.returncode == 0, again
    assert box.stats()["events_stored"] == stored
    assert "Nothing to send." in again.stdout
    assert f"{stored} events were already sent to custom by earlier imports (1 checkpoint; " \
           f"{stored} by content (same body under another id))" in again.stdout


def test_resend_sent_sends_again_loudly(tmp_path: Path, procs: Processes):
    lines = history(tmp_path, 10)
    log = export(tmp_path / "deploys.csv", lines)
    box = procs.sandbox(*FAST)
    assert procs.run(import_args([log], box.url, tmp_path / "one.checkpoint")).returncode == 0
    stored = box.stats()["events_stored"]
    again = procs.run(import_args([log], box.url, tmp_path / "two.checkpoint", "--resend-sent"))
    assert again.returncode == 0, again
    assert box.stats()["events_stored"] == 2 * stored
    assert "WARNING: --resend-sent" in again.stderr and "WILL BE SENT AGAIN" in again.stderr


def test_two_imports_with_one_key_at_once_share_the_budget(tmp_path: Path, procs: Processes):
    lines = history(tmp_path, 200)
    a = export(tmp_path / "a.csv", lines[:101])
    b = export(tmp_path / "b.csv", [lines[0], *lines[101:]])
    limits = ["--rate-limit", "6/0.5s"]
    box = procs.sandbox(*limits)
    args = lambda f, name: ["import", str(f), "-m", str(MAPPING), "--base-url", box.url, "--yes",  # noqa: E731
                            "--checkpoint", str(tmp_path / name), "--batch-size", "5", *limits]
    one, out1, err1 = procs.start(args(a, "a.checkpoint"))
    two, out2, err2 = procs.start(args(b, "b.checkpoint"))
    wait_until(lambda: one.poll() is not None and two.poll() is not None, 90, "both imports to finish", 0.05)

    assert (one.returncode, two.returncode) == (0, 0), (err1.read_text(), err2.read_text())
    stats = box.stats()
    assert stats["by_status"] == {"201": stats["requests"]}, stats  # not a single 429
    assert stats["requests"] >= 30  # both imports really overlapped in the windows
    assert set(stored_once(box).values()) == {1}


def test_ledger_export_then_import_on_another_machine_resends_nothing(tmp_path: Path, procs: Processes, monkeypatch):
    from e2e_helpers import cli

    lines = history(tmp_path, 20)
    log = export(tmp_path / "deploys.csv", lines)
    box = procs.sandbox(*FAST)
    assert procs.run(import_args([log], box.url, tmp_path / "one.checkpoint")).returncode == 0
    stored = box.stats()["events_stored"]
    monkeypatch.setenv("DEVGRID_API_KEY", "sandbox")
    moved = tmp_path / "ledger.jsonl"
    code, out = cli("ledger", "export", moved, "--base-url", box.url)
    assert code == 0 and f"Exported {stored} entries" in out
    assert "sandbox" not in moved.read_text(encoding="utf-8").replace(box.url, "")  # never the key

    other_machine = tmp_path / "other-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(other_machine))
    code, out = cli("ledger", "show")
    assert "No ledgers yet" in out
    code, out = cli("ledger", "import", moved)
    assert code == 0 and f"{stored} new entries" in out
    code, out = cli("ledger", "show", "--json")
    assert json.loads(out)[0]["totals"]["sent"] == stored

    again = procs.run(import_args([log], box.url, tmp_path / "elsewhere.checkpoint"))
    assert again.returncode == 0, again
    assert box.stats()["events_stored"] == stored and "Nothing to send." in again.stdout


def test_a_corrupt_ledger_stops_the_import_before_anything_is_sent(tmp_path: Path, procs: Processes):
    log = export(tmp_path / "deploys.csv", history(tmp_path, 5))
    bad = tmp_path / "bad-ledger.sqlite"
    bad.write_bytes(b"this is not a database" * 50)
    box = procs.sandbox(*FAST)
    run = procs.run(import_args([log], box.url, tmp_path / "one.checkpoint", "--ledger", str(bad)))
    assert run.returncode == 3, run
    assert run.stderr.count("\n") == 1 and str(bad) in run.stderr and "not a devgrid-backfill ledger" in run.stderr
    assert box.stats()["requests"] == 0


def test_the_sandbox_down_for_a_while_then_back_the_import_waits_and_finishes(tmp_path: Path, procs: Processes):
    import time

    log = export(tmp_path / "deploys.csv", history(tmp_path, 90))
    limits = ["--rate-limit", "3/0.3s"]
    box = procs.sandbox(*limits)
    port = box.url.rsplit(":", 1)[1]
    proc, out, err = procs.start(["import", str(log), "-m", str(MAPPING), "--base-url", box.url, "--yes",
                                  "--checkpoint", str(tmp_path / "c.checkpoint"), "--batch-size", "5", *limits])
    wait_until(lambda: box.stats()["requests"] >= 3, 30, "the first requests")
    box.proc.kill()  # the outage: connections refused from now on
    box.proc.wait(10)
    time.sleep(4)
    assert proc.poll() is None, err.read_text()  # still waiting, not stopped
    back = procs.sandbox("--port", port, *limits)  # the same record file: what the first one stored stays
    wait_until(lambda: proc.poll() is not None, 90, "the import to finish", 0.05)

    assert proc.returncode == 0, err.read_text()
    assert "server unreachable since" in err.read_text() or "the server answers again" in err.read_text()
    doc = status(tmp_path / "c.checkpoint", tmp_path).doc
    stored = stored_once(back)
    assert len(stored) == doc["planned"] == doc["sent"] and doc["uncertain"] == 0  # nothing lost
    # a request cut by the kill may have been stored before its answer: only such a one, reported, twice
    assert sum(n - 1 for n in stored.values()) <= doc["possibly_duplicated"] <= 5

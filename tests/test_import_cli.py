"""`backfill import`, `resume` and `status`, in process, against a sandbox on 127.0.0.1."""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.cli import main
from backfill.client import EventsClient
from backfill.errors import ExitStatus
from backfill.journal import Journal
from backfill.sandbox import Sandbox, SandboxConfig
from backfill.throttle import RateLimit

ROOT = Path(__file__).resolve().parents[1]
KEY = "cli-KEY-8d1e55b0c2a4"
FAST = (RateLimit(1000, 1.0),)
N_PLANNED, N_INVALID = 21, 4  # samples/release-log.csv with mappings/release-log.yaml
FIELDS = ("type", "timestamp", "entityId", "attributes")


class Cli:
    def __init__(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.dir = tmp_path
        self.capsys = capsys
        self.csv = tmp_path / "release-log.csv"
        self.mapping = tmp_path / "release-log.yaml"
        shutil.copy(ROOT / "samples" / "release-log.csv", self.csv)
        shutil.copy(ROOT / "mappings" / "release-log.yaml", self.mapping)
        self.checkpoint = tmp_path / "import.checkpoint"
        self.output = ""

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        self.output += out + err
        return rc, out, err

    def import_(self, url: str, *extra: str, checkpoint: bool = True) -> tuple[int, str, str]:
        args = ["import", self.csv, "-m", self.mapping, "--base-url", url]
        if checkpoint:
            args += ["--checkpoint", self.checkpoint]
        return self(*args, *extra)

    def status(self, *extra: str) -> dict[str, Any]:
        rc, out, _ = self("status", self.checkpoint, "--json", *extra)
        assert rc == ExitStatus.OK
        return json.loads(out)

    def preview_events(self) -> list[dict]:
        out = self.dir / "bodies.jsonl"
        rc, _, _ = self("preview", self.csv, "-m", self.mapping, "--out", out, "--show", "0")
        assert rc == ExitStatus.OK
        return [event for line in out.read_text().splitlines() for event in json.loads(line)["events"]]


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEVGRID_API_KEY", KEY)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal
    return Cli(tmp_path, capsys)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(api_key=KEY, limits=FAST)) as sb:
        yield sb


def sent_events(sb: Sandbox) -> list[dict]:
    return [{k: e[k] for k in FIELDS if k in e} for e in sb.stored]


def test_import_sends_every_planned_event_as_previewed(cli: Cli, sandbox: Sandbox) -> None:
    expected = cli.preview_events()
    assert len(expected) == N_PLANNED
    rc, out, _ = cli.import_(sandbox.url, "--yes", checkpoint=False)
    assert rc == ExitStatus.OK
    assert sent_events(sandbox) == expected  # event for event, in order
    assert sandbox.stats()["requests"] == 2
    [checkpoint] = cli.dir.glob("backfill-release-log-*.checkpoint")
    assert f"Checkpoint: {checkpoint.name}" in out
    assert f"{N_PLANNED} sent, 0 rejected, 0 uncertain, 0 pending" in out

    # The same command again: resumes, finds nothing to do, sends nothing.
    rc, out, _ = cli.import_(sandbox.url, "--yes", checkpoint=False)
    assert rc == ExitStatus.OK
    assert "Resuming" in out
    assert sandbox.stats()["requests"] == 2


def test_without_a_terminal_yes_is_required(cli: Cli, sandbox: Sandbox) -> None:
    rc, _, err = cli.import_(sandbox.url)
    assert rc == ExitStatus.USAGE
    assert "--yes" in err
    assert sandbox.stats()["requests"] == 0
    assert not cli.checkpoint.exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "sent"), [("n\n", 0), ("\n", 0), ("y\n", N_PLANNED)])
def test_a_terminal_is_asked(cli: Cli, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, answer: str, sent: int) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(answer))
    rc, out, _ = cli.import_(sandbox.url)
    assert rc == ExitStatus.OK
    assert f"Send {N_PLANNED} events in 2 requests to custom ({sandbox.url})?" in out
    assert len(sandbox.stored) == sent
    assert cli.checkpoint.exists() == bool(sent)


def test_no_key(cli: Cli, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVGRID_API_KEY")
    rc, _, err = cli.import_(sandbox.url, "--yes")
    assert rc == ExitStatus.AUTH == 5
    assert "DEVGRID_API_KEY" in err and "--api-key-file" in err
    assert sandbox.stats()["requests"] == 0
    assert not cli.checkpoint.exists()


def test_api_key_file(cli: Cli, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVGRID_API_KEY")
    key_file = cli.dir / "key.txt"
    key_file.write_text(f"{KEY}\n")
    rc, _, _ = cli.import_(sandbox.url, "--yes", "--api-key-file", key_file)
    assert rc == ExitStatus.OK
    assert len(sandbox.stored) == N_PLANNED


@pytest.mark.parametrize("content", ["", "two words\n", "line1\nline2\n"])
def test_an_unusable_key_file_is_refused_before_anything_is_sent(cli: Cli, sandbox: Sandbox, content: str) -> None:
    key_file = cli.dir / "key.txt"
    key_file.write_text(content)
    rc, _, err = cli.import_(sandbox.url, "--yes", "--api-key-file", key_file)
    assert rc == ExitStatus.AUTH
    assert "key" in err
    for word in ("two", "words", "line1", "line2"):
        assert word not in err
    assert sandbox.stats()["requests"] == 0


def test_a_missing_key_file(cli: Cli, sandbox: Sandbox) -> None:
    rc, _, err = cli.import_(sandbox.url, "--yes", "--api-key-file", cli.dir / "nope.txt")
    assert rc == ExitStatus.AUTH
    assert "nope.txt" in err


@pytest.mark.parametrize("url", ["http://api.dev.devgrid.io", "http://192.168.1.20:8080", "http://0.0.0.0:8080"])
def test_plain_http_to_another_host_is_refused(cli: Cli, url: str) -> None:
    rc, _, err = cli.import_(url, "--yes")
    assert rc == ExitStatus.USAGE
    assert "plain http" in err
    assert not cli.checkpoint.exists()


def test_a_target_or_base_url_is_required(cli: Cli) -> None:
    rc, _, err = cli("import", cli.csv, "-m", cli.mapping, "--yes")
    assert rc == ExitStatus.USAGE
    assert "--target" in err


def test_a_refused_key_stops_at_once(cli: Cli) -> None:
    with Sandbox(SandboxConfig(api_key="another-key", limits=FAST)) as sb:
        rc, _, err = cli.import_(sb.url, "--yes")
        assert sb.stats()["requests"] == 1
    assert rc == ExitStatus.AUTH
    assert "refused the key" in err and "401" in err
    assert KEY not in cli.output
    doc = cli.status()
    assert (doc["pending"], doc["sent"], doc["uncertain"]) == (N_PLANNED, 0, 0)


def test_changed_input_is_refused_unless_replan_which_adds_only_the_new_events(cli: Cli, sandbox: Sandbox) -> None:
    assert cli.import_(sandbox.url, "--yes")[0] == ExitStatus.OK
    first = sent_events(sandbox)
    with cli.csv.open("a", encoding="utf-8") as f:
        f.write("web;prod;success;77;abcdef1234567;03.01.2025 10:00;03.01.2025 10:05;kim;deploy-web;new row\n")

    rc, _, err = cli.import_(sandbox.url, "--yes")
    assert rc == ExitStatus.BAD_INPUT == 3
    assert "release-log.csv changed" in err and "--replan" in err
    assert len(sandbox.stored) == N_PLANNED

    rc, out, _ = cli.import_(sandbox.url, "--yes", "--replan")
    assert rc == ExitStatus.OK
    assert "Replanned: 1 new events, 0 pending events updated, 0 pending events no longer planned dropped" in out
    assert sent_events(sandbox)[:N_PLANNED] == first
    [new] = sent_events(sandbox)[N_PLANNED:]
    assert new["attributes"]["build_id"] == "77" and new["timestamp"] == "2025-01-03T09:05:00Z"
    assert cli.status()["sent"] == N_PLANNED + 1

    # A changed option that shapes the events is a change too.
    rc, _, err = cli.import_(sandbox.url, "--yes", "--set", "change_id=CHG1")
    assert rc == ExitStatus.BAD_INPUT
    assert "--set" in err


def test_another_target_with_the_same_checkpoint_is_refused(cli: Cli, sandbox: Sandbox) -> None:
    assert cli.import_(sandbox.url, "--yes")[0] == ExitStatus.OK
    rc, _, err = cli("import", cli.csv, "-m", cli.mapping, "--target", "development", "--checkpoint", cli.checkpoint, "--yes")
    assert rc == ExitStatus.BAD_INPUT
    assert "belongs to an import to custom" in err and "development" in err
    with Sandbox(SandboxConfig(api_key=KEY, limits=FAST)) as other:
        rc, _, err = cli.import_(other.url, "--yes")
        assert rc == ExitStatus.BAD_INPUT
        assert other.stats()["requests"] == 0


def test_status_json_and_manifests(cli: Cli, sandbox: Sandbox) -> None:
    assert cli.import_(sandbox.url, "--yes")[0] == ExitStatus.OK
    rejected_file, sent_file = cli.dir / "rejected.jsonl", cli.dir / "sent.jsonl"
    doc = cli.status("--rejected", rejected_file, "--sent", sent_file)
    assert {k: doc[k] for k in ("planned", "sent", "rejected", "invalid", "pending", "uncertain")} == {
        "planned": N_PLANNED, "sent": N_PLANNED, "rejected": 0, "invalid": N_INVALID, "pending": 0, "uncertain": 0,
    }
    assert doc["target"] == "custom" and doc["base_url"] == sandbox.url
    assert doc["started_at"].endswith("Z") and doc["last_activity_at"] >= doc["started_at"]
    assert rejected_file.read_text() == ""
    manifest = [json.loads(line) for line in sent_file.read_text().splitlines()]
    assert {m["server_id"] for m in manifest} == {e["id"] for e in sandbox.stored}
    assert all(m["source_file"].endswith("release-log.csv") and m["source_row"] >= 1 for m in manifest)

    rc, out, _ = cli("status", cli.checkpoint)
    assert rc == ExitStatus.OK
    assert f"Planned {N_PLANNED}: sent {N_PLANNED}, rejected 0" in out


def test_unknown_entities_are_rejected_with_the_servers_reason(cli: Cli) -> None:
    with Sandbox(SandboxConfig(api_key=KEY, limits=FAST, entities=frozenset({"app-123"}))) as sb:
        rc, out, _ = cli.import_(sb.url, "--yes")
        stored = sb.stored
    assert rc == ExitStatus.REJECTED == 7
    assert {e["entityId"] for e in stored} == {"app-123"}
    rejected_file = cli.dir / "rejected.jsonl"
    doc = cli.status("--rejected", rejected_file)
    assert doc["rejected"] == N_PLANNED - len(stored) > 0
    assert doc["sent"] == len(stored)
    rows = [json.loads(line) for line in rejected_file.read_text().splitlines()]
    assert len(rows) == doc["rejected"]
    assert {r["reason"] for r in rows} == {"Entity not found"}
    assert all(r["source_file"].endswith("release-log.csv") and isinstance(r["source_row"], int) for r in rows)
    assert all(json.loads(r["body"])["entityId"] != "app-123" for r in rows)
    assert f"{doc['rejected']} rejected" in out


def test_strict_with_invalid_rows_sends_nothing(cli: Cli, sandbox: Sandbox) -> None:
    rc, _, _ = cli.import_(sandbox.url, "--yes", "--strict")
    assert rc == ExitStatus.INVALID_ROWS
    assert sandbox.stats()["requests"] == 0


def test_stopped_after_retries_then_resume(cli: Cli) -> None:
    with Sandbox(SandboxConfig(api_key=KEY, limits=FAST, fail_rate=1.0)) as sb:
        rc, _, err = cli.import_(sb.url, "--yes", "--max-retries", "0")
        assert rc == ExitStatus.STOPPED == 6
        assert f"backfill resume {cli.checkpoint}" in err
        assert sb.stats()["requests"] == 1
        doc = cli.status()
        assert (doc["uncertain"], doc["pending"], doc["sent"]) == (15, N_PLANNED - 15, 0)

        sb.config.fail_rate = 0.0  # the server recovers
        rc, out, _ = cli("resume", cli.checkpoint)
        assert rc == ExitStatus.OK
        assert len(sb.stored) == N_PLANNED
    doc = cli.status()
    assert (doc["sent"], doc["uncertain"], doc["possibly_duplicated"]) == (N_PLANNED, 0, 15)
    assert {e["status"] for e in doc["uncertain_events"]} == {"duplicated"}
    assert [run["argv_summary"] for run in doc["runs"]] == ["import", "resume"]
    assert "15 events were resent after an uncertain attempt: possibly duplicated" in out


def test_interrupted_then_rerun(cli: Cli, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()
    post = EventsClient.post

    def interrupt_the_second(self: EventsClient, body: str) -> Any:
        calls["post"] += 1
        if calls["post"] == 2:
            raise KeyboardInterrupt
        return post(self, body)

    monkeypatch.setattr(EventsClient, "post", interrupt_the_second)
    rc, _, err = cli.import_(sandbox.url, "--yes")
    assert rc == ExitStatus.INTERRUPTED == 130
    assert "backfill resume" in err
    doc = cli.status()
    assert (doc["sent"], doc["uncertain"]) == (15, N_PLANNED - 15)

    rc, out, _ = cli.import_(sandbox.url, "--yes")  # the same command resumes
    assert rc == ExitStatus.OK
    assert len(sandbox.stored) == N_PLANNED
    assert cli.status()["possibly_duplicated"] == N_PLANNED - 15


def test_on_uncertain_skip(cli: Cli, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = Counter[str]()
    post = EventsClient.post

    def interrupt_the_first(self: EventsClient, body: str) -> Any:
        calls["post"] += 1
        if calls["post"] == 1:
            raise KeyboardInterrupt
        return post(self, body)

    monkeypatch.setattr(EventsClient, "post", interrupt_the_first)
    assert cli.import_(sandbox.url, "--yes")[0] == ExitStatus.INTERRUPTED
    rc, out, _ = cli("resume", cli.checkpoint, "--on-uncertain", "skip")
    assert rc == ExitStatus.REJECTED  # finished, but not everything is known to be there
    assert len(sandbox.stored) == N_PLANNED - 15
    assert "15 uncertain events were not resent: possibly missing" in out
    doc = cli.status()
    assert (doc["possibly_missing"], doc["uncertain"]) == (15, 15)
    assert {e["status"] for e in doc["uncertain_events"]} == {"missing"}


def test_the_key_never_appears_in_output_logs_or_checkpoint(
    cli: Cli, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    seen_files: set[str] = set()
    post = EventsClient.post

    def grep_files_then_post(self: EventsClient, body: str) -> Any:
        assert KEY not in body
        for path in cli.dir.iterdir():  # mid-run, with the WAL in use
            if path.is_file():
                seen_files.add(path.name)
                assert KEY.encode() not in path.read_bytes(), path
        return post(self, body)

    monkeypatch.setattr(EventsClient, "post", grep_files_then_post)
    with Sandbox(SandboxConfig(api_key=KEY, limits=FAST, fail_rate=1.0, entities=frozenset({"app-123"}))) as sb:
        rc, _, _ = cli("--traceback", "import", cli.csv, "-m", cli.mapping, "--base-url", sb.url, "--yes",
                       "--checkpoint", cli.checkpoint, "--max-retries", "0")
        assert rc == ExitStatus.STOPPED
        sb.config.fail_rate = 0.0
        assert cli("resume", cli.checkpoint)[0] == ExitStatus.REJECTED
    with Sandbox(SandboxConfig(api_key="other", limits=FAST)) as sb:
        rc, _, _ = cli("import", cli.csv, "-m", cli.mapping, "--base-url", sb.url, "--yes",
                       "--checkpoint", cli.dir / "second.checkpoint")
        assert rc == ExitStatus.AUTH
    cli.status("--rejected", cli.dir / "rejected.jsonl", "--sent", cli.dir / "sent.jsonl")
    assert "HTTP Request: POST" in caplog.text  # httpx did log, at DEBUG too
    assert KEY not in cli.output
    assert KEY not in caplog.text
    assert f"{cli.checkpoint.name}-wal" in seen_files
    files = [p for p in cli.dir.iterdir() if p.is_file()]
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


def test_status_of_a_missing_checkpoint(cli: Cli) -> None:
    rc, _, err = cli("status", cli.dir / "nothing.checkpoint")
    assert rc == ExitStatus.BAD_INPUT
    assert "not found" in err


def test_a_rerun_waits_for_the_windows_used_by_the_previous_run(cli: Cli) -> None:
    # The server's window is a little shorter than the client's: the checkpoint holds when each request
    # was written ahead, a few milliseconds before the server saw it (see the note on request_times).
    with Sandbox(SandboxConfig(api_key=KEY, limits=(RateLimit(2, 0.45),))) as sb:
        assert cli.import_(sb.url, "--yes", "--rate-limit", "2/0.5s")[0] == ExitStatus.OK
        with cli.csv.open("a", encoding="utf-8") as f:
            f.write("web;prod;success;78;abcdef1234567;04.01.2025 10:00;04.01.2025 10:05;kim;deploy-web;\n")
        # The checkpoint holds the first run's two request times: the next request waits for them.
        assert cli.import_(sb.url, "--yes", "--rate-limit", "2/0.5s", "--replan")[0] == ExitStatus.OK
        stats = sb.stats()
    assert stats["rate_limited"] == 0
    assert stats["events_stored"] == N_PLANNED + 1
    with Journal.open(cli.checkpoint, read_only=True) as journal:
        first, second, third = journal.request_times(since=0)
    assert third >= first + 0.5


def test_replan_after_a_mapping_change_updates_pending_events_and_never_resends_sent_ones(tmp_path, monkeypatch):
    """Half an import sent, then the mapping is corrected and --replan: the rest goes out with the
    correction, the sent half is not sent again - with ids from the dedupe key, and without one
    (ids from the source rows, so a mapping change does not make sent events look new)."""
    for dedupe in ("dedupe: [service, build]\n", ""):
        work = tmp_path / ("keyed" if dedupe else "rows")
        work.mkdir()
        csv = work / "d.csv"
        csv.write_text("service,env,build,finished\n" + "".join(
            f"pay,prod,{i},2023-01-0{i}T10:00:00Z\n" for i in range(1, 7)
        ))
        mapping = work / "m.yaml"
        base = "entityId: service\ntimestamp: finished\nattributes:\n  build_id: build\n  env: {from: env, lookup: {prod: %s}}\n"
        mapping.write_text(base % "prod" + dedupe)
        checkpoint = work / "c.checkpoint"
        with Sandbox(SandboxConfig()) as box:
            monkeypatch.setenv("DEVGRID_API_KEY", "sandbox")
            args = [str(csv), "-m", str(mapping), "--base-url", box.url, "--checkpoint", str(checkpoint), "--yes"]
            assert main(["import", *args, "--batch-size", "3", "--max-retries", "0", "--until", "2023-01-04"]) == 0
            mapping.write_text(base % "production" + dedupe)
            assert main(["import", *args, "--batch-size", "3", "--replan"]) == 0
            stored = [(e["attributes"]["build_id"], e["attributes"]["env"]) for e in box.stored]
        assert sorted(stored) == [("1", "prod"), ("2", "prod"), ("3", "prod"),
                                  ("4", "production"), ("5", "production"), ("6", "production")]
        with Journal.open(checkpoint, read_only=True) as journal:
            counts = journal.counts()
            assert (counts["planned"], counts["sent"], counts["possibly_duplicated"]) == (6, 6, 0)


def test_status_manifests_into_a_path_that_cannot_be_written_are_one_line_errors(cli: Cli, sandbox: Sandbox) -> None:
    assert cli.import_(sandbox.url, "--yes")[0] == ExitStatus.OK
    for option, target in (("--sent", cli.dir / "no" / "such" / "dir.jsonl"), ("--rejected", cli.dir)):
        rc, _, err = cli("status", cli.checkpoint, option, target)
        assert rc == ExitStatus.USAGE
        assert "cannot write" in err and err.count("\n") == 1


def test_resume_of_a_missing_checkpoint_says_so_before_asking_for_a_key(cli: Cli, monkeypatch) -> None:
    monkeypatch.delenv("DEVGRID_API_KEY", raising=False)
    rc, _, err = cli("resume", cli.dir / "nothing.checkpoint")
    assert rc == ExitStatus.BAD_INPUT
    assert "not found" in err

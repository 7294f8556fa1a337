"""The `backfill` command against hostile servers, proxies, options and disks: exit codes and the lines it prints.

Servers run in this process on 127.0.0.1 (tests/hostile.py, the sandbox); the CLI runs in-process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from backfill.journal import Journal
from backfill.sandbox import Sandbox, SandboxConfig
from conftest import SAMPLE_CSV, SAMPLE_MAPPING
from hostile import HostileServer, Request, answer, json_answer

KEY = "hostile-KEY/0123456789+SECRET"
CliRunner = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEVGRID_API_KEY", KEY)


def import_args(url: str, checkpoint: Path, *extra: object) -> list[object]:
    return ["import", SAMPLE_CSV, "-m", SAMPLE_MAPPING, "--base-url", url, "--yes", "--checkpoint", checkpoint, *extra]


def status_json(run_cli: CliRunner, checkpoint: Path, tmp_path: Path) -> tuple[dict, str]:
    rejected = tmp_path / "rejected.jsonl"
    code, out, err = run_cli("status", checkpoint, "--json", "--rejected", rejected)
    assert code == 0, err
    return json.loads(out), rejected.read_text(encoding="utf-8")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(api_key=KEY, limits=())) as box:
        yield box


# --------------------------------------------------------------------- usage errors up front


@pytest.mark.parametrize(
    "extra",
    [
        ["--timeout", "-1"],
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--timeout", "0"],
        ["--max-retries", "-1"],
        ["--max-retries", "many"],
        ["--rate-limit", "99999999999999999999/s"],
        ["--rate-limit", "5/1e-300s"],
    ],
)
def test_bad_option_values_are_usage_errors_before_anything(run_cli: CliRunner, tmp_path: Path, extra: list[str]) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    code, out, err = run_cli(*import_args("http://127.0.0.1:9", checkpoint, *extra))
    assert code == 2, err
    assert err.startswith("Error: ") and err.count("\n") == 1
    assert not checkpoint.exists() and "Checkpoint" not in out


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:abc", "http://[::1", "http://127.0.0.1:65545", "https://user:pa55@api.example.com", "http://127.0.0.1:0"],
)
def test_bad_base_urls_are_usage_errors_before_anything(run_cli: CliRunner, tmp_path: Path, url: str) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    code, out, err = run_cli(*import_args(url, checkpoint))
    assert code == 2, err
    assert "pa55" not in err and not checkpoint.exists() and out == ""


@pytest.mark.parametrize("setting", ["ALL_PROXY=socks5://127.0.0.1:1080", "https_proxy=socks5h://p:1", "HTTP_PROXY=ftp://p"])
def test_proxy_settings_that_cannot_be_used_are_usage_errors(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    name, _, value = setting.partition("=")
    monkeypatch.setenv(name, value)
    checkpoint = tmp_path / "c.checkpoint"
    code, out, err = run_cli(*import_args("http://127.0.0.1:9", checkpoint))
    assert code == 2 and name in err and "proxy" in err
    assert not checkpoint.exists()


def test_a_checkpoint_that_cannot_be_created_is_said_before_planning(run_cli: CliRunner, tmp_path: Path) -> None:
    for checkpoint in (tmp_path / "nowhere" / "c.checkpoint", Path("/proc/backfill-test.checkpoint")):
        code, out, err = run_cli(*import_args("http://127.0.0.1:9", checkpoint))
        assert code == 3, err
        assert "cannot create checkpoint" in err and "Planned" not in out and "events" not in out


# --------------------------------------------------------------------- answers that settle nothing


@pytest.mark.parametrize("reply", [json_answer(201, "{}"), answer(202), answer(204), json_answer(201, '{"success": 5}')])
def test_a_2xx_without_a_usable_body_stops_and_leaves_the_batch_uncertain(
    run_cli: CliRunner, tmp_path: Path, reply: bytes
) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    with HostileServer(lambda request: reply) as server:
        started = time.monotonic()
        code, out, err = run_cli(*import_args(server.url, checkpoint, "--max-retries", "2"))
        assert len(server.requests) == 3
    assert time.monotonic() - started < 30
    assert code == 6, err
    assert "stopped after 3 failed attempts in a row" in err
    doc, _ = status_json(run_cli, checkpoint, tmp_path)
    batch = len(json.loads(server.requests[0].body)["events"])
    assert (doc["uncertain"], doc["sent"]) == (batch, 0)
    assert doc["pending"] == doc["planned"] - batch
    assert {e["copies_at_most"] for e in doc["uncertain_events"]} == {3}


# --------------------------------------------------------------------- the key echoed back


def echo_key(status: int) -> Callable[[Request], bytes]:
    def handler(request: Request) -> bytes:
        key = request.headers.get("x-api-key", "")
        return json_answer(status, json.dumps({"message": f"rejected request with x-api-key={key}"}))

    return handler


@pytest.mark.parametrize(("status", "exit_code"), [(400, 7), (401, 5), (403, 5), (404, 6), (503, 6)])
def test_a_key_echoed_by_the_server_is_never_printed_or_stored(
    run_cli: CliRunner, tmp_path: Path, status: int, exit_code: int
) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    with HostileServer(echo_key(status)) as server:
        code, out, err = run_cli(*import_args(server.url, checkpoint, "--max-retries", "1", "--batch-size", "2"))
    assert code == exit_code, err
    assert "SECRET" not in out + err
    assert "[redacted]" in (err if status != 400 else "[redacted]")
    doc, rejected = status_json(run_cli, checkpoint, tmp_path)
    assert "SECRET" not in json.dumps(doc) + rejected
    if status in (400, 404, 503):  # what the server said is kept: as a reject reason, or the run's outcome
        assert "[redacted]" in (rejected if status == 400 else json.dumps(doc["runs"]))
    assert b"SECRET" not in Path(checkpoint).read_bytes()
    code, text, err = run_cli("status", checkpoint)
    assert "SECRET" not in text + err


# --------------------------------------------------------------------- TLS and proxies


def test_a_self_signed_certificate_is_named_at_once_and_not_retried(run_cli: CliRunner, tmp_path: Path) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    with HostileServer(lambda r: answer(201), tls=True) as server:
        started = time.monotonic()
        code, out, err = run_cli(*import_args(server.url, checkpoint))
    assert time.monotonic() - started < 10
    assert code == 6, err
    assert "TLS certificate of 127.0.0.1 was refused" in err and "not retried" in err
    doc, _ = status_json(run_cli, checkpoint, tmp_path)
    assert (doc["pending"], doc["uncertain"], doc["requests"]) == (doc["planned"], 0, 1)


def test_a_proxy_refusing_connect_leaves_everything_pending_and_is_named(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    with HostileServer(lambda r: answer(403, b"no CONNECT for you")) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        code, out, err = run_cli(*import_args("https://api.devgrid.invalid", checkpoint, "--max-retries", "1"))
        assert {r.method for r in proxy.requests} == {"CONNECT"}
        proxy_url = proxy.url
    assert code == 6, err
    assert f"Using the https proxy {proxy_url}" in err
    assert f"the proxy {proxy_url} refused the connection" in err
    doc, _ = status_json(run_cli, checkpoint, tmp_path)
    assert (doc["pending"], doc["uncertain"]) == (doc["planned"], 0)


def test_a_proxy_in_the_environment_never_sees_a_loopback_import(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    with HostileServer(lambda r: answer(201, b'{"success": [], "failures": []}')) as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        code, out, err = run_cli(*import_args(sandbox.url, tmp_path / "c.checkpoint"))
        assert proxy.requests == []
    assert code == 0, err
    assert "proxy" not in err


def test_a_server_asking_to_wait_for_years_is_a_failure(run_cli: CliRunner, tmp_path: Path) -> None:
    reply = json_answer(429, '{"message": "slow down"}', {"Retry-After": "9" * 300})
    with HostileServer(lambda r: reply) as server:
        started = time.monotonic()
        code, out, err = run_cli(*import_args(server.url, tmp_path / "c.checkpoint", "--max-retries", "1"))
    assert time.monotonic() - started < 30
    assert code == 6 and "asked to wait" in err


# --------------------------------------------------------------------- disks and files


class FullAfter:
    """A journal connection whose COMMITs fail as on a full disk once `commits` more have passed."""

    def __init__(self, conn: sqlite3.Connection, commits: int) -> None:
        self._conn, self._left, self._writing = conn, commits, False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith("BEGIN"):
            self._writing = sql == "BEGIN IMMEDIATE"
        if sql == "COMMIT" and self._writing:
            if self._left <= 0:
                self._conn.execute("ROLLBACK")
                error = sqlite3.OperationalError("database or disk is full")
                error.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
                raise error
            self._left -= 1
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_a_full_disk_mid_run_is_a_clean_resumable_stop(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    begin = Journal.begin_request

    def filling(self: Journal, ids, started_at):  # type: ignore[no-untyped-def]
        if not isinstance(self._conn, FullAfter):
            self._conn = FullAfter(self._conn, commits=3)  # type: ignore[assignment]
        return begin(self, ids, started_at)

    monkeypatch.setattr(Journal, "begin_request", filling)
    code, out, err = run_cli(*import_args(sandbox.url, checkpoint, "--batch-size", "1"))
    monkeypatch.undo()
    monkeypatch.setenv("DEVGRID_API_KEY", KEY)
    assert code == 6, err
    assert "is full; nothing committed is lost" in err
    assert "To continue: backfill resume" in err
    # Two requests answered; the answer to the second could not be recorded, so it stays in flight.
    assert len(sandbox.stored) == 2
    code, out, err = run_cli("resume", checkpoint)
    assert code == 0, err
    assert "1 events were in flight when the last run stopped" in out
    doc, _ = status_json(run_cli, checkpoint, tmp_path)
    assert doc["sent"] == doc["planned"] and doc["possibly_duplicated"] == 1
    assert len(sandbox.stored) == doc["planned"] + 1  # the one reported copy, no other


def test_a_deleted_input_is_said_missing_and_resume_continues(run_cli: CliRunner, tmp_path: Path, sandbox: Sandbox) -> None:
    csv = tmp_path / "deploys.csv"
    csv.write_bytes(SAMPLE_CSV.read_bytes())
    checkpoint = tmp_path / "c.checkpoint"
    args = ["import", csv, "-m", SAMPLE_MAPPING, "--base-url", sandbox.url, "--yes", "--checkpoint", checkpoint]
    code, out, err = run_cli(*args)
    assert code == 0, err
    csv.unlink()
    code, out, err = run_cli(*args)
    assert code == 3
    assert f"{csv}: the file is missing" in err and f"backfill resume {checkpoint}" in err
    code, out, err = run_cli("resume", checkpoint)
    assert code == 0, err


def test_a_key_file_others_can_read_is_warned_about(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    monkeypatch.delenv("DEVGRID_API_KEY")
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o644)
    code, out, err = run_cli(*import_args(sandbox.url, tmp_path / "c.checkpoint", "--api-key-file", key_file))
    assert code == 0, err
    assert f"--api-key-file {key_file} can be read by other users (mode 644); chmod 600" in err
    key_file.chmod(0o600)
    code, out, err = run_cli(*import_args(sandbox.url, tmp_path / "d.checkpoint", "--api-key-file", key_file))
    assert code == 0 and "can be read by other users" not in err


def test_status_says_when_the_plan_is_incomplete_and_reads_read_only_media(
    run_cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "c.checkpoint"
    Journal.create(checkpoint, target="custom", base_url="http://127.0.0.1:9", fingerprints={}, options={}).close()
    code, out, err = run_cli("status", checkpoint)
    assert code == 0, err
    assert "The plan is incomplete" in out
    from backfill import journal as journal_module

    monkeypatch.setattr(journal_module, "_can_write_beside", lambda path: False)
    code, out, err = run_cli("status", checkpoint, "--json")
    assert code == 0, err
    assert json.loads(out)["plan_complete"] is False

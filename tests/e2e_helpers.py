"""Helpers for the end-to-end tests: real `backfill` and sandbox subprocesses on 127.0.0.1.

Every wait is bounded, and every process started here is killed by the `Processes` that started it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from backfill.cli import main

ROOT = Path(__file__).resolve().parent.parent
KEY = "sandbox"
START_TIMEOUT = 10.0  # a sandbox prints its address in ~0.1 s
RUN_TIMEOUT = 60.0  # one `backfill import` of a few hundred events; normally 1-3 s


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.003) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class SandboxProcess:
    """`python -m backfill.sandbox --port 0 ...` and a client for its stats."""

    proc: subprocess.Popen[bytes]
    url: str
    record: Path
    stderr: Path
    http: httpx.Client = field(repr=False)

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_sandbox/stats")
        response.raise_for_status()
        return dict(response.json())

    def recorded(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text(encoding="utf-8").splitlines()]


@dataclass
class Run:
    """One finished `backfill` subprocess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    killed: bool = False

    def __str__(self) -> str:
        return f"backfill {' '.join(self.args)} -> {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class Processes:
    """Starts the subprocesses of one test and kills whatever is still running at `close()`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._closers: list[Callable[[], None]] = []
        self._count = 0

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for closer in self._closers:
            closer()

    def _env(self, key: str | None) -> dict[str, str]:
        # No proxy, no key from the environment: the processes talk only to the sandbox on 127.0.0.1.
        env = {k: v for k, v in os.environ.items() if k != "DEVGRID_API_KEY" and not k.lower().endswith("_proxy")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        if key is not None:
            env["DEVGRID_API_KEY"] = key
        return env

    def sandbox(self, *args: str, name: str = "sandbox") -> SandboxProcess:
        record = self.workdir / f"{name}-received.jsonl"
        stderr = self.workdir / f"{name}.stderr"
        with open(stderr, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backfill.sandbox", "--port", "0", "--record", str(record), *args],
                cwd=self.workdir,
                env=self._env(None),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self._procs.append(proc)
        assert proc.stdout is not None
        self._closers.append(proc.stdout.close)
        line = _read_line(proc.stdout, START_TIMEOUT)
        prefix = "sandbox listening on "
        assert line.startswith(prefix), f"unexpected sandbox output {line!r}; stderr: {stderr.read_text()}"
        url = line[len(prefix) :].split()[0]
        http = httpx.Client(base_url=url, timeout=5, trust_env=False)
        self._closers.insert(0, http.close)
        return SandboxProcess(proc, url, record, stderr, http)

    def start(self, args: Sequence[str], *, key: str | None = KEY) -> tuple[subprocess.Popen[bytes], Path, Path]:
        self._count += 1
        out = self.workdir / f"run{self._count}.stdout"
        err = self.workdir / f"run{self._count}.stderr"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "backfill", *args],
                cwd=self.workdir,
                env=self._env(key),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        self._procs.append(proc)
        return proc, out, err

    def run(
        self,
        args: Sequence[str],
        *,
        key: str | None = KEY,
        kill_when: Callable[[], bool] | None = None,
        kill_delay: float = 0.0,
        timeout: float = RUN_TIMEOUT,
    ) -> Run:
        """Run `backfill ARGS` to the end, or SIGKILL it `kill_delay` s after `kill_when()` first holds."""
        proc, out, err = self.start(args, key=key)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=10)
                raise AssertionError(f"backfill {' '.join(args)} did not finish in {timeout} s:\n{err.read_text()}")
            if kill_when is not None and kill_when():
                if kill_delay:
                    time.sleep(kill_delay)
                proc.send_signal(signal.SIGKILL)  # a no-op if it has already been reaped
                proc.wait(timeout=10)
                break
            time.sleep(0.002)
        code = proc.returncode
        return Run(
            list(args),
            code,
            out.read_text(encoding="utf-8", errors="replace"),
            err.read_text(encoding="utf-8", errors="replace"),
            killed=code == -signal.SIGKILL,
        )


def _read_line(stream: Any, timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            raise AssertionError(f"the sandbox printed nothing in {timeout} s")
        return str(stream.readline().decode("utf-8").strip())
    finally:
        selector.close()


# --------------------------------------------------------------------- in-process CLI calls (fast)


def cli(*args: object) -> tuple[int, str]:
    """`backfill ARGS` in this process (preview, status): exit code and stdout."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    assert "Traceback" not in err.getvalue() and "Internal error" not in err.getvalue(), err.getvalue()
    return code, out.getvalue()


def preview_bodies(inputs: Sequence[Path], mapping: Path, extra: Sequence[str], workdir: Path) -> list[list[dict]]:
    """The request bodies `backfill preview --out` writes: a list of event lists, one per request."""
    out = workdir / "preview.jsonl"
    code, text = cli("preview", *inputs, "-m", mapping, *extra, "--out", out, "--show", 0)
    assert code == 0, text
    return [json.loads(line)["events"] for line in out.read_text(encoding="utf-8").splitlines()]


@dataclass
class Status:
    doc: dict[str, Any]
    sent: list[dict[str, Any]]
    rejected: list[dict[str, Any]]

    @property
    def uncertain(self) -> dict[str, str]:
        """event_id -> "duplicated" | "missing" | "unresolved"."""
        return {e["event_id"]: e["status"] for e in self.doc["uncertain_events"]}


def status(checkpoint: Path, workdir: Path) -> Status:
    """`backfill status CHECKPOINT --json --sent FILE --rejected FILE`."""
    sent, rejected = workdir / "status-sent.jsonl", workdir / "status-rejected.jsonl"
    code, text = cli("status", checkpoint, "--json", "--sent", sent, "--rejected", rejected)
    assert code == 0, text
    lines = lambda path: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]  # noqa: E731
    return Status(json.loads(text), lines(sent), lines(rejected))


# --------------------------------------------------------------------- inputs


PAYMENTS = "8c0e4f3a-1d2b-4c5d-9e8f-0a1b2c3d4e5f"  # entity ids of mappings/release-log.yaml
WEB = "app-123"
CSV_HEADER = "service;environment;result;build;sha;started_at;finished_at;deployed_by;job;notes"


def write_release_log(path: Path, rows: int, *, seed: int, payments_share: float = 0.5) -> dict[int, str]:
    """A release-log CSV (mappings/release-log.yaml) of `rows` valid rows, each a distinct deployment.

    Times are daytime in Europe/Berlin, so no row falls in a DST gap or overlap, and strictly
    increasing, so the plan keeps file order. Returns source row (header = row 1) -> build id.
    """
    rng = random.Random(seed)
    start = dt.datetime(2020, 1, 6, 9, 0)
    lines = [CSV_HEADER]
    builds = {}
    for i in range(rows):
        service = "payments" if rng.random() < payments_share else "web"
        began = start + dt.timedelta(days=i // 3, hours=3 * (i % 3), minutes=i % 47)
        ended = began + dt.timedelta(minutes=5 + i % 20)
        build = str(1000 + i)
        sha = hashlib.sha1(build.encode()).hexdigest()
        lines.append(
            ";".join(
                [
                    service,
                    rng.choice(["prod", "staging", "stg"]),
                    rng.choice(["Success", "SUCCESS", "passed", "FAILED"]),
                    build,
                    sha,
                    began.strftime("%d.%m.%Y %H:%M"),
                    ended.strftime("%d.%m.%Y %H:%M"),
                    rng.choice(["anna.schmidt", "jonas.weber", ""]),
                    f"deploy-{service}",
                    f"generated row {i}",
                ]
            )
        )
        builds[i + 2] = build
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return builds


def content(event: dict[str, Any]) -> str:
    """An event as POSTed, or a stored one from the record: the fields the client sent."""
    doc = {k: event[k] for k in ("type", "timestamp", "entityId", "attributes") if k in event}
    doc.setdefault("attributes", {})
    return json.dumps(doc, sort_keys=True)

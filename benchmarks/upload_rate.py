"""Upload rate against the rate limits: how close does the uploader get to the best schedule?

Uploads N events to a local sandbox whose rate limits are scaled down in time (by default
100/1s and 1500/15s, the documented 100/min and 1500/h at 1/60 and 1/240 the period), through the
real Journal, Throttle, EventsClient and Uploader, and prints:

  - events, requests, elapsed time;
  - the achieved request rate against the best schedule the limits allow (Throttle.schedule_seconds:
    each request at the earliest moment every window allows), from the first request to the last;
  - the share of full batches; the 429s met.

Targets: >= 95% of the best schedule, every batch full except the last, no 429 when client and server
agree on the limits. Run: `python benchmarks/upload_rate.py [--events N] [--rate-limit N/PERIOD ...]`.

The default, 30000 events (2000 requests, about 20 s), goes past the 1500/15s window, so both windows
shape the schedule. The best schedule counts a burst of requests as instantaneous, while each request
really costs the client a few milliseconds (two fsynced checkpoint transactions and the HTTP round
trip): with only a few hundred requests, the last burst alone is a large share of the time, and the
figure says more about the machine than about the scheduling. The sandbox runs in its own process
(as a real server would), not on a thread sharing this interpreter's GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from backfill.client import EventsClient, Outcome
from backfill.journal import Journal, PlannedEvent
from backfill.sandbox import Sandbox, SandboxConfig
from backfill.throttle import RateLimit, Throttle, parse_rate_limit
from backfill.uploader import UploadOptions, Uploader

DEFAULT_LIMITS = ("100/1s", "1500/15s")
KEY = "benchmark-key"


class TimedClient(EventsClient):
    """EventsClient that notes when each request goes out and how many events it carries."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[float, int]] = []

    def post(self, body: str) -> Outcome:
        self.sends.append((time.time(), body.count('"type":')))
        return super().post(body)


def planned_events(n: int) -> list[PlannedEvent]:
    events = []
    for i in range(n):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_546_300_800 + 3600 * i))
        body = json.dumps(
            {
                "type": "event-deploy",
                "timestamp": stamp,
                "entityId": f"app-{i % 7}",
                "attributes": {"env": "production", "status": "success", "build_id": str(i)},
            },
            separators=(",", ":"),
        )
        events.append(PlannedEvent(f"ev-{i:07d}", i, body, "benchmark.csv", i + 2, stamp))
    return events


@contextlib.contextmanager
def sandbox_server(limits: list[RateLimit], latency: float, in_process: bool) -> Iterator[tuple[str, Callable[[], dict]]]:
    """(url, stats) of a sandbox: by default in its own process, as a real server would be (in this
    process it would share the GIL with the uploader it measures)."""
    if in_process:
        config = SandboxConfig(api_key=KEY, limits=tuple(limits), keep_stored=False, latency=latency)
        with Sandbox(config) as sandbox:
            yield sandbox.url, sandbox.stats
        return
    argv = [sys.executable, "-m", "backfill.sandbox", "--port", "0", "--api-key", KEY, "--latency", str(latency)]
    for limit in limits:
        argv += ["--rate-limit", str(limit)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if not match:
            raise RuntimeError(f"the sandbox did not start: {line!r}")
        url = match.group(1)
        yield url, lambda: httpx.get(f"{url}/_sandbox/stats").json()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(n_events: int, client_limits: list[RateLimit], server_limits: list[RateLimit], batch_size: int,
        workdir: Path, latency: float, in_process: bool = False) -> dict[str, Any]:
    journal = Journal.create(workdir / "benchmark.checkpoint", target="custom", base_url="http://127.0.0.1",
                             fingerprints={}, options={"batch_size": batch_size})
    journal.add_events(planned_events(n_events))
    journal.set_invalid_count(0)
    with sandbox_server(server_limits, latency, in_process) as (url, stats_of), httpx.Client(timeout=30.0) as http:
        client = TimedClient(url, KEY, client=http)
        throttle = Throttle(client_limits)
        uploader = Uploader(journal, client, throttle, UploadOptions(batch_size=batch_size, max_retries=3))
        started = time.time()
        result = uploader.run()
        elapsed = time.time() - started
        stats = stats_of()
    journal.close()

    sends = client.sends
    requests = len(sends)
    span = sends[-1][0] - sends[0][0] if requests > 1 else 0.0
    best = Throttle(client_limits, clock=lambda: 0.0).schedule_seconds(requests, now=0.0) if requests else 0.0
    sizes = [size for _, size in sends]
    # The client's own time per request (write-ahead, HTTP, outcome): within bursts, between sends less
    # than 50 ms apart. The best schedule counts a burst as instantaneous.
    gaps = [b[0] - a[0] for a, b in zip(sends, sends[1:]) if b[0] - a[0] < 0.05]
    burst_ms = sorted(gaps)[len(gaps) // 2] if gaps else 0.0
    full = sum(1 for size in sizes if size == batch_size)
    return {
        "events": n_events,
        "burst_ms": burst_ms,
        "stored": stats["events_stored"],
        "requests": requests,
        "elapsed": elapsed,
        "span": span,
        "best": best,
        "achieved_rate": (requests - 1) / span if span > 0 else float("inf"),
        "best_rate": (requests - 1) / best if best > 0 else float("inf"),
        # None when every request fits in the first burst: the limits then ask for no wait at all.
        "share_of_best": (best / span if span > 0 else 1.0) if best > 0 else None,
        "full_batches": full,
        "full_share": full / requests if requests else 1.0,
        "only_last_short": all(size == batch_size for size in sizes[:-1]),
        "rate_limited_client": result.rate_limited,
        "rate_limited_server": stats["rate_limited"],
        "sent": result.counts["sent"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000, help="events to upload (default 30000: 2000 requests)")
    parser.add_argument("--rate-limit", dest="limits", action="append", metavar="N/PERIOD",
                        help=f"the client's limits, repeatable (default {' and '.join(DEFAULT_LIMITS)})")
    parser.add_argument("--server-rate-limit", dest="server_limits", action="append", metavar="N/PERIOD",
                        help="the sandbox's limits, repeatable (default: the same as the client's)")
    parser.add_argument("--batch-size", type=int, default=15)
    parser.add_argument("--latency", type=float, default=0.0, help="sandbox delay before every answer (seconds)")
    parser.add_argument("--dir", type=Path, help="where to put the checkpoint (default: a temporary directory)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the sandbox on a thread of this process instead of its own process")
    args = parser.parse_args(argv)
    client_limits = [parse_rate_limit(text) for text in (args.limits or DEFAULT_LIMITS)]
    server_limits = [parse_rate_limit(text) for text in (args.server_limits or args.limits or DEFAULT_LIMITS)]

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        r = run(args.events, client_limits, server_limits, args.batch_size, Path(tmp), args.latency, args.in_process)

    print(f"limits: client {', '.join(map(str, client_limits))}; server {', '.join(map(str, server_limits))}")
    print(f"events: {r['events']} ({r['sent']} sent, {r['stored']} stored by the server)")
    print(f"requests: {r['requests']} ({1000 * r['burst_ms']:.1f} ms each when the limits allow a burst); elapsed {r['elapsed']:.2f} s (first to last request {r['span']:.2f} s)")
    if r["share_of_best"] is None:
        print(f"request rate: {r['achieved_rate']:.2f}/s; every request fits in the first burst, the limits ask for "
              "no wait (no best schedule to compare with: use more events)")
    else:
        print(f"request rate: {r['achieved_rate']:.2f}/s achieved vs {r['best_rate']:.2f}/s best schedule "
              f"({r['best']:.2f} s): {100 * r['share_of_best']:.1f}% of the best schedule")
    print(f"full batches: {r['full_batches']}/{r['requests']} ({100 * r['full_share']:.1f}%), "
          f"every batch full except the last: {'yes' if r['only_last_short'] else 'NO'}")
    print(f"429s met: {r['rate_limited_client']} (server counted {r['rate_limited_server']})")
    ok = ((r["share_of_best"] is None or r["share_of_best"] >= 0.95) and r["only_last_short"] and r["rate_limited_server"] == 0
          and r["stored"] == r["events"])
    agree = client_limits == server_limits
    print("targets:", "met" if ok else "MISSED" + ("" if agree else " (client and server limits differ)"))
    return 0 if ok or not agree else 1


if __name__ == "__main__":
    sys.exit(main())

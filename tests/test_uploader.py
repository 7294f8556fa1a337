"""backfill.uploader: every response path, the limiter on a fake clock, and resuming after an interruption.

The server is a fake behind httpx.MockTransport, on the same fake clock as the uploader and its
throttle: nothing sleeps, nothing leaves the process.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.client import EventsClient, Outcome
from backfill.errors import AuthError, UploadStopped
from backfill.journal import Journal, PlannedEvent
from backfill.throttle import DEFAULT_LIMITS, RateLimit, Throttle
from backfill.uploader import RESEND, SKIP, UploadOptions, Uploader, match_created

BASE = "http://127.0.0.1:9"
KEY = "test-KEY-5f3c9a7e1d"
EPOCH = 1_761_760_000.0


class FakeClock:
    def __init__(self, t: float = EPOCH) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += seconds


def number(event: dict[str, Any]) -> int:
    return int(event["attributes"]["build_id"])


def event_id(i: int) -> str:
    return f"ev-{i:03d}"


def planned(numbers: range | list[int], ghosts: frozenset[int] = frozenset()) -> list[PlannedEvent]:
    out = []
    for i in numbers:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_546_300_800 + 3600 * i))
        body = json.dumps(
            {
                "type": "event-deploy",
                "timestamp": stamp,
                "entityId": f"ghost-{i}" if i in ghosts else f"app-{i % 3}",
                "attributes": {"env": "production", "status": "success", "build_id": str(i)},
            },
            separators=(",", ":"),
        )
        out.append(PlannedEvent(event_id(i), i, body, "deploys.csv", i + 2, stamp))
    return out


Action = Callable[["FakeApi", list[dict]], "httpx.Response | None"]


class FakeApi:
    """POST /events on the fake clock.

    Every request is noted (time, events, key). `script` gives the answer to the n-th request (None:
    behave normally); `bad` events make any batch holding them a 400 (`bad_style`: "paths", "no_paths" or
    "message"); ghost entityIds are per-event failures in a 201; batches above `max_batch` get 413;
    `limits` are enforced with 429s at arrival time; `latency(n)` gives (before arrival, after) seconds.
    """

    def __init__(
        self,
        clock: FakeClock,
        *,
        script: list[Action | None] | None = None,
        bad: set[int] = frozenset(),
        bad_style: str = "paths",
        max_batch: int = 15,
        limits: tuple[RateLimit, ...] = (),
        latency: Callable[[int], tuple[float, float]] | None = None,
        shuffle_failures: bool = False,
    ) -> None:
        self.clock = clock
        self.script = list(script or [])
        self.bad = set(bad)
        self.bad_style = bad_style
        self.max_batch = max_batch
        self.throttle = Throttle(limits, clock=clock) if limits else None
        self.latency = latency
        self.shuffle_failures = shuffle_failures
        self.requests: list[tuple[float, list[dict]]] = []
        self.keys: list[str | None] = []
        self.stored: list[dict] = []
        self.ids: dict[int, list[str]] = {}
        self.arrivals: list[float] = []  # of requests that passed the rate limits
        self.rate_limited = 0
        self.hooks: dict[str, Callable[[], None]] = {}

    @property
    def sizes(self) -> list[int]:
        return [len(events) for _, events in self.requests]

    def times_sent(self) -> Counter[int]:
        return Counter(number(e) for _, events in self.requests for e in events)

    def times_stored(self) -> Counter[int]:
        return Counter(number(e) for e in self.stored)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        events = json.loads(request.content)["events"]
        before, after = self.latency(len(self.requests)) if self.latency else (0.0, 0.0)
        self.clock.t += before
        self.requests.append((self.clock(), events))
        self.keys.append(request.headers.get("x-api-key"))
        try:
            if "before" in self.hooks:
                self.hooks["before"]()
            action = self.script.pop(0) if self.script else None
            answer = action(self, events) if action is not None else None
            if answer is None:
                answer = self.handle(events)
            if "after" in self.hooks:
                self.hooks["after"]()
            return answer
        finally:
            self.clock.t += after

    def handle(self, events: list[dict]) -> httpx.Response:
        if self.throttle is not None:
            allowed, wait = self.throttle.try_acquire()
            if not allowed:
                self.rate_limited += 1
                return httpx.Response(429, json={"message": "Too Many Requests"}, headers={"Retry-After": f"{wait:.3f}"})
            self.arrivals.append(self.clock())
        if len(events) > self.max_batch:
            return httpx.Response(413, json={"message": f"Payload Too Large: {len(events)} events"})
        bad = [i for i, e in enumerate(events) if number(e) in self.bad]
        if bad:
            if self.bad_style == "paths":
                errors = [{"type": "field", "msg": "Invalid value", "path": f"events[{i}].timestamp", "location": "body"} for i in bad]
                return httpx.Response(400, json={"errors": errors})
            if self.bad_style == "no_paths":
                return httpx.Response(400, json={"errors": [{"type": "field", "msg": "Invalid value", "location": "body"}]})
            return httpx.Response(400, json={"message": "Validation failed"})
        return self.store(events)

    def store(self, events: list[dict]) -> httpx.Response:
        success, failures = [], []
        for event in events:
            if event["entityId"].startswith("ghost-"):
                failures.append({"event": event, "reason": "Entity not found"})
                continue
            server_id = f"srv-{len(self.stored)}"
            self.stored.append(event)
            self.ids.setdefault(number(event), []).append(server_id)
            success.append({"id": server_id, **event, "blueprintId": "bp", "accountId": "acc", "createdAt": "now"})
        if self.shuffle_failures:
            failures.reverse()
        return httpx.Response(201, json={"success": success, "failures": failures})


def answer(status: int, payload: Any = None, headers: dict[str, str] | None = None) -> Action:
    return lambda api, events: httpx.Response(status, json=payload if payload is not None else {"message": str(status)}, headers=headers)


def fail(error: BaseException) -> Action:
    def action(api: FakeApi, events: list[dict]) -> None:
        raise error

    return action


def store_then_fail(error: BaseException) -> Action:
    """The server stores the events, then the answer is lost."""

    def action(api: FakeApi, events: list[dict]) -> None:
        api.store(events)
        raise error

    return action


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock()
        self.http: list[httpx.Client] = []
        self.journal: Journal | None = None
        self.path = tmp_path / "import.checkpoint"

    def create(self, n: int | range | list[int], ghosts: frozenset[int] = frozenset()) -> Journal:
        numbers = range(n) if isinstance(n, int) else n
        self.journal = Journal.create(self.path, target="custom", base_url=BASE, fingerprints={}, options={})
        self.journal.add_events(planned(numbers, ghosts))
        self.journal.set_invalid_count(0)
        return self.journal

    def reopen(self) -> Journal:
        assert self.journal is not None
        self.journal.close()
        self.journal = Journal.open(self.path)
        return self.journal

    def uploader(
        self,
        api: FakeApi,
        *,
        limits: tuple[RateLimit, ...] = DEFAULT_LIMITS,
        jitter: Callable[[], float] | float = 0.5,
        key: str = KEY,
        **options: Any,
    ) -> Uploader:
        assert self.journal is not None
        http = httpx.Client(transport=httpx.MockTransport(api))
        self.http.append(http)
        client = EventsClient(BASE, key, client=http)
        longest = max(limit.period for limit in limits)
        history = self.journal.request_times(since=self.clock() - longest)
        throttle = Throttle(limits, clock=self.clock, sleep=self.clock.sleep, history=history)
        draw = jitter if callable(jitter) else (lambda: jitter)
        return Uploader(self.journal, client, throttle, UploadOptions(**options),
                        clock=self.clock, sleep=self.clock.sleep, jitter=draw)

    def close(self) -> None:
        for http in self.http:
            http.close()
        if self.journal is not None:
            self.journal.close()

    def states(self) -> dict[int, str]:
        assert self.journal is not None
        sent = {e["event_id"] for e in self.journal.sent_events()}
        rejected = {e["event_id"] for e in self.journal.rejected_events()}
        out = {}
        for i in range(1000):
            eid = event_id(i)
            if eid in sent:
                out[i] = "sent"
            elif eid in rejected:
                out[i] = "rejected"
        return out


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def bisection_requests(batch: list[int], bad: set[int]) -> int:
    """Requests to isolate the bad events of a batch by halving it (the spec's splitting)."""
    if len(batch) == 1 or not bad & set(batch):
        return 1
    half = len(batch) // 2
    return 1 + bisection_requests(batch[:half], bad) + bisection_requests(batch[half:], bad)


# --------------------------------------------------------------------- 201


def test_201_records_each_events_server_id(h: Harness) -> None:
    journal = h.create(40)
    api = FakeApi(h.clock)
    result = h.uploader(api).run()
    assert api.sizes == [15, 15, 10]
    assert api.times_sent() == Counter(range(40))
    sent = {e["event_id"]: e["server_id"] for e in journal.sent_events()}
    assert sent == {event_id(i): api.ids[i][0] for i in range(40)}
    assert len(set(sent.values())) == 40
    counts = journal.counts()
    assert (counts["sent"], counts["pending"], counts["uncertain"], counts["rejected"]) == (40, 0, 0, 0)
    assert result.requests == 3 and result.events == {"sent": 40, "rejected": 0, "uncertain": 0}
    assert result.rate_limited == 0 and h.clock.sleeps == []


@pytest.mark.parametrize("shuffle", [False, True])
def test_partial_201_rejects_the_failures_by_content_and_does_not_retry_them(h: Harness, shuffle: bool) -> None:
    ghosts = frozenset({0, 4, 5, 14, 22})
    journal = h.create(30, ghosts)
    api = FakeApi(h.clock, shuffle_failures=shuffle)
    result = h.uploader(api).run()
    assert api.sizes == [15, 15]  # nothing retried
    rejected = {e["event_id"]: e["reason"] for e in journal.rejected_events()}
    assert rejected == {event_id(i): "Entity not found" for i in ghosts}
    sent = {e["event_id"]: e["server_id"] for e in journal.sent_events()}
    assert sent == {event_id(i): api.ids[i][0] for i in range(30) if i not in ghosts}
    assert result.events == {"sent": 25, "rejected": 5, "uncertain": 0}


def test_a_201_that_does_not_account_for_an_event_leaves_it_uncertain(h: Harness) -> None:
    journal = h.create(3)

    def forget_the_last(api: FakeApi, events: list[dict]) -> httpx.Response:
        api.store(events[:-1])
        ids = api.ids
        success = [{"id": ids[number(e)][0], **e} for e in events[:-1]]
        return httpx.Response(201, json={"success": success, "failures": []})

    api = FakeApi(h.clock, script=[forget_the_last])
    h.uploader(api).run()
    assert api.sizes == [3, 1]
    assert api.times_stored() == Counter(range(3))
    assert journal.counts()["possibly_duplicated"] == 1
    assert [(e["event_id"], e["status"]) for e in journal.uncertain_events()] == [(event_id(2), "duplicated")]


# --------------------------------------------------------------------- 400


def test_400_with_paths_rejects_the_named_events_and_resends_the_rest(h: Harness) -> None:
    journal = h.create(15)
    api = FakeApi(h.clock, bad={3, 7})
    result = h.uploader(api).run()
    assert api.sizes == [15, 13]
    rejected = {e["event_id"]: e["reason"] for e in journal.rejected_events()}
    assert rejected == {event_id(3): "400 events[3].timestamp: Invalid value",
                        event_id(7): "400 events[7].timestamp: Invalid value"}
    assert api.times_stored() == Counter(i for i in range(15) if i not in (3, 7))
    assert result.events == {"sent": 13, "rejected": 2, "uncertain": 0}
    assert h.clock.sleeps == []


@pytest.mark.parametrize("style", ["no_paths", "message"])
@pytest.mark.parametrize("bad", [{0}, {7}, {14}, {20}, {2, 3}, {0, 14, 29}])
def test_400_without_usable_paths_is_bisected_to_the_bad_events(h: Harness, style: str, bad: set[int]) -> None:
    journal = h.create(30)
    api = FakeApi(h.clock, bad=bad, bad_style=style)
    h.uploader(api).run()
    assert {e["event_id"] for e in journal.rejected_events()} == {event_id(i) for i in bad}
    reason = "400 Invalid value" if style == "no_paths" else "400 Validation failed"
    assert {e["reason"] for e in journal.rejected_events()} == {reason}
    assert api.times_stored() == Counter(i for i in range(30) if i not in bad)  # each good one exactly once
    expected = bisection_requests(list(range(15)), bad) + bisection_requests(list(range(15, 30)), bad)
    assert len(api.requests) == expected
    assert len(api.requests) <= 2 + 2 * len(bad) * 4  # log2(15) < 4 halvings per bad event
    counts = journal.counts()
    assert (counts["sent"], counts["rejected"], counts["pending"], counts["uncertain"]) == (30 - len(bad), len(bad), 0, 0)


def test_a_400_for_everything_rejects_everything_without_looping(h: Harness) -> None:
    journal = h.create(5)
    api = FakeApi(h.clock, bad=set(range(5)), bad_style="message")
    h.uploader(api).run()
    assert journal.counts()["rejected"] == 5
    assert len(api.requests) == bisection_requests(list(range(5)), set(range(5))) == 9


# --------------------------------------------------------------------- 413


def test_413_halves_the_batch_size_and_retries(h: Harness) -> None:
    journal = h.create(15)
    api = FakeApi(h.clock, max_batch=6)
    uploader = h.uploader(api)
    result = uploader.run()
    assert api.sizes == [15, 7, 3, 3, 3, 3, 3]
    assert uploader.batch_size == result.batch_size == 3
    assert api.times_stored() == Counter(range(15))
    assert journal.counts()["sent"] == 15


def test_413_for_a_single_event_stops(h: Harness) -> None:
    journal = h.create(2)
    api = FakeApi(h.clock, max_batch=0)
    with pytest.raises(UploadStopped, match="413"):
        h.uploader(api).run()
    assert api.sizes == [2, 1]
    assert journal.counts()["pending"] == 2


# --------------------------------------------------------------------- 429


def test_429_with_retry_after_seconds_waits_and_slows_the_limiter(h: Harness) -> None:
    journal = h.create(20)
    api = FakeApi(h.clock, script=[answer(429, {"message": "Too Many Requests"}, {"Retry-After": "7"})])
    uploader = h.uploader(api)
    result = uploader.run()
    times = [t for t, _ in api.requests]
    assert api.sizes == [15, 15, 5]
    assert times[1] - times[0] == pytest.approx(7.0)  # jitter 0.5 * 2 s < 7 s: Retry-After wins
    assert result.rate_limited == 1
    assert uploader.throttle.limits == (RateLimit(90, 60.0), RateLimit(1350, 3600.0))
    assert api.times_stored() == Counter(range(20))
    assert journal.counts()["possibly_duplicated"] == 0  # a 429 stores nothing: nothing uncertain


def test_429_with_retry_after_as_an_http_date(h: Harness) -> None:
    h.create(3)
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    api = FakeApi(h.clock, script=[answer(429, None, {"Retry-After": date})])
    h.uploader(api).run()
    times = [t for t, _ in api.requests]
    assert 28.0 <= times[1] - times[0] <= 30.5


def test_429_without_retry_after_backs_off_exponentially_with_full_jitter(h: Harness) -> None:
    journal = h.create(3)
    draws = iter([0.25, 1.0, 0.0, 0.5])
    api = FakeApi(h.clock, script=[answer(429)] * 4)
    uploader = h.uploader(api, jitter=lambda: next(draws), backoff_base=1.0)
    result = uploader.run()
    times = [t for t, _ in api.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # attempt n waits jitter * base * 2**n: 0.25*2, 1.0*4, 0.0*8, 0.5*16
    assert gaps == pytest.approx([0.5, 4.0, 0.0, 8.0])
    assert result.rate_limited == 4
    assert [limit.count for limit in uploader.throttle.limits] == [64, 983]  # floored at each step: 90, 81, 72, 64
    assert journal.counts()["sent"] == 3


def test_429_backoff_is_capped(h: Harness) -> None:
    h.create(1)
    api = FakeApi(h.clock, script=[answer(429)] * 6)
    h.uploader(api, jitter=1.0, backoff_base=1.0, backoff_cap=10.0).run()
    times = [t for t, _ in api.requests]
    assert [b - a for a, b in zip(times, times[1:])] == pytest.approx([2, 4, 8, 10, 10, 10])


def test_429s_from_a_server_with_smaller_limits_never_lose_events(h: Harness) -> None:
    journal = h.create(150)
    api = FakeApi(h.clock, limits=(RateLimit(3, 10.0),))
    result = h.uploader(api, limits=(RateLimit(5, 10.0),)).run()
    assert result.rate_limited > 0
    assert api.times_stored() == Counter(range(150))
    assert journal.counts()["sent"] == 150
    assert_windows_respected(api.arrivals, [RateLimit(3, 10.0)])


# --------------------------------------------------------------------- 5xx and network errors


def test_5xx_then_success_resends_and_reports_possibly_duplicated(h: Harness) -> None:
    journal = h.create(20)
    api = FakeApi(h.clock, script=[answer(500), answer(503)])
    result = h.uploader(api, jitter=0.5, backoff_base=1.0).run()
    assert api.sizes == [15, 15, 15, 5]
    assert h.clock.sleeps == pytest.approx([1.0, 2.0])  # 0.5 * 2**1, 0.5 * 2**2
    assert result.events["uncertain"] == 30
    counts = journal.counts()
    assert (counts["sent"], counts["uncertain"], counts["possibly_duplicated"]) == (20, 0, 15)
    statuses = {e["event_id"]: e["status"] for e in journal.uncertain_events()}
    assert statuses == {event_id(i): "duplicated" for i in range(15)}


def test_retries_exhausted_stop_with_the_checkpoint_intact(h: Harness) -> None:
    journal = h.create(40)
    api = FakeApi(h.clock, script=[None] + [answer(503, {"message": "Service Unavailable"})] * 3)
    with pytest.raises(UploadStopped) as info:
        h.uploader(api, max_retries=2).run()
    assert "3 failed attempts" in str(info.value) and "503" in str(info.value)
    assert api.sizes == [15, 15, 15, 15]
    counts = journal.counts()
    assert (counts["sent"], counts["uncertain"], counts["pending"], counts["in_flight"]) == (15, 15, 10, 0)
    assert counts["planned"] == counts["sent"] + counts["uncertain"] + counts["pending"]

    journal = h.reopen()
    api2 = FakeApi(h.clock)
    h.uploader(api2).run()
    assert api2.times_sent() == Counter(range(15, 40))  # nothing acknowledged is sent again
    assert journal.counts()["sent"] == 40
    assert journal.counts()["possibly_duplicated"] == 15


def test_network_errors_that_never_reached_the_server_stop_with_events_pending(h: Harness) -> None:
    journal = h.create(20)
    api = FakeApi(h.clock, script=[fail(httpx.ConnectError("refused"))] * 10)
    with pytest.raises(UploadStopped, match="cannot connect"):
        h.uploader(api, max_retries=3).run()
    assert len(api.requests) == 4
    counts = journal.counts()
    assert (counts["pending"], counts["uncertain"], counts["sent"]) == (20, 0, 0)


def test_the_failure_count_restarts_after_a_success(h: Harness) -> None:
    journal = h.create(45)
    api = FakeApi(h.clock, script=[answer(502), answer(502), None, answer(502), answer(502), None])
    h.uploader(api, max_retries=2).run()
    assert journal.counts()["sent"] == 45


def test_401_stops_at_once_without_retrying(h: Harness) -> None:
    journal = h.create(30)
    api = FakeApi(h.clock, script=[answer(401, {"message": "Unauthorized: invalid API key"})])
    with pytest.raises(AuthError) as info:
        h.uploader(api).run()
    assert len(api.requests) == 1
    assert h.clock.sleeps == []
    assert "key" in str(info.value) and "401" in str(info.value)
    assert KEY not in str(info.value)
    counts = journal.counts()
    assert (counts["pending"], counts["uncertain"]) == (30, 0)


UNCERTAIN_ERRORS = [
    httpx.ReadTimeout("timed out"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.ReadError("Connection reset by peer"),
    httpx.WriteTimeout("timed out"),
]
NOT_SENT_ERRORS = [httpx.ConnectTimeout("timed out"), httpx.ConnectError("Connection refused")]


@pytest.mark.parametrize(
    ("error", "uncertain", "stored"),
    [(e, True, False) for e in UNCERTAIN_ERRORS]
    + [(e, True, True) for e in UNCERTAIN_ERRORS]
    + [(e, False, False) for e in NOT_SENT_ERRORS],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_timeouts_and_connection_errors(h: Harness, error: Exception, uncertain: bool, stored: bool) -> None:
    journal = h.create(20)
    api = FakeApi(h.clock, script=[(store_then_fail if stored else fail)(error)])
    seen: list[dict[str, int]] = []
    api.hooks["before"] = lambda: seen.append(journal.counts())
    result = h.uploader(api).run()
    assert api.sizes == [15, 15, 5]
    # At the second request, the first batch was back to uncertain (maybe stored) or pending (never sent).
    assert seen[1]["possibly_duplicated"] == 0
    assert result.events["uncertain"] == (15 if uncertain else 0)
    counts = journal.counts()
    assert counts["sent"] == 20
    assert counts["possibly_duplicated"] == (15 if uncertain else 0)
    duplicated = {number(e) for e in api.stored if api.times_stored()[number(e)] > 1}
    assert duplicated <= {int(e["event_id"][3:]) for e in journal.uncertain_events() if e["status"] == "duplicated"}
    assert h.clock.sleeps == [1.0]  # one backoff: 0.5 * 2**1


def test_on_uncertain_skip_does_not_resend_and_reports_possibly_missing(h: Harness) -> None:
    journal = h.create(30)
    api = FakeApi(h.clock, script=[store_then_fail(httpx.ReadTimeout("timed out"))])
    result = h.uploader(api, on_uncertain=SKIP).run()
    assert api.sizes == [15, 15]
    assert api.times_sent() == Counter(range(30))  # the uncertain ones went out once only
    counts = result.counts
    assert (counts["sent"], counts["uncertain"], counts["possibly_missing"], counts["possibly_duplicated"]) == (15, 15, 15, 0)
    assert {e["status"] for e in journal.uncertain_events()} == {"missing"}

    # A later run, even with the default, never sends them.
    journal = h.reopen()
    api2 = FakeApi(h.clock)
    h.uploader(api2, on_uncertain=RESEND).run()
    assert api2.requests == []


def test_on_uncertain_skip_applies_to_events_left_in_flight_by_a_crash(h: Harness) -> None:
    journal = h.create(20)
    ids = [event_id(i) for i in range(15)]
    journal.begin_request(ids, h.clock())  # the process died with this request out
    journal = h.reopen()
    assert journal.recovered_in_flight == 15
    api = FakeApi(h.clock)
    h.uploader(api, on_uncertain=SKIP).run()
    assert api.times_sent() == Counter(range(15, 20))
    assert journal.counts()["possibly_missing"] == 15


# --------------------------------------------------------------------- the API key


def test_the_key_is_in_the_header_and_nowhere_in_the_checkpoint_messages_or_logs(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h.create(60, ghosts=frozenset({3}))
    api = FakeApi(
        h.clock,
        bad={20},
        script=[answer(429, None, {"Retry-After": "1"}), None, answer(500), fail(httpx.ReadTimeout("t")), None]
        + [answer(503)] * 9,
    )
    seen_files: set[str] = set()

    def grep_checkpoint_files() -> None:  # while the journal is open: the WAL holds the latest writes
        for path in h.tmp_path.iterdir():
            seen_files.add(path.name)
            assert KEY.encode() not in path.read_bytes(), path

    api.hooks["after"] = grep_checkpoint_files
    with pytest.raises(UploadStopped) as stopped:
        h.uploader(api, max_retries=2).run()
    assert f"{h.path.name}-wal" in seen_files
    api2 = FakeApi(h.clock, script=[answer(401, {"message": "Unauthorized"})])
    with pytest.raises(AuthError) as refused:
        h.uploader(api2).run()
    assert api.keys and set(api.keys + api2.keys) == {KEY}
    assert KEY not in str(stopped.value) and KEY not in str(refused.value)
    assert KEY not in caplog.text
    assert h.journal is not None
    h.journal.close()
    h.journal = None
    files = [p for p in h.tmp_path.iterdir() if p.name.startswith(h.path.name)]
    assert h.path in files
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------- the limiter with the uploader


def assert_windows_respected(times: list[float], limits: list[RateLimit] | tuple[RateLimit, ...]) -> None:
    times = sorted(times)
    for limit in limits:
        for j in range(limit.count, len(times)):
            assert times[j] - times[j - limit.count] >= limit.period - 1e-9, (limit, j)


def test_a_small_import_does_not_wait_at_all(h: Harness) -> None:
    h.create(45)
    api = FakeApi(h.clock)
    start = h.clock()
    h.uploader(api).run()
    assert len(api.requests) == 3
    assert h.clock.sleeps == []
    assert h.clock() == start


limit_sets = st.lists(
    st.builds(RateLimit, st.integers(1, 6), st.sampled_from([0.5, 1.0, 3.0, 10.0, 60.0])),
    min_size=1, max_size=3,
)


@settings(max_examples=25, deadline=None)
@given(limits=limit_sets, n=st.integers(1, 120), batch=st.integers(1, 15),
       latency=st.lists(st.tuples(st.floats(0, 0.3), st.floats(0, 0.3)), min_size=1, max_size=8))
def test_the_uploader_never_overruns_a_window_and_uses_the_budget_greedily(limits, n, batch, latency) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(Path(tmp))
        try:
            harness.create(n)
            # The server counts a request when it arrives, some time after the client sent it: the
            # client's windows must hold at the server whatever the latencies (no 429 when both agree).
            api = FakeApi(harness.clock, limits=tuple(limits), latency=lambda k: latency[k % len(latency)])
            start = harness.clock()
            result = harness.uploader(api, limits=tuple(limits), batch_size=batch).run()
            assert api.rate_limited == 0 and result.rate_limited == 0
            assert_windows_respected(api.arrivals, limits)
            assert api.times_stored() == Counter(range(n))
            if not any(latency_pair != (0.0, 0.0) for latency_pair in latency):
                # Instant requests: every request goes at the earliest moment the windows allow.
                best = Throttle(limits, clock=lambda: start).schedule_seconds(len(api.requests), now=start)
                assert api.requests[-1][0] - start == pytest.approx(best, abs=1e-6)
        finally:
            harness.close()


def test_a_slow_first_request_does_not_make_the_next_window_overrun_at_the_server(h: Harness) -> None:
    # Requests 0 and 3 spend 2 s before reaching the server; 3/10s at both ends.
    h.create(6)
    limits = (RateLimit(3, 10.0),)
    api = FakeApi(h.clock, limits=limits, latency=lambda k: (2.0, 0.0) if k == 0 else (0.0, 0.0))
    result = h.uploader(api, limits=limits, batch_size=1).run()
    assert result.rate_limited == 0 and api.rate_limited == 0
    assert_windows_respected(api.arrivals, limits)


def test_greedy_then_paced_by_every_window(h: Harness) -> None:
    h.create(15 * 12)
    limits = (RateLimit(3, 1.0), RateLimit(5, 10.0))
    api = FakeApi(h.clock, limits=limits)
    start = h.clock()
    h.uploader(api, limits=limits).run()
    offsets = [round(t - start, 6) for t, _ in api.requests]
    assert offsets == [0, 0, 0, 1, 1, 10, 10, 10, 11, 11, 20, 20]


def test_request_times_in_the_checkpoint_hold_the_window_across_a_restart(h: Harness) -> None:
    limits = (RateLimit(3, 10.0),)
    journal = h.create(45)
    api = FakeApi(h.clock, limits=limits)
    h.uploader(api, limits=limits).run()
    first_run = [t for t, _ in api.requests]
    assert first_run == [EPOCH] * 3

    journal.add_events(planned(range(45, 90)))  # more to send, e.g. after --replan
    journal = h.reopen()
    h.clock.t += 1.0
    api2 = FakeApi(h.clock, limits=limits)
    api2.throttle = api.throttle  # the same server, which remembers the first run
    h.uploader(api2, limits=limits).run()
    second_run = [t for t, _ in api2.requests]
    assert second_run == [EPOCH + 10] * 3
    assert api2.rate_limited == 0
    assert_windows_respected(first_run + second_run, limits)


def test_waiting_names_the_limit_and_the_time(h: Harness) -> None:
    h.create(15)
    notes: list[tuple[float, str]] = []

    class Recorder:
        def advance(self, sent: int, rejected: int, uncertain: int) -> None:
            pass

        def waiting(self, seconds: float, reason: str) -> None:
            notes.append((seconds, reason))

        def note(self, text: str) -> None:
            pass

    hour_ago = [h.clock() - 3500 + i for i in range(1500)]  # the hour is full until 100 s from now
    assert h.journal is not None
    uploader = h.uploader(FakeApi(h.clock))
    uploader.throttle = Throttle(DEFAULT_LIMITS, clock=h.clock, sleep=h.clock.sleep, history=hour_ago)
    uploader.progress = Recorder()
    uploader.run()
    seconds, reason = notes[0]
    assert seconds == pytest.approx(100.0)
    until = time.strftime("%H:%M", time.localtime(EPOCH + 100))
    assert "hourly limit" in reason and "1500/h" in reason and until in reason


# --------------------------------------------------------------------- interrupted at any step, resumed


class Interrupted(KeyboardInterrupt):
    pass


class Tripwire:
    """Counts steps of an upload and interrupts the k-th (0: never)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.steps: list[str] = []
        self.fired: str | None = None

    def step(self, name: str) -> None:
        self.steps.append(name)
        if len(self.steps) == self.k:
            self.fired = name
            raise Interrupted(name)


def wire(journal: Journal, api: FakeApi, uploader: Uploader, trip: Tripwire) -> None:
    begin, finish = journal.begin_request, journal.finish_request

    def begin_request(*args: Any, **kwargs: Any) -> int:
        trip.step("before begin_request")
        request_no = begin(*args, **kwargs)
        trip.step("after begin_request")
        return request_no

    def finish_request(*args: Any, **kwargs: Any) -> None:
        trip.step("before finish_request")
        finish(*args, **kwargs)
        trip.step("after finish_request")

    sleep = uploader.sleep

    def interruptible_sleep(seconds: float) -> None:
        trip.step("sleep")
        sleep(seconds)

    journal.begin_request = begin_request  # type: ignore[method-assign]
    journal.finish_request = finish_request  # type: ignore[method-assign]
    uploader.sleep = interruptible_sleep
    api.hooks["before"] = lambda: trip.step("server, before storing")
    api.hooks["after"] = lambda: trip.step("server, after storing")


N_EVENTS = 50
BAD = {7}
GHOSTS = frozenset({33})


def faults() -> list[Action | None]:
    # Request 2 fails with a 500, request 4 is stored but its answer lost, request 5 hits a 429.
    return [None, answer(500), None, store_then_fail(httpx.ReadTimeout("timed out")), answer(429)]


def run_interrupted(tmp_path: Path, k: int) -> tuple[Tripwire, FakeApi, FakeApi, Harness]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    h = Harness(tmp_path)
    try:
        journal = h.create(N_EVENTS, GHOSTS)
        api = FakeApi(h.clock, bad=BAD, script=faults())
        uploader = h.uploader(api)
        trip = Tripwire(k)
        wire(journal, api, uploader, trip)
        try:
            uploader.run()
        except Interrupted:
            pass
        journal = h.reopen()
        acknowledged = {e["event_id"] for e in journal.sent_events()} | {e["event_id"] for e in journal.rejected_events()}

        api2 = FakeApi(h.clock, bad=BAD)
        api2.stored = api.stored  # the same server
        api2.ids = api.ids
        h.uploader(api2).run()

        # Nothing acknowledged (201 recorded, or rejected) is ever sent again.
        assert not {event_id(number(e)) for _, events in api2.requests for e in events} & acknowledged
        # Every event the server accepts reached it; every other was rejected with its reason.
        stored = api2.times_stored()
        good = [i for i in range(N_EVENTS) if i not in BAD and i not in GHOSTS]
        assert all(stored[i] >= 1 for i in good), k
        assert not set(stored) - set(good)
        counts = journal.counts()
        assert (counts["sent"], counts["rejected"], counts["pending"], counts["uncertain"], counts["in_flight"]) == (
            len(good), len(BAD) + len(GHOSTS), 0, 0, 0
        )
        # Anything the server got twice is one the checkpoint reports as possibly duplicated.
        twice = {event_id(i) for i, n in stored.items() if n > 1}
        reported = {e["event_id"] for e in journal.uncertain_events() if e["status"] == "duplicated"}
        assert twice <= reported, (k, trip.fired)
        assert counts["possibly_duplicated"] == len(reported)
        server_ids = {e["event_id"]: e["server_id"] for e in journal.sent_events()}
        for i in good:
            assert server_ids[event_id(i)] in api2.ids[i]
        return trip, api, api2, h
    finally:
        h.close()


def test_an_uninterrupted_run_of_the_interruption_scenario(tmp_path: Path) -> None:
    trip, api, api2, _ = run_interrupted(tmp_path, 0)
    assert api2.requests == []
    assert "sleep" in trip.steps and "server, after storing" in trip.steps
    # The lost answer (request 4) is the only source of duplicates.
    assert sum(n - 1 for n in api.times_stored().values()) > 0


def test_interrupted_between_any_two_steps_then_resumed(tmp_path: Path) -> None:
    steps = len(run_interrupted(tmp_path / "clean", 0)[0].steps)
    assert steps > 30
    names = set()
    for k in range(1, steps + 1):
        trip, _, _, _ = run_interrupted(tmp_path / f"k{k}", k)
        names.add(trip.fired)
    assert names == {"before begin_request", "after begin_request", "server, before storing",
                     "server, after storing", "before finish_request", "after finish_request", "sleep"}


# --------------------------------------------------------------------- matching a 201 to the batch


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_match_created_pairs_failures_by_content_and_successes_in_order(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 15))
    ghosts = frozenset(data.draw(st.sets(st.integers(0, n - 1))))
    batch = planned(range(n), ghosts)
    docs = [json.loads(e.body) for e in batch]
    failures = [{"event": docs[i], "reason": f"bad {i}"} for i in sorted(ghosts)]
    data.draw(st.randoms(use_true_random=False)).shuffle(failures)
    success = [{"id": f"id-{i}", **docs[i]} for i in range(n) if i not in ghosts]
    sent, rejected, uncertain = match_created(batch, Outcome("created", 201, success=success, failures=failures))
    assert sent == {event_id(i): f"id-{i}" for i in range(n) if i not in ghosts}
    assert rejected == {event_id(i): f"bad {i}" for i in ghosts}
    assert uncertain == []


def test_match_created_with_an_unmatchable_failure_matches_successes_by_content() -> None:
    batch = planned(range(4))
    docs = [json.loads(e.body) for e in batch]
    success = [{"id": f"id-{i}", **docs[i]} for i in (3, 0, 1)]  # out of order, one missing
    failures = [{"event": {"type": "event-deploy", "entityId": "who knows"}, "reason": "Entity not found"}]
    sent, rejected, uncertain = match_created(batch, Outcome("created", 201, success=success, failures=failures))
    assert sent == {event_id(0): "id-0", event_id(1): "id-1", event_id(3): "id-3"}
    assert rejected == {}
    assert uncertain == [event_id(2)]


def test_random_faults_never_lose_or_silently_duplicate(tmp_path: Path) -> None:
    rng = random.Random(7)
    h = Harness(tmp_path)
    try:
        journal = h.create(200)
        choices: list[Action | None] = [None] * 6 + [answer(500), answer(429), fail(httpx.ConnectError("x")),
                                                     store_then_fail(httpx.ReadTimeout("x")), fail(httpx.ReadTimeout("x"))]
        api = FakeApi(h.clock, script=[rng.choice(choices) for _ in range(60)])
        h.uploader(api, max_retries=10).run()
        stored = api.times_stored()
        assert set(stored) == set(range(200))
        twice = {event_id(i) for i, n in stored.items() if n > 1}
        assert twice
        assert twice <= {e["event_id"] for e in journal.uncertain_events() if e["status"] == "duplicated"}
    finally:
        h.close()


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (RateLimit(1500, 3600.0), "the hourly limit (1500/h)"),
        (RateLimit(100, 60.0), "the per-minute limit (100/min)"),
        (RateLimit(20, 0.5), "the 20/0.5s limit"),
    ],
)
def test_limit_names_in_wait_messages(limit, text):
    from backfill.uploader import limit_name

    assert limit_name(limit) == text


def test_a_limiter_slowed_by_429s_returns_to_the_configured_limits_after_calm_minutes(h: Harness) -> None:
    from backfill.uploader import RECOVER_AFTER_S

    h.create(15 * 300)
    api = FakeApi(h.clock, script=[answer(429, None, {"Retry-After": "1"})])
    uploader = h.uploader(api, limits=(RateLimit(100, 60.0),))
    configured = uploader.throttle.limits
    seen: list[tuple[float, tuple[RateLimit, ...]]] = []
    api.hooks["before"] = lambda: seen.append((h.clock(), uploader.throttle.limits))
    uploader.run()
    assert len(api.sizes) == 300 + 1  # the 429, then every batch once
    slowed = [t for t, limits in seen if limits != configured]
    assert slowed and max(slowed) - min(slowed) <= RECOVER_AFTER_S + 1  # back within minutes
    assert uploader.throttle.limits == configured


# --------------------------------------------------------------------- outages waited out (no --max-retries)


def test_an_outage_is_waited_out_with_capped_backoff_until_the_server_answers(h: Harness) -> None:
    journal = h.create(30)
    down = [fail(httpx.ConnectError("refused"))] * 6 + [answer(503)] * 3  # 9 failures, then the server is back
    api = FakeApi(h.clock, script=[None, *down])
    notes: list[str] = []
    reasons: list[str] = []
    uploader = h.uploader(api, backoff_cap=60.0)
    uploader.progress.note = notes.append  # type: ignore[method-assign]
    uploader.progress.waiting = lambda seconds, reason: reasons.append(reason)  # type: ignore[method-assign]
    result = uploader.run()
    assert journal.counts()["sent"] == 30 and result.events["sent"] == 30
    waits = h.clock.sleeps
    assert waits[:9] == pytest.approx([1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0])  # 0.5 * min(60, 2**n)
    assert any("the server answers again" in n for n in notes)
    assert all(r.startswith("server unreachable since ") and ", next try " in r for r in reasons[:9])
    assert "cannot connect" in reasons[0] and "503" in reasons[8]


def test_an_outage_longer_than_give_up_after_is_a_clean_resumable_stop(h: Harness) -> None:
    journal = h.create(20)
    api = FakeApi(h.clock, script=[fail(httpx.ConnectError("refused"))] * 100)
    with pytest.raises(UploadStopped, match=r"no success for 10 min \(--give-up-after 10 min\).*cannot connect"):
        h.uploader(api, give_up_after=600.0).run()
    assert 5 < len(api.requests) < 20
    assert sum(h.clock.sleeps) == pytest.approx(600.0)  # the last wait ends exactly at the limit
    counts = journal.counts()
    assert (counts["pending"], counts["uncertain"]) == (20, 0)  # refused connections reached nobody


def test_answers_that_settle_nothing_still_stop_after_five_without_max_retries(h: Harness) -> None:
    h.create(5)
    api = FakeApi(h.clock, script=[lambda a, events: httpx.Response(201, json={})] * 50)
    with pytest.raises(UploadStopped, match="6 failed attempts in a row"):
        h.uploader(api).run()
    assert len(api.requests) == 6

"""Answers a well-behaved server never gives: the uploader never loops, never forgets, never waits for ever.

The server is the fake of test_uploader (httpx.MockTransport on a fake clock): nothing sleeps.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from backfill import client as api
from backfill.client import MAX_ANSWER_BYTES, classify
from backfill.errors import UploadStopped
from backfill.throttle import RateLimit, Throttle
from backfill.uploader import LONG_WAIT, SLOWDOWN_FLOOR, Uploader, comparable, match_created, normal_time
from test_uploader import FakeApi, Harness, answer, planned


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


class Notes:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def advance(self, sent: int, rejected: int, uncertain: int) -> None:
        pass

    def waiting(self, seconds: float, reason: str) -> None:
        pass

    def note(self, text: str) -> None:
        self.lines.append(text)


def always(action: Any, n: int = 200) -> list[Any]:
    return [action] * n


def raw(status: int, content: bytes, headers: dict[str, str] | None = None):
    return lambda api_, events: httpx.Response(status, content=content, headers=headers)


# --------------------------------------------------------------------- answers that settle nothing

UNSETTLING = {
    "empty object": raw(201, b"{}"),
    "empty lists": raw(201, b'{"success": [], "failures": []}'),
    "success 5": raw(201, b'{"success": 5}'),
    "success true": raw(201, b'{"success": true}'),
    "failures a string": raw(201, b'{"success": [], "failures": "none"}'),
    "nested 10000 deep": raw(201, b"[" * 10_000 + b"]" * 10_000),
    "nested object 10000 deep": raw(201, b'{"success": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001),
    "202 no body": raw(202, b""),
    "204": raw(204, b""),
    "200 html": raw(200, b"<html>ok</html>"),
    "one success for five": lambda a, events: httpx.Response(201, json={"success": [{"id": "x"}], "failures": []}),
}


@pytest.mark.parametrize("name", sorted(UNSETTLING))
def test_an_answer_that_accounts_for_no_event_is_a_failed_attempt(h: Harness, name: str) -> None:
    h.create(5)
    fake = FakeApi(h.clock, script=always(UNSETTLING[name]))
    uploader = h.uploader(fake, max_retries=3)
    with pytest.raises(UploadStopped, match="4 failed attempts in a row"):
        uploader.run()
    assert len(fake.requests) == 4  # the first attempt and 3 retries, then a clean stop
    counts = h.journal.counts()
    assert counts["pending"] == 0  # "probably stored": never pending, never sent again silently
    assert counts["uncertain"] == 5
    # Every event it sent again is reported as possibly duplicated on resume.
    h.reopen()
    resumed = h.uploader(FakeApi(h.clock))
    resumed.run()
    counts = h.journal.counts()
    assert counts["sent"] == 5
    assert counts["possibly_duplicated"] == 5


def test_a_201_that_echoes_failures_with_other_timestamp_spellings_names_them(h: Harness) -> None:
    h.create(4)

    def echo_all(fake: FakeApi, events: list[dict]) -> httpx.Response:
        failures = []
        for event in events:
            echoed = json.loads(json.dumps(event))
            echoed["timestamp"] = echoed["timestamp"].replace("Z", ".000Z")
            failures.append({"event": echoed, "reason": "Entity not found"})
        return httpx.Response(201, json={"success": [], "failures": failures})

    fake = FakeApi(h.clock, script=always(echo_all))
    h.uploader(fake).run()
    assert len(fake.requests) == 1
    assert h.journal.counts()["rejected"] == 4


@pytest.mark.parametrize(
    ("spelling", "same"),
    [
        ("2019-01-01T00:00:00Z", True),
        ("2019-01-01T00:00:00.000Z", True),
        ("2019-01-01T00:00:00.000000000Z", True),
        ("2019-01-01T00:00:00+00:00", True),
        ("2019-01-01T01:00:00+01:00", True),
        ("2018-12-31T19:00:00-0500", True),
        ("2019-01-01 00:00:00Z", True),
        ("2019-01-01T00:00:01Z", False),
        ("2019-01-01", False),
    ],
)
def test_timestamp_spellings(spelling: str, same: bool) -> None:
    assert (normal_time(spelling) == normal_time("2019-01-01T00:00:00Z")) is same


def test_failures_echoed_in_another_order_and_spelling_are_matched_by_content() -> None:
    batch = planned(range(3))
    docs = [json.loads(e.body) for e in batch]
    echoes = [dict(doc, timestamp=doc["timestamp"].replace("Z", "+00:00")) for doc in reversed(docs)]
    outcome = api.Outcome(api.CREATED, 201, failures=[{"event": e, "reason": "nope"} for e in echoes[:2]],
                          success=[{"id": "s"}])
    sent, rejected, uncertain = match_created(batch, outcome)
    assert set(rejected) == {batch[2].event_id, batch[1].event_id}
    assert sent == {batch[0].event_id: "s"} and uncertain == []
    assert comparable(echoes[0]) == comparable(docs[2])


# --------------------------------------------------------------------- bodies the client must not read whole


def test_answers_are_read_to_a_cap(h: Harness) -> None:
    huge = b'{"success": [' + b'{"id": "x"},' * (MAX_ANSWER_BYTES // 10) + b'{"id": "y"}]}'
    outcome = classify(httpx.Response(201, content=huge))
    assert outcome.kind == api.UNCERTAIN and "too large" in outcome.detail


# --------------------------------------------------------------------- waits


@pytest.mark.parametrize("value", ["1000000000", "9" * 300, "Fri, 31 Dec 9999 23:59:59 GMT", "1e999"])
def test_a_server_asking_for_an_endless_wait_is_a_failure_not_a_sleep(h: Harness, value: str) -> None:
    h.create(3)
    fake = FakeApi(h.clock, script=always(answer(429, None, {"Retry-After": value})))
    uploader = h.uploader(fake, max_retries=2)
    if value == "1e999":  # not a number of seconds: an ordinary 429 with backoff
        fake.script = [answer(429, None, {"Retry-After": value})] * 3
        uploader.run()
        assert h.journal.counts()["sent"] == 3
        return
    with pytest.raises(UploadStopped, match="asked to wait"):
        uploader.run()
    assert max(h.clock.sleeps, default=0) <= 3600
    assert h.journal.counts()["pending"] == 3  # a 429 stored nothing


def test_every_long_wait_is_said_in_a_line(h: Harness) -> None:
    h.create(3)
    fake = FakeApi(h.clock, script=[answer(429, None, {"Retry-After": "600"})])
    uploader = h.uploader(fake)
    uploader.progress = notes = Notes()
    uploader.run()
    assert any(line.startswith("Waiting 10 min") and "429" in line for line in notes.lines), notes.lines
    assert LONG_WAIT == 60.0


def test_a_429_storm_never_collapses_the_limiter(h: Harness) -> None:
    h.create(15 * 40)
    limits = (RateLimit(100, 60.0), RateLimit(1500, 3600.0))
    fake = FakeApi(h.clock, script=always(answer(429, None, {"Retry-After": "1"}), 60))
    uploader = h.uploader(fake, limits=limits)
    started = h.clock()
    uploader.run()
    assert h.journal.counts()["sent"] == 15 * 40
    assert h.clock() - started < 15 * 60  # minutes, not 40 hours
    floor = [max(1, int(limit.count * SLOWDOWN_FLOOR)) for limit in limits]
    assert all(lim.count >= f for lim, f in zip(uploader.throttle.limits, floor))


def test_a_wall_clock_stepped_back_does_not_stall_the_windows() -> None:
    mono = [1000.0]
    # Requests recorded "in the future" by a wall clock that has since been set back an hour.
    wall_now = 1_700_000_000.0
    history = [wall_now + 3600 - i for i in range(100)]
    throttle = Throttle.from_wall_times((RateLimit(100, 60.0),), history, wall_now=wall_now, clock=lambda: mono[0])
    assert throttle.delay() <= 60.0


def test_the_throttle_clock_is_monotonic_by_default() -> None:
    import time

    assert Throttle((RateLimit(1, 1.0),))._clock is time.monotonic


def test_the_uploader_records_request_times_on_the_throttles_clock(h: Harness) -> None:
    h.create(2)
    fake = FakeApi(h.clock)
    uploader = h.uploader(fake, batch_size=1)
    wall = [5.0]
    uploader.clock = lambda: wall[0]  # a wall clock far in the past: only for the checkpoint's records
    uploader.run()
    assert all(t >= h.clock() - 10 for t in uploader.throttle.recent_times())


def test_gzip_bodies_are_decoded_within_the_cap() -> None:
    from backfill.client import _decoder

    bomb = gzip.compress(b"0" * (50 * 1024 * 1024))
    decode = _decoder("gzip")
    assert decode is not None
    out = decode(bomb, 1024)
    assert len(out) == 1024
    assert isinstance(Uploader, type)


def test_short_texts_are_not_taken_for_secrets_and_a_command_forgets_the_last_ones_key() -> None:
    from backfill.cli import main
    from backfill.redact import SECRETS, Redactor

    redactor = Redactor()
    redactor.add("k")
    assert redactor("no API key") == "no API key"
    redactor.add("abcd/")
    assert redactor("xabcd/x and xabcd%2Fx") == "x[redacted]x and x[redacted]x"
    SECRETS.add("check")
    assert SECRETS("check") == "[redacted]"
    main(["check-mapping", "/nonexistent.yaml"])
    assert SECRETS("check") == "check"

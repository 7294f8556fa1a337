from __future__ import annotations

import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backfill.errors import UsageError
from backfill.throttle import DEFAULT_LIMITS, SLEEP_STEP, RateLimit, Throttle, parse_rate_limit

MINUTE = RateLimit(100, 60.0)
HOUR = RateLimit(1500, 3600.0)
EPOCH = 1_761_760_000.0  # 2025-10-29, so float rounding is that of real wall-clock times


class FakeClock:
    """A clock whose sleep advances it; records every sleep so tests can check them."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.t += seconds


def make(limits=DEFAULT_LIMITS, t: float = 0.0, history=()) -> tuple[Throttle, FakeClock]:
    clock = FakeClock(t)
    return Throttle(limits, clock=clock, sleep=clock.sleep, history=history), clock


def assert_windows_respected(times: list[float], limits) -> None:
    times = sorted(times)
    for limit in limits:
        for j in range(limit.count, len(times)):
            assert times[j] >= times[j - limit.count] + limit.period, (limit, j)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100/min", RateLimit(100, 60.0)),
        ("100/minute", RateLimit(100, 60.0)),
        ("1500/h", RateLimit(1500, 3600.0)),
        ("1500/hour", RateLimit(1500, 3600.0)),
        ("20/0.5s", RateLimit(20, 0.5)),
        ("10/30s", RateLimit(10, 30.0)),
        ("5/2m", RateLimit(5, 120.0)),
        ("3/sec", RateLimit(3, 1.0)),
        ("3/.25s", RateLimit(3, 0.25)),
        (" 7 / 2 hours ", RateLimit(7, 7200.0)),
        ("100/MIN", RateLimit(100, 60.0)),
        ("1/d", RateLimit(1, 86400.0)),
    ],
)
def test_parse_rate_limit(text: str, expected: RateLimit) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("", "100", "100/", "/min", "100/fortnight", "0/min", "100/0s"),
        *("-1/min", "1.5/min", "100 per min", "100/30", "a/s"),
    ],
)
def test_parse_rate_limit_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_rate_limit(text)
    message = str(info.value)
    assert "\n" not in message
    assert "e.g. 100/min" in message
    assert repr(text) in message


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (RateLimit(100, 60.0), "100/min"),
        (RateLimit(1500, 3600.0), "1500/h"),
        (RateLimit(20, 0.5), "20/0.5s"),
        (RateLimit(10, 30.0), "10/30s"),
        (RateLimit(5, 120.0), "5/2m"),
        (RateLimit(3, 1.0), "3/s"),
        (RateLimit(1, 7200.0), "1/2h"),
    ],
)
def test_str(limit: RateLimit, text: str) -> None:
    assert str(limit) == text


@given(
    st.integers(min_value=1, max_value=10**6),
    st.floats(min_value=1e-3, max_value=31 * 86400.0, allow_nan=False, allow_infinity=False),
)
def test_str_round_trips(count: int, period: float) -> None:
    limit = RateLimit(count, period)
    assert parse_rate_limit(str(limit)) == limit


@pytest.mark.parametrize(
    "text", ["99999999999999999999/s", "1000001/s", "1" * 400 + "/min", "1/0.0001s", "1/32d", "5/1e-300s", "5/1e300s"]
)
def test_rate_limits_beyond_the_bounds_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="at most 1,000,000 requests"):
        parse_rate_limit(text)


@pytest.mark.parametrize(("count", "period"), [(0, 60.0), (-1, 60.0), (1, 0.0), (1, -5.0), (1, float("inf"))])
def test_rate_limit_validates(count: int, period: float) -> None:
    with pytest.raises(ValueError):
        RateLimit(count, period)


def test_greedy_bursts_then_waits_for_the_minute() -> None:
    throttle, clock = make()
    waits: list[tuple[float, RateLimit]] = []
    times = [throttle.acquire(lambda s, limit: waits.append((s, limit))) for _ in range(100)]
    assert times == [0.0] * 100
    assert clock.sleeps == []
    assert throttle.delay() == 60.0
    assert throttle.binding_limit() == MINUTE
    assert throttle.acquire(lambda s, limit: waits.append((s, limit))) == 60.0
    assert waits == [(60.0, MINUTE)]
    assert sum(clock.sleeps) == 60.0
    assert max(clock.sleeps) <= SLEEP_STEP  # long waits are taken in steps


def test_hourly_limit_binds_after_fifteen_minutes() -> None:
    throttle, clock = make(t=EPOCH)
    times = [throttle.acquire() for _ in range(1501)]
    assert times[1499] == EPOCH + 14 * 60
    assert times[1500] == EPOCH + 3600
    assert_windows_respected(times, DEFAULT_LIMITS)


def test_resume_with_a_full_hour_waits_until_it_expires() -> None:
    # The previous run sent 1500 requests, the last 100 of them 10 minutes ago.
    now = EPOCH + 3000.0
    history = [EPOCH + 60.0 * (i // 100) for i in range(1500)]
    throttle, clock = make(t=now, history=history)
    assert throttle.binding_limit() == HOUR
    assert throttle.delay() == pytest.approx(600.0)
    waits: list[tuple[float, RateLimit]] = []
    t = throttle.acquire(lambda s, limit: waits.append((s, limit)))
    assert t == EPOCH + 3600.0
    assert waits == [(pytest.approx(600.0), HOUR)]
    assert_windows_respected(history + [t], DEFAULT_LIMITS)


def test_history_outside_the_longest_window_is_forgotten() -> None:
    history = [EPOCH + i for i in range(1500)]
    throttle, _ = make(t=EPOCH + 1499 + 3600.0, history=history)
    assert throttle.recent_times() == []
    assert throttle.delay() == 0.0
    assert throttle.binding_limit() is None


def test_memory_is_bounded() -> None:
    throttle, clock = make([RateLimit(3, 10.0)])
    for i in range(1000):
        throttle.record(float(i))
    clock.t = 999.0
    assert throttle.recent_times() == [997.0, 998.0, 999.0]
    assert len(throttle._times) <= 3


@pytest.mark.parametrize(
    ("n", "expected_seconds"),
    [
        (0, 0.0),
        (1, 0.0),
        (100, 0.0),
        (101, 60.0),
        (1500, 14 * 60.0),
        (1501, 3600.0),
        # 66,667 requests of 15 events = a million events: 44 full hours, then 1,667 more requests
        # whose last one goes at 6 minutes into hour 44 (bursts of 100 a minute).
        (66_667, 44 * 3600.0 + 6 * 60.0),
    ],
)
def test_schedule_seconds(n: int, expected_seconds: float) -> None:
    throttle, _ = make()
    assert throttle.schedule_seconds(n) == expected_seconds


def test_schedule_of_a_million_events_is_about_44_hours_and_fast() -> None:
    throttle, _ = make(t=EPOCH)
    started = time.perf_counter()
    hours = throttle.schedule_seconds(66_667) / 3600
    assert time.perf_counter() - started < 1.0
    assert hours == pytest.approx(66_667 / 1500, rel=0.01)  # ~44.4 h, the steady hourly rate
    assert 44.0 <= hours <= 44.5


def test_schedule_matches_acquire_and_counts_history() -> None:
    limits = (RateLimit(3, 1.0), RateLimit(5, 10.0))
    history = [EPOCH - 9.5, EPOCH - 2.0]
    predictor, _ = make(limits, t=EPOCH, history=history)
    throttle, clock = make(limits, t=EPOCH, history=history)
    times = [throttle.acquire() for _ in range(12)]
    assert predictor.schedule_seconds(12) == times[-1] - EPOCH
    assert_windows_respected(history + times, limits)


def test_block_until_delays_and_schedules() -> None:
    throttle, clock = make(t=EPOCH)
    throttle.block_until(EPOCH + 30.0)
    assert throttle.delay() == 30.0
    assert throttle.binding_limit() in DEFAULT_LIMITS
    assert throttle.schedule_seconds(1) == 30.0
    waits: list[float] = []
    assert throttle.acquire(lambda s, limit: waits.append(s)) == EPOCH + 30.0
    assert waits == [30.0]
    throttle.block_until(EPOCH)  # an earlier block never shortens a later one
    assert throttle.blocked_until == EPOCH + 30.0


def test_block_binding_limit_guesses_the_fullest_window() -> None:
    throttle, _ = make(t=EPOCH, history=[EPOCH - 1.0] * 99)
    throttle.block_until(EPOCH + 5.0)
    assert throttle.binding_limit() == MINUTE


@pytest.mark.parametrize(
    ("limits", "accepted_at", "probe", "expected_retry_after"),
    [
        ((RateLimit(3, 0.5),), [0.0, 0.1, 0.2], 0.3, 0.2),
        ((RateLimit(3, 0.5),), [0.0, 0.1, 0.2], 0.45, 0.05),
        ((RateLimit(2, 60.0), RateLimit(3, 3600.0)), [0.0, 10.0], 20.0, 40.0),
        ((RateLimit(2, 60.0), RateLimit(3, 3600.0)), [0.0, 10.0, 70.0], 80.0, 3520.0),
    ],
)
def test_try_acquire_retry_after(limits, accepted_at, probe, expected_retry_after) -> None:
    throttle, _ = make(limits)
    for t in accepted_at:
        assert throttle.try_acquire(t) == (True, 0.0)
    ok, retry_after = throttle.try_acquire(probe)
    assert not ok
    assert retry_after == pytest.approx(expected_retry_after)
    assert throttle.try_acquire(probe + retry_after - 0.001)[0] is False  # not recorded, still refused
    assert throttle.try_acquire(probe + retry_after) == (True, 0.0)


limit_sets = st.lists(
    st.builds(
        RateLimit,
        st.integers(min_value=1, max_value=12),
        st.sampled_from([0.25, 0.5, 1.0, 3.0, 10.0, 60.0, 3600.0]),
    ),
    min_size=1,
    max_size=3,
)
# Gaps near the throttle's 1e-6 s tolerance are where float rounding could let a request through early.
gaps = st.lists(
    st.one_of(st.sampled_from([0.0, 1e-7, 1e-6, 2e-6]), st.floats(min_value=0.0, max_value=30.0, allow_nan=False)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(limits=limit_sets, gaps=gaps, start=st.sampled_from([0.0, EPOCH]))
def test_acquire_never_exceeds_a_window_and_is_greedy(limits, gaps, start) -> None:
    throttle, clock = make(limits, t=start)
    times: list[float] = []
    for gap in gaps:
        clock.t += gap
        asked_at = clock.t
        expected = asked_at + throttle.delay(asked_at)
        t = throttle.acquire()
        assert t == pytest.approx(expected, abs=1e-6)
        assert t >= asked_at
        times.append(t)
    assert_windows_respected(times, limits)


@settings(max_examples=150, deadline=None)
@given(limits=limit_sets, gaps=gaps)
def test_try_acquire_never_exceeds_a_window(limits, gaps) -> None:
    throttle, clock = make(limits, t=EPOCH)
    accepted: list[float] = []
    for gap in gaps:
        clock.t += gap
        ok, retry_after = throttle.try_acquire()
        if ok:
            accepted.append(clock.t)
        else:
            assert retry_after > 0
            assert throttle.delay() == retry_after
    assert_windows_respected(accepted, limits)
    assert clock.sleeps == []


@settings(max_examples=150, deadline=None)
@given(limits=limit_sets, gaps=gaps, n=st.integers(min_value=1, max_value=60))
@example(limits=[RateLimit(3, 0.25)], gaps=[0.0, 1e-06], n=4)  # once pruned a time still in the window
def test_resumed_run_respects_windows_across_the_history(limits, gaps, n) -> None:
    first, clock = make(limits, t=EPOCH)
    history = []
    for gap in gaps:
        clock.t += gap
        history.append(first.acquire())
    saved = first.recent_times()
    resumed_at = clock.t
    resumed, _ = make(limits, t=resumed_at, history=saved)
    predicted = resumed.schedule_seconds(n)
    times = [resumed.acquire() for _ in range(n)]
    assert_windows_respected(history + times, limits)
    assert predicted == pytest.approx(times[-1] - resumed_at, abs=1e-6)


def _schedule_by_hand(limits, history, start, n):
    """The greedy schedule, one request at a time (the reference for the vectorized one)."""
    times = list(history)
    for _ in range(n):
        t = start
        for limit in limits:
            if len(times) >= limit.count:
                t = max(t, times[len(times) - limit.count] + limit.period)
        times.append(t)
    return times[-1] - start if n else 0.0


@settings(max_examples=60, deadline=None)
@given(
    limits=st.lists(
        st.builds(RateLimit, st.integers(1, 40), st.sampled_from([0.5, 1.0, 7.0, 60.0])), min_size=1, max_size=3
    ),
    gaps=st.lists(st.floats(0.0, 5.0), max_size=50),
    n=st.integers(0, 300),
)
def test_schedule_seconds_matches_the_request_by_request_schedule(limits, gaps, n):
    history, t = [], 0.0
    for gap in gaps:
        t += gap
        history.append(t)
    now = t + 0.25
    throttle = Throttle(limits, clock=lambda: now, history=history)
    kept = throttle.recent_times()
    assert throttle.schedule_seconds(n, now=now) == pytest.approx(_schedule_by_hand(limits, kept, now, n))

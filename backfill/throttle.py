"""Sliding-window rate limits, shared by the upload client (which waits) and the sandbox (which rejects).

A limit `RateLimit(count, period)` means: no interval of `period` seconds holds more than `count`
requests. With the request times sorted, that is `times[j] >= times[j - count] + period` for every j;
the next request is allowed once it holds for every limit, so the greedy schedule sends each
request at the earliest such moment.
"""

from __future__ import annotations

import argparse
import bisect
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from backfill.errors import UsageError

__all__ = ["DEFAULT_LIMITS", "RateLimit", "Throttle", "duration_argument", "duration_text", "parse_duration", "parse_rate_limit", "rate_limit_argument"]


@dataclass(frozen=True)
class RateLimit:
    """At most `count` requests in any `period` seconds."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"RateLimit count must be a positive integer, not {self.count!r}")
        if not (isinstance(self.period, (int, float)) and math.isfinite(self.period) and self.period > 0):
            raise ValueError(f"RateLimit period must be a positive number of seconds, not {self.period!r}")

    def __str__(self) -> str:
        period = float(self.period)
        if period == 3600.0:
            return f"{self.count}/h"
        if period == 60.0:
            return f"{self.count}/min"
        if period == 1.0:
            return f"{self.count}/s"
        for unit, size in (("h", 3600.0), ("m", 60.0)):
            if period % size == 0:
                return f"{self.count}/{_number(period / size)}{unit}"
        return f"{self.count}/{_number(period)}s"


def _number(value: float) -> str:
    # repr() is the shortest text that parses back to the same float, so str(limit) round-trips.
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}
_RATE_RE = re.compile(
    r"\s*(?P<count>\d+)\s*/\s*(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)?\s*(?P<unit>[a-z]+)\s*",
    re.IGNORECASE,
)


# Bounds of a rate limit given on the command line: beyond them the arithmetic (and the user) is lost.
MAX_RATE_COUNT = 1_000_000
MIN_RATE_PERIOD = 0.001
MAX_RATE_PERIOD = 31 * 86400.0


def parse_rate_limit(text: str) -> RateLimit:
    """Parse `N/PERIOD`: "100/min", "1500/hour", "20/0.5s", "10/30s", "5/2m", "3/sec"."""
    match = _RATE_RE.fullmatch(text)
    unit = _UNITS.get(match["unit"].lower()) if match else None
    if match is None or unit is None:
        raise UsageError(f"invalid rate limit {text!r}: expected N/PERIOD, e.g. 100/min, 1500/h or 20/0.5s")
    digits = match["count"].lstrip("0") or "0"
    count = int(digits) if len(digits) <= len(str(MAX_RATE_COUNT)) else MAX_RATE_COUNT + 1
    period = float(match["number"]) * unit if match["number"] else unit
    if count < 1 or not (math.isfinite(period) and period > 0):
        raise UsageError(
            f"invalid rate limit {text!r}: count and period must be positive, e.g. 100/min, 1500/h or 20/0.5s"
        )
    if count > MAX_RATE_COUNT or not MIN_RATE_PERIOD <= period <= MAX_RATE_PERIOD:
        raise UsageError(
            f"invalid rate limit {text!r}: at most {MAX_RATE_COUNT:,} requests, over 1 ms to 31 days, "
            "e.g. 100/min, 1500/h or 20/0.5s"
        )
    return RateLimit(count, period)


def rate_limit_argument(text: str) -> RateLimit:
    """parse_rate_limit for argparse `type=`: a bad value is a usage error of that option."""
    try:
        return parse_rate_limit(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_DURATION_RE = re.compile(r"\s*(?P<number>(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[a-z]*)\s*", re.IGNORECASE)
MAX_DURATION = 31 * 86400.0


def parse_duration(text: str) -> float:
    """Seconds of "2h", "90 min", "45s", "1.5h", "3d" (a bare number is seconds); up to 31 days."""
    match = _DURATION_RE.fullmatch(text)
    unit = (_UNITS.get(match["unit"].lower()) if match["unit"] else 1.0) if match else None
    seconds = float(match["number"]) * unit if match and unit else math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_DURATION):
        raise UsageError(f"invalid duration {text!r}: expected a positive time up to 31 days, e.g. 2h, 30min or 90s")
    return seconds


def duration_argument(text: str) -> float:
    """parse_duration for argparse `type=`."""
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DEFAULT_LIMITS: tuple[RateLimit, ...] = (RateLimit(100, 60.0), RateLimit(1500, 3600.0))

# A clock read a hair before a deadline (float rounding, coarse timers) counts as on time; otherwise a
# fake clock advanced by `deadline - now` could leave an unsleepable remainder and loop forever.
_TOLERANCE = 1e-6
# acquire() re-reads the clock at least this often, so a suspended machine or a clock change does not
# stretch one long sleep.
SLEEP_STEP = 30.0


class Throttle:
    """Request times of one API key, checked against every limit. Not thread-safe: callers lock.

    The clock is monotonic by default: a wall clock stepped back an hour must not stall a run for
    that hour, nor one stepped forward open the windows early. Times are on that clock; see
    `from_wall_times` for history recorded with the wall clock.
    """

    def __init__(
        self,
        limits: Sequence[RateLimit] = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        history: Iterable[float] = (),
    ) -> None:
        self.limits: tuple[RateLimit, ...] = tuple(limits)
        self._clock = clock
        self._sleep = sleep
        self._longest = max((limit.period for limit in self.limits), default=0.0)
        self._keep = max((limit.count for limit in self.limits), default=0)
        self._times: list[float] = sorted(float(t) for t in history)
        self._blocked_until = 0.0
        self._prune(self._clock())

    @classmethod
    def from_wall_times(
        cls,
        limits: Sequence[RateLimit],
        wall_times: Iterable[float],
        *,
        wall_now: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Throttle:
        """A throttle on `clock` holding requests recorded at wall-clock times (a checkpoint's), each
        as long ago as the wall clock says; a time in the wall clock's future counts as now."""
        now = clock()
        history = [now - max(0.0, wall_now - t) for t in wall_times]
        return cls(limits, clock=clock, sleep=sleep, history=history)

    def now(self) -> float:
        """The throttle's clock, for callers that record on it."""
        return self._clock()

    def with_limits(self, limits: Sequence[RateLimit]) -> Throttle:
        """Another throttle with other limits, the same clock, history and block (the uploader slows
        down after 429s and speeds up again)."""
        other = Throttle(limits, clock=self._clock, sleep=self._sleep, history=self._times)
        other.block_until(self._blocked_until)
        return other

    @property
    def blocked_until(self) -> float:
        """The time set by block_until (0.0 if never blocked)."""
        return self._blocked_until

    def record(self, t: float) -> None:
        """Note a request sent (or accepted) at time t."""
        self._record(float(t), min(float(t), self._clock()))

    def reset_history(self, times: Iterable[float]) -> None:
        """Replace the request times (another process shares the key: its ledger holds them all)."""
        self._times = sorted(float(t) for t in times)
        self._prune(self._clock())

    def block_until(self, t: float) -> None:
        """No request before t (the server answered 429 with Retry-After)."""
        self._blocked_until = max(self._blocked_until, float(t))

    def recent_times(self) -> list[float]:
        """The request times that can still delay a future request: what a checkpoint must keep."""
        self._prune(self._clock())
        return list(self._times)

    def delay(self, now: float | None = None) -> float:
        """Seconds until every window allows one more request (0.0 if it is allowed now)."""
        now = self._clock() if now is None else now
        remaining = self._next_allowed()[0] - now
        return remaining if remaining > _TOLERANCE else 0.0

    def binding_limit(self, now: float | None = None) -> RateLimit | None:
        """The limit that causes the current delay, or None when there is no delay.

        While a block_until() deadline is the cause, the server did not say which of its windows
        was full: the answer is then the limit whose window is fullest here (the longest on a tie).
        """
        now = self._clock() if now is None else now
        deadline, limit = self._next_allowed()
        if deadline - now <= _TOLERANCE:
            return None
        return limit if limit is not None else self._fullest(now)

    def wait(self, on_wait: Callable[[float, RateLimit], None] | None = None) -> float:
        """Sleep until one more request is allowed and return that time, without recording it (the
        uploader records a request when its answer comes: the server saw it no later).

        on_wait(seconds, limit) is called before a wait starts (again only if the deadline moves).
        """
        announced: float | None = None
        while True:
            now = self._clock()
            deadline, limit = self._next_allowed()
            remaining = deadline - now
            if remaining <= _TOLERANCE:
                return max(now, deadline)
            if on_wait is not None and deadline != announced:
                on_wait(remaining, limit if limit is not None else self._fullest(now))
                announced = deadline
            self._sleep(min(remaining, SLEEP_STEP))

    def acquire(self, on_wait: Callable[[float, RateLimit], None] | None = None) -> float:
        """wait(), then record the request at that time and return it."""
        t = self.wait(on_wait)
        self._record(t, self._clock())
        return t

    def try_acquire(self, now: float | None = None) -> tuple[bool, float]:
        """Server side: (True, 0.0) and record the request, or (False, seconds to wait) without recording."""
        now = self._clock() if now is None else now
        deadline = self._next_allowed()[0]
        remaining = deadline - now
        if remaining > _TOLERANCE:
            return False, remaining
        self._record(max(now, deadline), now)
        return True, 0.0

    def schedule_seconds(self, n_requests: int, now: float | None = None) -> float:
        """Seconds from now until the last of n more requests goes out, each sent as soon as allowed."""
        if n_requests <= 0:
            return 0.0
        now = self._clock() if now is None else now
        start = max(now, self._blocked_until)
        if not self.limits:
            return start - now
        import numpy as np  # here, not at the top: status and the sandbox start without numpy

        # Request k goes at max(start, times[k - count] + period) over every limit. A block of
        # requests shorter than the smallest count only looks back at earlier blocks, so each
        # block is one vectorized step (a 1M-event import is 67,000 requests: a few hundred steps).
        known = len(self._times)
        times = np.empty(known + n_requests)
        times[:known] = self._times
        step = min(limit.count for limit in self.limits)
        for first in range(known, known + n_requests, step):
            block = np.arange(first, min(first + step, known + n_requests))
            block_times = np.full(len(block), start)
            for limit in self.limits:
                back = block - limit.count
                ready = back >= 0
                block_times[ready] = np.maximum(block_times[ready], times[back[ready]] + limit.period)
            times[block] = block_times
        return float(times[-1]) - now

    def _next_allowed(self) -> tuple[float, RateLimit | None]:
        """The earliest time of the next request, and the limit that sets it (None: the block or nothing)."""
        deadline, binding = self._blocked_until, None
        size = len(self._times)
        for limit in self.limits:
            if size >= limit.count:
                t = self._times[size - limit.count] + limit.period
                if t > deadline:
                    deadline, binding = t, limit
        return deadline, binding

    def _fullest(self, now: float) -> RateLimit:
        def fullness(limit: RateLimit) -> tuple[float, float]:
            inside = len(self._times) - bisect.bisect_right(self._times, now - limit.period)
            return inside / limit.count, limit.period

        if not self.limits:
            # Only a server's Retry-After can delay a throttle without limits; describe it as itself.
            return RateLimit(1, max(self._blocked_until - now, _TOLERANCE))
        return max(self.limits, key=fullness)

    def _record(self, t: float, now: float) -> None:
        bisect.insort(self._times, t)
        # Pruning is relative to the caller's clock, not to t: a request accepted within the
        # tolerance is recorded at its deadline, a hair after `now`, and the next one may come at `now`.
        self._prune(now)

    def _prune(self, now: float) -> None:
        # Only the last `count` times of each window and only times inside the longest window matter.
        times = self._times
        drop = max(len(times) - self._keep, bisect.bisect_right(times, now - self._longest))
        if drop > 0:
            del times[:drop]


def duration_text(seconds: float) -> str:
    """A duration for people: "42 s", "3 min 5 s", "25 h 5 min", "3 d 4 h"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"

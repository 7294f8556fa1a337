"""Batches from the checkpoint -> the Events API, with throttling, retries and bisection.

Every request is written ahead (its events marked in flight) before it is sent, and its outcome is
recorded in one transaction after, so a crash at any instant leaves each event pending, sent,
rejected or uncertain - never lost, never silently sent twice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from backfill import client as api
from backfill.client import MAX_SERVER_WAIT, EventsClient, Outcome, canonical, error_indices
from backfill.errors import AuthError, UploadStopped
from backfill.events import MAX_BATCH
from backfill.journal import Journal, PlannedEvent
from backfill.ledger import SharedBudget
from backfill.throttle import RateLimit, Throttle, duration_text

RESEND = "resend"
SKIP = "skip"
RECOVER_AFTER_S = 120.0  # seconds without a 429 before a limiter slowed by 429s is restored
SLOWDOWN_FLOOR = 0.5  # 429s never slow the limiter below this share of the configured counts
MAX_429_BACKOFF = 60.0  # a 429 without Retry-After waits at most this (the windows do the rest)
LONG_WAIT = 60.0  # waits longer than this are said on stderr, terminal or not
SETTLE_RETRIES = 5  # answers in a row that settle nothing, without --max-retries


@dataclass(frozen=True)
class UploadOptions:
    batch_size: int = MAX_BATCH
    on_uncertain: str = RESEND  # resend | skip
    # Failed attempts in a row before stopping: given, of any kind (the old rule); None, answers that
    # settle nothing (2xx unaccounted, waits refused) stop after SETTLE_RETRIES and outages run until
    # give_up_after.
    max_retries: int | None = None
    give_up_after: float = 7200.0  # seconds without a single success (server unreachable, 5xx) before stopping
    backoff_base: float = 1.0  # seconds; full jitter over base * 2**attempt
    backoff_cap: float = 240.0  # an outage is retried at least every 4 minutes
    slowdown: float = 0.9  # each 429 scales the limiter's counts by this, down to SLOWDOWN_FLOOR


MAX_RETRIES_LIMIT = 1000


def retries_argument(text: str) -> int:
    """--max-retries for argparse `type=`: a whole number from 0 to MAX_RETRIES_LIMIT."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_RETRIES_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_RETRIES_LIMIT}, e.g. 5, not {text!r}")
    return value


class Progress(Protocol):
    def advance(self, sent: int, rejected: int, uncertain: int) -> None: ...
    def waiting(self, seconds: float, reason: str) -> None: ...
    def note(self, text: str) -> None: ...


class NullProgress:
    def advance(self, sent: int, rejected: int, uncertain: int) -> None:
        pass

    def waiting(self, seconds: float, reason: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass
class UploadResult:
    counts: dict[str, int]
    requests: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0
    batch_size: int = MAX_BATCH
    events: dict[str, int] = field(default_factory=dict)  # this run: sent, rejected, uncertain


def request_body(batch: list[PlannedEvent]) -> str:
    return '{"events":[' + ",".join(e.body for e in batch) + "]}"


def limit_name(limit: RateLimit) -> str:
    """ "the hourly limit (1500/h)", or "the 20/0.5s limit" for a period without a common name."""
    names = {1.0: "per-second", 60.0: "per-minute", 3600.0: "hourly", 86400.0: "daily"}
    name = names.get(limit.period)
    return f"the {name} limit ({limit})" if name else f"the {limit} limit"


class Uploader:
    def __init__(
        self,
        journal: Journal,
        client: EventsClient,
        throttle: Throttle,
        options: UploadOptions = UploadOptions(),
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        progress: Progress | None = None,
        budget: SharedBudget | None = None,
    ):
        self.journal = journal
        self.budget = budget  # the key's rate budget shared with other processes (the ledger's)
        self.client = client
        self.throttle = throttle
        self._configured_limits = throttle.limits  # what a run slowed by 429s returns to
        self._last_429: float | None = None  # on the throttle's (monotonic) clock
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.progress = progress or NullProgress()
        self.batch_size = min(options.batch_size, MAX_BATCH)
        self.result = UploadResult(counts={}, batch_size=self.batch_size, events={"sent": 0, "rejected": 0, "uncertain": 0})
        self._queue: deque[list[PlannedEvent]] = deque()  # halves of a batch being bisected
        self._failures = 0  # consecutive failed attempts
        self._last_success = throttle.now()  # monotonic: a machine asleep is not time spent trying
        self._down_since: float | None = None  # wall clock of the first failure of the current outage
        self._sleep_offset = _suspended()  # boot clock minus monotonic clock: grows while the machine sleeps
        self._throttled = 0  # consecutive 429s

    # ----------------------------------------------------------------- the loop

    def run(self) -> UploadResult:
        started = self.throttle.now()
        resend = self.options.on_uncertain == RESEND
        if not resend:
            self.journal.skip_uncertain()
        try:
            while batch := self._next(resend):
                self._send(batch)
        finally:
            if not resend:
                self.journal.skip_uncertain()
            self.result.elapsed = self.throttle.now() - started
            self.result.counts = self.journal.counts()
            self.result.batch_size = self.batch_size
        return self.result

    def _next(self, resend: bool) -> list[PlannedEvent]:
        if self._queue:
            return self._queue.popleft()
        return self.journal.next_batch(self.batch_size, include_uncertain=resend)

    def _send(self, batch: list[PlannedEvent]) -> None:
        if self.budget is not None:
            ticket = self.budget.wait_turn(self.throttle, sleep=self.sleep, on_wait=self._on_wait)
        else:
            self.throttle.wait(on_wait=self._on_wait)  # recorded once answered, below
        ids = [e.event_id for e in batch]
        request_no = self.journal.begin_request(ids, self.clock())
        self.result.requests += 1
        try:
            outcome = self.client.post(request_body(batch))
        except BaseException:
            # Interrupted (Ctrl-C) or a bug while the request was out: the server may have it.
            self._answered(ticket if self.budget is not None else None)
            self.journal.finish_request(request_no, finished_at=self.clock(), outcome="interrupted", uncertain=ids)
            self.result.events["uncertain"] += len(ids)
            raise
        # The server counted the request at some moment between the write-ahead and now. Counting it
        # at the latest possible moment keeps the server's windows within the limits whatever the
        # latency and the time the write-ahead takes; counting it at the send would not (a slow first
        # request of a window lets the first of the next window arrive less than a period later).
        self._answered(ticket if self.budget is not None else None)
        self._record(request_no, batch, outcome)

    def _answered(self, ticket: int | None) -> None:
        self.throttle.record(self.throttle.now())
        if ticket is not None and self.budget is not None:
            self.budget.answered(ticket)

    def _finish(self, request_no: int, outcome: Outcome, **states) -> None:
        self.journal.finish_request(request_no, finished_at=self.clock(), outcome=outcome.label, **states)
        sent, rejected, uncertain = len(states.get("sent", {})), len(states.get("rejected", {})), len(states.get("uncertain", ()))
        self.result.events["sent"] += sent
        self.result.events["rejected"] += rejected
        self.result.events["uncertain"] += uncertain
        self.progress.advance(sent, rejected, uncertain)

    # ----------------------------------------------------------------- outcomes

    def _record(self, request_no: int, batch: list[PlannedEvent], outcome: Outcome) -> None:
        ids = [e.event_id for e in batch]
        kind = outcome.kind
        if kind == api.CREATED:
            sent, rejected, uncertain = match_created(batch, outcome)
            self._finish(request_no, outcome, sent=sent, rejected=rejected, uncertain=uncertain)
            if uncertain:
                # An answer that leaves events unaccounted for settled nothing for them: a failed
                # attempt, or a server answering `{"success": []}` would be fed the batch forever.
                self._failed(Outcome(api.UNCERTAIN, outcome.status,
                                     f"the answer accounts for {len(batch) - len(uncertain)} of {len(batch)} events"))
                return
            self._succeeded()
            self._throttled = 0
            self._recover()
        elif kind == api.INVALID:
            self._succeeded()
            self._invalid(request_no, batch, outcome)
        elif kind == api.TOO_LARGE:
            self._finish(request_no, outcome, pending=ids)
            if len(batch) == 1:
                raise UploadStopped(f"the server answered 413 (payload too large) to a single event: {outcome.detail}")
            self.batch_size = max(1, len(batch) // 2)
            self.progress.note(f"413 payload too large: batch size now {self.batch_size}")
        elif kind == api.RATE_LIMITED:
            self._finish(request_no, outcome, pending=ids)
            self._rate_limited(outcome)
        elif kind == api.UNAUTHORIZED:
            self._finish(request_no, outcome, pending=ids)
            raise AuthError(
                f"the API refused the key ({outcome.status}: {outcome.detail}); "
                "check DEVGRID_API_KEY or --api-key-file and the --target; nothing was retried"
            )
        elif kind == api.TLS:
            self._finish(request_no, outcome, pending=ids)
            raise UploadStopped(
                f"{outcome.detail}; nothing was sent and this is not retried: check --base-url, or point "
                "SSL_CERT_FILE at the certificate of the authority that signed it"
            )
        elif kind == api.FATAL:
            self._finish(request_no, outcome, pending=ids)
            raise UploadStopped(
                f"unexpected answer {outcome.status} from {self.client.url}: {outcome.detail}; "
                "check --target/--base-url, then rerun to resume"
            )
        else:  # NOT_SENT or UNCERTAIN
            if kind == api.NOT_SENT:
                self._finish(request_no, outcome, pending=ids)
            else:
                self._finish(request_no, outcome, uncertain=ids)
            self._failed(outcome)

    def _invalid(self, request_no: int, batch: list[PlannedEvent], outcome: Outcome) -> None:
        """400: reject the events the error paths name; without paths, bisect to isolate them."""
        ids = [e.event_id for e in batch]
        named = error_indices(outcome.errors, len(batch))
        if named:
            rejected = {ids[i]: f"400 {reason}" for i, reason in named.items()}
            self._finish(request_no, outcome, rejected=rejected, pending=[i for i in ids if i not in rejected])
            return
        if len(batch) == 1:
            self._finish(request_no, outcome, rejected={ids[0]: f"400 {outcome.detail}"})
            return
        self._finish(request_no, outcome, pending=ids)
        half = len(batch) // 2
        self._queue.appendleft(batch[half:])
        self._queue.appendleft(batch[:half])

    def _backoff(self, attempt: int) -> float:
        return self.jitter() * min(self.options.backoff_cap, self.options.backoff_base * 2**attempt)

    def _recover(self) -> None:
        """RECOVER_AFTER_S without a 429, a limiter slowed by 429s is back to the configured limits:
        a passing burst of 429s does not slow a 44-hour import for good."""
        if self._last_429 is None or self.throttle.limits == self._configured_limits:
            return
        calm = self.throttle.now() - self._last_429
        if calm >= RECOVER_AFTER_S:
            self._set_limits(self._configured_limits)
            self.progress.note(f"no 429 for {duration_text(calm)}: back to {', '.join(map(str, self._configured_limits))}")

    def _set_limits(self, limits: tuple[RateLimit, ...] | list[RateLimit]) -> None:
        old = self.throttle
        self.throttle = old.with_limits(limits)

    def _rate_limited(self, outcome: Outcome) -> None:
        self.result.rate_limited += 1
        self._throttled += 1
        now = self.throttle.now()
        self._last_429 = now
        if outcome.retry_after is not None and not outcome.retry_after <= MAX_SERVER_WAIT:
            self._failed(Outcome(api.RATE_LIMITED, outcome.status,
                                 f"the server asked to wait {_seconds_text(outcome.retry_after)} (Retry-After), "
                                 f"more than the {duration_text(MAX_SERVER_WAIT)} this tool waits"))
            return
        if outcome.retry_after is not None:
            delay = outcome.retry_after
        else:
            delay = min(MAX_429_BACKOFF, self._backoff(self._throttled))
        floor = {lim.period: max(1, math.ceil(lim.count * SLOWDOWN_FLOOR)) for lim in self._configured_limits}
        slower = [
            RateLimit(max(floor.get(lim.period, 1), min(lim.count, int(lim.count * self.options.slowdown))), lim.period)
            for lim in self.throttle.limits
        ]
        self._set_limits(slower)
        self.throttle.block_until(now + delay)
        self._announce(delay, f"429 from the server: waiting {duration_text(delay) if delay >= 60 else f'{delay:.1f} s'}")

    def _succeeded(self) -> None:
        if self._down_since is not None:
            self.progress.note(f"the server answers again (unreachable since {_clock_text(self._down_since)}, "
                               f"{duration_text(time.time() - self._down_since)})")
        self._failures = 0
        self._down_since = None
        self._last_success = self.throttle.now()

    def _failed(self, outcome: Outcome) -> None:
        """A failed attempt. The server unreachable or failing (network errors, timeouts, 5xx) is an
        outage, retried with backoff until --give-up-after passes without a success; answers that
        settle nothing while the server works stop after --max-retries in a row."""
        self._failures += 1
        detail = f"{outcome.label}{': ' + outcome.detail if outcome.detail and outcome.detail != outcome.label else ''}"
        outage = outcome.kind == api.NOT_SENT or (outcome.kind == api.UNCERTAIN and not 200 <= (outcome.status or 0) < 300)
        self._noticed_sleep()
        cap = self.options.max_retries
        if (cap is not None or not outage) and self._failures > (SETTLE_RETRIES if cap is None else cap):
            raise UploadStopped(f"stopped after {self._failures} failed attempts in a row (last: {detail})")
        if not outage or cap is not None:
            delay = self._backoff(self._failures)
            self._announce(delay, f"{outcome.label}: retry {self._failures}/{cap or SETTLE_RETRIES} in {delay:.1f} s")
            self.sleep(delay)
            return
        if self._down_since is None:
            self._down_since = time.time()
        failing = self.throttle.now() - self._last_success
        if failing >= self.options.give_up_after:
            raise UploadStopped(
                f"no success for {duration_text(failing)} (--give-up-after {duration_text(self.options.give_up_after)}): "
                f"the server is unreachable or failing since {_clock_text(self._down_since)} (last: {detail})"
            )
        delay = min(self._backoff(self._failures), self.options.give_up_after - failing)
        self._announce(
            delay,
            f"server unreachable since {_clock_text(self._down_since)} ({duration_text(time.time() - self._down_since)}; "
            f"{detail}), next try {_clock_text(time.time() + delay)}",
        )
        self.sleep(delay)

    def _noticed_sleep(self) -> None:
        """Say when the machine slept (a laptop lid): requests out across it are uncertain, as any
        timeout; the monotonic clock, which the windows and --give-up-after use, stood still."""
        offset = _suspended()
        if offset - self._sleep_offset > 5.0:
            self.progress.note(f"the machine was asleep for {duration_text(offset - self._sleep_offset)}; carrying on")
        self._sleep_offset = offset

    def _on_wait(self, seconds: float, limit: RateLimit) -> None:
        until = time.strftime("%H:%M:%S", time.localtime(self.clock() + seconds))
        self._announce(seconds, f"waiting for {limit_name(limit)} until {until}")

    def _announce(self, seconds: float, reason: str) -> None:
        """Every wait goes to the progress display; one longer than LONG_WAIT is also said in a line
        of its own (stderr, even without a terminal), so a quiet run is never a mystery."""
        self.progress.waiting(seconds, reason)
        if seconds > LONG_WAIT:
            self.progress.note(f"Waiting {duration_text(seconds)}: {reason}")


def _suspended() -> float:
    """Seconds this machine has been suspended since boot (boot clock minus monotonic); 0 where unknown."""
    boot = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boot) - time.monotonic() if boot is not None else 0.0


def _clock_text(wall: float) -> str:
    return time.strftime("%H:%M", time.localtime(wall))


def _seconds_text(seconds: float) -> str:
    return "forever" if not math.isfinite(seconds) else duration_text(seconds) if seconds < 1e12 else f"{seconds:.3g} s"


def match_created(batch: list[PlannedEvent], outcome: Outcome) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Match a 201's failures to the events sent (by content) and its successes to the rest (in order).

    Content is compared in a normal form, so an echo that spells a timestamp differently
    (`.000Z`, `+00:00`) still names its event. Events the response does not account for are uncertain.
    """
    sent_docs = [comparable(json.loads(e.body)) for e in batch]
    canon = [canonical(doc) for doc in sent_docs]
    rejected: dict[str, str] = {}
    taken: set[int] = set()
    for failure in outcome.failures:
        if not isinstance(failure, dict):
            continue
        reason = failure.get("reason") or failure.get("message") or "rejected by the server"
        index = _find(canon, sent_docs, failure.get("event"), taken)
        if index is not None:
            taken.add(index)
            rejected[batch[index].event_id] = str(reason)[:500]
    rest = [i for i in range(len(batch)) if i not in taken]
    successes = [s for s in outcome.success if isinstance(s, dict)]
    sent: dict[str, str] = {}
    if len(successes) == len(rest):
        for i, success in zip(rest, successes):
            sent[batch[i].event_id] = _server_id(success)
        return sent, rejected, []
    # Counts disagree: match what can be matched by content, the rest is uncertain.
    for success in successes:
        index = _find(canon, sent_docs, success, taken)
        if index is not None:
            taken.add(index)
            sent[batch[index].event_id] = _server_id(success)
    uncertain = [batch[i].event_id for i in range(len(batch)) if i not in taken]
    return sent, rejected, uncertain


def _server_id(success: dict) -> str:
    value = success.get("id")
    return value[:200] if isinstance(value, str) else "" if value is None else str(value)[:200]


_FIELDS = ("type", "timestamp", "entityId", "attributes")
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?"
)


def normal_time(value: object) -> object:
    """An ISO 8601 date-time in one spelling (UTC, microseconds); anything else unchanged."""
    if not isinstance(value, str):
        return value
    match = _DATE_TIME.fullmatch(value.strip())
    if match is None:
        return value
    year, month, day, hour, minute = (int(match[i]) for i in range(1, 6))
    second = int(match[6] or 0)
    micro = int((match[7] or "0")[:6].ljust(6, "0"))
    zone = match[8]
    offset = dt.timedelta(0)
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        offset = -offset if zone[0] == "-" else offset
    try:
        moment = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone(offset))
    except ValueError:
        return value
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def comparable(event: object) -> object:
    """An event's fields as the server may echo them, with every date-time in one spelling."""
    if not isinstance(event, dict):
        return event
    doc = {k: event[k] for k in _FIELDS if k in event}
    if "timestamp" in doc:
        doc["timestamp"] = normal_time(doc["timestamp"])
    if isinstance(doc.get("attributes"), dict):
        doc["attributes"] = {k: normal_time(v) for k, v in doc["attributes"].items()}
    return doc


def _find(canon: list[str], docs: list, event: object, taken: set[int]) -> int | None:
    """Index of the sent event equal to `event` (whole, else by type, entityId, timestamp, attributes)."""
    if not isinstance(event, dict):
        return None
    echo = comparable(event)
    assert isinstance(echo, dict)
    whole = canonical(echo)
    for i, c in enumerate(canon):
        if i not in taken and c == whole:
            return i
    if "entityId" not in echo and "timestamp" not in echo:
        return None
    for i, doc in enumerate(docs):
        if i in taken:
            continue
        if all(echo.get(k) == doc.get(k) for k in ("type", "entityId", "timestamp") if k in echo) and (
            echo.get("attributes") in (None, doc.get("attributes"))
        ):
            return i
    return None

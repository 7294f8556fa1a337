"""A local DevGrid Events API (POST /events) for rehearsing an import.

It follows shared/devgrid-events-api.md: the x-api-key check (401), 1-15 events per request (400/413),
the Validation Rules (400 with `errors`), unknown entities as per-event failures in a 201, and the rate
limits per API key (429). On top of that it injects faults, seedable: 500s (nothing stored), dropped
connections after storing (the case that makes a client resend), and latency. Every stored event is
appended to a JSON Lines record file, and GET /_sandbox/stats returns counters.

Where the contract leaves room, the sandbox is the stricter reading:
  - an event may only have the fields type, timestamp, entityId and attributes;
  - `timestamp` must be UTC: YYYY-MM-DDTHH:MM:SS[.fff] with Z or +00:00;
  - date attributes must be a date and time (seconds, fraction and offset optional);
  - Retry-After is whole seconds (rounded up, at least 1), except when the limit that refused the
    request has a period under a second (rehearsals with e.g. 3/0.5s): then it is a decimal such as
    "0.25". Clients should parse it as a float.
Requests refused with 401 or 429 do not count against the rate limits; every other request to
/events does, including those answered 400, 413 or 500.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hmac
import json
import math
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from backfill.errors import BackfillError, InputError, UsageError
from backfill.events import (
    ATTRIBUTES,
    BLUEPRINT_ID,
    DATE_ATTRIBUTES,
    KNOWN_EVENT_TYPES,
    MAX_BATCH,
    STATUS_VALUES,
    TIMESTAMP_FORMAT,
    closest,
)
from backfill.throttle import DEFAULT_LIMITS, RateLimit, Throttle, rate_limit_argument

__all__ = ["Sandbox", "SandboxConfig", "add_arguments", "config_from_args", "run", "validate_events"]

ACCOUNT_ID = "sandbox-account"
EVENT_FIELDS = ("type", "timestamp", "entityId", "attributes")
MAX_BODY_BYTES = 10 * 1024 * 1024
STATS_PATH = "/_sandbox/stats"


@dataclass
class SandboxConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = "sandbox"
    entities: frozenset[str] | None = None  # None: every entityId exists
    limits: tuple[RateLimit, ...] = DEFAULT_LIMITS
    retry_after: bool = True
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    latency: float = 0.0
    seed: int | None = None
    record: Path | None = None
    # A long rehearsal stores millions of events; the foreground server keeps them only in the record.
    keep_stored: bool = True

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        if not self.latency >= 0.0:
            raise ValueError(f"latency must be >= 0, not {self.latency!r}")
        self.limits = tuple(self.limits)
        if self.entities is not None:
            self.entities = frozenset(self.entities)


# --- validation (pure) -------------------------------------------------------------------------

_UTC_TIMESTAMP_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?P<zone>Z|[+-]\d{2}:\d{2})?"
)
_ISO_DATETIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?P<zone>Z|[+-](\d{2}):?(\d{2}))?"
)
TIMESTAMP_EXAMPLE = "2025-10-29T18:30:00Z"


def _valid_date_time(match: re.Match[str]) -> bool:
    year, month, day, hour, minute = (int(match[i]) for i in range(1, 6))
    second = int(match[6]) if match[6] else 0
    try:
        dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return False
    return True


def _timestamp_error(value: object) -> str | None:
    if not isinstance(value, str):
        return f"Timestamp must be an ISO 8601 UTC string, e.g. {TIMESTAMP_EXAMPLE}"
    match = _UTC_TIMESTAMP_RE.fullmatch(value)
    if match is None or not _valid_date_time(match):
        return f"Invalid timestamp {value!r}: expected ISO 8601 in UTC, e.g. {TIMESTAMP_EXAMPLE}"
    if match["zone"] is None:
        return f"Timestamp {value!r} has no time zone: it must be UTC, e.g. {TIMESTAMP_EXAMPLE}"
    if match["zone"] not in ("Z", "+00:00"):
        return f"Timestamp {value!r} is not in UTC: use Z or +00:00, e.g. {TIMESTAMP_EXAMPLE}"
    return None


def _date_attribute_error(name: str, value: str) -> str | None:
    match = _ISO_DATETIME_RE.fullmatch(value)
    if match is None or not _valid_date_time(match):
        return f"Invalid {name} {value!r}: expected an ISO 8601 date and time, e.g. {TIMESTAMP_EXAMPLE}"
    if match[8] is not None and (int(match[8]) > 23 or int(match[9]) > 59):
        return f"Invalid {name} {value!r}: bad UTC offset"
    return None


def _field_error(path: str, msg: str) -> dict[str, str]:
    return {"type": "field", "msg": msg, "path": path, "location": "body"}


def _event_errors(index: int, event: object) -> list[dict[str, str]]:
    where = f"events[{index}]"
    if not isinstance(event, dict):
        return [_field_error(where, "Event must be an object")]
    errors: list[dict[str, str]] = []
    for key in event:
        if key not in EVENT_FIELDS:
            errors.append(_field_error(f"{where}.{key}", f"Unknown field {key!r}: expected {', '.join(EVENT_FIELDS)}"))

    event_type = event.get("type")
    if event_type is None:
        errors.append(_field_error(f"{where}.type", "Event type is required"))
    elif event_type not in KNOWN_EVENT_TYPES:
        expected = ", ".join(KNOWN_EVENT_TYPES)
        errors.append(_field_error(f"{where}.type", f"Invalid event type {event_type!r}: expected one of {expected}"))

    if "timestamp" in event:
        message = _timestamp_error(event["timestamp"])
        if message:
            errors.append(_field_error(f"{where}.timestamp", message))

    if "entityId" in event and not (isinstance(event["entityId"], str) and event["entityId"]):
        errors.append(_field_error(f"{where}.entityId", "entityId must be a non-empty string"))

    attributes = event.get("attributes", {})
    if not isinstance(attributes, dict):
        errors.append(_field_error(f"{where}.attributes", "Attributes must be an object"))
        return errors
    for name, value in attributes.items():
        path = f"{where}.attributes.{name}"
        if name not in ATTRIBUTES:
            suggestion = closest(name, ATTRIBUTES)
            hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
            errors.append(_field_error(path, f"Unknown attribute {name!r} for event-deploy{hint}"))
        elif not isinstance(value, str):
            errors.append(_field_error(path, f"Attribute {name!r} must be a string"))
        elif name == "status" and value not in STATUS_VALUES:
            errors.append(_field_error(path, f"Invalid status {value!r}: expected {' or '.join(STATUS_VALUES)}"))
        elif name in DATE_ATTRIBUTES:
            message = _date_attribute_error(name, value)
            if message:
                errors.append(_field_error(path, message))
    return errors


def validate_events(events: Sequence[object]) -> list[dict[str, str]]:
    """Every field error in a list of events, as the API's `errors` entries (empty when all are valid)."""
    return [error for index, event in enumerate(events) for error in _event_errors(index, event)]


# --- state and request handling ----------------------------------------------------------------


@dataclass
class _Reply:
    status: int
    payload: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def _message(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> _Reply:
    return _Reply(status, {"message": text}, headers or [])


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _retry_after_header(seconds: float, limit: RateLimit | None) -> str:
    if limit is not None and limit.period < 1.0:
        return f"{math.ceil(seconds * 1000) / 1000:g}"
    return str(max(1, math.ceil(seconds)))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _State:
    """Everything the handler threads share; every method takes the lock."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.rng = random.Random(config.seed)
        self.throttles: dict[str, Throttle] = {}
        self.stored: list[dict[str, Any]] = []
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.events_stored = 0
        self.events_failed = 0
        self.dropped = 0
        self.rate_limited = 0
        self.record: IO[str] | None = None

    def open(self) -> None:
        if self.config.record is not None:
            self.record = open(self.config.record, "a", encoding="utf-8")

    def close(self) -> None:
        with self.lock:
            if self.record is not None:
                self.record.close()
                self.record = None

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
                "events_stored": self.events_stored,
                "events_failed": self.events_failed,
                "dropped": self.dropped,
                "rate_limited": self.rate_limited,
            }

    def count_reply(self, reply: _Reply) -> None:
        with self.lock:
            if reply.drop:
                self.dropped += 1
            else:
                self.by_status[reply.status] += 1

    def post_events(self, api_key: str | None, content_type: str | None, body: bytes) -> _Reply:
        config = self.config
        with self.lock:
            self.requests += 1
            if api_key is None:
                return _message(401, "Unauthorized: missing x-api-key header")
            if not hmac.compare_digest(api_key.encode(), config.api_key.encode()):
                return _message(401, "Unauthorized: invalid API key")

            throttle = self.throttles.get(api_key)
            if throttle is None:
                throttle = self.throttles[api_key] = Throttle(config.limits)
            now = time.monotonic()
            allowed, retry_after = throttle.try_acquire(now)
            if not allowed:
                self.rate_limited += 1
                headers = []
                if config.retry_after:
                    headers.append(("Retry-After", _retry_after_header(retry_after, throttle.binding_limit(now))))
                return _message(429, "Too Many Requests", headers)

            reply, events = self._parse(content_type, body)
            if reply is not None:
                return reply
            errors = validate_events(events)
            if errors:
                return _Reply(400, {"errors": errors})

            # Both dice are rolled for every valid request so that a seed gives the same faults
            # whatever the rates.
            fail = self.rng.random() < config.fail_rate
            drop = self.rng.random() < config.drop_rate
            if fail:
                return _message(500, "Internal Server Error (sandbox fault injection)")
            return self._store(events, drop)

    @staticmethod
    def _parse(content_type: str | None, body: bytes) -> tuple[_Reply | None, list[Any]]:
        media_type = (content_type or "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return _message(400, f"Content-Type must be application/json, not {content_type or 'missing'}"), []
        try:
            data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            return _message(400, f"Malformed JSON body: {exc}"), []
        if not isinstance(data, dict):
            return _message(400, 'The body must be a JSON object: {"events": [...]}'), []
        events = data.get("events")
        if events is None:
            return _message(400, 'Missing "events": the body must be {"events": [...]}'), []
        if not isinstance(events, list):
            return _message(400, '"events" must be an array of 1-15 events'), []
        if not events:
            return _message(400, '"events" is empty: send 1-15 events'), []
        if len(events) > MAX_BATCH:
            return _message(413, f"Payload Too Large: {len(events)} events, at most {MAX_BATCH} per request"), []
        return None, events

    def _store(self, events: list[dict[str, Any]], drop: bool) -> _Reply:
        config = self.config
        received = _utc_now()
        received_text = received.strftime(TIMESTAMP_FORMAT)
        received_at = received.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        success: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for event in events:
            entity = event.get("entityId")
            if config.entities is not None and entity not in config.entities:
                failures.append({"event": event, "reason": "Entity not found"})
                continue
            success.append(
                {
                    "id": str(uuid.uuid4()),
                    "type": event["type"],
                    "entityId": entity,
                    "blueprintId": BLUEPRINT_ID,
                    "timestamp": event.get("timestamp", received_text),
                    "accountId": ACCOUNT_ID,
                    "attributes": event.get("attributes", {}),
                    "createdAt": received_text,
                }
            )
        if self.record is not None and success:
            self.record.writelines(json.dumps({**item, "receivedAt": received_at}) + "\n" for item in success)
            self.record.flush()
        if config.keep_stored:
            self.stored.extend(success)
        self.events_stored += len(success)
        self.events_failed += len(failures)
        return _Reply(201, {"success": success, "failures": failures}, drop=drop)


class _BadRequestBody(Exception):
    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.payload)
        self.reply = reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == STATS_PATH:
            self._send(_Reply(200, self.server.state.stats()))
        elif self.path.split("?", 1)[0] == "/events":
            self._send(_message(405, "Method Not Allowed: use POST /events"))
        else:
            self._send(_message(404, f"Not Found: {self.path}"))

    def do_POST(self) -> None:
        state = self.server.state
        try:
            body = self._read_body()
        except _BadRequestBody as exc:
            self.close_connection = True
            self._send(exc.reply)
            return
        if self.path.split("?", 1)[0] != "/events":
            self._send(_message(404, f"Not Found: {self.path}"))
            return
        try:
            reply = state.post_events(self.headers.get("x-api-key"), self.headers.get("Content-Type"), body)
        except Exception:
            traceback.print_exc()
            reply = _message(500, "Internal Server Error (sandbox bug, see its stderr)")
        state.count_reply(reply)
        if state.config.latency:
            time.sleep(state.config.latency)
        if reply.drop:
            # The events are stored; now vanish without a word, as a proxy or network failure would.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _BadRequestBody(_message(400, "Invalid Content-Length")) from None
        if length < 0:
            raise _BadRequestBody(_message(400, "Invalid Content-Length"))
        if length > MAX_BODY_BYTES:
            raise _BadRequestBody(_message(413, f"Payload Too Large: more than {MAX_BODY_BYTES} bytes"))
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequestBody(_message(400, "Malformed chunked body")) from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BadRequestBody(_message(413, f"Payload Too Large: more than {MAX_BODY_BYTES} bytes"))
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _send(self, reply: _Reply) -> None:
        body = json.dumps(reply.payload).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: SandboxConfig, state: _State) -> None:
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        self.state = state
        super().__init__((config.host, config.port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall startup for seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that dies mid-request (the README's `kill -9` rehearsal) resets the connection:
        # that is the client's business, not a sandbox error worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Sandbox:
    """The sandbox server on a background thread: `with Sandbox(config) as sb: ... sb.url ...`."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self._state = _State(self.config)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        if self._server is not None:
            return self
        self._server = _Server(self.config, self._state)
        try:
            self._state.open()
        except BaseException:
            self._server.server_close()
            self._server = None
            raise
        # A short poll interval keeps close() quick: shutdown() waits for the serving loop's next poll.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="devgrid-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._state.close()
        self._server = None
        self._thread = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the sandbox is not running; use `with Sandbox(...)` or start()")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def stored(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return list(self._state.stored)

    def stats(self) -> dict[str, Any]:
        return self._state.stats()


# --- command line --------------------------------------------------------------------------------



def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, e.g. 0.05, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, e.g. 0.2, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `backfill sandbox` (and of `python -m backfill.sandbox`)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8080, help="port to listen on, 0 for any free port (default: %(default)s)"
    )
    parser.add_argument("--api-key", default="sandbox", help="the API key the sandbox accepts (default: %(default)s)")
    parser.add_argument(
        "--entities", nargs="+", metavar="ID", help="the entity ids that exist (default: every id exists)"
    )
    parser.add_argument(
        "--entities-file",
        type=Path,
        metavar="FILE",
        help="file of entity ids that exist, one a line, # starts a comment",
    )
    parser.add_argument(
        "--rate-limit",
        action="append",
        type=rate_limit_argument,
        metavar="N/PERIOD",
        help="a rate limit per API key, e.g. 100/min; repeat for several windows (default: 100/min and 1500/h)",
    )
    parser.add_argument("--no-retry-after", action="store_true", help="send 429 without a Retry-After header")
    parser.add_argument(
        "--fail-rate", type=_probability, default=0.0, metavar="P", help="answer 500 to this share of valid requests"
    )
    parser.add_argument(
        "--drop-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="store this share of valid requests, then close the connection without answering",
    )
    parser.add_argument("--latency", type=_seconds, default=0.0, metavar="SECONDS", help="delay before every answer")
    parser.add_argument("--seed", type=int, help="seed for the fault injection, for repeatable rehearsals")
    parser.add_argument("--record", type=Path, metavar="FILE", help="append every stored event to this JSON Lines file")


def read_entities_file(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read entities file {path}: {exc}") from exc
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    entities: frozenset[str] | None = None
    if args.entities is not None or args.entities_file is not None:
        ids = set(args.entities or ())
        if args.entities_file is not None:
            ids |= read_entities_file(args.entities_file)
        entities = frozenset(ids)
    return SandboxConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        entities=entities,
        limits=tuple(args.rate_limit) if args.rate_limit else DEFAULT_LIMITS,
        retry_after=not args.no_retry_after,
        fail_rate=args.fail_rate,
        drop_rate=args.drop_rate,
        latency=args.latency,
        seed=args.seed,
        record=args.record,
        keep_stored=False,
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """Serve in the foreground until Ctrl-C or SIGTERM."""
    config = config_from_args(args)
    sandbox = Sandbox(config)
    try:
        sandbox.start()
    except OSError as exc:
        if config.record is not None and exc.filename is not None:
            raise InputError(f"cannot open record file {config.record}: {exc.strerror}") from exc
        raise UsageError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from exc
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        limits = ", ".join(str(limit) for limit in config.limits)
        print(f"sandbox listening on {sandbox.url} (api key: {config.api_key})", flush=True)
        print(f"rate limits: {limits}; stats at {sandbox.url}{STATS_PATH}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if in_main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)
        sandbox.close()
    stats = sandbox.stats()
    print(
        f"sandbox stopped: {stats['requests']} requests, {stats['events_stored']} events stored",
        file=sys.stderr,
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backfill.sandbox", description="A local DevGrid Events API for rehearsing an import."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BackfillError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return int(exc.exit_status)


if __name__ == "__main__":
    raise SystemExit(main())

"""DevGrid Events API client: one POST /events, its outcome classified.

Network errors are translated in one place, by `_NETWORK`, into what they mean for the events:
either the request surely never reached the server (the events are still pending), or it may have
been processed (the events are uncertain).
"""

from __future__ import annotations

import datetime
import email.utils
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from backfill import __version__
from backfill.errors import AuthError, UsageError

TARGETS = {
    "production": "https://prod.api.devgrid.io",
    "development": "https://api.dev.devgrid.io",
}

# Outcome kinds
CREATED = "created"  # 201: success[] and failures[]
INVALID = "invalid"  # 400: errors[] or message; nothing stored
TOO_LARGE = "too_large"  # 413
RATE_LIMITED = "rate_limited"  # 429
UNAUTHORIZED = "unauthorized"  # 401 / 403
NOT_SENT = "not_sent"  # connection refused, DNS, connect timeout: the server never saw it
UNCERTAIN = "uncertain"  # 5xx, read timeout, connection reset after sending: may be stored
FATAL = "fatal"  # anything else (404: wrong URL, ...): stop

_NETWORK: tuple[tuple[type[Exception], str, str], ...] = (
    (httpx.ConnectTimeout, NOT_SENT, "connect timeout"),
    (httpx.ConnectError, NOT_SENT, "cannot connect"),
    (httpx.PoolTimeout, NOT_SENT, "connection pool timeout"),
    # Raised before a byte goes out (an illegal header, a bad URL scheme); their text may quote headers.
    (httpx.LocalProtocolError, NOT_SENT, "the request could not be sent (local protocol error)"),
    (httpx.UnsupportedProtocol, NOT_SENT, "unsupported URL scheme"),
    (httpx.ReadTimeout, UNCERTAIN, "timed out waiting for the response"),
    (httpx.WriteTimeout, UNCERTAIN, "timed out sending the request"),
    (httpx.RemoteProtocolError, UNCERTAIN, "connection closed without a response"),
    (httpx.ReadError, UNCERTAIN, "connection reset while waiting for the response"),
    (httpx.WriteError, UNCERTAIN, "connection reset while sending"),
    (httpx.TransportError, UNCERTAIN, "network error"),
)


@dataclass
class Outcome:
    kind: str
    status: int | None = None
    detail: str = ""
    success: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    retry_after: float | None = None

    @property
    def label(self) -> str:
        """Short text for the checkpoint's request log: the HTTP status or the error kind."""
        return str(self.status) if self.status is not None else self.detail or self.kind


def check_base_url(url: str, *, option: str = "--base-url") -> str:
    """The URL without a trailing slash; plain http only to loopback addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option} {url!r}: expected http(s)://HOST[:PORT]")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise UsageError(
            f"{option} {url!r}: plain http is refused except for loopback addresses (127.0.0.1, ::1, localhost); use https"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": UTC without a named zone; never the local time
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


_HEADER_SAFE_KEY = re.compile(r"[\x21-\x7e]+")


def check_api_key(api_key: str, *, where: str = "DEVGRID_API_KEY or --api-key-file", header: str = "x-api-key",
                  kind: str = "API key") -> str:
    """The key (or a source's token), if it can go in an HTTP header; the error never quotes it."""
    if not _HEADER_SAFE_KEY.fullmatch(api_key):
        raise AuthError(
            f"the {kind} is empty or contains spaces, line breaks or non-ASCII characters, "
            f"which cannot be sent in the {header} header; check {where}"
        )
    return api_key


def read_secret(env: str, secret_file: str | None, *, file_option: str, header: str, kind: str) -> str:
    """A key or token from `file_option FILE` or `$env`, checked for its header. Messages never contain it."""
    if secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(f"{file_option} {secret_file}: cannot read it ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise AuthError(f"{file_option} {secret_file}: not UTF-8 text") from None
        if not secret:
            raise AuthError(f"{file_option} {secret_file}: the file is empty")
        return check_api_key(secret, where=f"{file_option} {secret_file}", header=header, kind=kind)
    secret = os.environ.get(env, "").strip()
    if not secret:
        raise AuthError(f"no {kind}: set {env} or pass {file_option} FILE")
    return check_api_key(secret, where=f"{env} or {file_option}", header=header, kind=kind)


class EventsClient:
    """POST /events with the key in the x-api-key header. The key appears nowhere else."""

    def __init__(self, base_url: str, api_key: str, *, client: httpx.Client | None = None, timeout: float = 30.0):
        check_api_key(api_key)
        self.url = f"{base_url.rstrip('/')}/events"
        self._headers = {
            "x-api-key": api_key,
            "Content-Type": "application/json",
            "User-Agent": f"devgrid-backfill/{__version__}",
        }
        self._client = client or httpx.Client(timeout=timeout)
        self._owns_client = client is None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def post(self, body: str) -> Outcome:
        try:
            response = self._client.post(self.url, content=body.encode("utf-8"), headers=self._headers)
        except Exception as exc:
            for error_type, kind, text in _NETWORK:
                if isinstance(exc, error_type):
                    return Outcome(kind, detail=text)
            raise
        return classify(response)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def _message(doc: Any, response: httpx.Response) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return doc["message"]
    text = response.text.strip().replace("\n", " ")
    return text[:200] or response.reason_phrase


def _errors_text(errors: list[Any]) -> str:
    """A 400's errors[] as one line: what the server said, for events it did not name by path."""
    texts = []
    for error in errors:
        if isinstance(error, dict):
            msg = str(error.get("msg") or error.get("message") or "invalid")
            texts.append(f"{error['path']}: {msg}" if error.get("path") else msg)
        else:
            texts.append(str(error))
    text = "; ".join(texts)
    return text if len(text) <= 300 else text[:297] + "..."


def classify(response: httpx.Response) -> Outcome:
    status = response.status_code
    doc = _json(response)
    if status in (200, 201):
        if not isinstance(doc, dict):
            return Outcome(UNCERTAIN, status, "the 201 response is not the documented JSON")
        success = doc.get("success") or []
        failures = doc.get("failures") or []
        return Outcome(CREATED, status, success=list(success), failures=list(failures))
    if status == 400:
        errors = doc.get("errors") if isinstance(doc, dict) else None
        errors = errors if isinstance(errors, list) else []
        return Outcome(INVALID, status, _errors_text(errors) if errors else _message(doc, response), errors=errors)
    if status == 413:
        return Outcome(TOO_LARGE, status, _message(doc, response))
    if status == 429:
        return Outcome(RATE_LIMITED, status, _message(doc, response),
                       retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status in (401, 403):
        return Outcome(UNAUTHORIZED, status, _message(doc, response))
    if status >= 500 or status == 408:
        return Outcome(UNCERTAIN, status, _message(doc, response))
    return Outcome(FATAL, status, _message(doc, response))


_PATH = re.compile(r"^events\[(\d+)\]")


def error_indices(errors: list[dict], n_events: int) -> dict[int, str]:
    """Event index -> message from a 400's errors[] (paths like events[3].timestamp)."""
    out: dict[int, str] = {}
    for error in errors:
        if not isinstance(error, dict):
            continue
        match = _PATH.match(str(error.get("path", "")))
        if not match or int(match.group(1)) >= n_events:
            continue
        index = int(match.group(1))
        text = f"{error.get('path')}: {error.get('msg', 'invalid')}"
        out[index] = f"{out[index]}; {text}" if index in out else text
    return out


def canonical(event: Any) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

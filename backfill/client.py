"""DevGrid Events API client: one POST /events, its outcome classified.

Network errors are translated in one place, by `_NETWORK`, into what they mean for the events:
either the request surely never reached the server (the events are still pending), or it may have
been processed (the events are uncertain).
"""

from __future__ import annotations

import argparse
import datetime
import email.utils
import ipaddress
import json
import math
import os
import re
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from backfill import __version__
from backfill.errors import AuthError, UsageError
from backfill.redact import MAX_DEPTH, Redactor, depth

KEY_ENV = "DEVGRID_API_KEY"

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
TLS = "tls"  # the server's certificate was refused: nothing sent, retrying cannot help

_NETWORK: tuple[tuple[type[Exception], str, str], ...] = (
    (httpx.ProxyError, NOT_SENT, "the proxy refused the connection"),
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
    """The URL without a trailing slash; plain http only to loopback addresses, no credentials, a valid port."""
    shown = shown_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for ":abc", ":70000"; urlsplit itself for "http://[::1"
    except ValueError as exc:
        raise UsageError(f"{option} {shown!r}: not a valid URL ({exc}); expected http(s)://HOST[:PORT]") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{option} {shown!r}: expected http(s)://HOST[:PORT]")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UsageError(
            f"{option} {shown!r}: credentials in the URL are refused (they would be stored in the checkpoint); "
            f"the API key goes in ${KEY_ENV} or --api-key-file"
        )
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        raise UsageError(f"{option} {shown!r}: the port must be between 1 and 65535")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise UsageError(f"{option} {shown!r}: a query (?...) or fragment (#...) is not allowed; give http(s)://HOST[:PORT][/PATH]")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise UsageError(
            f"{option} {shown!r}: plain http is refused except for loopback addresses (127.0.0.1, ::1, localhost); use https"
        )
    return url.rstrip("/")


def shown_url(url: str) -> str:
    """The URL as it may be printed: any user:password@ part replaced."""
    return re.sub(r"(?<=://)[^/?#]*@", "[credentials]@", url)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------- proxies

_PROXY_VARIABLES = ("https_proxy", "all_proxy", "http_proxy")


def check_proxy_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse, up front, proxy settings the client cannot honour (e.g. ALL_PROXY=socks5://...)."""
    env = os.environ if environ is None else environ
    for name, value in _proxy_settings(env):
        try:
            parts = urlsplit(value if "://" in value else f"http://{value}")
            parts.port  # noqa: B018 - validates it
        except ValueError:
            raise UsageError(f"{name}={shown_url(value)!r} is not a valid proxy URL; fix or unset {name}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"{name}={shown_url(value)!r}: only an http:// or https:// proxy can be used; unset {name} or give one"
            )


def _proxy_settings(env: Mapping[str, str]) -> list[tuple[str, str]]:
    found = []
    for name in _PROXY_VARIABLES:
        for spelled in (name, name.upper()):
            value = env.get(spelled, "").strip()
            if value:
                found.append((spelled, value))
                break
    return found


def proxy_for(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The proxy the request to `url` goes through, from HTTPS_PROXY / ALL_PROXY and NO_PROXY.

    Plain http (only ever to loopback) never goes through a proxy, and neither does anything to a
    loopback address: the key would leave the machine, in clear text for http.
    """
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or is_loopback(parts.hostname):
        return None
    settings = dict((name.lower(), value) for name, value in _proxy_settings(env))
    proxy = settings.get("https_proxy") or settings.get("all_proxy")
    if not proxy:
        return None
    no_proxy = env.get("no_proxy", env.get("NO_PROXY", ""))
    if no_proxy and urllib.request.proxy_bypass_environment(parts.hostname, {"no": no_proxy}):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _tls_verification() -> ssl.SSLContext | bool:
    """What httpx's trust_env would have read for TLS: SSL_CERT_FILE or SSL_CERT_DIR, else its defaults."""
    for name, option in (("SSL_CERT_FILE", "cafile"), ("SSL_CERT_DIR", "capath")):
        value = os.environ.get(name)
        if value:
            try:
                return ssl.create_default_context(**{option: value})
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise UsageError(f"{name}={value!r}: cannot load certificates from it ({exc}); fix or unset {name}") from None
    return True


# --------------------------------------------------------------------- answers

# A server may ask for at most this wait (Retry-After); a longer one is treated as a failed attempt.
MAX_SERVER_WAIT = 3600.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta seconds or an HTTP date (possibly huge or inf: callers cap it)."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value) if len(value) < 30 else math.inf
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000": UTC without a named zone; never the local time
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


MAX_TIMEOUT = 3600.0


def timeout_argument(text: str) -> float:
    """--timeout for argparse `type=`: seconds for a whole request, more than 0 and at most an hour."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {MAX_TIMEOUT:g}, e.g. 30, not {text!r}"
        )
    return value


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


# At most this much of any answer is read (decoded): a 1 GB body or a gzip bomb is cut off here.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass
class Answer:
    """An HTTP answer as read: status, headers, at most MAX_ANSWER_BYTES of its decoded body."""

    status: int
    headers: httpx.Headers
    content: bytes
    reason: str = ""
    complete: bool = True  # False: the body was cut off (too large) or its encoding is unknown


class _Deadline(Exception):
    pass


class EventsClient:
    """POST /events with the key in the x-api-key header. The key appears nowhere else, and is
    redacted from every text taken from an answer.

    `timeout` bounds the whole request, from connecting to the last byte of the answer: a server
    that drips its answer one byte a second is cut off too.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        client: httpx.Client | None = None,
        timeout: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ):
        check_api_key(api_key)
        self.url = f"{base_url.rstrip('/')}/events"
        self.timeout = float(timeout)
        self._headers = {
            "x-api-key": api_key,
            "Content-Type": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": f"devgrid-backfill/{__version__}",
        }
        self._secrets = Redactor()
        self._secrets.add(api_key)
        self.proxy = proxy_for(self.url, environ) if client is None else None
        if client is None:
            # trust_env=False: the proxy is chosen above (never for loopback or plain http), and
            # nothing else is read from the environment behind our back.
            client = httpx.Client(timeout=self.timeout, proxy=self.proxy, trust_env=False, verify=_tls_verification())
            self._owns_client = True
        else:
            self._owns_client = False
        self._client = client

    @property
    def proxy_shown(self) -> str | None:
        return None if self.proxy is None else shown_url(self.proxy)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def post(self, body: str) -> Outcome:
        """Send one request; the answer classified. Ctrl-C (or any BaseException) propagates."""
        content = body.encode("utf-8")
        deadline = time.monotonic() + self.timeout
        box: dict[str, Any] = {}

        def exchange() -> None:
            try:
                box["answer"] = self._exchange(content, deadline)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=exchange, name="devgrid-request", daemon=True)
        worker.start()
        # The worker checks the deadline between reads; this join also bounds a read that never
        # returns (headers dripped byte by byte). A little grace lets the worker's own answer win.
        worker.join(max(0.0, deadline - time.monotonic()) + 2.0)
        if worker.is_alive():
            return self._deadline_outcome()
        error = box.get("error")
        if error is None:
            return classify_answer(box["answer"], self._secrets)
        if isinstance(error, _Deadline):
            return self._deadline_outcome()
        if isinstance(error, Exception):
            outcome = self._network_outcome(error)
            if outcome is not None:
                return outcome
        raise error

    def _deadline_outcome(self) -> Outcome:
        return Outcome(UNCERTAIN, detail=f"no complete answer within --timeout {self.timeout:g} s")

    def _exchange(self, content: bytes, deadline: float) -> Answer:
        request = self._client.build_request("POST", self.url, content=content, headers=self._headers)
        response = self._client.send(request, stream=True)
        try:
            if hasattr(response, "_content"):  # read already (httpx.MockTransport): decoded in memory
                content = response.content
                return Answer(response.status_code, response.headers, content[:MAX_ANSWER_BYTES],
                              response.reason_phrase, len(content) <= MAX_ANSWER_BYTES)
            decoder = _decoder(response.headers.get("content-encoding", ""))
            data = bytearray()
            complete = decoder is not None
            if decoder is not None:
                for chunk in response.iter_raw(_CHUNK):
                    if time.monotonic() > deadline:
                        raise _Deadline
                    data += decoder(chunk, MAX_ANSWER_BYTES - len(data))
                    if len(data) >= MAX_ANSWER_BYTES:
                        complete = False
                        break
            return Answer(response.status_code, response.headers, bytes(data), response.reason_phrase, complete)
        finally:
            response.close()

    def _network_outcome(self, exc: Exception) -> Outcome | None:
        if isinstance(exc, httpx.ProxyError):
            text = self._secrets(str(exc).strip() or type(exc).__name__)
            return Outcome(NOT_SENT, detail=f"the proxy {self.proxy_shown or '(from the environment)'} refused the connection ({text})")
        certificate = _certificate_problem(exc)
        if certificate is not None:
            host = urlsplit(self.url).hostname
            return Outcome(TLS, detail=f"the TLS certificate of {host} was refused ({certificate})")
        for error_type, kind, text in _NETWORK:
            if isinstance(exc, error_type):
                if self.proxy is not None and kind == NOT_SENT and isinstance(exc, httpx.ConnectError):
                    text = f"{text} (through the proxy {self.proxy_shown})"
                return Outcome(kind, detail=text)
        return None


def _certificate_problem(exc: BaseException) -> str | None:
    """The reason of a certificate verification failure somewhere in the exception's chain, else None."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        if isinstance(current, ssl.SSLCertVerificationError):
            return str(current.verify_message or current.reason or "certificate verify failed")
        if "CERTIFICATE_VERIFY_FAILED" in str(current):
            text = str(current)
            return text.split("certificate verify failed:", 1)[-1].strip(" )") or "certificate verify failed"
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def _decoder(encoding: str) -> Callable[[bytes, int], bytes] | None:
    """A function (chunk, room) -> at most `room` decoded bytes, or None for an encoding we do not read."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return lambda chunk, room: chunk[: max(0, room)]
    if encoding not in ("gzip", "x-gzip", "deflate"):
        return None
    state: dict[str, Any] = {"z": zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS)}

    def decode(chunk: bytes, room: int) -> bytes:
        if room <= 0:
            return b""
        try:
            out = state["z"].decompress(chunk, room)
        except zlib.error:
            if encoding != "deflate" or state.get("raw"):
                raise httpx.DecodingError("the answer's compressed body is corrupt") from None
            state["z"], state["raw"] = zlib.decompressobj(-zlib.MAX_WBITS), True  # raw deflate, no zlib header
            out = state["z"].decompress(chunk, room)
        return out  # when more would come out than `room`, the caller has its cap and stops

    return decode


def _json(content: bytes) -> Any:
    """The parsed answer, or None when it is not JSON, too deep, or otherwise unusable."""
    if not content:
        return None
    try:
        doc = json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return None if depth(doc) > MAX_DEPTH else doc


def _message(doc: Any, answer: Answer) -> str:
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return _one_line(doc["message"], 300)
    text = answer.content[:2000].decode("utf-8", errors="replace")
    return _one_line(text, 200) or answer.reason


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _errors_text(errors: list[Any]) -> str:
    """A 400's errors[] as one line: what the server said, for events it did not name by path."""
    texts = []
    for error in errors:
        if isinstance(error, dict):
            msg = str(error.get("msg") or error.get("message") or "invalid")
            texts.append(f"{error['path']}: {msg}" if error.get("path") else msg)
        else:
            texts.append(str(error))
    return _one_line("; ".join(texts), 300)


def classify(response: httpx.Response, secrets: Redactor | None = None) -> Outcome:
    """An httpx response already read whole (tests, callers with their own transport)."""
    answer = Answer(response.status_code, response.headers, response.content[:MAX_ANSWER_BYTES], response.reason_phrase,
                    len(response.content) <= MAX_ANSWER_BYTES)
    return classify_answer(answer, secrets or Redactor())


def classify_answer(answer: Answer, secrets: Redactor) -> Outcome:
    """What an answer means for the events it was about; every text in it redacted."""
    status = answer.status
    doc = secrets.value(_json(answer.content)) if answer.complete else None
    if 200 <= status < 300:
        if status in (200, 201) and isinstance(doc, dict):
            success, failures = doc.get("success", []), doc.get("failures", [])
            if isinstance(success, list) and isinstance(failures, list) and ("success" in doc or "failures" in doc):
                return Outcome(CREATED, status, success=success, failures=failures)
        what = "too large to read" if not answer.complete and answer.content else "not the documented JSON"
        return Outcome(UNCERTAIN, status, f"{status} answer {what}: the events were probably stored")
    text = secrets(_message(doc, answer))
    if status == 400:
        errors = doc.get("errors") if isinstance(doc, dict) else None
        errors = errors if isinstance(errors, list) else []
        return Outcome(INVALID, status, _errors_text(errors) if errors else text, errors=errors)
    if status == 413:
        return Outcome(TOO_LARGE, status, text)
    if status == 429:
        return Outcome(RATE_LIMITED, status, text, retry_after=parse_retry_after(answer.headers.get("Retry-After")))
    if status in (401, 403):
        return Outcome(UNAUTHORIZED, status, text)
    if status >= 500 or status == 408:
        return Outcome(UNCERTAIN, status, text)
    return Outcome(FATAL, status, text)


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

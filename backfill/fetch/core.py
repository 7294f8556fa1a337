"""What every `backfill fetch SOURCE` shares: the token, the HTTP session, the output and its state.

- `read_token`: a token from the environment or `--token-file`, never from the command line.
- `Http`: GET with the token only to the origin (scheme, host, port) of `--url`; a redirect or a
  next-page link to another origin stops the fetch before anything is sent there. Retries 5xx and
  network errors with backoff, waits out rate limits (`Retry-After`, GitHub `x-ratelimit-*`,
  GitLab `RateLimit-*`), and stops at once on 401/403. Clock and sleep are arguments.
- `Output`: pages are appended, one JSON value per line, to `.NAME.partial` beside the output;
  after each page the state file `NAME.fetch-state.json` records the byte length of the partial
  file and the source's cursor (written to a temporary name and moved into place). A rerun of the
  same command cuts the partial file back to the recorded length and continues from the cursor.
  When the source is done the partial file is moved onto the output and the state removed, and
  `record` keeps what the completeness checks found beside it (`.NAME.fetched.json`), which the
  preview report reads instead of guessing from page sizes.
- `Progress`: a tqdm bar on stderr (items, pages, total where known), silent without a terminal.

Neither the token nor any header carrying it is ever stored, printed or put in an error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from backfill import __version__
from backfill.client import check_base_url, parse_retry_after, read_secret
from backfill.errors import AuthError, FetchIncomplete, FetchStopped, UsageError
from backfill.fetch import record
from backfill.report import visible
from backfill.summary import duration_text

STATE_VERSION = 1
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5


# --------------------------------------------------------------------- tokens


def read_token(env: str, token_file: str | None, *, header: str) -> str:
    """The token from `--token-file` or `$env`. Errors name where it came from, never the value."""
    return read_secret(env, token_file, file_option="--token-file", header=header, kind="token")


def printable(text: str, limit: int = 200) -> str:
    """Server text for a one-line message: control and invisible characters escaped (the report's
    rule), at most `limit` characters."""
    out = visible(text.strip())
    return out if len(out) <= limit else out[: limit - 3] + "..."


def server_message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        for key in ("message", "error_description", "error"):
            if isinstance(doc.get(key), str):
                return printable(doc[key])
    if "html" in response.headers.get("content-type", ""):
        return response.reason_phrase
    return printable(response.text) or response.reason_phrase


# --------------------------------------------------------------------- progress and statistics


@dataclass
class Stats:
    """What the summary reports. `items` and `pages` include those of earlier, interrupted runs."""

    items: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    waited: float = 0.0  # seconds spent waiting on rate limits
    started: float = 0.0


class Progress:
    """A bar over items on stderr; `disable=None` turns it off when stderr is not a terminal."""

    def __init__(self, what: str, *, enabled: bool | None = None):
        from tqdm import tqdm

        self.bar = tqdm(unit=" " + what, dynamic_ncols=True, file=sys.stderr,
                        disable=None if enabled is None else not enabled,
                        bar_format="{desc}{n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]")
        self._pages = 0

    def start(self, items: int, pages: int) -> None:
        self.bar.update(items)
        self._pages = pages
        self._postfix()

    def total(self, total: int | None) -> None:
        self.bar.total = total
        self.bar.refresh()

    def page(self, items: int) -> None:
        self._pages += 1
        self.bar.update(items)
        self._postfix()

    def waiting(self, seconds: float, reason: str) -> None:
        self._postfix(f"{reason}: waiting {duration_text(seconds)}")

    def note(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def _postfix(self, note: str = "") -> None:
        self.bar.set_postfix_str(f"{self._pages} pages{' - ' + note if note else ''}", refresh=True)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------- HTTP


@dataclass
class HttpSettings:
    max_retries: int = 5  # failed attempts in a row (5xx, network) before stopping
    timeout: float = 30.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    max_rate_limit_waits: int = 30  # rate-limit answers in a row before stopping
    default_rate_limit_wait: float = 60.0  # a rate-limit answer that says nothing of when to retry


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class Http:
    """GET requests to one origin, with the token's headers, retries and rate-limit waits."""

    def __init__(
        self,
        base_url: str,
        secret_headers: dict[str, str],
        *,
        option: str = "--url",
        headers: dict[str, str] | None = None,
        settings: HttpSettings | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        stats: Stats | None = None,
        progress: Progress | None = None,
    ):
        self.base_url = check_base_url(base_url, option=option)
        self._origin = origin(self.base_url)
        self._option = option
        self.settings = settings or HttpSettings()
        self._headers = {"User-Agent": f"devgrid-backfill/{__version__}", **(headers or {}), **secret_headers}
        self._client = client or httpx.Client(timeout=self.settings.timeout, trust_env=False)
        self._owns_client = client is None
        self._sleep = sleep
        self._clock = clock
        self.stats = stats or Stats()
        self.progress = progress
        self._resume_at: float | None = None  # a budget that ran out: no request before this time

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, httpx.Response]:
        return self._json(self.send("GET", url, params=params))

    def post_json(self, url: str, body: Any) -> tuple[Any, httpx.Response]:
        return self._json(self.send("POST", url, body=body))

    def _json(self, response: httpx.Response) -> tuple[Any, httpx.Response]:
        try:
            return response.json(), response
        except (ValueError, UnicodeDecodeError):
            raise FetchStopped(f"{response.request.method} {_shown(response.url)}: the answer is not JSON "
                               f"({response.headers.get('content-type', 'no content type')}); check {self._option}") from None

    def get(self, url: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self.send("GET", url, params=params)

    def send(self, method: str, url: str, *, params: dict[str, Any] | None = None, body: Any = None) -> httpx.Response:
        failures = rate_limited = redirects = 0
        while True:
            self._check_origin(url)
            self._wait_for_budget()
            what = f"{method} {_shown(url)}"
            try:
                response = self._client.request(method, url, params=params, json=body, headers=self._headers)
            except httpx.TransportError as exc:
                failures += 1
                self._retry_later(failures, f"{what}: {_network_text(exc)}")
                continue
            self.stats.requests += 1
            self._note_budget(response)
            status = response.status_code
            if status in REDIRECTS and response.headers.get("location"):
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise FetchStopped(f"{what}: more than {MAX_REDIRECTS} redirects")
                url, params = urljoin(str(response.url), response.headers["location"]), None
                continue
            wait = self._rate_limit_wait(response)
            if wait is not None:
                rate_limited += 1
                if rate_limited > self.settings.max_rate_limit_waits:
                    raise FetchStopped(f"{what}: still rate limited after {rate_limited - 1} waits; "
                                       "rerun the same command later to continue")
                self._wait(wait, f"rate limited ({status})")
                continue
            if 200 <= status < 300:
                return response
            if status in (401, 403):
                raise AuthError(
                    f"{what}: {status} {response.reason_phrase}: {server_message(response)}; "
                    "the token was refused or lacks read access (see the README for the scopes it needs)"
                )
            if status >= 500 or status == 408:
                failures += 1
                self._retry_later(failures, f"{what}: {status} {server_message(response)}")
                continue
            raise FetchStopped(f"{what}: {status} {server_message(response)}; check {self._option} and the names given")

    def _check_origin(self, url: str) -> None:
        if origin(url) != self._origin:
            raise FetchStopped(
                f"the server sent the fetch to {_shown(url, path=False)}, another host than {self._option} "
                f"{_shown(self.base_url, path=False)}; the token is not sent there. If that host is right, "
                f"pass it as {self._option}"
            )

    def _retry_later(self, failures: int, text: str) -> None:
        if failures > self.settings.max_retries:
            raise FetchStopped(f"{text}; gave up after {failures} attempts; rerun the same command to continue")
        self.stats.retries += 1
        delay = min(self.settings.backoff_cap, self.settings.backoff_base * 2 ** (failures - 1))
        if self.progress:
            self.progress.waiting(delay, f"{text}: retry {failures}/{self.settings.max_retries}")
        self._sleep(delay)

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying a rate-limited answer, or None if it is not one."""
        status, headers = response.status_code, response.headers
        if status == 200 and _graphql_rate_limited(response):
            reset = _number(headers.get("x-ratelimit-reset"))
            return max(0.0, reset - self._clock()) + 1.0 if reset is not None else self.settings.default_rate_limit_wait
        if status not in (403, 429):
            return None
        after = parse_retry_after(headers.get("retry-after"), now=self._clock())
        if after is not None:  # GitHub secondary limits, GitLab, Jenkins behind a proxy
            return after
        for remaining, reset in (("x-ratelimit-remaining", "x-ratelimit-reset"), ("ratelimit-remaining", "ratelimit-reset")):
            if headers.get(remaining) == "0" and _number(headers.get(reset)) is not None:
                return max(0.0, float(_number(headers.get(reset)) or 0) - self._clock()) + 1.0  # type: ignore[arg-type]
        if status == 429 or "rate limit" in response.text[:2000].lower():
            return self.settings.default_rate_limit_wait
        return None

    def _note_budget(self, response: httpx.Response) -> None:
        """A successful answer that used the last request of the budget: wait for its reset first."""
        headers = response.headers
        for remaining, reset in (("x-ratelimit-remaining", "x-ratelimit-reset"), ("ratelimit-remaining", "ratelimit-reset")):
            if headers.get(remaining) == "0" and response.status_code < 300:
                at = _number(headers.get(reset))
                if at is not None:
                    self._resume_at = at + 1.0

    def _wait_for_budget(self) -> None:
        if self._resume_at is None:
            return
        delay, self._resume_at = self._resume_at - self._clock(), None
        if delay > 0:
            self._wait(delay, "request budget used up until its reset")

    def _wait(self, seconds: float, reason: str) -> None:
        self.stats.rate_limited += 1
        self.stats.waited += seconds
        if self.progress:
            self.progress.waiting(seconds, reason)
        self._sleep(seconds)


def _graphql_rate_limited(response: httpx.Response) -> bool:
    """GitHub GraphQL answers an exhausted budget with 200 and `errors: [{"type": "RATE_LIMITED"}]`."""
    if response.request.method != "POST" or b"RATE_LIMITED" not in response.content[:4000]:
        return False
    try:
        errors = response.json().get("errors")
    except (ValueError, AttributeError):
        return False
    return isinstance(errors, list) and any(isinstance(e, dict) and e.get("type") == "RATE_LIMITED" for e in errors)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _shown(url: Any, *, path: bool = True) -> str:
    """A URL for a message: no query string (it may be long), no user info; control characters escaped."""
    parts = urlsplit(str(url))
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return printable(f"{parts.scheme}://{netloc}{parts.path if path else ''}")


def _network_text(exc: Exception) -> str:
    for kind, text in ((httpx.TimeoutException, "timed out"), (httpx.ConnectError, "cannot connect"),
                       (httpx.RemoteProtocolError, "connection closed without a response")):
        if isinstance(exc, kind):
            return text
    return "network error"


# --------------------------------------------------------------------- output and state


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".fetch-state.json")


def partial_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial")


@dataclass
class Output:
    """The export being written: its partial file, its state file and the keys already written.

    `identity` is what the fetch was asked for (source, URL, names, options; never a token). A
    state file left by another fetch of the same output is refused rather than continued.
    """

    path: Path
    identity: dict[str, Any]
    keys: Callable[[Any], Iterable[Any]]
    cursor: dict[str, Any] = field(default_factory=dict)
    seen: set[Any] = field(default_factory=set)
    resumed: bool = False
    items: int = 0
    pages: int = 0
    _offset: int = 0

    @classmethod
    def open(cls, path: str | Path, identity: dict[str, Any], keys: Callable[[Any], Iterable[Any]]) -> "Output":
        out = cls(Path(path), identity, keys)
        state, partial = state_path(out.path), partial_path(out.path)
        if not out.path.parent.is_dir():
            raise UsageError(f"-o {path}: the folder {out.path.parent} does not exist")
        if out.path.is_dir():
            raise UsageError(f"-o {path}: is a folder; give a file name")
        if state.exists():
            doc = _load_state(state)
            if doc.get("identity") != identity:
                raise UsageError(
                    f"{state} holds an unfinished fetch with other options ({_differences(doc.get('identity'), identity)}); "
                    "rerun it with the same options to finish it, or delete the state file to start over"
                )
            out._offset = int(doc["offset"])
            out.cursor = dict(doc["cursor"])
            out.resumed = True
            out._rebuild(partial)
        else:
            partial.unlink(missing_ok=True)
        try:
            with open(partial, "ab"):
                pass
        except OSError as exc:
            raise UsageError(f"-o {path}: cannot write {partial}: {exc.strerror}") from None
        return out

    def _rebuild(self, partial: Path) -> None:
        try:
            with open(partial, "r+b") as handle:
                handle.truncate(self._offset)  # a page written but not recorded in the state is dropped
                handle.seek(0)
                for line in handle:
                    value = json.loads(line)
                    keys = list(self.keys(value))
                    self.seen.update(keys)
                    self.items += len(keys)
                    self.pages += 1
        except FileNotFoundError:
            raise UsageError(f"{state_path(self.path)}: its partial file {partial} is gone; delete the state file to start over") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"{partial}: unreadable ({exc}); delete it and {state_path(self.path)} to start over") from None

    def fresh(self, items: Iterable[Any], key: Callable[[Any], Any]) -> list[Any]:
        """The items whose key was not written yet, each once."""
        out = []
        for item in items:
            k = key(item)
            if k not in self.seen:
                self.seen.add(k)
                out.append(item)
        return out

    def append(self, value: Any, cursor: dict[str, Any]) -> None:
        """Write one page, durably, then record it and the cursor that follows it."""
        line = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            with open(partial_path(self.path), "r+b") as handle:
                handle.seek(self._offset)
                handle.write(line)
                handle.truncate()
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise FetchStopped(f"cannot write {partial_path(self.path)}: {exc.strerror}; "
                               "free some space and rerun the same command to continue") from None
        self._offset += len(line)
        self.pages += 1
        self.items += len(list(self.keys(value)))
        self.save(cursor)

    def save(self, cursor: dict[str, Any]) -> None:
        self.cursor = dict(cursor)
        doc = {"version": STATE_VERSION, "identity": self.identity, "offset": self._offset, "cursor": self.cursor}
        state = state_path(self.path)
        temp = state.with_name(state.name + ".tmp")
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, state)

    def finish(self, empty: Any) -> None:
        """Move the complete export into place (an empty export is `empty`, so it stays valid JSON)."""
        partial = partial_path(self.path)
        if self._offset == 0:
            partial.write_text(json.dumps(empty) + "\n", encoding="utf-8")
        state_path(self.path).unlink(missing_ok=True)  # killed right after this, a rerun starts over: safe
        os.replace(partial, self.path)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable state file ({exc}); delete it to start over") from None
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION or not {"offset", "cursor"} <= set(doc):
        raise UsageError(f"{path}: not a state file of this version of backfill; delete it to start over")
    return doc


def _differences(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "unknown"
    names = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in names)


# --------------------------------------------------------------------- the result


@dataclass
class FetchResult:
    output: Path
    stats: Stats
    resumed: bool = False
    gaps: list[str] = field(default_factory=list)  # history the server no longer has (reported, not an error)
    shortfalls: list[str] = field(default_factory=list)  # fewer items than the API's totals (an error)
    notes: list[str] = field(default_factory=list)

    def summary(self, clock: Callable[[], float] = time.time) -> str:
        s = self.stats
        lines = [
            f"Wrote {s.items} items in {s.pages} pages to {self.output}"
            f"{' (resumed)' if self.resumed else ''}: {s.requests} requests in {duration_text(clock() - s.started)}, "
            f"{duration_text(s.waited)} waiting on rate limits ({s.rate_limited} waits), {s.retries} retries",
        ]
        lines += [f"note: {printable(n, 2000)}" for n in self.notes]
        lines += [f"gap: {printable(g, 2000)}" for g in self.gaps]
        lines += [f"incomplete: {printable(g, 2000)}" for g in self.shortfalls]
        if not self.gaps and not self.shortfalls:
            lines.append("Complete: every count matches the API's totals and no history is missing.")
        return "\n".join(lines)

    def check(self) -> None:
        if self.shortfalls:
            raise FetchIncomplete(
                f"{len(self.shortfalls)} counts fell short of the API's totals (see 'incomplete:' above); "
                f"the file {self.output} is written; rerun the fetch to try again"
            )


class Fetch:
    """One run of a fetch: the output, the HTTP session, the statistics; what a source module uses."""

    def __init__(self, output: Output, http: Http, progress: Progress | None, clock: Callable[[], float]):
        self.output = output
        self.http = http
        self.progress = progress
        self.clock = clock
        self.result = FetchResult(output.path, http.stats, resumed=output.resumed)
        http.stats.started = clock()
        http.stats.items, http.stats.pages = output.items, output.pages
        if progress:
            progress.start(output.items, output.pages)

    @property
    def cursor(self) -> dict[str, Any]:
        return self.output.cursor

    def page(self, value: Any, cursor: dict[str, Any]) -> None:
        before = self.output.items
        self.output.append(value, cursor)
        self.http.stats.items, self.http.stats.pages = self.output.items, self.output.pages
        if self.progress:
            self.progress.page(self.output.items - before)

    def note(self, text: str) -> None:
        self.result.notes.append(text)
        if self.progress:
            self.progress.note(f"note: {printable(text, 2000)}")


def run_fetch(
    source: Callable[[Fetch], Any],
    *,
    output: str | Path,
    identity: dict[str, Any],
    keys: Callable[[Any], Iterable[Any]],
    empty: Any,
    http: Http,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.time,
) -> FetchResult:
    """Open (or resume) the output, let `source` fetch page after page into it, move it into place."""
    out = Output.open(output, identity, keys)
    fetch = Fetch(out, http, progress, clock)
    try:
        source(fetch)
        record.remove(out.path)
        out.finish(empty)
    finally:
        http.close()
        if progress:
            progress.close()
    _record(fetch.result, identity)
    return fetch.result


def _record(result: FetchResult, identity: dict[str, Any]) -> None:
    """Keep what the completeness checks found beside the export, for the preview report."""
    try:
        record.write(result.output, {"source": identity.get("source"), "identity": identity,
                                     "shortfalls": list(result.shortfalls), "gaps": list(result.gaps)})
    except OSError as exc:
        result.notes.append(f"cannot write {record.record_path(result.output)} ({exc.strerror}): the preview report "
                            "will judge the export by its page sizes")


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

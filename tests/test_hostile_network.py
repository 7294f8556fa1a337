"""The client against servers and proxies that misbehave on a real socket (127.0.0.1 only)."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterator

import pytest

from backfill import client as api
from backfill.client import EventsClient, check_base_url, check_proxy_environment, proxy_for
from backfill.errors import UsageError
from hostile import HostileServer, Request, answer, drip, json_answer

KEY = "k3y/SECRET+0123456789"
BODY = '{"events":[{"type":"event-deploy","entityId":"app-1"}]}'
CREATED = json.dumps({"success": [{"id": "s1"}], "failures": []}).encode()


def post(url: str, *, timeout: float = 5.0, environ: dict[str, str] | None = None) -> api.Outcome:
    client = EventsClient(url, KEY, timeout=timeout, environ=environ or {})
    try:
        return client.post(BODY)
    finally:
        client.close()


# --------------------------------------------------------------------- slow and huge answers


def test_an_answer_dripped_byte_by_byte_is_cut_off_at_the_timeout() -> None:
    def slow(request: Request) -> Iterator[bytes]:
        whole = answer(201, CREATED, {"Content-Type": "application/json"})
        head, _, body = whole.partition(b"\r\n\r\n")
        yield head + b"\r\n\r\n"
        yield from drip(body, 0.3)

    with HostileServer(slow) as server:
        started = time.monotonic()
        outcome = post(server.url, timeout=1.5)
        took = time.monotonic() - started
    assert outcome.kind == api.UNCERTAIN
    assert "within --timeout 1.5 s" in outcome.detail
    assert took < 4.5


def test_headers_dripped_byte_by_byte_are_cut_off_at_the_timeout() -> None:
    with HostileServer(lambda request: drip(answer(201, CREATED), 0.3)) as server:
        started = time.monotonic()
        outcome = post(server.url, timeout=1.0)
        took = time.monotonic() - started
    assert outcome.kind == api.UNCERTAIN and took < 4.5


def test_a_gigabyte_answer_is_read_only_to_the_cap() -> None:
    def huge(request: Request) -> Iterator[bytes]:
        yield b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        yield b'{"success": ['
        for _ in range(1_000_000_000 // 65536):
            yield b" " * 65536

    with HostileServer(huge) as server:
        outcome = post(server.url, timeout=20)
    assert outcome.kind == api.UNCERTAIN and "too large" in outcome.detail


def test_a_gzip_bomb_is_decoded_only_to_the_cap() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    bomb = b"".join(packer.compress(block) for _ in range(1024)) + packer.flush()  # 1 GB in about 1 MB

    def gzipped(request: Request) -> bytes:
        return answer(201, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})

    with HostileServer(gzipped) as server:
        outcome = post(server.url, timeout=20)
    assert outcome.kind == api.UNCERTAIN and "too large" in outcome.detail


def test_a_gzipped_201_within_the_cap_is_read() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    body = packer.compress(CREATED) + packer.flush()
    with HostileServer(lambda r: answer(201, body, {"Content-Encoding": "gzip"})) as server:
        outcome = post(server.url)
    assert outcome.kind == api.CREATED and outcome.success == [{"id": "s1"}]


# --------------------------------------------------------------------- echoed keys


@pytest.mark.parametrize("status", [400, 401, 403, 404, 500, 503])
@pytest.mark.parametrize("style", ["json", "json-escaped", "html", "url-encoded"])
def test_a_server_that_echoes_the_key_never_gets_it_into_an_outcome(status: int, style: str) -> None:
    def echo(request: Request) -> bytes:
        key = request.headers["x-api-key"]
        if style == "json":
            return json_answer(status, json.dumps({"message": f"bad key {key}", "errors": [{"msg": key, "path": "events[0]"}]}))
        if style == "json-escaped":
            return json_answer(status, json.dumps({"message": f"bad key {key}"}).replace("/", "\\/"))
        if style == "url-encoded":
            return answer(status, f"denied: ?key={key.replace('/', '%2F').replace('+', '%2B')}".encode())
        return answer(status, f"<html><body>WAF blocked request with x-api-key: {key}</body></html>".encode())

    with HostileServer(echo) as server:
        outcome = post(server.url)
    assert outcome.status == status
    assert "SECRET" not in repr(outcome), outcome
    assert "[redacted]" in repr(outcome)


# --------------------------------------------------------------------- TLS


def test_a_self_signed_certificate_is_named_and_not_retried() -> None:
    with HostileServer(lambda r: answer(201, CREATED), tls=True) as server:
        outcome = post(server.url)
        assert server.requests == []
    assert outcome.kind == api.TLS
    assert "certificate" in outcome.detail and "127.0.0.1" in outcome.detail


# --------------------------------------------------------------------- proxies


def test_a_proxy_refusing_connect_means_nothing_was_sent_and_is_named() -> None:
    with HostileServer(lambda r: answer(403, b"CONNECT denied by policy")) as proxy:
        environ = {"HTTPS_PROXY": proxy.url}
        outcome = post("https://api.devgrid.invalid", environ=environ)
        assert [r.method for r in proxy.requests] == ["CONNECT"]
        assert all("x-api-key" not in r.headers for r in proxy.requests)
        named = proxy.url
    assert outcome.kind == api.NOT_SENT
    assert named in outcome.detail


def test_proxy_credentials_are_never_shown() -> None:
    with HostileServer(lambda r: answer(407, b"")) as proxy:
        url = proxy.url.replace("http://", "http://me:pa55word@")
        outcome = post("https://api.devgrid.invalid", environ={"HTTPS_PROXY": url})
    assert outcome.kind == api.NOT_SENT
    assert "pa55word" not in outcome.detail and "[credentials]@" in outcome.detail


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"])
def test_loopback_requests_never_go_through_a_proxy(variable: str) -> None:
    with HostileServer(lambda r: answer(201, CREATED)) as proxy, HostileServer(lambda r: answer(201, CREATED)) as server:
        outcome = post(server.url, environ={variable: proxy.url})
        assert proxy.requests == [] and len(server.requests) == 1
    assert outcome.kind == api.CREATED


@pytest.mark.parametrize(
    ("url", "environ", "expected"),
    [
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.example.com", {"https_proxy": "p:3128"}, "http://p:3128"),
        ("https://api.example.com", {"ALL_PROXY": "http://p:3128"}, "http://p:3128"),
        ("https://api.example.com", {"HTTP_PROXY": "http://p:3128"}, None),  # not for https
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "example.com"}, None),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:3128", "no_proxy": "*"}, None),
        ("https://127.0.0.1:8443", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://localhost:8443", {"HTTPS_PROXY": "http://p:3128"}, None),
        ("https://[::1]:8443", {"ALL_PROXY": "http://p:3128"}, None),
        ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://p:3128", "ALL_PROXY": "http://p:3128"}, None),
    ],
)
def test_proxy_choice(url: str, environ: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url + "/events", environ) == expected


@pytest.mark.parametrize(
    "environ",
    [{"ALL_PROXY": "socks5://127.0.0.1:1080"}, {"https_proxy": "socks5h://p:1"}, {"HTTP_PROXY": "http://p:abc"}],
)
def test_proxies_the_client_cannot_use_are_usage_errors(environ: dict[str, str]) -> None:
    with pytest.raises(UsageError, match="proxy"):
        check_proxy_environment(environ)


# --------------------------------------------------------------------- base URLs


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:abc",
        "http://[::1",
        "http://127.0.0.1:65545",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:0",
        "http://127.0.0.1:",
        "https://user:pass@api.example.com",
        "https://token@api.example.com",
        "https://api.example.com/?key=1",
        "https://api.example.com/#x",
    ],
)
def test_bad_base_urls_are_refused_before_anything(url: str) -> None:
    with pytest.raises(UsageError) as info:
        check_base_url(url)
    assert "pass" not in str(info.value) and "token" not in str(info.value)

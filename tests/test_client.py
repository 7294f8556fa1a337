"""backfill.client: one POST /events and its outcome, over respx (no network)."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import respx

from backfill import client as api
from backfill.client import (
    EventsClient,
    check_api_key,
    check_base_url,
    classify,
    error_indices,
    parse_retry_after,
)
from backfill.errors import AuthError, UsageError

BASE = "http://127.0.0.1:9"
KEY = "k3y-SECRET-0123456789"
BODY = '{"events":[{"type":"event-deploy","entityId":"app-1"}]}'


def response(status: int, payload: object = None, *, headers: dict[str, str] | None = None, text: str | None = None):
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=payload, headers=headers)


# --------------------------------------------------------------------- the request


@respx.mock(assert_all_called=True)
def test_post_sends_the_body_with_the_key_only_in_the_x_api_key_header(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"{BASE}/events").mock(return_value=response(201, {"success": [], "failures": []}))
    with httpx.Client() as http:
        outcome = EventsClient(BASE + "/", KEY, client=http).post(BODY)
    assert outcome.kind == api.CREATED
    request = route.calls.last.request
    assert request.url == f"{BASE}/events"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["content-type"] == "application/json"
    assert request.content == BODY.encode()
    # Nowhere else: not in the URL, not in any other header, not in the body.
    assert KEY not in str(request.url)
    assert all(KEY not in value for name, value in request.headers.items() if name != "x-api-key")
    assert KEY.encode() not in request.content


def test_the_client_and_its_outcomes_do_not_show_the_key() -> None:
    transport = httpx.MockTransport(lambda request: response(401, {"message": "Unauthorized: invalid API key"}))
    with httpx.Client(transport=transport) as http:
        client = EventsClient(BASE, KEY, client=http)
        outcome = client.post(BODY)
    assert outcome.kind == api.UNAUTHORIZED
    assert KEY not in repr(client) and KEY not in str(client)
    assert KEY not in repr(outcome)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (httpx.ConnectError("refused"), api.NOT_SENT),
        (httpx.ConnectTimeout("connect timeout"), api.NOT_SENT),
        (httpx.PoolTimeout("pool"), api.NOT_SENT),
        (httpx.ReadTimeout("read timeout"), api.UNCERTAIN),
        (httpx.WriteTimeout("write timeout"), api.UNCERTAIN),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), api.UNCERTAIN),
        (httpx.ReadError("Connection reset by peer"), api.UNCERTAIN),
        (httpx.WriteError("Broken pipe"), api.UNCERTAIN),
        (httpx.LocalProtocolError("Illegal header value"), api.NOT_SENT),
    ],
)
def test_network_errors_say_whether_the_server_may_have_the_events(error: Exception, kind: str) -> None:
    with respx.mock:
        respx.post(f"{BASE}/events").mock(side_effect=error)
        with httpx.Client() as http:
            outcome = EventsClient(BASE, KEY, client=http).post(BODY)
    assert outcome.kind == kind
    assert outcome.status is None
    assert outcome.detail and outcome.label == outcome.detail


def test_anything_else_raised_by_the_transport_propagates() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise KeyboardInterrupt

    with httpx.Client(transport=httpx.MockTransport(handler)) as http, pytest.raises(KeyboardInterrupt):
        EventsClient(BASE, KEY, client=http).post(BODY)


@pytest.mark.parametrize("key", ["two\nlines-SECRET", "with space-SECRET", "tab\tbed-SECRET", "clé-SECRET", "nul\x00-SECRET", ""])
def test_a_key_that_cannot_go_in_a_header_is_refused_without_quoting_it(key: str) -> None:
    with pytest.raises(AuthError) as info:
        EventsClient(BASE, key)
    assert "SECRET" not in str(info.value)
    assert "x-api-key" in str(info.value)


def test_check_api_key_accepts_visible_ascii() -> None:
    assert check_api_key("abc-DEF_123.~!") == "abc-DEF_123.~!"


def test_a_real_connection_refused_is_not_sent() -> None:
    # Port 9 on loopback (discard) is closed on a test machine; nothing leaves 127.0.0.1.
    with httpx.Client(timeout=2.0) as http:
        outcome = EventsClient("http://127.0.0.1:9", KEY, client=http).post(BODY)
    assert outcome.kind == api.NOT_SENT


# --------------------------------------------------------------------- classification


def test_201_success_and_failures() -> None:
    payload = {
        "success": [{"id": "s1", "type": "event-deploy"}],
        "failures": [{"event": {"type": "event-deploy", "entityId": "nope"}, "reason": "Entity not found"}],
    }
    outcome = classify(response(201, payload))
    assert (outcome.kind, outcome.status) == (api.CREATED, 201)
    assert outcome.success == payload["success"]
    assert outcome.failures == payload["failures"]


def test_201_without_failures_key() -> None:
    outcome = classify(response(201, {"success": [{"id": "a"}]}))
    assert outcome.kind == api.CREATED and outcome.failures == []


@pytest.mark.parametrize("text", ["", "<html>created</html>", "[1, 2]"])
def test_a_201_that_is_not_the_documented_json_is_uncertain(text: str) -> None:
    assert classify(response(201, text=text)).kind == api.UNCERTAIN


def test_400_with_errors_keeps_them_and_describes_them() -> None:
    errors = [
        {"type": "field", "msg": "Invalid value", "path": "events[3].timestamp", "location": "body"},
        {"type": "field", "msg": "Unknown attribute", "path": "events[0].attributes.x", "location": "body"},
    ]
    outcome = classify(response(400, {"errors": errors}))
    assert (outcome.kind, outcome.status) == (api.INVALID, 400)
    assert outcome.errors == errors
    assert "events[3].timestamp: Invalid value" in outcome.detail
    assert "events[0].attributes.x: Unknown attribute" in outcome.detail


def test_400_errors_without_paths_still_say_what_is_wrong() -> None:
    outcome = classify(response(400, {"errors": [{"msg": "Entity not found"}]}))
    assert outcome.kind == api.INVALID
    assert outcome.detail == "Entity not found"
    assert error_indices(outcome.errors, 5) == {}


@pytest.mark.parametrize(
    ("payload", "text", "detail"),
    [
        ({"message": "Invalid event type"}, None, "Invalid event type"),
        ({"errors": "not a list", "message": "bad"}, None, "bad"),
        (None, "plain text problem\nsecond line", "plain text problem second line"),
        (None, "", "Bad Request"),
    ],
)
def test_400_with_only_a_message(payload: object, text: str | None, detail: str) -> None:
    outcome = classify(response(400, payload, text=text) if text is not None else response(400, payload))
    assert outcome.kind == api.INVALID
    assert outcome.errors == []
    assert outcome.detail == detail


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (413, api.TOO_LARGE),
        (429, api.RATE_LIMITED),
        (401, api.UNAUTHORIZED),
        (403, api.UNAUTHORIZED),
        (500, api.UNCERTAIN),
        (502, api.UNCERTAIN),
        (503, api.UNCERTAIN),
        (504, api.UNCERTAIN),
        (408, api.UNCERTAIN),
        (404, api.FATAL),
        (405, api.FATAL),
        (302, api.FATAL),
    ],
)
def test_status_codes(status: int, kind: str) -> None:
    outcome = classify(response(status, {"message": f"answer {status}"}))
    assert (outcome.kind, outcome.status) == (kind, status)
    assert outcome.detail == f"answer {status}"
    assert outcome.label == str(status)


def test_429_retry_after_seconds_date_and_missing() -> None:
    assert classify(response(429, {"message": "x"}, headers={"Retry-After": "7"})).retry_after == 7.0
    assert classify(response(429, {"message": "x"}, headers={"Retry-After": "0.25"})).retry_after == 0.25
    assert classify(response(429, {"message": "x"})).retry_after is None
    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    after = classify(response(429, {"message": "x"}, headers={"Retry-After": date})).retry_after
    assert after is not None and 118 <= after <= 120


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("0.5", 0.5),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0),  # now = 40
        ("Thu, 01 Jan 1970 00:01:40 -0000", 60.0),  # UTC without a zone name, not local time
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),  # in the past
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None, far_from_utc: None) -> None:
    assert parse_retry_after(value, now=40.0) == expected


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone that is not UTC, so that reading a date as local time shows."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --------------------------------------------------------------------- error paths


@pytest.mark.parametrize(
    ("errors", "n", "expected"),
    [
        ([{"path": "events[3].timestamp", "msg": "Invalid timestamp"}], 5, {3: "events[3].timestamp: Invalid timestamp"}),
        (
            [{"path": "events[0].type", "msg": "a"}, {"path": "events[0].entityId", "msg": "b"}],
            2,
            {0: "events[0].type: a; events[0].entityId: b"},
        ),
        ([{"path": "events[1]", "msg": "Event must be an object"}], 2, {1: "events[1]: Event must be an object"}),
        ([{"path": "events[9].type", "msg": "x"}], 3, {}),  # beyond the batch
        ([{"path": "events", "msg": "x"}, {"path": "body", "msg": "y"}, {"msg": "z"}], 3, {}),
        (["not a dict", None, {"path": "events[2].type"}], 3, {2: "events[2].type: invalid"}),
    ],
)
def test_error_indices(errors: list, n: int, expected: dict) -> None:
    assert error_indices(errors, n) == expected


# --------------------------------------------------------------------- base URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://prod.api.devgrid.io", "https://prod.api.devgrid.io"),
        ("https://proxy.example.com:8443/devgrid/", "https://proxy.example.com:8443/devgrid"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://127.9.9.9:1/", "http://127.9.9.9:1"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_base_urls_accepted(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://api.dev.devgrid.io",
        "http://10.0.0.5:8080",
        "http://0.0.0.0:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "ftp://127.0.0.1",
        "api.dev.devgrid.io",
        "https://",
    ],
)
def test_base_urls_refused(url: str) -> None:
    with pytest.raises(UsageError):
        check_base_url(url)


def test_canonical_is_key_order_independent() -> None:
    assert api.canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == api.canonical(json.loads('{"a":[1,{"c":3,"d":2}],"b":1}'))

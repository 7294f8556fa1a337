from __future__ import annotations

import argparse
import calendar
import contextlib
import json
import re
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backfill.events import BLUEPRINT_ID
from backfill.sandbox import Sandbox, SandboxConfig, add_arguments, config_from_args, validate_events
from backfill.throttle import DEFAULT_LIMITS, RateLimit

SECOND_PRECISION = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

DOC_EVENT: dict[str, Any] = {
    "type": "event-deploy",
    "timestamp": "2025-10-29T18:30:00Z",
    "entityId": "app-123",
    "attributes": {
        "env": "production",
        "status": "success",
        "build_id": "build-456",
        "build_commit_sha": "a1b2c3d4e5f6789",
        "build_url": "https://ci.example.com/builds/456",
        "description": "Deploy v2.3.1 to production",
        "initiator": "[email protected]",
        "change_id": "CHG0012345",
        "change_url": "https://servicenow.example.com/change/CHG0012345",
        "change_title": "Production deployment v2.3.1",
        "change_author": "[email protected]",
        "change_approver": "[email protected]",
        "change_window_start": "2025-10-29T18:00:00Z",
        "change_window_end": "2025-10-29T20:00:00Z",
        "deployment_start_time": "2025-10-29T18:25:43Z",
    },
}


def epoch(timestamp: str) -> float:
    return calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ"))


def deploy(i: int = 0, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "event-deploy",
        "timestamp": f"2025-10-29T10:00:{i % 60:02d}Z",
        "entityId": "app-123",
        "attributes": {"env": "production", "status": "success", "build_id": f"b{i}"},
    }
    event.update(changes)
    return event


Serve = Callable[..., tuple[Sandbox, httpx.Client]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a sandbox on an ephemeral port with the given config, and a keep-alive client for it."""
    with contextlib.ExitStack() as stack:

        def start(**config: Any) -> tuple[Sandbox, httpx.Client]:
            sandbox = stack.enter_context(Sandbox(SandboxConfig(**config)))
            client = stack.enter_context(
                httpx.Client(base_url=sandbox.url, headers={"x-api-key": config.get("api_key", "sandbox")}, timeout=5)
            )
            return sandbox, client

        yield start


def post(client: httpx.Client, *events: Any) -> httpx.Response:
    return client.post("/events", json={"events": list(events)})


def test_201_has_the_documented_fields(serve: Serve) -> None:
    sandbox, client = serve()
    before = time.time()
    response = post(client, DOC_EVENT)
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["failures"] == []
    [stored] = body["success"]
    assert set(stored) == {"id", "type", "entityId", "blueprintId", "timestamp", "accountId", "attributes", "createdAt"}
    assert uuid.UUID(stored["id"]).version == 4
    assert stored["type"] == "event-deploy"
    assert stored["entityId"] == "app-123"
    assert stored["blueprintId"] == BLUEPRINT_ID
    assert stored["timestamp"] == "2025-10-29T18:30:00Z"
    assert stored["accountId"] == "sandbox-account"
    assert stored["attributes"] == DOC_EVENT["attributes"]
    assert SECOND_PRECISION.fullmatch(stored["createdAt"])
    assert before - 1 <= epoch(stored["createdAt"]) <= time.time() + 1
    assert sandbox.stored == [stored]


def test_omitted_timestamp_is_the_time_received(serve: Serve) -> None:
    _, client = serve()
    event = {"type": "event-deploy", "entityId": "my-app", "attributes": {"env": "production"}}
    before = time.time()
    [stored] = post(client, event).json()["success"]
    assert SECOND_PRECISION.fullmatch(stored["timestamp"])
    assert before - 1 <= epoch(stored["timestamp"]) <= time.time() + 1


def test_keep_alive_reuses_one_connection(serve: Serve) -> None:
    _, client = serve()
    addresses = {post(client, deploy(i)).extensions["network_stream"].get_extra_info("client_addr") for i in range(5)}
    assert len(addresses) == 1


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"x-api-key": ""}])
def test_401_for_a_missing_or_wrong_key_and_not_counted(serve: Serve, headers: dict[str, str]) -> None:
    sandbox, client = serve(limits=(RateLimit(1, 60.0),))
    with httpx.Client(base_url=sandbox.url, timeout=5) as anonymous:
        for _ in range(3):
            response = anonymous.post("/events", json={"events": [deploy()]}, headers=headers)
            assert response.status_code == 401
            assert set(response.json()) == {"message"}
    assert post(client, deploy()).status_code == 201  # the 401s used none of the 1/min
    assert sandbox.stored and len(sandbox.stored) == 1


def test_413_for_more_than_15_events(serve: Serve) -> None:
    sandbox, client = serve()
    response = post(client, *(deploy(i) for i in range(16)))
    assert response.status_code == 413
    assert "message" in response.json()
    assert post(client, *(deploy(i) for i in range(15))).status_code == 201
    assert len(sandbox.stored) == 15


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"events": [', "application/json"),
        (b"", "application/json"),
        (b'{"events": [{"type": "event-deploy", "x": NaN}]}', "application/json"),
        (b"\xff\xfe", "application/json"),
        (json.dumps({"events": [deploy()]}).encode(), "text/plain"),
        (json.dumps({"events": [deploy()]}).encode(), None),
        (b'{"events": []}', "application/json"),
        (b"{}", "application/json"),
        (b'{"events": null}', "application/json"),
        (b'{"events": {"type": "event-deploy"}}', "application/json"),
        (b"[]", "application/json"),
    ],
)
def test_400_for_a_malformed_request(serve: Serve, content: bytes, content_type: str | None) -> None:
    sandbox, client = serve()
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/events", content=content, headers=headers)
    assert response.status_code == 400
    assert isinstance(response.json()["message"], str)
    assert sandbox.stored == []


def test_json_with_charset_is_accepted(serve: Serve) -> None:
    _, client = serve()
    content = json.dumps({"events": [deploy()]}).encode()
    response = client.post("/events", content=content, headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("event", "path", "fragment"),
    [
        (deploy(type="event-deploi"), "events[0].type", "Invalid event type"),
        ({"entityId": "app-123"}, "events[0].type", "required"),
        (deploy(timestamp="29/10/2025 18:30"), "events[0].timestamp", "ISO 8601"),
        (deploy(timestamp="2025-10-29T18:30:00"), "events[0].timestamp", "no time zone"),
        (deploy(timestamp="2025-10-29T18:30:00+01:00"), "events[0].timestamp", "not in UTC"),
        (deploy(timestamp="2025-02-30T18:30:00Z"), "events[0].timestamp", "ISO 8601"),
        (deploy(timestamp=1761762600), "events[0].timestamp", "ISO 8601"),
        (deploy(attributes={"Env": "production"}), "events[0].attributes.Env", "did you mean 'env'"),
        (deploy(attributes={"status": "ok"}), "events[0].attributes.status", "success or failed"),
        (deploy(attributes={"status": "Success"}), "events[0].attributes.status", "Invalid status"),
        (deploy(attributes={"change_window_start": "tomorrow"}), "events[0].attributes.change_window_start", "8601"),
        (deploy(attributes={"change_window_end": "2025-10-29T25:00Z"}), "events[0].attributes.change_window_end", "8601"),
        (deploy(attributes={"build_id": 456}), "events[0].attributes.build_id", "string"),
        (deploy(attributes=["env"]), "events[0].attributes", "object"),
        (deploy(entityId=123), "events[0].entityId", "string"),
        (deploy(entityID="app-123"), "events[0].entityID", "Unknown field"),
        ("event-deploy", "events[0]", "object"),
    ],
)
def test_400_field_errors(serve: Serve, event: Any, path: str, fragment: str) -> None:
    sandbox, client = serve()
    response = post(client, event)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["type"] == "field"
    assert error["location"] == "body"
    assert error["path"] == path
    assert fragment in error["msg"]
    assert sandbox.stored == []


def test_400_lists_every_error_and_stores_nothing(serve: Serve) -> None:
    sandbox, client = serve()
    events = [deploy(0, attributes={"Env": "prod"}), deploy(1), deploy(2, timestamp="yesterday", type="deploy")]
    response = post(client, *events)
    assert response.status_code == 400
    paths = [error["path"] for error in response.json()["errors"]]
    assert paths == ["events[0].attributes.Env", "events[2].type", "events[2].timestamp"]
    assert sandbox.stored == []
    assert sandbox.stats()["events_stored"] == 0


@pytest.mark.parametrize(
    "timestamp",
    ["2025-10-29T18:30:00Z", "2025-10-29T18:30:00.123Z", "2025-10-29T18:30:00.123456Z", "2025-10-29T18:30:00+00:00"],
)
def test_utc_timestamps_are_accepted(timestamp: str) -> None:
    assert validate_events([deploy(timestamp=timestamp)]) == []


@pytest.mark.parametrize(
    "value",
    [
        *("2025-10-29T18:00:00Z", "2025-10-29T18:00Z", "2025-10-29T18:00:00.5+02:00"),
        *("2025-10-29T18:00:00-0500", "2025-10-29T18:00:00"),
    ],
)
def test_date_attributes_accept_any_iso_8601_date_time(value: str) -> None:
    assert validate_events([deploy(attributes={"change_window_end": value})]) == []


def test_unknown_entities_are_partial_failures_in_request_order(serve: Serve) -> None:
    sandbox, client = serve(entities=frozenset({"app-123", "app-456"}))
    unknown = deploy(1, entityId="invalid-id")
    no_entity = {"type": "event-deploy", "attributes": {"env": "staging"}}
    events = [deploy(0), unknown, deploy(2, entityId="app-456"), no_entity, deploy(4)]
    response = post(client, *events)
    assert response.status_code == 201
    body = response.json()
    assert [s["attributes"].get("build_id") for s in body["success"]] == ["b0", "b2", "b4"]
    assert [s["entityId"] for s in body["success"]] == ["app-123", "app-456", "app-123"]
    assert body["failures"] == [
        {"event": unknown, "reason": "Entity not found"},
        {"event": no_entity, "reason": "Entity not found"},
    ]
    assert len(sandbox.stored) == 3
    assert sandbox.stats()["events_failed"] == 2


def test_rate_limit_429_with_retry_after_then_recovers(serve: Serve) -> None:
    sandbox, client = serve(limits=(RateLimit(3, 0.5),))
    assert [post(client, deploy(i)).status_code for i in range(3)] == [201, 201, 201]
    refused = post(client, deploy(3))
    assert refused.status_code == 429
    assert refused.json() == {"message": "Too Many Requests"}
    retry_after = float(refused.headers["Retry-After"])
    assert 0 < retry_after <= 0.5
    assert post(client, deploy(4)).status_code == 429  # refusals are not counted: still waiting the same
    time.sleep(retry_after + 0.02)
    assert post(client, deploy(5)).status_code == 201
    stats = sandbox.stats()
    assert stats["rate_limited"] == 2
    assert stats["by_status"] == {"201": 4, "429": 2}
    assert len(sandbox.stored) == 4


def test_retry_after_is_whole_seconds_for_long_windows(serve: Serve) -> None:
    _, client = serve(limits=(RateLimit(1, 60.0), RateLimit(5, 3600.0)))
    assert post(client, deploy()).status_code == 201
    refused = post(client, deploy())
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] in ("59", "60")


def test_no_retry_after(serve: Serve) -> None:
    _, client = serve(limits=(RateLimit(1, 60.0),), retry_after=False)
    post(client, deploy())
    refused = post(client, deploy())
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers


def test_fail_rate_1_answers_500_and_stores_nothing(serve: Serve, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    sandbox, client = serve(fail_rate=1.0, record=record)
    response = post(client, deploy())
    assert response.status_code == 500
    assert "message" in response.json()
    assert sandbox.stored == []
    assert record.read_text() == ""


def test_drop_rate_1_stores_then_hangs_up(serve: Serve, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    sandbox, client = serve(drop_rate=1.0, record=record)
    with pytest.raises(httpx.TransportError):
        post(client, deploy(7))
    [stored] = sandbox.stored
    assert stored["attributes"]["build_id"] == "b7"
    [line] = record.read_text().splitlines()
    assert json.loads(line)["id"] == stored["id"]
    stats = sandbox.stats()
    assert (stats["dropped"], stats["events_stored"], stats["by_status"]) == (1, 1, {})


def test_faults_are_repeatable_with_a_seed(serve: Serve) -> None:
    outcomes = []
    for _ in range(2):
        _, client = serve(fail_rate=0.5, seed=42)
        outcomes.append([post(client, deploy(i)).status_code for i in range(12)])
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {201, 500}


def test_latency_delays_the_answer(serve: Serve) -> None:
    _, client = serve(latency=0.2)
    started = time.monotonic()
    assert post(client, deploy()).status_code == 201
    assert time.monotonic() - started >= 0.2


def test_record_file_has_one_line_per_stored_event(serve: Serve, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    record.write_text('{"from": "an earlier run"}\n')
    sandbox, client = serve(record=record, entities=frozenset({"app-123"}))
    post(client, deploy(0), deploy(1, entityId="nope"))
    post(client, deploy(2))
    post(client, deploy(3, type="bad"))
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines[0] == {"from": "an earlier run"}  # appended, not truncated
    recorded = lines[1:]
    assert [{k: v for k, v in line.items() if k != "receivedAt"} for line in recorded] == sandbox.stored
    assert [line["attributes"]["build_id"] for line in recorded] == ["b0", "b2"]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", line["receivedAt"]) for line in recorded)


def test_stats_endpoint_counts(serve: Serve) -> None:
    sandbox, client = serve(entities=frozenset({"app-123"}), limits=(RateLimit(4, 60.0),))
    post(client, deploy(0), deploy(1, entityId="x"))  # 201: 1 stored, 1 failed
    post(client, deploy(2, type="bad"))  # 400
    client.post("/events", json={"events": [deploy()]}, headers={"x-api-key": "wrong"})  # 401
    post(client, *(deploy(i) for i in range(16)))  # 413
    post(client, deploy(3))  # 201
    post(client, deploy(4))  # 429
    stats = client.get("/_sandbox/stats").json()
    assert stats == {
        "requests": 6,
        "by_status": {"201": 2, "400": 1, "401": 1, "413": 1, "429": 1},
        "events_stored": 2,
        "events_failed": 1,
        "dropped": 0,
        "rate_limited": 1,
    }
    assert sandbox.stats() == stats


def test_unknown_paths_and_methods(serve: Serve) -> None:
    _, client = serve()
    assert client.get("/events").status_code == 405
    assert client.get("/nothing").status_code == 404
    assert client.post("/event", json={"events": [deploy()]}).status_code == 404


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_make_a_config(tmp_path: Path) -> None:
    entities = tmp_path / "entities.txt"
    entities.write_text("# our services\napp-123\n\n  app-456  # payments\n")
    args = parse(
        ["--port", "0", "--api-key", "k", "--entities", "app-789", "--entities-file", str(entities),
         "--rate-limit", "3/0.5s", "--rate-limit", "10/min", "--no-retry-after", "--fail-rate", "0.1",
         "--drop-rate", "0.05", "--latency", "0.2", "--seed", "7", "--record", str(tmp_path / "r.jsonl")]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.entities == frozenset({"app-123", "app-456", "app-789"})
    assert config.limits == (RateLimit(3, 0.5), RateLimit(10, 60.0))
    assert (config.api_key, config.port, config.retry_after) == ("k", 0, False)
    assert (config.fail_rate, config.drop_rate, config.latency, config.seed) == (0.1, 0.05, 0.2, 7)
    assert config.record == tmp_path / "r.jsonl"


def test_argument_defaults() -> None:
    config = config_from_args(parse([]))
    assert (config.host, config.port, config.api_key) == ("127.0.0.1", 8080, "sandbox")
    assert config.entities is None
    assert config.limits == DEFAULT_LIMITS
    assert config.retry_after


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate-limit", "100 per minute"], "e.g. 100/min"),
        (["--fail-rate", "2"], "between 0 and 1"),
        (["--latency", "-1"], "seconds >= 0"),
    ],
)
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def read_line(stream: Any, timeout: float) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output within {timeout} s")
    return stream.readline()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_module_runs_as_a_subprocess(tmp_path: Path, stop_signal: signal.Signals) -> None:
    record = tmp_path / "record.jsonl"
    argv = [sys.executable, "-m", "backfill.sandbox", "--port", "0", "--api-key", "k", "--record", str(record)]
    started = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            line = read_line(process.stdout, timeout=5)
            assert time.monotonic() - started < 2.0
            match = re.fullmatch(r"sandbox listening on (http://127\.0\.0\.1:\d+) \(api key: k\)\n", line)
            assert match, line
            response = httpx.post(f"{match[1]}/events", json={"events": [deploy()]}, headers={"x-api-key": "k"})
            assert response.status_code == 201
        finally:
            process.send_signal(stop_signal)
            _, err = process.communicate(timeout=5)
    assert process.returncode == 0, err
    assert "1 events stored" in err
    assert len(record.read_text().splitlines()) == 1

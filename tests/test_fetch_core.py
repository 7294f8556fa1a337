"""What every `backfill fetch` shares: rate limits, retries, redirects, bad tokens, resuming, secrets.

Driven through the GitLab source (the simplest paging); the rules live in backfill/fetch/core.py.
Rate-limit and retry waits go through an injected sleep and clock: nothing here really sleeps.
"""

from __future__ import annotations

import json

import pytest

from backfill.errors import AuthError, FetchStopped, UsageError
from backfill.fetch import gitlab
from backfill.fetch.core import Http, HttpSettings, partial_path, state_path
from e2e_helpers import Processes, wait_until
from fetch_fakes import TOKEN, FakeGitLab, FakeServer, Reply, gitlab_deployments, read_values

NOW = 1_700_000_000.0


class Clock:
    """A clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = NOW
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def run_gitlab(server, out, clock, *, page_size=10, settings=None, projects=("acme/shop",)):
    http = Http(server.url, {"PRIVATE-TOKEN": TOKEN}, settings=settings, sleep=clock.sleep, clock=clock)
    options = gitlab.GitLabOptions(server.url, tuple(projects), page_size=page_size)
    return gitlab.fetch(options, str(out), http, clock=clock)


def faults(answers):
    """A `before` hook that answers the n-th request with answers[n] when given (else the normal page)."""
    count = {"n": 0}

    def before(request):
        count["n"] += 1
        return answers.get(count["n"])

    return before


SECONDARY = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
             "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}


def test_primary_and_secondary_rate_limits_and_a_502_in_the_middle(tmp_path):
    clock = Clock()
    answers = {
        # GitHub's primary limit: 403, x-ratelimit-remaining 0, reset as epoch seconds
        2: Reply(403, {"message": "API rate limit exceeded for user ID 1."},
                 {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
                  "x-ratelimit-reset": str(int(NOW) + 30), "x-ratelimit-resource": "core"}),
        # GitHub's secondary limit: 403 with retry-after
        4: Reply(403, SECONDARY, {"retry-after": "60"}),
        # a proxy's 502, then GitLab's 429 with RateLimit-Reset
        5: Reply(502, b"<html><head><title>502 Bad Gateway</title></head></html>", {"Content-Type": "text/html"}),
        6: Reply(429, {"message": "Retry later"}, {"RateLimit-Limit": "600", "RateLimit-Remaining": "0",
                                                     "RateLimit-Reset": str(int(NOW) + 200)}),
    }
    out = tmp_path / "shop.json"
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(30)}, before=faults(answers))) as server:
        result = run_gitlab(server, out, clock)
    assert clock.slept == [31.0, 60.0, 1.0, 109.0]  # reset+1 after 30 s; 60 s; backoff 1 s; reset+1 - (now + 92 s)
    assert [len(v) for v in read_values(out)] == [10, 10, 10]
    assert result.stats.requests == 7 and result.stats.rate_limited == 3 and result.stats.retries == 1
    assert result.stats.waited == 200.0
    assert "3 min 20 s waiting on rate limits (3 waits), 1 retries" in result.summary(clock)


def test_a_budget_used_up_by_a_good_answer_waits_for_the_reset_first(tmp_path):
    clock = Clock()
    fake = FakeGitLab({"acme/shop": gitlab_deployments(20)})
    plain = fake.__call__

    def handler(request, server):
        reply = plain(request, server)
        if request.query.get("page") is None:  # the first answer spends the last request of the hour
            reply.headers.update({"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 100)})
        return reply

    with FakeServer(handler) as server:
        run_gitlab(server, tmp_path / "x.json", clock)
    assert clock.slept == [101.0]


def test_retry_after_as_an_http_date(tmp_path):
    clock = Clock()
    answers = {1: Reply(429, {"message": "Retry later"}, {"Retry-After": "Tue, 14 Nov 2023 22:13:27 GMT"})}  # NOW + 7 s
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(3)}, before=faults(answers))) as server:
        run_gitlab(server, tmp_path / "x.json", clock)
    assert clock.slept == [7.0]


def test_5xx_retried_with_backoff_then_stopped_resumably(tmp_path):
    clock = Clock()
    answers = {n: Reply(503, {"message": "503 Service Unavailable"}) for n in range(2, 20)}
    out = tmp_path / "x.json"
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(30)}, before=faults(answers))) as server:
        with pytest.raises(FetchStopped) as error:
            run_gitlab(server, out, clock, settings=HttpSettings(max_retries=3))
    assert clock.slept == [1.0, 2.0, 4.0]
    assert str(error.value) == (f"GET {server.url}/api/v4/projects/acme%2Fshop/deployments: 503 503 Service Unavailable; "
                                "gave up after 4 attempts; rerun the same command to continue")
    assert not out.exists() and state_path(out).exists() and len(read_values(partial_path(out))) == 1


def test_an_endless_rate_limit_stops(tmp_path):
    clock = Clock()
    answers = {n: Reply(429, {"message": "Retry later"}, {"Retry-After": "5"}) for n in range(1, 50)}
    with FakeServer(FakeGitLab({"acme/shop": []}, before=faults(answers))) as server:
        with pytest.raises(FetchStopped, match=r"still rate limited after 3 waits; rerun the same command later"):
            run_gitlab(server, tmp_path / "x.json", clock, settings=HttpSettings(max_rate_limit_waits=3))


@pytest.mark.parametrize("status, message", [(401, "401 Unauthorized"), (403, "403 Forbidden")])
def test_a_bad_token_stops_at_once(tmp_path, run_cli, monkeypatch, status, message):
    monkeypatch.setenv("GITLAB_TOKEN", "wrong-token")
    answers = {1: Reply(status, {"message": message})}
    out = tmp_path / "x.json"
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(3)}, before=faults(answers))) as server:
        code, stdout, err = run_cli("fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "-o", out)
    assert code == 5
    assert len(server.requests) == 1
    reason = {401: "Unauthorized", 403: "Forbidden"}[status]
    assert err.strip() == (f"Error: GET {server.url}/api/v4/projects/acme%2Fshop/deployments: {status} {reason}: {message}; "
                           "the token was refused or lacks read access (see the README for the scopes it needs)")
    assert "wrong-token" not in stdout + err


def test_a_redirect_to_another_port_is_not_followed_with_the_token(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(3)})) as other:
        redirect = lambda request, server: Reply(302, b"", {"Location": f"{other.url}{request.raw_path}?page=1"})  # noqa: E731
        with FakeServer(redirect) as server:
            code, _, err = run_cli("fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "-o", tmp_path / "x.json")
    assert other.requests == []  # nothing at all went to the other port, so neither did the token
    assert code == 6
    assert err.strip() == (f"Error: the server sent the fetch to {other.url}, another host than --url {server.url}; "
                           "the token is not sent there. If that host is right, pass it as --url")


def test_a_next_link_to_another_host_is_not_followed(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(3)})) as other:
        fake = FakeGitLab({"acme/shop": gitlab_deployments(20)}, next_page=False)
        plain = fake.__call__

        def handler(request, server):
            reply = plain(request, server)
            reply.headers["Link"] = reply.headers["Link"].replace(server.url, other.url)
            return reply

        with FakeServer(handler) as server:
            code, _, err = run_cli("fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "-o", tmp_path / "x.json",
                                   "--page-size", "10")
    assert code == 6 and other.requests == []
    assert "another host than --url" in err


def test_a_redirect_on_the_same_server_is_followed(tmp_path):
    clock = Clock()
    fake = FakeGitLab({"7": gitlab_deployments(3)})

    def handler(request, server):  # a renamed project: GitLab answers 301 to the project's id
        if "acme" in request.raw_path:
            return Reply(301, b"", {"Location": request.raw_path.replace("acme%2Fshop", "7")})
        return fake(request, server)

    with FakeServer(handler) as server:
        result = run_gitlab(server, tmp_path / "x.json", clock)
    assert result.stats.items == 3
    assert [r.raw_path for r in server.requests] == ["/api/v4/projects/acme%2Fshop/deployments", "/api/v4/projects/7/deployments"]
    assert [r.header("private-token") for r in server.requests] == [TOKEN, TOKEN]


def test_the_token_comes_from_a_file_and_is_checked(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("GITLAB_TOKEN", raising=False)
    code, _, err = run_cli("fetch", "gitlab", "--url", "https://gitlab.example.com", "--project", "1", "-o", tmp_path / "x.json")
    assert (code, err.strip()) == (5, "Error: no token: set GITLAB_TOKEN or pass --token-file FILE")
    bad = tmp_path / "token"
    bad.write_text("two words\n")
    code, _, err = run_cli("fetch", "gitlab", "--url", "https://gitlab.example.com", "--project", "1", "-o", tmp_path / "x.json",
                           "--token-file", bad)
    assert code == 5
    assert err.strip() == ("Error: the token is empty or contains spaces, line breaks or non-ASCII characters, which cannot "
                           f"be sent in the PRIVATE-TOKEN header; check --token-file {bad}")
    assert "two words" not in err


def test_a_state_file_of_another_fetch_is_refused(tmp_path):
    clock = Clock()
    out = tmp_path / "x.json"
    answers = {2: Reply(404, {"message": "404 Not Found"})}
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(30)}, before=faults(answers))) as server:
        with pytest.raises(FetchStopped):
            run_gitlab(server, out, clock)
        with pytest.raises(UsageError) as error:
            run_gitlab(server, out, clock, projects=("acme/web",))
    assert str(error.value).startswith(f"{state_path(out)} holds an unfinished fetch with other options (projects was ['acme/shop'], now ['acme/web'])")
    state = state_path(out).read_text()
    assert TOKEN not in state and TOKEN not in partial_path(out).read_text()


# --------------------------------------------------------------------- kill -9, then a rerun


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


def test_kill_9_in_the_middle_then_a_rerun_holds_every_item_once(tmp_path, procs, monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    deployments = gitlab_deployments(120)
    fake = FakeGitLab({"acme/shop": deployments})
    slow = lambda request, server: Reply(**{**fake(request, server).__dict__, "delay": 0.03})  # noqa: E731
    out = tmp_path / "shop.json"
    state = state_path(out)

    def pages_recorded() -> int:
        try:
            return sum(json.loads(state.read_text())["cursor"]["counts"].values()) // 10
        except (OSError, ValueError, KeyError):
            return 0

    with FakeServer(slow) as server:
        args = ["fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "-o", str(out), "--page-size", "10"]
        first = procs.run(args, kill_when=lambda: pages_recorded() >= 4)
        assert first.killed, str(first)
        assert not out.exists()
        before = len(server.requests)
        second = procs.run(args)
        assert second.returncode == 0, str(second)
    assert "(resumed)" in second.stdout and "Complete:" in second.stdout
    resumed_pages = [r.query.get("page") for r in server.requests[before:]]
    assert resumed_pages[0] not in (None, "1", "2", "3")  # continued after the last recorded page, not from the start
    assert [d["id"] for page in read_values(out) for d in page] == [d["id"] for d in deployments]
    assert not state.exists() and not partial_path(out).exists()
    assert TOKEN not in first.stderr + second.stderr + second.stdout + out.read_text()

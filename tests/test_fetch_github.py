"""`backfill fetch github` against a fake GitHub on 127.0.0.1: real recorded runs, jobs and deployment nodes."""

from __future__ import annotations

from collections import Counter

import pytest

from backfill.fetch import github
from backfill.fetch.core import Http
from fetch_fakes import TOKEN, FakeGitHub, FakeServer, Reply, github_deployment_nodes, github_runs, read_values

HOUR = 3600
START = 1_577_836_800  # 2020-01-01T00:00:00Z


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)


def run_ids(path):
    return [run["id"] for page in read_values(path) for run in page["workflow_runs"]]


def runs_queries(server):
    return [r for r in server.requests if r.path.endswith("/runs")]


def test_2500_runs_where_one_query_stops_at_1000_are_split_into_windows(tmp_path, run_cli):
    runs = github_runs(2500, START, HOUR)
    out = tmp_path / "runs.json"
    with FakeServer(FakeGitHub({"acme/shop": runs})) as server:
        code, stdout, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "-o", out)
    assert code == 0, err
    ids = run_ids(out)
    assert sorted(ids) == sorted(r["id"] for r in runs)  # every run, each once
    queries = runs_queries(server)
    assert queries[0].query["created"].startswith("2020-01-01T00:00:00Z..")  # the repository's creation onwards
    windows = Counter(q.query["created"] for q in queries)
    first_pages = [q for q in queries if "page" not in q.query]
    assert len(first_pages) > 3  # the whole range (2,500) was halved until each window held at most 1,000
    assert all(len(page["workflow_runs"]) <= 100 for page in read_values(out))
    assert all(count <= 11 for count in windows.values())  # no window paged past 1,000 results
    assert all(r.header("authorization") == f"Bearer {TOKEN}" for r in server.requests)
    assert all(r.header("x-github-api-version") == "2022-11-28" for r in server.requests)
    assert "Wrote 2500 items" in stdout and "Complete:" in stdout
    assert TOKEN not in stdout + err + out.read_text()


def test_more_than_1000_runs_in_one_second_is_incomplete(tmp_path, run_cli):
    runs = github_runs(1050, START, 0)
    out = tmp_path / "runs.json"
    with FakeServer(FakeGitHub({"acme/shop": runs}, created_at="2020-01-01T00:00:00Z")) as server:
        code, stdout, _ = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "-o", out,
                                  "--since", "2020-01-01")
    assert code == 8
    assert ("incomplete: acme/shop: 1000 runs fetched created 2020-01-01T00:00:00Z..2020-01-01T00:00:00Z, "
            "GitHub's total_count says 1050") in stdout.splitlines()
    assert len(set(run_ids(out))) == 1000


def test_runs_that_shift_while_paging_are_folded_by_id(tmp_path, run_cli):
    runs = github_runs(250, START, HOUR)
    fake = FakeGitHub({"acme/shop": runs})

    def before(request):
        if request.query.get("page") == "2" and len(fake.runs["acme/shop"]) == 250:  # a new run, newest of all
            fake.runs["acme/shop"] = [*runs, *github_runs(1, START + 300 * HOUR, HOUR, first_id=120_000_000)]
        return None

    fake.before = before
    out = tmp_path / "runs.json"
    with FakeServer(fake) as server:
        code, stdout, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "-o", out,
                                    "--since", "2020-01-01")
    assert code == 0, err
    ids = run_ids(out)
    assert len(ids) == len(set(ids)) == 250  # the run pushed from page 1 onto page 2 is written once
    assert "Complete:" in stdout


def test_workflow_and_since(tmp_path, run_cli):
    with FakeServer(FakeGitHub({"acme/shop": github_runs(5, START, HOUR)})) as server:
        code, _, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "--workflow", "deploy.yml",
                               "-o", tmp_path / "r.json", "--since", "2020-01-01T02:00:00Z")
    assert code == 0, err
    assert [r.path for r in server.requests] == ["/repos/acme/shop/actions/workflows/deploy.yml/runs"]
    assert server.requests[0].query["created"].startswith("2020-01-01T02:00:00Z..")
    assert server.requests[0].query["per_page"] == "100"


def test_jobs_are_embedded_in_each_run_after_a_budget_check(tmp_path, run_cli):
    runs = github_runs(3, START, HOUR)
    out = tmp_path / "runs.json"
    with FakeServer(FakeGitHub({"acme/shop": runs})) as server:
        code, stdout, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "--jobs", "-o", out)
    assert code == 0, err
    assert server.requests[0].path == "/rate_limit"
    assert ("note: --jobs costs one more request per run; the token has 4998 of 5000 requests left until "
            "2020-05-21T03:15:18Z, and the fetch waits for the reset when they run out") in stdout
    page = read_values(out)[0]
    assert [[job["run_id"] for job in run["jobs"]] for run in page["workflow_runs"]] == [[r["id"]] * 2 for r in reversed(runs)]
    assert sorted(r.path for r in server.requests if r.path.endswith("/jobs")) == sorted(
        f"/repos/acme/shop/actions/runs/{r['id']}/jobs" for r in runs)


def test_deployments_by_graphql_100_at_a_time_with_their_statuses(tmp_path, run_cli):
    nodes = github_deployment_nodes(250)
    fake = FakeGitHub(deployments={"acme/shop": nodes})
    out = tmp_path / "deployments.json"
    with FakeServer(fake) as server:
        code, stdout, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--deployments", "-o", out,
                                    "--environment", "github-pages")
    assert code == 0, err
    assert [r.path for r in server.requests] == ["/graphql"] * 3
    assert [v["after"] for v in fake.graphql] == [None, "100", "200"]
    assert all(v["environments"] == ["github-pages"] and v["first"] == 100 for v in fake.graphql)
    pages = read_values(out)
    assert [len(p["data"]["repository"]["deployments"]["nodes"]) for p in pages] == [100, 100, 50]
    assert [n for p in pages for n in p["data"]["repository"]["deployments"]["nodes"]] == nodes
    assert "Complete:" in stdout


def test_graphql_errors_stop_with_githubs_message(tmp_path, run_cli):
    with FakeServer(FakeGitHub()) as server:
        code, _, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/nope", "--deployments", "-o", tmp_path / "d.json")
    assert code == 6
    assert err.strip() == ("Error: acme/nope: GitHub GraphQL error: Could not resolve to a Repository with the name 'acme/nope'.; "
                           "check --repo and the token's access")


def test_graphql_rate_limited_waits_for_the_reset(tmp_path):
    slept = []
    now = [1_590_030_000.0]
    answers = iter([Reply(200, {"errors": [{"type": "RATE_LIMITED", "message": "API rate limit exceeded for user ID 1."}]},
                          {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1590030918", "X-RateLimit-Resource": "graphql"})])
    fake = FakeGitHub(deployments={"acme/shop": github_deployment_nodes(2)}, before=lambda r: next(answers, None))
    with FakeServer(fake) as server:
        http = Http(server.url, {"Authorization": f"Bearer {TOKEN}"}, sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)),
                    clock=lambda: now[0])
        result = github.fetch(github.GitHubOptions(server.url, ("acme/shop",), what="deployments"), str(tmp_path / "d.json"), http,
                              clock=lambda: now[0])
    assert slept == [919.0]
    assert result.stats.items == 2


def test_a_bad_token(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrong")
    bad = lambda request: Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})  # noqa: E731
    with FakeServer(FakeGitHub({"acme/shop": []}, before=bad)) as server:
        code, stdout, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "-o", tmp_path / "r.json")
    assert code == 5 and len(server.requests) == 1
    assert err.strip() == (f"Error: GET {server.url}/repos/acme/shop: 401 Unauthorized: Bad credentials; "
                           "the token was refused or lacks read access (see the README for the scopes it needs)")
    assert "ghp_wrong" not in stdout + err


@pytest.mark.parametrize("args, message", [
    (["--repo", "acme", "--runs"], "--repo 'acme': expected OWNER/NAME"),
    (["--repo", "a/b", "--deployments", "--jobs"], "--workflow and --jobs go with --runs, not --deployments"),
])
def test_bad_arguments(tmp_path, run_cli, args, message):
    code, _, err = run_cli("fetch", "github", *args, "-o", tmp_path / "x.json")
    assert (code, err.strip()) == (2, f"Error: {message}")


def test_graphql_url_for_github_enterprise():
    assert github.graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert github.graphql_url("https://ghe.example.com/api/v3") == "https://ghe.example.com/api/graphql"


def test_stopped_in_the_middle_of_the_windows_then_rerun(tmp_path):
    """A fetch that stops (5xx after its retries) inside the split windows continues where it stopped."""
    from backfill.errors import FetchStopped
    from backfill.fetch.core import HttpSettings

    runs = github_runs(2500, START, HOUR)
    calls = {"n": 0}

    def before(request):
        calls["n"] += 1
        return Reply(503, {"message": "Service Unavailable"}) if failing and calls["n"] >= 12 else None

    fake = FakeGitHub({"acme/shop": runs}, before=before)
    out = tmp_path / "runs.json"
    options = github.GitHubOptions("", ("acme/shop",), since=None)
    now = 1_700_000_000.0
    with FakeServer(fake) as server:
        failing = True
        http = Http(server.url, {"Authorization": f"Bearer {TOKEN}"}, settings=HttpSettings(max_retries=1), sleep=lambda s: None,
                    clock=lambda: now)
        with pytest.raises(FetchStopped):
            github.fetch(options, str(out), http, clock=lambda: now)
        done_before = len(server.requests)
        failing = False
        http = Http(server.url, {"Authorization": f"Bearer {TOKEN}"}, sleep=lambda s: None, clock=lambda: now)
        result = github.fetch(options, str(out), http, clock=lambda: now)
    assert result.resumed and not result.shortfalls
    ids = run_ids(out)
    assert sorted(ids) == sorted(r["id"] for r in runs)
    assert server.requests[done_before].path != "/repos/acme/shop"  # no new start from the repository's creation

"""`backfill fetch github`: workflow runs (REST) or deployments with their statuses (GraphQL).

Runs: `GET /repos/{o}/{r}/actions/runs` (or `/actions/workflows/{file|id}/runs`) with
`created=FROM..TO`, following `Link` `next`. A filtered query returns at most 1,000 runs however
many `total_count` reports, and deep paging is refused, so when a window reports more than
1,000 its created-date range is halved until each window holds at most 1,000. Each page is written
as GitHub sent it (`{"total_count": N, "workflow_runs": [...]}`, minus runs already written: a run
in two windows or two pages is folded by its id). `--jobs` adds each run's jobs
(`/runs/{id}/jobs`) as `jobs`, one request per run, after a look at the budget (`/rate_limit`).

Deployments: GraphQL, one request per 100 deployments with up to 100 statuses each (REST would
need one more request per deployment for its `/statuses`: 10,100 requests for 10,000
deployments, two hours of a token's budget, against about 100 points of GraphQL's 5,000 an hour).
Each page is written as the GraphQL answer (`{"data": {"repository": {"deployments": ...}}}`).

Completeness: runs fetched per window against its `total_count`; deployments against
`totalCount`; a deployment with more than 100 statuses is noted (its `latestStatus` is always there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from backfill.errors import FetchStopped, UsageError
from backfill.fetch.core import Fetch, FetchResult, Http, Progress, printable, read_token, run_fetch

TOKEN_ENV = "GITHUB_TOKEN"
API_URL = "https://api.github.com"
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
MAX_PAGE = 100
SEARCH_CAP = 1000  # results a filtered query returns at most

DEPLOYMENTS_QUERY = """
query($owner: String!, $name: String!, $first: Int!, $after: String, $environments: [String!]) {
  repository(owner: $owner, name: $name) {
    deployments(first: $first, after: $after, environments: $environments, orderBy: {field: CREATED_AT, direction: DESC}) {
      totalCount
      pageInfo { hasNextPage endCursor }
      nodes {
        id databaseId commitOid createdAt updatedAt environment originalEnvironment task description state payload
        ref { name }
        creator { login }
        latestStatus { state createdAt updatedAt logUrl environmentUrl description }
        statuses(first: 100) {
          totalCount
          nodes { state createdAt updatedAt logUrl environmentUrl description creator { login } }
        }
      }
    }
  }
}
""".strip()


@dataclass(frozen=True)
class GitHubOptions:
    api_url: str
    repos: tuple[str, ...]
    what: str = "runs"  # runs | deployments
    workflow: str | None = None
    jobs: bool = False
    environment: str | None = None
    page_size: int = MAX_PAGE
    since: datetime | None = None


def read_credentials(token_file: str | None) -> dict[str, str]:
    return {"Authorization": "Bearer " + read_token(TOKEN_ENV, token_file, header="Authorization")}


def graphql_url(api_url: str) -> str:
    """api.github.com -> /graphql; GitHub Enterprise Server `https://HOST/api/v3` -> `https://HOST/api/graphql`."""
    return api_url[: -len("/v3")] + "/graphql" if api_url.endswith("/api/v3") else api_url + "/graphql"


def keys(value: Any) -> Iterator[Any]:
    if not isinstance(value, dict):
        return
    if isinstance(value.get("workflow_runs"), list):
        for run in value["workflow_runs"]:
            yield ("run", run.get("id"))
    connection = ((value.get("data") or {}).get("repository") or {}).get("deployments") or {}
    for node in connection.get("nodes") or []:
        yield ("deployment", node.get("id"))


def fetch(options: GitHubOptions, output: str, http: Http, *, progress: Progress | None = None,
          clock: Callable[[], float] = time.time) -> FetchResult:
    if not options.repos:
        raise UsageError("give at least one --repo OWNER/NAME")
    for repo in options.repos:
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UsageError(f"--repo {repo!r}: expected OWNER/NAME")
    if not 1 <= options.page_size <= MAX_PAGE:
        raise UsageError(f"--page-size {options.page_size}: GitHub pages hold 1 to {MAX_PAGE} items")
    if options.what == "deployments" and (options.workflow or options.jobs):
        raise UsageError("--workflow and --jobs go with --runs, not --deployments")
    identity = {"source": "github", "url": http.base_url, "repos": list(options.repos), "what": options.what,
                "workflow": options.workflow, "jobs": options.jobs, "environment": options.environment,
                "page_size": options.page_size, "since": options.since.isoformat() if options.since else None}
    run = _runs if options.what == "runs" else _deployments
    empty: Any = ({"total_count": 0, "workflow_runs": []} if options.what == "runs"
                  else {"data": {"repository": {"deployments": {"totalCount": 0, "nodes": []}}}})
    return run_fetch(lambda f: run(f, options, clock), output=output, identity=identity, keys=keys, empty=empty,
                     http=http, progress=progress, clock=clock)


# --------------------------------------------------------------------- workflow runs


def _stamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _runs(fetch: Fetch, options: GitHubOptions, clock: Callable[[], float]) -> None:
    http = fetch.http
    cursor = dict(fetch.cursor) or {"index": 0, "windows": None, "next": None, "window": None,
                                    "counts": {}, "totals": {}, "short": []}
    if options.jobs and not fetch.cursor:
        _budget_note(fetch)
    while cursor["index"] < len(options.repos):
        repo = options.repos[cursor["index"]]
        base = f"/repos/{_repo_path(repo)}/actions"
        path = f"{base}/workflows/{quote(options.workflow, safe='')}/runs" if options.workflow else f"{base}/runs"
        if cursor["windows"] is None:  # the whole history of the repository, as one window to start with
            if options.since is not None:
                low = int(options.since.timestamp())
            else:
                info, _ = http.get_json(http.url(f"/repos/{_repo_path(repo)}"))
                low = _seconds(str(info.get("created_at") or "2008-01-01T00:00:00Z"))
            cursor = {**cursor, "windows": [[low, int(clock()) + 1]], "window": None, "next": None}
        if cursor["next"]:
            doc, response = http.get_json(cursor["next"])
        elif cursor["windows"]:
            low, high = cursor["windows"][0]
            params = {"created": f"{_stamp(low)}..{_stamp(high)}", "per_page": options.page_size}
            doc, response = http.get_json(http.url(path), params)
            total = _total(doc, repo)
            if total > SEARCH_CAP and high > low:  # more than one query returns: halve the window
                middle = (low + high) // 2
                cursor = {**cursor, "windows": [[low, middle], [middle + 1, high], *cursor["windows"][1:]]}
                fetch.output.save(cursor)
                continue
            cursor = {**cursor, "window": {"range": [low, high], "total": total, "count": 0}}
            totals = dict(cursor["totals"])
            totals[repo] = totals.get(repo, 0) + total
            cursor["totals"] = totals
            if fetch.progress:
                fetch.progress.total(sum(totals.values()))
        else:
            cursor = {**cursor, "index": cursor["index"] + 1, "windows": None}
            fetch.output.save(cursor)
            continue
        runs = doc.get("workflow_runs") if isinstance(doc, dict) else None
        if not isinstance(runs, list):
            raise FetchStopped(f"{repo}: the workflow-runs answer has no workflow_runs list; check --api-url and --repo")
        window = {**cursor["window"], "count": cursor["window"]["count"] + len(runs)}
        counts = {**cursor["counts"], repo: cursor["counts"].get(repo, 0) + len(runs)}
        following = _next_link(response)
        cursor = {**cursor, "window": window, "counts": counts, "next": following}
        if not following:  # the window is done
            if window["count"] < window["total"]:
                low, high = window["range"]
                cursor["short"] = [*cursor["short"], f"{repo}: {window['count']} runs fetched created {_stamp(low)}..{_stamp(high)}, "
                                                     f"GitHub's total_count says {window['total']}"]
            cursor["windows"] = cursor["windows"][1:]
        new = fetch.output.fresh(runs, lambda r: ("run", r.get("id") if isinstance(r, dict) else None))
        if options.jobs:
            for run in new:
                run["jobs"] = _jobs(http, repo, run.get("id"), options.page_size)
        if new:
            fetch.page({**doc, "workflow_runs": new}, cursor)
        else:
            fetch.output.save(cursor)
    fetch.result.shortfalls.extend(cursor["short"])


def _total(doc: Any, repo: str) -> int:
    total = doc.get("total_count") if isinstance(doc, dict) else None
    if not isinstance(total, int):
        raise FetchStopped(f"{repo}: the workflow-runs answer has no total_count; check --api-url and --repo")
    return total


def _jobs(http: Http, repo: str, run_id: Any, page_size: int) -> list[Any]:
    url: str | None = http.url(f"/repos/{_repo_path(repo)}/actions/runs/{run_id}/jobs")
    params: dict[str, Any] | None = {"per_page": page_size}
    jobs: list[Any] = []
    while url:
        doc, response = http.get_json(url, params)
        if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
            raise FetchStopped(f"{repo}: the jobs answer of run {run_id} has no jobs list")
        jobs.extend(doc["jobs"])
        url, params = _next_link(response), None
    return jobs


def _budget_note(fetch: Fetch) -> None:
    """--jobs costs one request per run: say what the budget holds before starting."""
    doc, _ = fetch.http.get_json(fetch.http.url("/rate_limit"))
    core = ((doc or {}).get("resources") or {}).get("core") or {}
    remaining, limit, reset = core.get("remaining"), core.get("limit"), core.get("reset")
    if isinstance(remaining, int) and isinstance(reset, int):
        fetch.note(f"--jobs costs one more request per run; the token has {remaining} of {limit} requests left "
                   f"until {_stamp(reset)}, and the fetch waits for the reset when they run out")


def _next_link(response: Any) -> str | None:
    link = response.links.get("next", {}).get("url")
    return str(response.url.join(link)) if link else None


def _repo_path(repo: str) -> str:
    owner, name = repo.split("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"


# --------------------------------------------------------------------- deployments (GraphQL)


def _deployments(fetch: Fetch, options: GitHubOptions, clock: Callable[[], float]) -> None:
    http = fetch.http
    url = graphql_url(http.base_url)
    cursor = dict(fetch.cursor) or {"index": 0, "after": None, "counts": {}, "totals": {}}
    since = options.since.astimezone(timezone.utc) if options.since else None
    while cursor["index"] < len(options.repos):
        repo = options.repos[cursor["index"]]
        owner, name = repo.split("/")
        variables = {"owner": owner, "name": name, "first": options.page_size, "after": cursor["after"],
                     "environments": [options.environment] if options.environment else None}
        doc, _ = http.post_json(url, {"query": DEPLOYMENTS_QUERY, "variables": variables})
        connection = _connection(doc, repo)
        nodes = [n for n in connection.get("nodes") or [] if isinstance(n, dict)]
        older = since is not None and any(_before(n.get("createdAt"), since) for n in nodes)
        if since is not None:
            nodes = [n for n in nodes if not _before(n.get("createdAt"), since)]
        page_info = connection.get("pageInfo") or {}
        more = bool(page_info.get("hasNextPage")) and not older
        counts = {**cursor["counts"], repo: cursor["counts"].get(repo, 0) + len(nodes)}
        totals = {**cursor["totals"], repo: connection.get("totalCount")}
        cursor = {**cursor, "counts": counts, "totals": totals,
                  **({"after": page_info.get("endCursor")} if more else {"after": None, "index": cursor["index"] + 1})}
        if fetch.progress and since is None:
            fetch.progress.total(sum(t for t in totals.values() if isinstance(t, int)))
        for node in nodes:
            statuses = node.get("statuses") or {}
            if isinstance(statuses.get("totalCount"), int) and statuses["totalCount"] > len(statuses.get("nodes") or []):
                fetch.note(f"{repo}: deployment {node.get('databaseId')} has {statuses['totalCount']} statuses, "
                           f"the newest 100 were fetched (and its latestStatus)")
        new = fetch.output.fresh(nodes, lambda n: ("deployment", n.get("id")))
        if new:
            page = {"data": {"repository": {"deployments": {**connection, "nodes": new}}}}
            fetch.page(page, cursor)
        else:
            fetch.output.save(cursor)
    if since is None:
        for repo in options.repos:
            got, total = cursor["counts"].get(repo, 0), cursor["totals"].get(repo)
            if isinstance(total, int) and got < total:
                fetch.result.shortfalls.append(f"{repo}: {got} deployments fetched, GitHub's totalCount says {total}")


def _connection(doc: Any, repo: str) -> dict[str, Any]:
    if isinstance(doc, dict) and doc.get("errors"):
        first = doc["errors"][0] if isinstance(doc["errors"], list) and doc["errors"] else {}
        message = first.get("message") if isinstance(first, dict) else None
        raise FetchStopped(f"{repo}: GitHub GraphQL error: {printable(str(message or 'unknown'))}; check --repo and the token's access")
    repository = ((doc or {}).get("data") or {}).get("repository") if isinstance(doc, dict) else None
    connection = repository.get("deployments") if isinstance(repository, dict) else None
    if not isinstance(connection, dict):
        raise FetchStopped(f"{repo}: the GraphQL answer has no repository.deployments; check --api-url and --repo")
    return connection


def _before(text: Any, since: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) < since
    except ValueError:
        return False

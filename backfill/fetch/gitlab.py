"""`backfill fetch gitlab`: every deployment of the given projects, page after page.

`GET /api/v4/projects/:id/deployments?order_by=id&sort=asc&per_page=100` (`--since` maps onto
`updated_after`, which GitLab accepts only with `order_by=updated_at`), following the `Link`
header's `next`, else `X-Next-Page`. Each page is written as GitLab sent it (a JSON array), one per
line, which is what the GitLab reader reads; a deployment seen twice is written once.

Completeness: the deployments fetched per project are counted against `X-Total` where GitLab sends
it (it leaves it out above 10,000).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx

from backfill.errors import FetchStopped, UsageError
from backfill.fetch.core import Fetch, FetchResult, Http, Progress, read_token, run_fetch

TOKEN_ENV = "GITLAB_TOKEN"
TOKEN_HEADER = "PRIVATE-TOKEN"
MAX_PAGE = 100


@dataclass(frozen=True)
class GitLabOptions:
    url: str
    projects: tuple[str, ...]
    environment: str | None = None
    page_size: int = MAX_PAGE
    since: datetime | None = None


def read_credentials(token_file: str | None) -> dict[str, str]:
    return {TOKEN_HEADER: read_token(TOKEN_ENV, token_file, header=TOKEN_HEADER)}


def keys(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for deployment in value:
            yield deployment.get("id") if isinstance(deployment, dict) else None


def api_root(url: str) -> str:
    """`https://gitlab.example.com` or `.../api/v4` -> the part before `/api/v4`."""
    return url[: -len("/api/v4")] if url.endswith("/api/v4") else url


def query(options: GitLabOptions) -> dict[str, Any]:
    params: dict[str, Any] = {"order_by": "id", "sort": "asc", "per_page": options.page_size}
    if options.since is not None:
        since = options.since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        params.update(order_by="updated_at", updated_after=since)
    if options.environment:
        params["environment"] = options.environment
    return params


def fetch(options: GitLabOptions, output: str, http: Http, *, progress: Progress | None = None,
          clock: Callable[[], float] = time.time) -> FetchResult:
    if not options.projects:
        raise UsageError("give at least one --project ID|PATH")
    if not 1 <= options.page_size <= MAX_PAGE:
        raise UsageError(f"--page-size {options.page_size}: GitLab pages hold 1 to {MAX_PAGE} items")
    identity = {"source": "gitlab", "url": http.base_url, "projects": list(options.projects),
                "query": query(options)}
    return run_fetch(lambda f: _run(f, options), output=output, identity=identity, keys=keys, empty=[],
                     http=http, progress=progress, clock=clock)


def _run(fetch: Fetch, options: GitLabOptions) -> None:
    http = fetch.http
    cursor = dict(fetch.cursor) or {"index": 0, "next": None, "counts": {}, "totals": {}}
    while cursor["index"] < len(options.projects):
        project = options.projects[cursor["index"]]
        if cursor["next"]:
            doc, response = http.get_json(cursor["next"])
        else:
            path = f"/api/v4/projects/{quote(project, safe='')}/deployments"
            doc, response = http.get_json(http.url(path), query(options))
        if not isinstance(doc, list):
            raise FetchStopped(f"{project}: the deployments answer is not a JSON array; check --url and --project")
        counts, totals = dict(cursor["counts"]), dict(cursor["totals"])
        counts[project] = counts.get(project, 0) + len(doc)
        total = _int(response.headers.get("x-total"))
        if total is not None:
            totals[project] = total
            if fetch.progress:
                fetch.progress.total(sum(totals.values()))
        following = next_page(response)
        cursor = {"index": cursor["index"] + (0 if following else 1), "next": following, "counts": counts, "totals": totals}
        new = fetch.output.fresh(doc, lambda d: d.get("id") if isinstance(d, dict) else None)
        if new:
            fetch.page(new, cursor)
        else:
            fetch.output.save(cursor)
    for project in options.projects:
        got, total = cursor["counts"].get(project, 0), cursor["totals"].get(project)
        if total is None:
            fetch.note(f"{project}: {got} deployments; GitLab sent no X-Total to check the count against")
        elif got < total:
            fetch.result.shortfalls.append(f"{project}: {got} deployments fetched, GitLab's X-Total says {total}")


def next_page(response: httpx.Response) -> str | None:
    """The next page's URL: the `Link` header's `next`, else the current URL with `page=X-Next-Page`."""
    link = response.links.get("next", {}).get("url")
    if link:
        return str(response.url.join(link))
    page = _int(response.headers.get("x-next-page"))
    if page is not None:
        return str(response.url.copy_set_param("page", page))
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text and text.strip() else None
    except ValueError:
        return None

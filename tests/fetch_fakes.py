"""Fake Jenkins / GitLab / GitHub servers on 127.0.0.1 for the `backfill fetch` tests.

Each answers from the real recorded bodies in tests/fixtures/real-exports (renumbered to make long
histories), with the paging and rate-limit headers the real systems send. Every request is
recorded (path as sent, query, headers) so tests can check what went over the wire.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REAL = Path(__file__).parent / "fixtures" / "real-exports"
TOKEN = "glpat-Sup3rSecretT0ken"  # what the tests hand to the fetch; it must never appear in any output


@dataclass
class Request:
    method: str
    raw_path: str  # as sent, percent-encoding kept
    path: str  # decoded
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON value, or bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Request, "FakeServer"], Reply]


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering `handler(request, server)`."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Request] = []
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command, parts.path, unquote(parts.path),
                    {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                fake.requests.append(request)
                reply = fake.handler(request, fake)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed (kill -9 tests)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def real(name: str) -> Any:
    return json.loads((REAL / name).read_text(encoding="utf-8"))


# --------------------------------------------------------------------- Jenkins


JENKINS_BUILDS = [b for b in real("jenkins-devlake-allbuilds-data-column.json") if b["number"] < 10000]
_RANGE = re.compile(r"\{(\d+),(\d+)\}$")


def jenkins_builds(job: str, first: int, last: int) -> list[dict]:
    """Builds #last down to #first (newest first, as allBuilds lists them), each a real build renumbered."""
    out = []
    for number in range(last, first - 1, -1):
        build = copy.deepcopy(JENKINS_BUILDS[number % len(JENKINS_BUILDS)])
        build.update(number=number, timestamp=1_650_000_000_000 + number * 3_600_000, building=False,
                     url=f"https://jenkins.example.com/job/{'/job/'.join(job.split('/'))}/{number}/",
                     fullDisplayName=f"{job.replace('/', ' » ')} #{number}")
        out.append(build)
    return out


@dataclass
class FakeJenkins:
    """Folders (name -> child names) and jobs (full name -> builds, newest first)."""

    jobs: dict[str, list[dict]]
    folders: dict[str, list[str]] = field(default_factory=dict)
    first_build: dict[str, int] = field(default_factory=dict)  # Jenkins' firstBuild, when not the oldest listed
    max_start: int | None = None  # ranges starting at or after this come back empty (a truncating proxy)

    def __call__(self, request: Request, server: FakeServer) -> Reply:
        match = re.fullmatch(r"((?:/job/[^/]+)+)/api/json", request.raw_path)
        if not match:
            return Reply(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})
        name = "/".join(unquote(p) for p in match.group(1).split("/job/")[1:])
        tree = request.query.get("tree", "")
        if name in self.folders:
            return Reply(body={
                "_class": "com.cloudbees.hudson.plugins.folder.Folder", "name": name.rsplit("/", 1)[-1], "fullName": name,
                "jobs": [{"_class": "hudson.model.FreeStyleProject", "name": child} for child in self.folders[name]],
            })
        if name not in self.jobs:
            return Reply(404, b"<html><body>Not Found</body></html>", {"Content-Type": "text/html"})
        builds = self.jobs[name]
        doc: dict[str, Any] = {"_class": "hudson.model.FreeStyleProject", "name": name.rsplit("/", 1)[-1], "fullName": name,
                               "url": f"https://jenkins.example.com/job/{'/job/'.join(name.split('/'))}/"}
        if "allBuilds[" in tree:
            start, end = map(int, _RANGE.search(tree).groups())  # type: ignore[union-attr]
            if self.max_start is not None and start >= self.max_start:
                start = end
            doc["firstBuild"] = {"_class": "hudson.model.FreeStyleBuild", "number": self.first_build.get(name, builds[-1]["number"] if builds else None)}
            doc["lastBuild"] = {"_class": "hudson.model.FreeStyleBuild", "number": builds[0]["number"] if builds else None}
            doc["allBuilds"] = builds[start:end]
        return Reply(body=doc)


# --------------------------------------------------------------------- GitLab


GITLAB_DEPLOYMENTS = real("gitlab-devlake-deployments-data-column.json")


def gitlab_deployments(count: int, first_id: int = 1000) -> list[dict]:
    """`count` real deployments renumbered (ids ascending, as order_by=id&sort=asc lists them)."""
    out = []
    for i in range(count):
        deployment = copy.deepcopy(GITLAB_DEPLOYMENTS[i % len(GITLAB_DEPLOYMENTS)])
        deployment.update(id=first_id + i, iid=i + 1)
        if isinstance(deployment.get("deployable"), dict):  # each its own job, as in a real history
            deployment["deployable"]["id"] = 500_000_000 + first_id + i
        out.append(deployment)
    return out


@dataclass
class FakeGitLab:
    """`/api/v4/projects/:id/deployments` with GitLab's offset-paging headers.

    `link`: send the `Link` header (GitLab does), `next_page`: send `X-Next-Page`, `total`: send
    `X-Total` (GitLab leaves it out above 10,000 items); `claimed_total` overrides the count it sends.
    """

    projects: dict[str, list[dict]]
    link: bool = True
    next_page: bool = True
    total: bool = True
    claimed_total: int | None = None
    before: Callable[[Request], Reply | None] | None = None

    def __call__(self, request: Request, server: FakeServer) -> Reply:
        if self.before:
            early = self.before(request)
            if early is not None:
                return early
        match = re.fullmatch(r"/api/v4/projects/([^/]+)/deployments", request.raw_path)
        if not match or unquote(match.group(1)) not in self.projects:
            return Reply(404, {"message": "404 Project Not Found"})
        project = match.group(1)
        items = self.projects[unquote(project)]
        per_page = int(request.query.get("per_page", 20))
        page = int(request.query.get("page", 1))
        pages = max(1, -(-len(items) // per_page))
        body = items[(page - 1) * per_page : page * per_page]
        headers = {"X-Page": str(page), "X-Per-Page": str(per_page), "X-Prev-Page": str(page - 1) if page > 1 else ""}
        headers["X-Next-Page"] = (str(page + 1) if page < pages else "") if self.next_page else ""
        if self.total:
            headers["X-Total"] = str(self.claimed_total if self.claimed_total is not None else len(items))
            headers["X-Total-Pages"] = str(pages)
        if self.link:
            query = "&".join(f"{k}={v}" for k, v in request.query.items() if k != "page")
            base = f"{server.url}/api/v4/projects/{project}/deployments?{query}"
            rels = ([f'<{base}&page={page + 1}>; rel="next"'] if page < pages else []) + [
                f'<{base}&page=1>; rel="first"', f'<{base}&page={pages}>; rel="last"']
            headers["Link"] = ", ".join(rels)
        return Reply(body=body, headers=headers)


def read_values(path: Path) -> list[Any]:
    """The JSON values of an export, one per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --------------------------------------------------------------------- GitHub


GITHUB_RUNS_PAGE = real("github-pygithub-fetch-actions-runs-page.json")
GITHUB_JOBS = real("github-pygithub-fetch-run-jobs.json")
GITHUB_RATE_HEADERS = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4998", "X-RateLimit-Reset": "1590030918",
                       "X-RateLimit-Used": "2", "X-RateLimit-Resource": "core", "X-GitHub-Media-Type": "github.v3; format=json"}


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def github_runs(count: int, start: int, step: int, first_id: int = 110_000_000) -> list[dict]:
    """`count` real runs renumbered, run i created at `start + i * step` (epoch seconds)."""
    templates = GITHUB_RUNS_PAGE["workflow_runs"]
    out = []
    for i in range(count):
        run = copy.deepcopy(templates[i % len(templates)])
        run.update(id=first_id + i, run_number=i + 1, created_at=_iso(start + i * step), updated_at=_iso(start + i * step + 150))
        out.append(run)
    return out


def github_deployment_nodes(count: int, first_id: int = 3_881_429_895) -> list[dict]:
    """GraphQL deployment nodes, newest first: the shape and values of a real node recorded by DevLake (facebook/OpenBIC,
    github-pages), renumbered and re-timed; the GitHub readers (issue 12) ship that recording as a fixture."""
    out = []
    for i in range(count):
        created = 1_700_000_000 + (count - i) * 3600
        out.append({
            "id": f"DE_kwDOFAKDls{first_id + i}", "databaseId": first_id + i, "commitOid": "0916a0afdfa825779c892a8951bde706a054d352",
            "createdAt": _iso(created), "updatedAt": _iso(created + 22), "environment": "github-pages", "originalEnvironment": "github-pages",
            "task": "deploy", "description": "", "state": "ACTIVE", "payload": "", "ref": {"name": "gh-pages"}, "creator": {"login": "github-pages[bot]"},
            "latestStatus": {"state": "SUCCESS", "createdAt": _iso(created + 22), "updatedAt": _iso(created + 22),
                             "logUrl": None, "environmentUrl": "", "description": ""},
            "statuses": {"totalCount": 3, "nodes": [
                {"state": "SUCCESS", "createdAt": _iso(created + 22), "updatedAt": _iso(created + 22)},
                {"state": "IN_PROGRESS", "createdAt": _iso(created + 3), "updatedAt": _iso(created + 3)},
                {"state": "QUEUED", "createdAt": _iso(created + 1), "updatedAt": _iso(created + 1)}]},
        })
    return out


@dataclass
class FakeGitHub:
    """REST `/repos/{o}/{r}/actions/runs` (with `created=A..B`, at most 1,000 results per query as GitHub
    does, `Link` paging), `/runs/{id}/jobs`, `/rate_limit`, `/repos/{o}/{r}`, and GraphQL deployments."""

    runs: dict[str, list[dict]] = field(default_factory=dict)
    created_at: str = "2020-01-01T00:00:00Z"
    deployments: dict[str, list[dict]] = field(default_factory=dict)
    before: Callable[[Request], Reply | None] | None = None
    graphql: list[dict] = field(default_factory=list)  # the GraphQL requests' variables

    def __call__(self, request: Request, server: FakeServer) -> Reply:
        if self.before:
            early = self.before(request)
            if early is not None:
                return early
        if request.method == "POST" and request.path == "/graphql":
            return self._graphql(request)
        if request.path == "/rate_limit":
            core = {"limit": 5000, "used": 2, "remaining": 4998, "reset": 1590030918}
            return Reply(body={"resources": {"core": core}, "rate": core})
        match = re.fullmatch(r"/repos/([^/]+/[^/]+)(/actions/runs(?:/(\d+)/jobs)?|/actions/workflows/[^/]+/runs)?", request.path)
        if not match or match.group(1) not in self.runs:
            return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        repo, tail, run_id = match.groups()
        if not tail:
            return Reply(body={"id": 3544490, "full_name": repo, "created_at": self.created_at}, headers=GITHUB_RATE_HEADERS)
        if run_id:
            jobs = copy.deepcopy(GITHUB_JOBS["jobs"])
            for job in jobs:
                job["run_id"] = int(run_id)
            return Reply(body={"total_count": len(jobs), "jobs": jobs}, headers=GITHUB_RATE_HEADERS)
        low, high = request.query["created"].split("..")
        matching = sorted((r for r in self.runs[repo] if low <= r["created_at"] <= high), key=lambda r: r["created_at"], reverse=True)
        per_page, page = int(request.query.get("per_page", 30)), int(request.query.get("page", 1))
        reachable = matching[:1000]  # a filtered query stops at 1,000 results, whatever total_count says
        body = {"total_count": len(matching), "workflow_runs": reachable[(page - 1) * per_page : page * per_page]}
        headers = dict(GITHUB_RATE_HEADERS)
        if page * per_page < len(reachable):
            query = "&".join(f"{k}={v}" for k, v in request.query.items() if k != "page")
            headers["Link"] = f'<{server.url}{request.raw_path}?{query}&page={page + 1}>; rel="next", <{server.url}{request.raw_path}?{query}&page=1>; rel="first"'
        return Reply(body=body, headers=headers)

    def _graphql(self, request: Request) -> Reply:
        variables = json.loads(request.body)["variables"]
        self.graphql.append(variables)
        repo = f"{variables['owner']}/{variables['name']}"
        if repo not in self.deployments:
            return Reply(body={"data": {"repository": None}, "errors": [
                {"type": "NOT_FOUND", "path": ["repository"], "locations": [{"line": 2, "column": 3}],
                 "message": f"Could not resolve to a Repository with the name '{repo}'."}]})
        nodes = self.deployments[repo]
        start = int(variables["after"] or 0)
        page = nodes[start : start + variables["first"]]
        end = start + len(page)
        connection = {"totalCount": len(nodes), "pageInfo": {"hasNextPage": end < len(nodes), "endCursor": str(end)}, "nodes": page}
        return Reply(body={"data": {"repository": {"deployments": connection}}},
                     headers={"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4990", "X-RateLimit-Reset": "1590030918",
                              "X-RateLimit-Resource": "graphql"})

"""Jenkins reader: what people save from Jenkins' JSON APIs, one row per build.

Accepted input (in any mix; several JSON values appended one after another in one file are
read in turn, so paged outputs can be concatenated):

- a job object with `builds` or `allBuilds` (`/job/x/api/json`, any `tree=` or `depth=`);
  when both are present `allBuilds` is used;
- a folder, multibranch project or view object with `jobs[]`, recursively; a list of jobs;
- a single build object (`/job/x/42/api/json`) or a list of builds;
- Pipeline Stage View runs (`/job/x/wfapi/runs`, a list) or one run (`/job/x/42/wfapi/describe`);
- Blue Ocean run objects (`/blue/rest/organizations/o/pipelines/x/runs/42/`), one or a list.

`_class` fields are optional: actions are recognised by their content (`parameters`, `causes`,
`lastBuiltRevision`). Objects that are none of the above (a Blue Ocean change set, for example)
are reported as invalid rows; a file with nothing but such objects is rejected.

Row fields (text, or empty when unknown):

| field | meaning |
|---|---|
| `job` | full job name, folders joined by `/` (`team/deploy-api`, multibranch `org/repo/main`): the enclosing job's `fullName`, else the path in the job's or the build's `url` (`/job/a/job/b/42/` -> `a/b`, percent-decoded once, so a branch `hotfix/1` stays `hotfix%2F1` as in Jenkins' own `fullName`), else the enclosing folders' and job's `name`s, else `fullDisplayName` before ` #N` with ` » ` turned into `/` |
| `number` | build number (`number`; wfapi: a numeric `id`, else `name` `#N`; Blue Ocean: `id`). Old builds whose `id` is a date (`2014-11-02_17-07-32`) still give `number` |
| `id` | the build's `id` as written |
| `result` | `SUCCESS`, `FAILURE`, `UNSTABLE`, `ABORTED`, `NOT_BUILT`; empty while running. wfapi `FAILED` -> `FAILURE`, `NOT_EXECUTED` -> `NOT_BUILT`, `IN_PROGRESS`/`PAUSED_PENDING_INPUT` -> empty; Blue Ocean `UNKNOWN` -> empty. Other spellings are kept as written |
| `building` | `true` / `false`: `building` as written; without it, `true` when `result` is present and null, `false` when it has a value (empty if neither is exported). wfapi: `IN_PROGRESS`, `PAUSED_PENDING_INPUT`; Blue Ocean: state `QUEUED`, `RUNNING`, `PAUSED` |
| `status` | wfapi `status` / Blue Ocean `state`, as written (empty for classic builds) |
| `started_at` | `timestamp` (epoch ms; wfapi `startTimeMillis`; Blue Ocean `startTime`) as ISO 8601 UTC `YYYY-MM-DDTHH:MM:SS.fffZ`, computed from integer milliseconds. 0 counts as unknown; a value that is not integer milliseconds is kept as written |
| `finished_at` | `timestamp` + `duration` in the same form (wfapi `endTimeMillis`, Blue Ocean `endTime`, when given); empty while building, and when `building` is not exported and `duration` is 0 |
| `duration_ms` | `duration` (wfapi `durationMillis`, Blue Ocean `durationInMillis`) as written |
| `url` | the build's `url` (else the job's `url` + number); wfapi and Blue Ocean: the run's REST path (`/job/cd/3/`) |
| `display_name` | `displayName` (`#42` or a custom name); wfapi `name` |
| `full_display_name` | `fullDisplayName` as written |
| `description` | the build description |
| `commit_sha` | the built commit: see "Which commit" below |
| `branch` | the branch of the chosen git BuildData (`refs/remotes/origin/main`, `origin/main` -> `main`), else a `GIT_BRANCH` or `BRANCH_NAME` parameter |
| `repo_url` | the remote URL of the chosen BuildData |
| `triggered_by` | from the first cause list (CauseAction; not InterruptedBuildAction): the first non-empty `userId`, else the first `userName`, else the first cause's `shortDescription` ("Started by timer") |
| `cause` | the first cause's `shortDescription` |
| `commit_time` | when the chosen commit (`commit_sha`) was made, from its change-set entry: `timestamp` (epoch ms) as ISO 8601 UTC, Blue Ocean's time text as written, else `date`; empty when the commit is not in the build's change set. For the preview report's lead time (`report: {commit_time: commit_time}`) |
| `api` | which shape the row came from: `classic`, `wfapi` or `blueocean` |
| `params.NAME` | each build parameter, as written: `true`/`false` for booleans, `""` stays empty text, the string `"null"` stays `null`; a parameter without a value is empty |

Which commit (`commit_sha`), first that gives one:

1. the git BuildData actions (`lastBuiltRevision.SHA1`, with `remoteUrls`):
   - with `source.repo_url_matches` in the mapping: the first BuildData with a remote URL that
     the regex matches (an RE2 search); if none matches, no BuildData is used;
   - without it: a build with exactly one BuildData uses it. With several, those whose
     repository name looks like a Pipeline shared library are set aside: a name (last URL path
     part, without `.git`, lower-cased) containing `librar`, `sharedlib`, `pipelinelib` or
     `jenkinslib`, or with a `-`/`_`/`.`-separated word `lib`, `libs`, `pipeline`,
     `pipelines`, `jenkinsfile` or `jenkinsfiles` (`infra-jenkins-pipeline-libs`,
     `pipeline-automation-lib`, `ara-pipelines`, `my-shared-library`). Of the rest, the one
     whose URL appears in builds of the fewest different jobs in the file (a library is
     checked out by many jobs), then the first in the build's action order. When all look
     like libraries, no BuildData is used;
2. the last commit (`commitId`, else `id`) of the last non-empty `changeSets[]` / `changeSet`
   (Blue Ocean: `commitId` of the run, then of its change set);
3. a `GIT_COMMIT` build parameter.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

from backfill.errors import MappingError
from backfill.patterns import PatternError, compile_pattern
from backfill.readers import RowChunk, SourceConfig, scalar_text
from backfill.readers.jsonstream import TOO_DEEP, read_values
from backfill.readers.jsonstream import JSONStream, Rows, TooDeep, kind

Row = dict[str, str | None]
JSONObject = dict[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RUN_NAME = re.compile(r"#(\d+)")
_DISPLAY_NUMBER = re.compile(r"^(.*) #\d+$", re.S)
_DISPLAY_SEPARATOR = re.compile(r" (?:Â)?» ")  # "Â»": » decoded twice, as some exports have it
_VIEW_URL = re.compile(r"/view/[^/]+/?$")

WFAPI_RESULTS = {
    "SUCCESS": "SUCCESS",
    "FAILED": "FAILURE",
    "FAILURE": "FAILURE",
    "UNSTABLE": "UNSTABLE",
    "ABORTED": "ABORTED",
    "NOT_EXECUTED": "NOT_BUILT",
    "NOT_BUILT": "NOT_BUILT",
    "IN_PROGRESS": None,
    "PAUSED_PENDING_INPUT": None,
    "QUEUED": None,
}
WFAPI_RUNNING = ("IN_PROGRESS", "PAUSED_PENDING_INPUT", "QUEUED")
BLUEOCEAN_RUNNING = ("QUEUED", "RUNNING", "PAUSED")

_LIBRARY_PARTS = ("librar", "sharedlib", "pipelinelib", "jenkinslib")
_LIBRARY_WORDS = frozenset({"lib", "libs", "pipeline", "pipelines", "jenkinsfile", "jenkinsfiles"})


# --- public helpers (pure, tested directly) ---------------------------------------------------

def ms_to_iso(ms: int) -> str:
    """Epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.fffZ`, exactly (integer arithmetic)."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def job_from_url(url: str | None) -> str | None:
    """The job path in a Jenkins URL: `/job/a/job/b/42/` -> `a/b`; Blue Ocean REST paths too."""
    if not url:
        return None
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0]
    parts = path.split("/")
    if "blue" in parts and "organizations" in parts:
        return _blueocean_job(parts)
    names: list[str] = []
    i = 0
    while i < len(parts) - 1:
        if parts[i] == "job" and parts[i + 1]:
            names.append(unquote(parts[i + 1]))
            i += 2
        elif names:
            break
        else:
            i += 1
    return "/".join(names) or None


def is_library_url(url: str) -> bool:
    """Does the repository name in a git remote URL look like a Pipeline shared library?"""
    name = re.split(r"[/:]", url.strip().rstrip("/"))[-1].lower()
    name = name[:-4] if name.endswith(".git") else name
    if any(part in name for part in _LIBRARY_PARTS):
        return True
    return bool(_LIBRARY_WORDS.intersection(re.split(r"[^a-z0-9]+", name)))


# --- reading ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Job:
    """What an enclosing job or folder tells about the builds inside it."""

    full_name: str | None = None  # fullName, or the path in its url
    chained: str | None = None  # enclosing folder names + name, when there is no fullName/url
    url: str | None = None


@dataclass
class _Checkout:
    sha: str
    branch: str | None
    urls: list[str]


@dataclass
class _Pending:
    """A build row whose commit is chosen once the whole file has been seen."""

    row: Row
    checkouts: list[_Checkout] = field(default_factory=list)
    fallback_sha: str | None = None
    commit_times: dict[str, str] = field(default_factory=dict)  # change-set commit -> its time


FIELDS = (
    "api", "job", "number", "id", "result", "building", "status", "started_at", "finished_at",
    "duration_ms", "url", "display_name", "full_display_name", "description", "commit_sha",
    "branch", "repo_url", "triggered_by", "cause", "commit_time",
)
"""The fields of every row, in this order, followed by `params.NAME` columns."""


def _new_row(**values: str | None) -> Row:
    return {name: values.get(name) for name in FIELDS}


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Rows of Jenkins builds from one file (see the module docstring), streamed: the builds of a
    job's `allBuilds`/`builds`, and the jobs of a folder's `jobs`, are read one at a time."""
    sink = _Sink(_compile(source.repo_url_matches))

    def collect(stream: JSONStream, rows: Rows) -> Iterator[RowChunk]:
        sink.rows = rows
        return _stream_node(stream, None, sink)

    return read_values(path, source, "Jenkins builds, jobs or runs", collect, lambda rows: sink.drain())


def _compile(pattern: str | None):
    """The pattern compiled by RE2 (linear time; see backfill.patterns)."""
    if not pattern:
        return None
    try:
        return compile_pattern(pattern)
    except PatternError as exc:
        raise MappingError(f"source.repo_url_matches: {exc}") from None


class _BadTime(Exception):
    """A build time that cannot be a Jenkins time: the build is an invalid row with this reason."""


class _Sink:
    """Where builds go as they are read: a row at once when its commit can be chosen from the build
    alone (one BuildData, or one that is not a shared library, or `repo_url_matches`); otherwise
    the choice needs every job of the file (see "Which commit"), and that build and every one
    after it wait, in order, until the end of the file."""

    def __init__(self, repo_re: Any):
        self.repo_re = repo_re
        self.rows = Rows("record")
        self.jobs_by_url: dict[str, set[str | None]] = defaultdict(set)
        self._waiting: deque[tuple[int, _Pending]] = deque()

    def bad(self, reason: str, node: Any = None) -> None:
        self.rows.bad(reason, _snippet(node) if node is not None else "")

    def build(self, pending: _Pending) -> None:
        job = pending.row.get("job")
        for checkout in pending.checkouts:
            for url in checkout.urls:
                self.jobs_by_url[url].add(job)
        if self._waiting or self._needs_file(pending.checkouts):
            self.rows.count += 1
            self._waiting.append((self.rows.count, pending))
        else:
            self.rows.add(_finish(pending, self.repo_re, self.jobs_by_url))

    def _needs_file(self, checkouts: list[_Checkout]) -> bool:
        if self.repo_re is not None or len(checkouts) <= 1:
            return False
        return sum(1 for c in checkouts if not (c.urls and all(is_library_url(u) for u in c.urls))) > 1

    def drain(self) -> None:
        while self._waiting:
            number, pending = self._waiting.popleft()
            self.rows.add(_finish(pending, self.repo_re, self.jobs_by_url), number)


_STREAMED = ("allBuilds", "builds", "jobs")


_WALKED = 24  # levels of jobs in folders (and lists in lists) walked; deeper ones are decoded whole


def _stream_node(stream: JSONStream, job: _Job | None, sink: _Sink, depth: int = 0) -> Iterator[RowChunk]:
    """A value at the cursor: an array walked element by element, an object member by member."""
    char = stream.peek()
    if char == "[" and depth < _WALKED:
        for _ in stream.elements():
            yield from _stream_element(stream, job, sink, depth=depth + 1)
    elif char == "{" and depth < _WALKED:
        yield from _stream_object(stream, job, sink, depth + 1)
    else:
        yield from _stream_element(stream, job, sink, depth=_WALKED)


def _stream_element(
    stream: JSONStream, job: _Job | None, sink: _Sink, numbers: set[str] | None = None, skip: set[str] | None = None,
    depth: int = 0,
) -> Iterator[RowChunk]:
    """One element of a list (a build, a run, a job of a list of jobs), decoded whole and turned
    into its row at once. `numbers` collects build numbers; a build whose number is in `skip` is
    dropped (it was read from `builds` before `allBuilds`)."""
    if stream.peek() == "[" and depth < _WALKED:
        yield from _stream_node(stream, job, sink, depth)
        return
    try:
        value = stream.value()
    except TooDeep:
        sink.bad(f"a value {TOO_DEEP}, not a build or job")
        return
    if isinstance(value, dict) and (numbers is not None or skip is not None):
        number = _text(value.get("number"))
        if skip is not None and number is not None and number in skip:
            return
        if numbers is not None and number is not None:
            numbers.add(number)
    try:
        _walk(value, job, sink)
    except RecursionError:
        sink.bad(f"a value {TOO_DEEP}, not a build or job")
    if sink.rows.ready():
        yield sink.rows.take()


def _stream_object(stream: JSONStream, job: _Job | None, sink: _Sink, depth: int = 0) -> Iterator[RowChunk]:
    """An object read member by member: the arrays `allBuilds`, `builds` (of a job) and `jobs` (of a
    folder or view) are streamed with the context of the members read before them (Jenkins writes
    a job's name, fullName and url before its builds); anything else is decoded whole and, when the
    object closes without such an array, classified as `_walk` does."""
    members: dict[str, Any] = {}
    streamed: set[str] = set()
    from_builds: set[str] = set()
    for key in stream.members():
        if key in _STREAMED and stream.peek() == "[":
            if key == "jobs" and ({"allBuilds", "builds"} & (streamed | set(members))):
                stream.skip()  # a job's own builds win over a `jobs` list (as in _walk)
                continue
            if key == "builds" and "allBuilds" in streamed:
                stream.skip()  # allBuilds has every build; builds only the latest
                continue
            context = _enter(members, job)
            streamed.add(key)
            if key == "jobs":
                for _ in stream.elements():
                    if stream.peek() == "{" and depth < _WALKED:
                        yield from _stream_object(stream, context, sink, depth + 1)
                    else:
                        yield from _stream_element(stream, context, sink, depth=_WALKED)
            else:
                numbers = from_builds if key == "builds" else None
                skip = from_builds if key == "allBuilds" and "builds" in streamed else None
                for _ in stream.elements():
                    yield from _stream_element(stream, context, sink, numbers, skip, _WALKED)
            continue
        try:
            members[key] = stream.value()
        except TooDeep:
            sink.bad(f"the value of {key!r} is {TOO_DEEP}")
            members[key] = None
    if streamed:
        return
    try:
        _walk(members, job, sink)
    except RecursionError:
        sink.bad(f"a value {TOO_DEEP}, not a build or job")
    if sink.rows.ready():
        yield sink.rows.take()


def _walk(node: Any, job: _Job | None, sink: _Sink) -> None:
    if isinstance(node, list):
        for element in node:
            _walk(element, job, sink)
        return
    if not isinstance(node, dict):
        sink.bad(f"{kind(node)}, not a build or job", node)
        return
    if "allBuilds" in node or "builds" in node:
        builds = node.get("allBuilds") if isinstance(node.get("allBuilds"), list) else node.get("builds")
        _walk(builds or [], _enter(node, job), sink)
    elif isinstance(node.get("jobs"), list):
        _walk(node["jobs"], _enter(node, job), sink)
    else:
        try:
            shape = _build_shape(node)
            if shape is None:
                return  # a job exported without builds: nothing to import
            sink.build(shape(node, job))
        except _BadTime as exc:
            sink.bad(str(exc), node)
        except _NotJenkins:
            keys = ", ".join(list(node)[:8])
            sink.bad(f"not a Jenkins build, job or run (keys: {keys})", node)


class _NotJenkins(Exception):
    pass


def _build_shape(node: JSONObject) -> Any:
    """The function that turns `node` into a pending row; None for a job without builds."""
    if "startTimeMillis" in node or ("status" in node and ("stages" in node or _run_number(node))):
        return lambda n, j: _Pending(_wfapi_row(n, j))
    if "pipeline" in node and any(k in node for k in ("state", "startTime", "durationInMillis")):
        return _blueocean
    if "number" in node or "building" in node or (
        "timestamp" in node and any(k in node for k in ("duration", "result", "actions"))
    ):
        return _classic
    if "fullName" in node or "color" in node or "/job/" in str(node.get("url") or ""):
        return None
    raise _NotJenkins


def _enter(node: JSONObject, parent: _Job | None) -> _Job:
    """The context a job, folder or view gives to what it contains."""
    url = _text(node.get("url"))
    is_view = bool(url and _VIEW_URL.search(url)) or str(node.get("_class", "")).endswith("View")
    if is_view:
        return parent or _Job()
    full = _text(node.get("fullName")) or job_from_url(url)
    base = (parent.full_name or parent.chained) if parent else None
    name = _text(node.get("name"))
    chained = "/".join(p for p in (base, name) if p) or None
    return _Job(full_name=full, chained=chained, url=url)


def _job_name(job: _Job | None, build_url: str | None, full_display_name: str | None) -> str | None:
    if job and job.full_name:
        return job.full_name
    from_url = job_from_url(build_url)
    if from_url:
        return from_url
    if job and job.chained:
        return job.chained
    if full_display_name:
        match = _DISPLAY_NUMBER.match(full_display_name)
        if match:
            return "/".join(_DISPLAY_SEPARATOR.split(match.group(1)))
    return None


# --- the three shapes -------------------------------------------------------------------------

def _classic(build: JSONObject, job: _Job | None) -> _Pending:
    actions = [a for a in build.get("actions") or [] if isinstance(a, dict)]
    params = _params(actions)
    number = _text(build.get("number"))
    build_id = _text(build.get("id"))
    if number is None and build_id and build_id.isdigit():
        number = build_id
    url = _text(build.get("url"))
    if url is None and job and job.url and number:
        url = f"{job.url.rstrip('/')}/{number}/"
    result = _text(build.get("result"))
    building = _text(build.get("building"))
    if building is None and "result" in build:
        building = "true" if result is None else "false"
    duration = _text(build.get("duration"))
    start = _ms(build.get("timestamp"), "timestamp")
    started_at = _iso(start, "timestamp")
    finished = None
    if building != "true" and isinstance(start, int) and start > 0 and duration is not None:
        end = _ms(duration, "duration")
        if isinstance(end, int) and not (building is None and end == 0):
            finished = _sum_iso(start, end, "timestamp + duration")
    causes = _causes(actions)
    row = _new_row(
        api="classic",
        job=_job_name(job, url, _text(build.get("fullDisplayName"))),
        number=number,
        id=build_id,
        result=result,
        building=building,
        started_at=started_at,
        finished_at=finished,
        duration_ms=duration,
        url=url,
        display_name=_text(build.get("displayName")),
        full_display_name=_text(build.get("fullDisplayName")),
        description=_text(build.get("description")),
        triggered_by=_triggered_by(causes),
        cause=_first_description(causes),
    )
    row.update({f"params.{name}": value for name, value in params.items()})
    fallback = _changeset_sha(build) or params.get("GIT_COMMIT")
    sets = build.get("changeSets") if isinstance(build.get("changeSets"), list) else [build.get("changeSet")]
    items = [i for c in sets if isinstance(c, dict) and isinstance(c.get("items"), list) for i in c["items"]]
    return _Pending(row, _checkouts(actions), fallback, _commit_times(items))


def _wfapi_row(run: JSONObject, job: _Job | None) -> Row:
    status = _text(run.get("status"))
    building = status in WFAPI_RUNNING
    result = WFAPI_RESULTS.get(status, status) if status else None
    links = run.get("_links")
    self_link = links.get("self") if isinstance(links, dict) else None
    href = _text(self_link.get("href")) if isinstance(self_link, dict) else None
    url = re.sub(r"wfapi/describe/?$", "", href) if href else None
    run_id = _text(run.get("id"))
    number = run_id if run_id and run_id.isdigit() else _run_number(run)
    start = _ms(run.get("startTimeMillis"), "startTimeMillis")
    started_at = _iso(start, "startTimeMillis")
    finished = None
    if not building and isinstance(start, int) and start > 0:
        end = _ms(run.get("endTimeMillis"), "endTimeMillis")
        duration = _ms(run.get("durationMillis"), "durationMillis")
        if isinstance(end, int) and end > 0:
            finished = _iso(end, "endTimeMillis")
        elif isinstance(duration, int):
            finished = _sum_iso(start, duration, "startTimeMillis + durationMillis")
    return _new_row(
        api="wfapi",
        job=_job_name(job, href, None),
        number=number,
        id=run_id,
        result=result,
        building="true" if building else "false" if status else None,
        status=status,
        started_at=started_at,
        finished_at=finished,
        duration_ms=_text(run.get("durationMillis")),
        url=url,
        display_name=_text(run.get("name")),
    )


def _blueocean(run: JSONObject, job: _Job | None) -> _Pending:
    state = _text(run.get("state"))
    building = state in BLUEOCEAN_RUNNING
    result = _text(run.get("result"))
    result = None if result == "UNKNOWN" or building else result
    links = run.get("_links")
    self_link = links.get("self") if isinstance(links, dict) else None
    href = _text(self_link.get("href")) if isinstance(self_link, dict) else None
    start = _iso_time(run.get("startTime"))
    duration = _text(run.get("durationInMillis"))
    duration_ms = _ms(duration, "durationInMillis")
    finished = None
    if not building and state is not None:
        end = _iso_time(run.get("endTime"))
        if end is not None:
            finished = end if isinstance(end, str) else ms_to_iso(end)
        elif isinstance(start, int) and isinstance(duration_ms, int):
            finished = _sum_iso(start, duration_ms, "startTime + durationInMillis")
    causes = [c for c in run.get("causes") or [] if isinstance(c, dict)]
    changes = [c for c in run.get("changeSet") or [] if isinstance(c, dict)]
    sha = _text(run.get("commitId")) or next(
        (_text(c.get("commitId")) for c in reversed(changes) if _text(c.get("commitId"))), None
    )
    row = _new_row(
        api="blueocean",
        job=_job_name(job, href, None) or _text(run.get("pipeline")),
        number=_text(run.get("id")),
        id=_text(run.get("id")),
        result=result,
        building="true" if building else "false" if state else None,
        status=state,
        started_at=_iso(start, "startTime", epoch=False),
        finished_at=finished,
        duration_ms=duration,
        url=href,
        display_name=_text(run.get("name")),
        description=_text(run.get("description")),
        triggered_by=_triggered_by(causes),
        cause=_first_description(causes),
    )
    return _Pending(row, [], sha, _commit_times(changes))


# --- actions ----------------------------------------------------------------------------------

def _params(actions: list[JSONObject]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for action in actions:
        parameters = action.get("parameters")
        for param in parameters if isinstance(parameters, list) else []:
            name = _text(param.get("name")) if isinstance(param, dict) else None
            if name:
                out.setdefault(name, scalar_text(param.get("value")))
    return out


def _causes(actions: list[JSONObject]) -> list[JSONObject]:
    for action in actions:
        if isinstance(action.get("causes"), list) and "Interrupted" not in str(action.get("_class", "")):
            return [c for c in action["causes"] if isinstance(c, dict)]
    return []


def _triggered_by(causes: list[JSONObject]) -> str | None:
    for key in ("userId", "userName"):
        user = next((_text(c.get(key)) for c in causes if _text(c.get(key))), None)
        if user:
            return user
    return _first_description(causes)


def _first_description(causes: list[JSONObject]) -> str | None:
    return _text(causes[0].get("shortDescription")) if causes else None


def _checkouts(actions: list[JSONObject]) -> list[_Checkout]:
    out: list[_Checkout] = []
    for action in actions:
        if "lastBuiltRevision" not in action and not str(action.get("_class", "")).endswith(".BuildData"):
            continue
        revision = action.get("lastBuiltRevision")
        sha = _text(revision.get("SHA1")) if isinstance(revision, dict) else None
        if not sha:
            continue
        branches = revision.get("branch") if isinstance(revision, dict) else None
        first = branches[0] if isinstance(branches, list) and branches and isinstance(branches[0], dict) else {}
        urls = [u for u in action.get("remoteUrls") or [] if isinstance(u, str)]
        checkout = _Checkout(sha, _text(first.get("name")), urls)
        if not any(c.sha == checkout.sha and c.urls == checkout.urls for c in out):
            out.append(checkout)
    return out


def _changeset_sha(build: JSONObject) -> str | None:
    sets = build.get("changeSets")
    if not isinstance(sets, list):
        sets = [build.get("changeSet")]
    for change_set in reversed(sets):
        entries = change_set.get("items") if isinstance(change_set, dict) else None
        for entry in reversed(entries if isinstance(entries, list) else []):
            if isinstance(entry, dict):
                sha = _text(entry.get("commitId")) or _text(entry.get("id"))
                if sha:
                    return sha
    return None


def _choose(
    checkouts: list[_Checkout], repo_re: re.Pattern[str] | None, jobs_by_url: dict[str, set[str | None]]
) -> _Checkout | None:
    """The BuildData of the application's repository (rule in the module docstring)."""
    if repo_re is not None:
        return next((c for c in checkouts if any(repo_re.search(u) for u in c.urls)), None)
    if len(checkouts) <= 1:
        return checkouts[0] if checkouts else None
    apps = [c for c in checkouts if not (c.urls and all(is_library_url(u) for u in c.urls))]
    if not apps:
        return None
    return min(apps, key=lambda c: max((len(jobs_by_url[u]) for u in c.urls), default=0))


def _finish(pending: _Pending, repo_re: re.Pattern[str] | None, jobs_by_url: dict[str, set[str | None]]) -> Row:
    row = pending.row
    chosen = _choose(pending.checkouts, repo_re, jobs_by_url)
    if chosen is not None:
        row["commit_sha"] = chosen.sha
        row["branch"] = _short_branch(chosen.branch)
        matching = [u for u in chosen.urls if repo_re is None or repo_re.search(u)]
        row["repo_url"] = next(iter(matching or chosen.urls), None)
    else:
        row["commit_sha"] = pending.fallback_sha
    if row.get("branch") is None:
        row["branch"] = row.get("params.GIT_BRANCH") or row.get("params.BRANCH_NAME")
    row["commit_time"] = pending.commit_times.get(row["commit_sha"] or "")
    return row


def _commit_times(entries: list[Any]) -> dict[str, str]:
    """Change-set entries' commit -> time: `timestamp` (epoch ms, as ISO; Blue Ocean: ISO text), else `date`."""
    out: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        sha = _text(entry.get("commitId")) or _text(entry.get("id"))
        stamp = _ms(entry.get("timestamp"), "change set timestamp")
        when = _iso(stamp, "change set timestamp") if isinstance(stamp, int) and stamp > 0 else stamp or _text(entry.get("date"))
        if sha and when:
            out[sha] = str(when)
    return out


def _short_branch(name: str | None) -> str | None:
    if not name:
        return None
    for prefix in (r"refs/remotes/[^/]+/", r"remotes/[^/]+/", r"refs/heads/", r"origin/"):
        name = re.sub(f"^{prefix}", "", name)
    return name


# --- values -----------------------------------------------------------------------------------

def _text(value: Any) -> str | None:
    """A scalar as text; None for null and for containers (where a scalar was expected)."""
    if isinstance(value, (dict, list)):
        return None
    return scalar_text(value)


_MS_1990 = 631_152_000_000  # 1990-01-01T00:00:00Z: an earlier epoch-ms value is no Jenkins time
_MS_MAX = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _ms(value: Any, label: str = "time") -> int | str | None:
    """Integer milliseconds; the text as written when it is not an integer; None when missing.
    A number too large for any date (`1e20`, thirty digits) is a _BadTime."""
    text = _text(value)
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        if len(text.lstrip("-")) > 19:
            raise _BadTime(f"{label} {_cut(text)} is out of range for epoch milliseconds")
        return int(text)
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    if number.adjusted() > 18:
        raise _BadTime(f"{label} {_cut(text)} is out of range for epoch milliseconds")
    return int(number) if number == number.to_integral_value() else text


def _cut(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _iso(start: int | str | None, label: str = "timestamp", *, epoch: bool = True) -> str | None:
    """A start time for the row: ISO text from epoch milliseconds; 0 (or less) is unknown; odd text
    kept. Before 1990 is not a Jenkins time (seconds where milliseconds belong) and beyond year
    9999 is none at all: both are a _BadTime naming the value."""
    if not isinstance(start, int):
        return start
    if start <= 0:
        return None
    if epoch and start < _MS_1990:  # (not for milliseconds computed from ISO text)
        seconds = " (it reads as epoch seconds: Jenkins writes milliseconds)" if start >= _MS_1990 // 1000 else ""
        raise _BadTime(f"{label} {start} is before 1990 as epoch milliseconds{seconds}; export the build again or fix the value")
    if start > _MS_MAX:
        raise _BadTime(f"{label} {start} is out of range for epoch milliseconds (after year 9999)")
    return ms_to_iso(start)


def _sum_iso(start: int, duration: int, label: str) -> str:
    """`start + duration` as ISO text; a _BadTime when the sum is no date."""
    total = start + duration
    if not 0 <= total <= _MS_MAX:
        raise _BadTime(f"{label} ({start} + {duration} ms) is out of range for a date")
    return ms_to_iso(total)


def _iso_time(value: Any) -> int | str | None:
    """Blue Ocean time text (`2019-05-29T12:07:15.104+0000`) as epoch ms; odd text kept."""
    text = _text(value)
    if not text:
        return None
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if moment.tzinfo is None:
        return text
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _run_number(run: JSONObject) -> str | None:
    match = _RUN_NAME.fullmatch(str(run.get("name") or ""))
    return match.group(1) if match else None


def _blueocean_job(parts: list[str]) -> str | None:
    """`.../organizations/o/pipelines/a/pipelines/b/branches/c/runs/7/` -> `a/b/c`."""
    names: list[str] = []
    i = parts.index("organizations") + 2
    while i < len(parts) - 1 and parts[i] != "runs":
        if parts[i] in ("pipelines", "branches") and parts[i + 1]:
            names.append(unquote(parts[i + 1]))
            i += 2
        else:
            i += 1
    return "/".join(names) or None


def _snippet(value: Any) -> str:
    return (scalar_text(value) or "")[:200]

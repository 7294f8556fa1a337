"""`backfill fetch jenkins`: every build of the given jobs, in `allBuilds[...]{M,N}` ranges.

`builds` holds only the newest builds; `allBuilds{M,N}` pages through all that Jenkins kept,
newest first. A folder or multibranch project (an answer with `jobs[]`) expands to the jobs inside
it, recursively. Each range is written as the job object Jenkins answered (`_class`, `name`,
`fullName`, `url`, `firstBuild`, `lastBuild`, `allBuilds`), one per line, which is what the
Jenkins reader reads. A build seen twice (new builds shift the ranges while paging) is written once.

Completeness, per job: the oldest build fetched is Jenkins' `firstBuild` (else the export fell
short), and the numbers from the first to the last are all there (else a gap is reported: builds
that were deleted, or discarded by the job's "discard old builds" setting).
"""

from __future__ import annotations

import base64
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from backfill.errors import FetchStopped, UsageError
from backfill.fetch.core import Fetch, FetchResult, Http, Progress, read_token, run_fetch

USER_ENV, TOKEN_ENV = "JENKINS_USER", "JENKINS_TOKEN"
# What the Jenkins reader and mappings/jenkins.yaml use: parameters, causes, git BuildData, change sets.
_CHANGES = "_class,kind,items[_class,commitId,id,timestamp,msg,authorEmail]"
BUILD_FIELDS = (
    "_class,number,id,url,result,building,timestamp,duration,displayName,fullDisplayName,description,"
    "actions[_class,parameters[_class,name,value],causes[_class,shortDescription,userId,userName,upstreamProject,upstreamBuild],"
    "lastBuiltRevision[SHA1,branch[SHA1,name]],remoteUrls],"
    f"changeSets[{_CHANGES}],changeSet[{_CHANGES}]"
)
JOB_FIELDS = "_class,name,fullName,url,firstBuild[number],lastBuild[number]"
MAX_DEPTH = 10  # folders inside folders


@dataclass(frozen=True)
class JenkinsOptions:
    url: str
    jobs: tuple[str, ...]
    page_size: int = 100
    since: datetime | None = None


def job_name(text: str) -> str:
    """`team/deploy-api`, also written as Jenkins' URL path (`job/team/job/deploy-api/`): `team/deploy-api`."""
    parts = [p for p in text.strip().strip("/").split("/") if p]
    if parts and parts[0] == "job" and len(parts) % 2 == 0 and all(p == "job" for p in parts[::2]):
        parts = parts[1::2]
    return "/".join(parts)


def job_path(name: str) -> str:
    """`team/deploy-api` -> `/job/team/job/deploy-api` (each name percent-encoded, as Jenkins does)."""
    return "".join(f"/job/{quote(part, safe='')}" for part in name.split("/"))


def keys(value: Any) -> Iterator[tuple[str, Any]]:
    """The (job, build number) pairs of one written page."""
    if isinstance(value, dict):
        for build in value.get("allBuilds") or []:
            yield (str(value.get("fullName")), build.get("number") if isinstance(build, dict) else None)


def auth_headers(user: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode("ascii")}


def read_credentials(token_file: str | None, user: str | None = None) -> dict[str, str]:
    user = (user or os.environ.get(USER_ENV, "")).strip()
    if not user:
        raise UsageError(f"no Jenkins user: set {USER_ENV} (the user the API token belongs to) or pass --user")
    token = read_token(TOKEN_ENV, token_file, header="Authorization")
    return auth_headers(user, token)


def fetch(options: JenkinsOptions, output: str, http: Http, *, progress: Progress | None = None,
          clock: Callable[[], float] = time.time) -> FetchResult:
    if not options.jobs:
        raise UsageError("give at least one --job PATH")
    for name in options.jobs:
        if not job_name(name):
            raise UsageError(f"--job {name!r}: give a job path such as team/deploy-api")
    identity = {"source": "jenkins", "url": http.base_url, "jobs": list(options.jobs), "page_size": options.page_size,
                "since": options.since.isoformat() if options.since else None}
    return run_fetch(lambda f: _run(f, options), output=output, identity=identity, keys=keys,
                     empty={"allBuilds": []}, http=http, progress=progress, clock=clock)


def _run(fetch: Fetch, options: JenkinsOptions) -> None:
    http, cursor = fetch.http, dict(fetch.cursor)
    if "jobs" not in cursor:
        jobs: list[str] = []
        for name in options.jobs:
            _expand(http, job_name(name), jobs, 0)
        cursor = {"jobs": jobs, "index": 0, "start": 0, "first": {}}
        fetch.output.save(cursor)
        if len(jobs) != len(options.jobs):
            fetch.note(f"{len(options.jobs)} --job given, {len(jobs)} jobs after expanding folders: {', '.join(jobs)}")
    since_ms = int(options.since.timestamp() * 1000) if options.since else None
    size = options.page_size
    while cursor["index"] < len(cursor["jobs"]):
        name, start = cursor["jobs"][cursor["index"]], cursor["start"]
        tree = f"{JOB_FIELDS},allBuilds[{BUILD_FIELDS}]{{{start},{start + size}}}"
        doc, _ = http.get_json(http.url(job_path(name) + "/api/json"), {"tree": tree})
        builds = doc.get("allBuilds") if isinstance(doc, dict) else None
        if not isinstance(builds, list):
            raise FetchStopped(f"{name}: the answer has no allBuilds list; is it a job? (check --job)")
        full_name = str(doc.get("fullName") or name)
        done = len(builds) < size
        if since_ms is not None:
            kept = [b for b in builds if not isinstance(b.get("timestamp"), int) or b["timestamp"] >= since_ms]
            done = done or len(kept) < len(builds)
            builds = kept
        first = (doc.get("firstBuild") or {}).get("number") if isinstance(doc.get("firstBuild"), dict) else None
        cursor = {**cursor, "first": {**cursor["first"], full_name: first}}
        cursor.update({"index": cursor["index"] + 1, "start": 0} if done else {"start": start + size})
        new = fetch.output.fresh(builds, lambda b: (full_name, b.get("number") if isinstance(b, dict) else None))
        if new:
            fetch.page({**doc, "fullName": full_name, "allBuilds": new}, cursor)
        else:
            fetch.output.save(cursor)
    _check(fetch, cursor, options)


def _expand(http: Http, name: str, jobs: list[str], depth: int) -> None:
    doc, _ = http.get_json(http.url(job_path(name) + "/api/json"), {"tree": "_class,name,fullName,jobs[_class,name]"})
    children = doc.get("jobs") if isinstance(doc, dict) else None
    if isinstance(children, list) and depth < MAX_DEPTH:
        for child in children:
            if isinstance(child, dict) and child.get("name"):
                _expand(http, f"{name}/{child['name']}", jobs, depth + 1)
    elif name not in jobs:
        jobs.append(name)


def _check(fetch: Fetch, cursor: dict[str, Any], options: JenkinsOptions) -> None:
    numbers: dict[str, list[int]] = defaultdict(list)
    for job, number in fetch.output.seen:
        if isinstance(number, int):
            numbers[job].append(number)
    result = fetch.result
    for job, first in cursor["first"].items():
        found = sorted(numbers.get(job, []))
        if not found:
            fetch.note(f"{job}: no builds{' since ' + options.since.isoformat() if options.since else ''}")
            continue
        low, high = found[0], found[-1]
        if options.since is None and isinstance(first, int) and low > first:
            result.shortfalls.append(f"{job}: Jenkins' oldest build is #{first}, but the oldest fetched is #{low}")
        elif options.since is None and low > 1:  # Jenkins itself starts there
            result.gaps.append(f"history of {job} starts at #{low}: older builds were discarded by Jenkins")
        missing = high - low + 1 - len(found)
        if missing > 0:
            result.gaps.append(
                f"{job}: {missing} build numbers between #{low} and #{high} are missing "
                f"({_ranges(found)}); deleted, or discarded by Jenkins"
            )


def _ranges(found: Iterable[int], most: int = 5) -> str:
    """The missing numbers of a sorted list, as ranges: `#5-#9, #20`."""
    holes, previous = [], None
    for number in found:
        if previous is not None and number > previous + 1:
            holes.append(f"#{previous + 1}" if number == previous + 2 else f"#{previous + 1}-#{number - 1}")
        previous = number
    return ", ".join(holes[:most]) + (f" and {len(holes) - most} more" if len(holes) > most else "")

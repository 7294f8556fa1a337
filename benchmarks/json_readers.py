"""JSON readers' speed and memory: `backfill preview --out` on big Jenkins, GitLab and GitHub
exports next to a plain `json.load` of the same file.

    python benchmarks/json_readers.py [--records 200000] [--only jenkins,gitlab,github-actions,github-deployments,array]
                                      [--repeat 1] [--keep DIR]

Generates, with a fixed seed and the field richness of real exports:
  - jenkins: a folder of jobs with `allBuilds` (`/api/json?tree=jobs[allBuilds[...]]`): each build with
    parameters, causes, git BuildData (revision, branch, remotes; a shared library beside the app on
    a third of them), change sets with items, culprits, empty actions;
  - gitlab: pages of `GET /projects/:id/deployments` appended to one file (as `gh api --paginate`
    or a curl loop writes them), each deployment with user, environment, deployable (commit,
    pipeline, user, artifacts, tag list) and float durations;
  - github-actions: workflow-runs pages `{"total_count": N, "workflow_runs": [...]}` of 100 runs
    appended (as `gh api --paginate .../actions/workflows/deploy.yml/runs` writes them), newest
    first, each run as GitHub writes it (about 3.6 KB: full actor and triggering_actor user
    objects, head_commit with author and committer, repository and head_repository as the
    fixtures trim them, pull_requests on pull_request runs, a fork's head_repository); runs before
    September 2020 in the 2020 shape (no name, path, display_title, run_started_at, run_attempt,
    actor, triggering_actor); re-runs (run_attempt 2 or 3, previous_attempt_url) with their earlier
    attempt listed again in a later page (an older export appended) and a few copies of a page's
    last run at the top of the next (pages that shifted while gh paged). `--records` counts run
    objects, copies included. Jobs are not embedded (`fetch --jobs` would add them);
  - github-deployments: GraphQL pages of 100 deployments appended (as `backfill fetch github
    --deployments` or the README's `gh api graphql --paginate` query writes them), newest first,
    each node with the fetch query's fields plus `commit { committedDate }`, `latestStatus` and
    `statuses(first: 100)` (QUEUED, IN_PROGRESS, then SUCCESS, FAILURE or ERROR, and INACTIVE on
    most successes once a newer deployment replaced them; a few still in progress, with no
    statuses, or inactive-only); a few nodes repeated across a page boundary;
  - array: a plain JSON array of flat-ish records read with `format: json` (about 260 bytes each;
    800,000 records is the 208 MB file of issue 8).
Then runs, each in its own process so that peak memory (max RSS) is measured separately:
  1. `json.load(open(path))` of the file;
  2. `backfill preview FILE -m MAPPING --out payloads.jsonl --show 0`.
Prints both times, the ratio and both peaks. Targets (issue 11): preview <= 1.5x json.load (aim
1.0x); peak <= 500 MB at 200,000 records; at 400,000 records the peak grows only by the plan's
per-event cost. The machine may be shared: repeat (`--repeat`) and take the best; CPU time (user +
system of the child) is printed beside the wall time, as it suffers less from other load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

JENKINS_MAPPING = ROOT / "mappings" / "jenkins.yaml"
GITLAB_MAPPING = ROOT / "mappings" / "gitlab.yaml"
ACTIONS_MAPPING = ROOT / "mappings" / "github-actions.yaml"
DEPLOYMENTS_MAPPING = ROOT / "mappings" / "github-deployments.yaml"
ARRAY_MAPPING = """\
source: {format: json}
entityId: {from: service}
timestamp: {from: finished_at}
attributes:
  env: {from: environment}
  status: result
  build_id: build
  build_commit_sha: sha
  initiator: {from: user.login, default: bot}
filter:
  - {field: result, not_in: [ABORTED]}
dedupe: [service, build]
"""

_T0 = 1_420_070_400_000  # 2015-01-01 in epoch ms
_SPAN = 10 * 365 * 86_400_000
PEOPLE = ["alice", "bob", "chen.li", "dana.k", "erik", "farah", "gus", "hana"]
_HEX = "0123456789abcdef"


def _sha(rng: random.Random) -> str:
    return "".join(rng.choice(_HEX) for _ in range(40))


def _jenkins_build(rng: random.Random, job: str, number: int, app_url: str) -> dict:
    start = _T0 + rng.randrange(_SPAN)
    duration = rng.randrange(30_000, 1_800_000)
    result = rng.choices(["SUCCESS", "FAILURE", "UNSTABLE", "ABORTED"], [80, 12, 5, 3])[0]
    sha = _sha(rng)
    user = rng.choice(PEOPLE)
    cause = (
        {"_class": "hudson.model.Cause$UserIdCause", "shortDescription": f"Started by user {user}",
         "userId": user, "userName": user.title()}
        if rng.random() < 0.7 else
        {"_class": "hudson.triggers.TimerTrigger$TimerTriggerCause", "shortDescription": "Started by timer"}
    )
    actions: list[dict] = [
        {"_class": "hudson.model.ParametersAction", "parameters": [
            {"_class": "hudson.model.StringParameterValue", "name": "ENV",
             "value": rng.choice(["production", "staging", "qa"])},
            {"_class": "hudson.model.StringParameterValue", "name": "VERSION", "value": f"2.{number % 97}.{number % 13}"},
            {"_class": "hudson.model.BooleanParameterValue", "name": "SKIP_TESTS", "value": rng.random() < 0.1},
        ]},
        {"_class": "hudson.model.CauseAction", "causes": [cause]},
        {"_class": "jenkins.metrics.impl.TimeInQueueAction"},
        {},
        {"_class": "hudson.plugins.git.util.BuildData",
         "lastBuiltRevision": {"SHA1": sha, "branch": [{"SHA1": sha, "name": "refs/remotes/origin/main"}]},
         "remoteUrls": [app_url], "scmName": ""},
    ]
    if number % 3 == 0:
        lib = _sha(rng)
        actions.append({"_class": "hudson.plugins.git.util.BuildData",
                        "lastBuiltRevision": {"SHA1": lib, "branch": [{"SHA1": lib, "name": "refs/remotes/origin/master"}]},
                        "remoteUrls": ["https://git.example.com/platform/jenkins-shared-library.git"], "scmName": ""})
    actions.append({"_class": "org.jenkinsci.plugins.workflow.cps.EnvActionImpl"})
    items = [
        {"_class": "hudson.plugins.git.GitChangeSet", "affectedPaths": [f"src/module{i}/file{number % 50}.py"],
         "commitId": _sha(rng) if i else sha, "timestamp": start - 3_600_000 * (i + 1),
         "author": {"fullName": user.title()}, "authorEmail": f"{user}@example.com",
         "msg": f"Fix issue #{number + i}"}
        for i in range(rng.randrange(0, 2))
    ]
    return {
        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
        "actions": actions,
        "artifacts": [],
        "building": False,
        "description": None if rng.random() < 0.8 else f"Release {number}",
        "displayName": f"#{number}",
        "duration": duration,
        "fullDisplayName": f"{job.replace('/', ' » ')} #{number}",
        "id": str(number),
        "keepLog": False,
        "number": number,
        "queueId": 100_000 + number,
        "result": result,
        "timestamp": start,
        "url": f"https://jenkins.example.com/job/{job.replace('/', '/job/')}/{number}/",
        "changeSets": [{"_class": "hudson.plugins.git.GitChangeSetList", "items": items, "kind": "git"}] if items else [],
    }


def generate_jenkins(path: Path, records: int, seed: int = 11) -> None:
    """A folder of 40 deploy jobs, each with its `allBuilds`, written one build at a time."""
    rng = random.Random(seed)
    jobs = 40
    with open(path, "w", encoding="utf-8") as out:
        out.write('{"_class":"com.cloudbees.hudson.plugins.folder.Folder","name":"deploy","fullName":"deploy",'
                  '"url":"https://jenkins.example.com/job/deploy/","jobs":[')
        for j in range(jobs):
            name = f"deploy/service-{j:02d}"
            app = f"https://git.example.com/acme/service-{j:02d}.git"
            count = records // jobs + (1 if j < records % jobs else 0)
            out.write("," if j else "")
            out.write(json.dumps({"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": f"service-{j:02d}",
                                  "fullName": name, "url": f"https://jenkins.example.com/job/deploy/job/service-{j:02d}/"})[:-1])
            out.write(',"allBuilds":[')
            for n in range(count, 0, -1):
                out.write(json.dumps(_jenkins_build(rng, name, n, app), separators=(",", ":")))
                if n > 1:
                    out.write(",")
            out.write("]}")
        out.write("]}\n")


def _gitlab_user(rng: random.Random) -> dict:
    name = rng.choice(PEOPLE)
    uid = PEOPLE.index(name) + 400
    return {"id": uid, "username": name, "name": name.title(), "state": "active",
            "avatar_url": f"https://gitlab.example.com/uploads/-/system/user/avatar/{uid}/avatar.png",
            "web_url": f"https://gitlab.example.com/{name}"}


def _gitlab_deployment(rng: random.Random, number: int) -> dict:
    start = _T0 + rng.randrange(_SPAN)
    finish = start + rng.randrange(30_000, 900_000)

    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"

    status = rng.choices(["success", "failed", "canceled", "running", "created"], [80, 10, 4, 3, 3])[0]
    env = rng.choice(["production", "staging", "review/feature-x"])
    sha = _sha(rng)
    user = _gitlab_user(rng)
    del user["avatar_url"], user["web_url"], user["state"]
    return {
        "id": 100_000 + number, "iid": number, "ref": "main", "sha": sha,
        "created_at": iso(start - 5000), "updated_at": iso(finish), "status": status, "user": user,
        "environment": {"id": ["production", "staging", "review/feature-x"].index(env) + 1, "name": env,
                        "external_url": f"https://{env.split('/')[0]}.example.com"},
        "deployable": {
            "id": 900_000 + number, "status": status, "stage": "deploy", "name": f"deploy:{env}", "ref": "main",
            "tag": False, "coverage": None, "created_at": iso(start - 5000), "started_at": iso(start),
            "finished_at": iso(finish) if status in ("success", "failed", "canceled") else None,
            "duration": round((finish - start) / 1000 + rng.random(), 6),
            "commit": {"id": sha, "short_id": sha[:8], "created_at": iso(start - 7_200_000),
                       "parent_ids": [sha[::-1]], "title": f"Merge branch 'feature-{number}' into 'main'",
                       "author_name": user["name"], "author_email": f"{user['username']}@example.com"},
            "pipeline": {"id": 500_000 + number, "project_id": 42, "sha": sha, "ref": "main", "status": status,
                         "web_url": f"https://gitlab.example.com/acme/app/-/pipelines/{500_000 + number}"},
            "web_url": f"https://gitlab.example.com/acme/app/-/jobs/{900_000 + number}",
            "artifacts": [{"file_type": "trace", "size": rng.randrange(1000, 90000), "filename": "job.log", "file_format": None}],
            "runner": None, "artifacts_expire_at": None, "tag_list": ["docker", "deploy"],
        },
    }


def generate_gitlab(path: Path, records: int, seed: int = 12, per_page: int = 100) -> None:
    """Pages of 100 deployments, appended as `gh api --paginate` writes them (no separator)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for first in range(0, records, per_page):
            page = [_gitlab_deployment(rng, n + 1) for n in range(first, min(records, first + per_page))]
            out.write(json.dumps(page, separators=(",", ":")))


_GH_START = 1_573_603_200_000  # 2019-11-13, when GitHub Actions became generally available
_GH_SPAN = 6 * 365 * 86_400_000
_GH_2020_SHAPE = 1_598_918_400_000  # runs before 2020-09-01 lack name, path, run_attempt, actor, ...
_GH_API = "https://api.github.com"


def _iso_s(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def _gh_user(login: str) -> dict:
    uid = 6_600_000 + PEOPLE.index(login) if login in PEOPLE else 41_898_282
    api = f"{_GH_API}/users/{login}"
    return {"login": login, "id": uid, "node_id": f"MDQ6VXNlcj{uid}", "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "gravatar_id": "", "url": api, "html_url": f"https://github.com/{login}", "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}", "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs", "repos_url": f"{api}/repos", "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events", "type": "Bot" if login.endswith("[bot]") else "User",
            "site_admin": False}


def _gh_repository(full_name: str, rid: int) -> dict:
    return {"id": rid, "node_id": f"MDEwOlJlcG9zaXRvcnk{rid}", "name": full_name.split("/")[1], "full_name": full_name,
            "private": full_name.startswith("acme/"), "html_url": f"https://github.com/{full_name}"}


def _github_run(rng: random.Random, run_id: int, number: int, created: int, attempt: int) -> dict:
    """One workflow run as `/actions/workflows/{id}/runs` lists it (attempt: its run_attempt)."""
    repo, repo_api = "acme/shop", f"{_GH_API}/repos/acme/shop"
    event = rng.choices(["push", "workflow_dispatch", "pull_request", "schedule"], [70, 15, 10, 5])[0]
    status = rng.choices(["completed", "in_progress", "queued", "waiting"], [97, 1.5, 1, 0.5])[0]
    conclusion = None if status != "completed" else rng.choices(
        ["success", "failure", "cancelled", "skipped", "timed_out", "startup_failure", "action_required", "neutral"],
        [78, 10, 5, 3, 1, 1, 1, 1])[0]
    sha = _sha(rng)
    login = rng.choice(PEOPLE) if event != "schedule" else "github-actions[bot]"
    started = created + (rng.randrange(3_600_000, 3 * 86_400_000) if attempt > 1 else rng.randrange(0, 4000))
    updated = started + rng.randrange(40_000, 1_200_000)
    branch = "main" if event != "pull_request" else f"feature/change-{number}"
    fork = event == "pull_request" and rng.random() < 0.2
    message = rng.choice(["Pin payment SDK to 4.2", "Add cart expiry job", "Bump actions/checkout from 3 to 4",
                          "Fix flaky checkout test\n\nRetry the payment stub twice.", "Release 2.14"])
    author = {"name": login.title(), "email": f"{login}@acme.example"}
    run: dict = {
        "id": run_id, "name": "Deploy", "node_id": f"WFR_kwLOBF0{run_id}", "head_branch": branch, "head_sha": sha,
        "path": ".github/workflows/deploy.yml", "display_title": message.split("\n")[0], "run_number": number,
        "event": event, "status": status, "conclusion": conclusion, "workflow_id": 61840311,
        "check_suite_id": 2_300_000_000 + run_id % 100_000_000, "check_suite_node_id": f"CS_kwDOBF0{run_id}",
        "url": f"{repo_api}/actions/runs/{run_id}", "html_url": f"https://github.com/{repo}/actions/runs/{run_id}",
        "pull_requests": [] if event != "pull_request" or fork else [{
            "url": f"{repo_api}/pulls/{number}", "id": 1_200_000_000 + number, "number": number,
            "head": {"ref": branch, "sha": sha, "repo": {"id": 73219115, "url": repo_api, "name": "shop"}},
            "base": {"ref": "main", "sha": _sha(rng), "repo": {"id": 73219115, "url": repo_api, "name": "shop"}}}],
        "created_at": _iso_s(created), "updated_at": _iso_s(updated), "actor": _gh_user(login),
        "run_attempt": attempt, "referenced_workflows": [], "run_started_at": _iso_s(started),
        "triggering_actor": _gh_user(login if attempt == 1 else rng.choice(PEOPLE)),
        "jobs_url": f"{repo_api}/actions/runs/{run_id}/jobs", "logs_url": f"{repo_api}/actions/runs/{run_id}/logs",
        "check_suite_url": f"{repo_api}/check-suites/{2_300_000_000 + run_id % 100_000_000}",
        "artifacts_url": f"{repo_api}/actions/runs/{run_id}/artifacts", "cancel_url": f"{repo_api}/actions/runs/{run_id}/cancel",
        "rerun_url": f"{repo_api}/actions/runs/{run_id}/rerun",
        "previous_attempt_url": f"{repo_api}/actions/runs/{run_id}/attempts/{attempt - 1}" if attempt > 1 else None,
        "workflow_url": f"{repo_api}/actions/workflows/61840311",
        "head_commit": {"id": sha, "tree_id": _sha(rng), "message": message,
                        "timestamp": _iso_s(created - rng.randrange(60_000, 7 * 86_400_000)),
                        "author": author, "committer": author if rng.random() < 0.7 else
                        {"name": "GitHub", "email": "noreply@github.com"}},
        "repository": _gh_repository(repo, 73219115),
        "head_repository": _gh_repository(f"{login}/shop", 580_000_000 + PEOPLE.index(login)) if fork
        else _gh_repository(repo, 73219115),
    }
    if created < _GH_2020_SHAPE:  # the 2020 shape: these keys do not exist at all
        for key in ("name", "path", "display_title", "run_started_at", "run_attempt", "actor", "triggering_actor",
                    "previous_attempt_url", "referenced_workflows", "check_suite_node_id"):
            run.pop(key, None)
    return run


def generate_github_actions(path: Path, records: int, seed: int = 14, per_page: int = 100) -> None:
    """`records` run objects in pages of 100, newest first: re-runs with their earlier attempt listed
    again a few pages later (an older export appended), and 5% of pages starting with the previous
    page's last run again (the list shifted while gh paged)."""
    rng = random.Random(seed)
    step = _GH_SPAN // max(records, 1)
    earlier: list[dict] = []  # earlier attempts of re-runs, waiting to be listed again
    previous: dict | None = None
    number, written = records, 0  # run_number counts down: newest first
    with open(path, "w", encoding="utf-8") as out:
        while written < records:
            page = [previous] if previous is not None and rng.random() < 0.05 else []
            while len(page) < min(per_page, records - written):
                if earlier and rng.random() < 0.03:
                    page.append(earlier.pop(0))
                    continue
                index = records - number
                created = _GH_START + _GH_SPAN - index * step - rng.randrange(step)
                attempt = rng.choices([1, 2, 3], [94, 5, 1])[0]
                run = _github_run(rng, 9_203_118_841 - index * 7, number, created, attempt)
                number -= 1
                page.append(run)
                if attempt > 1 and "run_attempt" in run:
                    earlier.append({**run, "run_attempt": attempt - 1, "conclusion": "failure",
                                    "previous_attempt_url": f"{run['url']}/attempts/{attempt - 2}" if attempt > 2 else None,
                                    "run_started_at": run["created_at"], "triggering_actor": run["actor"],
                                    "updated_at": _iso_s(created + rng.randrange(40_000, 1_200_000))})
            written += len(page)
            previous = page[-1]
            out.write(json.dumps({"total_count": records, "workflow_runs": page}, separators=(",", ":")))


def _github_deployment(rng: random.Random, database_id: int, created: int) -> dict:
    """One deployment node as the fetch query (and the README's) asks for it."""
    env = rng.choices(["production", "staging", "preview"], [60, 30, 10])[0]
    sha = _sha(rng)
    login = rng.choice(PEOPLE)
    run = 9_100_000_000 + database_id % 100_000_000
    log = f"https://github.com/acme/shop/actions/runs/{run}/job/{25_000_000 + database_id % 1_000_000}"
    outcome = rng.choices(["SUCCESS", "FAILURE", "ERROR", "IN_PROGRESS", "none", "inactive-only"], [85, 8, 2, 2, 1, 2])[0]
    queued = created + rng.randrange(1000, 5000)
    running = queued + rng.randrange(1000, 30_000)
    ended = running + rng.randrange(30_000, 900_000)

    def status(state: str, ms: int) -> dict:
        return {"state": state, "createdAt": _iso_s(ms), "updatedAt": _iso_s(ms), "logUrl": log if state != "INACTIVE" else None,
                "environmentUrl": f"https://{env}.acme.example" if state == "SUCCESS" else "",
                "description": {"SUCCESS": "Deployment finished", "FAILURE": "Deployment failed", "ERROR": "Deployment errored",
                                "INACTIVE": "", "QUEUED": "Deployment queued", "IN_PROGRESS": "Deployment started"}[state],
                "creator": {"login": "github-actions"}}

    statuses: list[dict] = []  # newest first, as the API lists them
    if outcome == "inactive-only":
        statuses = [status("INACTIVE", ended + rng.randrange(3_600_000, 9 * 86_400_000))]
    elif outcome != "none":
        statuses = [status("IN_PROGRESS", running), status("QUEUED", queued)]
        if outcome != "IN_PROGRESS":
            statuses.insert(0, status(outcome, ended))
        if outcome == "SUCCESS" and rng.random() < 0.85:
            statuses.insert(0, status("INACTIVE", ended + rng.randrange(3_600_000, 9 * 86_400_000)))
    state = {"SUCCESS": "ACTIVE", "FAILURE": "FAILURE", "ERROR": "ERROR", "IN_PROGRESS": "IN_PROGRESS",
             "none": "PENDING", "inactive-only": "INACTIVE"}[outcome]
    if statuses and statuses[0]["state"] == "INACTIVE":
        state = "INACTIVE"
    return {
        "id": f"DE_kwDOBF0aK8{database_id}", "databaseId": database_id, "commitOid": sha, "createdAt": _iso_s(created),
        "updatedAt": statuses[0]["updatedAt"] if statuses else _iso_s(created),
        "environment": env, "originalEnvironment": env, "task": "deploy", "description": None if rng.random() < 0.9 else "Release",
        "state": state, "payload": "{}", "ref": {"name": "main"}, "creator": {"login": login},
        "commit": {"committedDate": _iso_s(created - rng.randrange(60_000, 3 * 86_400_000))},
        "latestStatus": {k: v for k, v in statuses[0].items() if k != "creator"} if statuses else None,
        "statuses": {"totalCount": len(statuses), "nodes": statuses},
    }


def generate_github_deployments(path: Path, records: int, seed: int = 15, per_page: int = 100) -> None:
    """`records` deployment nodes in GraphQL pages of 100, newest first, appended; 1% of pages start
    with the previous page's last node again (a deployment created while paging)."""
    rng = random.Random(seed)
    step = _GH_SPAN // max(records, 1)
    previous: dict | None = None
    fresh, written = 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < records:
            nodes = [previous] if previous is not None and rng.random() < 0.01 else []
            while len(nodes) < min(per_page, records - written):
                created = _GH_START + _GH_SPAN - fresh * step - rng.randrange(step)
                nodes.append(_github_deployment(rng, 1_402_000_000 + (records - fresh) * 3, created))
                fresh += 1
            written += len(nodes)
            previous = nodes[-1]
            more = written < records
            connection = {"totalCount": records - (written - fresh),
                          "pageInfo": {"hasNextPage": more, "endCursor": f"Y3Vyc29yOnYyOpK5{written}" if more else None},
                          "nodes": nodes}
            out.write(json.dumps({"data": {"repository": {"deployments": connection}}}, separators=(",", ":")))


def generate_array(path: Path, records: int, seed: int = 13) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        out.write("[\n")
        for n in range(records):
            ms = _T0 + rng.randrange(_SPAN)
            record = {"service": rng.choice(["payments", "web", "search", "auth"]), "environment": "production",
                      "result": rng.choice(["success", "failed", "ABORTED"]), "build": n // 2 * 2,
                      "sha": _sha(rng), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000)),
                      "user": {"login": rng.choice(PEOPLE), "id": rng.randrange(1, 9999)}, "duration": 12.5}
            out.write(("," if n else "") + json.dumps(record) + "\n")
        out.write("]\n")


def _measure(command: list[str]) -> tuple[float, float, float]:
    """(seconds, CPU seconds (user + system), peak RSS in MB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--only", default="jenkins,gitlab,github-actions,github-deployments",
                        help="comma-separated: jenkins, gitlab, github-actions, github-deployments, array")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command; the best is printed")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep the files (reused if present)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="json-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "array.yaml").write_text(ARRAY_MAPPING, encoding="utf-8")
    kinds = {
        "jenkins": (generate_jenkins, JENKINS_MAPPING, ["--entity-id", "app-1"]),
        "gitlab": (generate_gitlab, GITLAB_MAPPING, ["--entity-id", "app-1"]),
        "github-actions": (generate_github_actions, ACTIONS_MAPPING, ["--entity-id", "shop", "--set", "env=production"]),
        "github-deployments": (generate_github_deployments, DEPLOYMENTS_MAPPING, ["--entity-id", "shop"]),
        "array": (generate_array, work / "array.yaml", []),
    }
    for kind in args.only.split(","):
        generate, mapping, extra = kinds[kind]
        data = work / f"{kind}-{args.records}.json"
        if not data.exists():
            started = time.perf_counter()
            generate(data, args.records)
            print(f"{kind}: generated {data} ({data.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s")
        load = [sys.executable, "-c", "import json,sys; json.load(open(sys.argv[1], encoding='utf-8'))", str(data)]
        if kind in ("gitlab", "github-actions", "github-deployments"):  # appended pages: json.load cannot read them; raw_decode in a loop is its equal
            load = [sys.executable, "-c", (
                "import json,sys\ntext=open(sys.argv[1],encoding='utf-8').read(); d=json.JSONDecoder(); p=0; v=[]\n"
                "while p < len(text):\n  x, p = d.raw_decode(text, p); v.append(x)\n"), str(data)]
        preview = [sys.executable, "-m", "backfill", "preview", str(data), "-m", str(mapping),
                   "--out", str(work / f"{kind}.out.jsonl"), "--show", "0", *extra]
        best: dict[str, tuple[float, float, float]] = {}
        for _ in range(args.repeat):
            for name, command in (("json.load", load), ("preview", preview)):
                measured = _measure(command)
                old = best.get(name, measured)
                best[name] = (min(measured[0], old[0]), min(measured[1], old[1]), min(measured[2], old[2]))
        (load_s, load_cpu, load_mb), (prev_s, prev_cpu, prev_mb) = best["json.load"], best["preview"]
        lines = sum(1 for _ in open(work / f"{kind}.out.jsonl", "rb"))
        print(f"{kind} {args.records:,} records ({data.stat().st_size / 1e6:.0f} MB): "
              f"json.load {load_s:.1f} s (CPU {load_cpu:.1f} s), {load_mb:.0f} MB | preview --out {prev_s:.1f} s "
              f"(CPU {prev_cpu:.1f} s), {prev_mb:.0f} MB ({lines:,} requests) | time {prev_s / load_s:.2f}x json.load "
              f"(CPU {prev_cpu / load_cpu:.2f}x)")
    if not args.keep:
        for file in work.iterdir():
            file.unlink()
        work.rmdir()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()

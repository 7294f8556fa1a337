"""JSON readers' speed and memory: `backfill preview --out` on big Jenkins and GitLab exports next
to a plain `json.load` of the same file.

    python benchmarks/json_readers.py [--records 200000] [--only jenkins,gitlab,array] [--repeat 1] [--keep DIR]

Generates, with a fixed seed and the field richness of real exports:
  - jenkins: a folder of jobs with `allBuilds` (`/api/json?tree=jobs[allBuilds[...]]`): each build with
    parameters, causes, git BuildData (revision, branch, remotes; a shared library beside the app on
    a third of them), change sets with items, culprits, empty actions;
  - gitlab: pages of `GET /projects/:id/deployments` appended to one file (as `gh api --paginate`
    or a curl loop writes them), each deployment with user, environment, deployable (commit,
    pipeline, user, artifacts, tag list) and float durations;
  - array: a plain JSON array of flat-ish records read with `format: json` (about 260 bytes each;
    800,000 records is the 208 MB file of issue 8).
Then runs, each in its own process so that peak memory (max RSS) is measured separately:
  1. `json.load(open(path))` of the file;
  2. `backfill preview FILE -m MAPPING --out payloads.jsonl --show 0`.
Prints both times, the ratio and both peaks. Targets (issue 11): preview <= 1.5x json.load (aim
1.0x); peak <= 500 MB at 200,000 records; at 400,000 records the peak grows only by the plan's
per-event cost. The machine may be shared: repeat (`--repeat`) and take the best.
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


def _measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{' '.join(command)} failed with status {status}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--only", default="jenkins,gitlab", help="comma-separated: jenkins, gitlab, array")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command; the best is printed")
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep the files (reused if present)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="json-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "array.yaml").write_text(ARRAY_MAPPING, encoding="utf-8")
    kinds = {
        "jenkins": (generate_jenkins, JENKINS_MAPPING, ["--entity-id", "app-1"]),
        "gitlab": (generate_gitlab, GITLAB_MAPPING, ["--entity-id", "app-1"]),
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
        if kind == "gitlab":  # appended pages: json.load cannot read them; raw_decode in a loop is its equal
            load = [sys.executable, "-c", (
                "import json,sys\ntext=open(sys.argv[1],encoding='utf-8').read(); d=json.JSONDecoder(); p=0; v=[]\n"
                "while p < len(text):\n  x, p = d.raw_decode(text, p); v.append(x)\n"), str(data)]
        preview = [sys.executable, "-m", "backfill", "preview", str(data), "-m", str(mapping),
                   "--out", str(work / f"{kind}.out.jsonl"), "--show", "0", *extra]
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeat):
            for name, command in (("json.load", load), ("preview", preview)):
                seconds, peak = _measure(command)
                old = best.get(name)
                best[name] = (min(seconds, old[0]) if old else seconds, min(peak, old[1]) if old else peak)
        (load_s, load_mb), (prev_s, prev_mb) = best["json.load"], best["preview"]
        lines = sum(1 for _ in open(work / f"{kind}.out.jsonl", "rb"))
        print(f"{kind} {args.records:,} records ({data.stat().st_size / 1e6:.0f} MB): "
              f"json.load {load_s:.1f} s, {load_mb:.0f} MB | preview --out {prev_s:.1f} s, {prev_mb:.0f} MB "
              f"({lines:,} requests) | time {prev_s / load_s:.2f}x json.load")
    if not args.keep:
        for file in work.iterdir():
            file.unlink()
        work.rmdir()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()

"""The shipped mappings (mappings/jenkins.yaml, mappings/gitlab.yaml) on the real exports and the samples.

Issue 3, "Shipped mappings" and "Tests": every Jenkins and GitLab `.json` export in
tests/fixtures/real-exports goes through its reader and shipped mapping, and the events that come out
are checked field by field. Every expected value was worked out from the fixture JSON by hand (epoch
milliseconds -> UTC second with `datetime`, `timestamp + duration` for Jenkins, offsets converted),
never copied from the tool's output. The reader-level details (row fields) are in
test_reader_jenkins.py / test_reader_gitlab.py and are not repeated here.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from backfill.mapping import Mapping, load_mapping
from backfill.plan import Plan, build_plan

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "fixtures" / "real-exports"
JENKINS_YAML = ROOT / "mappings" / "jenkins.yaml"
GITLAB_YAML = ROOT / "mappings" / "gitlab.yaml"
JENKINS_SAMPLE = ROOT / "samples" / "jenkins-builds.json"
GITLAB_SAMPLE = ROOT / "samples" / "gitlab-deployments.json"
ENTITY = "payments"

# The API reference (shared/devgrid-events-api.md), written out here so the check does not trust the code.
API_ATTRIBUTES = {
    "env", "status", "build_id", "build_commit_sha", "build_url", "description", "initiator", "change_id",
    "change_url", "change_title", "change_author", "change_approver", "change_window_start",
    "change_window_end", "deployment_start_time",
}
API_DATE_ATTRIBUTES = {"change_window_start", "change_window_end", "deployment_start_time"}
UTC_SECOND = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def jenkins_mapping(**sets: str) -> Mapping:
    """mappings/jenkins.yaml as `--entity-id payments [--set NAME=VALUE ...]` makes it."""
    return load_mapping(JENKINS_YAML).with_overrides(ENTITY, sets)


def gitlab_mapping() -> Mapping:
    return load_mapping(GITLAB_YAML).with_overrides(ENTITY, {})


def events_of(plan: Plan) -> list[dict]:
    """The events exactly as they go out, in request order."""
    return [event for body in plan.request_bodies() for event in json.loads(body)["events"]]


def event(ts: str, status: str, *, env: str = "production", start: str | None = None, build_id: str | None = None,
          url: str | None = None, sha: str | None = None, initiator: str | None = None) -> dict:
    """An expected event-deploy event; attributes without a value are absent."""
    attributes = {
        "env": env, "status": status, "deployment_start_time": start, "build_id": build_id,
        "build_url": url, "build_commit_sha": sha, "initiator": initiator,
    }
    return {
        "type": "event-deploy", "timestamp": ts, "entityId": ENTITY,
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }


def skip_label(mapping: Mapping, field: str, value: str) -> str:
    """The label of the first filter rule of the mapping on `field` that rejects `value`."""
    for rule in mapping.filters:
        if rule.field != field:
            continue
        if rule.op == "in":
            rejects = value not in rule.values
        elif rule.op == "not_in":
            rejects = value in rule.values
        else:
            rejects = re.search(rule.values[0], value) is None
        if rejects:
            return rule.label
    pytest.fail(f"{mapping.path}: no filter rule skips {field}={value!r}")


def expected_filtered(mapping: Mapping, field: str, skipped: dict[str, int]) -> Counter:
    """{value of `field`: rows} -> {filter rule label: rows}."""
    out: Counter = Counter()
    for value, n in skipped.items():
        out[skip_label(mapping, field, value)] += n
    return out


def check_plan(plan: Plan, rows: int, expected: list[dict], filtered: Counter) -> None:
    report = plan.report
    assert report.rows_read == rows
    assert dict(report.filtered) == dict(filtered)
    assert [str(row) for row in report.invalid] == []
    assert (report.duplicates, report.outside_range) == (0, 0)
    assert report.planned == len(plan.events) == len(expected)
    assert report.accounted == report.rows_read
    assert events_of(plan) == expected  # oldest first


# --- Jenkins: every real .json export -------------------------------------------------------

FISH_URL = "http://localhost:32769/job/fish/10/"
FISH_10 = dict(start="2016-04-19T18:51:32Z", build_id="10", url=FISH_URL, initiator="anonymous")
# 1461091892486 + 60750 ms = 1461091953236 ms -> 2016-04-19T18:52:33Z
FISH_10_END = "2016-04-19T18:52:33Z"

DEVLAKE = "0f886c74949c3ee7e489188911c7dc0c1d547418"
MB = {  # multibranch SHAs from the BuildData actions
    "main1": "87f0f9ee7c305c561c96f66ed8c71c85df4b940f", "main2": "f521ff9c806e74b9100c8fc87d07ac504f828f93",
    "main3": "78b8e3a2029f991982039e4ed6d7b1f9c6670497", "main4": "c83ae02076382670e286ac2474b7a7327fc28cde",
    "pr2": "49359d217ea617c7e4771235979b56015172ba6c", "f1-2": "eae3667426e1da0d8cab523e372e6771a39b16a7",
    "f1-3": "3ff14f4a781018e6e800ded3a5ac95fa2f9bb26f", "f2-1": "2578423ba5c348fb9948279f3ea64ed650fecd8a",
    "f2-3": "881b398774e020772bca7fdd7fdc60e7250f53ef",
}
PUSH_MAIN, PUSH_F1, PUSH_F2 = ("Push event to branch main", "Push event to branch feature-1",
                               "Push event to branch feature-2")

# Skipped rows by the value of the field that skips them: building "true" (running), result ABORTED,
# NOT_BUILT, or "" (no result exported). file -> (rows read, events oldest first, {(field, value): rows skipped})
JENKINS_CASES = {
    "jenkins-jenkinsrest-build-info-params-causes.json": (1, [event(FISH_10_END, "success", **FISH_10)], {}),
    "jenkins-jenkinsrest-build-info-empty-null-params.json": (1, [event(FISH_10_END, "success", **FISH_10)], {}),
    "jenkins-jenkinsrest-build-info-workflowrun.json": (1, [event(FISH_10_END, "success", **FISH_10)], {}),
    "jenkins-jenkinsrest-build-info-changesets-git.json": (
        1, [event(FISH_10_END, "success", sha="d27afa0805201322d846d7defc29b82c88d9b5ce", **FISH_10)], {},
    ),
    "jenkins-gojenkins-build-legacy-dateid-failure.json": (
        # 1414948052166 + 18 ms: start and end in the same second; number 1, not the date id
        1, [event("2014-11-02T17:07:32Z", "failed", start="2014-11-02T17:07:32Z", build_id="1",
                  url="http://localhost:8080/job/testJob/1/", initiator="anonymous")], {},
    ),
    "jenkins-pipelineautomationlib-deploy-openapinotifier-stage-build.json": (
        # 1567605288538 + 189857 ms; the SHA of ara_spec_files, not of the three shared libraries; userId
        1, [event("2019-09-04T13:57:58Z", "failed", start="2019-09-04T13:54:48Z", build_id="213",
                  url="https://cd.dettonville.int/jenkins/job/DCAPI/job/DeploymentJobs/job/"
                      "DeployOpenAPINotifierStage/job/main/213/",
                  sha="a2a0e642b6958086f9a5c852e08264de406df4a2", initiator="e080847")], {},
    ),
    # depth 0: 7 builds with only number and url; no result, so none is an event
    "jenkins-jenkinsrest-job-info-depth0.json": (7, [], {("result", ""): 7}),
    "jenkins-jenkinsrest-wfapi-runs.json": (
        # #16 PAUSED_PENDING_INPUT is running; #15 ends at endTimeMillis 1413459937070
        2, [event("2014-10-16T11:45:37Z", "success", start="2014-10-16T11:45:10Z", build_id="15",
                  url="/jenkins/job/Test%20Workflow/15/")], {("building", "true"): 1},
    ),
    "jenkins-jenkinsrest-wfapi-describe.json": (1, [], {("building", "true"): 1}),
    "jenkins-stageview-wfapi-runs-failed.json": (
        2, [
            event("2014-10-26T10:11:28Z", "success", start="2014-10-26T10:10:32Z", build_id="1", url="/job/cd/1/"),
            # wfapi FAILED
            event("2014-10-26T10:13:09Z", "failed", start="2014-10-26T10:12:29Z", build_id="3", url="/job/cd/3/"),
        ], {},
    ),
    "jenkins-stageview-wfapi-runs-in-progress.json": (1, [], {("building", "true"): 1}),
    "jenkins-stageview-wfapi-runs-unstable.json": (
        1, [event("2014-10-26T10:11:28Z", "failed", start="2014-10-26T10:10:32Z", build_id="1", url="/job/cd/1/")], {},
    ),
    "jenkins-stageview-wfapi-runs-no-id-no-endtime.json": (
        # #3 and #1 IN_PROGRESS; #2: no endTimeMillis, 1411556089000 + 8949 ms; number from name "#2"
        3, [event("2014-09-24T10:54:57Z", "success", start="2014-09-24T10:54:49Z", build_id="2")],
        {("building", "true"): 2},
    ),
    "jenkins-apmlib-blueocean-run-running.json": (1, [], {("building", "true"): 1}),  # state RUNNING
    "jenkins-apmlib-blueocean-run-finished-wiremock.json": (
        # endTime 2021-07-21T09:36:48.691+0000 (colon-less offset)
        1, [event("2021-07-21T09:36:48Z", "success", start="2021-07-21T09:36:29Z", build_id="1",
                  url="/blue/rest/organizations/jenkins/pipelines/it/pipelines/getBuildInfoJsonFiles/"
                      "pipelines/cobertura/runs/1/",
                  initiator="anonymous")], {},
    ),
    "jenkins-devlake-allbuilds-data-column.json": (
        # tree= output: no url; userId "merico" wins over userName "abc"
        14, [
            event("2022-04-15T10:05:53Z", "success", start="2022-04-15T10:05:53Z", build_id="17", initiator="merico"),
            event("2022-04-15T10:06:17Z", "failed", start="2022-04-15T10:06:17Z", build_id="10005", initiator="merico"),
            event("2022-04-15T10:06:26Z", "success", start="2022-04-15T10:06:26Z", build_id="37", initiator="merico"),
            event("2022-04-15T10:10:31Z", "success", start="2022-04-15T10:10:16Z", build_id="11", initiator="merico",
                  sha="ceeffdfdd06bce232f9adb3a656265bad13a8473"),
            event("2022-04-15T11:35:50Z", "success", start="2022-04-15T11:35:48Z", build_id="21", initiator="merico",
                  sha=DEVLAKE),
            event("2022-04-15T11:35:56Z", "success", start="2022-04-15T11:35:56Z", build_id="47", initiator="merico"),
            event("2022-04-15T12:00:50Z", "success", start="2022-04-15T12:00:49Z", build_id="31", initiator="merico",
                  sha=DEVLAKE),
            event("2022-09-08T14:26:51Z", "success", start="2022-09-08T14:26:51Z", build_id="23", initiator="merico"),
            event("2022-09-08T15:40:18Z", "success", start="2022-09-08T15:40:13Z", build_id="1", initiator="merico"),
        ],
        # #27, #10001, #10002 building true; #10003 ABORTED; #10004 "NOT_BUILD" (DevLake's misspelling)
        {("building", "true"): 3, ("result", "ABORTED"): 1, ("result", "NOT_BUILD"): 1},
    ),
    "jenkins-devlake-allbuilds-multibranch-data-column.json": (
        # build numbers repeat across branches; feature-2 #4 and #5 have no SHA at all
        15, [
            event("2024-03-24T10:24:12Z", "success", start="2024-03-24T10:23:35Z", build_id="1", sha=MB["main1"],
                  initiator="Branch indexing"),
            event("2024-03-24T10:24:15Z", "success", start="2024-03-24T10:23:35Z", build_id="1", sha=MB["main1"],
                  initiator="Branch indexing"),
            event("2024-03-24T10:32:41Z", "success", start="2024-03-24T10:32:06Z", build_id="2", sha=MB["f1-2"],
                  initiator="Branch indexing"),
            event("2024-03-24T10:45:06Z", "success", start="2024-03-24T10:44:31Z", build_id="3", sha=MB["f1-3"],
                  initiator=PUSH_F1),
            event("2024-03-24T10:46:16Z", "success", start="2024-03-24T10:45:41Z", build_id="1", sha=MB["f2-1"],
                  initiator=PUSH_F2),
            event("2024-03-24T10:46:31Z", "success", start="2024-03-24T10:45:56Z", build_id="2", sha=MB["f2-1"],
                  initiator=PUSH_F2),
            event("2024-03-24T10:47:07Z", "success", start="2024-03-24T10:46:31Z", build_id="3", sha=MB["f2-3"],
                  initiator=PUSH_F2),
            event("2024-03-24T10:47:42Z", "failed", start="2024-03-24T10:47:41Z", build_id="4", initiator=PUSH_F2),
            event("2024-03-24T10:48:57Z", "success", start="2024-03-24T10:48:21Z", build_id="2", sha=MB["main2"],
                  initiator=PUSH_MAIN),
            event("2024-03-24T10:49:32Z", "failed", start="2024-03-24T10:49:31Z", build_id="5", initiator=PUSH_F2),
            event("2024-03-24T10:52:17Z", "success", start="2024-03-24T10:51:41Z", build_id="3", sha=MB["main3"],
                  initiator=PUSH_MAIN),
            event("2024-03-24T10:52:52Z", "success", start="2024-03-24T10:52:21Z", build_id="2", sha=MB["pr2"],
                  initiator="Pull request #2 updated"),
            event("2024-03-24T10:53:02Z", "success", start="2024-03-24T10:52:31Z", build_id="4", sha=MB["main4"],
                  initiator=PUSH_MAIN),
        ],
        {("result", "ABORTED"): 2},  # PR-2 #1 and feature-2 #6
    ),
}
JENKINS_REJECTED = {"jenkins-apmlib-blueocean-changeset.json"}  # a change set, not a run: the reader refuses it


def test_every_jenkins_json_export_is_covered() -> None:
    names = {p.name for p in REAL.glob("jenkins-*.json")}
    assert names == set(JENKINS_CASES) | JENKINS_REJECTED


@pytest.mark.parametrize("name", sorted(JENKINS_CASES))
def test_jenkins_real_export_through_the_shipped_mapping(name: str) -> None:
    rows, expected, skipped = JENKINS_CASES[name]
    mapping = jenkins_mapping(env="production")
    plan = build_plan([REAL / name], mapping)
    filtered: Counter = Counter()
    for (field, value), n in skipped.items():
        filtered[skip_label(mapping, field, value)] += n
    check_plan(plan, rows, expected, filtered)


# --- GitLab: every real .json export --------------------------------------------------------

DOCS_SHA = "a91957a858320c0e17f3a0eca7cfacbff50ea29a"
LAB_COAT = event(
    # environment object: last_deployment, env from the environment's name; deployable.finished_at wins
    "2019-03-25T18:55:13Z", "success", env="review/fix-foo", start="2019-03-25T12:54:50Z", build_id="710",
    url="http://localhost:3000/Commit451/lab-coat/-/jobs/710", sha="416d8ea11849050d3d1f5104cf8cf51053e790ab",
    initiator="root",
)

GITLAB_CASES = {
    # both deployments have top-level status "created" (the job's "success" does not count): no events
    "gitlab-gitlabdocs-deployments-list.json": (2, [], {"created": 2}),
    "gitlab-gitlabdocs-deployment-single.json": (
        # deployable.started_at null; no deployable.web_url: the pipeline's
        1, [event("2016-08-11T11:32:35Z", "success", build_id="664", url="http://gitlab.dev/root/project/pipelines/5",
                  sha=DOCS_SHA, initiator="root")], {},
    ),
    "gitlab-gitlab4j-deployment-single.json": (
        # no top-level status: deployable.status "success"; no web_url, no pipeline
        1, [event("2016-08-11T11:32:35Z", "success", build_id="664", sha=DOCS_SHA, initiator="root")], {},
    ),
    "gitlab-gitlabdocs-environment-with-last-deployment.json": (1, [LAB_COAT], {}),
    "gitlab-gitlab4j-environment-with-last-deployment.json": (1, [LAB_COAT], {}),
    "gitlab-devlake-deployments-data-column.json": (
        8, [
            event("2019-03-13T14:17:47Z", "success", env="staging", start="2019-03-13T14:17:33Z", build_id="176919795",
                  url="https://gitlab.com/merico-dev/ee/vdev.co/-/jobs/176919795",
                  sha="add237f6852e6108ee8e0246780a54ce909c6087", initiator="hackwaly"),
            # job skipped: no deployable.finished_at, no finished_at -> updated_at 2019-03-13T15:02:23.332Z
            event("2019-03-13T15:02:23Z", "failed", env="staging", build_id="176955080",
                  url="https://gitlab.com/merico-dev/ee/vdev.co/-/jobs/176955080",
                  sha="35c3a3d82586fa0bcdb2a73b812081ece4e83429", initiator="rankinzheng"),
        ],
        # DevLake's hand-edited statuses; completed and undeployed are not GitLab's
        {"created": 1, "running": 1, "blocked": 1, "canceled": 1, "completed": 1, "undeployed": 1},
    ),
}
GITLAB_REJECTED = {"gitlab-gitlab4j-deployment-webhook-event.json"}  # a webhook payload, not the REST API


def test_every_gitlab_json_export_is_covered() -> None:
    names = {p.name for p in REAL.glob("gitlab-*.json")}
    assert names == set(GITLAB_CASES) | GITLAB_REJECTED


@pytest.mark.parametrize("name", sorted(GITLAB_CASES))
def test_gitlab_real_export_through_the_shipped_mapping(name: str) -> None:
    rows, expected, skipped = GITLAB_CASES[name]
    mapping = gitlab_mapping()
    plan = build_plan([REAL / name], mapping)
    check_plan(plan, rows, expected, expected_filtered(mapping, "status_effective", skipped))


# --- rules of the issue not shown by any real export: real exports, one field changed ----------

def write_json(tmp_path: Path, value: object, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
    return path


FISH = json.loads((REAL / "jenkins-jenkinsrest-build-info-params-causes.json").read_text(encoding="utf-8"))
SUCCESS, FAILED, DROP = "success", "failed", object()


@pytest.mark.parametrize(
    "changes, outcome",
    [
        ({"result": "SUCCESS"}, SUCCESS),
        ({"result": "FAILURE"}, FAILED),
        ({"result": "UNSTABLE"}, FAILED),
        ({"result": "ABORTED"}, ("result", "ABORTED")),
        ({"result": "NOT_BUILT"}, ("result", "NOT_BUILT")),
        ({"building": True, "result": "SUCCESS"}, ("building", "true")),
        ({"building": True, "result": None}, "skipped"),  # running, as Jenkins exports it
        ({"building": DROP, "result": None}, "skipped"),  # running, `tree=` without building
    ],
    ids=["SUCCESS", "FAILURE", "UNSTABLE", "ABORTED", "NOT_BUILT", "building", "building-null-result", "null-result"],
)
def test_jenkins_results(tmp_path: Path, changes: dict, outcome: object) -> None:
    """Build #10 of the real export as is, plus a copy #11 with the result changed."""
    other = copy.deepcopy(FISH)
    other.update(number=11, id="11", url="http://localhost:32769/job/fish/11/", timestamp=1461091992486)
    for key, value in changes.items():
        if value is DROP:
            other.pop(key)
        else:
            other[key] = value
    mapping = jenkins_mapping(env="production")
    plan = build_plan([write_json(tmp_path, [FISH, other])], mapping)
    first = event(FISH_10_END, "success", **FISH_10)
    assert plan.report.rows_read == plan.report.accounted == 2
    if outcome in (SUCCESS, FAILED):
        # 1461091992486 + 60750 ms = 1461092053236 ms
        second = event("2016-04-19T18:54:13Z", outcome, start="2016-04-19T18:53:12Z", build_id="11",
                       url="http://localhost:32769/job/fish/11/", initiator="anonymous")
        assert events_of(plan) == [first, second]
        assert not plan.report.filtered
        return
    assert events_of(plan) == [first]
    if outcome == "skipped":  # any of the rules may count a running build
        assert sum(plan.report.filtered.values()) == 1
    else:
        assert dict(plan.report.filtered) == {skip_label(mapping, *outcome): 1}


@pytest.mark.parametrize("parameter", ["ENV", "ENVIRONMENT", "DEPLOY_ENV", "TARGET_ENV"])
def test_jenkins_env_from_a_build_parameter_without_set(tmp_path: Path, parameter: str) -> None:
    build = copy.deepcopy(FISH)
    build["actions"][0]["parameters"].append({"name": parameter, "value": "staging"})
    plan = build_plan([write_json(tmp_path, build)], jenkins_mapping())
    assert events_of(plan) == [event(FISH_10_END, "success", env="staging", **FISH_10)]


DOCS_SINGLE = json.loads((REAL / "gitlab-gitlabdocs-deployment-single.json").read_text(encoding="utf-8"))
DOCS_EVENT = event("2016-08-11T11:32:35Z", "success", build_id="664", url="http://gitlab.dev/root/project/pipelines/5",
                   sha=DOCS_SHA, initiator="root")


@pytest.mark.parametrize(
    "status, job_status, outcome",
    [
        ("success", "failed", SUCCESS),  # the top-level status wins
        ("failed", "success", FAILED),
        (DROP, "failed", FAILED),  # older GitLab: no top-level status, the job's
        (DROP, "success", SUCCESS),
        ("created", "success", "created"),
        ("running", "running", "running"),
        ("canceled", "canceled", "canceled"),
        ("blocked", "manual", "blocked"),
        ("skipped", "skipped", "skipped"),
        (DROP, "running", "running"),
        (DROP, "canceled", "canceled"),
    ],
)
def test_gitlab_statuses(tmp_path: Path, status: object, job_status: str, outcome: str) -> None:
    """Deployment 42 of the real export as is, plus a copy 43 with the statuses changed."""
    other = copy.deepcopy(DOCS_SINGLE)
    other.update(id=43, iid=3)
    other["deployable"].update(id=665, status=job_status, finished_at="2016-08-11T12:00:00.999Z")
    if status is DROP:
        other.pop("status")
    else:
        other["status"] = status
    mapping = gitlab_mapping()
    plan = build_plan([write_json(tmp_path, [DOCS_SINGLE, other])], mapping)
    assert plan.report.rows_read == plan.report.accounted == 2
    if outcome in (SUCCESS, FAILED):
        second = event("2016-08-11T12:00:00Z", outcome, build_id="665", url="http://gitlab.dev/root/project/pipelines/5",
                       sha=DOCS_SHA, initiator="root")
        assert events_of(plan) == [DOCS_EVENT, second]
        assert not plan.report.filtered
    else:
        assert events_of(plan) == [DOCS_EVENT]
        assert dict(plan.report.filtered) == {skip_label(mapping, "status_effective", outcome): 1}


@pytest.mark.parametrize(
    "deployable, top, timestamp, start",
    [
        # deployable.finished_at first; offsets taken from the real exports' commit dates
        ({"finished_at": "2019-03-13T23:24:52.000+08:00", "started_at": "2019-03-13T23:23:26.000+08:00"},
         {"finished_at": "2016-08-11T13:28:26.000+02:00"}, "2019-03-13T15:24:52Z", "2019-03-13T15:23:26Z"),
        # then the deployment's finished_at (newer GitLab)
        ({"finished_at": None}, {"finished_at": "2016-08-11T13:28:26.000+02:00"}, "2016-08-11T11:28:26Z", None),
        (None, {"finished_at": "2019-03-13T22:53:34.000+08:00"}, "2019-03-13T14:53:34Z", None),
        # then updated_at
        (None, {"updated_at": "2016-08-11T09:36:01.000+02:00"}, "2016-08-11T07:36:01Z", None),
        ({"finished_at": None}, {}, "2016-08-11T11:34:01Z", None),  # the export's 11:34:01.123Z
        # then created_at
        (None, {"updated_at": DROP}, "2016-08-11T11:32:35Z", None),  # the export's 11:32:35.444Z
        (None, {"updated_at": DROP, "created_at": "2019-03-13T14:55:17.000+00:00"}, "2019-03-13T14:55:17Z", None),
    ],
    ids=["deployable-finished", "finished-null-job", "finished-no-job", "updated-offset", "updated", "created",
         "created-offset"],
)
def test_gitlab_timestamp_fallbacks_and_offsets(tmp_path: Path, deployable: dict | None, top: dict,
                                                timestamp: str, start: str | None) -> None:
    deployment = copy.deepcopy(DOCS_SINGLE)
    if deployable is None:
        deployment["deployable"] = None
    else:
        deployment["deployable"].update(deployable)
    for key, value in top.items():
        if value is DROP:
            deployment.pop(key)
        else:
            deployment[key] = value
    plan = build_plan([write_json(tmp_path, deployment)], gitlab_mapping())
    ((got,),) = [events_of(plan)]
    assert got["timestamp"] == timestamp
    assert got["attributes"].get("deployment_start_time") == start
    if deployable is None:  # no job: status from the deployment, no build id or url
        assert got["attributes"] == {"env": "production", "status": "success", "build_commit_sha": DOCS_SHA,
                                     "initiator": "root"}


# --- files rejected on purpose, and the .jsonish ones: one line, exit 3 -------------------------

@pytest.mark.parametrize(
    "name, fragment",
    [
        ("jenkins-apmlib-blueocean-changeset.json", "no Jenkins builds"),
        ("gitlab-gitlab4j-deployment-webhook-event.json", "webhook"),
        # trailing comma: the `]` at line 80, column 3
        ("jenkins-checkman-apache-geode-build-lastBuild.jsonish", "line 80, column 3"),
        # Groovy's doubled backslash: `\\"` closes the string, the next character is column 64
        ("jenkins-pipelineautomationlib-deploy-frontend-stage-build-721.jsonish", "line 9, column 64"),
        ("jenkins-pipelineautomationlib-deploy-devportal-stage-build-3.jsonish", "line 8, column 69"),
        # the literal `...` line
        ("gitlab-gitlabdocs-deployment-approvals-fragment.jsonish", "line 19, column 3"),
    ],
)
def test_rejected_files_give_one_line_and_exit_3(run_cli, name: str, fragment: str) -> None:
    path = REAL / name
    if name.startswith("jenkins"):
        args = ["-m", JENKINS_YAML, "--entity-id", ENTITY, "--set", "env=production"]
    else:
        args = ["-m", GITLAB_YAML, "--entity-id", ENTITY]
    code, out, err = run_cli("preview", path, *args)
    assert code == 3
    assert out == ""
    assert err.startswith("Error: ") and err.endswith("\n") and err.count("\n") == 1
    assert str(path) in err
    assert fragment in err


def test_every_jsonish_export_is_covered() -> None:
    names = {p.name for p in REAL.glob("*.jsonish")}
    assert names == {
        "jenkins-checkman-apache-geode-build-lastBuild.jsonish",
        "jenkins-pipelineautomationlib-deploy-frontend-stage-build-721.jsonish",
        "jenkins-pipelineautomationlib-deploy-devportal-stage-build-3.jsonish",
        "gitlab-gitlabdocs-deployment-approvals-fragment.jsonish",
    }


# --- the samples, through `backfill preview` ------------------------------------------------------

JENKINS_JOB_URL = "https://jenkins.example.com/job/payments/job/deploy-payments-api/"
TIMER = "Started by timer"


def jenkins_sample_event(n: int, ts: str, start: str, env: str, status: str, sha: str, initiator: str) -> dict:
    return event(ts, status, env=env, start=start, build_id=str(n), url=f"{JENKINS_JOB_URL}{n}/", sha=sha,
                 initiator=initiator)


JENKINS_SAMPLE_EVENTS = [  # finished_at = timestamp + duration; env from the ENV parameter
    jenkins_sample_event(101, "2024-03-04T02:03:25Z", "2024-03-04T02:00:04Z", "staging", "success",
                         "8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c", TIMER),
    jenkins_sample_event(102, "2024-03-04T13:25:38Z", "2024-03-04T13:21:44Z", "production", "success",
                         "8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c", "carol"),
    jenkins_sample_event(103, "2024-03-07T02:03:29Z", "2024-03-07T02:00:09Z", "staging", "success",
                         "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f", TIMER),
    jenkins_sample_event(104, "2024-03-08T09:51:20Z", "2024-03-08T09:47:31Z", "production", "success",
                         "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f", "bob"),
    jenkins_sample_event(105, "2024-03-13T02:03:29Z", "2024-03-13T02:00:03Z", "staging", "success",
                         "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", TIMER),
    jenkins_sample_event(106, "2024-03-13T15:04:26Z", "2024-03-13T15:02:55Z", "production", "failed",
                         "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "alice"),
    jenkins_sample_event(107, "2024-03-14T11:34:14Z", "2024-03-14T11:30:18Z", "production", "success",
                         "e7a9b3c1d5f2e8a4b6c0d9e1f3a5b7c9d1e3f5a7", "alice"),
    jenkins_sample_event(108, "2024-03-18T02:03:38Z", "2024-03-18T02:00:05Z", "staging", "failed",  # UNSTABLE
                         "c0ffee1234567890abcdef1234567890abcdef12", TIMER),
    # #109 ABORTED
    jenkins_sample_event(110, "2024-03-20T02:03:26Z", "2024-03-20T02:00:07Z", "staging", "success",
                         "4b1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c", TIMER),
    # the app's BuildData, not jenkins-shared-library's
    jenkins_sample_event(111, "2024-03-21T10:16:41Z", "2024-03-21T10:12:40Z", "production", "success",
                         "4b1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c", "bob"),
    # #112 still building
]

GITLAB_JOBS = "https://gitlab.example.com/acme/payments-api/-/jobs/"


def gitlab_sample_event(ts: str, start: str | None, env: str, status: str, job: int | None, sha: str,
                        user: str) -> dict:
    return event(ts, status, env=env, start=start, build_id=str(job) if job else None,
                 url=f"{GITLAB_JOBS}{job}" if job else None, sha=sha, initiator=user)


GITLAB_SAMPLE_EVENTS = [  # two pages appended; timestamp = deployable.finished_at unless said otherwise
    gitlab_sample_event("2024-03-25T13:14:41Z", "2024-03-25T13:12:06Z", "production", "success", 76150,
                        "a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0", "dana.k"),
    gitlab_sample_event("2024-03-28T09:33:11Z", "2024-03-28T09:31:59Z", "staging", "failed", 76295,
                        "2f3e4d5c6b7a8990a1b2c3d4e5f6a7b8c9d0e1f2", "eli"),
    # 8990: no top-level status (the job's success), no updated_at
    gitlab_sample_event("2024-03-28T10:07:49Z", "2024-03-28T10:05:21Z", "production", "success", 76302,
                        "2f3e4d5c6b7a8990a1b2c3d4e5f6a7b8c9d0e1f2", "eli"),
    gitlab_sample_event("2024-04-03T15:54:30Z", "2024-04-03T15:52:13Z", "staging", "success", 76511,
                        "6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7", "dana.k"),
    # 9012: deployable null -> updated_at 2024-04-03T16:23:30.511Z, no job id, url or start
    gitlab_sample_event("2024-04-03T16:23:30Z", None, "production", "success", None,
                        "6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f7", "dana.k"),
    gitlab_sample_event("2024-04-08T11:17:03Z", "2024-04-08T11:15:50Z", "production", "failed", 76874,
                        "f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d", "eli"),
    # 9030 canceled
    gitlab_sample_event("2024-04-10T13:43:40Z", "2024-04-10T13:41:14Z", "staging", "success", 76981,
                        "8b2d4f6a0c1e3a5c7e9b1d3f5a7c9e1b3d5f7a9c", "eli"),
    gitlab_sample_event("2024-04-10T14:05:12Z", "2024-04-10T14:02:36Z", "production", "success", 76990,
                        "8b2d4f6a0c1e3a5c7e9b1d3f5a7c9e1b3d5f7a9c", "dana.k"),
    # 9051 running
]

ALL_JENKINS_ATTRIBUTES = {"env", "status", "deployment_start_time", "build_id", "build_url", "build_commit_sha",
                          "initiator"}


def counts(line: str) -> dict[str, int]:
    """`By env: staging 5, production 5` -> {"staging": 5, "production": 5}."""
    text = line.split(": ", 1)[1]
    return {name: int(n) for name, n in (part.rsplit(" ", 1) for part in text.split(", "))}


@pytest.mark.parametrize(
    "sample, mapping_path, rows, skipped, expected, env, status, required",
    [
        (JENKINS_SAMPLE, JENKINS_YAML, 12, {("building", "true"): 1, ("result", "ABORTED"): 1}, JENKINS_SAMPLE_EVENTS,
         {"production": 5, "staging": 5}, {"success": 8, "failed": 2}, ALL_JENKINS_ATTRIBUTES),
        (GITLAB_SAMPLE, GITLAB_YAML, 10, {("status_effective", "running"): 1, ("status_effective", "canceled"): 1},
         GITLAB_SAMPLE_EVENTS, {"production": 5, "staging": 3}, {"success": 6, "failed": 2},
         {"env", "status", "build_commit_sha", "initiator"}),
    ],
    ids=["jenkins", "gitlab"],
)
def test_sample_preview(run_cli, tmp_path: Path, sample: Path, mapping_path: Path, rows: int,
                        skipped: dict, expected: list[dict], env: dict, status: dict, required: set) -> None:
    """The README walkthrough: only --entity-id (the Jenkins sample has ENV parameters, so no --set env)."""
    out_file = tmp_path / "bodies.jsonl"
    code, out, err = run_cli("preview", sample, "-m", mapping_path, "--entity-id", ENTITY, "--show", "0",
                             "--out", out_file)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    planned = len(expected)
    assert f"Rows: {rows} read = {planned} planned + {rows - planned} filtered + 0 duplicates + 0 invalid" in lines
    mapping = load_mapping(mapping_path)
    for (field, value), n in skipped.items():
        assert f"  skipped by filter {skip_label(mapping, field, value)}: {n}" in lines
    by = {line.split(":")[0]: counts(line) for line in lines if line.startswith("By ")}
    assert by == {"By entity": {ENTITY: planned}, "By env": env, "By status": status}
    assert f"Date range: {expected[0]['timestamp']} .. {expected[-1]['timestamp']}" in out

    bodies = out_file.read_text(encoding="utf-8").splitlines()
    assert len(bodies) == 1  # up to 15 events a request
    got = [e for body in bodies for e in json.loads(body)["events"]]
    assert got == expected
    for e in got:
        assert required <= set(e["attributes"]), e
    # the sample shows every case the README talks about: a skipped build and both statuses
    assert {e["attributes"]["status"] for e in got} == {"success", "failed"}


# --- what goes out is valid per the API reference -------------------------------------------------

def planned_inputs() -> list[tuple[str, Path, str]]:
    cases = [(name, REAL / name, "jenkins") for name, (_, ev, _) in sorted(JENKINS_CASES.items()) if ev]
    cases += [(name, REAL / name, "gitlab") for name, (_, ev, _) in sorted(GITLAB_CASES.items()) if ev]
    cases += [(JENKINS_SAMPLE.name, JENKINS_SAMPLE, "jenkins"), (GITLAB_SAMPLE.name, GITLAB_SAMPLE, "gitlab")]
    return cases


@pytest.mark.parametrize("name, path, kind", planned_inputs(), ids=[c[0] for c in planned_inputs()])
def test_request_bodies_follow_the_api_reference(name: str, path: Path, kind: str) -> None:
    mapping = jenkins_mapping(env="production") if kind == "jenkins" else gitlab_mapping()
    plan = build_plan([path], mapping)
    sent = 0
    for body in plan.request_bodies():
        assert "\n" not in body
        doc = json.loads(body)
        assert list(doc) == ["events"]
        assert 1 <= len(doc["events"]) <= 15
        for e in doc["events"]:
            assert set(e) == {"type", "timestamp", "entityId", "attributes"}
            assert e["type"] == "event-deploy"
            assert UTC_SECOND.fullmatch(e["timestamp"]), e["timestamp"]
            datetime.strptime(e["timestamp"], "%Y-%m-%dT%H:%M:%SZ")  # a real date
            assert e["entityId"] == ENTITY
            attributes = e["attributes"]
            assert set(attributes) <= API_ATTRIBUTES
            assert all(isinstance(v, str) and v.strip() for v in attributes.values()), attributes
            assert attributes["status"] in ("success", "failed")
            for name_ in API_DATE_ATTRIBUTES & set(attributes):
                assert UTC_SECOND.fullmatch(attributes[name_]), attributes
            if "deployment_start_time" in attributes:  # started no later than it finished
                assert attributes["deployment_start_time"] <= e["timestamp"]
            sent += 1
    assert sent == len(plan) > 0


# --- the mappings themselves ----------------------------------------------------------------------

@pytest.mark.parametrize("path", [JENKINS_YAML, GITLAB_YAML], ids=["jenkins", "gitlab"])
def test_shipped_mapping_is_commented_rule_by_rule(path: Path) -> None:
    """Every rule, option, lookup entry and filter carries a comment a user can adapt it by.

    Section headers (`attributes:`) and the `from:` line of a multi-line rule whose first line is
    commented are exempt."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#") or text.endswith(":") or text.startswith("from:"):
            continue
        assert " # " in line or "  #" in line, f"{path.name} line {number} has no comment: {line!r}"

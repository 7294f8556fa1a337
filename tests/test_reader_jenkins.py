"""The jenkins reader, on the real exports in tests/fixtures/real-exports and on small made-up cases."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from backfill.errors import MappingError, ReaderError
from backfill.readers import BadRow, SourceConfig
from backfill.readers import jenkins
from backfill.readers.jenkins import FIELDS, is_library_url, job_from_url, ms_to_iso, read

HERE = Path(__file__).parent
REAL = HERE / "fixtures" / "real-exports"
SAMPLE = HERE.parent / "samples" / "jenkins-builds.json"

# Columns every row has, whatever shape it came from.
COLUMNS = {
    "api", "job", "number", "id", "result", "building", "status", "started_at", "finished_at",
    "duration_ms", "url", "display_name", "full_display_name", "description", "commit_sha",
    "branch", "repo_url", "triggered_by", "cause", "commit_time", "_row",
}


def read_all(path: Path, **source: str) -> tuple[pd.DataFrame, list[BadRow]]:
    chunks = list(read(path, SourceConfig(format="jenkins", **source)))
    assert all(chunk.unit == "record" for chunk in chunks)
    frame = pd.concat([chunk.frame for chunk in chunks], ignore_index=True).astype(object)
    frame = frame.where(frame.notna(), None)  # readers give arrow text, missing as NaN: compared as None here
    return frame, [bad for chunk in chunks for bad in chunk.bad]


def rows(path: Path, **source: str) -> list[dict]:
    frame, bad = read_all(path, **source)
    assert bad == []
    assert COLUMNS <= set(frame.columns)
    assert list(frame["_row"]) == list(range(1, len(frame) + 1))
    for column in frame.columns:  # text or None, nothing else (no NaN, no numbers)
        assert all(v is None or isinstance(v, str) for v in frame[column] if column != "_row"), column
    return frame.to_dict("records")


def pick(row: dict, *names: str) -> tuple:
    return tuple(row.get(name) for name in names)


def write(tmp_path: Path, data: object, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def test_every_field_is_documented_in_the_module_table() -> None:
    """The lead copies the docstring table into the README: it must name every field."""
    assert COLUMNS == {*FIELDS, "_row"}
    doc = jenkins.__doc__ or ""
    for name in (*FIELDS, "params.NAME"):
        assert f"| `{name}` |" in doc, name


# --- pure helpers ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "ms, expected",
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1461091892486, "2016-04-19T18:51:32.486Z"),
        (1461091892486 + 60750, "2016-04-19T18:52:33.236Z"),
        (1414948052166, "2014-11-02T17:07:32.166Z"),  # agrees with the build id 2014-11-02_17-07-32
        (1650017186253, "2022-04-15T10:06:26.253Z"),  # 1650017186.253 is not exact as a float
        (253402300799999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_ms_to_iso_is_exact(ms: int, expected: str) -> None:
    assert ms_to_iso(ms) == expected


@pytest.mark.parametrize(
    "url, job",
    [
        ("http://localhost:32769/job/fish/10/", "fish"),
        ("https://ci/job/a/job/b/42/", "a/b"),
        ("https://ci/jenkins/view/All/job/Geode-nightly/1308/", "Geode-nightly"),
        ("/jenkins/job/Test%20Workflow/16/wfapi/describe", "Test Workflow"),
        ("/job/org/job/repo/job/hotfix%252F1.60.1/8/", "org/repo/hotfix%2F1.60.1"),  # decoded once
        ("https://ci/job/%E9%83%A8%E7%BD%B2/3/", "部署"),
        ("http://localhost:8080/job/matrix/label=master/1/", "matrix"),
        ("/blue/rest/organizations/jenkins/pipelines/folder/pipelines/mbp/pipelines/branch/runs/49/", "folder/mbp/branch"),
        ("/blue/rest/organizations/jenkins/pipelines/mbp/branches/feature%252Fx/runs/4/", "mbp/feature%2Fx"),
        ("https://ci/queue/item/71/", None),
        ("", None),
        (None, None),
    ],
)
def test_job_from_url(url: str | None, job: str | None) -> None:
    assert job_from_url(url) == job


@pytest.mark.parametrize(
    "url, library",
    [
        ("https://gitrepository.dettonville.int/stash/scm/api/infra-jenkins-pipeline-libs.git", True),
        ("https://gitrepository.dettonville.int/stash/scm/api/pipeline-automation-lib.git", True),
        ("https://gitrepository.dettonville.int/stash/scm/API/ara-pipelines.git", True),
        ("git@github.com:acme/jenkins-shared-library.git", True),
        ("https://github.com/acme/sharedLibraries", True),
        ("https://git.example.com/platform/jenkins-lib/", True),
        ("https://gitrepository.dettonville.int/stash/scm/dfsbizops/ara_spec_files.git", False),
        ("https://github.com/apache/geode.git", False),
        ("git@github.com:gustavobini/devlake-jenkins.git", False),
        ("https://github.com/acme/libretto.git", False),  # "lib" only as a whole word
    ],
)
def test_is_library_url(url: str, library: bool) -> None:
    assert is_library_url(url) is library


# --- real exports: classic API --------------------------------------------------------------

def test_devlake_allbuilds_tree_output_without_urls() -> None:
    """`tree=allBuilds[...]` of a folder job: no url, no building on most builds, some BuildData."""
    got = rows(REAL / "jenkins-devlake-allbuilds-data-column.json")
    devlake = "Test-jenkins-dir/test-jenkins-sub-dir/test-sub-sub-dir/devlake"
    expected = [
        # job, number, result, building, started_at, finished_at, duration_ms, commit_sha
        (devlake, "31", "SUCCESS", "false", "2022-04-15T12:00:49.161Z", "2022-04-15T12:00:50.748Z", "1587", "0f886c74949c3ee7e489188911c7dc0c1d547418"),
        (devlake, "21", "SUCCESS", "false", "2022-04-15T11:35:48.450Z", "2022-04-15T11:35:50.571Z", "2121", "0f886c74949c3ee7e489188911c7dc0c1d547418"),
        (devlake, "11", "SUCCESS", "false", "2022-04-15T10:10:16.514Z", "2022-04-15T10:10:31.334Z", "14820", "ceeffdfdd06bce232f9adb3a656265bad13a8473"),
        (devlake, "23", "SUCCESS", "false", "2022-09-08T14:26:51.512Z", "2022-09-08T14:26:51.573Z", "61", None),
        (devlake, "47", "SUCCESS", "false", "2022-04-15T11:35:56.910Z", "2022-04-15T11:35:56.916Z", "6", None),
        (devlake, "37", "SUCCESS", "false", "2022-04-15T10:06:26.253Z", "2022-04-15T10:06:26.256Z", "3", None),
        (devlake, "27", "SUCCESS", "true", "2022-04-15T10:06:17.939Z", None, "4", None),
        (devlake, "17", "SUCCESS", "false", "2022-04-15T10:05:53.775Z", "2022-04-15T10:05:53.832Z", "57", None),
        ("pipeline-test2", "1", "SUCCESS", "false", "2022-09-08T15:40:13.681Z", "2022-09-08T15:40:18.245Z", "4564", None),
        # rows DevLake edited: building true with a result, ABORTED, the misspelt NOT_BUILD, UNSTABLE
        (devlake, "10001", "SUCCESS", "true", "2022-04-15T10:06:17.939Z", None, "4", None),
        (devlake, "10002", "FAILURE", "true", "2022-04-15T10:06:17.939Z", None, "4", None),
        (devlake, "10003", "ABORTED", "false", "2022-04-15T10:06:17.939Z", "2022-04-15T10:06:17.943Z", "4", None),
        (devlake, "10004", "NOT_BUILD", "false", "2022-04-15T10:06:17.939Z", "2022-04-15T10:06:17.943Z", "4", None),
        (devlake, "10005", "UNSTABLE", "false", "2022-04-15T10:06:17.939Z", "2022-04-15T10:06:17.943Z", "4", None),
    ]
    fields = ("job", "number", "result", "building", "started_at", "finished_at", "duration_ms", "commit_sha")
    assert [pick(r, *fields) for r in got] == expected
    first = got[0]
    assert pick(first, "branch", "repo_url", "triggered_by", "cause", "url", "api") == (
        "main", "https://github.com/merico-dev/lake.git", "merico", "Started by user abc", None, "classic",
    )
    assert {r["triggered_by"] for r in got} == {"merico"}  # userId wins over userName "abc"
    assert not [c for c in got[0] if c.startswith("params.")]


def test_devlake_multibranch_job_names_keep_branches_apart() -> None:
    """Build numbers repeat across branches; the job name (from fullDisplayName here) keeps them apart."""
    got = rows(REAL / "jenkins-devlake-allbuilds-multibranch-data-column.json")
    assert len(got) == 15
    keys = [(r["job"], r["number"]) for r in got]
    assert len(set(keys)) == 15
    assert [r["number"] for r in got].count("2") == 4
    assert sorted({r["job"] for r in got}) == [
        "my-org/devlake-jenkins/PR-2",
        "my-org/devlake-jenkins/feature-1",
        "my-org/devlake-jenkins/feature-2",
        "my-org/devlake-jenkins/main",
    ]
    by_key = {(r["job"], r["number"]): r for r in got}
    fields = ("result", "started_at", "finished_at", "commit_sha", "branch", "repo_url", "triggered_by")
    assert pick(by_key["my-org/devlake-jenkins/main", "4"], *fields) == (
        "SUCCESS", "2024-03-24T10:52:31.963Z", "2024-03-24T10:53:02.378Z",
        "c83ae02076382670e286ac2474b7a7327fc28cde", "main", "git@github.com:gustavobini/devlake-jenkins.git",
        "Push event to branch main",
    )
    assert pick(by_key["my-org/devlake-jenkins/PR-2", "1"], *fields) == (
        "ABORTED", "2024-03-24T10:51:51.931Z", "2024-03-24T10:51:59.321Z",
        "aba54481a73573c0587f26fbd4c9788eb2bf2398", "PR-2", "git@github.com:gustavobini/devlake-jenkins.git",
        "Pull request #2 opened",  # the CauseAction, not the InterruptedBuildAction's "Timeout has been exceeded"
    )
    assert pick(by_key["my-org/devlake-jenkins/main", "1"], "triggered_by") == ("Branch indexing",)
    # FAILURE runs 4 and 5 of feature-2 have no BuildData and no change set: no SHA at all
    for number in ("4", "5"):
        assert pick(by_key["my-org/devlake-jenkins/feature-2", number], "result", "commit_sha", "branch") == (
            "FAILURE", None, None,
        )


@pytest.mark.parametrize(
    "name, params, commit_sha",
    [
        ("jenkins-jenkinsrest-build-info-params-causes.json", {"params.bear": "true", "params.fish": "salmon"}, None),
        ("jenkins-jenkinsrest-build-info-empty-null-params.json", {"params.bear": "null", "params.fish": ""}, None),
        (
            "jenkins-jenkinsrest-build-info-changesets-git.json",
            {"params.bear": "true", "params.fish": "salmon"},
            "d27afa0805201322d846d7defc29b82c88d9b5ce",  # from changeSets[] (no BuildData)
        ),
        ("jenkins-jenkinsrest-build-info-workflowrun.json", {}, None),
    ],
)
def test_jenkinsrest_single_builds(name: str, params: dict, commit_sha: str | None) -> None:
    (row,) = rows(REAL / name)
    assert pick(row, "job", "number", "id", "result", "building", "started_at", "finished_at", "duration_ms") == (
        "fish", "10", "10", "SUCCESS", "false", "2016-04-19T18:51:32.486Z", "2016-04-19T18:52:33.236Z", "60750",
    )
    assert pick(row, "url", "display_name", "full_display_name", "description") == (
        "http://localhost:32769/job/fish/10/", "#10", "fish #10", None,
    )
    # userId is null: the user name, not the description
    assert pick(row, "triggered_by", "cause", "commit_sha") == ("anonymous", "Started by user anonymous", commit_sha)
    assert {k: v for k, v in row.items() if k.startswith("params.")} == params


def test_empty_and_null_parameter_values_are_kept_as_text() -> None:
    frame, _ = read_all(REAL / "jenkins-jenkinsrest-build-info-empty-null-params.json")
    assert frame.loc[0, "params.bear"] == "null"  # the string "null", not a missing value
    assert frame.loc[0, "params.fish"] == ""  # empty text, not missing


def test_job_at_depth_0_lists_build_numbers_only() -> None:
    got = rows(REAL / "jenkins-jenkinsrest-job-info-depth0.json")
    assert [pick(r, "job", "number", "url") for r in got] == [
        ("fish", str(n), f"http://localhost:32769/job/fish/{n}/") for n in range(7, 0, -1)
    ]
    # nothing else is known: no result, no times, no guess about building
    assert {pick(r, "result", "building", "started_at", "finished_at") for r in got} == {(None, None, None, None)}
    # the job's parameterDefinitions are definitions, not a build's parameters
    assert not [c for c in got[0] if c.startswith("params.")]


def test_old_build_with_a_date_id_uses_number() -> None:
    (row,) = rows(REAL / "jenkins-gojenkins-build-legacy-dateid-failure.json")
    assert pick(row, "job", "number", "id", "result", "building", "started_at", "finished_at", "duration_ms") == (
        "testJob", "1", "2014-11-02_17-07-32", "FAILURE", "false",
        "2014-11-02T17:07:32.166Z", "2014-11-02T17:07:32.184Z", "18",
    )
    assert pick(row, "triggered_by", "params.param1", "commit_sha") == ("anonymous", "valudef", None)


def test_deploy_job_with_four_builddata_picks_the_non_library_one() -> None:
    """#213: BuildData of 3 shared libraries and a spec repo, result FAILURE, nextBuild: ""."""
    (row,) = rows(REAL / "jenkins-pipelineautomationlib-deploy-openapinotifier-stage-build.json")
    assert pick(row, "job", "number", "result", "building", "started_at", "finished_at", "duration_ms") == (
        "DCAPI/DeploymentJobs/DeployOpenAPINotifierStage/main", "213", "FAILURE", "false",
        "2019-09-04T13:54:48.538Z", "2019-09-04T13:57:58.395Z", "189857",
    )
    assert pick(row, "commit_sha", "branch", "repo_url") == (
        "a2a0e642b6958086f9a5c852e08264de406df4a2", "main",
        "https://gitrepository.dettonville.int/stash/scm/dfsbizops/ara_spec_files.git",
    )
    assert pick(row, "triggered_by", "cause", "params.ARTIFACT_VERSION", "description") == (
        "e080847", "Started by user Ruddy, Matt", "1.61.0-SNAPSHOT", "",
    )


@pytest.mark.parametrize(
    "pattern, sha, repo_url",
    [
        (r"pipeline-automation-lib", "d162841d98eb088c40f9b5cb8d9bd24c6481b1cf",
         "https://gitrepository.dettonville.int/stash/scm/api/pipeline-automation-lib.git"),
        (r"(?i)/api/ara-pipelines\.git$", "2c8143d26419e53c1495c9276d49871d7e42ff8f",
         "https://gitrepository.dettonville.int/stash/scm/API/ara-pipelines.git"),
        (r"infra-jenkins", "c695d1d1fc99c00683fb81a2e2a5ea18d8eed4ba",
         "https://gitrepository.dettonville.int/stash/scm/api/infra-jenkins-pipeline-libs.git"),
        # nothing matches: no BuildData is used, and this build has no change set or GIT_COMMIT
        (r"github\.com/acme/frontend", None, None),
    ],
)
def test_repo_url_matches_picks_the_builddata(pattern: str, sha: str | None, repo_url: str | None) -> None:
    (row,) = rows(REAL / "jenkins-pipelineautomationlib-deploy-openapinotifier-stage-build.json", repo_url_matches=pattern)
    assert pick(row, "commit_sha", "repo_url") == (sha, repo_url)


def test_invalid_repo_url_matches_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match=r"source.repo_url_matches: invalid regular expression"):
        read_all(REAL / "jenkins-gojenkins-build-legacy-dateid-failure.json", repo_url_matches="(")


def test_deploy_job_721_once_its_groovy_escaping_is_undone(tmp_path: Path) -> None:
    """The published text is invalid JSON (see test_jsonish_files_are_rejected); unescaped, it reads."""
    text = (REAL / "jenkins-pipelineautomationlib-deploy-frontend-stage-build-721.jsonish").read_text(encoding="utf-8")
    (row,) = rows(write(tmp_path, text.replace("\\\\", "\\")))
    assert pick(row, "job", "number", "result", "started_at", "finished_at") == (
        "DCAPI/DeploymentJobs/DeployFrontendStage/main", "721", "SUCCESS",
        "2019-08-23T18:22:55.431Z", "2019-08-23T18:27:37.624Z",
    )
    assert pick(row, "repo_url", "branch") == (
        "https://gitrepository.dettonville.int/stash/scm/dfsbizops/ara_spec_files.git", "main",
    )
    assert row["triggered_by"] == 'Started by upstream project "DCAPI/DevzoneFrontend/hotfix%2F1.60.1" build number 8'
    assert row["params.ARTIFACT_VERSION"] == "1.60.1-SNAPSHOT"


# --- real exports: wfapi and Blue Ocean ------------------------------------------------------

WFAPI_FIELDS = ("job", "number", "id", "result", "building", "status", "started_at", "finished_at", "duration_ms", "url")


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "jenkins-jenkinsrest-wfapi-runs.json",
            [
                ("Test Workflow", "16", "2014-10-16_13-07-52", None, "true", "PAUSED_PENDING_INPUT",
                 "2014-10-16T12:07:55.770Z", None, "10229", "/jenkins/job/Test%20Workflow/16/"),
                ("Test Workflow", "15", "2014-10-16_12-45-06", "SUCCESS", "false", "SUCCESS",
                 "2014-10-16T11:45:10.289Z", "2014-10-16T11:45:37.070Z", "26781", "/jenkins/job/Test%20Workflow/15/"),
            ],
        ),
        (
            "jenkins-jenkinsrest-wfapi-describe.json",
            [
                ("Test Workflow", "16", "2014-10-16_13-07-52", None, "true", "PAUSED_PENDING_INPUT",
                 "2014-10-16T12:07:55.770Z", None, "10229", "/jenkins/job/Test%20Workflow/16/"),
            ],
        ),
        (
            "jenkins-stageview-wfapi-runs-failed.json",
            [
                ("cd", "3", "2014-10-26_10-12-29", "FAILURE", "false", "FAILED",
                 "2014-10-26T10:12:29.569Z", "2014-10-26T10:13:09.097Z", "39528", "/job/cd/3/"),
                ("cd", "1", "2014-10-26_10-10-32", "SUCCESS", "false", "SUCCESS",
                 "2014-10-26T10:10:32.950Z", "2014-10-26T10:11:28.921Z", "55971", "/job/cd/1/"),
            ],
        ),
        (
            "jenkins-stageview-wfapi-runs-in-progress.json",
            [
                # endTimeMillis is given but the run is still going: no finished_at
                ("cd", "1", "2014-10-26_10-10-32", None, "true", "IN_PROGRESS",
                 "2014-10-26T10:10:32.950Z", None, "55971", "/job/cd/1/"),
            ],
        ),
        (
            "jenkins-stageview-wfapi-runs-unstable.json",
            [
                ("cd", "1", "2014-10-26_10-10-32", "UNSTABLE", "false", "UNSTABLE",
                 "2014-10-26T10:10:32.950Z", "2014-10-26T10:11:28.921Z", "55971", "/job/cd/1/"),
            ],
        ),
        (
            "jenkins-stageview-wfapi-runs-no-id-no-endtime.json",
            [
                # no id, no _links: number from name "#3", no job; finished_at = start + durationMillis
                (None, "3", None, None, "true", "IN_PROGRESS", "2014-09-24T11:00:23.000Z", None, "8584", None),
                (None, "2", None, "SUCCESS", "false", "SUCCESS", "2014-09-24T10:54:49.000Z",
                 "2014-09-24T10:54:57.949Z", "8949", None),
                (None, "1", None, None, "true", "IN_PROGRESS", "2014-09-24T09:55:53.000Z", None, "2220", None),
            ],
        ),
    ],
)
def test_wfapi_runs(name: str, expected: list[tuple]) -> None:
    got = rows(REAL / name)
    assert [pick(r, *WFAPI_FIELDS) for r in got] == expected
    assert {r["api"] for r in got} == {"wfapi"}
    assert {pick(r, "commit_sha", "triggered_by") for r in got} == {(None, None)}


@pytest.mark.parametrize(
    "name, expected",
    [
        (
            "jenkins-apmlib-blueocean-run-running.json",
            # result UNKNOWN while RUNNING: empty result, building, no finished_at; +0000 offset parsed
            ("folder/mbp/branch", "49", None, "true", "RUNNING", "2019-05-29T12:07:15.104Z", None, "202001",
             "62e45e5eec4bf6f447230b41c22db5d1b6c3b52a", "Push event to branch develop"),
        ),
        (
            "jenkins-apmlib-blueocean-run-finished-wiremock.json",
            ("it/getBuildInfoJsonFiles/cobertura", "1", "SUCCESS", "false", "FINISHED",
             "2021-07-21T09:36:29.671Z", "2021-07-21T09:36:48.691Z", "19020", None, "anonymous"),
        ),
    ],
)
def test_blueocean_runs(name: str, expected: tuple) -> None:
    (row,) = rows(REAL / name)
    fields = ("job", "number", "result", "building", "status", "started_at", "finished_at", "duration_ms",
              "commit_sha", "triggered_by")
    assert pick(row, *fields) == expected
    assert row["api"] == "blueocean"


def test_blueocean_changeset_is_not_a_run() -> None:
    with pytest.raises(ReaderError) as caught:
        read_all(REAL / "jenkins-apmlib-blueocean-changeset.json")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{REAL / 'jenkins-apmlib-blueocean-changeset.json'}: no Jenkins builds")
    assert "keys: affectedPaths, author, checkoutCount, commitId" in message


@pytest.mark.parametrize(
    "name, line, column",
    [
        ("jenkins-checkman-apache-geode-build-lastBuild.jsonish", 80, 3),  # trailing comma before ]
        ("jenkins-pipelineautomationlib-deploy-frontend-stage-build-721.jsonish", 9, 64),  # Groovy \\"
        ("jenkins-pipelineautomationlib-deploy-devportal-stage-build-3.jsonish", 8, 69),
    ],
)
def test_jsonish_files_are_rejected(name: str, line: int, column: int) -> None:
    with pytest.raises(ReaderError) as caught:
        read_all(REAL / name)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{REAL / name}: invalid JSON at line {line}, column {column}: ")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- shapes and rules, made-up data ----------------------------------------------------------

def build(number: int, **extra: object) -> dict:
    return {"number": number, "timestamp": 1700000000000 + number, "duration": 1000, "result": "SUCCESS", **extra}


def git(sha: str, url: str, branch: str = "refs/remotes/origin/main") -> dict:
    return {"lastBuiltRevision": {"SHA1": sha, "branch": [{"SHA1": sha, "name": branch}]}, "remoteUrls": [url]}


def test_folders_views_and_job_lists_recursively(tmp_path: Path) -> None:
    export = {
        "_class": "hudson.model.ListView",
        "name": "All",
        "url": "https://ci/view/All/",
        "jobs": [
            {"name": "team", "jobs": [  # a folder exported with names only (tree=jobs[name,jobs[...]])
                {"name": "deploy", "builds": [build(2), build(1)]},
                {"name": "sub", "jobs": [{"name": "api", "allBuilds": [build(7)], "builds": [build(7)]}]},
            ]},
            {"fullName": "other/job", "builds": [build(5, url="https://ci/job/x/5/")]},  # fullName wins
            {"name": "plain", "url": "https://ci/job/top/job/plain/", "builds": [build(3)]},  # url gives the path
            {"name": "idle", "url": "https://ci/job/idle/", "color": "notbuilt"},  # no builds: no rows
        ],
    }
    got = rows(write(tmp_path, export))
    assert [pick(r, "job", "number", "url") for r in got] == [
        ("team/deploy", "2", None),
        ("team/deploy", "1", None),
        ("team/sub/api", "7", None),  # allBuilds preferred over builds: listed once
        ("other/job", "5", "https://ci/job/x/5/"),
        ("top/plain", "3", "https://ci/job/top/job/plain/3/"),  # built from the job url
    ]


def test_build_url_names_the_job_when_the_job_has_only_a_name(tmp_path: Path) -> None:
    export = [{"name": "api", "builds": [build(4, url="https://ci/job/team/job/api/4/")]}]
    (row,) = rows(write(tmp_path, export))
    assert row["job"] == "team/api"


def test_several_exports_appended_in_one_file(tmp_path: Path) -> None:
    first = (REAL / "jenkins-jenkinsrest-wfapi-runs.json").read_text(encoding="utf-8")
    second = (REAL / "jenkins-gojenkins-build-legacy-dateid-failure.json").read_text(encoding="utf-8")
    page = json.dumps({"name": "fish", "builds": [build(8), build(9)]})
    got = rows(write(tmp_path, first + "\n" + second + page))
    assert [pick(r, "api", "job", "number") for r in got] == [
        ("wfapi", "Test Workflow", "16"),
        ("wfapi", "Test Workflow", "15"),
        ("classic", "testJob", "1"),
        ("classic", "fish", "8"),
        ("classic", "fish", "9"),
    ]


def test_syntax_error_in_a_later_value_reports_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[{"number": 1}]\n\n[{"number": 2,}]\n')
    with pytest.raises(ReaderError, match=r"invalid JSON at line 3, column 15"):
        read_all(path)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match=r"export.json: the file is empty"):
        read_all(write(tmp_path, " \n"))


def test_unrecognised_objects_among_builds_are_bad_rows(tmp_path: Path) -> None:
    frame, bad = read_all(write(tmp_path, [build(1), {"foo": 1}, "text", build(2)]))
    assert list(frame["number"]) == ["1", "2"]
    assert list(frame["_row"]) == [1, 4]
    assert [(b.row, b.reason) for b in bad] == [
        (2, "not a Jenkins build, job or run (keys: foo)"),
        (3, "a string, not a build or job"),  # JSON's words, not Python's (issue 8)
    ]


DROP = object()


@pytest.mark.parametrize(
    "extra, building, finished_at",
    [
        ({"building": True, "result": None, "duration": 0}, "true", None),
        ({"building": True}, "true", None),  # DevLake-style: running with a result
        ({"building": False, "duration": 0}, "false", "2023-11-14T22:13:20.001Z"),
        ({"result": None}, "true", None),  # no building field: a null result means running
        ({}, "false", "2023-11-14T22:13:21.001Z"),
        ({"building": None, "duration": 0}, "false", "2023-11-14T22:13:20.001Z"),
        ({"result": DROP}, None, "2023-11-14T22:13:21.001Z"),  # neither exported: unknown
        ({"result": DROP, "duration": 0}, None, None),  # ... and duration 0: probably still running
    ],
)
def test_building_and_finished_at(tmp_path: Path, extra: dict, building: str | None, finished_at: str | None) -> None:
    export = {k: v for k, v in {**build(1), **extra}.items() if v is not DROP}
    (row,) = rows(write(tmp_path, export))
    assert pick(row, "started_at", "building", "finished_at") == ("2023-11-14T22:13:20.001Z", building, finished_at)


def test_timestamps_that_are_not_integer_ms(tmp_path: Path) -> None:
    export = [build(1, timestamp=1700000000000.0), build(2, timestamp="2023-11-14 22:13:20"), build(3, timestamp=0)]
    got = rows(write(tmp_path, export))
    assert [pick(r, "started_at", "finished_at") for r in got] == [
        ("2023-11-14T22:13:20.000Z", "2023-11-14T22:13:21.000Z"),
        ("2023-11-14 22:13:20", None),  # kept as written, for the mapping to parse or report
        (None, None),  # 0 is unknown
    ]


def test_commit_sha_fallbacks(tmp_path: Path) -> None:
    change_set = {"items": [{"commitId": "aaa1"}, {"commitId": "aaa2"}], "kind": "git"}
    params = {"parameters": [{"name": "GIT_COMMIT", "value": "ccc3"}, {"name": "GIT_BRANCH", "value": "origin/rel"}]}
    export = [
        build(1, actions=[params, git("bbb1", "https://git/acme/app.git")], changeSet=change_set),
        build(2, actions=[params], changeSets=[change_set, {"items": []}]),
        build(3, actions=[params], changeSet={"items": [], "kind": None}),
        build(4, actions=[{}], changeSet=None),
    ]
    got = rows(write(tmp_path, export))
    assert [pick(r, "commit_sha", "branch", "repo_url") for r in got] == [
        ("bbb1", "main", "https://git/acme/app.git"),  # BuildData first
        ("aaa2", "origin/rel", None),  # else the last commit of the last non-empty change set
        ("ccc3", "origin/rel", None),  # else the GIT_COMMIT parameter
        (None, None, None),
    ]


def test_library_heuristics(tmp_path: Path) -> None:
    lib = git("1111", "https://git/platform/jenkins-shared-library.git", "refs/remotes/origin/v3")
    app = git("2222", "git@git:acme/app.git")
    config = git("3333", "git@git:acme/deploy-config.git")
    only_lib = git("4444", "https://git/platform/pipeline-lib.git")
    export = [
        {"name": "app-deploy", "builds": [
            build(1, actions=[lib, app]),  # library set aside
            build(2, actions=[only_lib]),  # a lone BuildData is used, whatever its name
            build(3, actions=[lib, only_lib]),  # only libraries: none used
            build(4, actions=[config, app]),  # deploy-config is used by another job too: app wins
        ]},
        {"name": "other-deploy", "builds": [build(1, actions=[config, git("5555", "git@git:acme/other.git")])]},
    ]
    got = rows(write(tmp_path, export))
    assert [r["commit_sha"] for r in got] == ["2222", "4444", None, "2222", "5555"]


def test_triggered_by_order(tmp_path: Path) -> None:
    def causes(*items: dict) -> list[dict]:
        return [{"_class": "hudson.model.CauseAction", "causes": list(items)}]

    upstream = {"shortDescription": "Started by upstream project \"a\" build number 3", "upstreamBuild": 3}
    export = [
        build(1, actions=causes({"shortDescription": "Started by user Jo", "userId": "jo", "userName": "Jo"})),
        build(2, actions=causes({"shortDescription": "Started by user Jo", "userId": None, "userName": "Jo"})),
        build(3, actions=causes(upstream, {"shortDescription": "Started by user Ann", "userId": "ann"})),
        build(4, actions=causes(upstream)),
        build(5, actions=[{"_class": "jenkins.model.InterruptedBuildAction",
                           "causes": [{"shortDescription": "Aborted by Jo", "userId": "jo"}]}]),
        build(6, actions=[{"causes": [{"shortDescription": "Started by timer"}]}]),  # no _class
    ]
    got = rows(write(tmp_path, export))
    assert [pick(r, "triggered_by", "cause") for r in got] == [
        ("jo", "Started by user Jo"),
        ("Jo", "Started by user Jo"),
        ("ann", upstream["shortDescription"]),
        (upstream["shortDescription"], upstream["shortDescription"]),
        (None, None),
        ("Started by timer", "Started by timer"),
    ]


def test_wfapi_status_spellings(tmp_path: Path) -> None:
    statuses = ["SUCCESS", "FAILED", "UNSTABLE", "ABORTED", "NOT_EXECUTED", "IN_PROGRESS", "PAUSED_PENDING_INPUT"]
    export = [
        {"id": str(n), "name": f"#{n}", "status": s, "startTimeMillis": 1700000000000, "durationMillis": 5,
         "endTimeMillis": 1700000000005}
        for n, s in enumerate(statuses, start=1)
    ]
    got = rows(write(tmp_path, export))
    assert [pick(r, "result", "building", "finished_at") for r in got] == [
        ("SUCCESS", "false", "2023-11-14T22:13:20.005Z"),
        ("FAILURE", "false", "2023-11-14T22:13:20.005Z"),
        ("UNSTABLE", "false", "2023-11-14T22:13:20.005Z"),
        ("ABORTED", "false", "2023-11-14T22:13:20.005Z"),
        ("NOT_BUILT", "false", "2023-11-14T22:13:20.005Z"),
        (None, "true", None),
        (None, "true", None),
    ]


# --- the shipped sample ----------------------------------------------------------------------

def test_sample_parses() -> None:
    got = rows(SAMPLE)
    assert len(got) == 12
    assert {r["job"] for r in got} == {"payments/deploy-payments-api"}
    assert [r["number"] for r in got] == [str(n) for n in range(112, 100, -1)]
    results = [r["result"] for r in got]
    assert results.count("SUCCESS") == 8
    assert {"FAILURE", "UNSTABLE", "ABORTED", None} <= set(results)
    running = got[0]
    assert pick(running, "result", "building", "finished_at") == (None, "true", None)
    with_library = next(r for r in got if r["number"] == "111")
    assert pick(with_library, "commit_sha", "repo_url", "branch") == (
        "4b1d0c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c", "https://git.example.com/payments/payments-api.git", "main",
    )
    assert {r["params.ENV"] for r in got} == {"production", "staging"}
    assert {r["triggered_by"] for r in got} == {"alice", "bob", "carol", "Started by timer"}
    aborted = next(r for r in got if r["result"] == "ABORTED")
    assert aborted["triggered_by"] == "carol"  # not the InterruptedBuildAction
    assert all(r["started_at"].endswith("Z") for r in got)


def test_lone_surrogate_escape_is_a_one_line_error(tmp_path: Path) -> None:
    # json parses "\ud800" alone into a str that cannot be encoded as UTF-8: it could never be sent
    text = json.dumps([build(1)]) + "\n" + '[{"number": 2, "description": "bad \\ud800 x"}]\n'
    path = write(tmp_path, text)
    with pytest.raises(ReaderError) as caught:
        read_all(path)
    column = len('[{"number": 2, "description": "bad ') + 1
    assert str(caught.value) == (
        f"{path}: line 2, column {column}: a lone UTF-16 surrogate escape \\ud800 (half of a character) cannot be "
        "sent as UTF-8; remove it or replace it with the intended character, then read the file again"
    )


def test_surrogate_pairs_and_escaped_backslashes_are_fine(tmp_path: Path) -> None:
    path = write(tmp_path, '[{"number": 1, "result": "SUCCESS", "description": "\\ud83d\\ude80 C:\\\\ud800"}]')
    (row,) = rows(path)
    assert row["description"] == "\U0001F680 C:\\ud800"

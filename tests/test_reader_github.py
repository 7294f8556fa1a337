"""The github-actions and github-deployments readers, on the real exports in
tests/fixtures/real-exports (see PROVENANCE.md, section GitHub) and on small made-up cases.

Expected values were read off the fixture JSON by hand, never copied from the reader's output."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.errors import ReaderError
from backfill.readers import BadRow, SourceConfig, get_reader
from backfill.readers import github_actions, github_deployments
from backfill.readers.github_actions import finished_at, latest_time, workflow_file
from backfill.readers.github_deployments import effective_state

HERE = Path(__file__).parent
REAL = HERE / "fixtures" / "real-exports"
ROOT = HERE.parent

RUN_FIELDS = ("id", "run_attempt", "status", "conclusion", "started_at", "finished_at", "workflow_file",
              "latest_attempt", "actor.login", "triggering_actor.login", "display_title")
DEPLOY_FIELDS = ("id", "node_id", "sha", "environment", "creator.login", "started_at", "state_effective",
                 "finished_at", "finished_at_estimated", "log_url", "statuses_seen")


def read_all(path: Path, fmt: str) -> tuple[pd.DataFrame, list[BadRow]]:
    chunks = list(get_reader(fmt)(path, SourceConfig(format=fmt)))
    assert all(chunk.unit == "record" for chunk in chunks)
    frame = pd.concat([chunk.frame for chunk in chunks], ignore_index=True).astype(object)
    frame = frame.where(frame.notna(), None)  # readers give arrow text, missing as NaN: compared as None here
    return frame, [bad for chunk in chunks for bad in chunk.bad]


def rows(path: Path, fmt: str = "github-actions") -> list[dict]:
    frame, bad = read_all(path, fmt)
    assert bad == []
    assert list(frame["_row"]) == list(range(1, len(frame) + 1))
    for column in frame.columns:
        assert all(v is None or isinstance(v, str) for v in frame[column] if column != "_row"), column
    return frame.to_dict("records")


def deployments(path: Path) -> list[dict]:
    return rows(path, "github-deployments")


def pick(row: dict, *names: str) -> tuple:
    return tuple(row.get(name) for name in names)


def write(tmp_path: Path, text: str, name: str = "export.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def mapping_fields(name: str) -> set[str]:
    from backfill.mapping import load_mapping

    return load_mapping(ROOT / "mappings" / name).fields


# --- github-actions: documentation and guaranteed columns -----------------------------------

def test_actions_fields_are_documented() -> None:
    doc = " ".join((github_actions.__doc__ or "").split())
    for name in ("finished_at", "started_at", "workflow_file", "latest_attempt"):
        assert f"| `{name}` |" in doc, name
    for name in github_actions.BASE_FIELDS:
        assert f"`{name}`" in doc, name


def test_every_field_the_actions_mapping_reads_is_always_a_column(tmp_path: Path) -> None:
    (row,) = rows(write(tmp_path, json.dumps({"id": 1, "run_number": 1})))
    assert mapping_fields("github-actions.yaml") <= set(row)
    assert mapping_fields("github-actions.yaml") <= set(github_actions.BASE_FIELDS)


# --- github-actions: real exports -----------------------------------------------------------

def test_2020_runs_lack_attempt_start_actor_and_path() -> None:
    got = rows(REAL / "github-pygithub-workflow-runs-2020.json")
    assert [pick(r, *RUN_FIELDS) for r in got] == [
        ("109950033", None, "completed", "success", "2020-05-20T02:37:57Z", "2020-05-20T02:40:25Z", None, "true", None, None, None),
        ("109168419", None, "completed", "success", "2020-05-19T10:39:04Z", "2020-05-19T10:41:34Z", None, "true", None, None, None),
        ("108934155", None, "completed", "failure", "2020-05-19T05:51:36Z", "2020-05-19T05:54:02Z", None, "true", None, None, None),
        ("108817672", None, "completed", "success", "2020-05-19T02:28:36Z", "2020-05-19T02:30:56Z", None, "true", None, None, None),
    ]
    first = got[0]
    assert pick(first, "run_number", "event", "head_branch", "head_sha", "workflow_id", "run_started_at", "name", "path") == (
        "112", "push", "master", "61b610926a023d80486ce1115e7331a4c714cfcb", "1026390", None, None, None,
    )
    assert pick(first, "head_commit.timestamp", "head_repository.full_name", "html_url") == (
        "2020-05-20T02:37:52Z", "PyGithub/PyGithub", "https://github.com/PyGithub/PyGithub/actions/runs/109950033",
    )
    assert first["pull_requests"] == "[]"
    assert got[2]["head_commit.timestamp"] == "2020-03-12T16:33:02Z"  # a PR run on an older commit


def test_2023_run_finishes_at_updated_at_without_jobs() -> None:
    (row,) = rows(REAL / "github-pygithub-workflow-run-2023.json")
    assert pick(row, *RUN_FIELDS) == (
        "3881497935", "1", "completed", "success", "2023-01-10T08:24:19Z", "2023-01-10T08:28:20Z", "ci.yml", "true",
        "nuang-ee", "nuang-ee", "TEST PR",
    )
    assert pick(row, "path", "name", "event", "head_repository.full_name", "head_commit.timestamp", "head_sha") == (
        ".github/workflows/ci.yml", "CI", "pull_request", "nuang-ee/PyGithub", "2023-01-10T08:08:37Z",
        "c6e5cac67a58a4eb11f1f28567a77a6e2cc8ee98",
    )


def test_embedded_jobs_give_the_latest_job_end() -> None:
    (row,) = rows(REAL / "github-pygithub-workflow-run-2023-with-jobs.json")
    # jobs completed 08:25:28, 08:28:18, 08:25:30, 08:25:46, 08:25:50; the run's updated_at is 08:28:20
    assert pick(row, "finished_at", "updated_at", "started_at") == (
        "2023-01-10T08:28:18Z", "2023-01-10T08:28:20Z", "2023-01-10T08:24:19Z",
    )


def test_whole_jobs_response_embedded_works_too(tmp_path: Path) -> None:
    run = json.loads((REAL / "github-pygithub-workflow-run-2023-with-jobs.json").read_text())
    run["jobs"] = {"total_count": len(run["jobs"]), "jobs": run["jobs"]}
    (row,) = rows(write(tmp_path, json.dumps(run)))
    assert row["finished_at"] == "2023-01-10T08:28:18Z"


def test_updated_years_later_is_what_a_run_without_jobs_gives() -> None:
    (row,) = rows(REAL / "github-pygithub-workflow-runs-created-2022.json")
    # created and started 2022-12-24, touched again on 2024-01-29: the caveat in the README, as published
    assert pick(row, "id", "started_at", "finished_at", "display_title") == (
        "3770390952", "2022-12-24T07:29:12Z", "2024-01-29T23:29:45Z", "CI: Update action actions/setup-python",
    )


def test_re_run_attempt_starts_at_run_started_at() -> None:
    (row,) = rows(REAL / "github-pygithub-workflow-run-attempt-2.json")
    assert pick(row, *RUN_FIELDS) == (
        "26365060973", "2", "completed", "success", "2026-05-29T15:42:05Z", "2026-05-29T15:43:47Z", "codeql.yml", "true",
        "EnricoMi", "EnricoMi", "CodeQL Advanced",
    )
    assert row["created_at"] == "2026-05-24T15:20:04Z"  # the first attempt's creation, not this attempt's start


def test_times_with_offsets_are_compared_as_instants() -> None:
    (row,) = rows(REAL / "github-derived-workflow-run-offsets.json")
    # 03:28:18-05:00 is 08:28:18Z, the latest job; 13:55:50+05:30 (08:25:50Z) is larger only as text
    assert pick(row, "finished_at", "started_at") == ("2023-01-10T03:28:18-05:00", "2023-01-10T03:24:19-05:00")


# --- github-actions: re-runs across overlapping pages ---------------------------------------

RERUN = REAL / "github-derived-rerun-overlapping-pages.json"


def test_rerun_pages_mark_one_row_per_run() -> None:
    got = rows(RERUN)
    assert [pick(r, "id", "run_attempt", "conclusion", "finished_at", "latest_attempt") for r in got] == [
        ("26365060973", "1", "failure", "2026-05-24T15:21:46Z", "false"),
        ("4205440316", "1", "success", "2023-02-17T16:06:11Z", "true"),  # the first of two identical copies
        ("26365060973", "2", "success", "2026-05-29T15:43:47Z", "true"),
        ("4205440316", "1", "success", "2023-02-17T16:06:11Z", "false"),
    ]


def _records() -> list[dict]:
    text = RERUN.read_text()
    decoder, position, out = json.JSONDecoder(), 0, []
    while position < len(text.strip()):
        page, position = decoder.raw_decode(text, position)
        out.extend(page["workflow_runs"])
    return out


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_highest_attempt_wins_whatever_the_order(tmp_path: Path, order: tuple[int, ...]) -> None:
    records = _records()
    shuffled = [records[i] for i in order]
    text = "\n".join(json.dumps({"total_count": 1, "workflow_runs": [r]}) for r in shuffled)
    got = rows(write(tmp_path, text))
    winners = [(r["id"], r["run_attempt"]) for r in got if r["latest_attempt"] == "true"]
    assert sorted(winners) == [("26365060973", "2"), ("4205440316", "1")]


def test_copies_of_one_attempt_prefer_completed_then_earliest_end(tmp_path: Path) -> None:
    base = {"id": 7, "run_number": 7, "run_attempt": 3, "created_at": "2024-01-01T10:00:00Z"}
    export = [
        {**base, "status": "in_progress", "conclusion": None, "updated_at": "2024-01-01T10:01:00Z"},
        {**base, "status": "completed", "conclusion": "success", "updated_at": "2025-06-01T00:00:00Z"},  # touched later
        {**base, "status": "completed", "conclusion": "success", "updated_at": "2024-01-01T10:05:00+01:00"},
        {**base, "run_attempt": 2, "status": "completed", "conclusion": "failure", "updated_at": "2024-01-01T09:59:00Z"},
    ]
    got = rows(write(tmp_path, json.dumps(export)))
    assert [r["latest_attempt"] for r in got] == ["false", "false", "true", "false"]


def test_missing_attempt_counts_as_one(tmp_path: Path) -> None:
    export = [{"id": 5, "head_sha": "a", "status": "completed", "updated_at": "2021-01-01T00:00:00Z"},
              {"id": 5, "head_sha": "a", "run_attempt": 2, "status": "completed", "updated_at": "2021-01-02T00:00:00Z"}]
    assert [r["latest_attempt"] for r in rows(write(tmp_path, json.dumps(export)))] == ["false", "true"]


# --- github-actions: shapes and derived fields, made-up data --------------------------------

def run(number: int, **extra: object) -> dict:
    return {"id": number, "run_number": number, "status": "completed", "conclusion": "success",
            "created_at": "2024-03-01T10:00:00Z", "updated_at": "2024-03-01T10:05:00Z", **extra}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"total_count": 2, "workflow_runs": [run(1), run(2)]}) + json.dumps({"total_count": 2, "workflow_runs": [run(3)]}),
        json.dumps([run(1), run(2), run(3)]),
        "\n".join(json.dumps(run(n)) for n in (1, 2, 3)) + "\n",
        json.dumps([{"total_count": 2, "workflow_runs": [run(1), run(2)]}, {"workflow_runs": [run(3)]}]),
        json.dumps(run(1)) + "\n\n" + json.dumps([run(2)]) + json.dumps({"workflow_runs": [run(3)]}),
    ],
    ids=["pages-appended", "bare-array", "ndjson", "slurped-pages", "mixed"],
)
def test_run_shapes(tmp_path: Path, text: str) -> None:
    assert [r["id"] for r in rows(write(tmp_path, text))] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "run_fields, expected",
    [
        ({"status": "in_progress", "conclusion": None}, None),
        ({"status": "queued"}, None),
        ({"status": "completed"}, "2024-03-01T10:05:00Z"),
        ({"status": "completed", "jobs": []}, "2024-03-01T10:05:00Z"),
        ({"status": "completed", "jobs": [{"completed_at": None}]}, "2024-03-01T10:05:00Z"),
        ({"status": "completed", "jobs": [{"completed_at": "2024-03-01T10:03:00Z"}, {"completed_at": None}]},
         "2024-03-01T10:03:00Z"),
        ({"status": "completed", "jobs": [{"completed_at": "garbage"}]}, "garbage"),  # reported by the plan
        ({"status": "in_progress", "jobs": [{"completed_at": "2024-03-01T10:03:00Z"}]}, None),
    ],
)
def test_finished_at(run_fields: dict, expected: str | None) -> None:
    assert finished_at({"updated_at": "2024-03-01T10:05:00Z", **run_fields}) == expected


@pytest.mark.parametrize(
    "values, expected",
    [
        (["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+02:00"], "2024-01-01T00:00:00Z"),
        (["2024-01-01T00:00:00.500Z", "2024-01-01T00:00:00Z"], "2024-01-01T00:00:00.500Z"),
        (["x", "2024-01-01T00:00:00Z"], "2024-01-01T00:00:00Z"),
        ([None, ""], None),
        (["2024-01-01T00:00:00"], "2024-01-01T00:00:00"),  # no zone: kept, the mapping's timezone applies
    ],
)
def test_latest_time(values: list, expected: str | None) -> None:
    assert latest_time(values) == expected


@pytest.mark.parametrize(
    "path, expected",
    [(".github/workflows/deploy.yml", "deploy.yml"), (".github/workflows/release.yaml", "release.yaml"),
     ("deploy.yml", "deploy.yml"), ("octo/repo/.github/workflows/ci.yml@refs/heads/main", "ci.yml"),
     ("", None), (None, None)],
)
def test_workflow_file(path: str | None, expected: str | None) -> None:
    assert workflow_file(path) == expected


def test_started_at_falls_back_to_created_at(tmp_path: Path) -> None:
    export = [run(1, run_started_at=None), run(2, run_started_at="2024-03-01T10:00:07Z")]
    assert [r["started_at"] for r in rows(write(tmp_path, json.dumps(export)))] == [
        "2024-03-01T10:00:00Z", "2024-03-01T10:00:07Z",
    ]


def test_not_runs_are_bad_rows_and_a_file_of_them_is_rejected(tmp_path: Path) -> None:
    jobs = json.loads((REAL / "github-pygithub-workflow-run-2023-with-jobs.json").read_text())["jobs"]
    webhook = {"action": "completed", "workflow_run": run(9), "sender": {"login": "x"}}
    export = [run(1), {"total_count": 5, "jobs": jobs}, webhook, 42, {"name": "x"}, run(2)]
    frame, bad = read_all(write(tmp_path, json.dumps(export)), "github-actions")
    assert list(frame["id"]) == ["1", "2"]
    assert list(frame["_row"]) == [1, 6]
    assert [(b.row, b.reason.split(";")[0]) for b in bad] == [
        (2, "a jobs response on its own"),
        (3, "a workflow_run webhook payload, not a runs API object"),
        (4, "a number, not a workflow run"),
        (5, "not a GitHub Actions workflow run (keys: name)"),
    ]
    path = write(tmp_path, json.dumps(webhook), "webhook.json")
    with pytest.raises(ReaderError) as caught:
        read_all(path, "github-actions")
    assert str(caught.value) == (
        f"{path}: no GitHub Actions workflow runs found; record 1: a workflow_run webhook payload, not a runs API "
        "object; export with gh api --paginate repos/OWNER/REPO/actions/runs instead"
    )


def test_empty_pages_give_no_rows_and_empty_file_an_error(tmp_path: Path) -> None:
    frame, bad = read_all(write(tmp_path, '{"total_count": 0, "workflow_runs": []}'), "github-actions")
    assert (len(frame), bad) == (0, [])
    with pytest.raises(ReaderError, match=r"the file is empty"):
        read_all(write(tmp_path, "  \n"), "github-actions")


def test_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    text = json.dumps({"workflow_runs": [run(1)]}) + '\n{"workflow_runs": [}\n'
    with pytest.raises(ReaderError, match=r"invalid JSON at line 2, column 20"):
        read_all(write(tmp_path, text), "github-actions")


# --- github-deployments: documentation and guaranteed columns -------------------------------

def test_deployments_fields_are_documented() -> None:
    doc = " ".join((github_deployments.__doc__ or "").split())
    for name in github_deployments.BASE_FIELDS:
        assert f"| `{name}` |" in doc, name


def test_every_field_the_deployments_mapping_reads_is_always_a_column(tmp_path: Path) -> None:
    for text in ('{"id": 1, "sha": "a"}', '{"id": "DE_1", "createdAt": "2024-01-01T00:00:00Z"}'):
        (row,) = deployments(write(tmp_path, text))
        assert mapping_fields("github-deployments.yaml") <= set(row)
    assert mapping_fields("github-deployments.yaml") <= set(github_deployments.BASE_FIELDS)


# --- github-deployments: real exports -------------------------------------------------------

def test_rest_list_without_statuses() -> None:
    got = deployments(REAL / "github-pygithub-deployments-list.json")
    assert [pick(r, *DEPLOY_FIELDS) for r in got] == [
        ("263877258", "MDEwOkRlcGxveW1lbnQyNjIzNTE3NzY=", "743f5a58b0bce91c4eab744ff7e39dfca9e6e8a5", "test", "jacquev6",
         "2020-08-26T11:44:53Z", None, None, None, None, "0"),
        ("262350588", "MDEwOkRlcGxveW1lbnQyNjIzNTA1ODg=", "743f5a58b0bce91c4eab744ff7e39dfca9e6e8a5", "production",
         "jacquev6", "2020-08-26T11:40:41Z", None, None, None, None, "0"),
    ]
    assert pick(got[0], "task", "ref", "description", "transient_environment", "performed_via_github_app") == (
        "deploy", "743f5a58b0bce91c4eab744ff7e39dfca9e6e8a5", "Test deployment", "true", None,
    )


def test_rest_only_queued_statuses_have_no_state() -> None:
    (row,) = deployments(REAL / "github-pygithub-deployment-with-queued-statuses.json")
    assert pick(row, *DEPLOY_FIELDS) == (
        "263877258", "MDEwOkRlcGxveW1lbnQyNjIzNTE3NzY=", "743f5a58b0bce91c4eab744ff7e39dfca9e6e8a5", "test", "jacquev6",
        "2020-08-26T11:44:53Z", None, None, None, None, "3",
    )
    assert row["updated_at"] == "2020-08-26T14:32:51Z"  # the last status, never used as a finish time
    assert row["payload"] == '{"test": true}'


def test_rest_success_status() -> None:
    (row,) = deployments(REAL / "github-octokit-deployment-with-success-status.json")
    assert pick(row, *DEPLOY_FIELDS) == (
        "145988746", "MDEwOkRlcGxveW1lbnQxNDU5ODg3NDY=", "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "production",
        "Codertocat", "2019-05-15T15:20:53Z", "success", "2019-05-15T15:20:55Z", "false", None, "1",
    )
    assert row["payload"] == "{}" and row["ref"] == "master"  # an empty object stays `{}`, as for GitLab


def test_rest_inactive_after_success_keeps_the_success_time() -> None:
    (row,) = deployments(REAL / "github-derived-deployment-inactive-after-success.json")
    assert pick(row, "state_effective", "finished_at", "finished_at_estimated", "updated_at", "statuses_seen") == (
        "success", "2019-05-15T15:20:55Z", "false", "2019-05-16T09:02:11Z", "2",
    )


GRAPHQL = REAL / "github-devlake-graphql-deployments-pages.json"


def test_graphql_pages_appended() -> None:
    got = deployments(GRAPHQL)
    assert [pick(r, *DEPLOY_FIELDS) for r in got] == [
        ("3881429895", "DE_kwDOFAKDls7nWeuH", "0916a0afdfa825779c892a8951bde706a054d352", "github-pages", None,
         "2026-02-20T00:30:37Z", "success", "2026-02-20T00:30:59Z", "false", None, "4"),
        # INACTIVE on 2026-02-20 after SUCCESS on 2026-02-14: the success time, not the inactivation
        ("3839563910", "DE_kwDOFAKDls7k2xiG", "74962aec9820f7e3a6f1e60f54b4ce8c747e1e1f", "github-pages", None,
         "2026-02-14T00:32:15Z", "success", "2026-02-14T00:32:36Z", "false", None, "4"),
        # only latestStatus INACTIVE: success at the creation time, estimated
        ("1670973641", "DE_kwDOFAKDls5jmQjJ", "5f64bfed25d7ab4ae0840357ec56890f4da27def", "github-pages", None,
         "2024-07-24T00:18:51Z", "success", "2024-07-24T00:18:51Z", "true", None, "1"),
        ("1693412381", "DE_kwDOFAKDls5k72wd", "c510f30dba35481866f55dc6f4ea94bb3ff5a7ae", "github-pages", None,
         "2024-08-02T00:17:55Z", "success", "2024-08-02T00:17:55Z", "true", None, "1"),
        ("1696032217", "DE_kwDOFAKDls5lF2XZ", "3f8aa35aa5d792e9890c804ba629c065f8609c7a", "github-pages", None,
         "2024-08-03T00:17:32Z", "success", "2024-08-03T00:17:32Z", "true", None, "1"),
        ("1701084484", "DE_kwDOFAKDls5lZH1E", "7a4d4b248e85a148f0bec8bc7fd480ed3c396b35", "github-pages", None,
         "2024-08-06T00:18:05Z", "success", "2024-08-06T00:18:05Z", "true", None, "1"),
        # latestStatus SUCCESS with only updatedAt: that time
        ("1707033729", "DE_kwDOFAKDls5lv0SB", "c0cfe86acc9ee2c2d0e64a5f1276e1ac3cf1f5c6", "github-pages", None,
         "2024-08-08T00:17:56Z", "success", "2024-08-08T00:18:12Z", "false", None, "1"),
    ]
    first = got[0]
    assert pick(first, "ref", "state", "latestStatus.state", "updatedAt", "commit.committedDate", "createdAt") == (
        "gh-pages", "ACTIVE", "SUCCESS", "2026-02-20T00:30:59Z", "2026-02-20T00:29:49Z", "2026-02-20T00:30:37Z",
    )
    assert first["commit.message"].endswith("\U0001F680")


# --- github-deployments: shapes and the effective state, made-up data -----------------------

def gql_node(number: int, states: list[tuple[str, str]], **extra: object) -> dict:
    return {"id": f"DE_{number}", "databaseId": number, "commitOid": f"{number:040x}", "environment": "production",
            "createdAt": "2024-02-01T09:00:00Z", "creator": {"login": "anna"},
            "statuses": {"nodes": [{"state": s, "createdAt": t, "logUrl": f"https://ci/{number}"} for s, t in states]},
            **extra}


def gql_page(*nodes: dict) -> dict:
    return {"data": {"repository": {"deployments": {"nodes": list(nodes), "pageInfo": {"hasNextPage": False}}}}}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(gql_page(gql_node(1, []), gql_node(2, []))) + "\n" + json.dumps(gql_page(gql_node(3, []))),
        json.dumps([gql_page(gql_node(1, []), gql_node(2, [])), gql_page(gql_node(3, []))]),
        json.dumps({"data": {"repository": {"deployments": {"edges": [{"node": gql_node(n, [])} for n in (1, 2, 3)]}}}}),
        "\n".join(json.dumps(gql_node(n, [])) for n in (1, 2, 3)),
        json.dumps([{"id": n, "sha": "s", "environment": "e"} for n in (1, 2)]) + json.dumps({"id": 3, "sha": "s", "task": "deploy"}),
    ],
    ids=["graphql-pages", "graphql-slurped", "graphql-edges", "graphql-bare-nodes", "rest-pages"],
)
def test_deployment_shapes(tmp_path: Path, text: str) -> None:
    assert [r["id"] for r in deployments(write(tmp_path, text))] == ["1", "2", "3"]


def test_graphql_id_falls_back_to_the_node_id(tmp_path: Path) -> None:
    node = {k: v for k, v in gql_node(4, []).items() if k != "databaseId"}
    (row,) = deployments(write(tmp_path, json.dumps(gql_page(node))))
    assert pick(row, "id", "node_id", "sha", "creator.login") == ("DE_4", "DE_4", f"{4:040x}", "anna")


S = [("success", "2024-02-01T09:05:00Z", "s"), ("inactive", "2024-02-03T00:00:00Z", None)]


@pytest.mark.parametrize(
    "statuses, expected",
    [
        ([], (None, None, None, None)),
        ([("queued", "t1", None), ("pending", "t2", None), ("in_progress", "t3", None), ("waiting", "t4", None)],
         (None, None, None, None)),
        (S, ("success", "2024-02-01T09:05:00Z", "false", "s")),
        (S[::-1], ("success", "2024-02-01T09:05:00Z", "false", "s")),
        ([("inactive", "2024-02-03T00:00:00Z", "l")], ("success", "CREATED", "true", "l")),
        ([("inactive", "2024-02-03T00:00:00Z", None), ("failure", "2024-02-01T09:05:00Z", None)],
         ("failure", "2024-02-01T09:05:00Z", "false", None)),
        # the latest terminal state by instant: 10:00+02:00 is 08:00Z, before 09:00Z
        ([("error", "2024-02-01T10:00:00+02:00", None), ("success", "2024-02-01T09:00:00Z", None)],
         ("success", "2024-02-01T09:00:00Z", "false", None)),
        ([("failure", "2024-02-01T09:00:00Z", None), ("success", "2024-02-01T09:30:00Z", None)],
         ("success", "2024-02-01T09:30:00Z", "false", None)),
        # no readable times: the first listed (the APIs list the newest first)
        ([("failure", None, None), ("success", None, None)], ("failure", None, "false", None)),
    ],
)
def test_effective_state(statuses: list, expected: tuple) -> None:
    assert effective_state(statuses, "CREATED") == expected


def test_graphql_states_are_lower_cased_and_latest_status_counts(tmp_path: Path) -> None:
    export = gql_page(
        gql_node(1, [("SUCCESS", "2024-02-01T09:04:00Z"), ("FAILURE", "2024-02-01T09:06:00Z")]),
        gql_node(2, [], latestStatus={"state": "ERROR", "createdAt": "2024-02-01T09:07:00Z", "logUrl": None}),
        gql_node(3, [], latestStatus={"state": "INACTIVE", "updatedAt": "2024-02-09T00:00:00Z"}),
        gql_node(4, [], latestStatus=None, statuses=None),
        gql_node(5, [("IN_PROGRESS", "2024-02-01T09:01:00Z")], latestStatus={"state": "IN_PROGRESS"}),
    )
    got = deployments(write(tmp_path, json.dumps(export)))
    assert [pick(r, "state_effective", "finished_at", "finished_at_estimated", "log_url") for r in got] == [
        ("failure", "2024-02-01T09:06:00Z", "false", "https://ci/1"),
        ("error", "2024-02-01T09:07:00Z", "false", None),
        ("success", "2024-02-01T09:00:00Z", "true", None),
        (None, None, None, None),
        (None, None, None, None),
    ]


def test_rest_log_url_then_target_url(tmp_path: Path) -> None:
    def status(**extra: object) -> dict:
        return {"state": "success", "created_at": "2024-01-01T00:00:00Z", **extra}

    export = [
        {"id": 1, "sha": "a", "statuses": [status(log_url="https://log/1", target_url="https://target/1")]},
        {"id": 2, "sha": "a", "statuses": [status(log_url="", target_url="https://target/2")]},
        {"id": 3, "sha": "a", "statuses": [status()]},
    ]
    assert [r["log_url"] for r in deployments(write(tmp_path, json.dumps(export)))] == [
        "https://log/1", "https://target/2", None,
    ]


def test_not_deployments_are_bad_rows(tmp_path: Path) -> None:
    webhook = json.loads((REAL / "github-octokit-deployment-with-success-status.json").read_text())[0]
    payload = {"action": "created", "deployment_status": webhook["statuses"][0], "deployment": webhook}
    error = {"data": None, "errors": [{"type": "NOT_FOUND", "message": "Could not resolve to a Repository"}]}
    export = [{"id": 1, "sha": "a"}, payload, error, {"data": {"viewer": {}}}, None, {"x": 1}]
    frame, bad = read_all(write(tmp_path, json.dumps(export)), "github-deployments")
    assert list(frame["_row"]) == [1]
    assert [(b.row, b.reason.split(";")[0]) for b in bad] == [
        (2, "a deployment webhook payload, not a deployments API object"),
        (3, "a GraphQL error response: Could not resolve to a Repository"),
        (4, "a GraphQL response without data.repository.deployments"),
        (5, "null, not a deployment"),
        (6, "not a GitHub deployment (keys: x)"),
    ]
    path = write(tmp_path, json.dumps(error), "error.json")
    with pytest.raises(ReaderError, match=r"no GitHub deployments found; record 1: a GraphQL error response"):
        read_all(path, "github-deployments")


# --- no traceback on any input ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["github-actions", "github-deployments"])
@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000,
     json.dumps([{"id": 1, "head_sha": "a", "sha": "a"}]) + "[" * 990 + json.dumps({"id": 2, "sha": "b"}) + "]" * 990,
     json.dumps({"id": 1, "sha": "a", "head_sha": "a", "x": json.loads("[" * 900 + "]" * 900)})],
    ids=["deep-array", "deep-list-of-records", "deep-field"],
)
def test_deep_nesting_is_one_clear_error_or_rows(tmp_path: Path, fmt: str, text: str) -> None:
    path = write(tmp_path, text)
    try:
        frame, bad = read_all(path, fmt)
    except ReaderError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: ") and "nested too deeply" in message
        return
    assert len(frame) == 1
    assert [b.reason.split(",")[0] for b in bad] == ["a value nested too deeply (more than about 900 levels of arrays or objects)"]

_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(
    ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00+02:00", "completed", "SUCCESS", "inactive", "x"])
_keys = st.sampled_from(["id", "run_attempt", "status", "conclusion", "updated_at", "jobs", "completed_at",
                         "workflow_runs", "statuses", "state", "created_at", "createdAt", "nodes", "data",
                         "repository", "deployments", "latestStatus", "databaseId", "commitOid", "sha", "path"])
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=6),
                     max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_json, fmt=st.sampled_from(["github-actions", "github-deployments"]))
def test_any_json_gives_rows_or_one_clear_error(tmp_path: Path, value: object, fmt: str) -> None:
    path = write(tmp_path, json.dumps(value))
    try:
        frame, bad = read_all(path, fmt)
    except ReaderError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path))
        return
    numbers = sorted([*frame["_row"], *(b.row for b in bad)])
    assert numbers == list(range(1, len(numbers) + 1))  # every record counted once, as a row or a bad row


def test_a_pipe_is_read_once_and_still_ranked(tmp_path: Path) -> None:
    """`backfill preview <(gh api ...)`: a FIFO cannot be read twice; its rows are held, then marked."""
    import os
    import threading

    from backfill.readers import reader_for

    text = RERUN.read_text()
    first_end = json.JSONDecoder().raw_decode(text)[1]
    older, newer = write(tmp_path, text[:first_end], "older.json"), tmp_path / "newer.fifo"
    os.mkfifo(newer)
    writer = threading.Thread(target=lambda: newer.write_text(text[first_end:]))
    writer.start()
    try:
        source = SourceConfig(format="github-actions")
        reader = reader_for("github-actions", [older, newer], source)
        got = [pd.concat([c.frame for c in reader(path, source)]) for path in (older, newer)]
    finally:
        writer.join(timeout=10)
    assert [pick(r, "id", "run_attempt", "latest_attempt") for frame in got for r in frame.to_dict("records")] == [
        ("26365060973", "1", "false"), ("4205440316", "1", "true"),
        ("26365060973", "2", "true"), ("4205440316", "1", "false"),
    ]


_run_keys = st.sampled_from(["run_started_at", "created_at", "path", "status", "updated_at", "jobs", "completed_at",
                             "head_commit", "timestamp", "actor", "login", "finished_at", "latest_attempt", "name"])
_run_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_run_keys, inner, max_size=4),
                           max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(_run_keys, _run_values, max_size=8))
def test_the_reader_builds_run_row_straight_into_its_columns(tmp_path: Path, fields: dict) -> None:
    """The reader flattens each run into its columns (Rows.add_object); the row is the flattened
    run with the derived fields read off the flattened row, columns in the same order, whatever
    the fields hold (objects, lists, empty objects, nulls)."""
    from backfill.readers import flatten
    from backfill.readers.jsonstream import iter_json_values

    path = write(tmp_path, json.dumps({"id": 7, "run_number": 1, **fields}))
    frame, bad = read_all(path, "github-actions")
    assert bad == []
    (run,) = iter_json_values(path.read_text(), path)
    expected = flatten(run, out=dict.fromkeys(github_actions.BASE_FIELDS))
    expected.update(finished_at=finished_at(run), started_at=expected.get("run_started_at") or expected.get("created_at"),
                    workflow_file=workflow_file(expected.get("path")), latest_attempt="true")
    assert github_actions.run_row(run, latest=True) == expected
    row = frame.drop(columns="_row").to_dict("records")[0]
    assert list(row) == list(expected)
    assert row == expected


@pytest.mark.parametrize("name", sorted(p.name for p in REAL.glob("github-*workflow-run*.json")) + ["../../../samples/github-runs.json"])
def test_real_runs_read_as_run_row_gives_them(name: str) -> None:
    from backfill.readers.jsonstream import iter_json_values

    path = REAL / name
    frame, _ = read_all(path, "github-actions")
    got = frame.drop(columns="_row").to_dict("records")
    runs = []
    for value in iter_json_values(path.read_text(encoding="utf-8"), path):
        for item in value if isinstance(value, list) else [value]:
            runs.extend(item["workflow_runs"] if "workflow_runs" in item else [item])
    expected = [github_actions.run_row(run, latest=row["latest_attempt"] == "true") for run, row in zip(runs, got)]
    assert len(got) == len(runs)
    for row, want in zip(got, expected):
        assert {k: row.get(k) for k in want} == want and all(row[k] is None for k in row if k not in want)

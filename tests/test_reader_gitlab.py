"""The gitlab reader, on the real exports in tests/fixtures/real-exports and on small made-up cases."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from backfill.errors import ReaderError
from backfill.readers import BadRow, SourceConfig
from backfill.readers import gitlab
from backfill.readers.gitlab import BASE_FIELDS, read
from backfill.readers.jsonstream import iter_json_values

HERE = Path(__file__).parent
REAL = HERE / "fixtures" / "real-exports"
SAMPLE = HERE.parent / "samples" / "gitlab-deployments.json"

MAPPED = (  # the fields mappings/gitlab.yaml reads
    "id", "status_effective", "environment.name", "deployable.finished_at", "finished_at", "updated_at", "created_at",
    "deployable.started_at", "deployable.id", "deployable.web_url", "deployable.pipeline.web_url", "sha",
    "user.username",
)


def read_all(path: Path) -> tuple[pd.DataFrame, list[BadRow]]:
    chunks = list(read(path, SourceConfig(format="gitlab")))
    assert all(chunk.unit == "record" for chunk in chunks)
    frame = pd.concat([chunk.frame for chunk in chunks], ignore_index=True).astype(object)
    frame = frame.where(frame.notna(), None)  # readers give arrow text, missing as NaN: compared as None here
    return frame, [bad for chunk in chunks for bad in chunk.bad]


def rows(path: Path) -> list[dict]:
    frame, bad = read_all(path)
    assert bad == []
    assert list(frame["_row"]) == list(range(1, len(frame) + 1))
    for column in frame.columns:
        assert all(v is None or isinstance(v, str) for v in frame[column] if column != "_row"), column
    return frame.to_dict("records")


def pick(row: dict, *names: str) -> tuple:
    return tuple(row.get(name) for name in names)


def write(tmp_path: Path, text: str, name: str = "deployments.json") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def deployment(number: int, **extra: object) -> dict:
    return {"id": number, "iid": number, "sha": f"{number:040x}", "status": "success",
            "environment": {"id": 1, "name": "production"}, "deployable": None, **extra}


def test_derived_and_guaranteed_fields_are_documented() -> None:
    doc = " ".join((gitlab.__doc__ or "").split())
    assert "| `status_effective` |" in doc
    for name in BASE_FIELDS:
        assert f"`{name}`" in doc, name


def test_every_field_the_shipped_mapping_reads_is_always_a_column(tmp_path: Path) -> None:
    """Even a bare deployment (old GitLab, deployable null) has every column mappings/gitlab.yaml reads."""
    (row,) = rows(write(tmp_path, json.dumps({"id": 1, "sha": "abc", "deployable": None})))
    assert set(MAPPED) <= set(row)
    assert set(MAPPED) <= set(BASE_FIELDS)


# --- real exports ---------------------------------------------------------------------------

def test_docs_list_top_level_status_wins_over_the_job_status() -> None:
    got = rows(REAL / "gitlab-gitlabdocs-deployments-list.json")
    assert [pick(r, *MAPPED) for r in got] == [
        ("41", "created", "production", "2016-08-11T07:36:39.851Z", None, "2016-08-11T07:38:12.414Z",
         "2016-08-11T07:36:40.222Z", None, "657", None, "http://gitlab.dev/root/project/pipelines/12",
         "99d03678b90d914dbb1b109132516d71a4a03ea8", "root"),
        ("42", "created", "production", "2016-08-11T11:32:35.145Z", None, "2016-08-11T11:34:01.123Z",
         "2016-08-11T11:32:35.444Z", None, "664", None, "http://gitlab.dev/root/project/pipelines/13",
         "a91957a858320c0e17f3a0eca7cfacbff50ea29a", "root"),
    ]
    assert [pick(r, "status", "deployable.status") for r in got] == [("created", "success")] * 2
    # values as written: the +02:00 offset stays, null stays empty, booleans are text
    assert pick(got[0], "deployable.commit.created_at", "deployable.coverage", "deployable.tag") == (
        "2016-08-11T09:36:01.000+02:00", None, "false",
    )
    assert got[0]["deployable.project.ci_job_token_scope_enabled"] == "false"
    assert got[0]["finished_at"] is None  # no top-level finished_at in this GitLab version


def test_docs_single_deployment() -> None:
    (row,) = rows(REAL / "gitlab-gitlabdocs-deployment-single.json")
    assert pick(row, *MAPPED) == (
        "42", "success", "production", "2016-08-11T11:32:35.145Z", None, "2016-08-11T11:34:01.123Z",
        "2016-08-11T11:32:35.444Z", None, "664", None, "http://gitlab.dev/root/project/pipelines/5",
        "a91957a858320c0e17f3a0eca7cfacbff50ea29a", "root",
    )
    assert pick(row, "deployable.commit.created_at", "deployable.runner", "environment.external_url") == (
        "2016-08-11T13:28:26.000+02:00", None, "https://about.gitlab.com",
    )


def test_client_library_deployment_without_top_level_status() -> None:
    (row,) = rows(REAL / "gitlab-gitlab4j-deployment-single.json")
    assert row["status"] is None  # older GitLab: no top-level status ...
    assert pick(row, "status_effective", "deployable.status") == ("success", "success")  # ... the job's is used
    assert pick(row, "id", "ref", "environment.name", "deployable.finished_at", "deployable.commit.created_at") == (
        "42", "master", "production", "2016-08-11T11:32:35.145Z", "2016-08-11T13:28:26Z",
    )
    assert pick(row, "deployable.pipeline.web_url", "deployable.started_at", "deployable.web_url") == (None, None, None)


@pytest.mark.parametrize(
    "name, coverage, tier, commit_date",
    [
        ("gitlab-gitlabdocs-environment-with-last-deployment.json", None, "development", "2016-01-02T15:39:18.000Z"),
        ("gitlab-gitlab4j-environment-with-last-deployment.json", "87.65", "testing", "2016-01-02T15:39:18Z"),
    ],
)
def test_environment_with_last_deployment(name: str, coverage: str | None, tier: str, commit_date: str) -> None:
    (row,) = rows(REAL / name)
    assert pick(row, "id", "iid", "status_effective", "sha", "user.username", "created_at") == (
        "100", "34", "success", "416d8ea11849050d3d1f5104cf8cf51053e790ab", "root", "2019-03-25T18:55:13.252Z",
    )
    # the deployment has no `environment`: it comes from the environment object around it
    assert pick(row, "environment.name", "environment.id", "environment.tier", "environment.slug") == (
        "review/fix-foo", "1", tier, "review-fix-foo-dfjre3",
    )
    assert row["updated_at"] is None  # last_deployment has none
    # started_at before created_at, as published; duration in float seconds, kept as written
    assert pick(row, "deployable.started_at", "deployable.finished_at", "deployable.duration") == (
        "2019-03-25T12:54:50.082Z", "2019-03-25T18:55:13.216Z", "21623.13423",
    )
    assert pick(row, "deployable.id", "deployable.web_url", "deployable.pipeline.web_url") == (
        "710", "http://localhost:3000/Commit451/lab-coat/-/jobs/710", "http://localhost:3000/Commit451/lab-coat/pipelines/34",
    )
    assert row["deployable.coverage"] == coverage
    assert row["deployable.commit.created_at"] == commit_date
    assert "cluster_agent.name" not in row and "last_deployment.id" not in row  # environment fields stay out


def test_devlake_real_gitlab_com_deployments() -> None:
    got = rows(REAL / "gitlab-devlake-deployments-data-column.json")
    fields = ("id", "status", "deployable.status", "status_effective", "environment.name",
              "deployable.started_at", "deployable.finished_at", "updated_at", "user.username")
    assert [pick(r, *fields) for r in got] == [
        ("13426753", "success", "failed", "success", "staging", "2019-03-13T14:17:33.559Z", "2019-03-13T14:17:47.640Z", "2019-03-13T14:17:47.647Z", "hackwaly"),
        ("13432654", "completed", "failed", "completed", "staging", "2019-03-13T14:57:46.441Z", "2019-03-13T14:57:58.845Z", "2019-03-13T14:57:58.866Z", "hackwaly"),
        ("13432768", "failed", "skipped", "failed", "staging", None, None, "2019-03-13T15:02:23.332Z", "rankinzheng"),
        ("13436532", "canceled", "failed", "canceled", "production", "2019-03-13T15:21:07.335Z", "2019-03-13T15:21:27.825Z", "2019-03-13T15:21:27.833Z", "hackwaly"),
        ("13436763", "created", "failed", "created", "production", "2019-03-13T15:23:40.064Z", "2019-03-13T15:23:55.970Z", "2019-03-13T15:23:55.981Z", "hackwaly"),
        ("13436778", "running", "canceled", "running", "staging", None, "2019-03-13T15:25:41.412Z", "2019-03-13T15:25:41.435Z", "hackwaly"),
        ("13436986", "blocked", "failed", "blocked", "production", "2019-03-13T15:26:19.170Z", "2019-03-13T15:26:37.468Z", "2019-03-13T15:26:37.476Z", "hackwaly"),
        # the last one lacks the updated_at key entirely
        ("13436915", "undeployed", "canceled", "undeployed", "staging", None, "2019-03-13T15:28:32.934Z", None, "hackwaly"),
    ]
    first = got[0]
    assert pick(first, "sha", "deployable.id", "deployable.duration", "deployable.queued_duration") == (
        "add237f6852e6108ee8e0246780a54ce909c6087", "176919795", "14.080506", "27.128011",
    )
    assert pick(first, "deployable.commit.created_at", "deployable.commit.trailers", "user.locked") == (
        "2019-03-13T14:14:23.000+00:00", "{}", "false",
    )
    assert first["deployable.pipeline.web_url"] == "https://gitlab.com/merico-dev/ee/vdev.co/-/pipelines/51653436"
    assert first["deployable.commit.parent_ids"] == (
        '["3ad303fb1202c3908ca7345d115caf1ddce5e787","3d70bb99d0f49d2c61e699119466f2d8bad599c9"]'
    )
    assert pick(got[2], "deployable.failure_reason", "deployable.duration") == (None, None)
    assert {r["deployable.commit.created_at"][-6:] for r in got} == {"+00:00", "+08:00"}


def test_webhook_payload_is_rejected_with_a_hint() -> None:
    path = REAL / "gitlab-gitlab4j-deployment-webhook-event.json"
    with pytest.raises(ReaderError) as caught:
        read_all(path)
    assert str(caught.value) == (
        f"{path}: no GitLab deployments found; record 1: a deployment webhook payload, not a deployments "
        "API object; export with GET /projects/:id/deployments instead"
    )


def test_jsonish_fragment_is_rejected_with_line_and_column() -> None:
    path = REAL / "gitlab-gitlabdocs-deployment-approvals-fragment.jsonish"
    with pytest.raises(ReaderError) as caught:
        read_all(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: invalid JSON at line 19, column 3: ")  # the literal `...` line
    assert caught.value.__suppress_context__


# --- shapes, made-up data ---------------------------------------------------------------------

PAGE_A = json.dumps([deployment(1), deployment(2)], indent=2)
PAGE_B = json.dumps([deployment(3)])


@pytest.mark.parametrize(
    "text",
    [
        PAGE_A + "\n" + PAGE_B,
        PAGE_A + PAGE_B,
        "  " + PAGE_A + "\n\n\r\n\t" + PAGE_B + "\n\n",
        "[" + PAGE_A + "," + PAGE_B + "]",
    ],
    ids=["newline", "nothing-between", "blank-lines-crlf", "pages-in-an-array"],
)
def test_pages_appended(tmp_path: Path, text: str) -> None:
    got = rows(write(tmp_path, text))
    assert [r["id"] for r in got] == ["1", "2", "3"]


def test_ndjson_and_single_objects(tmp_path: Path) -> None:
    lines = [json.dumps(deployment(n)) for n in (7, 8)] + [json.dumps([deployment(9)])]
    got = rows(write(tmp_path, "\n".join(lines) + "\n", "deployments.ndjson"))
    assert [r["id"] for r in got] == ["7", "8", "9"]
    assert got[0]["deployable"] is None  # deployable: null is a column with no value


def test_syntax_error_in_a_later_page_names_its_line(tmp_path: Path) -> None:
    text = json.dumps([deployment(1)], indent=2) + "\n" + '[{"id": 2, "sha": "x",}]\n'
    lines_before = text.count("\n", 0, text.index('[{"id": 2'))
    with pytest.raises(ReaderError, match=rf"invalid JSON at line {lines_before + 1}, column 23"):
        read_all(write(tmp_path, text))


def test_numbers_are_kept_as_written(tmp_path: Path) -> None:
    (row,) = rows(write(tmp_path, '{"id": 12, "sha": "s", "deployable": {"id": 1.50, "duration": 1e3}}'))
    assert pick(row, "id", "deployable.id", "deployable.duration") == ("12", "1.50", "1e3")


def test_status_effective(tmp_path: Path) -> None:
    export = [
        deployment(1, status="failed", deployable={"status": "success"}),
        deployment(2, status=None, deployable={"status": "canceled"}),
        {k: v for k, v in deployment(3, deployable={"status": "running"}).items() if k != "status"},
        deployment(4, status="", deployable=None),
        {k: v for k, v in deployment(5).items() if k != "status"},
    ]
    got = rows(write(tmp_path, json.dumps(export)))
    assert [r["status_effective"] for r in got] == ["failed", "canceled", "running", None, None]


def test_environments(tmp_path: Path) -> None:
    export = [
        {"id": 5, "name": "staging", "slug": "staging", "last_deployment": None},  # never deployed: no row
        {"id": 6, "name": "production", "tier": "production",
         "last_deployment": {"id": 60, "sha": "a", "environment": {"id": 6, "name": "prod-eu"}}},
        {"id": 7, "name": "qa", "last_deployment": {"id": 70, "sha": "b"}},
    ]
    got = rows(write(tmp_path, json.dumps(export)))
    assert [pick(r, "id", "environment.name", "environment.id", "environment.tier") for r in got] == [
        ("60", "prod-eu", "6", "production"),  # the deployment's own name wins; tier filled in
        ("70", "qa", "7", None),
    ]


def test_unrecognised_objects_are_bad_rows(tmp_path: Path) -> None:
    webhook = {"object_kind": "deployment", "status": "success", "deployment_id": 3}
    export = [deployment(1), webhook, 42, {"name": "x"}, deployment(2)]
    frame, bad = read_all(write(tmp_path, json.dumps(export)))
    assert list(frame["id"]) == ["1", "2"]
    assert list(frame["_row"]) == [1, 5]
    assert [(b.row, b.reason.split(";")[0]) for b in bad] == [
        (2, "a deployment webhook payload, not a deployments API object"),
        (3, "a number, not a deployment object"),  # JSON's words, not Python's (issue 8)
        (4, "not a GitLab deployment (keys: name)"),
    ]


def test_empty_array_gives_no_rows_and_empty_file_an_error(tmp_path: Path) -> None:
    frame, bad = read_all(write(tmp_path, "[]\n[]"))
    assert (len(frame), bad) == (0, [])
    with pytest.raises(ReaderError, match=r"the file is empty"):
        read_all(write(tmp_path, ""))


def test_iter_json_values_keeps_numbers_as_text() -> None:
    assert list(iter_json_values('1 2.50 [3] {"a": NaN}', "x.json")) == ["1", "2.50", ["3"], {"a": "NaN"}]


# --- the shipped sample ----------------------------------------------------------------------

def test_sample_parses() -> None:
    got = rows(SAMPLE)
    assert len(got) == 10
    assert [r["status_effective"] for r in got] == [
        "running", "success", "success", "failed", "canceled", "success", "success", "success", "failed", "success",
    ]
    assert {r["environment.name"] for r in got} == {"production", "staging"}
    no_job = next(r for r in got if r["deployable.id"] is None)
    assert pick(no_job, "id", "status_effective", "updated_at") == ("9012", "success", "2024-04-03T16:23:30.511Z")
    older = next(r for r in got if r.get("status") is None)
    assert pick(older, "id", "status_effective", "updated_at") == ("8990", "success", None)
    assert all(r["sha"] and r["user.username"] for r in got)


def test_lone_surrogate_escape_is_a_one_line_error(tmp_path: Path) -> None:
    # json parses "x\udc00" into a str that cannot be encoded as UTF-8: it could never be sent
    page = json.dumps([deployment(1, user={"username": "anna"})], indent=2)
    text = page + "\n" + '[{"id": 2, "sha": "s", "user": {"username": "x\\udc00"}}]\n'
    line = text.count("\n", 0, text.index('[{"id": 2')) + 1
    column = len('[{"id": 2, "sha": "s", "user": {"username": "x') + 1  # where the backslash is
    path = write(tmp_path, text)
    with pytest.raises(ReaderError) as caught:
        read_all(path)
    assert str(caught.value) == (
        f"{path}: line {line}, column {column}: a lone UTF-16 surrogate escape \\udc00 (half of a character) cannot be "
        "sent as UTF-8; remove it or replace it with the intended character, then read the file again"
    )


def test_surrogate_pairs_and_escaped_backslashes_are_fine(tmp_path: Path) -> None:
    text = '[{"id": 1, "sha": "s", "user": {"username": "\\ud83d\\ude80 \\\\udc00"}}]'
    (row,) = rows(write(tmp_path, text))
    assert row["user.username"] == "\U0001F680 \\udc00"


def test_lone_surrogate_through_the_cli_is_bad_input(tmp_path: Path, run_cli) -> None:
    text = ('[{"id": 1, "iid": 1, "sha": "s", "status": "success", "created_at": '
            '"2023-01-01T00:00:00Z", "user": {"username": "x\\udc00"}}]')
    path = write(tmp_path, text)
    mapping = HERE.parent / "mappings" / "gitlab.yaml"
    code, _, err = run_cli("preview", path, "-m", mapping, "--entity-id", "payments")
    column = text.index("\\udc00") + 1
    assert code == 3  # bad input, not an internal error
    assert f"{path}: line 1, column {column}: a lone UTF-16 surrogate escape \\udc00" in err

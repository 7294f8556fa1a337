"""The shipped GitHub mappings (mappings/github-actions.yaml, mappings/github-deployments.yaml) on the real
exports and the samples: the events that come out, field by field, and where every other row went.

Every expected value was worked out from the fixture JSON by hand (offsets converted to UTC), never
copied from the tool's output. Reader-level details are in test_reader_github.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from backfill.mapping import Mapping, load_mapping
from backfill.plan import Plan, build_plan
from backfill.summary import plan_summary

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "fixtures" / "real-exports"
ACTIONS_YAML = ROOT / "mappings" / "github-actions.yaml"
DEPLOYMENTS_YAML = ROOT / "mappings" / "github-deployments.yaml"
RUNS_SAMPLE = ROOT / "samples" / "github-runs.json"
DEPLOYMENTS_SAMPLE = ROOT / "samples" / "github-deployments.json"
ENTITY = "shop"


def actions(**sets: str) -> Mapping:
    """mappings/github-actions.yaml as `--entity-id shop --set env=production` makes it."""
    return load_mapping(ACTIONS_YAML).with_overrides(ENTITY, {"env": "production", **sets})


def deploys() -> Mapping:
    return load_mapping(DEPLOYMENTS_YAML).with_overrides(ENTITY, {})


def events_of(plan: Plan) -> list[dict]:
    return [event for body in plan.request_bodies() for event in json.loads(body)["events"]]


def event(ts: str, status: str, *, env: str = "production", start: str | None = None, build_id: str | None = None,
          url: str | None = None, sha: str | None = None, initiator: str | None = None,
          description: str | None = None) -> dict:
    attributes = {
        "env": env, "status": status, "build_id": build_id, "build_commit_sha": sha, "build_url": url,
        "description": description, "initiator": initiator, "deployment_start_time": start,
    }
    return {"type": "event-deploy", "timestamp": ts, "entityId": ENTITY,
            "attributes": {k: v for k, v in attributes.items() if v is not None}}


def label(mapping: Mapping, field: str, nth: int = 0) -> str:
    """The label of the nth filter rule of the mapping on `field`."""
    return [rule.label for rule in mapping.filters if rule.field == field][nth]


def check(plan: Plan, rows: int, expected: list[dict], filtered: Counter, duplicates: int = 0) -> None:
    report = plan.report
    assert report.rows_read == rows
    assert dict(report.filtered) == dict(filtered)
    assert [str(row) for row in report.invalid] == []
    assert (report.duplicates, report.outside_range) == (duplicates, 0)
    assert report.planned == len(plan.events) == len(expected)
    assert report.accounted == report.rows_read
    assert events_of(plan) == expected  # oldest first


# --- github-actions on the real exports --------------------------------------------------------

RUN_URL = "https://github.com/PyGithub/PyGithub/actions/runs/"


def test_2020_runs_become_events_without_start_actor_or_title() -> None:
    plan = build_plan([REAL / "github-pygithub-workflow-runs-2020.json"], actions())
    check(plan, 4, [
        event("2020-05-19T02:30:56Z", "success", start="2020-05-19T02:28:36Z", build_id="108817672",
              url=RUN_URL + "108817672", sha="e79b9013fe71ac9e54a3576d99ad95898ee52cff"),
        event("2020-05-19T05:54:02Z", "failed", start="2020-05-19T05:51:36Z", build_id="108934155",
              url=RUN_URL + "108934155", sha="30e710081e25ab76562d1ad28540d47e5cf483ed"),
        event("2020-05-19T10:41:34Z", "success", start="2020-05-19T10:39:04Z", build_id="109168419",
              url=RUN_URL + "109168419", sha="b1dd24bf8dc94cf76b6b5084ab3ad26f839e77cf"),
        event("2020-05-20T02:40:25Z", "success", start="2020-05-20T02:37:57Z", build_id="109950033",
              url=RUN_URL + "109950033", sha="61b610926a023d80486ce1115e7331a4c714cfcb"),
    ], Counter())


RUN_2023 = dict(start="2023-01-10T08:24:19Z", build_id="3881497935", url=RUN_URL + "3881497935",
                sha="c6e5cac67a58a4eb11f1f28567a77a6e2cc8ee98", initiator="nuang-ee", description="TEST PR")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("github-pygithub-workflow-run-2023.json", [event("2023-01-10T08:28:20Z", "success", **RUN_2023)]),
        ("github-pygithub-workflow-run-2023-with-jobs.json", [event("2023-01-10T08:28:18Z", "success", **RUN_2023)]),
        # 03:28:18-05:00 -> 08:28:18Z; started 03:24:19-05:00 -> 08:24:19Z
        ("github-derived-workflow-run-offsets.json", [event("2023-01-10T08:28:18Z", "success", **RUN_2023)]),
        ("github-pygithub-workflow-runs-created-2022.json", [
            event("2024-01-29T23:29:45Z", "success", start="2022-12-24T07:29:12Z", build_id="3770390952",
                  url="https://github.com/PyGithub/PyGithub/actions/runs/3770390952",
                  sha="84e26cfaa0eede8179f34272f03afa28d76a07a7", initiator="cclauss",
                  description="CI: Update action actions/setup-python"),
        ]),
    ],
)
def test_single_runs(name: str, expected: list[dict]) -> None:
    check(build_plan([REAL / name], actions()), 1, expected, Counter())


ATTEMPT_2 = event("2026-05-29T15:43:47Z", "success", start="2026-05-29T15:42:05Z", build_id="26365060973",
                  url="https://github.com/EnricoMi/PyGithub/actions/runs/26365060973",
                  sha="3a17ecf4a5a4dc873f2632470a712497b38eea88", initiator="EnricoMi", description="CodeQL Advanced")
OTHER_RUN = event("2023-02-17T16:06:11Z", "success", start="2023-02-17T16:03:37Z", build_id="4205440316",
                  url=RUN_URL + "4205440316", sha="06ec040b2eeef6c0316dd5abcda0608525a3f205", initiator="PyGithub",
                  description="Fix lint")


def test_rerun_across_overlapping_pages_is_one_event_from_the_last_attempt() -> None:
    mapping = actions()
    plan = build_plan([REAL / "github-derived-rerun-overlapping-pages.json"], mapping)
    # attempt 1 of 26365060973 and the second copy of 4205440316 are skipped by the re-run rule
    check(plan, 4, [OTHER_RUN, ATTEMPT_2], Counter({label(mapping, "latest_attempt"): 2}))


def test_rerun_pages_reversed_give_the_same_events(tmp_path: Path) -> None:
    text = (REAL / "github-derived-rerun-overlapping-pages.json").read_text()
    first_end = json.JSONDecoder().raw_decode(text)[1]
    reversed_text = text[first_end:].strip() + "\n" + text[:first_end]
    path = tmp_path / "reversed.json"
    path.write_text(reversed_text)
    mapping = actions()
    check(build_plan([path], mapping), 4, [OTHER_RUN, ATTEMPT_2], Counter({label(mapping, "latest_attempt"): 2}))


def test_overlap_across_two_files_is_one_event(tmp_path: Path) -> None:
    mapping = actions()
    same = REAL / "github-pygithub-workflow-run-2023.json"
    copy = tmp_path / same.name  # a copy: the same file given twice is refused (issue 8)
    copy.write_bytes(same.read_bytes())
    plan = build_plan([same, copy], mapping)
    check(plan, 2, [event("2023-01-10T08:28:20Z", "success", **RUN_2023)], Counter({label(mapping, "latest_attempt"): 1}))


def _pages(path: Path) -> list[str]:
    text, decoder, position, out = path.read_text(), json.JSONDecoder(), 0, []
    while text[position:].strip():
        start = len(text) - len(text[position:].lstrip())
        _, position = decoder.raw_decode(text, start)
        out.append(text[start:position])
    return out


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["older-file-first", "newer-file-first"])
def test_rerun_attempts_in_different_files_give_the_last_attempt(tmp_path: Path, order: tuple[int, int]) -> None:
    pages = _pages(REAL / "github-derived-rerun-overlapping-pages.json")
    paths = []
    for i in order:
        paths.append(tmp_path / f"page-{i}.json")
        paths[-1].write_text(pages[i])
    mapping = actions()
    check(build_plan(paths, mapping), 4, [OTHER_RUN, ATTEMPT_2], Counter({label(mapping, "latest_attempt"): 2}))


def test_a_running_last_attempt_in_another_file_holds_back_the_earlier_one(tmp_path: Path) -> None:
    attempt2 = json.loads((REAL / "github-pygithub-workflow-run-attempt-2.json").read_text())
    running = {**attempt2, "status": "in_progress", "conclusion": None}
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(_pages(REAL / "github-derived-rerun-overlapping-pages.json")[0])  # attempt 1 failed + 4205440316
    second.write_text(json.dumps(running))
    mapping = actions()
    check(build_plan([first, second], mapping), 3, [OTHER_RUN],
          Counter({label(mapping, "latest_attempt"): 1, label(mapping, "status"): 1}))


def test_conclusions_and_statuses(tmp_path: Path) -> None:
    base = json.loads((REAL / "github-pygithub-workflow-run-2023.json").read_text())
    conclusions = ["success", "failure", "timed_out", "startup_failure", "cancelled", "skipped", "neutral",
                   "action_required", "stale", None]
    runs = [{**base, "id": 100 + i, "conclusion": c} for i, c in enumerate(conclusions)]
    runs += [{**base, "id": 200, "status": "in_progress", "conclusion": None},
             {**base, "id": 201, "status": "queued", "conclusion": None}]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"total_count": len(runs), "workflow_runs": runs}))
    mapping = actions()
    plan = build_plan([path], mapping)
    assert [(e["attributes"]["build_id"], e["attributes"]["status"]) for e in events_of(plan)] == [
        ("100", "success"), ("101", "failed"), ("102", "failed"), ("103", "failed"),
    ]
    assert dict(plan.report.filtered) == {
        label(mapping, "status"): 2,
        label(mapping, "conclusion", 0): 5,
        label(mapping, "conclusion", 1): 1,  # the empty conclusion of a completed run
    }
    assert plan.report.accounted == plan.report.rows_read == 12


# --- github-deployments on the real exports ----------------------------------------------------

OPENBIC = dict(env="github-pages")


def test_graphql_pages_inactive_and_success() -> None:
    mapping = deploys()
    plan = build_plan([REAL / "github-devlake-graphql-deployments-pages.json"], mapping)
    check(plan, 7, [
        event("2024-07-24T00:18:51Z", "success", start="2024-07-24T00:18:51Z", build_id="1670973641",
              sha="5f64bfed25d7ab4ae0840357ec56890f4da27def", **OPENBIC),
        event("2024-08-02T00:17:55Z", "success", start="2024-08-02T00:17:55Z", build_id="1693412381",
              sha="c510f30dba35481866f55dc6f4ea94bb3ff5a7ae", **OPENBIC),
        event("2024-08-03T00:17:32Z", "success", start="2024-08-03T00:17:32Z", build_id="1696032217",
              sha="3f8aa35aa5d792e9890c804ba629c065f8609c7a", **OPENBIC),
        event("2024-08-06T00:18:05Z", "success", start="2024-08-06T00:18:05Z", build_id="1701084484",
              sha="7a4d4b248e85a148f0bec8bc7fd480ed3c396b35", **OPENBIC),
        event("2024-08-08T00:18:12Z", "success", start="2024-08-08T00:17:56Z", build_id="1707033729",
              sha="c0cfe86acc9ee2c2d0e64a5f1276e1ac3cf1f5c6", **OPENBIC),
        event("2026-02-14T00:32:36Z", "success", start="2026-02-14T00:32:15Z", build_id="3839563910",
              sha="74962aec9820f7e3a6f1e60f54b4ce8c747e1e1f", **OPENBIC),
        event("2026-02-20T00:30:59Z", "success", start="2026-02-20T00:30:37Z", build_id="3881429895",
              sha="0916a0afdfa825779c892a8951bde706a054d352", **OPENBIC),
    ], Counter())
    assert plan.report.notes == {"finished_at_estimated": 4}
    assert ("4 deployments succeeded at an unknown time (only 'inactive' recorded): their creation time is used"
            in plan_summary(plan).splitlines())


CODERTOCAT = event("2019-05-15T15:20:55Z", "success", start="2019-05-15T15:20:53Z", build_id="145988746",
                   sha="f95f852bd8fca8fcc58a9a2d6c842781e32a215e", initiator="Codertocat")


@pytest.mark.parametrize(
    "name", ["github-octokit-deployment-with-success-status.json", "github-derived-deployment-inactive-after-success.json"]
)
def test_rest_success_and_inactive_after_success(name: str) -> None:
    plan = build_plan([REAL / name], deploys())
    check(plan, 1, [CODERTOCAT], Counter())
    assert plan.report.notes == {"finished_at_estimated": 0}
    assert "unknown time" not in plan_summary(plan)


def test_no_statuses_and_queued_only_are_skipped_by_the_filter_rule() -> None:
    mapping = deploys()
    plan = build_plan([REAL / "github-pygithub-deployments-list.json",
                       REAL / "github-pygithub-deployment-with-queued-statuses.json"], mapping)
    check(plan, 3, [], Counter({label(mapping, "state_effective"): 3}))


def test_failure_and_error_are_failed_and_one_estimate_is_singular(tmp_path: Path) -> None:
    def node(n: int, state: str, at: str | None) -> dict:
        return {"id": f"DE_{n}", "databaseId": n, "commitOid": "c" * 40, "environment": "prod", "createdAt":
                "2024-03-01T12:00:00+01:00", "creator": {"login": "anna"},
                "latestStatus": {"state": state, "createdAt": at, "logUrl": f"https://ci/{n}"}}

    page = {"data": {"repository": {"deployments": {"nodes": [
        node(1, "FAILURE", "2024-03-01T12:09:30+01:00"), node(2, "ERROR", "2024-03-01T11:20:00Z"),
        node(3, "INACTIVE", "2024-03-09T00:00:00Z"),
    ]}}}}
    path = tmp_path / "d.json"
    path.write_text(json.dumps(page))
    plan = build_plan([path], deploys())
    common = dict(env="prod", start="2024-03-01T11:00:00Z", sha="c" * 40, initiator="anna")
    check(plan, 3, [
        event("2024-03-01T11:00:00Z", "success", build_id="3", url="https://ci/3", **common),  # created 12:00+01:00
        event("2024-03-01T11:09:30Z", "failed", build_id="1", url="https://ci/1", **common),
        event("2024-03-01T11:20:00Z", "failed", build_id="2", url="https://ci/2", **common),
    ], Counter())
    assert ("1 deployment succeeded at an unknown time (only 'inactive' recorded): its creation time is used"
            in plan_summary(plan).splitlines())


# --- the samples, through the CLI ---------------------------------------------------------------

def test_runs_sample_preview(run_cli) -> None:
    code, out, err = run_cli("preview", RUNS_SAMPLE, "-m", ACTIONS_YAML, "--entity-id", ENTITY, "--set",
                             "env=production", "--show", "0")
    assert (code, err) == (0, "")
    mapping = load_mapping(ACTIONS_YAML)
    assert out.splitlines()[2:6] == [
        "Rows: 10 read = 5 planned + 5 filtered + 0 duplicates + 0 invalid",
        f"  skipped by filter {label(mapping, 'latest_attempt')}: 3",
        f"  skipped by filter {label(mapping, 'status')}: 1",
        f"  skipped by filter {label(mapping, 'conclusion')}: 1",
    ]
    assert "By status: success 3, failed 2" in out.splitlines()


def test_runs_sample_events() -> None:
    plan = build_plan([RUNS_SAMPLE], actions())
    url = "https://github.com/acme/shop/actions/runs/"
    assert [(e["timestamp"], e["attributes"]["build_id"], e["attributes"]["status"], e["attributes"]["initiator"],
             e["attributes"]["deployment_start_time"]) for e in events_of(plan)] == [
        ("2024-05-30T08:07:39Z", "9160523117", "success", "bob", "2024-05-30T08:02:44Z"),
        ("2024-05-31T16:30:19Z", "9171102390", "failed", "carol", "2024-05-31T15:30:05Z"),  # timed_out
        ("2024-06-01T09:19:48Z", "9187310561", "success", "anna", "2024-06-01T09:14:22Z"),
        ("2024-06-02T11:47:03Z", "9198442207", "failed", "anna", "2024-06-02T11:42:57Z"),
        # attempt 2, started by carol; attempt 1 (failure, 16:09:31) is skipped
        ("2024-06-02T16:35:47Z", "9203118841", "success", "carol", "2024-06-02T16:31:02Z"),
    ]
    assert all(e["attributes"]["build_url"] == url + e["attributes"]["build_id"] for e in events_of(plan))


def test_deployments_sample_preview(run_cli) -> None:
    code, out, err = run_cli("preview", DEPLOYMENTS_SAMPLE, "-m", DEPLOYMENTS_YAML, "--entity-id", ENTITY, "--show", "0")
    assert (code, err) == (0, "")
    mapping = load_mapping(DEPLOYMENTS_YAML)
    lines = out.splitlines()
    assert lines[2:4] == [
        "Rows: 10 read = 7 planned + 3 filtered + 0 duplicates + 0 invalid",
        f"  skipped by filter {label(mapping, 'state_effective')}: 3",
    ]
    assert "By env: production 6, staging 1" in lines
    assert "By status: success 5, failed 2" in lines
    assert "2 deployments succeeded at an unknown time (only 'inactive' recorded): their creation time is used" in lines


def test_deployments_sample_events() -> None:
    plan = build_plan([DEPLOYMENTS_SAMPLE], deploys())
    assert [(e["timestamp"], e["attributes"]["build_id"], e["attributes"]["env"], e["attributes"]["status"],
             e["attributes"].get("build_url")) for e in events_of(plan)] == [
        # SUCCESS 10:03:41, then INACTIVE the next day: the success time
        ("2024-05-28T10:03:41Z", "1402000101", "production", "success",
         "https://github.com/acme/shop/actions/runs/9160523117/job/25190301"),
        ("2024-05-28T15:26:09Z", "1402000187", "staging", "failed",
         "https://github.com/acme/shop/actions/runs/9171102390/job/25190877"),
        ("2024-05-29T14:10:02Z", "1402000233", "production", "success",
         "https://github.com/acme/shop/actions/runs/9187310561/job/25191420"),
        ("2024-05-30T09:01:30Z", "1402000290", "production", "failed", None),  # ERROR
        ("2024-05-30T16:44:09Z", "1402000345", "production", "success", None),  # inactive only: created
        ("2024-05-31T11:30:27Z", "1402000402", "production", "success", None),  # inactive only: created
        ("2024-06-03T10:12:55Z", "1402000577", "production", "success",
         "https://github.com/acme/shop/actions/runs/9203118841/job/25193004"),
    ]


# --- the README shows what the preview prints ---------------------------------------------------

@pytest.mark.parametrize(
    "command",
    [
        "backfill preview samples/github-runs.json -m mappings/github-actions.yaml --entity-id shop --set env=production",
        "backfill preview samples/github-deployments.json -m mappings/github-deployments.yaml --entity-id shop",
    ],
)
def test_readme_preview_blocks_match_the_output(run_cli, monkeypatch, command: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(f"$ {command}\n", 1)[1].split("```", 1)[0].splitlines()
    monkeypatch.chdir(ROOT)
    code, out, _ = run_cli(*command.split()[1:], "--show", "0")
    assert code == 0
    lines = out.splitlines()
    start = lines.index(block[0])
    assert lines[start : start + len(block)] == block


@pytest.mark.parametrize("module", ["github_actions", "github_deployments"])
def test_readme_lists_every_guaranteed_column(module: str) -> None:
    import importlib

    fields = importlib.import_module(f"backfill.readers.{module}").BASE_FIELDS
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    section = readme.split("### GitHub Actions", 1)[1].split("## The mapping file", 1)[0]
    for name in fields:
        assert f"`{name}`" in section, name


# --- what `backfill fetch github` writes goes through the readers and shipped mappings -----------

def test_fetched_runs_with_jobs_and_deployments_preview(tmp_path: Path, run_cli, monkeypatch) -> None:
    from fetch_fakes import TOKEN, FakeGitHub, FakeServer, github_deployment_nodes, github_runs

    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    runs = github_runs(3, 1_577_836_800, 3600)
    nodes = github_deployment_nodes(120)
    runs_out, deployments_out = tmp_path / "runs.json", tmp_path / "deployments.json"
    with FakeServer(FakeGitHub({"acme/shop": runs}, deployments={"acme/shop": nodes})) as server:
        for what, out in (("--runs", runs_out), ("--deployments", deployments_out)):
            extra = ["--jobs"] if what == "--runs" else []
            code, _, err = run_cli("fetch", "github", "--api-url", server.url, "--repo", "acme/shop", what, *extra, "-o", out)
            assert code == 0, err
    plan = build_plan([runs_out], actions())
    assert plan.report.rows_read == 3 and plan.report.accounted == 3
    assert sorted(e["attributes"]["build_id"] for e in events_of(plan)) == sorted(
        str(r["id"]) for r in runs if r["conclusion"] in ("success", "failure", "timed_out", "startup_failure"))
    plan = build_plan([deployments_out], deploys())
    assert (plan.report.rows_read, plan.report.planned, plan.report.accounted) == (120, 120, 120)
    assert {e["attributes"]["status"] for e in events_of(plan)} == {"success"}

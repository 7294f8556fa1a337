"""The preview report's "likely truncated exports" warning on exports written by `backfill fetch`:
fetch checks completeness against the API (GitLab's X-Total, Jenkins' firstBuild and build
numbers) and keeps what it found beside the export; the report uses that instead of guessing from
page sizes. The same export copied elsewhere, or edited, is judged by the guesses again.

End to end: fetch from the fake servers on 127.0.0.1 -> preview --report FILE.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backfill.errors import ExitStatus
from backfill.fetch import record

from conftest import ROOT
from fetch_fakes import TOKEN, FakeGitLab, FakeJenkins, FakeServer, gitlab_deployments, jenkins_builds

MAPPINGS = ROOT / "mappings"
JENKINS = ["-m", MAPPINGS / "jenkins.yaml", "--entity-id", "payments", "--set", "env=production"]
GITLAB = ["-m", MAPPINGS / "gitlab.yaml", "--entity-id", "payments"]


@pytest.fixture(autouse=True)
def tokens(monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    monkeypatch.setenv("JENKINS_USER", "me")
    monkeypatch.setenv("JENKINS_TOKEN", TOKEN)


def truncated(run_cli, tmp_path: Path, export: Path, mapping: list) -> list[tuple[str, str]]:
    code, out, err = run_cli("preview", export, *mapping, "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    warnings = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["warnings"]
    found = [(e["file"], e["detail"]) for w in warnings if w["code"] == "truncated" for e in w["examples"]]
    assert ("likely truncated exports" in out) == bool(found)
    return found


@pytest.mark.parametrize("count", [100, 200])
def test_gitlab_fetch_of_a_multiple_of_100_is_not_truncated(tmp_path, run_cli, count):
    export = tmp_path / "shop.json"
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(count)})) as server:
        code, stdout, _ = run_cli("fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "-o", export)
    assert code == ExitStatus.OK and "Complete" in stdout
    assert [len(json.loads(line)) for line in export.read_text().splitlines()] == [100] * (count // 100)
    doc = json.loads(record.record_path(export).read_text())
    assert (doc["source"], doc["shortfalls"], doc["gaps"]) == ("gitlab", [], [])
    assert TOKEN not in record.record_path(export).read_text()
    assert truncated(run_cli, tmp_path, export, GITLAB) == []

    copy = tmp_path / "copied" / "shop.json"  # the same bytes without the record: the page-size guess
    copy.parent.mkdir()
    shutil.copyfile(export, copy)
    assert truncated(run_cli, tmp_path, copy, GITLAB) == [
        (str(copy), f"its last page holds exactly 100 deployments and no page follows ({count // 100} pages): "
                    "fetch the next page")]

    last = export.read_text().splitlines()[-1]
    with open(export, "a", encoding="utf-8") as handle:  # edited after the fetch: the record no longer holds
        handle.write(last + "\n")
    assert [detail for _, detail in truncated(run_cli, tmp_path, export, GITLAB)] == [
        f"its last page holds exactly 100 deployments and no page follows ({count // 100 + 1} pages): fetch the next page"]


def test_jenkins_fetch_of_exactly_100_builds_is_not_truncated(tmp_path, run_cli):
    export = tmp_path / "builds.json"
    with FakeServer(FakeJenkins({"deploy": jenkins_builds("deploy", 1, 100)})) as server:
        code, stdout, _ = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", export)
    assert code == ExitStatus.OK and "Complete" in stdout
    assert truncated(run_cli, tmp_path, export, JENKINS) == []

    copy = tmp_path / "copy.json"
    shutil.copyfile(export, copy)
    assert truncated(run_cli, tmp_path, copy, JENKINS) == [
        (str(copy), "job 'deploy' has exactly 100 builds, the cap of the `builds` field: export `allBuilds` for the "
                    "whole history")]


def test_jenkins_history_discarded_on_the_server_is_reported_as_fetch_found_it(tmp_path, run_cli):
    export = tmp_path / "builds.json"
    with FakeServer(FakeJenkins({"deploy": jenkins_builds("deploy", 812, 830)})) as server:
        code, _, _ = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", export)
    assert code == ExitStatus.OK
    assert truncated(run_cli, tmp_path, export, JENKINS) == [
        (str(export), "backfill fetch: history of deploy starts at #812: older builds were discarded by Jenkins")]


def test_incomplete_fetch_is_a_truncated_export(tmp_path, run_cli):
    export = tmp_path / "builds.json"
    with FakeServer(FakeJenkins({"deploy": jenkins_builds("deploy", 1, 250)}, max_start=100)) as server:
        code, _, _ = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", export)
    assert code == ExitStatus.INCOMPLETE  # and the file is written
    assert truncated(run_cli, tmp_path, export, JENKINS) == [
        (str(export), "backfill fetch found fewer than the API's totals: deploy: Jenkins' oldest build is #1, but the "
                      "oldest fetched is #151; rerun the fetch")]  # not "discarded": Jenkins still has them


def test_an_export_not_from_fetch_keeps_the_guess(tmp_path, run_cli):
    page = [{"id": i, "iid": i, "sha": f"s{i}", "status": "success", "created_at": "2024-01-01T00:00:00Z",
             "environment": {"name": "production"}, "deployable": None} for i in range(100)]
    export = tmp_path / "saved.json"
    export.write_text(json.dumps(page))
    record.record_path(export).write_text("not json")  # an unreadable record is no record
    assert [d for _, d in truncated(run_cli, tmp_path, export, GITLAB)] == [
        "its last page holds exactly 100 deployments and no page follows (1 pages): fetch the next page"]

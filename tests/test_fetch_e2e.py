"""End to end, per source: `backfill fetch` from a fake server -> `preview` -> `import` into the sandbox.

The fetch and the import are real subprocesses; the fake source servers run in this process on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e_helpers import ROOT, Processes, content, preview_bodies
from fetch_fakes import (
    TOKEN, FakeGitHub, FakeGitLab, FakeJenkins, FakeServer, github_deployment_nodes, github_runs, gitlab_deployments,
    jenkins_builds,
)

MAPPINGS = ROOT / "mappings"
FAST = ["--rate-limit", "20/0.2s"]


def fetch_preview_import(procs: Processes, tmp_path: Path, fetch_args: list[str], mapping: str, extra: list[str]) -> int:
    export = tmp_path / "export.json"
    run = procs.run(["fetch", *fetch_args, "-o", str(export)])
    assert run.returncode == 0, run
    assert TOKEN not in run.stdout + run.stderr + export.read_text(encoding="utf-8")
    events = [e for body in preview_bodies([export], MAPPINGS / mapping, extra, tmp_path) for e in body]
    assert events
    box = procs.sandbox(*FAST)
    imported = procs.run(["import", str(export), "-m", str(MAPPINGS / mapping), *extra, "--base-url", box.url, "--yes",
                          "--checkpoint", str(tmp_path / "import.checkpoint"), *FAST])
    assert imported.returncode == 0, imported
    assert [content(r) for r in box.recorded()] == [content(e) for e in events]
    return len(events)


def test_jenkins(tmp_path: Path, procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JENKINS_USER", "me")
    monkeypatch.setenv("JENKINS_TOKEN", TOKEN)
    fake = FakeJenkins({"team/deploy-api": jenkins_builds("team/deploy-api", 1, 130), "team/deploy-web": jenkins_builds("team/deploy-web", 1, 20)},
                       folders={"team": ["deploy-api", "deploy-web"]})
    with FakeServer(fake) as server:
        count = fetch_preview_import(procs, tmp_path, ["jenkins", "--url", server.url, "--job", "team", "--page-size", "50"],
                                     "jenkins.yaml", ["--entity-id", "payments-api", "--set", "env=production"])
    assert count == 150  # every real build template is a SUCCESS and none is still building


def test_gitlab(tmp_path: Path, procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(40)})) as server:
        count = fetch_preview_import(procs, tmp_path, ["gitlab", "--url", server.url, "--project", "acme/shop", "--page-size", "15"],
                                     "gitlab.yaml", ["--entity-id", "payments-api"])
    assert count == 10  # the mapping keeps success and failed: 2 of each 8 real deployments


def test_github_runs_with_jobs(tmp_path: Path, procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    with FakeServer(FakeGitHub({"acme/shop": github_runs(30, 1_577_836_800, 3600)})) as server:
        count = fetch_preview_import(procs, tmp_path, ["github", "--api-url", server.url, "--repo", "acme/shop", "--runs", "--jobs",
                                                       "--page-size", "10"],
                                     "github-actions.yaml", ["--entity-id", "payments-api", "--set", "env=production"])
    assert count == 30  # every real run template succeeded


def test_github_deployments(tmp_path: Path, procs: Processes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    with FakeServer(FakeGitHub(deployments={"acme/shop": github_deployment_nodes(120)})) as server:
        count = fetch_preview_import(procs, tmp_path, ["github", "--api-url", server.url, "--repo", "acme/shop", "--deployments"],
                                     "github-deployments.yaml", ["--entity-id", "payments-api"])
    assert count == 120

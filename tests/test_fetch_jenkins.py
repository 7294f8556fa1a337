"""`backfill fetch jenkins` against a fake Jenkins on 127.0.0.1 answering real recorded builds."""

from __future__ import annotations

import pytest

from backfill.readers import SourceConfig
from backfill.readers.jenkins import read
from fetch_fakes import TOKEN, FakeJenkins, FakeServer, jenkins_builds, read_values


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("JENKINS_USER", "me")
    monkeypatch.setenv("JENKINS_TOKEN", TOKEN)


def rows(path):
    return [row for chunk in read(path, SourceConfig(format="jenkins")) for row in chunk.frame.to_dict("records")]


def ranges(server):
    return [r.query["tree"].rsplit("]", 1)[1] for r in server.requests if "allBuilds[" in r.query.get("tree", "")]


def test_250_builds_in_three_ranges_each_once(tmp_path, run_cli):
    fake = FakeJenkins({"team/deploy-api": jenkins_builds("team/deploy-api", 1, 250)})
    out = tmp_path / "builds.json"
    with FakeServer(fake) as server:
        code, stdout, stderr = run_cli("fetch", "jenkins", "--url", server.url, "--job", "team/deploy-api", "-o", out)
    assert code == 0, stderr
    assert ranges(server) == ["{0,100}", "{100,200}", "{200,300}"]
    assert server.requests[0].raw_path == "/job/team/job/deploy-api/api/json"
    assert all(r.header("authorization") == "Basic bWU6Z2xwYXQtU3VwM3JTZWNyZXRUMGtlbg==" for r in server.requests)
    values = read_values(out)
    assert [len(v["allBuilds"]) for v in values] == [100, 100, 50]
    assert all(v["fullName"] == "team/deploy-api" for v in values)
    got = rows(out)
    assert sorted(int(r["number"]) for r in got) == list(range(1, 251))
    assert {r["job"] for r in got} == {"team/deploy-api"}
    assert "Wrote 250 items in 3 pages" in stdout
    assert "Complete: every count matches" in stdout
    assert not list(tmp_path.glob("*.fetch-state.json")) and not list(tmp_path.glob(".*partial"))
    assert TOKEN not in stdout + stderr + out.read_text()


def test_the_tree_asks_for_what_the_reader_and_mapping_use(tmp_path, run_cli):
    fake = FakeJenkins({"deploy": jenkins_builds("deploy", 1, 3)})
    with FakeServer(fake) as server:
        code, _, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", tmp_path / "b.json")
    assert code == 0, err
    tree = server.requests[-1].query["tree"]
    for part in ("parameters[", "causes[", "lastBuiltRevision[SHA1", "remoteUrls", "changeSets[", "changeSet[",
                 "number", "result", "building", "timestamp", "duration", "url", "firstBuild[number]"):
        assert part in tree


def test_a_folder_expands_to_its_two_jobs(tmp_path, run_cli):
    fake = FakeJenkins(
        {"team/deploy-api": jenkins_builds("team/deploy-api", 1, 120), "team/deploy-web": jenkins_builds("team/deploy-web", 1, 30)},
        folders={"team": ["deploy-api", "deploy-web"]},
    )
    out = tmp_path / "builds.json"
    with FakeServer(fake) as server:
        code, stdout, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "team", "-o", out, "--page-size", "50")
    assert code == 0, err
    got = rows(out)
    assert sorted((r["job"], int(r["number"])) for r in got) == sorted(
        [("team/deploy-api", n) for n in range(1, 121)] + [("team/deploy-web", n) for n in range(1, 31)])
    assert "1 --job given, 2 jobs after expanding folders: team/deploy-api, team/deploy-web" in stdout


def test_a_history_that_starts_at_812_is_reported_as_a_gap(tmp_path, run_cli):
    fake = FakeJenkins({"team/deploy-api": jenkins_builds("team/deploy-api", 812, 1061)})
    out = tmp_path / "builds.json"
    with FakeServer(fake) as server:
        code, stdout, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "team/deploy-api", "-o", out)
    assert code == 0, err
    assert "gap: history of team/deploy-api starts at #812: older builds were discarded by Jenkins" in stdout.splitlines()
    assert len(rows(out)) == 250
    assert "Complete:" not in stdout


def test_deleted_builds_in_the_middle_are_reported(tmp_path, run_cli):
    builds = [b for b in jenkins_builds("deploy", 1, 40) if b["number"] not in (5, 6, 7, 20)]
    with FakeServer(FakeJenkins({"deploy": builds})) as server:
        code, stdout, _ = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", tmp_path / "b.json")
    assert code == 0
    assert "gap: deploy: 4 build numbers between #1 and #40 are missing (#5-#7, #20); deleted, or discarded by Jenkins" in stdout


def test_builds_jenkins_has_but_the_ranges_did_not_return_are_incomplete(tmp_path, run_cli):
    fake = FakeJenkins({"deploy": jenkins_builds("deploy", 1, 250)}, max_start=100)
    out = tmp_path / "b.json"
    with FakeServer(fake) as server:
        code, stdout, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", out)
    assert code == 8
    assert "incomplete: deploy: Jenkins' oldest build is #1, but the oldest fetched is #151" in stdout
    assert err.strip().endswith(f"1 counts fell short of the API's totals (see 'incomplete:' above); the file {out} is written; rerun the fetch to try again")
    assert len(rows(out)) == 100


def test_new_builds_while_paging_are_written_once(tmp_path, run_cli):
    fake = FakeJenkins({"deploy": jenkins_builds("deploy", 1, 150)})
    grow = fake.__call__

    def handler(request, server):
        reply = grow(request, server)
        if "allBuilds[" in request.query.get("tree", "") and len(fake.jobs["deploy"]) < 160:
            fake.jobs["deploy"] = jenkins_builds("deploy", 1, len(fake.jobs["deploy"]) + 5)  # 5 new builds after each range
        return reply

    out = tmp_path / "b.json"
    with FakeServer(handler) as server:
        code, stdout, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", out)
    assert code == 0, err
    numbers = [int(r["number"]) for r in rows(out)]
    # the second range {100,200} starts 5 builds later in the history: #55-#51 come again and are folded
    assert sorted(numbers) == list(range(1, 151))
    assert "Complete:" in stdout


def test_since_stops_at_the_first_older_build(tmp_path, run_cli):
    builds = jenkins_builds("deploy", 1, 300)  # build n started at 1_650_000_000 + n h
    out = tmp_path / "b.json"
    with FakeServer(FakeJenkins({"deploy": builds})) as server:
        # build 250 started 2022-04-25T15:20:00Z (1_650_000_000 + 250 * 3600 s)
        code, stdout, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", out,
                                    "--since", "2022-04-25T15:20:00Z")
    assert code == 0, err
    assert ranges(server) == ["{0,100}"]
    assert sorted(int(r["number"]) for r in rows(out)) == list(range(250, 301))
    assert "gap:" not in stdout


def test_an_unknown_job_stops_with_one_line(tmp_path, run_cli):
    with FakeServer(FakeJenkins({})) as server:
        code, _, err = run_cli("fetch", "jenkins", "--url", server.url, "--job", "nope", "-o", tmp_path / "b.json")
    assert code == 6
    assert err.strip() == f"Error: GET {server.url}/job/nope/api/json: 404 Not Found; check --url and the names given"


def test_no_user_or_no_token(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("JENKINS_USER")
    code, _, err = run_cli("fetch", "jenkins", "--url", "https://jenkins.example.com", "--job", "x", "-o", tmp_path / "b.json")
    assert (code, err.strip()) == (2, "Error: no Jenkins user: set JENKINS_USER (the user the API token belongs to) or pass --user")
    monkeypatch.setenv("JENKINS_USER", "me")
    monkeypatch.delenv("JENKINS_TOKEN")
    code, _, err = run_cli("fetch", "jenkins", "--url", "https://jenkins.example.com", "--job", "x", "-o", tmp_path / "b.json")
    assert (code, err.strip()) == (5, "Error: no token: set JENKINS_TOKEN or pass --token-file FILE")


@pytest.mark.parametrize("given", ["team/deploy-api", "/team/deploy-api/", "job/team/job/deploy-api", "job/team/job/deploy-api/"])
def test_a_job_path_in_either_spelling(tmp_path, run_cli, given):
    with FakeServer(FakeJenkins({"team/deploy-api": jenkins_builds("team/deploy-api", 1, 3)})) as server:
        code, _, err = run_cli("fetch", "jenkins", "--url", server.url + "/", "--job", given, "-o", tmp_path / "b.json")
    assert code == 0, err
    assert server.requests[0].raw_path == "/job/team/job/deploy-api/api/json"


def test_a_server_name_with_control_characters_is_escaped(tmp_path, run_cli):
    builds = [b for b in jenkins_builds("deploy", 1, 10) if b["number"] != 5]
    fake = FakeJenkins({"deploy": builds})
    plain = fake.__call__

    def handler(request, server):
        reply = plain(request, server)
        if isinstance(reply.body, dict) and "allBuilds" in reply.body:
            reply.body["fullName"] = "deploy\x1b[2J"
        return reply

    with FakeServer(handler) as server:
        code, stdout, _ = run_cli("fetch", "jenkins", "--url", server.url, "--job", "deploy", "-o", tmp_path / "b.json")
    assert code == 0
    assert "\x1b" not in stdout
    assert "gap: deploy\\x1b[2J: 1 build numbers between #1 and #10 are missing (#5)" in stdout


@pytest.mark.parametrize("args, message", [
    (["--job", ""], "--job '': give a job path such as team/deploy-api"),
    (["--job", "x", "--max-retries", "-1"], "argument --max-retries: must be 0 or more"),
    (["--job", "x", "--timeout", "0"], "argument --timeout: must be more than 0"),
])
def test_bad_arguments(tmp_path, run_cli, args, message):
    code, _, err = run_cli("fetch", "jenkins", "--url", "https://jenkins.example.com", *args, "-o", tmp_path / "b.json")
    assert code == 2
    assert message in err


def test_an_output_that_is_a_folder(tmp_path, run_cli):
    code, _, err = run_cli("fetch", "jenkins", "--url", "https://jenkins.example.com", "--job", "x", "-o", tmp_path)
    assert (code, err.strip()) == (2, f"Error: -o {tmp_path}: is a folder; give a file name")

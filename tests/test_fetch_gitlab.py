"""`backfill fetch gitlab` against a fake GitLab on 127.0.0.1 answering real recorded deployments."""

from __future__ import annotations

import pytest

from backfill.readers import SourceConfig
from backfill.readers.gitlab import read
from fetch_fakes import TOKEN, FakeGitLab, FakeServer, gitlab_deployments, read_values


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)


def ids(path):
    return [int(row["id"]) for chunk in read(path, SourceConfig(format="gitlab")) for row in chunk.frame.to_dict("records")]


def fetch(run_cli, server, out, *extra):
    return run_cli("fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "-o", out, *extra)


@pytest.mark.parametrize("link, next_page", [(True, False), (False, True), (True, True)], ids=["Link", "X-Next-Page", "both"])
def test_three_pages_followed_and_counted_against_x_total(tmp_path, run_cli, link, next_page):
    deployments = gitlab_deployments(25)
    out = tmp_path / "shop.json"
    with FakeServer(FakeGitLab({"acme/shop": deployments}, link=link, next_page=next_page)) as server:
        code, stdout, err = fetch(run_cli, server, out, "--page-size", "10")
    assert code == 0, err
    assert [r.query.get("page") for r in server.requests] == [None, "2", "3"]
    assert all(r.raw_path == "/api/v4/projects/acme%2Fshop/deployments" for r in server.requests)
    first = server.requests[0]
    assert first.query == {"order_by": "id", "sort": "asc", "per_page": "10"}
    assert all(r.header("private-token") == TOKEN for r in server.requests)
    assert [len(v) for v in read_values(out)] == [10, 10, 5]
    assert read_values(out)[0][0] == deployments[0]  # the raw objects, as GitLab sent them
    assert ids(out) == [d["id"] for d in deployments]
    assert "Wrote 25 items in 3 pages" in stdout and "Complete:" in stdout
    assert TOKEN not in stdout + err + out.read_text()


def test_fewer_than_x_total_is_incomplete(tmp_path, run_cli):
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(10)}, claimed_total=12)) as server:
        code, stdout, err = fetch(run_cli, server, tmp_path / "shop.json", "--page-size", "5")
    assert code == 8
    assert "incomplete: acme/shop: 10 deployments fetched, GitLab's X-Total says 12" in stdout.splitlines()
    assert (tmp_path / "shop.json").exists()


def test_without_x_total_the_count_is_noted(tmp_path, run_cli):
    with FakeServer(FakeGitLab({"acme/shop": gitlab_deployments(3)}, total=False)) as server:
        code, stdout, _ = fetch(run_cli, server, tmp_path / "shop.json")
    assert code == 0
    assert "note: acme/shop: 3 deployments; GitLab sent no X-Total to check the count against" in stdout


def test_since_uses_updated_after_with_order_by_updated_at_and_environment(tmp_path, run_cli):
    with FakeServer(FakeGitLab({"42": gitlab_deployments(3)})) as server:
        code, _, err = run_cli("fetch", "gitlab", "--url", server.url + "/api/v4", "--project", "42", "-o", tmp_path / "x.json",
                               "--since", "2024-03-01", "--environment", "production")
    assert code == 0, err
    assert server.requests[0].raw_path == "/api/v4/projects/42/deployments"
    assert server.requests[0].query == {"order_by": "updated_at", "sort": "asc", "per_page": "100",
                                        "updated_after": "2024-03-01T00:00:00Z", "environment": "production"}


def test_two_projects_in_one_file(tmp_path, run_cli):
    fake = FakeGitLab({"acme/shop": gitlab_deployments(4), "acme/web": gitlab_deployments(3, first_id=5000)})
    out = tmp_path / "all.json"
    with FakeServer(fake) as server:
        code, _, err = run_cli("fetch", "gitlab", "--url", server.url, "--project", "acme/shop", "--project", "acme/web", "-o", out)
    assert code == 0, err
    assert ids(out) == [1000, 1001, 1002, 1003, 5000, 5001, 5002]


def test_an_empty_project_gives_an_empty_array(tmp_path, run_cli):
    out = tmp_path / "none.json"
    with FakeServer(FakeGitLab({"acme/shop": []})) as server:
        code, stdout, _ = fetch(run_cli, server, out)
    assert code == 0
    assert read_values(out) == [[]]
    assert "Wrote 0 items in 0 pages" in stdout


def test_page_size_above_100_is_refused(tmp_path, run_cli):
    code, _, err = run_cli("fetch", "gitlab", "--url", "https://gitlab.example.com", "--project", "1", "-o", tmp_path / "x.json",
                           "--page-size", "101")
    assert (code, err.strip()) == (2, "Error: --page-size 101: GitLab pages hold 1 to 100 items")


def test_plain_http_to_another_host_is_refused(tmp_path, run_cli):
    code, _, err = run_cli("fetch", "gitlab", "--url", "http://gitlab.example.com", "--project", "1", "-o", tmp_path / "x.json")
    assert code == 2
    assert err.strip() == ("Error: --url 'http://gitlab.example.com': plain http is refused except for loopback addresses "
                           "(127.0.0.1, ::1, localhost); use https")

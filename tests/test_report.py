"""The preview report (History / Warnings, --report FILE.html|json): figures computed here
independently (datetime, zoneinfo, statistics) on small fixtures and compared with the terminal
text, the JSON file and the page."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from backfill.errors import ExitStatus, MappingError
from backfill.mapping import parse_mapping

from conftest import ROOT, SAMPLE_CSV, SAMPLE_MAPPING

MAPPING = """\
source: {format: csv, timezone: Europe/Berlin}
entityId: service
timestamp: {from: at}
attributes:
  env: env
  status: result
  build_id: build
  build_commit_sha: sha
report:
  commit_time: {from: committed}
"""

# (service, env, local Berlin time, result, build, sha, committed (local))
ROWS = [
    ("api", "production", "2020-12-28 10:00", "success", "1", "a1", "2020-12-28 08:00"),  # Monday of 2020-W53
    ("api", "production", "2021-01-01 09:00", "failed", "2", "a2", "2021-01-01 08:30"),  # 2020-W53, January
    ("api", "production", "2021-01-03 23:30", "success", "3", "a3", "2021-01-03 20:00"),
    ("api", "production", "2021-01-04 00:30", "success", "4", "a4", ""),  # local Monday, UTC Sunday: 2020-W53
    ("api", "production", "2021-01-12 12:00", "success", "5", "a5", "2021-01-10 12:00"),
    ("api", "production", "2021-01-20 12:00", "failed", "6", "a6", "2021-01-20 13:00"),  # commit after: left out
    # February 2021: no deployments (a gap between busy months)
    ("api", "production", "2021-03-01 12:00", "success", "7", "a7", ""),
    ("api", "production", "2021-03-10 12:00", "success", "8", "a3", ""),  # a3 again: a rollback
    ("api", "production", "2021-03-28 03:30", "success", "9", "a9", ""),  # the night clocks went forward
    ("api", "production", "2021-03-29 00:30", "failed", "10", "a10", ""),  # CEST: UTC Sunday 22:30, 2021-W12
    ("api", "production", "2021-03-31 12:00", "success", "11", "a11", ""),
    ("api", "staging", "2021-01-05 12:00", "success", "1", "", ""),
    ("api", "staging", "2021-01-06 12:00", "success", "2", "b2", ""),
    ("web", "production", "2021-10-31 02:30 +01:00", "success", "1", "c1", ""),  # the night clocks went back
    ("web", "production", "2021-11-01 00:30", "success", "2", "c2", ""),
]
BERLIN = ZoneInfo("Europe/Berlin")


def to_utc(text: str) -> datetime:
    if text.endswith("+01:00"):
        return datetime.strptime(text, "%Y-%m-%d %H:%M %z").astimezone(timezone.utc)
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN).astimezone(timezone.utc)


def expected_group(rows: list[tuple]) -> dict:
    """The figures of one group, computed the slow, obvious way."""
    times = sorted(to_utc(r[2]) for r in rows)
    mondays = Counter(t.date() - timedelta(days=t.weekday()) for t in times)
    failed = Counter(to_utc(r[2]).date() - timedelta(days=to_utc(r[2]).weekday()) for r in rows if r[3] == "failed")
    first, last = min(mondays), max(mondays)
    weeks = []
    day = first
    while day <= last:
        year, week, _ = day.isocalendar()
        weeks.append({"week": f"{year}-W{week:02d}", "start": day.isoformat(), "deployments": mondays[day],
                      "success": mondays[day] - failed[day], "failed": failed[day]})
        day += timedelta(days=7)
    months = Counter((t.year, t.month) for t in times)
    months_failed = Counter((to_utc(r[2]).year, to_utc(r[2]).month) for r in rows if r[3] == "failed")
    (y, m), (ly, lm) = min(months), max(months)
    month_rows = []
    while (y, m) <= (ly, lm):
        n, f = months[(y, m)], months_failed[(y, m)]
        month_rows.append({"month": f"{y}-{m:02d}", "deployments": n, "failed": f,
                           "change_failure_rate": round(f / n, 4) if n else None})
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    per_week = statistics.median(w["deployments"] for w in weeks)
    per_month = statistics.median(r["deployments"] for r in month_rows)
    return {"weeks": weeks, "months": month_rows, "median_per_week": per_week, "median_per_month": per_month,
            "deployments": len(rows), "failed": sum(r[3] == "failed" for r in rows)}


def write_fixture(tmp_path: Path, rows=ROWS, mapping=MAPPING) -> tuple[Path, Path]:
    csv = tmp_path / "deploys.csv"
    csv.write_text("service,env,at,result,build,sha,committed\n" + "".join(",".join(r) + "\n" for r in rows),
                   encoding="utf-8")
    yaml = tmp_path / "mapping.yaml"
    yaml.write_text(mapping, encoding="utf-8")
    return csv, yaml


def group(data: dict, entity: str, env: str | None) -> dict:
    return next(g for g in data["groups"] if g["entity"] == entity and g["env"] == env)


@pytest.fixture
def fixture_report(tmp_path, run_cli):
    csv, yaml = write_fixture(tmp_path)
    code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    return out, json.loads((tmp_path / "r.json").read_text(encoding="utf-8")), csv


def test_weeks_months_medians_match_an_independent_computation(fixture_report):
    out, data, _ = fixture_report
    for entity, env in (("api", "production"), ("api", "staging"), ("web", "production")):
        rows = [r for r in ROWS if (r[0], r[1]) == (entity, env)]
        want = expected_group(rows)
        got = group(data, entity, env)
        assert got["weeks"] == want["weeks"]
        assert got["months"] == want["months"]
        assert (got["median_per_week"], got["median_per_month"]) == (want["median_per_week"], want["median_per_month"])
        assert (got["deployments"], got["failed"]) == (want["deployments"], want["failed"])
    api = group(data, "api", "production")
    # the year boundary: Monday 2020-12-28 starts 2020-W53, which holds the local Monday 00:30 of 2021-01-04
    assert api["weeks"][0] == {"week": "2020-W53", "start": "2020-12-28", "deployments": 4, "success": 3, "failed": 1}
    # DST: 00:30 CEST on Monday 2021-03-29 is Sunday 22:30 UTC, still 2021-W12
    assert next(w for w in api["weeks"] if w["week"] == "2021-W12")["deployments"] == 2
    assert [m["deployments"] for m in api["months"]] == [1, 5, 0, 5]
    assert api["months"][2]["change_failure_rate"] is None  # the empty month has no rate, not 0%
    overall = expected_group(ROWS)
    assert data["all"]["weeks"] == overall["weeks"] and data["all"]["median_per_week"] == overall["median_per_week"]


def test_band_follows_the_medians(fixture_report):
    _, data, _ = fixture_report
    for g in [data["all"], *data["groups"]]:
        w, m = g["median_per_week"], g["median_per_month"]
        want = ("on demand (multiple deploys per day)" if w > 7 else "between once per day and once per week" if w >= 1
                else "between once per week and once per month" if m >= 1 else "less than once per month")
        assert g["band"] == want
    api = group(data, "api", "production")
    assert (api["median_per_week"], api["median_per_month"]) == (0.5, 3)
    assert api["band"] == "between once per week and once per month"


@pytest.mark.parametrize("per_week, per_month, want", [
    (7.5, 32, "on demand (multiple deploys per day)"),
    (7, 30, "between once per day and once per week"),  # one a day is not "multiple deploys per day"
    (1, 4, "between once per day and once per week"),
    (0.5, 2, "between once per week and once per month"),
    (0, 1, "between once per week and once per month"),
    (0, 0.5, "less than once per month"),
])
def test_band_boundaries(per_week, per_month, want):
    from backfill.figures import band

    assert band(per_week, per_month) == want


def test_lead_time_from_the_mapping_field(fixture_report):
    _, data, _ = fixture_report
    leads = sorted(
        (to_utc(r[2]) - to_utc(r[6])).total_seconds() / 3600
        for r in ROWS if r[6] and r[3] == "success" and to_utc(r[2]) >= to_utc(r[6]) and r[1] == "production"
    )
    lead = group(data, "api", "production")["lead_time"]
    assert lead["deployments_with_commit_time"] == len(leads) == 3
    assert lead["median_hours"] == round(statistics.median(leads), 2) == 3.5
    assert "1 with a commit time after the deployment" in data["lead_time_source"]


def test_terminal_and_json_show_the_same_numbers(fixture_report):
    out, data, _ = fixture_report
    history = out[out.index("History"):]
    for g in [data["all"], *data["groups"]]:
        name = "all" if g["entity"] == "all" else f"{g['entity']} / {g['env']}"
        line = next(line for line in history.splitlines() if line.strip().startswith(name + ":"))
        rate = f"{round(100 * g['change_failure_rate'], 2):.2f}".rstrip("0").rstrip(".") + "%"
        assert f"{g['deployments']} deployments {g['first'][:10]} .. {g['last'][:10]}" in line
        assert f"median {g['median_per_week']:g} per week, {g['median_per_month']:g} per month" in line
        assert f"change failure rate {rate} ({g['failed']} failed)" in line
        assert g["band"] in line


def test_html_page_shows_the_same_numbers(tmp_path, run_cli, fixture_report):
    out, data, csv = fixture_report
    page_path = tmp_path / "r.html"
    code, _, err = run_cli("preview", csv, "-m", tmp_path / "mapping.yaml", "--show", "0", "--report", page_path)
    assert (code, err) == (ExitStatus.OK, "")
    page = page_path.read_text(encoding="utf-8")
    assert "<script" not in page and not re.search(r"""(src|href)=["'](?!#)|url\((?!#)|<link|@import""", page)  # nothing fetched
    assert page.count("<svg") == 1 + len(data["groups"])
    for g in data["groups"]:
        row = re.search(rf"<tr><td>{g['entity']} / {g['env']}</td>(.*?)</tr>", page).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[0] == str(g["deployments"])
        assert cells[3:5] == [f"{g['median_per_week']:g}", f"{g['median_per_month']:g}"]
        assert cells[5] == g["band"]
        assert f"{g['median_per_week']:g} per week" in out


def test_warnings_found_in_the_fixture(fixture_report):
    out, data, _ = fixture_report
    warnings = {w["code"]: w for w in data["warnings"]}
    gap = warnings["gap"]
    assert gap["count"] == 1 and "api / production: no deployments in 2021-02" in gap["examples"][0]["detail"]
    redeployed = warnings["redeployed_sha"]
    assert redeployed["count"] == 1 and redeployed["examples"][0]["row"] == 9  # build 8, sha a3, CSV row 9
    assert "rollback: 4 other deployments in between" in redeployed["examples"][0]["detail"]
    missing = warnings["no_commit_sha"]
    assert missing["count"] == 1 and "api: 1 of 13 events (7.7%) without build_commit_sha" in missing["examples"][0]["detail"]
    first = warnings["first_deployment"]
    assert [e["detail"] for e in first["examples"]] == [
        "api: first imported deployment 2020-12-28T09:00:00Z", "web: first imported deployment 2021-10-31T01:30:00Z"]
    assert "future" not in warnings and "same_second" not in warnings and "truncated" not in warnings
    assert "Warnings: 4" in out and "long gaps: empty months between busy months: 1" in out


def test_time_same_second_same_build_and_env_warnings(tmp_path, run_cli):
    rows = [
        ("api", "prod", "2003-05-01 12:00", "success", "1", "s1", ""),
        ("api", "prod", "2099-05-01 12:00", "success", "2", "s2", ""),
        ("api", "production", "2021-05-01 12:00", "success", "3", "s3", ""),
        ("api", "production", "2021-05-01 12:00", "failed", "4", "s4", ""),  # same second as the row before
        ("api", "production", "2021-06-01 12:00", "success", "5", "s5", ""),
        ("api", "production", "2021-06-02 12:00", "failed", "5", "s5", ""),  # build 5 again, other values
    ]
    csv, yaml = write_fixture(tmp_path, rows)
    code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    warnings = {w["code"]: w for w in json.loads((tmp_path / "r.json").read_text())["warnings"]}
    assert [(e["row"], e["detail"]) for e in warnings["before_2005"]["examples"]] == [(2, "2003-05-01T10:00:00Z")]
    assert [e["row"] for e in warnings["future"]["examples"]] == [3]
    assert warnings["same_second"]["count"] == 2 and warnings["same_second"]["examples"][0]["row"] == 4
    assert warnings["same_build"]["count"] == 1
    assert "build '5' of api / production planned 2 times with different values (also row 7)" in warnings["same_build"]["examples"][0]["detail"]
    assert "'prod' (2), 'production' (4) look like one environment (production)" in warnings["env_lookalike"]["examples"][0]["detail"]
    assert f"{csv} row 2: 2003-05-01T10:00:00Z" in out


def test_folded_duplicates_with_different_values_are_a_warning(tmp_path, run_cli):
    rows = [("api", "production", "2021-05-01 12:00", "success", "1", "s1", ""),
            ("api", "production", "2021-05-01 12:00", "success", "1", "s1", ""),  # same values: fine
            ("api", "production", "2021-05-02 12:00", "success", "2", "s2", ""),
            ("api", "production", "2021-05-03 12:00", "failed", "2", "s2", "")]  # same build, other values
    csv, yaml = write_fixture(tmp_path, rows, MAPPING + "dedupe: [service, build]\n")
    code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    warning = next(w for w in json.loads((tmp_path / "r.json").read_text())["warnings"] if w["code"] == "same_build")
    assert warning["count"] == 1
    example = warning["examples"][0]
    assert example["row"] == 5
    assert "folded by dedupe (service, build = api, 2) into row 4, which says otherwise" in example["detail"]
    assert "timestamp 2021-05-02T10:00:00Z vs 2021-05-03T10:00:00Z" in example["detail"]
    assert "status success vs failed" in example["detail"]


def test_many_environment_names(tmp_path, run_cli):
    rows = [("api", f"env{i}", f"2021-05-0{i + 1} 12:00", "success", str(i), "s", "") for i in range(7)]
    csv, yaml = write_fixture(tmp_path, rows)
    code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0")
    assert code == ExitStatus.OK
    assert "more than 6 distinct environment names: 7 - suggest a lookup" in out


def test_input_text_is_escaped_in_terminal_and_page(tmp_path, run_cli):
    evil = "pay\x1b[31mments<script>alert(1)</script>\u202e"
    rows = [(f'"{evil}"', "prod&<b>", "2021-05-01 12:00", "success", "1", "s1", "")]
    csv, yaml = write_fixture(tmp_path, rows)
    code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--report", tmp_path / "r.html")
    assert (code, err) == (ExitStatus.OK, "")
    history = out[out.index("History"):]
    assert "\x1b" not in history and "\u202e" not in history
    assert "pay\\x1b[31mments<script>alert(1)</script>\\u202e / prod&<b>:" in history
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "\x1b" not in page and "\u202e" not in page and "<script" not in page and "&<b>" not in page
    assert "pay\\x1b[31mments&lt;script&gt;alert(1)&lt;/script&gt;\\u202e / prod&amp;&lt;b&gt;" in page


def test_report_path_must_be_html_or_json(tmp_path, run_cli):
    code, out, err = run_cli("preview", SAMPLE_CSV, "-m", SAMPLE_MAPPING, "--report", tmp_path / "r.txt")
    assert (code, out) == (ExitStatus.USAGE, "")
    assert err == f"Error: --report {tmp_path / 'r.txt'}: give a file ending in .html or .json\n"
    missing = tmp_path / "no" / "r.json"
    code, out, err = run_cli("preview", SAMPLE_CSV, "-m", SAMPLE_MAPPING, "--report", missing, "--show", "0")
    assert (code, out) == (ExitStatus.USAGE, "")  # refused before any work
    assert err == f"Error: --report: {missing}: no such directory {str(missing.parent)!r}\n"
    export = tmp_path / "runs.json"
    export.write_bytes((ROOT / "samples" / "github-runs.json").read_bytes())
    code, out, err = run_cli("preview", export, "-m", ROOT / "mappings" / "github-actions.yaml", "--report", export)
    assert (code, out) == (ExitStatus.USAGE, "")
    assert err == f"Error: --report {export}: is the input file {export}; writing it would destroy it\n"
    assert export.read_bytes() == (ROOT / "samples" / "github-runs.json").read_bytes()
    code, out, err = run_cli("preview", SAMPLE_CSV, "-m", SAMPLE_MAPPING, "--out", tmp_path / "x.json",
                             "--report", tmp_path / "x.json")
    assert (code, out) == (ExitStatus.USAGE, "")
    assert err == f"Error: --report {tmp_path / 'x.json'}: --out writes the same file; give each its own\n"


def test_report_section_is_never_sent(tmp_path, run_cli):
    csv, yaml = write_fixture(tmp_path)
    code, _, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--out", tmp_path / "bodies.jsonl")
    assert (code, err) == (ExitStatus.OK, "")
    bodies = (tmp_path / "bodies.jsonl").read_text(encoding="utf-8")
    assert "2020-12-28T07:00" not in bodies  # the first commit time
    for body in map(json.loads, bodies.splitlines()):
        for event in body["events"]:
            assert set(event) == {"type", "timestamp", "entityId", "attributes"}
            assert set(event["attributes"]) <= {"env", "status", "build_id", "build_commit_sha"}


@pytest.mark.parametrize("section, message", [
    ("report: {commit: x}", "line 3: report: unknown key 'commit'; did you mean 'commit_time'?"),
    ("report:\n  commit_time: {from: a, lookup: {a: b}}",
     "line 4: report.commit_time: 'lookup' is not used here (the report only reads the field); give from, format, unit, timezone"),
    ("report: {build: []}", "line 3: report.build: the list must hold non-empty values"),
    ("report: [commit_time]", "line 3: report: expected a map (key: value), found a list"),
    ("report:\n  commit_time: {from: a, unit: h}", "line 4: report.commit_time.unit: must be s or ms, not 'h'"),
    ("report:\n  commit_time: {from: a, timezone: Mars/Base}",
     "line 4: report.commit_time.timezone: unknown time zone 'Mars/Base'; use an IANA name like Europe/Berlin"),
])
def test_report_section_errors_name_the_line(section, message):
    with pytest.raises(MappingError) as caught:
        parse_mapping("timestamp: t\nentityId: e\n" + section + "\n", "m.yaml")
    assert str(caught.value) == "m.yaml, " + message


def test_report_section_field_missing_from_the_input_is_a_warning_not_an_error(tmp_path, run_cli):
    csv, yaml = write_fixture(tmp_path, mapping=MAPPING.replace("{from: committed}", "{from: commited}"))
    code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0")
    assert (code, err) == (ExitStatus.OK, "")
    assert ("no planned event has a commit time: 15 - report.commit_time reads commited (mapping line 10), which is "
            "empty or unreadable in every planned row: lead time is not computed") in out


def test_sample_preview_has_history_and_warnings(run_cli):
    code, out, err = run_cli("preview", SAMPLE_CSV, "-m", SAMPLE_MAPPING, "--show", "0")
    assert (code, err) == (ExitStatus.OK, "")
    assert "History (what DevGrid will show; ISO weeks and months in UTC):" in out
    assert ("  all: 21 deployments 2019-01-02 .. 2024-12-30; median 0 per week, 0 per month; DORA deployment "
            "frequency: less than once per month; change failure rate 19.05% (4 failed)") in out
    assert "Warnings: 1\n  first imported deployment of each entity: 2" in out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed")
def test_page_renders_in_headless_chromium(tmp_path, run_cli):
    from matplotlib import image

    page = tmp_path / "report.html"
    code, _, err = run_cli("preview", SAMPLE_CSV, "-m", SAMPLE_MAPPING, "--show", "0", "--report", page)
    assert (code, err) == (ExitStatus.OK, "")
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]  # no network: the page is offline
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<svg") == 5  # all and the sample's 4 entity / environment pairs
    assert "Warnings (1)" in dom and "DORA figures" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    pixels = image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    ink = (pixels.mean(axis=2) < 0.6).mean()  # dark pixels: text, axes, bars
    assert ink > 0.01, "the page rendered blank"
    green = ((pixels[..., 1] > 0.5) & (pixels[..., 0] < 0.3) & (pixels[..., 2] < 0.4)).sum()
    assert green > 50, "no success bars visible"


# --- exports: lead time from GitLab and Jenkins commit times, truncation ---------------------------

def test_gitlab_lead_time_from_deployable_commit_created_at(tmp_path, run_cli):
    sample, mapping = ROOT / "samples" / "gitlab-deployments.json", ROOT / "mappings" / "gitlab.yaml"
    code, _, err = run_cli("preview", sample, "-m", mapping, "--entity-id", "payments", "--show", "0",
                           "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    data = json.loads((tmp_path / "r.json").read_text())
    hours, text, at, decoder = [], sample.read_text(), 0, json.JSONDecoder()
    deployments = []
    while text[at:].strip():  # the sample is pages appended one after another
        page, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
        deployments += page
    for d in deployments:
        job = d.get("deployable") or {}
        status = d.get("status") or job.get("status")
        commit = (job.get("commit") or {}).get("created_at")
        when = job.get("finished_at") or d.get("finished_at") or d.get("updated_at") or d.get("created_at")
        if status == "success" and commit:
            lead = (datetime.fromisoformat(when.replace("Z", "+00:00")).replace(microsecond=0)
                    - datetime.fromisoformat(commit.replace("Z", "+00:00"))).total_seconds() / 3600
            hours.append(lead)
    assert hours, "the sample has commit times"
    lead = data["all"]["lead_time"]
    assert lead["deployments_with_commit_time"] == len(hours)
    assert lead["median_hours"] == round(statistics.median(hours), 2)


def jenkins_job(name: str, numbers: range, changes: bool = False) -> dict:
    base = 1_700_000_000_000
    builds = []
    for n in numbers:
        build = {"number": n, "result": "SUCCESS", "building": False, "timestamp": base + n * 3_600_000,
                 "duration": 60_000, "url": f"https://ci/job/{name}/{n}/"}
        if changes:
            build["changeSets"] = [{"items": [{"commitId": f"c{n}", "timestamp": base + n * 3_600_000 - 7_200_000}]}]
            build["actions"] = [{"lastBuiltRevision": {"SHA1": f"c{n}"}, "remoteUrls": ["https://git/app.git"]}]
        builds.append(build)
    return {"fullName": name, "url": f"https://ci/job/{name}/", "builds": builds}


def test_jenkins_truncation_and_change_set_lead_time(tmp_path, run_cli):
    export = tmp_path / "jobs.json"
    export.write_text(json.dumps({"jobs": [jenkins_job("capped", range(1, 101)), jenkins_job("late", range(40, 45)),
                                           jenkins_job("whole", range(1, 4), changes=True)]}))
    code, out, err = run_cli("preview", export, "-m", ROOT / "mappings" / "jenkins.yaml", "--entity-id", "payments",
                             "--set", "env=production", "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    data = json.loads((tmp_path / "r.json").read_text())
    truncated = next(w for w in data["warnings"] if w["code"] == "truncated")
    assert truncated["count"] == 2
    details = [e["detail"] for e in truncated["examples"]]
    assert any("job 'capped' has exactly 100 builds" in d for d in details)
    assert any("job 'late': the history starts at #40: builds #1-#39 are not in the export" in d for d in details)
    assert data["all"]["lead_time"] == {"deployments_with_commit_time": 3, "median_hours": 2.02, "p90_hours": 2.02}
    assert "same_build" not in {w["code"] for w in data["warnings"]}  # build numbers repeat across jobs: fine


def test_gitlab_last_page_of_exactly_100(tmp_path, run_cli):
    def page(start: int, n: int) -> list[dict]:
        return [{"id": i, "iid": i, "sha": f"s{i}", "status": "success", "created_at": f"2024-01-01T00:00:{i % 60:02d}Z",
                 "environment": {"name": "production"}, "deployable": None} for i in range(start, start + n)]
    full = tmp_path / "full.json"
    full.write_text(json.dumps(page(0, 100)) + json.dumps(page(100, 100)))
    ends = tmp_path / "ends.json"
    ends.write_text(json.dumps(page(0, 100)) + json.dumps(page(100, 7)))
    code, out, err = run_cli("preview", full, ends, "-m", ROOT / "mappings" / "gitlab.yaml", "--entity-id", "p",
                             "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    truncated = next(w for w in json.loads((tmp_path / "r.json").read_text())["warnings"] if w["code"] == "truncated")
    assert [(e["file"], e["detail"]) for e in truncated["examples"]] == [
        (str(full), "its last page holds exactly 100 deployments and no page follows (2 pages): fetch the next page")]
    assert f"{full}: its last page holds exactly 100 deployments" in out


def test_nothing_planned_still_writes_a_report(tmp_path, run_cli):
    csv, yaml = write_fixture(tmp_path, [("api", "production", "not a time", "success", "1", "s", "")])
    for name in ("r.json", "r.html"):
        code, out, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--report", tmp_path / name)
        assert (code, err) == (ExitStatus.OK, "")
        assert "History (what DevGrid will show; ISO weeks and months in UTC):\n  no events planned\nWarnings: none" in out
    assert json.loads((tmp_path / "r.json").read_text())["all"] is None
    assert "No events planned." in (tmp_path / "r.html").read_text()


def test_github_runs_file_holding_fewer_runs_than_total_count(tmp_path, run_cli):
    def page(total: int, ids: range) -> dict:
        return {"total_count": total, "workflow_runs": [
            {"id": i, "run_number": i, "run_attempt": 1, "status": "completed", "conclusion": "success",
             "head_sha": f"s{i}", "updated_at": f"2024-06-0{1 + i % 5}T10:00:00Z",
             "head_commit": {"id": f"s{i}", "timestamp": f"2024-06-0{1 + i % 5}T08:00:00Z"}} for i in ids]}
    short, whole = tmp_path / "short.json", tmp_path / "whole.json"
    short.write_text(json.dumps(page(5, range(1, 3))) + "\n" + json.dumps(page(5, range(3, 5))))
    whole.write_text(json.dumps(page(2, range(10, 12))))
    code, out, err = run_cli("preview", short, whole, "-m", ROOT / "mappings" / "github-actions.yaml", "--entity-id", "p",
                             "--show", "0", "--report", tmp_path / "r.json")
    assert (code, err) == (ExitStatus.OK, "")
    data = json.loads((tmp_path / "r.json").read_text())
    truncated = next(w for w in data["warnings"] if w["code"] == "truncated")
    assert [(e["file"], e["detail"]) for e in truncated["examples"]] == [
        (str(short), "total_count is 5 but the file holds 4 runs in 2 pages: fetch the remaining pages (gh api --paginate)")]
    assert data["all"]["lead_time"]["median_hours"] == 2  # head_commit.timestamp, two hours before each run ended

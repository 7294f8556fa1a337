"""`backfill init INPUT... > my.yaml`: a starter mapping that passes check-mapping and previews
without edits where the files leave no doubt; candidates and ADAPT notes where they do."""

from __future__ import annotations

import shutil

import pytest
import yaml

from backfill import shipped
from backfill.errors import ExitStatus
from conftest import ROOT

AWARE = """\
Service,Environment,Status,Build,Commit,Started,Finished,URL,Triggered By
api,production,success,1001,3f2a9c1d8e7b6a5f4c3d2e1f0a9b8c7d6e5f4a3b,2024-03-01T10:00:00Z,2024-03-01T10:05:00Z,https://ci.example.com/b/1001,alice
api,staging,failed,1002,9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c,2024-03-02T10:00:00+01:00,2024-03-02T10:07:00+01:00,https://ci.example.com/b/1002,bob
web,production,success,77,c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0,2024-03-03T09:00:00Z,2024-03-03T09:04:00Z,https://ci.example.com/b/77,alice
web,production,canceled,78,d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1,2024-03-04T09:00:00Z,,https://ci.example.com/b/78,carol
web,production,success,78,d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1,2024-03-04T09:10:00Z,2024-03-04T09:15:00Z,https://ci.example.com/b/78,carol
web,prod,Succeeded,79,e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2,2024-03-05T09:10:00Z,2024-03-05T09:15:00Z,https://ci.example.com/b/79,dave
"""


def init(run_cli, tmp_path, *inputs, name="my.yaml", rows=None):
    args = ["init", *inputs] + (["--rows", str(rows)] if rows else [])
    code, out, err = run_cli(*args)
    assert (code, err) == (ExitStatus.OK, ""), err
    path = tmp_path / name
    path.write_text(out, encoding="utf-8")
    return path, out


def code_of(text: str) -> dict:
    return yaml.safe_load(text)


def test_unambiguous_csv_checks_and_previews_without_edits(run_cli, tmp_path, write):
    data = write(tmp_path, "deploys.csv", AWARE)
    mapping, out = init(run_cli, tmp_path, data)
    assert out.splitlines()[0] == shipped.schema_modeline()
    doc = code_of(out)
    assert doc["source"] == {"format": "csv", "delimiter": ",", "timezone": "UTC"}
    assert doc["timestamp"] == {"from": ["Finished", "Started"]}
    attributes = doc["attributes"]
    assert attributes["status"] == {"from": "Status", "lookup": {"Succeeded": "success", "failed": "failed", "success": "success"}}
    assert attributes["env"] == {"from": "Environment", "lookup": {"prod": "production", "production": "production", "staging": "staging"}}
    assert attributes["build_id"] == "Build" and attributes["build_commit_sha"] == "Commit"
    assert attributes["build_url"] == "URL" and attributes["initiator"] == "Triggered By"
    assert attributes["deployment_start_time"] == {"from": "Started"}
    assert doc["entityId"] == {"from": "Service", "lookup": {"api": "api", "web": "web"}}
    assert doc["filter"] == [{"field": "Status", "not_in": ["canceled"]}]
    assert doc["dedupe"] == ["Service", "Build"]
    code, check, _ = run_cli("check-mapping", mapping)
    assert code == ExitStatus.OK and check.startswith(f"{mapping}: OK (format csv, 7 attributes, 1 filter rules")
    code, preview, err = run_cli("preview", data, "-m", mapping, "--strict", "--show", "0")
    assert code == ExitStatus.OK, err
    assert "Rows: 6 read = 5 planned + 1 filtered + 0 duplicates + 0 invalid" in preview


def test_every_line_says_what_was_found(run_cli, tmp_path, write):
    _, out = init(run_cli, tmp_path, write(tmp_path, "deploys.csv", AWARE))
    for line in out.splitlines():
        assert line.lstrip().startswith("#") or " # " in line, line
    assert "# Status: 4 distinct values; 100% of the rows hold status words" in out
    assert "# Commit: 100% are 40-hex SHAs" in out
    assert "# Finished: 100% of the values read as ISO 8601, e.g. '2024-03-01T10:05:00Z'" in out


def test_naive_times_ask_for_the_zone_with_the_dst_caveat(run_cli, tmp_path):
    sample = shutil.copy(ROOT / "samples" / "release-log.csv", tmp_path / "log.csv")
    mapping, out = init(run_cli, tmp_path, sample)
    assert "  timezone: ADAPT" in out and "DST" in out
    doc = code_of(out)
    assert doc["source"]["delimiter"] == ";"
    assert doc["timestamp"] == {"from": ["finished_at", "started_at"], "format": "%d.%m.%Y %H:%M"}
    assert doc["attributes"]["build_id"] == "build"
    assert doc["attributes"]["status"]["lookup"]["FAILED"] == "failed"
    assert "ADAPT: not recognised, so rows with them are invalid: Succes" in out
    assert doc["filter"] == [{"field": "result", "not_in": ["ABORTED"]}]
    code, _, err = run_cli("check-mapping", mapping)
    assert code == ExitStatus.BAD_INPUT and "unknown time zone 'ADAPT'" in err
    mapping.write_text(out.replace("timezone: ADAPT", "timezone: Europe/Berlin"), encoding="utf-8")
    code, preview, err = run_cli("preview", sample, "-m", mapping, "--show", "0")
    assert code == ExitStatus.OK, err
    assert "Rows: 29 read = " in preview and "does not exist in Europe/Berlin" in preview


@pytest.mark.parametrize("mapping", [m for m in shipped.shipped_mappings() if m.format not in ("csv", "json", "ndjson")],
                         ids=lambda m: m.name)
def test_known_exports_start_from_their_shipped_mapping(run_cli, tmp_path, mapping):
    data = shutil.copy(mapping.sample, tmp_path / "export.json")  # the name says nothing: the content does
    path, out = init(run_cli, tmp_path, data)
    assert out.splitlines()[0] == shipped.schema_modeline()
    assert f"so this is the shipped mapping {mapping.name} " in out
    assert code_of(out) == code_of(mapping.path.read_text(encoding="utf-8"))
    assert run_cli("check-mapping", path)[0] == ExitStatus.OK
    code, _, err = run_cli("preview", data, "-m", path, "--show", "0", "--entity-id", "app-1")
    assert code == ExitStatus.OK, err


def test_json_records_inside_an_object_and_ndjson(run_cli, tmp_path, write):
    rows = [{"app": "api", "finished": f"2024-03-0{i}T10:00:00Z", "result": "success" if i % 2 else "failure",
             "run": {"number": i, "url": f"https://ci/{i}"}} for i in range(1, 6)]
    import json

    doc = write(tmp_path, "doc.json", json.dumps({"meta": {"n": 5}, "data": {"runs": rows}}))
    path, out = init(run_cli, tmp_path, doc)
    parsed = code_of(out)
    assert parsed["source"]["format"] == "json" and parsed["source"]["records"] == "data.runs"
    assert parsed["attributes"]["build_url"] == "run.url" and parsed["attributes"]["build_id"] == "run.number"
    assert run_cli("preview", doc, "-m", path, "--strict", "--show", "0")[0] == ExitStatus.OK
    lines = write(tmp_path, "runs.ndjson", "\n".join(json.dumps(r) for r in rows) + "\n")
    path, out = init(run_cli, tmp_path, lines, name="nd.yaml")
    assert code_of(out)["source"]["format"] == "ndjson"
    assert run_cli("preview", lines, "-m", path, "--strict", "--show", "0")[0] == ExitStatus.OK


def test_epoch_milliseconds_tab_delimiter_and_cp1252(run_cli, tmp_path, write):
    text = "job\twhen\tresult\tnote\n" + "".join(
        f"deploy\t{1709287200000 + i * 60000}\tSUCCESS\tcaf\u00e9 {i}\n" for i in range(5))
    data = write(tmp_path, "x.tsv", text, encoding="cp1252")
    path, out = init(run_cli, tmp_path, data)
    doc = code_of(out)
    assert doc["source"]["delimiter"] == "\\t" and doc["source"]["encoding"] == "cp1252"
    assert doc["timestamp"] == {"from": "when", "unit": "ms"}
    code, preview, err = run_cli("preview", data, "-m", path, "--strict", "--show", "0")
    assert code == ExitStatus.OK, err


def test_day_month_order_that_the_rows_cannot_tell_is_flagged(run_cli, tmp_path, write):
    data = write(tmp_path, "d.csv", "service,finished\na,01/02/2024 10:00\nb,03/04/2024 11:00\n")
    _, out = init(run_cli, tmp_path, data)
    assert "ADAPT: the values also read as %m/%d/%Y %H:%M: check the day/month order" in out


def test_only_the_first_rows_are_read(run_cli, tmp_path, write):
    text = "service,finished,status\n" + "".join(f"s{i % 3},2024-03-01T10:{i % 60:02d}:00Z,success\n" for i in range(500))
    _, out = init(run_cli, tmp_path, write(tmp_path, "big.csv", text), rows=20)
    assert "a starter mapping from the first 20 rows" in out
    assert "# the 3 values found" in out


def test_hostile_names_and_values_stay_valid_yaml(run_cli, tmp_path, write):
    text = ('"service: #1","fin\u2028ished","st""atus"\n'
            '"a\x1bb","2024-03-01T10:00:00Z","success"\n'
            '"yes","2024-03-02T10:00:00Z","failed"\n'
            '"- x","2024-03-03T10:00:00Z","success"\n')
    path, out = init(run_cli, tmp_path, write(tmp_path, "h.csv", text))
    assert "\x1b" not in out and "\u2028" not in out
    doc = code_of(out)
    assert doc["entityId"]["from"] == "service: #1"
    assert doc["timestamp"] == {"from": "fin\u2028ished"}
    assert set(doc["entityId"]["lookup"]) == {"yes", "- x"}  # a control character cannot be a constant
    assert run_cli("check-mapping", path)[0] == ExitStatus.OK


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("", "the file is empty"),
    ],
)
def test_unreadable_inputs_are_one_line(run_cli, tmp_path, content, message):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    code, out, err = run_cli("init", path)
    assert code == ExitStatus.BAD_INPUT and out == ""
    assert err.startswith("Error: ") and message in err and err.count("\n") == 1


def test_no_clear_timestamp_writes_the_candidates(run_cli, tmp_path, write):
    data = write(tmp_path, "p.csv", "service,finished\na,2024-03-01T10:00:00Z\nb,2024-03-02T10:00:00Z\nc,soon\n")
    _, out = init(run_cli, tmp_path, data)
    assert "timestamp: {from: CHANGE-ME}" in out
    assert "# candidate: finished: only 67% of the values read as ISO 8601, e.g. '2024-03-01T10:00:00Z'" in out

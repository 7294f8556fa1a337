"""`backfill preview` as a user runs it: exit codes, the summary, the files it writes, one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime

import pytest

from backfill.errors import ExitStatus

from conftest import ROOT, SAMPLE_CSV, SAMPLE_MAPPING

S, M = SAMPLE_CSV, SAMPLE_MAPPING
PAYMENTS = "8c0e4f3a-1d2b-4c5d-9e8f-0a1b2c3d4e5f"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def mapping_line(text: str) -> int:
    """The line of the shipped mapping that holds `text` (so expectations follow the file)."""
    lines = M.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if text in line)


def read_bodies(path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


# --- the shipped sample -------------------------------------------------------------------------

def test_sample_preview_summary(run_cli):
    code, out, err = run_cli("preview", S, "-m", M)
    assert (code, err) == (ExitStatus.OK, "")
    lines = out.splitlines()
    # derived from the sample's rows (see test_plan.test_sample_plan_accounts_for_every_row):
    # 29 rows = 21 planned + 3 filtered (rows 6, 7, 27) + 1 duplicate (row 9) + 4 invalid (12, 16, 20, 23)
    first, last = datetime(2019, 1, 2, 8, 31), datetime(2024, 12, 30, 8, 25)  # 09:31 and 09:25 CET
    expected_head = [
        f"Mapping {M} (format csv)",
        f"  {S}: 29 rows read",
        "Rows: 29 read = 21 planned + 3 filtered + 1 duplicates + 4 invalid",
        f"  skipped by filter environment in [prod, staging, stg] (line {mapping_line('field: environment')}): 1",
        f"  skipped by filter result not in [ABORTED, NOT_BUILT] (line {mapping_line('field: result')}): 1",
        f"  skipped by filter job matches '^deploy-' (line {mapping_line('field: job')}): 1",
        "  duplicates folded (same service, build; first kept): 1",
        "Invalid rows: 4",
        f"  {S} row 12: timestamp: '29.03.2020 02:35' does not exist in Europe/Berlin (clocks went forward for DST); "
        "fix the time or give it with an offset",
        f"  {S} row 16: attributes.status: 'Succes' is neither success nor failed; "
        "add a lookup to the status rule or a filter rule",
        f"  {S} row 20: timestamp: '31.10.2021 02:30' is ambiguous in Europe/Berlin (clocks went back for DST); "
        "give it with its offset: +02:00 the first time, +01:00 the second",
        f"  {S} row 23: entityId: 'search' is not in the lookup (known: payments, web); "
        f"add it to the lookup (line {mapping_line('from: service')}) or give a default",
        f"Date range: 2019-01-02T08:31:00Z .. 2024-12-30T08:25:00Z ({(last - first).days} days)",
        f"By entity: {PAYMENTS} 11, app-123 10",  # payments rows 2 3 8 13 15 18 19 22 24 28 30
        "By env: production 17, staging 4",  # staging: rows 3, 10, 15 (stg), 21
        "By status: success 17, failed 4",  # failed: rows 5, 10, 18, 25
    ]
    assert lines[: len(expected_head)] == expected_head
    assert lines[len(expected_head)].startswith("Requests: 2 (batches of up to 15); at the rate limits (100/min, 1500/h)")
    assert lines[len(expected_head) + 1] == "History (what DevGrid will show; ISO weeks and months in UTC):"
    assert lines[lines.index("Warnings: 1") + 4] == "Request 1 of 2 (15 events):"  # History and Warnings: test_report
    assert lines[-1] == "  ... and 12 more events in this request"


def test_sample_preview_shows_the_first_payload_exactly_as_written_to_out(run_cli, tmp_path):
    out_file = tmp_path / "payloads.jsonl"
    code, out, _ = run_cli("preview", S, "-m", M, "--out", out_file)
    assert code == 0
    shown = out.split("Request 1 of 2 (15 events):\n", 1)[1].split("\n  ... and", 1)[0]
    assert json.loads(shown) == {"events": read_bodies(out_file)[0]["events"][:3]}
    assert out.splitlines()[-1] == f"Wrote 2 request bodies (21 events) to {out_file}"


@pytest.mark.parametrize(("batch", "sizes"), [(None, [15, 6]), (4, [4, 4, 4, 4, 4, 1]), (15, [15, 6]), (1, [1] * 21)])
def test_out_writes_every_request_body(run_cli, tmp_path, batch, sizes):
    out_file = tmp_path / "payloads.jsonl"
    extra = ["--batch-size", batch] if batch else []
    code, _, err = run_cli("preview", S, "-m", M, "--show", "0", "--out", out_file, *extra)
    assert (code, err) == (0, "")
    raw = out_file.read_text(encoding="utf-8")
    assert raw.endswith("\n") and len(raw.splitlines()) == len(sizes)
    bodies = read_bodies(out_file)
    assert [len(b["events"]) for b in bodies] == sizes
    events = [e for b in bodies for e in b["events"]]
    assert all(list(b) == ["events"] for b in bodies)
    for event in events:
        assert list(event) == ["type", "timestamp", "entityId", "attributes"]
        assert event["type"] == "event-deploy"
        assert TIMESTAMP.fullmatch(event["timestamp"])
        assert event["entityId"] in (PAYMENTS, "app-123")
        assert all(isinstance(v, str) and v for v in event["attributes"].values())
        assert TIMESTAMP.fullmatch(event["attributes"]["deployment_start_time"])
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    assert not list(tmp_path.glob(".*partial"))


def test_out_is_the_same_on_every_run(run_cli, tmp_path):
    run_cli("preview", S, "-m", M, "--show", "0", "--out", tmp_path / "a.jsonl")
    run_cli("preview", S, "-m", M, "--show", "0", "--out", tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_invalid_out_is_json_lines(run_cli, tmp_path):
    invalid = tmp_path / "invalid.jsonl"
    code, out, _ = run_cli("preview", S, "-m", M, "--show", "0", "--invalid-out", invalid)
    assert code == 0
    assert out.splitlines()[-1] == f"Wrote 4 invalid rows to {invalid}"
    rows = [json.loads(line) for line in invalid.read_text(encoding="utf-8").splitlines()]
    assert [(r["file"], r["row"]) for r in rows] == [(str(S), 12), (str(S), 16), (str(S), 20), (str(S), 23)]
    assert all(list(r) == ["file", "row", "reason", "values"] for r in rows)
    assert rows[1]["reason"].startswith("attributes.status: 'Succes' is neither")
    # row 23 of the sample, every non-empty source value
    assert rows[3]["values"] == {
        "service": "search", "environment": "prod", "result": "success", "build": "7",
        "sha": "b5c6d7e8f90123456789012345678ab1c2d3e4f5", "started_at": "19.09.2022 11:00",
        "finished_at": "19.09.2022 11:04", "deployed_by": "li.chen", "job": "deploy-search",
        "notes": "new service, not in DevGrid yet",
    }


def test_strict_exits_4_after_the_preview(run_cli, tmp_path):
    code, out, err = run_cli("preview", S, "-m", M, "--strict", "--out", tmp_path / "p.jsonl")
    assert code == ExitStatus.INVALID_ROWS == 4
    assert err == "Error: 4 invalid rows and --strict is set; fix them or drop --strict\n"
    assert "Rows: 29 read" in out and (tmp_path / "p.jsonl").exists()


def test_strict_without_invalid_rows_is_ok(run_cli, write, tmp_path):
    data = write(tmp_path, "in.csv", "service,finished,result\nweb,2023-01-01T00:00:00Z,ABORTED\nweb,2023-01-02,ok\n")
    mapping = write(tmp_path, "m.yaml", "entityId: service\ntimestamp: finished\n"
                                        "filter:\n  - {field: result, not_in: [ABORTED]}\n")
    code, out, err = run_cli("preview", data, "-m", mapping, "--strict")
    assert (code, err) == (0, "")
    assert "Rows: 2 read = 1 planned + 1 filtered + 0 duplicates + 0 invalid" in out


def test_since_until(run_cli):
    code, out, _ = run_cli("preview", S, "-m", M, "--since", "2020-01-01", "--until", "2021-01-01", "--show", "0")
    assert code == 0
    # of the 22 valid rows (21 planned + the duplicate) only rows 15 and 17 fall in 2020
    assert "Rows: 29 read = 2 planned + 3 filtered + 0 duplicates + 4 invalid + 20 outside --since/--until" in out
    assert "Date range: 2020-01-08T09:24:00Z .. 2020-03-29T01:25:00Z (80 days)" in out


def test_entity_id_and_set_override_the_mapping(run_cli, tmp_path):
    out_file = tmp_path / "p.jsonl"
    code, out, _ = run_cli("preview", S, "-m", M, "--entity-id", "app-999", "--set", "env=production",
                           "--set", "change_id=CHG-1", "--show", "0", "--out", out_file)
    assert code == 0
    # row 23 (service "search") was invalid only for its entity lookup
    assert "Rows: 29 read = 22 planned + 3 filtered + 1 duplicates + 3 invalid" in out
    assert "By entity: app-999 22" in out and "By env: production 22" in out
    events = [e for b in read_bodies(out_file) for e in b["events"]]
    assert {e["entityId"] for e in events} == {"app-999"}
    assert {(e["attributes"]["env"], e["attributes"]["change_id"]) for e in events} == {("production", "CHG-1")}


def test_several_input_files_each_row_remembers_its_file(run_cli, write, tmp_path):
    header = S.read_text(encoding="utf-8").splitlines()[0]
    more = write(tmp_path, "more.csv", header + "\n"
                 # same service and build as sample row 2: a duplicate across files
                 "payments;prod;success;101;aaaa;02.01.2019 09:12;02.01.2019 09:31;x;deploy-payments;\n"
                 "web;prod;success;68;bbbb;01.01.2025 10:00;01.01.2025 10:05;y;deploy-web;\n"
                 "web;prod;exploded;69;cccc;02.01.2025 10:00;02.01.2025 10:05;y;deploy-web;\n")
    invalid = tmp_path / "invalid.jsonl"
    code, out, _ = run_cli("preview", S, more, "-m", M, "--show", "0", "--invalid-out", invalid)
    assert code == 0
    assert f"  {S}: 29 rows read\n  {more}: 3 rows read\n" in out
    assert "Rows: 32 read = 22 planned + 3 filtered + 2 duplicates + 5 invalid" in out
    assert f"  {more} row 4: attributes.status: 'exploded' is neither" in out
    rows = [json.loads(line) for line in invalid.read_text(encoding="utf-8").splitlines()]
    assert [(r["file"], r["row"]) for r in rows][-1] == (str(more), 4)


def test_ndjson_preview_reports_lines(run_cli, write, tmp_path):
    mapping = write(tmp_path, "m.yaml", "source: {format: ndjson}\nentityId: app\ntimestamp: {from: at, unit: ms}\n")
    data = write(tmp_path, "in.ndjson", '{"app": "a", "at": 1681109507000}\n\nnot json\n')
    invalid = tmp_path / "invalid.jsonl"
    code, out, _ = run_cli("preview", data, "-m", mapping, "--invalid-out", invalid, "--show", "0")
    assert code == 0
    assert f"  {data} line 3: invalid JSON at column 1: Expecting value" in out
    assert json.loads(invalid.read_text(encoding="utf-8")) == {
        "file": str(data), "line": 3, "reason": "invalid JSON at column 1: Expecting value", "values": {"text": "not json"},
    }


def test_show_controls_the_pretty_printed_requests(run_cli):
    _, out, _ = run_cli("preview", S, "-m", M, "--show", "0")
    assert "Request 1" not in out
    _, out, _ = run_cli("preview", S, "-m", M, "--show", "2", "--batch-size", "4")
    assert "Request 1 of 6 (4 events):" in out and "Request 2 of 6 (4 events):" in out and "Request 3" not in out


def test_no_events_is_not_an_error(run_cli, write, tmp_path):
    data = write(tmp_path, "in.csv", "service,finished\nweb,junk\n")
    mapping = write(tmp_path, "m.yaml", "entityId: service\ntimestamp: finished\n")
    out_file = tmp_path / "p.jsonl"
    code, out, _ = run_cli("preview", data, "-m", mapping, "--out", out_file)
    assert code == 0
    assert "Rows: 1 read = 0 planned + 0 filtered + 0 duplicates + 1 invalid" in out
    assert "No events to send." in out
    assert out_file.read_text(encoding="utf-8") == ""


# --- errors: one line on stderr, the documented exit status, never a traceback -----------------

ERRORS = [
    # (name, files to write, arguments, exit status, stderr without "Error: ")
    ("missing input", {}, ["preview", "{tmp}/nope.csv", "-m", M], 3, "{tmp}/nope.csv: no such file"),
    ("missing mapping", {}, ["preview", S, "-m", "{tmp}/nope.yaml"], 3, "{tmp}/nope.yaml: no such mapping file"),
    ("bad yaml", {"m.yaml": "entityId: service\ntimestamp: [finished\n"}, ["preview", S, "-m", "{tmp}/m.yaml"], 3,
     "{tmp}/m.yaml, line 3, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("unknown format", {"m.yaml": "source:\n  format: xml\ntimestamp: t\n"}, ["preview", S, "-m", "{tmp}/m.yaml"], 3,
     "{tmp}/m.yaml, line 2: source.format: unknown format 'xml'; use one of csv, json, ndjson, jenkins, gitlab, github-actions, github-deployments"),
    ("unknown attribute", {"m.yaml": "timestamp: t\nattributes:\n  build_sha: sha\n"},
     ["preview", S, "-m", "{tmp}/m.yaml"], 3,
     "{tmp}/m.yaml, line 3: attributes: unknown attribute 'build_sha'; did you mean 'build_commit_sha'?"),
    ("column the input lacks",
     {"m.yaml": "source: {delimiter: ';'}\nentityId: service\ntimestamp: finished\n"},
     ["preview", S, "-m", "{tmp}/m.yaml"], 3,
     f"{S}: {{tmp}}/m.yaml: timestamp reads 'finished', which the input lacks (it has: 'build', 'deployed_by', "
     "'environment', 'finished_at', 'job', 'notes', 'result', 'service', 'sha', 'started_at')"),
    ("unreadable csv", {"in.csv": "a,b\n1,2\n3,4,5\n", "m.yaml": "entityId: a\ntimestamp: b\n"},
     ["preview", "{tmp}/in.csv", "-m", "{tmp}/m.yaml"], 3,
     "{tmp}/in.csv: cannot parse CSV with delimiter ',': Expected 2 fields in line 3, saw 3; "
     "check the quoting of that row or set source.delimiter"),
    ("wrong encoding", {"in.csv": "a,b\nJ\xfcrgen,2\n".encode("latin-1"), "m.yaml": "entityId: a\ntimestamp: b\n"},
     ["preview", "{tmp}/in.csv", "-m", "{tmp}/m.yaml"], 3,
     "{tmp}/in.csv: not valid UTF-8 text (byte 5); set source.encoding in the mapping (e.g. latin-1, cp1252)"),
    ("invalid json", {"in.json": '[{"a": 1},\n {"a": }]', "m.yaml": "source: {format: json}\nentityId: a\ntimestamp: a\n"},
     ["preview", "{tmp}/in.json", "-m", "{tmp}/m.yaml"], 3, "{tmp}/in.json: invalid JSON at line 2, column 8: Expecting value"),
    ("unknown --set attribute", {}, ["preview", S, "-m", M, "--set", "Env=prod"], 2,
     "--set Env=prod: unknown attribute 'Env' (did you mean 'env'?)"),
    ("--set status not a status", {}, ["preview", S, "-m", M, "--set", "status=ok"], 2,
     "--set status=ok: status must be 'success' or 'failed', not 'ok'"),
    ("--set without =", {}, ["preview", S, "-m", M, "--set", "env"], 2,
     "backfill preview: argument --set: expected NAME=VALUE, got 'env' (see backfill preview --help)"),
    ("--set without name", {}, ["preview", S, "-m", M, "--set", "=x"], 2,
     "backfill preview: argument --set: expected NAME=VALUE, got '=x' (see backfill preview --help)"),
    ("--batch-size 0", {}, ["preview", S, "-m", M, "--batch-size", "0"], 2,
     "backfill preview: argument --batch-size: must be between 1 and 15 (the API's maximum) (see backfill preview --help)"),
    ("--batch-size 16", {}, ["preview", S, "-m", M, "--batch-size", "16"], 2,
     "backfill preview: argument --batch-size: must be between 1 and 15 (the API's maximum) (see backfill preview --help)"),
    ("--batch-size text", {}, ["preview", S, "-m", M, "--batch-size", "many"], 2,
     "backfill preview: argument --batch-size: not a number: 'many' (see backfill preview --help)"),
    ("--since not a date", {}, ["preview", S, "-m", M, "--since", "last year"], 2,
     "backfill preview: argument --since: not a date: 'last year'; use YYYY-MM-DD or an ISO 8601 date-time such as "
     "2023-04-10T08:00:00Z (UTC unless it has an offset), in the years 1900-2199 (see backfill preview --help)"),
    ("no mapping option", {}, ["preview", S], 2,
     "backfill preview: the following arguments are required: -m/--mapping (see backfill preview --help)"),
    ("unknown command", {}, ["peek", S], 2,
     "backfill: argument COMMAND: invalid choice: 'peek' (choose from "),
    ("--out into a missing directory", {}, ["preview", S, "-m", M, "--out", "{tmp}/no/dir/p.jsonl"], 2,
     "backfill preview: argument --out: {tmp}/no/dir/p.jsonl: no such directory '{tmp}/no/dir' (see backfill preview --help)"),
    ("--invalid-out into a missing directory", {}, ["preview", S, "-m", M, "--invalid-out", "{tmp}/no/i.jsonl"], 2,
     "backfill preview: argument --invalid-out: {tmp}/no/i.jsonl: no such directory '{tmp}/no' "
     "(see backfill preview --help)"),
    ("no entityId", {"m.yaml": "source: {delimiter: ';'}\ntimestamp: finished_at\n"}, ["preview", S, "-m", "{tmp}/m.yaml"], 3,
     "{tmp}/m.yaml: no entityId rule; add `entityId: {from: FIELD}` or pass --entity-id"),
]


@pytest.mark.parametrize(("files", "args", "status", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_one_line(run_cli, write, tmp_path, files, args, status, message):
    for name, text in files.items():
        write(tmp_path, name, text)
    code, _, err = run_cli(*[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    assert code == status
    expected = "Error: " + message.replace("{tmp}", str(tmp_path))
    assert err.count("\n") == 1 and err.endswith("\n")
    if args[0] == "peek":  # the list of commands grows as other commands land; quoting varies by Python
        assert err.startswith(expected)
    else:
        assert err == expected + "\n"


def test_exit_statuses_are_the_documented_ones():
    assert (ExitStatus.OK, ExitStatus.USAGE, ExitStatus.BAD_INPUT, ExitStatus.INVALID_ROWS) == (0, 2, 3, 4)


def test_no_command_prints_help(run_cli):
    code, out, _ = run_cli()
    assert code == ExitStatus.USAGE
    assert out.startswith("usage: backfill") and "preview" in out and "check-mapping" in out


def test_help_and_version(run_cli):
    code, out, _ = run_cli("preview", "--help")
    assert code == 0 and "--batch-size" in out and "--invalid-out" in out
    code, out, _ = run_cli("--version")
    assert (code, out) == (0, "backfill 0.1.0\n")


def test_python_dash_m_backfill(tmp_path):
    out_file = tmp_path / "p.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "preview", str(S), "-m", str(M), "--show", "0", "--out", str(out_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "Rows: 29 read = 21 planned + 3 filtered + 1 duplicates + 4 invalid" in done.stdout
    assert [len(b["events"]) for b in read_bodies(out_file)] == [15, 6]


def test_only_the_first_20_invalid_rows_are_listed(run_cli, write, tmp_path):
    data = write(tmp_path, "in.csv", "service,finished\n" + "".join(f"web,bad{i}\n" for i in range(25)))
    mapping = write(tmp_path, "m.yaml", "entityId: service\ntimestamp: finished\n")
    invalid = tmp_path / "invalid.jsonl"
    code, out, _ = run_cli("preview", data, "-m", mapping, "--invalid-out", invalid)
    assert code == 0
    assert "Invalid rows: 25 (first 20 shown)" in out
    listed = re.findall(rf"^  {re.escape(str(data))} row (\d+): ", out, flags=re.M)
    assert listed == [str(n) for n in range(2, 22)]
    assert len(invalid.read_text(encoding="utf-8").splitlines()) == 25  # the file has them all


def test_a_reader_that_stops_early_changes_neither_the_work_nor_the_exit_code(tmp_path):
    """`backfill preview ... | head -2`: the output file is still written whole and --strict
    still fails, although stdout went away."""
    out = tmp_path / "p.jsonl"
    shell = (
        f"{sys.executable} -m backfill preview {S} -m {M} --strict --show 3 --out {out} | head -2 > /dev/null;"
        " echo ${PIPESTATUS[0]}"
    )
    done = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.strip() == str(int(ExitStatus.INVALID_ROWS))
    assert "Traceback" not in done.stderr
    assert len(out.read_text().splitlines()) == 2  # 21 events in requests of 15 and 6


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (("--entity-id", " "), "argument --entity-id: empty entity id"),
        (("--set", "env="), "argument --set: env: empty value"),
        (("--since", "2024-01-01", "--until", "2023-01-01"), "--since 2024-01-01 00:00:00 is not before --until"),
    ],
)
def test_empty_overrides_and_an_empty_date_range_are_usage_errors(run_cli, option, message):
    code, out, err = run_cli("preview", S, "-m", M, *option)
    assert code == ExitStatus.USAGE
    assert message in err and err.count("\n") == 1


def test_set_values_are_stripped(run_cli, tmp_path):
    out = tmp_path / "p.jsonl"
    code, _, _ = run_cli("preview", S, "-m", M, "--set", "initiator=  bob ", "--out", out, "--show", "0")
    assert code == ExitStatus.OK
    first = json.loads(out.read_text().splitlines()[0])["events"][0]
    assert first["attributes"]["initiator"] == "bob"


def test_a_failed_write_of_out_is_one_error_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """The request bodies are written by a second thread: a write that fails there (a full disk)
    still ends the preview with the one --out error, and no partial file stays behind."""
    import builtins
    import errno

    from backfill import importer
    from backfill.errors import UsageError
    from backfill.mapping import load_mapping
    from backfill.plan import build_plan

    plan = build_plan([SAMPLE_CSV], load_mapping(SAMPLE_MAPPING))
    real_open = builtins.open

    class Full:
        def __init__(self, file):
            self.file = file

        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    def opening(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        return Full(file) if str(path).endswith(".partial") else file

    monkeypatch.setattr(builtins, "open", opening)
    target = tmp_path / "bodies.jsonl"
    with pytest.raises(UsageError, match=r"--out .*bodies.jsonl: cannot write: No space left on device"):
        importer.write_request_bodies(plan, target, 15)
    assert list(tmp_path.iterdir()) == []

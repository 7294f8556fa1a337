"""Hostile and careless input at the command line and in the mapping (issue 8): every case one
line naming the option, file or YAML line, the right exit status, no work done before it."""

from __future__ import annotations

import os

import pytest

from backfill.errors import ExitStatus
from backfill.events import ATTRIBUTES

from conftest import SAMPLE_CSV, SAMPLE_MAPPING

S, M = str(SAMPLE_CSV), str(SAMPLE_MAPPING)
DATE_HINT = (
    "use YYYY-MM-DD or an ISO 8601 date-time such as 2023-04-10T08:00:00Z (UTC unless it has an offset), "
    "in the years 1900-2199"
)


# --- --since / --until ---------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--since", "--until"])
@pytest.mark.parametrize(
    "value", ["", " ", "nat", "NaT", "NaN", "none", "now", "today", "tomorrow", "yesterday", "0", "20230410",
              "2023-13-01", "2023-02-30", "1850-01-01", "2500-01-01", "10/04/2023", "1e9", "inf", "2023-04-10 25:00"],
)
def test_a_date_option_that_is_not_a_real_date_is_a_usage_error(run_cli, option, value):
    code, out, err = run_cli("preview", S, "-m", M, option, value)
    assert (code, out) == (ExitStatus.USAGE, "")
    assert err == f"Error: backfill preview: argument {option}: not a date: {value!r}; {DATE_HINT} (see backfill preview --help)\n"


@pytest.mark.parametrize(
    ("value", "kept"),
    [("2023", 10), ("2023-01-01", 10), ("2023-01-01T00:00:00Z", 10), ("2023-01-01T01:00:00+01:00", 10),
     ("1672531200", 10), (" 2023-01-01 ", 10)],
)
def test_real_dates_are_taken(run_cli, value, kept):
    code, out, _ = run_cli("preview", S, "-m", M, "--since", value, "--show", "0")
    assert code == ExitStatus.OK
    assert "outside --since/--until" in out


# --- --set -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("status=maybe", "--set status=maybe: status must be 'success' or 'failed', not 'maybe'"),
        ("foo=bar", "--set foo=bar: unknown attribute 'foo'; valid: " + ", ".join(ATTRIBUTES)),
        ("Status=success", "--set Status=success: unknown attribute 'Status' (did you mean 'status'?)"),
        ("change_window_start=tomorrow",
         "--set change_window_start=tomorrow: cannot read 'tomorrow' as a date-time; "
         "give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"),
        ("change_window_end=now",
         "--set change_window_end=now: cannot read 'now' as a date-time; "
         "give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"),
        ("deployment_start_time=1850-01-01T00:00:00Z",
         "--set deployment_start_time=1850-01-01T00:00:00Z: '1850-01-01T00:00:00Z' is outside the years 1900-2199; "
         "give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"),
        ("env=prod\rRows: 0", "--set env='prod\\rRows: 0': holds a control character"),
    ],
)
def test_a_bad_set_is_a_usage_error_naming_the_option(run_cli, pair, message):
    code, out, err = run_cli("preview", S, "-m", M, "--set", pair)
    assert (code, out) == (ExitStatus.USAGE, "")
    assert err == f"Error: {message}\n"


def test_a_bad_entity_id_is_a_usage_error(run_cli):
    code, _, err = run_cli("preview", S, "-m", M, "--entity-id", "app\x1b[2J")
    assert code == ExitStatus.USAGE
    assert err == "Error: --entity-id 'app\\x1b[2J': holds a control character\n"


# --- --out / --invalid-out ----------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--out", "--invalid-out"])
@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty file name (an unset shell variable?); give the file to write"),
        (" ", "empty file name (an unset shell variable?); give the file to write"),
        (".", ". is a directory; give a file name (e.g. ./out.jsonl)"),
        ("/", "/ is a directory; give a file name (e.g. /out.jsonl)"),
        ("{tmp}", "{tmp} is a directory; give a file name (e.g. {tmp}/out.jsonl)"),
        ("{tmp}/sub/", "{tmp}/sub/ is a directory; give a file name (e.g. {tmp}/sub/out.jsonl)"),
        ("{tmp}/none/x.jsonl", "{tmp}/none/x.jsonl: no such directory '{tmp}/none'"),
        ("{tmp}/file.txt/x.jsonl", "{tmp}/file.txt/x.jsonl: '{tmp}/file.txt' is not a directory"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_any_work(run_cli, tmp_path, option, value, problem):
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    value, problem = (t.replace("{tmp}", str(tmp_path)) for t in (value, problem))
    before = sorted(os.listdir(tmp_path))
    code, out, err = run_cli("preview", S, "-m", M, option, value)
    assert (code, out) == (ExitStatus.USAGE, "")
    assert err == f"Error: backfill preview: argument {option}: {problem} (see backfill preview --help)\n"
    assert sorted(os.listdir(tmp_path)) == before


def test_an_output_that_is_an_input_is_refused(run_cli, tmp_path):
    data = tmp_path / "in.csv"
    data.write_bytes(SAMPLE_CSV.read_bytes())
    for option in ("--out", "--invalid-out"):
        code, _, err = run_cli("preview", data, "-m", M, option, data)
        assert code == ExitStatus.USAGE
        assert err == f"Error: {option} {data}: is the input file {data}; writing it would destroy it\n"
    assert data.read_bytes() == SAMPLE_CSV.read_bytes()
    code, _, err = run_cli("preview", data, "-m", M, "--out", tmp_path / "x", "--invalid-out", tmp_path / "x")
    assert (code, err) == (ExitStatus.USAGE, f"Error: --invalid-out {tmp_path / 'x'}: --out writes the same file; give each its own\n")


# --- the same input twice -----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["same path", "other path", "symlink", "hardlink"])
def test_the_same_input_twice_is_an_error_naming_the_file(run_cli, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.csv").write_bytes(SAMPLE_CSV.read_bytes())
    second = {"same path": "a.csv", "other path": f"{tmp_path}/./a.csv", "symlink": "l.csv", "hardlink": "h.csv"}[how]
    if how == "symlink":
        os.symlink("a.csv", "l.csv")
    if how == "hardlink":
        os.link("a.csv", "h.csv")
    (tmp_path / "key").write_text("k", encoding="utf-8")
    upload = ["--target", "development", "--base-url", "http://127.0.0.1:9", "--api-key-file", "key", "--yes"]
    for command in (["preview"], ["import", *upload]):
        code, out, err = run_cli(command[0], "a.csv", second, "-m", M, *command[1:])
        what = "given twice" if how == "same path" else "the same file as a.csv"
        assert code == ExitStatus.USAGE and "rows read" not in out
        assert err == f"Error: input {second}: {what}; give each input file once (its rows would be planned twice)\n"


def test_inputs_that_are_copies_are_counted_and_warned(run_cli, tmp_path):
    (tmp_path / "a.csv").write_bytes(SAMPLE_CSV.read_bytes())
    (tmp_path / "b.csv").write_bytes(SAMPLE_CSV.read_bytes())
    code, out, _ = run_cli("preview", tmp_path / "a.csv", tmp_path / "b.csv", "-m", M, "--show", "0")
    assert code == ExitStatus.OK
    assert (
        f"Warning: {tmp_path / 'b.csv'}: 29 rows are copies of rows of {tmp_path / 'a.csv'} (the same value in every "
        "field); folded as duplicates only where the dedupe key is complete"
    ) in out.splitlines()
    assert "Rows: 58 read = 21 planned + 6 filtered + 23 duplicates + 8 invalid" in out

    no_dedupe = tmp_path / "m.yaml"
    no_dedupe.write_text("source: {delimiter: ';'}\nentityId: {value: app}\ntimestamp: {from: finished_at, format: '%d.%m.%Y %H:%M'}\n",
                         encoding="utf-8")
    lines = "service;finished_at\nweb;10.04.2023 08:00\napi;11.04.2023 08:00\n"
    (tmp_path / "c.csv").write_text(lines, encoding="utf-8")
    (tmp_path / "d.csv").write_text(lines + "web;12.04.2023 08:00\n", encoding="utf-8")
    code, out, _ = run_cli("preview", tmp_path / "c.csv", tmp_path / "d.csv", "-m", no_dedupe, "--show", "0")
    assert code == ExitStatus.OK
    assert (
        f"Warning: {tmp_path / 'd.csv'}: 2 rows are copies of rows of {tmp_path / 'c.csv'} (the same value in every "
        "field); planned again; if the exports overlap, add a dedupe: key to the mapping"
    ) in out.splitlines()


# --- mapping keys that preview could not use: refused by check-mapping and preview alike ---------------

TZ_DIRECTORY = "'Europe' is a region (a directory of zones), not a time zone; name a zone in it such as "
MAPPING_ERRORS = [
    ("source: {timezone: Europe}", "line 1: source.timezone: " + TZ_DIRECTORY + "Europe/Amsterdam, Europe/Andorra, Europe/Astrakhan"),
    ("source: {timezone: Europe/}", "line 1: source.timezone: 'Europe/' is a region (a directory of zones), not a time "
     "zone; name a zone in it such as Europe/Amsterdam, Europe/Andorra, Europe/Astrakhan"),
    ("source: {timezone: zone.tab}", "line 1: source.timezone: unknown time zone 'zone.tab'; use an IANA name like Europe/Berlin"),
    ("source: {timezone: /usr/share/zoneinfo/UTC}", "line 1: source.timezone: unknown time zone "
     "'/usr/share/zoneinfo/UTC'; use an IANA name like Europe/Berlin"),
    ("source: {timezone: ../../etc/passwd}", "line 1: source.timezone: unknown time zone '../../etc/passwd'; use an IANA name like Europe/Berlin"),
    ("source: {timezone: utc}", "line 1: source.timezone: unknown time zone 'utc'; did you mean 'UTC'?"),
    ("source: {timezone: Etc}", "line 1: source.timezone: 'Etc' is a region (a directory of zones), not a time zone; "
     "name a zone in it such as Etc/GMT, Etc/GMT+0, Etc/GMT+1"),
    ("timestamp2: {from: t, timezone: America}", None),  # see below: the rule's timezone
    ("source: {delimiter: \"\\n\"}", "line 1: source.delimiter: '\\n' is a line break: rows end there; use , ; | or \\t"),
    ("source: {delimiter: \"\\r\"}", "line 1: source.delimiter: '\\r' is a line break: rows end there; use , ; | or \\t"),
    ("source: {delimiter: '\"'}", "line 1: source.delimiter: '\"' is the quote character; use , ; | or \\t"),
    ("source: {delimiter: \"\\0\"}", "line 1: source.delimiter: '\\x00' is a control character; use , ; | or \\t "
     "(the CSV parser splits on one ASCII byte)"),
    ("source: {delimiter: \"§\"}", "line 1: source.delimiter: '§' is not an ASCII character; use , ; | or \\t "
     "(the CSV parser splits on one ASCII byte)"),
    ("source: {delimiter: \"，\"}", "line 1: source.delimiter: '，' is not an ASCII character; use , ; | or \\t "
     "(the CSV parser splits on one ASCII byte)"),
    ("source: {delimiter: ', '}", "line 1: source.delimiter: must be one character such as , ; | or \\t, not ', '"),
    ("source: {delimiter: x}", "line 1: source.delimiter: 'x' is a letter or digit, which would split values; use , ; | or \\t"),
    *[(f"source: {{encoding: {name}}}", f"line 1: source.encoding: '{name}' is not a text encoding (it is a codec that "
       "transforms data); use e.g. utf-8, latin-1, cp1252")
      for name in ("hex", "rot13", "rot_13", "base64", "zlib", "bz2", "uu", "quopri", "idna", "punycode", "unicode_escape")],
    ("source: {encoding: klingon}", "line 1: source.encoding: unknown encoding 'klingon'"),
]


@pytest.mark.parametrize(("section", "message"), [m for m in MAPPING_ERRORS if m[1]], ids=[m[0] for m in MAPPING_ERRORS if m[1]])
def test_check_mapping_refuses_what_preview_would_fail_on(run_cli, tmp_path, section, message):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(section + "\nentityId: {value: app}\ntimestamp: ts\n", encoding="utf-8")
    code, out, err = run_cli("check-mapping", mapping)
    assert (code, out) == (ExitStatus.BAD_INPUT, "")
    assert err == f"Error: {mapping}, {message}\n"
    code, out, err2 = run_cli("preview", S, "-m", mapping)
    assert (code, err2) == (ExitStatus.BAD_INPUT, err)


@pytest.mark.parametrize("key", ["timestamp", "attributes.deployment_start_time"])
def test_a_rules_zone_directory_is_refused(run_cli, tmp_path, key):
    rule = "{from: t, timezone: America}"
    text = f"timestamp: {rule}\n" if key == "timestamp" else f"timestamp: t\nattributes:\n  deployment_start_time: {rule}\n"
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text, encoding="utf-8")
    code, _, err = run_cli("check-mapping", mapping)
    assert code == ExitStatus.BAD_INPUT
    assert f"{key}.timezone: 'America' is a region (a directory of zones), not a time zone" in err


@pytest.mark.parametrize("depth", [1000, 20_000])
@pytest.mark.parametrize("shape", ["[", "{a: ", "- "])
def test_yaml_nested_thousands_deep_is_one_error_line(run_cli, tmp_path, depth, shape):
    closing = {"[": "]", "{a: ": "}", "- ": ""}[shape]
    body = shape * depth + "x" + closing * depth  # "- - - x" is block lists nested on one line
    mapping = tmp_path / "m.yaml"
    mapping.write_text("timestamp: t\nfilter: " + body + "\n", encoding="utf-8")
    code, out, err = run_cli("check-mapping", mapping)
    assert (code, out) == (ExitStatus.BAD_INPUT, "")
    assert err.startswith(f"Error: {mapping}") and err.count("\n") == 1


# --- constants are stripped like source values --------------------------------------------------------

@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("env: {value: '   '}", "line 4: attributes.env.value: empty value (only blanks)"),
        ("env: {value: \"\\t\"}", "line 4: attributes.env.value: empty value (only blanks)"),
        ("env: {from: e, lookup: {prod: '  '}}", "line 4: attributes.env.lookup.prod: empty output value (only blanks)"),
        ("env: {from: e, default: ' '}", "line 4: attributes.env.default: empty value (only blanks)"),
        ("env: {from: e, lookup: {prod: a, ' prod ': b}}", "line 4: attributes.env.lookup: 'prod' given twice (keys are compared stripped)"),
        ("env: {value: \"pr\\0od\"}", "line 4: attributes.env.value: 'pr\\x00od' holds a control character"),
        ("env: {value: \"\\e[2Jprod\"}", "line 4: attributes.env.value: '\\x1b[2Jprod' holds a control character"),
        ("build_id: {template: '{build:0>6}'}", "line 4: attributes.build_id.template: {build:0>6}: format specs and "
         "conversions are not supported; placeholders are plain field names like {build} (values are sent as the text they are)"),
        ("build_id: {template: 'x-{service!r}'}", "line 4: attributes.build_id.template: {service!r}: format specs and "
         "conversions are not supported; placeholders are plain field names like {service} (values are sent as the text they are)"),
        ("build_id: {template: '{a!s:>3}'}", "line 4: attributes.build_id.template: {a!s:>3}: format specs and "
         "conversions are not supported; placeholders are plain field names like {a} (values are sent as the text they are)"),
    ],
)
def test_constants_that_are_blank_or_hold_controls_are_refused(run_cli, tmp_path, rule, message):
    mapping = tmp_path / "m.yaml"
    mapping.write_text(f"entityId: svc\ntimestamp: ts\nattributes:\n  {rule}\n", encoding="utf-8")
    code, out, err = run_cli("check-mapping", mapping)
    assert (code, err) == (ExitStatus.BAD_INPUT, f"Error: {mapping}, {message}\n")


def test_constants_are_sent_stripped(run_cli, tmp_path):
    (tmp_path / "in.csv").write_text("svc,ts,e,who\napp,2023-04-10T10:00:00Z,prod,\napp,2023-04-10T11:00:00Z,stg,x\n",
                                     encoding="utf-8")
    (tmp_path / "m.yaml").write_text(
        "entityId: {value: '  app-1  '}\ntimestamp: ts\nattributes:\n"
        "  env: {from: e, lookup: {' prod ': '  production  '}, default: '  staging '}\n"
        "  initiator: {from: who, default: '  bot  '}\n  build_url: {template: '  https://ci/{svc}/  '}\n"
        "filter:\n  - {field: e, in: [' prod ', ' stg']}\n",
        encoding="utf-8",
    )
    code, _, err = run_cli("preview", tmp_path / "in.csv", "-m", tmp_path / "m.yaml", "--out", tmp_path / "o.jsonl")
    assert (code, err) == (ExitStatus.OK, "")
    events = [e for line in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()
              for e in __import__("json").loads(line)["events"]]
    assert [(e["entityId"], e["attributes"]) for e in events] == [
        ("app-1", {"env": "production", "build_url": "https://ci/app/", "initiator": "bot"}),
        ("app-1", {"env": "staging", "build_url": "https://ci/app/", "initiator": "x"}),
    ]


# --- nothing from input data reaches the terminal raw --------------------------------------------------

FORGERIES = ["\x1b[2J\x1b[HRows: 9 read = 9 planned", "\rRows: 9 read", "ab\x08\x08\x08xy", "a\x85b\x9bc",
             "\u202eevil\u202c", "tab\u2066x\u2069", "nul\x00byte", "bell\x07"]


@pytest.mark.parametrize("value", FORGERIES)
@pytest.mark.parametrize("where", ["entity", "reason", "column", "file"])
def test_control_characters_from_input_are_escaped_when_printed(run_cli, tmp_path, value, where):
    entity = value if where == "entity" else "app"
    stamp = value if where == "reason" else "2023-04-10T10:00:00Z"
    column = f"ts{value}" if where == "column" else "ts"
    import csv
    import io

    text = io.StringIO()
    csv.writer(text).writerows([["svc", column], [entity, stamp]])
    name = f"in{value}.csv" if where == "file" and "\x00" not in value else "in.csv"
    (tmp_path / name).write_text(text.getvalue(), encoding="utf-8")
    (tmp_path / "m.yaml").write_text("entityId: svc\ntimestamp: {from: ts}\n", encoding="utf-8")
    code, out, err = run_cli("preview", tmp_path / name, "-m", tmp_path / "m.yaml")
    for stream in (out, err):
        bad = [c for c in stream if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0
               or c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"]
        assert bad == []
    assert "Rows: 9" not in "".join(line for line in (out + err).splitlines() if line.startswith("Rows: 9"))


def test_a_nul_byte_makes_the_row_invalid(run_cli, tmp_path):
    (tmp_path / "in.csv").write_bytes(b"svc,ts,env\napp,2023-04-10T10:00:00Z,pr\x00od\napp,2023-04-10T11:00:00Z,prod\n")
    (tmp_path / "m.yaml").write_text("entityId: svc\ntimestamp: ts\nattributes:\n  env: env\n", encoding="utf-8")
    code, out, _ = run_cli("preview", tmp_path / "in.csv", "-m", tmp_path / "m.yaml", "--out", tmp_path / "o.jsonl",
                           "--invalid-out", tmp_path / "bad.jsonl")
    assert code == ExitStatus.OK
    assert f"  {tmp_path / 'in.csv'} row 2: attributes.env: 'pr\\x00od' holds a NUL character (\\x00); remove it from the input" in out
    assert b"\\u0000" not in (tmp_path / "o.jsonl").read_bytes()
    assert '"env": "pr\\u0000od"' in (tmp_path / "bad.jsonl").read_text(encoding="utf-8")


def test_a_long_value_is_cut_when_printed_and_whole_in_invalid_out(run_cli, tmp_path):
    long = "x" * 1_000_000
    (tmp_path / "in.csv").write_text(f"svc,ts\napp,{long}\n", encoding="utf-8")
    (tmp_path / "m.yaml").write_text("entityId: svc\ntimestamp: ts\n", encoding="utf-8")
    code, out, _ = run_cli("preview", tmp_path / "in.csv", "-m", tmp_path / "m.yaml", "--invalid-out", tmp_path / "bad.jsonl")
    assert code == ExitStatus.OK
    (line,) = [text for text in out.splitlines() if " row 2: " in text]
    assert len(line) < 600 and "characters]…" in line and line.endswith("(e.g. \"%d.%m.%Y %H:%M\")")
    assert long in (tmp_path / "bad.jsonl").read_text(encoding="utf-8")


# --- ISO 8601 forms pandas does not read ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2023-W15-1T10:00:00Z", "2023-04-10T10:00:00Z"),
        ("2023W151T10:00:00Z", "2023-04-10T10:00:00Z"),
        ("2023-W15-1 12:00:00+02:00", "2023-04-10T10:00:00Z"),
        ("2023-W15", "2023-04-10T00:00:00Z"),
        ("2020-W53-7", "2021-01-03T00:00:00Z"),
        ("2009-W01-1T00:00:00Z", "2008-12-29T00:00:00Z"),
        ("2023-100T10:00:00Z", "2023-04-10T10:00:00Z"),
        ("2024-366", "2024-12-31T00:00:00Z"),
        ("2023-04-10T06:51:47,5Z", "2023-04-10T06:51:47Z"),
        ("2023-04-10 08:51:47,25+02:00", "2023-04-10T06:51:47Z"),
    ],
)
def test_week_ordinal_and_decimal_comma_forms_are_read(value, utc):
    from backfill.normalize import TEXT, format_utc, parse_datetimes
    import pandas as pd

    times, why = parse_datetimes(pd.Series([value], dtype=TEXT))
    assert why.isna().all(), why.iloc[0]
    assert format_utc(times).iloc[0] == utc


@pytest.mark.parametrize("value", ["2021-W53-1", "2023-W00-1", "2023-366", "2023-000", "2023-W15-8", "now", "today"])
def test_dates_that_do_not_exist_are_unreadable(value):
    from backfill.normalize import TEXT, parse_datetimes
    import pandas as pd

    times, why = parse_datetimes(pd.Series([value], dtype=TEXT))
    assert times.isna().all() and why.iloc[0].startswith(f"timestamp: cannot read {value!r}")


def test_a_header_with_blanks_after_the_commas_suggests_the_stripped_match(run_cli, tmp_path):
    (tmp_path / "in.csv").write_text("service, ts\napp, 2023-04-10T10:00:00Z\n", encoding="utf-8")
    (tmp_path / "m.yaml").write_text("entityId: service\ntimestamp: ts\n", encoding="utf-8")
    code, _, err = run_cli("preview", tmp_path / "in.csv", "-m", tmp_path / "m.yaml")
    assert code == ExitStatus.BAD_INPUT
    assert err == (
        f"Error: {tmp_path / 'in.csv'}: {tmp_path / 'm.yaml'}: timestamp reads 'ts', which the input lacks "
        "(it has: ' ts', 'service'); the input has ' ts': remove the blanks after the delimiters in its header, "
        "or read from: ' ts'\n"
    )


def test_a_filter_with_groups_prints_no_warning(tmp_path):
    import subprocess
    import sys

    (tmp_path / "in.csv").write_text("svc,ts,job\napp,2023-04-10T10:00:00Z,deploy-web\n", encoding="utf-8")
    (tmp_path / "m.yaml").write_text("entityId: svc\ntimestamp: ts\nfilter:\n  - {field: job, matches: '^(deploy)-(web|api)$'}\n",
                                     encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "backfill", "preview", "in.csv", "-m", "m.yaml"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("fmt", [None, "%d.%m.%Y %H:%M"])
def test_long_values_parse_in_linear_time(fmt):
    """A value with a long run of blanks once took Python's re quadratic time (32,000 blanks: 50 s)."""
    import time

    import pandas as pd

    from backfill.normalize import TEXT, parse_datetimes

    values = pd.Series(["x" + " " * 1_000_000 + "y", "1" + " T0" * 100_000, "10.04.2023" + " " * 100_000 + "+02"], dtype=TEXT)
    started = time.perf_counter()
    times, _ = parse_datetimes(values, fmt=fmt)
    assert time.perf_counter() - started < 5 and times.isna().all()

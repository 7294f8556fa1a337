"""Planning: rows -> events through a mapping, and the report that accounts for every row."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backfill.readers as readers
from backfill.errors import MappingError
from backfill.mapping import load_mapping, parse_mapping
from backfill.plan import FILE, ROW, build_plan, json_strings
from backfill.readers import csvfile

from conftest import SAMPLE_CSV, SAMPLE_MAPPING, write_file

UTC = "UTC"


def plan_of(tmp_path, mapping_yaml: str, *files: tuple[str, str], **options):
    mapping = parse_mapping(mapping_yaml, "m.yaml")
    paths = [write_file(tmp_path, name, text) for name, text in files]
    return build_plan(paths, mapping, **options)


def events_of(plan) -> list[dict]:
    return [json.loads(body) for body in plan.bodies()]


def reasons(plan) -> list[tuple[int, str]]:
    return [(row.row, row.reason) for row in plan.report.invalid]


def check_accounted(plan) -> None:
    report = plan.report
    assert report.accounted == report.rows_read
    assert report.planned == len(plan.events)


BASIC = """\
entityId: service
timestamp: finished
"""


# --- field rules ---------------------------------------------------------------------------------

def test_lookup_unknown_value_is_invalid_with_reason(tmp_path):
    mapping = """\
entityId:
  from: service
  lookup: {web: app-1, pay: app-2}
timestamp: finished
"""
    csv = "service,finished\nweb,2023-01-01T00:00:00Z\nsearch,2023-01-02T00:00:00Z\npay,2023-01-03T00:00:00Z\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["entityId"] for e in events_of(plan)] == ["app-1", "app-2"]
    assert reasons(plan) == [
        (3, "entityId: 'search' is not in the lookup (known: web, pay); add it to the lookup (line 2) or give a default")
    ]
    check_accounted(plan)


def test_lookup_with_default_uses_the_default_for_unknown_and_empty_values(tmp_path):
    mapping = BASIC + "attributes:\n  env: {from: env, lookup: {prod: production}, default: other}\n"
    csv = "service,finished,env\na,2023-01-01T00:00:00Z,prod\na,2023-01-02T00:00:00Z,qa\na,2023-01-03T00:00:00Z,\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["attributes"]["env"] for e in events_of(plan)] == ["production", "other", "other"]
    assert plan.report.invalid == []


def test_default_fills_empty_values_only(tmp_path):
    mapping = BASIC + "attributes:\n  initiator: {from: who, default: release-bot}\n"
    csv = "service,finished,who\na,2023-01-01T00:00:00Z,anna\na,2023-01-02T00:00:00Z,\na,2023-01-03T00:00:00Z,   \n"
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["attributes"]["initiator"] for e in events_of(plan)] == ["anna", "release-bot", "release-bot"]


def test_template_fills_placeholders_and_is_left_out_when_one_is_empty(tmp_path):
    mapping = BASIC + 'attributes:\n  build_url: {template: "https://ci/{job}/{build}/?q={job}"}\n'
    csv = "service,finished,job,build\na,2023-01-01T00:00:00Z,deploy,42\na,2023-01-02T00:00:00Z,deploy,\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["attributes"] for e in events_of(plan)] == [{"build_url": "https://ci/deploy/42/?q=deploy"}, {}]


def test_from_list_first_non_empty_wins(tmp_path):
    mapping = "entityId: {from: [app, service]}\ntimestamp: {from: [finished, started]}\n"
    csv = (
        "app,service,finished,started\n"
        "a,s,2023-01-01T10:00:00Z,2023-01-01T09:00:00Z\n"  # both given: the first wins
        ",s,,2023-01-02T09:00:00Z\n"  # first empty: the second
        " ,s, ,2023-01-03T09:00:00Z\n"  # blanks count as empty
    )
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [(e["entityId"], e["timestamp"]) for e in events_of(plan)] == [
        ("a", "2023-01-01T10:00:00Z"), ("s", "2023-01-02T09:00:00Z"), ("s", "2023-01-03T09:00:00Z"),
    ]


def test_value_rule_is_a_constant(tmp_path):
    mapping = "entityId: {value: app-7}\ntimestamp: t\nattributes:\n  description: {value: 'Imported'}\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", "t\n2023-01-01T00:00:00Z\n"))
    assert events_of(plan) == [{
        "type": "event-deploy", "timestamp": "2023-01-01T00:00:00Z", "entityId": "app-7",
        "attributes": {"description": "Imported"},
    }]


@pytest.mark.parametrize(
    ("status_rule", "values", "expected", "invalid"),
    [
        ("{from: result}", ["Success", "FAILURE", "passed", "Error", "aborted"], ["success", "failed", "success", "failed"],
         [(6, "attributes.status: 'aborted' is neither success nor failed; add a lookup to the status rule or a filter rule")]),
        ("{from: result, lookup: {OK: success, KO: failed}}", ["OK", "KO", "ok"], ["success", "failed"],
         [(4, "attributes.status: 'ok' is not in the lookup (known: OK, KO); add it to the lookup (line 4) or give a default")]),
        ("{from: result, lookup: {OK: success}, default: failed}", ["OK", "KO", ""], ["success", "failed", "failed"], []),
        ("{value: success}", ["whatever", ""], ["success", "success"], []),
    ],
)
def test_status_rules(tmp_path, status_rule, values, expected, invalid):
    mapping = BASIC + f"attributes:\n  status: {status_rule}\n"
    csv = "service,finished,result\n" + "".join(f"a,2023-01-0{i + 1}T00:00:00Z,{v}\n" for i, v in enumerate(values))
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["attributes"].get("status") for e in events_of(plan)] == expected
    assert reasons(plan) == invalid


def test_empty_status_leaves_the_attribute_out(tmp_path):
    plan = plan_of(tmp_path, BASIC + "attributes:\n  status: result\n", ("in.csv", "service,finished,result\na,2023-01-01,\n"))
    assert events_of(plan)[0]["attributes"] == {}


def test_date_attributes_are_normalized_and_invalid_when_unreadable(tmp_path):
    mapping = (
        "source: {timezone: Europe/Berlin}\n" + BASIC
        + "attributes:\n  deployment_start_time: started\n"
        + "  change_window_end: {from: window_end, unit: ms}\n"
    )
    csv = (
        "service,finished,started,window_end\n"
        "a,2023-01-01T12:00:00Z,2023-01-01 12:50,1672574400000\n"  # 12:50 CET = 11:50Z; epoch ms of 12:00Z
        "a,2023-01-02T12:00:00Z,,\n"  # empty: left out, not invalid
        "a,2023-01-03T12:00:00Z,tomorrow,\n"
    )
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["attributes"] for e in events_of(plan)] == [
        {"change_window_end": "2023-01-01T12:00:00Z", "deployment_start_time": "2023-01-01T11:50:00Z"}, {},
    ]
    assert reasons(plan) == [(4, "attributes.deployment_start_time: cannot read 'tomorrow' as a date-time; "
                                 "give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")")]


def test_rule_timezone_overrides_the_source_timezone(tmp_path):
    mapping = "source: {timezone: Europe/Berlin}\nentityId: s\ntimestamp: {from: t, timezone: America/New_York}\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", "s,t\na,2023-07-01 12:00\n"))
    assert events_of(plan)[0]["timestamp"] == "2023-07-01T16:00:00Z"  # EDT = UTC-4


@pytest.mark.parametrize(
    ("csv", "reason"),
    [
        ("service,finished\n,2023-01-01T00:00:00Z\n", "entityId is empty (service); every event needs one"),
        ("service,finished\na,\n", "timestamp is empty (finished); every event needs one"),
        ("service,finished\na,2023-03-26 02:30\n",
         "timestamp: '2023-03-26 02:30' does not exist in Europe/Berlin (clocks went forward for DST); "
         "fix the time or give it with an offset"),
    ],
)
def test_every_event_needs_entity_and_timestamp(tmp_path, csv, reason):
    plan = plan_of(tmp_path, "source: {timezone: Europe/Berlin}\n" + BASIC, ("in.csv", csv))
    assert (len(plan), reasons(plan)) == (0, [(2, reason)])


def test_a_row_reports_its_first_problem_and_its_values(tmp_path):
    mapping = "entityId: {from: s, lookup: {a: app}}\ntimestamp: t\nattributes:\n  status: r\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", "s,t,r,x\nb,never,meh,\n"))
    [row] = plan.report.invalid
    assert row.reason.startswith("entityId: 'b' is not in the lookup")
    assert row.values == {"s": "b", "t": "never", "r": "meh"}  # empty values left out
    assert row.to_json() == {"file": str(tmp_path / "in.csv"), "row": 2, "reason": row.reason, "values": row.values}


# --- filters and dedupe --------------------------------------------------------------------------

def test_filters_count_rows_by_the_first_rule_that_drops_them(tmp_path):
    mapping = BASIC + """\
filter:
  - {field: env, in: [prod, staging]}
  - {field: result, not_in: [ABORTED, NOT_BUILT]}
  - {field: job, matches: "^deploy-"}
"""
    csv = (
        "service,finished,env,result,job\n"
        "a,2023-01-01T00:00:00Z,prod,SUCCESS,deploy-a\n"  # kept
        "a,2023-01-02T00:00:00Z,dev,ABORTED,x\n"  # dropped by rule 1 (and would be by 2 and 3)
        "a,2023-01-03T00:00:00Z,,SUCCESS,deploy-a\n"  # empty env is not in the list
        "a,2023-01-04T00:00:00Z,staging,ABORTED,deploy-a\n"  # rule 2
        "a,2023-01-05T00:00:00Z,staging,NOT_BUILT,x\n"  # rule 2 first
        "a,2023-01-06T00:00:00Z,prod,SUCCESS,hotfix-deploy-a\n"  # rule 3: anchored at the start
        "a,2023-01-07T00:00:00Z, prod ,SUCCESS,deploy-b\n"  # kept: values are stripped
        "a,never,dev,SUCCESS,deploy-a\n"  # filtered before it is checked: not invalid
    )
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert dict(plan.report.filtered) == {
        "env in [prod, staging] (line 4)": 3,
        "result not in [ABORTED, NOT_BUILT] (line 5)": 2,
        "job matches '^deploy-' (line 6)": 1,
    }
    assert [e["timestamp"][:10] for e in events_of(plan)] == ["2023-01-01", "2023-01-07"]
    assert plan.report.invalid == []
    check_accounted(plan)


def test_dedupe_keeps_the_first_row_across_files(tmp_path):
    mapping = BASIC + "attributes:\n  build_id: build\n  description: note\ndedupe: [service, build]\n"
    first = "service,finished,build,note\nweb,2023-01-02T00:00:00Z,1,first\nweb,2023-01-01T00:00:00Z,2,a\n"
    second = (
        "service,finished,build,note\n"
        "web,2023-01-05T00:00:00Z,1,second\n"  # same key as a.csv row 2: folded
        "pay,2023-01-05T00:00:00Z,1,other service\n"  # other key
        "web,2023-01-06T00:00:00Z,2,again\n"  # same as a.csv row 3
        "web,2023-01-07T00:00:00Z,,no build\n"
        "web,2023-01-08T00:00:00Z,,no build either\n"  # a key with an empty part folds nothing
    )
    plan = plan_of(tmp_path, mapping, ("a.csv", first), ("b.csv", second))
    assert plan.report.duplicates == 2
    assert [(e["entityId"], e["attributes"]["description"]) for e in events_of(plan)] == [
        ("web", "a"), ("web", "first"), ("pay", "other service"), ("web", "no build"), ("web", "no build either"),
    ]
    sources = [plan.source_of(i) for i in range(len(plan))]
    assert sources == [
        (str(tmp_path / "a.csv"), 3), (str(tmp_path / "a.csv"), 2),
        (str(tmp_path / "b.csv"), 3), (str(tmp_path / "b.csv"), 5), (str(tmp_path / "b.csv"), 6),
    ]
    ids = plan.event_ids()
    assert ids.is_unique and [i[0] for i in ids] == ["k", "k", "k", "e", "e"]
    check_accounted(plan)


def test_an_invalid_first_row_does_not_fold_a_valid_duplicate(tmp_path):
    mapping = BASIC + "dedupe: [service]\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", "service,finished\na,junk\na,2023-01-01T00:00:00Z\n"))
    assert (len(plan), plan.report.duplicates, len(plan.report.invalid)) == (1, 0, 1)


# --- values stay text ----------------------------------------------------------------------------

def test_csv_build_numbers_stay_as_written(tmp_path):
    mapping = BASIC + "attributes:\n  build_id: build\n  change_id: change\n"
    csv = "service,finished,build,change\na,2023-01-01T00:00:00Z,42,007\na,2023-01-02T00:00:00Z,,1e3\na,2023-01-03T00:00:00Z,43,\n"
    plan = plan_of(tmp_path, mapping, ("in.csv", csv))
    assert [e["attributes"] for e in events_of(plan)] == [
        {"build_id": "42", "change_id": "007"}, {"change_id": "1e3"}, {"build_id": "43"},
    ]


def test_json_numbers_stay_as_written(tmp_path):
    mapping = "source: {format: json}\nentityId: app.id\ntimestamp: {from: at, unit: s}\nattributes:\n  build_id: id\n  change_id: version\n"
    doc = '[{"app": {"id": 12}, "at": 1681109507, "id": 5551, "version": 1.50},' \
          ' {"app": {"id": "web"}, "at": 1681109508, "id": null, "version": 2}]'
    plan = plan_of(tmp_path, mapping, ("in.json", doc))
    assert [(e["entityId"], e["timestamp"], e["attributes"]) for e in events_of(plan)] == [
        ("12", "2023-04-10T06:51:47Z", {"build_id": "5551", "change_id": "1.50"}),
        ("web", "2023-04-10T06:51:48Z", {"change_id": "2"}),
    ]


def test_ndjson_bad_lines_are_invalid_rows_with_their_line(tmp_path):
    mapping = "source: {format: ndjson}\nentityId: app\ntimestamp: t\n"
    text = '{"app": "a", "t": "2023-01-01T00:00:00Z"}\n\n{"app": \n{"app": "b", "t": "2023-01-02T00:00:00Z"}\n'
    plan = plan_of(tmp_path, mapping, ("in.ndjson", text))
    assert len(plan) == 2
    assert [str(r) for r in plan.report.invalid] == [f"{tmp_path / 'in.ndjson'} line 3: invalid JSON at column 9: Expecting value"]
    assert plan.report.invalid[0].to_json() == {
        "file": str(tmp_path / "in.ndjson"), "line": 3, "reason": "invalid JSON at column 9: Expecting value",
        "values": {"text": '{"app":'},
    }
    assert plan.report.rows_read == 3  # the blank line is no row
    check_accounted(plan)


# --- mapping vs. input ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("attributes:\n  env: environment\n",
         "{path}: m.yaml: attributes.env reads 'environment', which the input lacks "
         "(it has: 'env', 'finished', 'service'); or set it with --set env=VALUE"),
        ("attributes:\n  build_url: {template: 'x/{job}'}\n",
         "{path}: m.yaml: attributes.build_url reads 'job', which the input lacks "
         "(it has: 'env', 'finished', 'service'); or set it with --set build_url=VALUE"),
        ("filter:\n  - {field: result, in: [ok]}\n",
         "{path}: m.yaml: filter (line 4) reads 'result', which the input lacks (it has: 'env', 'finished', 'service')"),
        ("dedupe: [build]\n",
         "{path}: m.yaml: dedupe reads 'build', which the input lacks (it has: 'env', 'finished', 'service')"),
    ],
)
def test_a_field_the_input_lacks_is_a_mapping_error(tmp_path, extra, message):
    path = write_file(tmp_path, "in.csv", "service,finished,env\n")  # header only: still checked
    with pytest.raises(MappingError) as caught:
        build_plan([path], parse_mapping(BASIC + extra, "m.yaml"))
    assert str(caught.value) == message.format(path=path)


def test_json_field_missing_from_every_record_is_a_mapping_error(tmp_path):
    path = write_file(tmp_path, "in.json", '[{"app": "a", "t": "2023-01-01"}]')
    with pytest.raises(MappingError, match=r"timestamp reads 'finished', which the input lacks \(it has: 'app', 't'\)"):
        build_plan([path], parse_mapping("source: {format: json}\nentityId: app\ntimestamp: finished\n", "m.yaml"))


def test_no_entity_rule_needs_entity_id(tmp_path):
    path = write_file(tmp_path, "in.csv", "t\n2023-01-01\n")
    mapping = parse_mapping("timestamp: t\n", "m.yaml")
    with pytest.raises(MappingError, match=r"^m\.yaml: no entityId rule; add `entityId: \{from: FIELD\}` or pass --entity-id$"):
        build_plan([path], mapping)
    plan = build_plan([path], mapping.with_overrides("app-1", {"env": "production"}))
    assert events_of(plan)[0]["entityId"] == "app-1"
    assert events_of(plan)[0]["attributes"] == {"env": "production"}


# --- date range, order, ids ----------------------------------------------------------------------

TIMES_CSV = "service,finished\n" + "".join(
    f"a,{t}\n" for t in ["2023-03-01T00:00:00Z", "2023-01-01T00:00:00Z", "2023-02-01T00:00:00Z", "2022-12-31T23:59:59Z",
                         "2023-01-31T23:59:59Z", "2023-02-01T00:00:00Z"]
)


def test_since_until_keep_the_range_and_count_the_rest(tmp_path):
    plan = plan_of(tmp_path, BASIC, ("in.csv", TIMES_CSV),
                   since=pd.Timestamp("2023-01-01", tz=UTC), until=pd.Timestamp("2023-02-01", tz=UTC))
    # since is inclusive, until exclusive
    assert [e["timestamp"] for e in events_of(plan)] == ["2023-01-01T00:00:00Z", "2023-01-31T23:59:59Z"]
    assert plan.report.outside_range == 4
    check_accounted(plan)


def test_events_are_ordered_oldest_first_ties_in_input_order(tmp_path):
    plan = plan_of(tmp_path, BASIC, ("in.csv", TIMES_CSV))
    assert [e["timestamp"] for e in events_of(plan)] == [
        "2022-12-31T23:59:59Z", "2023-01-01T00:00:00Z", "2023-01-31T23:59:59Z",
        "2023-02-01T00:00:00Z", "2023-02-01T00:00:00Z", "2023-03-01T00:00:00Z",
    ]
    assert plan.events[ROW].tolist() == [5, 3, 6, 4, 7, 2]


@pytest.mark.parametrize("dedupe", ["", "dedupe: [service, build]\n"])
def test_event_ids_are_stable_and_unique(tmp_path, dedupe):
    mapping = BASIC + "attributes:\n  build_id: build\n" + dedupe
    csv = (
        "service,finished,build\n"
        "a,2023-01-01T00:00:00Z,1\n"
        "a,2023-01-01T00:00:00Z,2\n"
        "b,2023-01-01T00:00:00Z,1\n"
        "a,2023-01-02T00:00:00Z,3\n"
        "a,2023-01-02T00:00:00Z,3\n"  # identical: without dedupe, two deployments with two ids
    )
    first = plan_of(tmp_path, mapping, ("in.csv", csv))
    again = plan_of(tmp_path, mapping, ("in.csv", csv))
    ids = first.event_ids().tolist()
    assert ids == again.event_ids().tolist()
    assert len(set(ids)) == len(ids) == (4 if dedupe else 5)
    assert all(re.fullmatch(r"[ek][0-9a-f]{16}(-\d+)?", i) for i in ids)


def test_event_ids_do_not_depend_on_chunking(tmp_path, monkeypatch):
    mapping = load_mapping(SAMPLE_MAPPING)
    whole = build_plan([SAMPLE_CSV], mapping)
    monkeypatch.setattr(csvfile, "CHUNK_ROWS", 4)
    chunked = build_plan([SAMPLE_CSV], mapping)
    assert chunked.event_ids().tolist() == whole.event_ids().tolist()
    assert list(chunked.request_bodies()) == list(whole.request_bodies())
    assert dict(chunked.report.filtered) == dict(whole.report.filtered)
    assert [str(r) for r in chunked.report.invalid] == [str(r) for r in whole.report.invalid]


# --- request bodies ------------------------------------------------------------------------------

@pytest.mark.parametrize(("events", "batch", "sizes"), [(0, 15, []), (1, 15, [1]), (15, 15, [15]), (16, 15, [15, 1]),
                                                         (31, 15, [15, 15, 1]), (9, 4, [4, 4, 1]), (3, 1, [1, 1, 1])])
def test_request_bodies_batch_the_events(tmp_path, events, batch, sizes):
    csv = "service,finished\n" + "".join(f"a,2023-01-01T00:{i // 60:02d}:{i % 60:02d}Z\n" for i in range(events))
    plan = plan_of(tmp_path, BASIC, ("in.csv", csv))
    bodies = list(plan.request_bodies(batch, slice_size=10))  # slices smaller than the plan
    assert [len(json.loads(b)["events"]) for b in bodies] == sizes
    assert plan.requests(batch) == len(sizes)
    stamps = [e["timestamp"] for b in bodies for e in json.loads(b)["events"]]
    assert stamps == sorted(stamps) and len(stamps) == events


TRICKY = [
    'say "hi"', "back\\slash", "two\nlines", "tab\there", "cr\r\nlf", "bell\x07", "é ü ß ½", "日本語",
    "emoji 😀", "line\u2028sep", "para\u2029sep", "ne\x85l", "</script>", "{\"json\": [1]}", "'single'",
]


def test_values_needing_escapes_round_trip(tmp_path):
    doc = json.dumps([
        {"app": f"app {v}", "t": f"2023-01-01T00:00:{i:02d}Z", "note": v, "who": v} for i, v in enumerate(TRICKY)
    ])
    mapping = "source: {format: json}\nentityId: app\ntimestamp: t\nattributes:\n  description: note\n  initiator: who\n"
    plan = plan_of(tmp_path, mapping, ("in.json", doc))
    [body] = list(plan.request_bodies())
    assert len(body.splitlines()) == 1  # a body is one line, whatever the values hold
    events = json.loads(body)["events"]
    assert [e["attributes"]["description"] for e in events] == TRICKY
    assert [e["attributes"]["initiator"] for e in events] == TRICKY
    assert [e["entityId"] for e in events] == [f"app {v}" for v in TRICKY]


@pytest.mark.parametrize("value", TRICKY + ["", "plain"])
def test_json_strings_matches_json_dumps(value):
    assert json.loads(json_strings(pd.Series([value], dtype=object)).iloc[0]) == value


# --- the shipped sample ---------------------------------------------------------------------------

def test_sample_plan_accounts_for_every_row():
    plan = build_plan([SAMPLE_CSV], load_mapping(SAMPLE_MAPPING))
    report = plan.report
    # 29 data rows (spreadsheet rows 2-30):
    #   filtered: row 6 (env dev), row 7 (ABORTED), row 27 (job hotfix-payments)
    #   duplicate: row 9 (payments build 105 again, after row 8)
    #   invalid: row 12 (02:35 on the night clocks went forward), row 20 (02:30 on the night they
    #            went back), 16 (status "Succes"),
    #            23 (service "search" not in the entity lookup)
    assert report.files == [(str(SAMPLE_CSV), 29)]
    assert (report.planned, sum(report.filtered.values()), report.duplicates, len(report.invalid)) == (21, 3, 1, 4)
    assert list(report.filtered.values()) == [1, 1, 1]
    assert [r.row for r in report.invalid] == [12, 16, 20, 23]
    check_accounted(plan)
    events = events_of(plan)
    by_row = dict(zip(plan.events[ROW], events))
    assert set(plan.events[FILE]) == {0}
    assert sorted(by_row) == [2, 3, 4, 5, 8, 10, 11, 13, 14, 15, 17, 18, 19, 21, 22, 24, 25, 26, 28, 29, 30]
    # row 2: 02.01.2019 09:31 in Berlin is CET (UTC+1)
    assert by_row[2] == {
        "type": "event-deploy", "timestamp": "2019-01-02T08:31:00Z", "entityId": "8c0e4f3a-1d2b-4c5d-9e8f-0a1b2c3d4e5f",
        "attributes": {
            "env": "production", "status": "success", "build_id": "101",
            "build_commit_sha": "3f2a9c1d8e7b6a5f4c3d2e1f0a9b8c7d6e5f4a3b",
            "build_url": "https://ci.example.com/job/deploy-payments/101/", "description": "first deploy of the year",
            "initiator": "anna.schmidt", "deployment_start_time": "2019-01-02T08:12:00Z",
        },
    }
    # row 3: no deployed_by -> default; no notes -> default description; staging stays staging
    assert by_row[3]["attributes"]["initiator"] == "release-bot"
    assert by_row[3]["attributes"]["description"] == "Imported from the release log"
    # row 5: the quoted note with a ";" and doubled quotes
    assert by_row[5]["attributes"]["description"] == 'rollback; DB migration "0042" failed'
    assert by_row[5]["attributes"]["status"] == "failed"
    # row 11: started 01:50 CET (00:50Z), finished 03:05 CEST (01:05Z) across the March switch
    assert (by_row[11]["timestamp"], by_row[11]["attributes"]["deployment_start_time"]) == (
        "2019-03-31T01:05:00Z", "2019-03-31T00:50:00Z")
    # row 13: the day after clocks went back: CET again
    assert by_row[13]["timestamp"] == "2019-10-28T08:20:00Z"
    # row 15: env "stg" looked up to staging
    assert by_row[15]["attributes"]["env"] == "staging"
    # row 29: no finish time -> started_at, 13.05.2024 14:00 CEST
    assert by_row[29]["timestamp"] == "2024-05-13T12:00:00Z"
    statuses = [e["attributes"]["status"] for e in events]
    assert statuses.count("failed") == 4  # rows 5 FAILED, 10 Failure, 18 failed, 25 FAILURE
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


# --- every row accounted for, on generated inputs -------------------------------------------------

ROWS = st.lists(
    st.tuples(
        st.sampled_from(["prod", "staging", "dev", ""]),  # env; filter keeps prod and staging
        st.sampled_from(["Success", "FAILED", "passed", "error", "Succes", "", "ABORTED"]),
        st.integers(0, 5),  # build: duplicates likely
        st.one_of(  # finish time: valid, unreadable, or in the Berlin DST gap
            st.datetimes(min_value=pd.Timestamp("2015-01-01").to_pydatetime(),
                         max_value=pd.Timestamp("2030-01-01").to_pydatetime()).map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S")),
            st.sampled_from(["", "junk", "2023-03-26 02:30:00", "2023-10-29 02:30:00", "2023-10-29 03:30:00"]),
        ),
        st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    ),
    max_size=40,
)


BERLIN = ZoneInfo("Europe/Berlin")


def _valid_row(result: str, finished: str) -> bool:
    """Status empty or a known spelling, and a finish time that exists exactly once in Berlin."""
    if result and result.lower() not in ("success", "failed", "passed", "error"):
        return False
    if finished in ("", "junk"):
        return False
    local = datetime.strptime(finished, "%Y-%m-%d %H:%M:%S")
    # in a DST gap or overlap the two folds disagree on the offset (PEP 495)
    return local.replace(tzinfo=BERLIN, fold=0).utcoffset() == local.replace(tzinfo=BERLIN, fold=1).utcoffset()


def _expected_buckets(rows) -> tuple[int, int, int, int]:
    """A reference model, row by row: (planned, filtered, duplicates, invalid)."""
    planned = filtered = duplicates = invalid = 0
    seen = set()
    for env, result, build, finished, _ in rows:
        if env not in ("prod", "staging") or result == "ABORTED":
            filtered += 1
        elif not _valid_row(result, finished):
            invalid += 1
        elif build in seen:
            duplicates += 1
        else:
            seen.add(build)
            planned += 1
    return planned, filtered, duplicates, invalid


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_every_generated_row_is_accounted_for(tmp_path, rows):
    mapping = """\
source: {timezone: Europe/Berlin}
entityId: {value: app}
timestamp: finished
attributes:
  status: result
  build_id: build
  description: note
filter:
  - {field: env, in: [prod, staging]}
  - {field: result, not_in: [ABORTED]}
dedupe: [build]
"""
    frame = pd.DataFrame(rows, columns=["env", "result", "build", "finished", "note"])
    path = tmp_path / "gen.csv"
    frame.to_csv(path, index=False, quoting=csv.QUOTE_ALL)  # else a lone \r in a note is a line break
    plan = build_plan([path], parse_mapping(mapping, "m.yaml"))
    report = plan.report
    # a note holding only blanks would still be a row: the reader drops only rows with every field empty
    assert report.rows_read == len(rows)
    check_accounted(plan)
    assert (report.planned, sum(report.filtered.values()), report.duplicates, len(report.invalid)) == \
        _expected_buckets(rows)
    events = [json.loads(b) for b in plan.bodies()]
    # events are sorted by time, so compare the planned rows' notes as multisets
    assert sorted(e["attributes"].get("description", "") for e in events) == sorted(
        n.strip() for n in _planned_notes(rows))
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)
    assert plan.event_ids().is_unique


def _planned_notes(rows) -> list[str]:
    seen, out = set(), []
    for env, result, build, finished, note in rows:
        ok = env in ("prod", "staging") and result != "ABORTED" and _valid_row(result, finished)
        if ok and build not in seen:
            seen.add(build)
            out.append(note)
    return out


def test_json_reader_chunks_do_not_change_the_plan(tmp_path, monkeypatch):
    doc = json.dumps([{"app": "a", "t": f"2023-01-{i + 1:02d}T00:00:00Z"} for i in range(7)])
    mapping = "source: {format: json}\nentityId: app\ntimestamp: t\n"
    whole = plan_of(tmp_path, mapping, ("in.json", doc))
    monkeypatch.setattr(readers, "CHUNK_ROWS", 3)
    chunked = plan_of(tmp_path, mapping, ("in.json", doc))
    assert list(chunked.request_bodies()) == list(whole.request_bodies())
    assert chunked.events[ROW].tolist() == list(range(1, 8))


def test_rows_without_any_value_are_counted_as_empty_not_dropped_silently(tmp_path):
    plan = plan_of(
        tmp_path,
        "entityId: s\ntimestamp: t\n",
        ("d.csv", "s,t\na,2023-01-01T00:00:00Z\n,\n\n,\nb,2023-01-02T00:00:00Z\n"),
    )
    assert plan.report.planned == 2
    assert plan.report.empty == 3  # ",", the blank line, ","
    assert plan.report.rows_read == 5 == plan.report.accounted
    assert list(plan.events[ROW]) == [2, 6]


# --- invalid rows: compact whatever their number ---------------------------------------------------

def test_invalid_rows_kept_compactly_counted_by_reason_and_all_streamed(tmp_path, write, monkeypatch, run_cli):
    import backfill.plan as plan_module

    monkeypatch.setattr(plan_module, "KEEP_INVALID", 5)
    text = "service,ts\n" + "".join(f"svc{i},2023-01-01T10:00:00Z\n" for i in range(40)) + "web,2023-01-02T10:00:00Z\n"
    data = write(tmp_path, "in.csv", text)
    mapping = write(tmp_path, "m.yaml", "source: {format: csv}\nentityId: {from: service, lookup: {web: app-1}}\n"
                                         "timestamp: {from: ts}\n")
    invalid = tmp_path / "invalid.jsonl"
    code, out, err = run_cli("preview", data, "-m", mapping, "--invalid-out", invalid, "--show", "0")
    assert (code, err) == (0, "")
    assert "Rows: 41 read = 1 planned + 0 filtered + 0 duplicates + 40 invalid" in out
    lines = [json.loads(line) for line in invalid.read_text(encoding="utf-8").splitlines()]
    assert [line["row"] for line in lines] == list(range(2, 42))
    assert lines[-1]["values"] == {"service": "svc39", "ts": "2023-01-01T10:00:00Z"}


def test_invalid_rows_beyond_the_kept_ones_are_counted_not_held():
    from backfill.plan import InvalidRow, InvalidRows

    rows = InvalidRows(keep=3)
    rows.extend(InvalidRow("f", i, "row", f"entityId: 'svc{i}' is not in the lookup", {"service": f"svc{i}"}) for i in range(10))
    frame = pd.DataFrame({"service": [f"x{i}" for i in range(5)], ROW: range(20, 25)})
    rows.add_chunk(frame, pd.Series([f"timestamp: cannot read 'x{i}'" for i in range(5)], index=frame.index), "f", "row")
    assert (len(rows), list.__len__(rows), bool(rows)) == (15, 3, True)
    assert [r.row for r in rows] == [0, 1, 2] and rows[:2] == list(rows)[:2]
    assert rows.by_reason == {"entityId: '…' is not in the lookup": 10, "timestamp: cannot read '…'": 5}
    sink = io.StringIO()
    streamed = InvalidRows(keep=1, sink=sink)
    streamed.add_chunk(frame, pd.Series(["bad"] * 5, index=frame.index), "f", "row")
    assert len(sink.getvalue().splitlines()) == 5 and list.__len__(streamed) == 1


def test_first_and_repeated_agree_with_pandas_duplicated():
    """The dedupe kernel (arrow dictionary codes) finds the same rows as pandas' duplicated() of
    the rows chosen (valid, keyed)."""
    from hypothesis import given, settings, strategies as st

    from backfill.normalize import TEXT
    from backfill.plan import _first_and_repeated
    import numpy as np

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["a", "b", "a\x1f1", "", "ä", "b ", "B", None]), st.booleans()), max_size=40))
    def check(pairs):
        series = pd.Series([v for v, _ in pairs], dtype=TEXT)
        rows = np.array([keep and v is not None for v, keep in pairs], dtype=bool)
        seen_before, repeated = _first_and_repeated(series, rows)
        chosen = series[rows]  # only the chosen rows count: a value first seen in another row is new
        assert seen_before.tolist() == chosen.duplicated(keep="first").tolist()
        assert repeated.tolist() == chosen.duplicated(keep=False).tolist()

    check()


def test_coded_columns_join_across_blocks(monkeypatch):
    """entityId, env and status are coded per chunk; chunks with different values join into one
    column whose categories are the values planned, sorted, with the same bodies and summary."""
    from backfill.summary import plan_summary

    mapping = load_mapping(SAMPLE_MAPPING)
    whole = build_plan([SAMPLE_CSV], mapping)
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", 120)  # a record or two per chunk
    blocks = build_plan([SAMPLE_CSV], mapping)
    for name in ("entityId", "env", "status"):
        values = blocks.events[name]
        assert isinstance(values.dtype, pd.CategoricalDtype)
        assert list(values.cat.categories) == sorted(set(whole.events[name].dropna().astype(str)))
    assert list(blocks.request_bodies()) == list(whole.request_bodies())
    assert plan_summary(blocks) == plan_summary(whole)


def test_blocks_where_a_coded_column_has_no_value_join_with_the_others(tmp_path, monkeypatch):
    """A chunk whose env is empty everywhere, or whose every entity is unknown (all invalid),
    joins the chunks that have values: the events and their counts are those of one block."""
    mapping = (
        "source: {format: csv}\n"
        "entityId: {from: service, lookup: {web: app-1, api: app-2}}\n"
        "timestamp: {from: at}\n"
        "attributes: {env: env, status: result}\n"
    )
    rows = ["service,at,env,result"]
    rows += [f"web,2023-01-0{d}T10:00:00Z,,success" for d in range(1, 4)]
    rows += [f"nope,2023-01-0{d}T11:00:00Z,prod,failed" for d in range(1, 4)]
    rows += [f"api,2023-01-0{d}T12:00:00Z,staging,failure" for d in range(4, 7)]
    text = "\n".join(rows) + "\n"
    whole = plan_of(tmp_path, mapping, ("in.csv", text))
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", 40)
    blocks = plan_of(tmp_path, mapping, ("in.csv", text))
    assert events_of(blocks) == events_of(whole)
    assert len(blocks) == 6 and len(blocks.report.invalid) == 3
    assert blocks.events["env"].value_counts().to_dict() == {"staging": 3}
    assert list(blocks.events["entityId"].cat.categories) == ["app-1", "app-2"]

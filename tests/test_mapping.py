"""Loading and validating YAML mappings (backfill.mapping): the contract users write against."""

from __future__ import annotations

import pytest

from backfill.errors import ExitStatus, MappingError, UsageError
from backfill.events import ATTRIBUTES
from backfill.mapping import FieldRule, load_mapping, parse_mapping
from backfill.readers import SourceConfig

from conftest import SAMPLE_MAPPING

# The example of the spec (issue 2), verbatim.
SPEC_EXAMPLE = """\
source:
  format: csv                  # csv | json | ndjson (jenkins, gitlab: separate issue)
  delimiter: ";"               # optional
  encoding: utf-8              # optional
  records: data.deployments    # json only, optional
  timezone: Europe/Berlin      # IANA zone for naive timestamps in this file; default UTC
entityId: {from: service, lookup: {payments: 8c0e4f3a-1d2b-4c5d-9e8f-0a1b2c3d4e5f, web: app-123}}
timestamp: {from: [finished_at, started_at], format: "%d.%m.%Y %H:%M"}
attributes:
  env:              {from: environment, lookup: {prod: production, stg: staging}}
  status:           {from: result}
  build_id:         build                     # shorthand for {from: build}
  build_url:        {template: "https://ci.example.com/job/{job}/{build}/"}
  build_commit_sha: {from: sha}
  initiator:        {from: deployed_by, default: release-bot}
  description:      {value: "Imported from the release log"}
  deployment_start_time: {from: started_at}
filter:                        # a row is kept only if every rule holds
  - {field: environment, in: [prod, staging]}
  - {field: result, not_in: [ABORTED, NOT_BUILT]}
  - {field: job, matches: "^deploy-"}
dedupe: [service, build]       # optional: rows with the same key are one deployment (first kept)
"""


def test_the_spec_example_parses_to_what_it_says():
    m = parse_mapping(SPEC_EXAMPLE, "spec.yaml")
    assert m.source == SourceConfig(
        format="csv", delimiter=";", encoding="utf-8", records="data.deployments", timezone="Europe/Berlin"
    )
    assert m.entity.sources == ("service",)
    assert m.entity.lookup == {"payments": "8c0e4f3a-1d2b-4c5d-9e8f-0a1b2c3d4e5f", "web": "app-123"}
    assert m.timestamp.sources == ("finished_at", "started_at")
    assert m.timestamp.format == "%d.%m.%Y %H:%M"
    assert list(m.attributes) == [
        "env", "status", "build_id", "build_url", "build_commit_sha", "initiator", "description",
        "deployment_start_time",
    ]
    assert m.attributes["build_id"] == FieldRule(key="attributes.build_id", line=12, sources=("build",))
    assert m.attributes["build_url"].template == "https://ci.example.com/job/{job}/{build}/"
    assert m.attributes["build_url"].fields == ("job", "build")
    assert m.attributes["initiator"].default == "release-bot"
    assert m.attributes["description"].value == "Imported from the release log"
    assert [(f.field, f.op, f.values, f.line) for f in m.filters] == [
        ("environment", "in", ("prod", "staging"), 19),
        ("result", "not_in", ("ABORTED", "NOT_BUILT"), 20),
        ("job", "matches", ("^deploy-",), 21),
    ]
    assert m.dedupe == ("service", "build")
    assert m.fields == {
        "service", "finished_at", "started_at", "environment", "result", "build", "job", "sha",
        "deployed_by",
    }


def test_the_shipped_mapping_loads():
    m = load_mapping(SAMPLE_MAPPING)
    assert m.source.delimiter == ";" and m.source.timezone == "Europe/Berlin"
    assert m.dedupe == ("service", "build")


def test_defaults_of_a_minimal_mapping():
    m = parse_mapping("timestamp: finished\n", "m.yaml")
    assert m.source == SourceConfig(format="csv", delimiter=None, encoding=None, records=None, timezone="UTC")
    assert m.entity is None and m.attributes == {} and m.filters == () and m.dedupe == ()


@pytest.mark.parametrize(
    ("yaml_text", "check"),
    [
        # YAML would turn these into booleans, numbers or dates; a mapping keeps them as written
        ("timestamp: t\nattributes:\n  env: {value: yes}\n", lambda m: m.attributes["env"].value == "yes"),
        ("timestamp: t\nattributes:\n  build_id: {value: 042}\n", lambda m: m.attributes["build_id"].value == "042"),
        ("timestamp: t\nattributes:\n  env: {from: e, lookup: {1: one, NO: norway}}\n",
         lambda m: m.attributes["env"].lookup == {"1": "one", "NO": "norway"}),
        ("timestamp: t\nfilter:\n  - {field: a, in: [1.0, true]}\n", lambda m: m.filters[0].values == ("1.0", "true")),
        ("timestamp: t\nfilter:\n  - {field: a, not_in: x}\n", lambda m: m.filters[0].values == ("x",)),
        ("timestamp: t\ndedupe: build\n", lambda m: m.dedupe == ("build",)),
        ("source: {delimiter: tab}\ntimestamp: t\n", lambda m: m.source.delimiter == "\t"),
        ("source: {delimiter: '\\t'}\ntimestamp: t\n", lambda m: m.source.delimiter == "\t"),
        ("timestamp: {from: t, unit: ms}\n", lambda m: m.timestamp.unit == "ms"),
        ("timestamp: {from: t, timezone: America/New_York}\n", lambda m: m.timestamp.timezone == "America/New_York"),
        ("timestamp: t\nattributes:\n  change_window_start: {from: w, format: '%Y%m%d'}\n",
         lambda m: m.attributes["change_window_start"].format == "%Y%m%d"),
    ],
)
def test_values_are_kept_as_written(yaml_text, check):
    assert check(parse_mapping(yaml_text, "m.yaml"))


def test_every_documented_attribute_is_accepted():
    text = "timestamp: t\nattributes:\n" + "".join(f"  {name}: f{i}\n" for i, name in enumerate(ATTRIBUTES))
    assert list(parse_mapping(text, "m.yaml").attributes) == list(ATTRIBUTES)
    assert len(ATTRIBUTES) == 15


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        # bad YAML: line and column of the problem
        ("timestamp: t\nentityId: [a\n", "m.yaml, line 3, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("timestamp: t\n  bad: indent\n", "m.yaml, line 2, column 6: invalid YAML: mapping values are not allowed here"),
        ("", "m.yaml: the mapping is empty; it needs at least timestamp and entityId"),
        ("- a\n", "m.yaml, line 1: mapping: expected a map (key: value), found a list"),
        # top-level keys
        ("timestamp: t\nentityid: a\n", "m.yaml, line 2: unknown key 'entityid'; did you mean 'entityId'?"),
        ("timestamp: t\nattribute:\n  env: e\n", "m.yaml, line 2: unknown key 'attribute'; did you mean 'attributes'?"),
        ("timestamp: t\nzzz: 1\n", "m.yaml, line 2: unknown key 'zzz'; valid keys: source, entityId, timestamp, attributes, filter, dedupe, report"),
        ("timestamp: t\ntimestamp: u\n", "m.yaml, line 2: timestamp: given twice"),
        ("entityId: x\n", "m.yaml: no timestamp rule; add e.g. `timestamp: {from: finished_at}`"),
        # rules
        ("timestamp: {from: a, value: b}\n", "m.yaml, line 1: timestamp: give exactly one of from, value, template (found: from, value)"),
        ("timestamp: {default: x}\n", "m.yaml, line 1: timestamp: give exactly one of from, value, template (found: none)"),
        ("timestamp: t\nentityId:\n  from: a\n  template: '{b}'\n",
         "m.yaml, line 3: entityId: give exactly one of from, value, template (found: from, template)"),
        ("timestamp: {tempate: x}\n", "m.yaml, line 1: timestamp: unknown key 'tempate'; did you mean 'template'?"),
        ("timestamp: {template: x}\n", "m.yaml, line 1: timestamp.template: no {field} placeholder; use value: for a constant"),
        ("timestamp: {from: t, unit: h}\n", "m.yaml, line 1: timestamp.unit: must be s or ms, not 'h'"),
        ("timestamp: {from: t, unit: s, format: '%Y'}\n", "m.yaml, line 1: timestamp: give unit (epoch numbers) or format (text), not both"),
        ("timestamp: {from: t, format: '%d.%m.%Y %Q'}\n",
         "m.yaml, line 1: timestamp.format: invalid strptime format: 'Q' is a bad directive in format '%d.%m.%Y %Q'"),
        ("timestamp: {from: t, timezone: Mars/Base}\n",
         "m.yaml, line 1: timestamp.timezone: unknown time zone 'Mars/Base'; use an IANA name like Europe/Berlin"),
        ("timestamp: t\nattributes:\n  env: {from: e, format: '%Y'}\n",
         "m.yaml, line 3: attributes.env.format: only timestamps and date attributes take 'format'"),
        ("timestamp: t\nattributes:\n  env: {from: ''}\n", "m.yaml, line 3: attributes.env.from: expected a value or a list of values"),
        ("timestamp: t\nattributes:\n  env: {from: [a, '']}\n", "m.yaml, line 3: attributes.env.from: the list must hold non-empty values"),
        ("timestamp: t\nattributes:\n  env: {from: e, lookup: {prod: }}\n", "m.yaml, line 3: attributes.env.lookup.prod: empty output value"),
        # attribute names: exactly the 15, the closest suggested
        ("timestamp: t\nattributes:\n  Env: e\n", "m.yaml, line 3: attributes: unknown attribute 'Env'; did you mean 'env'?"),
        ("timestamp: t\nattributes:\n  build_sha: s\n",
         "m.yaml, line 3: attributes: unknown attribute 'build_sha'; did you mean 'build_commit_sha'?"),
        ("timestamp: t\nattributes:\n  env: e\n  deploy_start_time: s\n",
         "m.yaml, line 4: attributes: unknown attribute 'deploy_start_time'; did you mean 'deployment_start_time'?"),
        # status must end up success or failed
        ("timestamp: t\nattributes:\n  status: {from: r, lookup: {ok: good}}\n",
         "m.yaml, line 3: attributes.status: status must be 'success' or 'failed', not 'good'"),
        ("timestamp: t\nattributes:\n  status: {value: Success}\n",
         "m.yaml, line 3: attributes.status: status must be 'success' or 'failed', not 'Success'"),
        ("timestamp: t\nattributes:\n  status: {from: r, default: fine}\n",
         "m.yaml, line 3: attributes.status: status must be 'success' or 'failed', not 'fine'"),
        # source
        ("source:\n  format: xml\ntimestamp: t\n",
         "m.yaml, line 2: source.format: unknown format 'xml'; use one of csv, json, ndjson, jenkins, gitlab, github-actions, github-deployments"),
        ("source: {timezone: Europe/Berlim}\ntimestamp: t\n",
         "m.yaml, line 1: source.timezone: unknown time zone 'Europe/Berlim'; did you mean 'Europe/Berlin'?"),
        ("timestamp: t\nsource: {delimiter: ';;'}\n", "m.yaml, line 2: source.delimiter: must be one character such as , ; | or \\t, not ';;'"),
        ("timestamp: t\nsource: {encoding: klingon}\n", "m.yaml, line 2: source.encoding: unknown encoding 'klingon'"),
        ("timestamp: t\nsource: {fromat: csv}\n", "m.yaml, line 2: source: unknown key 'fromat'; did you mean 'format'?"),
        # filter and dedupe
        ("timestamp: t\nfilter:\n  - {field: a, matches: '('}\n",
         "m.yaml, line 3: filter.matches: invalid regular expression: missing ) at '('"),
        ("timestamp: t\nfilter: {field: a, in: [x]}\n",
         "m.yaml, line 2: filter: expected a list of rules like - {field: result, in: [SUCCESS]}"),
        ("timestamp: t\nfilter:\n  - {field: a, in: [x], not_in: [y]}\n",
         "m.yaml, line 3: filter (a): give exactly one of in, not_in, matches"),
        ("timestamp: t\nfilter:\n  - {in: [x]}\n", "m.yaml, line 3: filter: each rule needs field: (the input field to test)"),
        ("timestamp: t\nfilter:\n  - {field: a, equals: x}\n", "m.yaml, line 3: filter: unknown key 'equals'; valid keys: field, in, not_in, matches"),
        ("timestamp: t\ndedupe: []\n", "m.yaml, line 2: dedupe: the list must hold non-empty values"),
    ],
)
def test_mapping_errors_name_the_line_and_key(yaml_text, message):
    with pytest.raises(MappingError) as caught:
        parse_mapping(yaml_text, "m.yaml")
    assert str(caught.value) == message
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match=r"nope\.yaml: no such mapping file$"):
        load_mapping(tmp_path / "nope.yaml")


# --- command-line overrides --------------------------------------------------------------------

def test_overrides_replace_entity_and_set_attributes():
    m = load_mapping(SAMPLE_MAPPING).with_overrides("app-9", {"env": "production", "change_id": "CHG1"})
    assert m.entity == FieldRule(key="--entity-id", line=0, value="app-9")
    assert m.attributes["env"].value == "production" and m.attributes["env"].lookup is None
    assert m.attributes["change_id"].value == "CHG1"
    assert m.attributes["status"].sources == ("result",)  # untouched


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"Env": "x"}, "--set Env=x: unknown attribute 'Env' (did you mean 'env'?)"),
        ({"build_sha": "x"}, "--set build_sha=x: unknown attribute 'build_sha' (did you mean 'build_commit_sha'?)"),
        ({"status": "ok"}, "--set status=ok: status must be 'success' or 'failed', not 'ok'"),
        ({"status": "maybe"}, "--set status=maybe: status must be 'success' or 'failed', not 'maybe'"),
        ({"foo": "bar"}, "--set foo=bar: unknown attribute 'foo'; valid: " + ", ".join(ATTRIBUTES)),
        ({"change_window_start": "tomorrow"}, "--set change_window_start=tomorrow: cannot read 'tomorrow' as a "
         "date-time; give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"),
        ({"deployment_start_time": "2023-02-30"}, "--set deployment_start_time=2023-02-30: cannot read '2023-02-30' "
         "as a date-time; give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"),
        ({"change_window_end": "1850-01-01"}, "--set change_window_end=1850-01-01: '1850-01-01' is outside the years "
         "1900-2199; give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"),
        ({"env": "prod\x1b[2J"}, "--set env='prod\\x1b[2J': holds a control character"),
    ],
)
def test_bad_overrides_are_usage_errors_naming_the_option(sets, message):
    m = parse_mapping("timestamp: t\n", "m.yaml")
    with pytest.raises(UsageError) as caught:
        m.with_overrides(None, sets)
    assert str(caught.value) == message
    assert caught.value.exit_status == ExitStatus.USAGE


@pytest.mark.parametrize(("given", "sent"), [("SUCCEEDED", "success"), ("Failure", "failed"), ("success", "success")])
def test_set_status_takes_the_recognised_spellings(given, sent):
    m = parse_mapping("timestamp: t\n", "m.yaml").with_overrides(None, {"status": given})
    assert m.attributes["status"].value == sent


def test_set_date_in_the_mapping_zone_is_accepted():
    m = parse_mapping("source: {timezone: Europe/Berlin}\ntimestamp: t\n", "m.yaml")
    assert m.with_overrides(None, {"change_window_start": "2023-04-10 10:00"}).attributes["change_window_start"].value
    with pytest.raises(UsageError, match="does not exist in Europe/Berlin"):
        m.with_overrides(None, {"change_window_start": "2023-03-26 02:30"})


def test_check_mapping_command(run_cli, write, tmp_path):
    code, out, err = run_cli("check-mapping", SAMPLE_MAPPING)
    assert (code, err) == (0, "")
    assert out == f"{SAMPLE_MAPPING}: OK (format csv, 8 attributes, 3 filter rules, dedupe on service, build)\n"

    no_entity = write(tmp_path, "m.yaml", "timestamp: t\n")
    code, out, err = run_cli("check-mapping", no_entity)
    assert code == 0
    assert out.splitlines()[-1] == "note: no entityId rule; pass --entity-id ID when you preview or import"

    bad = write(tmp_path, "bad.yaml", "timestamp: t\nattributes:\n  Env: e\n")
    code, out, err = run_cli("check-mapping", bad)
    assert (code, out) == (ExitStatus.BAD_INPUT, "")
    assert err == f"Error: {bad}, line 3: attributes: unknown attribute 'Env'; did you mean 'env'?\n"

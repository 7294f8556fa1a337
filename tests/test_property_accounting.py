"""Property: whatever bytes a CSV, JSON or NDJSON input holds, planning never crashes or hangs; it
either refuses the file with one clear error, or accounts for every row it read:
read = planned + filtered + duplicates + invalid + empty + outside --since/--until."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.display import printable
from backfill.errors import BackfillError
from backfill.mapping import parse_mapping
from backfill.plan import build_plan
from backfill.summary import plan_summary

MAPPING = """\
source: {{format: {fmt}}}
entityId: {{from: svc, default: app}}
timestamp: {{from: [ts, t]}}
attributes:
  env: {{from: env, lookup: {{prod: production}}, default: other}}
  status: {{from: result}}
filter:
  - {{field: job, matches: '^(a+\\s?)+$|^$'}}
dedupe: [svc, id]
"""
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
SINCE = pd.Timestamp("2000-01-01", tz="UTC")

cells = st.one_of(
    st.sampled_from(["", " ", "prod", "web", "a" * 41 + "!", "SUCCESS", "failed", "2023-04-10T10:00:00Z",
                     "1681109507", "1681109507000", "2023-W15-1", "10.04.2023", "nat", "\x1b[2J", "\x00", '"', "\r",
                     "1e300", "-1", "2199-12-31T23:59:59Z", "1899-12-31", "é", "\ufeff"]),
    st.text(max_size=12),
)
columns = st.sampled_from(["svc", "ts", "t", "env", "result", "job", "id", " ts", "x"])


def _plan(path: Path, fmt: str) -> None:
    mapping = parse_mapping(MAPPING.format(fmt=fmt), "m.yaml")
    try:
        plan = build_plan([path], mapping, since=SINCE)
    except BackfillError as exc:  # a whole file refused: one line, no traceback
        assert str(exc) and "Traceback" not in str(exc)
        return
    report = plan.report
    assert report.rows_read == report.accounted, report
    assert report.planned == len(plan.events)
    text = plan_summary(plan)
    assert printable(text, layout=True) == text  # nothing raw for the terminal


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_as_csv(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_bytes(data)
    _plan(path, "csv")


@SETTINGS
@given(
    header=st.lists(columns, min_size=1, max_size=6),
    rows=st.lists(st.lists(cells, max_size=7), max_size=8),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_random_csv_tables(tmp_path_factory, header, rows, delimiter, newline):
    lines = [delimiter.join(header)] + [delimiter.join(row) for row in rows]
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    path.write_bytes(newline.join(lines).encode("utf-8", "surrogatepass"))
    _plan(path, "csv")


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False), cells)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(columns, inner, max_size=3),
                           max_leaves=8)
records = st.lists(st.dictionaries(columns, json_values, max_size=6) | json_values, max_size=8)


@SETTINGS
@given(items=records)
def test_random_json(tmp_path_factory, items):
    path = tmp_path_factory.mktemp("json") / "in.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8", errors="surrogatepass")
    _plan(path, "json")


@SETTINGS
@given(items=records, junk=st.lists(st.binary(max_size=20), max_size=3))
def test_random_ndjson(tmp_path_factory, items, junk):
    lines = [json.dumps(item, ensure_ascii=False).encode("utf-8", "surrogatepass") for item in items] + junk
    path = tmp_path_factory.mktemp("ndjson") / "in.ndjson"
    path.write_bytes(b"\n".join(lines))
    _plan(path, "ndjson")


@SETTINGS
@given(data=st.binary(max_size=300))
def test_random_bytes_as_json_and_ndjson(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "in.json"
    path.write_bytes(data)
    _plan(path, "json")
    _plan(path, "ndjson")

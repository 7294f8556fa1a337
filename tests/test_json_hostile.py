"""Hostile JSON for every JSON reader (issue 8) and the streaming layer's promises (issue 11).

Deep nesting, epoch values that overflow or are in seconds, BOMs, numbers inside lists, JSON type
names in reasons; and: a window of a few characters gives the same rows and the same error lines
(message, line, column) as reading the whole text, for random documents (hypothesis).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backfill.errors import ReaderError
from backfill.readers import SourceConfig, get_reader, jsonstream
from backfill.readers.jsonstream import JSONStream

ROOT = Path(__file__).resolve().parent.parent
JENKINS = ROOT / "mappings" / "jenkins.yaml"
GITLAB = ROOT / "mappings" / "gitlab.yaml"
JSON_MAPPING = "source: {format: FORMAT}\nentityId: {from: app}\ntimestamp: {from: t}\nattributes:\n  build_id: n\n"

DEEP = 5000


def read(path: Path, fmt: str, **source: str):
    """(rows as dicts without missing values, bad rows) of a file read by the `fmt` reader."""
    chunks = list(get_reader(fmt)(path, SourceConfig(format=fmt, **source)))
    found = []
    for chunk in chunks:
        frame = chunk.frame.astype(object)
        for record in frame.where(frame.notna(), None).to_dict(orient="records"):
            found.append({k: v for k, v in record.items() if v is not None})
    return found, [b for c in chunks for b in c.bad]


def good(app: str, n: int) -> dict:
    return {"app": app, "t": "2024-01-01T00:00:00Z", "n": n}


def build(number: int, **fields) -> dict:
    return {"number": number, "result": "SUCCESS", "building": False, "timestamp": 1_700_000_000_000,
            "duration": 1000, "url": f"https://ci/job/app/{number}/", **fields}


def deployment(n: int) -> dict:
    return {"id": n, "iid": n, "sha": "abc", "status": "success", "environment": {"name": "prod"},
            "deployable": {"finished_at": "2024-01-01T00:00:00Z", "status": "success"}}


def deep_array() -> str:
    return "[" * DEEP + "]" * DEEP


def deep_object() -> str:
    return '{"a":' * DEEP + "1" + "}" * DEEP


# --- deep nesting: one bad record, never RecursionError -----------------------------------------

@pytest.mark.parametrize("deep", [deep_array(), deep_object()], ids=["array", "object"])
@pytest.mark.parametrize("fmt", ["json", "ndjson", "jenkins", "gitlab"])
def test_deep_record_is_one_bad_row(tmp_path: Path, fmt: str, deep: str) -> None:
    first, last = {"json": (good("a", 1), good("b", 2)), "ndjson": (good("a", 1), good("b", 2)),
                   "jenkins": (build(1), build(2)), "gitlab": (deployment(1), deployment(2))}[fmt]
    if fmt == "ndjson":
        text = f"{json.dumps(first)}\n{deep}\n{json.dumps(last)}\n"
    else:
        text = f"[{json.dumps(first)}, {deep}, {json.dumps(last)}]"
    path = tmp_path / "in.json"
    path.write_text(text)
    found, bad = read(path, fmt)
    assert len(found) == 2
    assert [b.row for b in bad] == [2]
    assert "nested too deeply" in bad[0].reason


@pytest.mark.parametrize("fmt", ["json", "jenkins", "gitlab"])
@pytest.mark.parametrize("deep", [deep_array(), deep_object(), '{"jobs": ' * DEEP + "[]" + "}" * DEEP],
                         ids=["array", "object", "jobs"])
def test_deep_document_never_crashes(run_cli, tmp_path: Path, fmt: str, deep: str) -> None:
    path = tmp_path / "in.json"
    path.write_text(deep)
    mapping = {"jenkins": JENKINS, "gitlab": GITLAB}.get(fmt)
    if mapping is None:
        mapping = tmp_path / "m.yaml"
        mapping.write_text(JSON_MAPPING.replace("FORMAT", fmt))
    code, out, err = run_cli("preview", path, "-m", mapping, "--entity-id", "app-1", "--show", "0")
    assert code in (0, 3), err  # never an internal error (run_cli checks) and one line when refused
    assert len(err.strip().splitlines()) <= 1


def test_deep_ndjson_line_through_the_cli(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_text(json.dumps(good("a", 1)) + "\n" + deep_object() + "\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(JSON_MAPPING.replace("FORMAT", "ndjson"))
    code, out, _ = run_cli("preview", path, "-m", mapping, "--show", "0")
    assert code == 0
    assert "nested too deeply" in out


# --- Jenkins epoch values -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"timestamp": 1681109507}, "timestamp 1681109507 is before 1990 as epoch milliseconds (it reads as epoch seconds"),
        ({"timestamp": 300000000000000}, "timestamp 300000000000000 is out of range"),
        ({"timestamp": 3e14}, "is out of range"),
        ({"timestamp": 1e20}, "is out of range"),
        ({"timestamp": "__5000_DIGITS__"}, "is out of range"),
        ({"duration": 10**17}, "timestamp + duration (1700000000000 + 100000000000000000 ms) is out of range"),
        ({"duration": 1e20}, "duration 1e+20 is out of range"),
        ({"timestamp": 86_400_000}, "timestamp 86400000 is before 1990 as epoch milliseconds"),
        ({"changeSets": [{"items": [{"commitId": "abc", "timestamp": 1e20}]}]}, "change set timestamp 1e+20 is out of range"),
        ({"changeSets": [{"items": [{"commitId": "abc", "timestamp": 1681109507}]}]}, "change set timestamp 1681109507 is before 1990"),
    ],
)
def test_jenkins_classic_times_that_are_no_jenkins_time(tmp_path: Path, fields: dict, reason: str) -> None:
    path = tmp_path / "in.json"
    text = json.dumps({"fullName": "app", "builds": [build(1), build(2, **fields), build(3)]})
    path.write_text(text.replace('"__5000_DIGITS__"', "9" * 5000))
    found, bad = read(path, "jenkins")
    assert [r["number"] for r in found] == ["1", "3"]
    assert [b.row for b in bad] == [2]
    assert reason in bad[0].reason


def test_jenkins_exponent_written_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('[{"number": 1, "result": "SUCCESS", "timestamp": 1e999999999, "duration": 5}]\n'
                    '[{"number": 2, "result": "SUCCESS", "timestamp": 1700000000000, "duration": 5}]')
    found, bad = read(path, "jenkins")
    assert [r["number"] for r in found] == ["2"]
    assert bad[0].reason.startswith("timestamp 1e999999999 is out of range")


@pytest.mark.parametrize(
    ("run", "reason"),
    [
        ({"startTimeMillis": 1681109507, "durationMillis": 5}, "startTimeMillis 1681109507 is before 1990"),
        ({"startTimeMillis": 1700000000000, "endTimeMillis": 1681109507}, "endTimeMillis 1681109507 is before 1990"),
        ({"startTimeMillis": 1700000000000, "durationMillis": 10**18}, "is out of range"),
        ({"startTimeMillis": 1e20}, "is out of range"),
    ],
)
def test_jenkins_wfapi_times(tmp_path: Path, run: dict, reason: str) -> None:
    path = tmp_path / "in.json"
    runs = [{"id": "1", "name": "#1", "status": "SUCCESS", "startTimeMillis": 1_700_000_000_000, "durationMillis": 5},
            {"id": "2", "name": "#2", "status": "SUCCESS", **run}]
    path.write_text(json.dumps(runs))
    found, bad = read(path, "jenkins")
    assert [r["number"] for r in found] == ["1"]
    assert reason in bad[0].reason


def test_jenkins_blueocean_duration_overflow(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    run = {"id": "7", "pipeline": "app", "state": "FINISHED", "result": "SUCCESS",
           "startTime": "2024-01-01T00:00:00.000+0000", "durationInMillis": 10**18}
    path.write_text(json.dumps([run, {**run, "id": "8", "durationInMillis": 5}]))
    found, bad = read(path, "jenkins")
    assert [r["number"] for r in found] == ["8"]
    assert "startTime + durationInMillis" in bad[0].reason


def test_jenkins_seconds_through_the_cli(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"fullName": "app", "builds": [build(1, timestamp=1681109507), build(2)]}))
    code, out, _ = run_cli("preview", path, "-m", JENKINS, "--entity-id", "app-1", "--set", "env=prod", "--show", "0")
    assert code == 0
    assert "1 invalid" in out and "before 1990" in out
    assert "1970" not in out


# --- BOM, numbers inside lists, JSON type names ---------------------------------------------------

@pytest.mark.parametrize("fmt", ["json", "ndjson", "jenkins", "gitlab"])
@pytest.mark.parametrize("encoding", [None, "utf-8", "UTF8", "utf-8-sig"])
def test_utf8_bom_is_dropped_everywhere(tmp_path: Path, fmt: str, encoding: str | None) -> None:
    record = {"json": good("a", 1), "ndjson": good("a", 1), "jenkins": build(1), "gitlab": deployment(1)}[fmt]
    text = json.dumps(record) + "\n" if fmt == "ndjson" else json.dumps([record])
    path = tmp_path / "in.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    found, bad = read(path, fmt, **({"encoding": encoding} if encoding else {}))
    assert bad == [] and len(found) == 1


@pytest.mark.parametrize("fmt", ["json", "ndjson", "gitlab"])
def test_numbers_inside_lists_keep_their_written_form(tmp_path: Path, fmt: str) -> None:
    record = {**(deployment(1) if fmt == "gitlab" else good("a", 1)), "list": [42, 1.50, -0, 1E+2, "7", None, True],
              "nested": {"l": [{"size": 5551}]}}
    text = json.dumps(record).replace("1.5,", "1.50,").replace("100.0", "1E+2")
    path = tmp_path / "in.json"
    path.write_text(text + "\n" if fmt == "ndjson" else f"[{text}]")
    [row], _ = read(path, fmt)
    assert row["list"] == '[42,1.50,0,1E+2,"7",null,true]'
    assert row["nested.l"] == '[{"size":5551}]'
    assert row["n" if fmt != "gitlab" else "id"] == "1"


@pytest.mark.parametrize(
    ("fmt", "value", "words"),
    [
        ("gitlab", "5", "a number"), ("gitlab", '"x"', "a string"), ("gitlab", "null", "null"),
        ("gitlab", "true", "true"), ("jenkins", "5", "a number"), ("jenkins", '"x"', "a string"),
        ("jenkins", "null", "null"), ("jenkins", "false", "false"), ("json", "null", "null"),
        ("json", "5.0", "a number"), ("ndjson", "5", "a number"), ("ndjson", '"x"', "a string"),
    ],
)
def test_reasons_name_json_types(tmp_path: Path, fmt: str, value: str, words: str) -> None:
    record = {"json": good("a", 1), "ndjson": good("a", 1), "jenkins": build(1), "gitlab": deployment(1)}[fmt]
    text = f"{json.dumps(record)}\n{value}\n" if fmt == "ndjson" else f"[{json.dumps(record)}, {value}]"
    path = tmp_path / "in.json"
    path.write_text(text)
    _, [bad] = read(path, fmt)
    assert bad.reason.split(",")[0].endswith(words)
    assert "JSON str" not in bad.reason and "NoneType" not in bad.reason and "bool" not in bad.reason


def test_records_path_at_an_object_gives_the_full_path(tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text(json.dumps({"data": {"list": [good("a", 1)], "total": 1}}))
    with pytest.raises(ReaderError, match=r"arrays here: data\.list\)$"):
        read(path, "json", records="data")
    found, _ = read(path, "json", records="data.list")
    assert len(found) == 1


# --- the streaming window changes nothing -----------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.text(max_size=6),
                     st.floats(allow_nan=False, allow_infinity=False))
_inner = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_values = st.one_of(_scalars, st.lists(_inner, max_size=4), st.dictionaries(st.text(max_size=4), _inner, max_size=4))
_records = st.lists(st.dictionaries(st.sampled_from(["app", "t", "n", "x", "é"]), _values, max_size=5), max_size=6)


def _documents():
    def corrupt(args):
        records, cut, junk, indent = args
        text = json.dumps(records, indent=indent, ensure_ascii=False)
        if cut is not None:
            at = cut % (len(text) + 1)
            text = text[:at] + junk + text[at:]
        return text

    return st.tuples(_records, st.none() | st.integers(0, 10**6), st.sampled_from(["", ",", "]", "}", "x", '"', "\n", ":"]),
                     st.sampled_from([None, 1])).map(corrupt)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_documents())
@example(text='"[{"app": null}]')  # a whole string, then junk: the reader names the string first
def test_a_tiny_window_reads_and_fails_exactly_as_the_whole_text(tmp_path: Path, monkeypatch, text: str) -> None:
    path = tmp_path / "doc.json"
    path.write_text(text, encoding="utf-8")

    def outcome():
        try:
            found, bad = read(path, "json")
            return found, [(b.row, b.reason) for b in bad]
        except ReaderError as exc:
            return str(exc)

    with monkeypatch.context() as patch:
        patch.setattr(jsonstream, "WINDOW", 1 << 20)
        whole = outcome()
        patch.setattr(jsonstream, "WINDOW", 3)
        assert outcome() == whole
    try:  # and the error line is the json module's, line and column counted in the whole file
        json.loads(text)
    except json.JSONDecodeError as exc:
        assert isinstance(whole, str)  # refused in one line
        if not whole.startswith(f"{path}: expected an array of records, found "):  # e.g. '"[{"' then junk
            assert whole == f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"


def test_stream_reads_values_across_windows() -> None:
    import io

    text = '  [1, "a\\u00e9b", {"k": [2.50, null]}, 123456789]  '
    stream = JSONStream(io.BytesIO(text.encode()), "x", window=2)
    got = []
    for _ in stream.elements():
        got.append(stream.value())
    assert got == ["1", "aéb", {"k": ["2.50", None]}, "123456789"]
    assert stream.at_end()

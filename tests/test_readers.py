"""CSV, JSON and NDJSON readers: every value text or missing, every row numbered as the user sees it."""

from __future__ import annotations

import pandas as pd
import pytest

import backfill.readers as readers
from backfill.errors import ExitStatus, ReaderError
from backfill.readers import ROW, BadRow, SourceConfig, csvfile, get_reader, jsonfile


def rows(chunks) -> list[dict]:
    """All rows of all chunks as dicts, missing values as None."""
    out = []
    for chunk in chunks:
        frame = chunk.frame.astype(object)
        out += frame.where(frame.notna(), None).to_dict(orient="records")
    return out


def read_csv(path, **source) -> list[dict]:
    return rows(csvfile.read(path, SourceConfig(**source)))


def read_all(path, fmt, **source):
    """(rows, bad rows, units) of a file read by the reader of `fmt`."""
    chunks = list(get_reader(fmt)(path, SourceConfig(format=fmt, **source)))
    return rows(chunks), [b for c in chunks for b in c.bad], {c.unit for c in chunks}


# --- CSV -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("data", "source"),
    [
        (b"a,b\n1,x\n", {}),
        (b"\xef\xbb\xbfa,b\n1,x\n", {}),  # UTF-8 with a BOM: the first column is "a", not "\ufeffa"
        (b"\xef\xbb\xbfa,b\n1,x\n", {"encoding": "utf-8"}),  # named utf-8 still drops the BOM
        (b"a,b\r\n1,x\r\n", {}),  # Windows line ends
    ],
)
def test_csv_utf8_with_or_without_bom(tmp_path, write, data, source):
    assert read_csv(write(tmp_path, "in.csv", data), **source) == [{"a": "1", "b": "x", ROW: 2}]


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "ISO-8859-1"])
def test_csv_other_encodings_by_name(tmp_path, write, encoding):
    path = write(tmp_path, "in.csv", "who;note\nJürgen;Größe ½\n", encoding="latin-1")
    assert read_csv(path, encoding=encoding) == [{"who": "Jürgen", "note": "Größe ½", ROW: 2}]


def test_csv_in_latin1_without_encoding_is_a_clear_error(tmp_path, write):
    path = write(tmp_path, "in.csv", "who;note\nJürgen;x\n", encoding="latin-1")
    with pytest.raises(ReaderError) as caught:
        read_csv(path)
    # "who;note\nJ" is 10 bytes, so the bad byte (ü in latin-1) is number 10
    assert str(caught.value) == (
        f"{path}: not valid UTF-8 text (byte 10); set source.encoding in the mapping (e.g. latin-1, cp1252)"
    )
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
@pytest.mark.parametrize("given", [True, False])
def test_csv_delimiters_detected_or_given(tmp_path, write, delimiter, given):
    # the other delimiters appear inside values, so only the right one gives three equal columns
    others = "".join(d for d in ",;|" if d != delimiter)
    lines = [
        ["service", "finished at", "notes"],
        ["web", "2023-01-01 10:00", f"a{others[0]} b{others[1]} c"],
        ["pay", "2023-01-02 11:00", f"x{others[0]}y"],
    ]
    path = write(tmp_path, "in.csv", "".join(delimiter.join(line) + "\n" for line in lines))
    source = {"delimiter": delimiter} if given else {}
    assert read_csv(path, **source) == [
        {"service": "web", "finished at": "2023-01-01 10:00", "notes": f"a{others[0]} b{others[1]} c", ROW: 2},
        {"service": "pay", "finished at": "2023-01-02 11:00", "notes": f"x{others[0]}y", ROW: 3},
    ]


def test_detect_delimiter_of_the_sample():
    from conftest import SAMPLE_CSV

    assert csvfile.detect_delimiter(SAMPLE_CSV.read_text(encoding="utf-8")) == ";"


def test_csv_quoted_fields_with_delimiters_quotes_and_newlines(tmp_path, write):
    text = (
        'id;note;build\n'
        '1;"line one\nline two; still the note";42\n'  # row 2 spans two lines
        '2;"say ""hi""";\n'
        '3;"a\r\nb\n\nc";43\n'  # row 4 spans four lines, one of them blank
        '4;plain;44\n'
    )
    assert read_csv(write(tmp_path, "in.csv", text)) == [
        {"id": "1", "note": "line one\nline two; still the note", "build": "42", ROW: 2},
        {"id": "2", "note": 'say "hi"', "build": "", ROW: 3},
        {"id": "3", "note": "a\r\nb\n\nc", "build": "43", ROW: 4},
        {"id": "4", "note": "plain", "build": "44", ROW: 5},
    ]


def test_csv_columns_stay_text(tmp_path, write):
    # pandas would make build a float column (42.0) because of the empty cell, and sha a number
    text = "build,sha,flag,when\n42,0012,TRUE,NA\n,1e5,no,null\n7,00,,N/A\n"
    assert read_csv(write(tmp_path, "in.csv", text)) == [
        {"build": "42", "sha": "0012", "flag": "TRUE", "when": "NA", ROW: 2},
        {"build": "", "sha": "1e5", "flag": "no", "when": "null", ROW: 3},
        {"build": "7", "sha": "00", "flag": "", "when": "N/A", ROW: 4},
    ]


def test_csv_blank_lines_keep_row_numbers_right(tmp_path, write):
    text = "a,b\n1,x\n\n2,y\n,\n3,z\n\n"
    # the blank line is spreadsheet row 3 and the empty row ",", row 5: neither holds a deployment
    assert read_csv(write(tmp_path, "in.csv", text)) == [
        {"a": "1", "b": "x", ROW: 2},
        {"a": "2", "b": "y", ROW: 4},
        {"a": "3", "b": "z", ROW: 6},
    ]


def test_csv_header_only_has_columns_and_no_rows(tmp_path, write):
    chunks = list(csvfile.read(write(tmp_path, "in.csv", "a;b;c\n"), SourceConfig()))
    assert sum(len(c.frame) for c in chunks) == 0
    assert {"a", "b", "c"} <= set(chunks[0].frame.columns)


@pytest.mark.parametrize("text", ["", "\n\n", "   \n"])
def test_csv_empty_file(tmp_path, write, text):
    path = write(tmp_path, "in.csv", text)
    with pytest.raises(ReaderError) as caught:
        read_csv(path)
    assert str(caught.value) == f"{path}: the file is empty; a CSV needs a header row"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        # an extra field in the first row: pandas would silently make the first column the index
        ("a,b\n1,2,3\n", "row 2 has more fields than the header (2 columns) with delimiter ','; "
                         "check the quoting of that row or set source.delimiter"),
        ("a,b\n1,2\n3,4,5\n", "cannot parse CSV with delimiter ',': Expected 2 fields in line 3, saw 3; "
                              "check the quoting of that row or set source.delimiter"),
    ],
)
def test_csv_rows_with_too_many_fields_are_an_error(tmp_path, write, text, detail):
    path = write(tmp_path, "in.csv", text)
    with pytest.raises(ReaderError) as caught:
        read_csv(path, delimiter=",")
    assert str(caught.value) == f"{path}: {detail}"


def test_csv_short_rows_are_empty_values(tmp_path, write):
    assert read_csv(write(tmp_path, "in.csv", "a,b,c\n1\n"), delimiter=",") == [
        {"a": "1", "b": "", "c": "", ROW: 2}
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.csv", "{path}: no such file"), ("adir", "{path}: is a directory, not a file")],
)
def test_csv_missing_file_or_directory(tmp_path, name, message):
    (tmp_path / "adir").mkdir()
    path = tmp_path / name
    with pytest.raises(ReaderError) as caught:
        read_csv(path)
    assert str(caught.value) == message.format(path=path)


@pytest.mark.parametrize("exact", [False, True])  # by arrow, or (a quote in a value) by the csv module
def test_csv_is_read_in_chunks_with_continuous_row_numbers(tmp_path, write, monkeypatch, exact):
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", 6)  # blocks of whole records, three lines each
    monkeypatch.setattr(csvfile, "CHUNK_ROWS", 3)
    values = [f'{i}"' if exact and i == 1 else str(i) for i in range(10)]
    text = "n\n" + "".join(f"{v}\n" for v in values)
    chunks = list(csvfile.read(write(tmp_path, "in.csv", text), SourceConfig()))
    assert len(chunks) >= 3 and max(len(c.frame) for c in chunks) <= 3
    assert rows(chunks) == [{"n": v, ROW: i + 2} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("text", "source", "name"),
    [
        ("service,build,finished_at,build\nweb,1,2023-01-01,2\n", {}, "build"),  # pandas made it build.1
        ("service;build;finished_at;build\nweb;1;2023-01-01;2\n", {}, "build"),  # detected delimiter
        ('service|"build"|build\nweb|1|2\n', {"delimiter": "|"}, "build"),  # quoted or not, one name
        ("\ufeffid,x,id\n1,2,3\n", {}, "id"),  # after a BOM
        ("a,b,a\n", {}, "a"),  # a header without rows
    ],
)
def test_csv_a_column_named_twice_is_an_error(tmp_path, write, text, source, name):
    path = write(tmp_path, "in.csv", text)
    with pytest.raises(ReaderError) as caught:
        read_csv(path, **source)
    assert str(caught.value) == f"{path}: the header names column {name!r} twice; rename one"


def test_csv_header_names_that_only_look_alike_are_fine(tmp_path, write):
    # other case, blanks around, and empty names (a spreadsheet's `,,`) are different columns
    found = read_csv(write(tmp_path, "in.csv", "build,Build, build,,\n1,2,3,,\n"))
    assert found == [{"build": "1", "Build": "2", " build": "3", "Unnamed: 3": "", "Unnamed: 4": "", ROW: 2}]


def test_csv_duplicate_header_is_a_one_line_error_in_the_cli(tmp_path, write, run_cli):
    data = write(tmp_path, "in.csv", "service,build,finished_at,build\nweb,1,2023-01-01T00:00:00Z,2\n")
    mapping = write(tmp_path, "m.yaml", "source: {format: csv}\nentityId: service\ntimestamp: finished_at\n")
    code, _, err = run_cli("preview", data, "-m", mapping)
    assert code == ExitStatus.BAD_INPUT
    assert f"{data}: the header names column 'build' twice; rename one" in err


# --- JSON ----------------------------------------------------------------------------------------

NESTED = """{
  "data": {
    "page": 1,
    "deployments": [
      {"id": 5551, "ratio": 1.50, "big": 12345678901234567890, "ok": true, "note": null,
       "environment": {"name": "prod", "tier": null},
       "deployable": {"commit": {"id": "abc123", "title": "Fix \\"quotes\\" \\u00e9"}},
       "tags": ["a", "b"]},
      {"id": 5552, "environment": {"name": "staging"}, "extra": ""}
    ]
  }
}"""


def test_json_nested_records_by_dotted_path(tmp_path, write):
    found, bad, units = read_all(write(tmp_path, "in.json", NESTED), "json", records="data.deployments")
    assert units == {"record"} and bad == []
    assert found == [
        {
            "id": "5551", "ratio": "1.50", "big": "12345678901234567890", "ok": "true", "note": None,
            "environment.name": "prod", "environment.tier": None,
            "deployable.commit.id": "abc123", "deployable.commit.title": 'Fix "quotes" é',
            "tags": '["a","b"]', "extra": None, ROW: 1,
        },
        {
            "id": "5552", "ratio": None, "big": None, "ok": None, "note": None,
            "environment.name": "staging", "environment.tier": None,
            "deployable.commit.id": None, "deployable.commit.title": None,
            "tags": None, "extra": "", ROW: 2,
        },
    ]


def test_json_top_level_array_with_a_non_object(tmp_path, write):
    found, bad, _ = read_all(write(tmp_path, "in.json", '[{"a": 1}, 5, {"a": -0.0}]'), "json")
    assert found == [{"a": "1", ROW: 1}, {"a": "-0.0", ROW: 3}]
    assert bad == [BadRow(2, "record is a number, not an object", "5")]  # numbers as text, but told apart


def test_json_utf8_bom_and_empty_array(tmp_path, write):
    found, _, _ = read_all(write(tmp_path, "in.json", b'\xef\xbb\xbf[{"a": "x"}]'), "json")
    assert found == [{"a": "x", ROW: 1}]
    assert read_all(write(tmp_path, "empty.json", "[]"), "json")[0] == []


@pytest.mark.parametrize(
    ("text", "records", "message"),
    [
        ('[{"a": 1},\n {"a": }]', None, "{path}: invalid JSON at line 2, column 8: Expecting value"),
        ('{"a": 1', None, "{path}: invalid JSON at line 1, column 8: Expecting ',' delimiter"),
        ("", None, "{path}: invalid JSON at line 1, column 1: Expecting value"),
        # the hint is the full path that works, two levels down (issue 8)
        ('{"data": {"items": [], "count": 0}}', None,
         "{path}: expected an array of records but found an object; "
         "set source.records to the dotted path of the array (arrays here: data.items)"),
        ('{"items": [], "count": 0}', None,
         "{path}: expected an array of records but found an object; "
         "set source.records to the dotted path of the array (arrays here: items)"),
        ('{"data": {"list": [{"a": 1}], "next": {"more": []}}, "x": []}', "data",
         "{path}: expected an array of records but found an object; "
         "set source.records to the dotted path of the array (arrays here: data.list, data.next.more)"),
        ('{"data": {"n": 1}}', "data",
         "{path}: expected an array of records but found an object; "
         "set source.records to the dotted path of the array (arrays here: none)"),
        ('{"data": {"x": []}}', "data.deployments",
         "{path}: source.records 'data.deployments': no key 'data.deployments' (keys there: x)"),
        ('{"data": 5}', "data.deployments",
         "{path}: source.records 'data.deployments': no key 'data.deployments' (keys there: none, it is a number)"),
        ('"text"', None, "{path}: expected an array of records, found a string"),
        ("null", None, "{path}: expected an array of records, found null"),
        ('[{"a": 1}] [{"a": 2}]', None, "{path}: invalid JSON at line 1, column 12: Extra data"),
    ],
)
def test_json_errors_name_file_line_and_column(tmp_path, write, text, records, message):
    path = write(tmp_path, "in.json", text)
    with pytest.raises(ReaderError) as caught:
        read_all(path, "json", records=records)
    assert str(caught.value) == message.format(path=path)


def test_json_missing_file(tmp_path):
    with pytest.raises(ReaderError, match="no such file"):
        read_all(tmp_path / "nope.json", "json")


# --- NDJSON --------------------------------------------------------------------------------------

def test_ndjson_blank_and_bad_lines(tmp_path, write):
    text = (
        '{"id": 1, "env": {"name": "prod"}}\n'  # line 1
        "\n"  # line 2: blank, ignored
        '{"id": \n'  # line 3: not JSON
        "[1, 2]\n"  # line 4: JSON, but not an object
        "   \n"  # line 5: blank
        '{"id": 1.50, "env": null}\n'  # line 6
        '{"id": "x"}'  # line 7, no final newline
    )
    found, bad, units = read_all(write(tmp_path, "in.ndjson", text), "ndjson")
    assert units == {"line"}
    assert found == [
        {"id": "1", "env.name": "prod", "env": None, ROW: 1},
        {"id": "1.50", "env.name": None, "env": None, ROW: 6},
        {"id": "x", "env.name": None, "env": None, ROW: 7},
    ]
    assert bad == [
        BadRow(3, "invalid JSON at column 8: Expecting value", '{"id":'),
        BadRow(4, "line is an array, not an object", "[1, 2]"),
    ]


def test_ndjson_in_chunks_keeps_line_numbers(tmp_path, write, monkeypatch):
    monkeypatch.setattr(jsonfile, "CHUNK_ROWS", 2)
    text = "".join(f'{{"n": {i}}}\n' if i != 3 else "oops\n" for i in range(6))
    chunks = list(jsonfile.read_ndjson(write(tmp_path, "in.ndjson", text), SourceConfig(format="ndjson")))
    assert max(len(c.frame) for c in chunks) <= 2
    assert rows(chunks) == [{"n": str(i), ROW: i + 1} for i in (0, 1, 2, 4, 5)]
    assert [b.row for c in chunks for b in c.bad] == [4]


@pytest.mark.parametrize(
    ("data", "source", "message"),
    [
        ("Jürgen".encode("latin-1"), {}, "{path}: not valid UTF-8 text (byte 1); set source.encoding in the mapping (e.g. latin-1, cp1252)"),
        (b"{}", {"encoding": "klingon"}, "{path}: unknown encoding 'klingon' in source.encoding"),
    ],
)
def test_ndjson_encoding_errors(tmp_path, write, data, source, message):
    path = write(tmp_path, "in.ndjson", data)
    with pytest.raises(ReaderError) as caught:
        read_all(path, "ndjson", **source)
    assert str(caught.value) == message.format(path=path)


def test_ndjson_latin1_by_name(tmp_path, write):
    path = write(tmp_path, "in.ndjson", '{"who": "Jürgen"}\n', encoding="latin-1")
    assert read_all(path, "ndjson", encoding="latin-1")[0] == [{"who": "Jürgen", ROW: 1}]


def test_json_chunks_number_records_across_chunks(tmp_path, write, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK_ROWS", 2)
    found, _, _ = read_all(write(tmp_path, "in.json", "[" + ",".join(f'{{"n": {i}}}' for i in range(5)) + "]"), "json")
    assert found == [{"n": str(i), ROW: i + 1} for i in range(5)]


def test_every_core_format_has_a_reader():
    assert get_reader("csv") is csvfile.read
    assert get_reader("json") is jsonfile.read_json
    assert get_reader("ndjson") is jsonfile.read_ndjson


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, None), (True, "true"), (False, "false"), ("x", "x"), ("5551", "5551"),
     ({"a": "1"}, '{"a":"1"}'), (["é"], '["é"]')],
)
def test_scalar_text(value, text):
    assert readers.scalar_text(value) == text


def test_frame_values_are_text_or_missing(tmp_path, write):
    chunk = next(jsonfile.read_json(write(tmp_path, "in.json", '[{"a": 1, "b": null}]'), SourceConfig(format="json")))
    assert chunk.frame["a"].iloc[0] == "1" and pd.isna(chunk.frame["b"].iloc[0])


# --- records that are not objects -----------------------------------------------------------------

def test_json_records_that_are_not_objects_say_what_they_are(tmp_path, write):
    text = '{"data": {"deployments": [1, 2.5, "x", true, null, [1], {"a": 7}]}}'
    found, bad, _ = read_all(write(tmp_path, "in.json", text), "json", records="data.deployments")
    assert found == [{"a": "7", ROW: 7}]
    assert type(found[0]["a"]) is str  # numbers are told apart while reading, and stay plain text
    assert bad == [
        BadRow(1, "record is a number, not an object", "1"),
        BadRow(2, "record is a number, not an object", "2.5"),
        BadRow(3, "record is a string, not an object", "x"),
        BadRow(4, "record is true, not an object", "true"),
        BadRow(5, "record is null, not an object", "null"),
        BadRow(6, "record is an array, not an object", "[1]"),  # numbers inside as written (issue 8)
    ]


def test_json_only_numbers_at_records_are_bad_rows(tmp_path, write):
    found, bad, _ = read_all(write(tmp_path, "in.json", '{"data":{"deployments":[1,2]}}'), "json",
                             records="data.deployments")
    assert found == []
    assert bad == [BadRow(1, "record is a number, not an object", "1"), BadRow(2, "record is a number, not an object", "2")]


# --- lone UTF-16 surrogate escapes: a str that cannot be sent as UTF-8 ---------------------------

@pytest.mark.parametrize(
    ("text", "found"),
    [
        (r'"bad \ud800 x"', (5, r"\ud800")),
        (r'"x\udc00"', (2, r"\udc00")),  # a low half alone
        (r'"\uD83D"', (1, r"\uD83D")),  # upper-case hex digits
        (r'"\ud83d\ud83d\ude00"', (1, r"\ud83d")),  # two highs, then a low: the first is alone
        (r'"\ud83d x \ude00"', (1, r"\ud83d")),
        (r'"\\\ud800"', (3, r"\ud800")),  # an escaped backslash, then the escape
        (r'"\ud83d\ude00"', None),  # a valid pair (an emoji)
        (r'"\uD83D\uDE00 and \ud83d\ude01"', None),
        (r'"\\ud800"', None),  # an escaped backslash, then the text "ud800"
        (r'"\\\\ud800"', None),
        (r'"\u00e9 \ue000"', None),  # not surrogates
        ('"plain"', None),
    ],
)
def test_lone_surrogate(text, found):
    assert readers.lone_surrogate(text) == found


def test_ndjson_lone_surrogate_is_a_bad_row(tmp_path, write):
    text = (
        '{"id": 1, "note": "fine \\ud83d\\ude00"}\n'  # a pair: fine
        '{"id": 2, "note": "bad \\ud800 x"}\n'
        '{"id": 3, "note": "literal \\\\ud800"}\n'  # escaped backslash: the text \ud800
        '{"id": 4, "user": {"name": "x\\udc00"}}\n'
    )
    found, bad, _ = read_all(write(tmp_path, "in.ndjson", text), "ndjson")
    assert [row["id"] for row in found] == ["1", "3"]
    assert found[0]["note"] == "fine \U0001F600" and found[1]["note"] == "literal \\ud800"
    assert bad == [
        BadRow(2, "a lone UTF-16 surrogate escape \\ud800 at column 24 cannot be sent as UTF-8; "
                  "remove it or replace it with the intended character", '{"id": 2, "note": "bad \\ud800 x"}'),
        BadRow(4, "a lone UTF-16 surrogate escape \\udc00 at column 30 cannot be sent as UTF-8; "
                  "remove it or replace it with the intended character", '{"id": 4, "user": {"name": "x\\udc00"}}'),
    ]
    for row in found:
        for value in row.values():
            if isinstance(value, str):
                value.encode("utf-8")  # raises on a surrogate


def test_json_lone_surrogate_is_an_error_naming_line_and_column(tmp_path, write):
    path = write(tmp_path, "in.json", '[{"a": "ok \\ud83d\\ude00"},\n {"a": "bad \\ud800 x"}]')
    with pytest.raises(ReaderError) as caught:
        read_all(path, "json")
    assert str(caught.value) == (
        f"{path}: line 2, column 13: a lone UTF-16 surrogate escape \\ud800 (half of a character) cannot be "
        "sent as UTF-8; remove it or replace it with the intended character, then read the file again"
    )


def test_json_escaped_backslash_before_u_is_text(tmp_path, write):
    found, bad, _ = read_all(write(tmp_path, "in.json", '[{"a": "C:\\\\udf00"}]'), "json")
    assert (found, bad) == ([{"a": "C:\\udf00", ROW: 1}], [])


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_lone_surrogate_never_reaches_the_cli_as_an_internal_error(tmp_path, write, run_cli, fmt):
    record = '{"service": "web", "t": "2023-01-01T00:00:00Z", "who": "bad \\ud800 x"}'
    data = write(tmp_path, f"in.{fmt}", record + "\n" if fmt == "ndjson" else f"[{record}]")
    mapping = write(
        tmp_path, "m.yaml",
        f"source: {{format: {fmt}}}\nentityId: service\ntimestamp: t\nattributes:\n  initiator: who\n",
    )
    code, out, err = run_cli("preview", data, "-m", mapping, "--out", tmp_path / "out.jsonl")
    if fmt == "ndjson":
        assert code == 0  # the line is an invalid row, reported in the summary
        assert f"{data} line 1: a lone UTF-16 surrogate escape \\ud800 at column 61" in out
    else:
        assert code == ExitStatus.BAD_INPUT
        assert f"{data}: line 1, column 62: a lone UTF-16 surrogate escape \\ud800" in err

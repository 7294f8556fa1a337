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

    assert csvfile.detect_delimiter(SAMPLE_CSV, "utf-8-sig") == ";"


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


def test_csv_is_read_in_chunks_with_continuous_row_numbers(tmp_path, write, monkeypatch):
    monkeypatch.setattr(csvfile, "CHUNK_ROWS", 3)
    text = "n\n" + "".join(f"{i}\n" for i in range(10))
    chunks = list(csvfile.read(write(tmp_path, "in.csv", text), SourceConfig()))
    assert [len(c.frame) for c in chunks] == [3, 3, 3, 1]
    assert rows(chunks) == [{"n": str(i), ROW: i + 2} for i in range(10)]


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
    assert bad == [BadRow(2, "record is a single value, not an object", "5")]  # numbers are read as text


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
        ('{"data": {"items": [], "count": 0}}', None,
         "{path}: expected an array of records but found an object; "
         "set source.records to the key of the array (arrays here: none)"),
        ('{"items": [], "count": 0}', None,
         "{path}: expected an array of records but found an object; "
         "set source.records to the key of the array (arrays here: items)"),
        ('{"data": {"x": []}}', "data.deployments",
         "{path}: source.records 'data.deployments': no key 'data.deployments' (keys there: x)"),
        ('{"data": 5}', "data.deployments",
         "{path}: source.records 'data.deployments': no key 'data.deployments' (keys there: none, it is a single value)"),
        ('"text"', None, "{path}: expected an array of records, found a single value"),
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
        ("Jürgen".encode("latin-1"), {}, "{path}: not valid UTF-8 text (byte 1); set source.encoding in the mapping"),
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

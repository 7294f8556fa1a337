"""The streaming CSV reader on hostile and careless input: no row merged or lost silently,
bounded delimiter detection, Excel's habits (sep= line, ="0042" cells, blank-looking rows)."""

from __future__ import annotations

import csv
import io
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill.errors import ExitStatus, ReaderError
from backfill.readers import ROW, SourceConfig, csvfile


def read(path, **source):
    out, empty = [], 0
    for chunk in csvfile.read(path, SourceConfig(**source)):
        empty += chunk.empty
        frame = chunk.frame.astype(object)
        out += frame.where(frame.notna(), None).to_dict(orient="records")
    return out, empty


MAPPING = "source: {format: csv}\nentityId: {from: app}\ntimestamp: {from: ts}\n"


# --- quotes that would merge rows --------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the case: row 2's quote opens and never closes on its line; row 4's quote closes it
        ('app,ts,build\nweb,2023-01-01T10:00:00Z,"42\nweb,2023-01-02T10:00:00Z,43\nweb,2023-01-03T10:00:00Z,"44"\n',
         "row 2 (line 4 of the file): text follows a closing quote"),
        # text after a closing quote on one line
        ('app,ts,build\nweb,2023-01-01T10:00:00Z,"42"x\n', "row 2: text follows a closing quote"),
        ('app,ts,build\nweb,2023-01-01T10:00:00Z,1\nweb,"2023"-01-01,2\n', "row 3: text follows a closing quote"),
        # a quote that never closes, to the end of the file
        ('app,ts,build\nweb,2023-01-01T10:00:00Z,"42\nweb,2023-01-02T10:00:00Z,43\n',
         "row 2 (line 3 of the file): a quote opens a field and never closes"),
        ('app,ts,build\nweb,2023-01-01T10:00:00Z,"42', "row 2: a quote opens a field and never closes"),
    ],
)
@pytest.mark.parametrize("block", [4, 1 << 20])
def test_a_quote_that_would_merge_rows_names_the_row(tmp_path, write, monkeypatch, text, message, block):
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", block)
    path = write(tmp_path, "in.csv", text)
    with pytest.raises(ReaderError) as caught:
        read(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_a_merging_quote_in_the_cli_is_one_line_exit_3(tmp_path, write, run_cli):
    path = write(tmp_path, "in.csv", 'app,ts,build\nweb,2023-01-01T10:00:00Z,"42\nweb,2023-01-02T10:00:00Z,43\n'
                                      'web,2023-01-03T10:00:00Z,"44"\n')
    mapping = write(tmp_path, "m.yaml", MAPPING)
    code, out, err = run_cli("preview", path, "-m", mapping)
    assert code == ExitStatus.BAD_INPUT
    assert err.startswith(f"Error: {path}: row 2 (line 4 of the file): text follows a closing quote") and err.count("\n") == 1


@pytest.mark.parametrize("block", [3, 1 << 20])
def test_quotes_inside_unquoted_values_and_quoted_newlines_are_kept(tmp_path, write, monkeypatch, block):
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", block)
    text = 'app,note\nweb,5" screen\nweb,"two\r\nlines, ""quoted"""\nweb,12"\n"a""b",""\n'
    rows, empty = read(write(tmp_path, "in.csv", text))
    assert rows == [
        {"app": "web", "note": '5" screen', ROW: 2},
        {"app": "web", "note": 'two\r\nlines, "quoted"', ROW: 3},
        {"app": "web", "note": '12"', ROW: 4},
        {"app": 'a"b', "note": "", ROW: 5},
    ]


# --- Excel's habits --------------------------------------------------------------------------------

@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
@pytest.mark.parametrize(("sep", "given"), [(";", None), (",", None), ("\t", None), (";", ";")])
def test_excel_sep_line_is_honoured_and_not_a_row(tmp_path, write, line_end, sep, given):
    note = "x" + "".join(d for d in ",;|" if d != sep)  # the other delimiters, more of them than of sep
    text = line_end.join([f"sep={sep}", sep.join(["app", "note"]), sep.join(["web", note]), ""])
    source = {"delimiter": given} if given else {}
    rows, _ = read(write(tmp_path, "in.csv", "\ufeff" + text), **source)
    assert rows == [{"app": "web", "note": note, ROW: 2}]


@pytest.mark.parametrize(
    ("cell", "value"),
    [('="0042"', "0042"), ('"=""0042"""', "0042"), ('"=""a""""b"""', 'a"b'), ('="', '="'), ("=1+2", "=1+2"), ('""', "")],
)
def test_excel_text_formula_cells_read_as_excel_shows_them(tmp_path, write, cell, value):
    rows, _ = read(write(tmp_path, "in.csv", f"app,build\nweb,{cell}\n"))
    assert rows == [{"app": "web", "build": value, ROW: 2}]


def test_rows_of_blanks_and_tabs_are_empty_rows_not_invalid(tmp_path, write, run_cli):
    text = "app,ts\nweb,2023-01-01T10:00:00Z\n  ,\t\n \t \n,\n\nweb,2023-01-02T10:00:00Z\n"
    path = write(tmp_path, "in.csv", text)
    rows, empty = read(path)
    assert [r[ROW] for r in rows] == [2, 7] and empty == 4
    code, out, err = run_cli("preview", path, "-m", write(tmp_path, "m.yaml", MAPPING), "--strict")
    assert (code, err) == (ExitStatus.OK, "")
    assert "Rows: 6 read = 2 planned" in out


# --- delimiter detection ------------------------------------------------------------------------

def test_header_decides_the_delimiter_over_commas_in_values(tmp_path, write):
    text = "app;ts;build;notes\n" + "".join(f"web;2023-01-0{i}T10:00:00Z;{i};'api', 'web', 'db'\n" for i in range(1, 8))
    rows, _ = read(write(tmp_path, "in.csv", text))
    assert rows[0] == {"app": "web", "ts": "2023-01-01T10:00:00Z", "build": "1", "notes": "'api', 'web', 'db'", ROW: 2}


def test_delimiter_detection_is_bounded_on_many_quotes(tmp_path, write):
    # about 66 KB of quoted fields holding other delimiters: csv.Sniffer took 15-20 s on such a file
    line = '"a,b";"c|d";"e\tf";"' + '""x"",' * 20 + '"\n'
    text = "h1;h2;h3;h4\n" + line * (66_000 // len(line))
    path = write(tmp_path, "in.csv", text)
    started = time.perf_counter()
    rows, _ = read(path)
    assert time.perf_counter() - started < 5
    assert list(rows[0])[:4] == ["h1", "h2", "h3", "h4"] and rows[0]["h2"] == "c|d"


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a|b|c", "|"), ('"x;y",b,c', ","), ("single", ",")],
)
def test_detect_delimiter_from_the_header(header, delimiter):
    assert csvfile.detect_delimiter(header + "\n1,2;3\n") == delimiter


# --- streaming: the same rows whatever the block size ----------------------------------------------

FIELD = st.text(alphabet=st.sampled_from(list('ab1 ,;"\n\r\té')), max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.lists(FIELD, min_size=3, max_size=3), max_size=12),
    block=st.sampled_from([1, 2, 5, 17, 1 << 20]),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_rows_are_those_the_csv_module_reads_whatever_the_block_size(tmp_path, write, monkeypatch, rows, block, line_end):
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", block)
    buf = io.StringIO()
    csv.writer(buf, lineterminator=line_end).writerows([["h0", "h1", "h2"], *rows])
    path = write(tmp_path, "in.csv", buf.getvalue())
    got, empty = read(path, delimiter=",")
    back = list(csv.reader(io.StringIO(buf.getvalue(), newline="")))[1:]  # what the csv module reads
    padded = [r + [""] * (3 - len(r)) for r in back]
    expected = [
        {"h0": r[0], "h1": r[1], "h2": r[2], ROW: i} for i, r in enumerate(padded, start=2) if any(v.strip() for v in r)
    ]
    assert got == expected
    assert len(got) + empty == len(back)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=200), block=st.sampled_from([1, 3, 1 << 20]))
def test_random_bytes_never_crash(tmp_path, write, monkeypatch, data, block):
    monkeypatch.setattr(csvfile, "BLOCK_BYTES", block)
    path = write(tmp_path, "in.csv", data)
    try:
        rows, empty = read(path)
    except ReaderError as exc:
        assert "\n" not in str(exc)

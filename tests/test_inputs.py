"""Opening inputs (backfill/readers/inputs.py), as every reader does: read once as a stream, one
clear line for what cannot be read as text, the same BOM rule everywhere."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sqlite3
import subprocess
import sys
import zipfile

import pytest

from backfill.errors import ExitStatus, ReaderError
from backfill.readers import SourceConfig, get_reader, inputs
from backfill.readers.inputs import open_input

from conftest import ROOT

FORMATS = ("csv", "json", "ndjson", "jenkins", "gitlab")
# one small valid document per reader, as UTF-8 text
DOCS = {
    "csv": "service,finished_at\nweb,2023-01-01T10:00:00Z\n",
    "json": '[{"service": "web", "finished_at": "2023-01-01T10:00:00Z"}]',
    "ndjson": '{"service": "web", "finished_at": "2023-01-01T10:00:00Z"}\n',
    "jenkins": '{"fullName": "deploy-web", "number": 7, "result": "SUCCESS", "timestamp": 1672567200000, "duration": 1000}',
    "gitlab": '[{"id": 1, "status": "success", "created_at": "2023-01-01T10:00:00Z", "sha": "abc"}]',
}


def read(path, fmt, **source):
    chunks = list(get_reader(fmt)(path, SourceConfig(format=fmt, **source)))
    return [r for c in chunks for r in c.frame.drop(columns="_row").to_dict(orient="records")]


def xlsx_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    return buf.getvalue()


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("deploys.csv", DOCS["csv"])
    return buf.getvalue()


def parquet_bytes(tmp_path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"service": ["web"]}), tmp_path / "x.parquet")
    return (tmp_path / "x.parquet").read_bytes()


def sqlite_bytes(tmp_path) -> bytes:
    with sqlite3.connect(tmp_path / "x.db") as db:
        db.execute("create table t (a)")
    return (tmp_path / "x.db").read_bytes()


BINARY = {
    "xlsx": (lambda tmp: xlsx_bytes(), "this is an Excel workbook (.xlsx), not a text file: open it in Excel and save it as CSV UTF-8"),
    "zip": (lambda tmp: zip_bytes(), "this is a ZIP archive, not a text file: extract the file from it first (unzip FILE)"),
    "xls": (lambda tmp: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
            "this is an Excel 97-2003 workbook (.xls) or another Office document, not a text file: "
            "open it in Excel and save it as CSV UTF-8"),
    "gzip": (lambda tmp: gzip.compress(DOCS["csv"].encode()),
             "this is gzip-compressed, not a text file: decompress it first (gunzip FILE), then read the result"),
    "bz2": (lambda tmp: bz2.compress(DOCS["csv"].encode()),
            "this is bzip2-compressed, not a text file: decompress it first (bunzip2 FILE), then read the result"),
    "xz": (lambda tmp: lzma.compress(DOCS["csv"].encode()),
           "this is xz-compressed, not a text file: decompress it first (unxz FILE), then read the result"),
    "zstd": (lambda tmp: b"\x28\xb5\x2f\xfd\x24\x05\x29\x00\x00hello",
             "this is zstd-compressed, not a text file: decompress it first (unzstd FILE), then read the result"),
    "pdf": (lambda tmp: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
            "this is a PDF document, not a text file: export the data from the program that made it as CSV or JSON"),
    "parquet": (parquet_bytes, "this is an Apache Parquet file, not a text file: convert it to CSV first "
                               "(e.g. pandas: read_parquet(...).to_csv(...))"),
    "sqlite": (sqlite_bytes, "this is an SQLite database, not a text file: export the table as CSV "
                             "(sqlite3 -header -csv FILE 'select * from TABLE')"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", sorted(BINARY))
def test_binary_formats_are_named_by_every_reader(tmp_path, write, fmt, kind):
    make, message = BINARY[kind]
    path = write(tmp_path, f"in.{kind}", make(tmp_path))
    with pytest.raises(ReaderError) as caught:
        read(path, fmt)
    assert str(caught.value) == f"{path}: {message}"
    assert caught.value.exit_status == ExitStatus.BAD_INPUT


def test_a_csv_whose_header_starts_like_a_magic_is_text(tmp_path, write):
    path = write(tmp_path, "in.csv", "PAR1,BZh9\nx,y\n")
    assert read(path, "csv") == [{"PAR1": "x", "BZh9": "y"}]


UTF16_ADVICE = (
    "this file is UTF-16 (Excel 'Unicode Text'), not UTF-8: save it as UTF-8 (in Excel: Save As 'CSV UTF-8'; "
    "or iconv -f UTF-16 -t UTF-8 FILE > NEW), or set source.encoding: utf-16 in the mapping"
)
UTF32_ADVICE = (
    "this file is UTF-32, not UTF-8: save it as UTF-8 (in Excel: Save As 'CSV UTF-8'; "
    "or iconv -f UTF-32 -t UTF-8 FILE > NEW), or set source.encoding: utf-32 in the mapping"
)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("codec", "bom", "advice"),
    [
        ("utf-16-le", b"\xff\xfe", UTF16_ADVICE),
        ("utf-16-be", b"\xfe\xff", UTF16_ADVICE),
        ("utf-16-le", b"", UTF16_ADVICE),  # no BOM: told by its NUL bytes
        ("utf-32-le", b"\xff\xfe\x00\x00", UTF32_ADVICE),
        ("utf-32-be", b"\x00\x00\xfe\xff", UTF32_ADVICE),
    ],
)
@pytest.mark.parametrize("encoding", [None, "utf-8", "latin-1"])
def test_utf16_and_utf32_are_named_never_latin1(tmp_path, write, fmt, codec, bom, advice, encoding):
    path = write(tmp_path, "in.txt", bom + DOCS[fmt].encode(codec))
    source = {"encoding": encoding} if encoding else {}
    with pytest.raises(ReaderError) as caught:
        read(path, fmt, **source)
    assert str(caught.value) == f"{path}: {advice}"
    assert "latin-1" not in advice


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("codec", "encoding"), [("utf-16", "utf-16"), ("utf-16-le", "utf-16-le"), ("utf-32", "UTF-32")])
def test_utf16_read_when_the_mapping_says_so(tmp_path, write, fmt, codec, encoding):
    plain = write(tmp_path, "plain.txt", DOCS[fmt])
    bom = b"\xff\xfe" if codec == "utf-16-le" else b""
    wide = write(tmp_path, "wide.txt", bom + DOCS[fmt].encode(codec))
    assert read(wide, fmt, encoding=encoding) == read(plain, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoding", [None, "utf-8", "UTF8", "utf_8", "utf-8-sig"])
def test_utf8_bom_is_dropped_by_every_reader_with_or_without_encoding(tmp_path, write, fmt, encoding):
    plain = write(tmp_path, "plain.txt", DOCS[fmt])
    bom = write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + DOCS[fmt].encode())
    source = {"encoding": encoding} if encoding else {}
    assert read(bom, fmt, **source) == read(plain, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_utf8_bom_with_another_encoding_is_refused(tmp_path, write, fmt):
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + DOCS[fmt].encode())
    with pytest.raises(ReaderError) as caught:
        read(path, fmt, encoding="cp1252")
    assert str(caught.value) == (
        f"{path}: the file starts with a UTF-8 byte-order mark, so it is UTF-8 text, but source.encoding is "
        "'cp1252'; remove source.encoding from the mapping"
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("encoding", ["hex", "base64", "rot13", "zlib", "bz2"])
def test_codecs_that_are_not_text_encodings_are_refused(tmp_path, write, fmt, encoding):
    path = write(tmp_path, "in.txt", DOCS[fmt])
    with pytest.raises(ReaderError) as caught:
        read(path, fmt, encoding=encoding)
    assert str(caught.value) == (
        f"{path}: source.encoding {encoding!r} is not a text encoding; name the file's character set "
        "(e.g. utf-8, latin-1, cp1252)"
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_encoding_names_the_file(tmp_path, write, fmt):
    path = write(tmp_path, "in.txt", DOCS[fmt])
    with pytest.raises(ReaderError) as caught:
        read(path, fmt, encoding="klingon")
    assert str(caught.value) == f"{path}: unknown encoding 'klingon' in source.encoding"


@pytest.mark.parametrize("fmt", FORMATS)
def test_os_errors_are_one_line(tmp_path, monkeypatch, fmt):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(inputs, "open", denied, raising=False)
    with pytest.raises(ReaderError) as caught:
        read(tmp_path / "in.txt", fmt)
    assert str(caught.value) == f"{tmp_path / 'in.txt'}: cannot read: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("fmt", FORMATS)
def test_unreadable_file_exit_3(tmp_path, write, run_cli, fmt):
    path = write(tmp_path, "in.txt", DOCS[fmt])
    path.chmod(0)
    mapping = write(tmp_path, "m.yaml", f"source: {{format: {fmt}}}\nentityId: {{value: x}}\ntimestamp: {{from: finished_at}}\n")
    code, out, err = run_cli("preview", path, "-m", mapping)
    assert (code, err) == (ExitStatus.BAD_INPUT, f"Error: {path}: cannot read: Permission denied\n")


def test_read_errors_midway_are_one_line(tmp_path, write, monkeypatch):
    path = write(tmp_path, "in.csv", DOCS["csv"])
    data = open_input(path)

    class Broken:
        def read(self, size):
            raise OSError(5, "Input/output error")

        def close(self):
            pass

    data._raw.close()
    data._raw, data._eof, data._pending = Broken(), False, b""
    with pytest.raises(ReaderError) as caught:
        data.read()
    assert str(caught.value) == f"{path}: cannot read: Input/output error"


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_decode_errors_give_the_file_offset_across_blocks(tmp_path, write, monkeypatch, block):
    monkeypatch.setattr(inputs, "BLOCK_BYTES", block)
    monkeypatch.setattr(inputs, "HEAD_BYTES", 4)
    text = "a,b\n" + "é,ü\n" * 50
    data = text.encode("utf-8") + b"x,\xff\n"
    path = write(tmp_path, "in.csv", b"\xef\xbb\xbf" + data)
    with pytest.raises(ReaderError) as caught:
        with open_input(path) as stream:
            stream.read()
    # counted from 0 after the BOM, as Python's utf-8-sig codec counts
    assert str(caught.value) == (
        f"{path}: not valid UTF-8 text (byte {len(data) - 2}); set source.encoding in the mapping (e.g. latin-1, cp1252)"
    )


@pytest.mark.parametrize("block", [1, 3, 1 << 20])
@pytest.mark.parametrize("codec", ["utf-8", "latin-1", "cp1252", "utf-16", "utf-16-be", "utf-32"])
def test_stream_is_utf8_text_whatever_the_block_size(tmp_path, write, monkeypatch, block, codec):
    monkeypatch.setattr(inputs, "BLOCK_BYTES", block)
    text = "who;note\n" + ("Jürgen;Größe ½\n" if codec == "latin-1" else "Jürgen;Größe ½ €\n") * 20
    path = write(tmp_path, "in.txt", text.encode(codec))
    with open_input(path, None if codec == "utf-8" else codec) as stream:
        pieces = []
        while piece := stream.read(5):
            pieces.append(piece)
    assert b"".join(pieces).decode("utf-8") == text


@pytest.mark.parametrize("fmt", FORMATS)
def test_fifo_and_process_substitution_are_read_once(tmp_path, write, fmt):
    doc = write(tmp_path, "doc.txt", DOCS[fmt])
    mapping = write(
        tmp_path, "m.yaml",
        f"source: {{format: {fmt}}}\nentityId: {{value: app-1}}\ntimestamp: {{from: finished_at}}\n"
        if fmt in ("csv", "json", "ndjson") else
        f"source: {{format: {fmt}}}\nentityId: {{value: app-1}}\ntimestamp: {{from: {'finished_at' if fmt == 'jenkins' else 'created_at'}}}\n",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = f'{sys.executable} -m backfill preview <(cat {doc}) -m {mapping} --show 0'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert (done.returncode, done.stderr) == (0, "")
    assert "1 planned" in done.stdout

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["bash", "-c", f"cat {doc} > {fifo}"])
    done = subprocess.run([sys.executable, "-m", "backfill", "preview", str(fifo), "-m", str(mapping), "--show", "0"],
                          capture_output=True, text=True, timeout=60, env=env)
    writer.wait(timeout=10)
    assert (done.returncode, done.stderr) == (0, "")
    assert "1 planned" in done.stdout

"""`backfill init`: a starter mapping for the user's own files, every line commented with what was found.

    files -> format (a known export, detected from content by its reader; else CSV / JSON / NDJSON)
          -> the first rows (at most SAMPLE_ROWS), read by the same reader the import uses
          -> a guess per role (timestamp, start time, status, environment, SHA, build, URL, ...)
          -> YAML text: the shipped mapping for a known export, else a mapping written from the guesses

A guess is taken only when one column stands out; otherwise the candidates are written as comments
beside the choice (or instead of it). Times without a zone make `source.timezone: ADAPT`, which
check-mapping refuses until the user names the zone: that is the one question a file cannot answer.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from backfill import shipped
from backfill.errors import BackfillError, ReaderError, UsageError
from backfill.mapping import load_mapping
from backfill.normalize import _AWARE, parse_datetimes
from backfill.readers import FORMATS, ROW, SourceConfig, get_reader
from backfill.readers.csvfile import detect_delimiter
from backfill.display import printable as visible

SAMPLE_ROWS = 2000  # rows analysed, over all inputs
HEAD_BYTES = 64 * 1024  # bytes read to tell the encoding and the kind of file
GENERIC = ("csv", "json", "ndjson")
COMMENT_COLUMN = 36
ACCEPT = 0.9  # share of a column's values that must fit a role
TIME_ACCEPT = 0.8  # share of a column's values that must read as times (the rest become invalid rows, reported)

TIME_FORMATS = (
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y %I:%M %p",
    "%d/%m/%Y", "%m/%d/%Y",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M",
    "%d %b %Y %H:%M:%S", "%d %b %Y %H:%M", "%b %d, %Y %H:%M", "%b %d %Y %H:%M:%S",
    "%Y%m%d%H%M%S", "%Y%m%dT%H%M%S",
)

SUCCESS_WORDS = {"success", "succeeded", "successful", "succeed", "passed", "pass", "ok", "done", "green",
                 "completed", "complete", "deployed", "fixed", "true", "yes", "1", "good"}
FAILED_WORDS = {"failed", "failure", "fail", "error", "errored", "broken", "red", "unstable", "rollback",
                "rolled_back", "crashed", "timed_out", "timeout", "false", "no", "0", "bad"}
SKIP_WORDS = {"aborted", "abort", "cancelled", "canceled", "cancel", "skipped", "skip", "not_built", "notbuilt",
              "running", "pending", "in_progress", "queued", "created", "manual", "blocked", "waiting",
              "scheduled", "started", "inactive", "stale", "neutral", "action_required", "requested"}
ENV_NAMES = {"prod": "production", "prd": "production", "production": "production", "live": "production",
             "stg": "staging", "stage": "staging", "staging": "staging", "preprod": "staging",
             "dev": "dev", "development": "dev", "test": "test", "testing": "test", "qa": "qa", "uat": "uat"}

# name fragments per role, strongest first (a column name is compared in lower case, `_.- ` ignored)
NAMES = {
    "timestamp": ("finished", "finish", "ended", "end", "completed", "deployed", "done", "timestamp", "time",
                  "date", "when", "at", "updated", "created"),
    "start": ("started", "start", "begin", "began"),
    "status": ("status", "result", "outcome", "conclusion", "state"),
    "env": ("environment", "env", "stage", "target", "tier"),
    "sha": ("sha", "commit", "revision", "rev", "hash"),
    "build": ("build", "number", "run", "pipeline", "job_id", "buildid", "id", "iid"),
    "url": ("url", "link", "href", "web"),
    "initiator": ("deployed_by", "triggered_by", "initiator", "deployer", "actor", "author", "user", "owner",
                  "by", "who", "login", "username"),
    "service": ("service", "application", "app", "project", "component", "repository", "repo", "system",
                "entity", "module"),
    "description": ("notes", "note", "description", "message", "comment", "title", "summary"),
}
SHA = re.compile(r"[0-9a-fA-F]{40}")
URL = re.compile(r"https?://\S+")


# --------------------------------------------------------------------- small helpers


def shown(value: object, limit: int = 40) -> str:
    """A value as it may appear in a comment: cut to `limit`, invisible characters escaped."""
    text = str(value)
    return visible(text[:limit]) + ("..." if len(text) > limit else "")


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")
_YAML_WORDS = {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"}


def scalar(value: object) -> str:
    """A YAML scalar that reads back as exactly this text."""
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace(
        "\x85", "\\x85")


def _flow_list(values: Iterable[object]) -> str:
    return "[" + ", ".join(scalar(v) for v in values) + "]"


def _key(name: str) -> str:
    return re.sub(r"[\s_.\-]+", "_", name.strip().lower())


def _name_score(name: str, role: str) -> int:
    """How strongly a column name suggests a role: by the first (strongest) fragment it holds."""
    key = _key(name)
    parts = set(key.split("_"))
    fragments = NAMES[role]
    for rank, fragment in enumerate(fragments):
        if key == fragment or fragment in parts or (len(fragment) > 3 and fragment in key):
            return len(fragments) - rank
    return 0


def _share(mask: pd.Series) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _percent(share: float) -> str:
    return f"{share:.0%}"


# --------------------------------------------------------------------- what the files are


def sniff_encoding(head: bytes) -> str | None:
    """None for UTF-8 (BOM or not); else the encoding the bytes decode in."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(codecs.BOM_UTF8):
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)  # a character cut at the end of the head is not an error
        return None
    except UnicodeDecodeError:
        pass
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(HEAD_BYTES)
    except FileNotFoundError:
        raise ReaderError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReaderError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise ReaderError(f"{path}: cannot read: {exc.strerror}") from None


def _json_kind(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()][:3]
    if len(lines) >= 2 and all(line.startswith("{") for line in lines[:2]):
        try:
            json.loads(lines[0])
            return "ndjson"
        except ValueError:
            pass
    return "json"


def _records_paths(doc: object, prefix: str = "", depth: int = 0) -> list[tuple[str, int]]:
    """Dotted paths to arrays of objects inside a JSON document, with their lengths."""
    found: list[tuple[str, int]] = []
    if isinstance(doc, dict) and depth < 4:
        for key, value in doc.items():
            path = f"{prefix}{key}"
            if isinstance(value, list) and value and _share(pd.Series([isinstance(v, dict) for v in value[:50]])) >= 0.5:
                found.append((path, len(value)))
            elif isinstance(value, dict):
                found.extend(_records_paths(value, f"{path}.", depth + 1))
    return found


@dataclass
class Sample:
    """The first rows of the inputs as the import would read them."""

    format: str
    frame: pd.DataFrame
    source: SourceConfig
    notes: list[str] = field(default_factory=list)  # what was found about the files themselves


def _first_rows(paths: Sequence[Path], source: SourceConfig, limit: int) -> pd.DataFrame:
    reader = get_reader(source.format)
    frames, total = [], 0
    for path in paths:
        for chunk in reader(path, source):
            frames.append(chunk.frame.head(limit - total))
            total += len(frames[-1])
            break  # the first chunk is enough; the rest of the file is not read
        if total >= limit:
            break
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame.drop(columns=[ROW], errors="ignore")


def _fit(mapping: shipped.ShippedMapping, rows: pd.DataFrame) -> float:
    """How much of what the shipped mapping reads the rows hold: the mean filled share of its fields."""
    try:
        fields = load_mapping(mapping.path).fields
    except BackfillError:
        return 0.0
    if not fields:
        return 0.0
    return sum(float(rows[f].notna().mean()) if f in rows.columns else 0.0 for f in fields) / len(fields)


def _known_format(paths: Sequence[Path], encoding: str | None) -> tuple[shipped.ShippedMapping, int] | None:
    """The shipped mapping of a specific export format whose reader reads the first input, and
    whose fields the rows fill best (a reader may accept a lookalike: GitLab deployments read as
    GitHub deployments leave most of that mapping's fields empty)."""
    best: tuple[float, int, shipped.ShippedMapping] | None = None
    for mapping in shipped.shipped_mappings():
        if mapping.format in GENERIC or mapping.format not in FORMATS:
            continue
        try:
            rows = _first_rows(paths[:1], SourceConfig(format=mapping.format, encoding=encoding), SAMPLE_ROWS)
        except Exception:  # noqa: BLE001 - not this format; the reader says why only when it is chosen
            continue
        if len(rows):
            score = _fit(mapping, rows)
            if best is None or score > best[0]:
                best = (score, len(rows), mapping)
    return (best[2], best[1]) if best else None


def read_sample(paths: Sequence[Path], *, limit: int = SAMPLE_ROWS) -> Sample | tuple[shipped.ShippedMapping, int, str | None]:
    head = _head(paths[0])
    encoding = sniff_encoding(head)
    text = head.decode(encoding or "utf-8-sig", errors="replace")
    notes = [f"encoding: {encoding or 'UTF-8'}" + (" (not UTF-8: the first 64 KiB decode as " + encoding + ")" if encoding else "")]
    if not text.strip():
        raise ReaderError(f"{paths[0]}: the file is empty")
    if text.lstrip().startswith(("{", "[")):
        known = _known_format(paths, encoding)
        if known is not None:
            return known[0], known[1], encoding
        fmt = _json_kind(text)
        records = None
        if fmt == "json":
            try:
                doc = json.loads(paths[0].read_text(encoding=encoding or "utf-8-sig"))
            except (ValueError, OSError):
                doc = None
            if isinstance(doc, dict):
                found = sorted(_records_paths(doc), key=lambda item: -item[1])
                if not found:
                    raise ReaderError(f"{paths[0]}: a JSON object with no array of records inside; "
                                      "export the records as an array or NDJSON")
                records = found[0][0]
                others = ", ".join(f"{p} ({n})" for p, n in found[1:4])
                notes.append(f"records: the array at {records} ({found[0][1]} records)"
                             + (f"; other arrays: {others}" if others else ""))
        source = SourceConfig(format=fmt, encoding=encoding, records=records)
    else:
        delimiter = detect_delimiter(text)
        notes.append(f"delimiter: {delimiter!r} splits the header and the first rows most consistently")
        source = SourceConfig(format="csv", encoding=encoding, delimiter=delimiter)
    frame = _first_rows(paths, source, limit)
    if not len(frame):
        raise ReaderError(f"{paths[0]}: no rows to learn from")
    return Sample(source.format, frame, source, notes)


# --------------------------------------------------------------------- guesses


@dataclass
class TimeGuess:
    column: str
    share: float
    fmt: str | None = None
    unit: str | None = None
    naive: bool = False
    example: str = ""

    def describe(self) -> str:
        how = f"format {self.fmt}" if self.fmt else f"epoch {'milliseconds' if self.unit == 'ms' else 'seconds'}" \
            if self.unit else "ISO 8601"
        return f"{_percent(self.share)} of the values read as {how}, e.g. {shown(self.example)!r}"


def _values(frame: pd.DataFrame, column: str) -> pd.Series:
    values = frame[column].dropna().astype(str).str.strip()
    return values[values != ""]


def time_guess(column: str, values: pd.Series, partial: list[TimeGuess] | None = None) -> TimeGuess | None:
    """How a column's values read as date-times, if most of them do (else, if a third do, it is
    added to `partial`: a candidate to name in a comment)."""
    if values.empty or _share(values.str.contains(r"\d", regex=True)) < 0.5:
        return None
    values = values.astype("string")
    best: TimeGuess | None = None
    digits = values.str.fullmatch(r"\d+(?:\.\d+)?")
    candidates: list[tuple[str | None, str | None]] = []
    if _share(digits) >= ACCEPT:
        lengths = values.str.split(".").str[0].str.len()
        if not 9 <= lengths.median() <= 13:
            return None  # build numbers, counts, ids: not epoch times (1990 is 9 digits of seconds)
        candidates.append((None, "ms" if lengths.median() >= 12 else "s"))
    candidates.append((None, None))
    candidates.extend((fmt, None) for fmt in TIME_FORMATS)
    for fmt, unit in candidates:
        times, _ = parse_datetimes(values, fmt=fmt, unit=unit, label=column)
        share = _share(times.notna())
        if best is None or share > best.share + 1e-9:
            best = TimeGuess(column, share, fmt, unit, example=str(values.iloc[0]))
        if share >= 0.999:
            break
    if best is None or best.share < TIME_ACCEPT:
        if best is not None and best.share >= 0.3 and partial is not None:
            partial.append(best)
        return None
    if best.unit is None:
        best.naive = best.fmt is not None or _share(values.str.contains(_AWARE, regex=True)) < 0.5
    if best.fmt is None and best.unit is None and _share(digits) >= ACCEPT:
        return None  # plain numbers that happen to be epoch-like but were not taken as such
    return best


def ambiguous_formats(guess: TimeGuess, values: pd.Series) -> list[str]:
    """Other formats that read the values as well (day/month order that the sample cannot tell)."""
    if guess.fmt is None:
        return []
    out = []
    for fmt in TIME_FORMATS:
        if fmt != guess.fmt:
            times, _ = parse_datetimes(values.astype("string"), fmt=fmt, label=guess.column)
            if _share(times.notna()) >= guess.share - 1e-9:
                out.append(fmt)
    return out


def _plain_text(value: str) -> bool:
    """A value a mapping may hold as a constant (check-mapping refuses control characters): values
    with them stay out of lookups, and their rows are reported by the preview."""
    return visible(value) == value


def _status_word(value: str) -> str | None:
    word = re.sub(r"[\s\-]+", "_", value.strip().lower())
    if word in SUCCESS_WORDS:
        return "success"
    if word in FAILED_WORDS:
        return "failed"
    if word in SKIP_WORDS:
        return "skip"
    return None


@dataclass
class Pick:
    column: str
    why: str
    others: list[str] = field(default_factory=list)


def _ranked(frame: pd.DataFrame, role: str, fits, exclude: set[str]) -> list[tuple[float, str, str]]:
    out = []
    for column in frame.columns:
        if column in exclude:
            continue
        values = _values(frame, column)
        if values.empty:
            continue
        found = fits(column, values)
        if found is None:
            continue
        score, why = found
        out.append((score + _name_score(column, role), column, why))
    return sorted(out, key=lambda item: (-item[0], item[1]))


def _pick(ranked: list[tuple[float, str, str]], *, need_name: bool = False, role: str = "") -> Pick | None:
    if not ranked:
        return None
    score, column, why = ranked[0]
    if need_name and _name_score(column, role) == 0:
        return None
    others = [f"{c} ({w})" for s, c, w in ranked[1:4] if s >= score - 1]
    return Pick(column, why, others)


@dataclass
class Guesses:
    timestamp: TimeGuess | None = None
    timestamp_others: list[TimeGuess] = field(default_factory=list)
    start: TimeGuess | None = None
    status: Pick | None = None
    status_values: dict[str, str] = field(default_factory=dict)  # raw value -> success | failed | skip | ""
    env: Pick | None = None
    env_values: list[str] = field(default_factory=list)
    sha: Pick | None = None
    build: Pick | None = None
    url: Pick | None = None
    initiator: Pick | None = None
    service: Pick | None = None
    service_values: list[str] = field(default_factory=list)
    description: Pick | None = None
    dedupe: list[str] = field(default_factory=list)
    dedupe_why: str = ""
    partial: list[TimeGuess] = field(default_factory=list)


def guess(frame: pd.DataFrame) -> Guesses:
    g = Guesses()
    rows = len(frame)
    times: list[TimeGuess] = []
    for column in frame.columns:
        found = time_guess(column, _values(frame, column), g.partial)
        if found is not None:
            times.append(found)
    g.partial.sort(key=lambda t: -t.share)
    starts = [t for t in times if _name_score(t.column, "start")]
    ends = sorted((t for t in times if t not in starts),
                  key=lambda t: (-_name_score(t.column, "timestamp"), -t.share, t.column))
    if ends:
        g.timestamp, g.timestamp_others = ends[0], ends[1:] + starts
    elif starts:
        g.timestamp, g.timestamp_others = starts[0], starts[1:]
    if starts and g.timestamp is not starts[0]:
        g.start = max(starts, key=lambda t: (_name_score(t.column, "start"), t.share))
    used = {t.column for t in times}

    def status_fit(column: str, values: pd.Series):
        distinct = values.unique()
        if len(distinct) > 30 or len(distinct) < 1:
            return None
        known = [v for v in distinct if _status_word(v)]
        share = _share(values.map(lambda v: _status_word(v) is not None))
        if share < 0.5 or not any(_status_word(v) in ("success", "failed") for v in known):
            return None
        return share * 3, f"{len(distinct)} distinct values; {_percent(share)} of the rows hold status words"

    g.status = _pick(_ranked(frame, "status", status_fit, used))
    if g.status:
        values = _values(frame, g.status.column)
        g.status_values = {v: _status_word(v) or "" for v in sorted(values.unique(), key=str) if _plain_text(v)}
        used.add(g.status.column)

    def sha_fit(column: str, values: pd.Series):
        share = _share(values.str.fullmatch(SHA))
        return (share * 3, f"{_percent(share)} are 40-hex SHAs") if share >= 0.8 else None

    g.sha = _pick(_ranked(frame, "sha", sha_fit, used))
    used |= {g.sha.column} if g.sha else set()

    def url_fit(column: str, values: pd.Series):
        share = _share(values.str.fullmatch(URL))
        return (share * 3, f"{_percent(share)} are http(s) URLs") if share >= 0.8 else None

    g.url = _pick(_ranked(frame, "url", url_fit, used))
    used |= {g.url.column} if g.url else set()

    def env_fit(column: str, values: pd.Series):
        distinct = values.unique()
        if len(distinct) > 12 or _name_score(column, "env") == 0 and not any(_key(v) in ENV_NAMES for v in distinct):
            return None
        share = _share(values.map(lambda v: _key(v) in ENV_NAMES))
        return share * 3 + (1 if _name_score(column, "env") else 0), f"{len(distinct)} distinct values"

    g.env = _pick(_ranked(frame, "env", env_fit, used), need_name=False)
    if g.env and (_name_score(g.env.column, "env") or _share(_values(frame, g.env.column).map(lambda v: _key(v) in ENV_NAMES)) >= 0.8):
        g.env_values = sorted((v for v in _values(frame, g.env.column).unique() if _plain_text(v)), key=str)
        used.add(g.env.column)
    else:
        g.env = None

    def service_fit(column: str, values: pd.Series):
        distinct = values.nunique()
        if _name_score(column, "service") == 0 or distinct > 50 or distinct == len(values) and len(values) > 5:
            return None
        return 1.0, f"{distinct} distinct values"

    g.service = _pick(_ranked(frame, "service", service_fit, used), need_name=True, role="service")
    if g.service:
        g.service_values = sorted((v for v in _values(frame, g.service.column).unique() if _plain_text(v)), key=str)
        used.add(g.service.column)

    def build_fit(column: str, values: pd.Series):
        if _name_score(column, "build") == 0 or _share(values.str.len() <= 40) < ACCEPT:
            return None
        unique = values.nunique() / len(values)
        numeric = _share(values.str.fullmatch(r"#?\d+"))
        return unique + numeric, f"{_percent(unique)} unique" + (", numbers" if numeric >= ACCEPT else "")

    g.build = _pick(_ranked(frame, "build", build_fit, used), need_name=True, role="build")
    used |= {g.build.column} if g.build else set()

    def initiator_fit(column: str, values: pd.Series):
        if _name_score(column, "initiator") == 0 or values.nunique() > max(50, len(values) // 2):
            return None
        words = _share(~values.str.fullmatch(r"-?\d+"))  # a name rather than a numeric id
        return words, f"{values.nunique()} distinct values"

    g.initiator = _pick(_ranked(frame, "initiator", initiator_fit, used), need_name=True, role="initiator")
    used |= {g.initiator.column} if g.initiator else set()

    def description_fit(column: str, values: pd.Series):
        return (1.0, "free text") if _name_score(column, "description") else None

    g.description = _pick(_ranked(frame, "description", description_fit, used), need_name=True, role="description")

    key = [p.column for p in (g.service, g.build) if p] if g.build else \
        [c for c in (g.timestamp.column if g.timestamp else None, g.service.column if g.service else None,
                     g.env.column if g.env else None) if c]
    if key:
        dup = int(frame.duplicated(subset=key).sum()) if rows else 0
        g.dedupe = key
        g.dedupe_why = (f"{_rows(dup)} of the first {rows} repeat a key" if dup else f"each of the first {rows} rows has its own key")
    return g


# --------------------------------------------------------------------- the YAML


def _comment_text(text: str) -> str:
    """Comment text from the input's names and values: a line break would end the comment."""
    return visible(text)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, code: str, comment: str = "") -> None:
        comment = _comment_text(comment)
        if comment:
            pad = max(COMMENT_COLUMN - len(code), 1) if code else 0
            self.lines.append(f"{code}{' ' * pad}# {comment}" if code else f"# {comment}")
        else:
            self.lines.append(code)

    def comment(self, text: str, indent: int = 0) -> None:
        self.lines.append(f"{' ' * indent}# {_comment_text(text)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _time_rule(w: _Writer, key: str, indent: int, t: TimeGuess, fallback: str | None = None, naive_zone: bool = True) -> None:
    pad = " " * indent
    source = f"[{scalar(t.column)}, {scalar(fallback)}]" if fallback else scalar(t.column)
    parts = [f"from: {source}"]
    if t.fmt:
        parts.append(f"format: {scalar(t.fmt)}")
    if t.unit:
        parts.append(f"unit: {t.unit}")
    w.line(f"{pad}{key}: {{{', '.join(parts)}}}", f"{t.column}: {t.describe()}")


def render(paths: Sequence[Path], sample: Sample, g: Guesses) -> str:
    w = _Writer()
    rows = len(sample.frame)
    names = ", ".join(str(p) for p in paths)
    w.line(shipped.schema_modeline())
    w.comment(f"backfill init {shown(names, 200)}: a starter mapping from the first {rows} rows "
              f"({len(sample.frame.columns)} columns).")
    w.comment("Check it with `backfill check-mapping FILE`, look with `backfill preview INPUT -m FILE`;")
    w.comment("lines marked ADAPT need a decision only you can make.")

    w.line("source:", "how to read the files")
    w.line(f"  format: {sample.format}", f"the files are {sample.format.upper()}")
    src = sample.source
    if src.delimiter:
        shown_delim = "\\t" if src.delimiter == "\t" else src.delimiter
        w.line(f"  delimiter: {scalar(shown_delim)}", next((n for n in sample.notes if n.startswith("delimiter")), ""))
    if src.encoding:
        w.line(f"  encoding: {scalar(src.encoding)}", next((n for n in sample.notes if n.startswith("encoding")), ""))
    if src.records:
        w.line(f"  records: {scalar(src.records)}", next((n for n in sample.notes if n.startswith("records")), ""))
    t = g.timestamp
    naive = bool(t and t.naive) or bool(g.start and g.start.naive)
    if naive:
        w.line("  timezone: ADAPT", "ADAPT: the times carry no zone: give the IANA zone they were written in")
        w.comment("  (e.g. Europe/Berlin, or UTC). A local time in a DST change, the hour that repeats when clocks", 0)
        w.comment("  go back or the one skipped when they go forward, becomes an invalid row, never a guess.", 0)
    else:
        w.line("  timezone: UTC", "the times carry their zone (or are epoch numbers), so this rarely matters")

    if g.service:
        w.line("entityId:", f"ADAPT: each {g.service.column} value's DevGrid entity (UUID or shortId); "
                            "as written, the names are sent as shortIds")
        w.line(f"  from: {scalar(g.service.column)}", f"{g.service.column}: {g.service.why}"
               + (f"; other candidates: {', '.join(g.service.others)}" if g.service.others else ""))
        w.line("  lookup:", f"the {len(g.service_values)} values found")
        counts = _values(sample.frame, g.service.column).value_counts()
        for value in g.service_values:
            w.line(f"    {scalar(value)}: {scalar(value)}", f"ADAPT ({_rows(int(counts.get(value, 0)))})")
    else:
        w.line("entityId: {value: CHANGE-ME}", "ADAPT: no service/application column found: pass --entity-id ID,")
        w.comment("which replaces this rule, or name the column: {from: COLUMN, lookup: {...}}")

    if t is None:
        w.comment("ADAPT: no column reads as date-times in most rows; name it and its format:")
        w.line("timestamp: {from: CHANGE-ME}", "e.g. {from: finished_at, format: \"%d.%m.%Y %H:%M\"}")
        for t_part in g.partial[:4]:
            w.comment(f"candidate: {t_part.column}: only {t_part.describe()}")
    else:
        fallback = g.start.column if g.start and _values(sample.frame, t.column).size < rows else None
        if fallback and (g.start.fmt, g.start.unit) != (t.fmt, t.unit):
            fallback = None
        _time_rule(w, "timestamp", 0, t, fallback)
        others = ambiguous_formats(t, _values(sample.frame, t.column))
        if others:
            w.comment(f"ADAPT: the values also read as {', '.join(others)}: check the day/month order")
        if fallback:
            w.comment(f"{t.column} is empty in {_rows(rows - _values(sample.frame, t.column).size)}: {fallback} is read there")
        candidates = [o for o in g.timestamp_others if not g.start or o.column != g.start.column]
        if candidates:
            w.comment("other time columns: " + "; ".join(f"{o.column} ({o.describe()})" for o in candidates[:4]))

    w.line("attributes:", "DevGrid event-deploy attributes")
    if g.env:
        w.line("  env:", f"{g.env.column}: {g.env.why}" + (f"; other candidates: {', '.join(g.env.others)}" if g.env.others else ""))
        w.line(f"    from: {scalar(g.env.column)}", "the column")
        pairs = ", ".join(f"{scalar(v)}: {scalar(ENV_NAMES.get(_key(v), v))}" for v in g.env_values)
        w.line(f"    lookup: {{{pairs}}}", "every value found; ADAPT the names DevGrid should show")
    else:
        w.comment("  env: no environment column found; add --set env=production (or a rule here)")
    if g.status:
        w.line("  status:", f"{g.status.column}: {g.status.why}"
               + (f"; other candidates: {', '.join(g.status.others)}" if g.status.others else ""))
        w.line(f"    from: {scalar(g.status.column)}", "the column")
        mapped = {v: s for v, s in g.status_values.items() if s in ("success", "failed")}
        w.line("    lookup:", "the values found, sorted into success and failed")
        counts = _values(sample.frame, g.status.column).value_counts()
        for value, status in mapped.items():
            w.line(f"      {scalar(value)}: {status}", _rows(int(counts.get(value, 0))))
        unknown = [v for v, s in g.status_values.items() if not s]
        if unknown:
            w.comment(f"    ADAPT: not recognised, so rows with them are invalid: {', '.join(shown(v) for v in unknown)}")
    else:
        w.comment("  status: no column of success/failed values found; add {from: COLUMN, lookup: {...}}")
    for key, pick in (("build_id", g.build), ("build_commit_sha", g.sha), ("build_url", g.url),
                      ("initiator", g.initiator), ("description", g.description)):
        if pick:
            w.line(f"  {key}: {scalar(pick.column)}", f"{pick.column}: {pick.why}"
                   + (f"; other candidates: {', '.join(pick.others)}" if pick.others else ""))
    if g.start:
        _time_rule(w, "deployment_start_time", 2, g.start)

    skip = [v for v, s in g.status_values.items() if s == "skip"]
    if skip:
        w.line("filter:", "a row is kept only if every rule holds")
        w.line(f"  - {{field: {scalar(g.status.column)}, not_in: {_flow_list(skip)}}}",
               "not deployments that finished: left out and counted")
    if g.dedupe:
        w.line(f"dedupe: {_flow_list(g.dedupe)}", g.dedupe_why + "; later repeats are folded into the first")
    else:
        w.comment("dedupe: no build id column found; add dedupe: [COLUMN, ...] if a deployment can appear twice")
    return w.text()


def render_known(paths: Sequence[Path], mapping: shipped.ShippedMapping, rows: int) -> str:
    names = ", ".join(str(p) for p in paths)
    text = shipped.show_mapping(mapping.name)
    lines = text.splitlines()
    head = [lines[0]] if lines and shipped.SCHEMA_MODELINE.match(lines[0]) else [shipped.schema_modeline()]
    body = lines[1:] if len(head) and lines and lines[0] == head[0] else lines
    head += [
        f"# backfill init {shown(names, 200)}: the content reads as format {mapping.format} "
        f"({rows} rows in the first chunk by the {mapping.format} reader),",
        f"# so this is the shipped mapping {mapping.name} (backfill mappings show {mapping.name}). Lines marked ADAPT need you.",
    ]
    return "\n".join(head + body) + "\n"


def starter_mapping(inputs: Sequence[str | Path], *, sample_rows: int = SAMPLE_ROWS) -> str:
    """The text of a starter mapping for `inputs` (a known export: its shipped mapping)."""
    if not inputs:
        raise UsageError("give the input files to learn from")
    paths = [Path(p) for p in inputs]
    found = read_sample(paths, limit=sample_rows)
    if isinstance(found, tuple):
        mapping, rows, _ = found
        return render_known(paths, mapping, rows)
    return render(paths, found, guess(found.frame))




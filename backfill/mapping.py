"""Load and validate a YAML mapping. Every error names the file, the YAML line and the key."""

from __future__ import annotations

import codecs
import functools
import string
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import pandas as pd
import yaml

from backfill.errors import MappingError, UsageError
from backfill.events import ATTRIBUTES, DATE_ATTRIBUTES, STATUS_SYNONYMS, STATUS_VALUES, closest
from backfill.normalize import TEXT, parse_datetimes
from backfill.patterns import PatternError, check_pattern
from backfill.readers import FORMATS, SourceConfig

TOP_KEYS = ("source", "entityId", "timestamp", "attributes", "filter", "dedupe", "report")
SOURCE_KEYS = ("format", "delimiter", "encoding", "records", "timezone", "repo_url_matches")
RULE_KEYS = ("from", "value", "template", "lookup", "default", "format", "unit", "timezone")
TIME_ONLY_KEYS = ("format", "unit", "timezone")
FILTER_OPS = ("in", "not_in", "matches")
UNITS = ("s", "ms")
REPORT_KEYS = ("commit_time", "build")
REPORT_RULE_KEYS = ("from", "format", "unit", "timezone")


@dataclass(frozen=True)
class FieldRule:
    """How one output value is made from a row."""

    key: str  # where it is in the mapping, e.g. "attributes.env"
    line: int
    sources: tuple[str, ...] = ()  # `from`: first non-empty wins
    value: str | None = None
    template: str | None = None
    lookup: dict[str, str] | None = None
    default: str | None = None
    format: str | None = None
    unit: str | None = None
    timezone: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """Input fields this rule reads."""
        if self.template is not None:
            return tuple(dict.fromkeys(template_fields(self.template)))
        return self.sources


@dataclass(frozen=True)
class FilterRule:
    field: str
    op: str  # in | not_in | matches
    values: tuple[str, ...]
    line: int

    @property
    def label(self) -> str:
        if self.op == "matches":
            return f"{self.field} matches {self.values[0]!r} (line {self.line})"
        op = "in" if self.op == "in" else "not in"
        return f"{self.field} {op} [{', '.join(self.values)}] (line {self.line})"


@dataclass(frozen=True)
class ReportRules:
    """The optional `report:` section: source fields the preview report reads. Never sent."""

    commit_time: FieldRule | None = None  # when the deployed commit was made (lead time)
    build: tuple[str, ...] = ()  # fields that together name one build (job and number, run id)

    @property
    def fields(self) -> set[str]:
        return {*(self.commit_time.fields if self.commit_time else ()), *self.build}


@dataclass(frozen=True)
class Mapping:
    path: str
    source: SourceConfig
    entity: FieldRule | None
    timestamp: FieldRule
    attributes: dict[str, FieldRule] = field(default_factory=dict)
    filters: tuple[FilterRule, ...] = ()
    dedupe: tuple[str, ...] = ()
    report: ReportRules = field(default_factory=ReportRules)

    def with_overrides(self, entity_id: str | None, sets: dict[str, str]) -> "Mapping":
        """The mapping with command-line constants (--entity-id, --set NAME=VALUE) in place."""
        from dataclasses import replace

        attributes = dict(self.attributes)
        for name, value in sets.items():
            attributes[name] = FieldRule(key=f"--set {name}", line=0, value=self._set_value(name, value))
        entity = self.entity
        if entity_id is not None:
            if _control(entity_id):
                raise UsageError(f"--entity-id {entity_id!r}: holds a control character")
            entity = FieldRule(key="--entity-id", line=0, value=entity_id.strip())
        return replace(self, attributes=attributes, entity=entity)

    def _set_value(self, name: str, value: str) -> str:
        """A `--set NAME=VALUE` checked as the mapping's constants are: a usage error (exit 2)
        naming the option, never every row invalid or the mapping file blamed."""
        option = f"--set {name}={value}"
        if name not in ATTRIBUTES:
            hint = closest(name, ATTRIBUTES)
            raise UsageError(
                f"{option}: unknown attribute {name!r}"
                + (f" (did you mean {hint!r}?)" if hint else f"; valid: {', '.join(ATTRIBUTES)}")
            )
        value = value.strip()
        if not value:
            raise UsageError(f"{option}: empty value; leave the --set out to send no {name}")
        if _control(value):
            raise UsageError(f"--set {name}={value!r}: holds a control character")
        if name == "status":
            status = STATUS_SYNONYMS.get(value.lower())
            if status is None:
                raise UsageError(f"{option}: status must be 'success' or 'failed', not {value!r}")
            return status
        if name in DATE_ATTRIBUTES:
            times, why = parse_datetimes(pd.Series([value], dtype=TEXT), timezone=self.source.timezone, label=name)
            if pd.isna(times.iloc[0]):
                reason = why.iloc[0] if isinstance(why.iloc[0], str) else f"cannot read {value!r} as a date-time"
                raise UsageError(
                    f"{option}: {reason.removeprefix(name + ': ').split('; give timestamp format')[0]}; "
                    "give an ISO 8601 date-time such as 2023-04-10T08:00:00Z"
                )
        return value

    @property
    def fields(self) -> set[str]:
        """Every input field the mapping reads."""
        out: set[str] = set()
        for rule in self.rules():
            out.update(rule.fields)
        out.update(f.field for f in self.filters)
        out.update(self.dedupe)
        out.update(self.report.fields)
        return out

    def rules(self) -> list[FieldRule]:
        rules = [self.timestamp, *self.attributes.values()]
        return [self.entity, *rules] if self.entity else rules


def _control(text: str) -> bool:
    """True when text holds a control character (C0, DEL, C1), which no constant should."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


# --- YAML with line numbers -------------------------------------------------------------

class _Err:
    def __init__(self, path: str):
        self.path = path

    def __call__(self, node: yaml.Node | None, message: str) -> MappingError:
        line = f", line {node.start_mark.line + 1}" if node is not None else ""
        return MappingError(f"{self.path}{line}: {message}")


def _scalar(node: yaml.Node, err: _Err, key: str) -> str | None:
    """A scalar's text as written (so `yes`, `NO`, `042` stay text); None for null."""
    if not isinstance(node, yaml.ScalarNode):
        raise err(node, f"{key}: expected a single value, found a {_kind(node)}")
    if node.tag == "tag:yaml.org,2002:null" and node.style is None:
        return None
    return node.value


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "map", yaml.SequenceNode: "list"}.get(type(node), "value")


def _pairs(node: yaml.Node, err: _Err, key: str) -> list[tuple[str, yaml.ScalarNode, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        raise err(node, f"{key}: expected a map (key: value), found a {_kind(node)}")
    out, seen = [], set()
    for knode, vnode in node.value:
        name = _scalar(knode, err, key)
        if name is None:
            raise err(knode, f"{key}: empty key")
        if name in seen:
            raise err(knode, f"{key + '.' if key != 'mapping' else ''}{name}: given twice")
        seen.add(name)
        out.append((name, knode, vnode))
    return out


def _unknown(name: str, valid: tuple[str, ...], where: str) -> str:
    hint = closest(name, valid)
    suggestion = f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(valid)}"
    return f"unknown key {where}{name!r}; {suggestion}"


def _str_list(node: yaml.Node, err: _Err, key: str) -> tuple[str, ...]:
    if isinstance(node, yaml.SequenceNode):
        values = [_scalar(item, err, key) for item in node.value]
        if not values or any(v is None or v == "" for v in values):
            raise err(node, f"{key}: the list must hold non-empty values")
        return tuple(v for v in values if v is not None)
    value = _scalar(node, err, key)
    if not value:
        raise err(node, f"{key}: expected a value or a list of values")
    return (value,)


def _rule(node: yaml.Node, err: _Err, key: str, *, is_time: bool) -> FieldRule:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        value = _scalar(node, err, key)
        if not value:
            raise err(node, f"{key}: empty rule; give a field name or {{from: ..., value: ..., template: ...}}")
        return FieldRule(key=key, line=line, sources=(value,))
    parts: dict[str, Any] = {}
    for name, knode, vnode in _pairs(node, err, key):
        if name not in RULE_KEYS:
            raise err(knode, f"{key}: " + _unknown(name, RULE_KEYS, ""))
        if name in TIME_ONLY_KEYS and not is_time:
            raise err(knode, f"{key}.{name}: only timestamps and date attributes take {name!r}")
        if name == "from":
            parts["sources"] = _str_list(vnode, err, f"{key}.from")
        elif name == "lookup":
            parts["lookup"] = {}
            for lname, lknode, lvnode in _pairs(vnode, err, f"{key}.lookup"):
                source = lname.strip()  # compared with stripped source values
                if source in parts["lookup"]:
                    raise err(lknode, f"{key}.lookup: {source!r} given twice (keys are compared stripped)")
                parts["lookup"][source] = _constant(lvnode, err, f"{key}.lookup.{lname}", "empty output value")
        else:
            parts[name] = _constant(vnode, err, f"{key}.{name}", "empty value")
    given = [k for k in ("sources", "value", "template") if k in parts]
    if len(given) != 1:
        names = {"sources": "from", "value": "value", "template": "template"}
        found = ", ".join(names[g] for g in given) or "none"
        raise err(node, f"{key}: give exactly one of from, value, template (found: {found})")
    if "template" in parts:
        try:
            names = template_fields(parts["template"])
        except ValueError as exc:
            raise err(node, f"{key}.template: {exc}") from None
        if not names:
            raise err(node, f"{key}.template: no {{field}} placeholder; use value: for a constant")
        if any(not n or "[" in n or "!" in n for n in names):
            raise err(node, f"{key}.template: placeholders must be plain field names like {{build}}")
        for _, field_name, spec, conversion in string.Formatter().parse(parts["template"]):
            if field_name is not None and (spec or conversion):
                written = "{" + field_name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
                raise err(
                    node,
                    f"{key}.template: {written}: format specs and conversions are not supported; placeholders are "
                    f"plain field names like {{{field_name}}} (values are sent as the text they are)",
                )
    if parts.get("unit") and parts["unit"] not in UNITS:
        raise err(node, f"{key}.unit: must be s or ms, not {parts['unit']!r}")
    if parts.get("unit") and parts.get("format"):
        raise err(node, f"{key}: give unit (epoch numbers) or format (text), not both")
    if parts.get("timezone"):
        _zone(parts["timezone"], err, node, f"{key}.timezone")
    if parts.get("format"):
        _strptime_format(parts["format"], err, node, f"{key}.format")
    return FieldRule(key=key, line=line, **parts)


def _constant(node: yaml.Node, err: _Err, key: str, empty: str) -> str:
    """A value written in the mapping, stripped like the source's values: blanks alone are empty."""
    value = _scalar(node, err, key)
    if value is None or not value.strip():
        raise err(node, f"{key}: {empty}" + (" (only blanks)" if value else ""))
    if _control(value):
        raise err(node, f"{key}: {value!r} holds a control character")
    return value.strip()


def _strptime_format(fmt: str, err: _Err, node: yaml.Node, key: str) -> None:
    """A format strptime rejects (bad directive, stray %) is a mapping error, not a crash per row."""
    try:
        datetime.strptime("", fmt)
    except ValueError as exc:
        if not str(exc).startswith("time data"):  # "does not match" is the expected outcome for ""
            raise err(node, f"{key}: invalid strptime format: {exc}") from None


@functools.lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone_problem(name: str) -> str | None:
    """Why `name` is not a time zone the planner can use (None when it is): an IANA zone name,
    not a zone directory (`Europe`), a file of the zone database (`zone.tab`) or a path."""
    if name in _zones():
        return None
    inside = sorted(z for z in _zones() if z.startswith(name.rstrip("/") + "/"))
    if inside and name.rstrip("/"):
        return (
            f"{name!r} is a region (a directory of zones), not a time zone; "
            f"name a zone in it such as {', '.join(inside[:3])}"
        )
    try:
        ZoneInfo(name)
        pd.Timestamp("2020-01-01").tz_localize(name)
        return None  # a zone outside the list, such as posixrules
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError, OSError, pandas' own
        pass
    hint = closest(name, sorted(_zones()))
    suggestion = f"did you mean {hint!r}?" if hint else "use an IANA name like Europe/Berlin"
    return f"unknown time zone {name!r}; {suggestion}"


def _zone(name: str, err: _Err, node: yaml.Node, key: str) -> None:
    problem = zone_problem(name)
    if problem:
        raise err(node, f"{key}: {problem}")


def _check_status_rule(path: str, rule: FieldRule) -> None:
    bad = [v for v in (rule.lookup or {}).values() if v not in STATUS_VALUES]
    if rule.value is not None and rule.value not in STATUS_VALUES:
        bad.append(rule.value)
    if rule.default is not None and rule.default not in STATUS_VALUES:
        bad.append(rule.default)
    if bad:
        where = f"{path}, line {rule.line}" if rule.line else path
        raise MappingError(
            f"{where}: {rule.key}: status must be 'success' or 'failed', not {bad[0]!r}"
        )


def parse_mapping(text: str, path: str = "<mapping>") -> Mapping:
    err = _Err(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise MappingError(f"{path}: invalid YAML: nested too deeply (a mapping is a few levels of keys)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MappingError(f"{path}{where}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: invalid YAML: {exc}") from None
    if root is None:
        raise MappingError(f"{path}: the mapping is empty; it needs at least timestamp and entityId")
    sections: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for name, knode, vnode in _pairs(root, err, "mapping"):
        if name not in TOP_KEYS:
            raise err(knode, _unknown(name, TOP_KEYS, ""))
        sections[name] = (knode, vnode)

    source = _source(sections.get("source"), err)
    if "timestamp" not in sections:
        raise err(None, "no timestamp rule; add e.g. `timestamp: {from: finished_at}`")
    timestamp = _rule(sections["timestamp"][1], err, "timestamp", is_time=True)
    entity = _rule(sections["entityId"][1], err, "entityId", is_time=False) if "entityId" in sections else None

    attributes: dict[str, FieldRule] = {}
    if "attributes" in sections:
        for name, knode, vnode in _pairs(sections["attributes"][1], err, "attributes"):
            if name not in ATTRIBUTES:
                raise err(knode, "attributes: " + _unknown(name, ATTRIBUTES, "").replace("key", "attribute", 1))
            rule = _rule(vnode, err, f"attributes.{name}", is_time=name in DATE_ATTRIBUTES)
            if name == "status":
                _check_status_rule(path, rule)
            attributes[name] = rule

    filters: list[FilterRule] = []
    if "filter" in sections:
        node = sections["filter"][1]
        if not isinstance(node, yaml.SequenceNode):
            raise err(node, "filter: expected a list of rules like - {field: result, in: [SUCCESS]}")
        for item in node.value:
            filters.append(_filter(item, err))

    dedupe: tuple[str, ...] = ()
    if "dedupe" in sections:
        dedupe = _str_list(sections["dedupe"][1], err, "dedupe")
    report = _report(sections["report"][1], err) if "report" in sections else ReportRules()
    return Mapping(path, source, entity, timestamp, attributes, tuple(filters), dedupe, report)


def _report(node: yaml.Node, err: _Err) -> ReportRules:
    """`report: {commit_time: FIELD-RULE, build: [FIELD, ...]}`: read by the preview report only."""
    parts: dict[str, Any] = {}
    for name, knode, vnode in _pairs(node, err, "report"):
        if name not in REPORT_KEYS:
            raise err(knode, "report: " + _unknown(name, REPORT_KEYS, ""))
        if name == "build":
            parts["build"] = _str_list(vnode, err, "report.build")
            continue
        if isinstance(vnode, yaml.MappingNode):
            for key, kn, _ in _pairs(vnode, err, "report.commit_time"):
                if key not in REPORT_RULE_KEYS:
                    raise err(kn, f"report.commit_time: {key!r} is not used here (the report only reads the "
                                  f"field); give {', '.join(REPORT_RULE_KEYS)}")
        parts["commit_time"] = _rule(vnode, err, "report.commit_time", is_time=True)
    return ReportRules(**parts)


def _source(section: tuple[yaml.Node, yaml.Node] | None, err: _Err) -> SourceConfig:
    if section is None:
        return SourceConfig()
    values: dict[str, str] = {}
    for name, knode, vnode in _pairs(section[1], err, "source"):
        if name not in SOURCE_KEYS:
            raise err(knode, "source: " + _unknown(name, SOURCE_KEYS, ""))
        value = _scalar(vnode, err, f"source.{name}")
        if value is None or value == "":
            raise err(vnode, f"source.{name}: empty value")
        values[name] = value
        if name == "format" and value not in FORMATS:
            raise err(vnode, f"source.format: unknown format {value!r}; use one of {', '.join(FORMATS)}")
        if name == "delimiter":
            value = {"\\t": "\t", "tab": "\t"}.get(value, value)
            problem = delimiter_problem(value)
            if problem:
                raise err(vnode, f"source.delimiter: {problem}")
            values[name] = value
        if name == "timezone":
            _zone(value, err, vnode, "source.timezone")
        if name == "repo_url_matches":
            _regex(value, err, vnode, "source.repo_url_matches")
        if name == "encoding":
            problem = encoding_problem(value)
            if problem:
                raise err(vnode, f"source.encoding: {problem}")
    return SourceConfig(**values)


def delimiter_problem(value: str) -> str | None:
    """Why `value` cannot separate CSV fields (None when it can): one ASCII character that is not a
    line break, a quote, a letter, a digit or another control character; tab is allowed."""
    shown = repr(value)
    if len(value) != 1:
        return f"must be one character such as , ; | or \\t, not {shown}"
    if value in "\r\n":
        return f"{shown} is a line break: rows end there; use , ; | or \\t"
    if value == '"':
        return "'\"' is the quote character; use , ; | or \\t"
    if value != "\t" and not 32 <= ord(value) < 127:
        kind = "a control character" if ord(value) < 32 or ord(value) == 127 else "not an ASCII character"
        return f"{shown} is {kind}; use , ; | or \\t (the CSV parser splits on one ASCII byte)"
    if value.isalnum():
        return f"{shown} is a letter or digit, which would split values; use , ; | or \\t"
    return None


# Codecs with a name that are not a file's text encoding (bytes <-> str of a file, chunk by chunk).
_NOT_FILE_ENCODINGS = {"idna", "punycode", "undefined", "unicode_escape", "raw_unicode_escape", "unicode_internal"}


def encoding_problem(name: str) -> str | None:
    """Why `name` cannot decode an input file (None when it can): unknown, or a codec that is not a
    text encoding (hex, base64, rot13, zlib, ...) or that transforms text (idna, unicode_escape)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        return f"unknown encoding {name!r}"
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _NOT_FILE_ENCODINGS:
        return f"{name!r} is not a text encoding (it is a codec that transforms data); use e.g. utf-8, latin-1, cp1252"
    try:
        codecs.getincrementaldecoder(info.name)
    except (LookupError, TypeError):
        return f"{name!r} cannot decode a file piece by piece; use e.g. utf-8, latin-1, cp1252"
    return None


def _regex(pattern: str, err: _Err, node: yaml.Node, key: str) -> None:
    """Only patterns RE2 runs (linear time): a backtracking construct is refused here, not at run time."""
    try:
        check_pattern(pattern)
    except PatternError as exc:
        raise err(node, f"{key}: {exc}") from None


def _filter(node: yaml.Node, err: _Err) -> FilterRule:
    line = node.start_mark.line + 1
    parts = {name: (knode, vnode) for name, knode, vnode in _pairs(node, err, "filter")}
    for name, (knode, _) in parts.items():
        if name not in ("field", *FILTER_OPS):
            raise err(knode, "filter: " + _unknown(name, ("field", *FILTER_OPS), ""))
    if "field" not in parts:
        raise err(node, "filter: each rule needs field: (the input field to test)")
    name = _scalar(parts["field"][1], err, "filter.field")
    if not name:
        raise err(node, "filter.field: empty")
    ops = [op for op in FILTER_OPS if op in parts]
    if len(ops) != 1:
        raise err(node, f"filter ({name}): give exactly one of in, not_in, matches")
    op = ops[0]
    vnode = parts[op][1]
    if op == "matches":
        pattern = _scalar(vnode, err, "filter.matches")
        if pattern is None:
            raise err(vnode, "filter.matches: empty pattern")
        _regex(pattern, err, vnode, "filter.matches")
        return FilterRule(name, op, (pattern,), line)
    # compared with stripped source values, so stripped too (blanks alone are "", the empty value)
    if isinstance(vnode, yaml.SequenceNode):
        values = tuple("" if v is None else v.strip() for v in (_scalar(i, err, f"filter.{op}") for i in vnode.value))
    else:
        single = _scalar(vnode, err, f"filter.{op}")
        values = ("" if single is None else single.strip(),)
    return FilterRule(name, op, values, line)


def load_mapping(path: str | Path) -> Mapping:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise MappingError(f"{path}: no such mapping file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: cannot read the mapping: {exc}") from None
    return parse_mapping(text, str(path))

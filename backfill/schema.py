"""The JSON Schema of mapping files, built from the names mapping.py accepts.

The schema ships as mappings/mapping.schema.json (installed with the package) for editors:
`# yaml-language-server: $schema=...` gives completion and checking while typing. It describes the
structure; `backfill check-mapping` checks what a schema cannot (time zones exist, strptime formats
and regexes compile). `python -m backfill.schema` prints it; a test keeps the shipped file equal to it.
"""

from __future__ import annotations

import json
from typing import Any

from backfill.events import ATTRIBUTES, DATE_ATTRIBUTES, STATUS_VALUES
from backfill.mapping import (
    FILTER_OPS, REPORT_KEYS, REPORT_RULE_KEYS, RULE_KEYS, SOURCE_KEYS, TIME_ONLY_KEYS, TOP_KEYS, UNITS,
)
from backfill.readers import FORMATS

SCHEMA_ID = "https://devgrid.io/schemas/backfill/mapping.schema.json"

# YAML scalars as an editor types them: `value: 042` is a number there, text to backfill; both are fine.
_SCALAR_DEF = {"anyOf": [{"type": "string", "minLength": 1}, {"type": ["number", "boolean"]}]}
_SCALAR = {"$ref": "#/definitions/scalar"}
_FIELDS_DEF = {"anyOf": [_SCALAR, {"type": "array", "minItems": 1, "items": _SCALAR}]}
_FIELDS = {"$ref": "#/definitions/fields"}
_RULE_DOC = {
    "from": "input field(s) to read; with several, the first non-empty one wins",
    "value": "a constant",
    "template": "text with {field} placeholders, e.g. '{job}#{number}'",
    "lookup": "map input values to output values (others: default, else the row is invalid)",
    "default": "the output when the field is empty or not in the lookup",
    "format": "strptime format for text times, e.g. '%d.%m.%Y %H:%M'",
    "unit": "epoch numbers in seconds (s) or milliseconds (ms)",
    "timezone": "IANA zone for times written without one (overrides source.timezone)",
}
_SOURCE_DOC = {
    "format": "how to read the input files",
    "delimiter": "CSV delimiter, one character (\\t or tab for a tab)",
    "encoding": "input encoding (default: UTF-8, a BOM is honoured)",
    "records": "JSON: dotted path to the list of records inside the document",
    "timezone": "IANA zone for times written without one (default UTC)",
    "repo_url_matches": "Jenkins: regex on the git remote URL that picks the application's commit",
}


def _rule(*, is_time: bool, values: list[str] | None = None, keys: tuple[str, ...] = RULE_KEYS) -> dict[str, Any]:
    out_value: dict[str, Any] = {"enum": values} if values else _SCALAR
    keys = tuple(k for k in keys if is_time or k not in TIME_ONLY_KEYS)
    exclusive = [k for k in ("from", "value", "template") if k in keys]
    props: dict[str, Any] = {}
    for key in keys:
        if key == "from":
            props[key] = _FIELDS
        elif key == "lookup":
            props[key] = {"type": "object", "additionalProperties": out_value}
        elif key in ("value", "default"):
            props[key] = out_value
        elif key == "template":
            props[key] = {"type": "string", "pattern": r"\{[^{}\[\]!]+\}"}
        elif key == "unit":
            props[key] = {"enum": list(UNITS)}
        else:
            props[key] = {"type": "string", "minLength": 1}
        props[key] = {"description": _RULE_DOC.get(key, key), **props[key]}
    rule: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": props,
        "oneOf": [{"required": [k]} for k in exclusive],
    }
    if is_time and "unit" in keys and "format" in keys:
        rule["not"] = {"required": ["unit", "format"]}
    return {"anyOf": [_SCALAR, rule]}


def _filter_rule() -> dict[str, Any]:
    listed = {"anyOf": [{"type": ["string", "number", "boolean", "null"]},
                        {"type": "array", "items": {"type": ["string", "number", "boolean", "null"]}}]}
    props: dict[str, Any] = {"field": {"description": "the input field to test", **_SCALAR}}
    for op in FILTER_OPS:
        props[op] = {"type": "string", "description": "keep rows whose field matches this regex (RE2)"} \
            if op == "matches" else {"description": f"keep rows whose field is {op.replace('_', ' ')} these values", **listed}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["field"],
        "properties": props,
        "oneOf": [{"required": [op]} for op in FILTER_OPS],
    }


def mapping_schema() -> dict[str, Any]:
    defs = {
        "scalar": _SCALAR_DEF,
        "fields": _FIELDS_DEF,
        "rule": _rule(is_time=False),
        "timeRule": _rule(is_time=True),
        "statusRule": _rule(is_time=False, values=list(STATUS_VALUES)),
        "reportTimeRule": _rule(is_time=True, keys=REPORT_RULE_KEYS),
    }
    attributes = {
        name: {"$ref": "#/definitions/" + ("timeRule" if name in DATE_ATTRIBUTES else "statusRule" if name == "status" else "rule")}
        for name in ATTRIBUTES
    }
    source_props: dict[str, Any] = {}
    for key in SOURCE_KEYS:
        if key == "format":
            spec: dict[str, Any] = {"enum": list(FORMATS)}
        elif key == "delimiter":
            spec = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 1}, {"enum": ["\\t", "tab"]},
                              {"type": "integer", "minimum": 0, "maximum": 9}]}
        else:
            spec = _SCALAR
        source_props[key] = {"description": _SOURCE_DOC.get(key, key), **spec}
    properties: dict[str, Any] = {
        "source": {"type": "object", "additionalProperties": False, "properties": source_props},
        "entityId": {"description": "the DevGrid entity (UUID or shortId) of each event; or --entity-id",
                     "$ref": "#/definitions/rule"},
        "timestamp": {"description": "when the deployment happened (finished)", "$ref": "#/definitions/timeRule"},
        "attributes": {"type": "object", "additionalProperties": False, "properties": attributes},
        "filter": {"description": "rules a row must pass to be planned", "type": "array", "items": _filter_rule()},
        "dedupe": {"description": "fields that identify one deployment; later rows with the same values are folded",
                   **_FIELDS},
        "report": {
            "description": "source fields the preview report reads (never sent)",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                key: ({"description": "when the change was committed (lead time in the report)",
                       "$ref": "#/definitions/reportTimeRule"} if key == "commit_time"
                      else {"description": "fields that name one build (same build, different values)", **_FIELDS})
                for key in REPORT_KEYS
            },
        },
    }
    if list(properties) != list(TOP_KEYS):
        raise RuntimeError("mapping.TOP_KEYS changed: describe the new section in backfill/schema.py")
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "devgrid-backfill mapping",
        "description": "How rows of an export become DevGrid event-deploy events (backfill check-mapping checks the rest).",
        "type": "object",
        "additionalProperties": False,
        "required": ["timestamp"],
        "properties": properties,
        "definitions": defs,
    }


def schema_text() -> str:
    return json.dumps(mapping_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(schema_text(), end="")

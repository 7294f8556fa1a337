"""GitLab reader: deployments-API responses, one row per deployment.

Accepted input (in any mix, in one file):

- a JSON array of deployments (`GET /projects/:id/deployments`), or several arrays appended one
  after another (pages saved into one file, separated by whitespace or newlines or nothing);
- NDJSON: one deployment object per line;
- a single deployment object (`GET /projects/:id/deployments/:id`);
- environment objects with `last_deployment` (`GET /projects/:id/environments/:id`): the row is
  the `last_deployment`, with `environment.name` (and `id`, `slug`, `external_url`, `state`,
  `tier`) filled from the environment object where the deployment lacks them. An environment
  whose `last_deployment` is null gives no row.

Row fields: every field of the deployment object, nested objects flattened to dotted names
(`environment.name`, `deployable.finished_at`, `deployable.commit.created_at`,
`deployable.pipeline.web_url`, `user.username`), values as written (numbers keep their text,
lists become compact JSON, null becomes empty). `deployable` may be null and older GitLab
omits the top-level `status` and sometimes `updated_at` or `deployable.pipeline`; so that one
mapping fits every GitLab version, these columns are always present (empty when the export
lacks them): `id`, `iid`, `ref`, `sha`, `status`, `created_at`, `updated_at`, `finished_at`,
`environment.name`, `user.username`, `deployable.id`, `deployable.status`,
`deployable.started_at`, `deployable.finished_at`, `deployable.web_url`,
`deployable.pipeline.web_url`. One field is derived:

| field | value |
|---|---|
| `status_effective` | the top-level `status`, else `deployable.status` (older GitLab has no top-level status) |

Objects that are not deployments (a deployment *webhook* payload, an unrelated object) are
reported as invalid rows; a file with nothing but such objects is rejected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from backfill.errors import ReaderError
from backfill.readers import (
    CHUNK_ROWS,
    ROW,
    BadRow,
    RowChunk,
    SourceConfig,
    check_surrogates,
    flatten,
    frame_from_records,
    read_text,
    scalar_text,
)

_BLANK = re.compile(r"\s*")
# Columns every row has, so that a mapping reading them works on exports of any GitLab version.
BASE_FIELDS = (
    "id", "iid", "ref", "sha", "status", "status_effective", "created_at", "updated_at", "finished_at",
    "environment.name", "user.username", "deployable.id", "deployable.status", "deployable.started_at",
    "deployable.finished_at", "deployable.web_url", "deployable.pipeline.web_url",
)
# Environment fields copied into a last_deployment's `environment` when it lacks them.
_ENVIRONMENT_FIELDS = ("id", "name", "slug", "external_url", "state", "tier")


def iter_json_values(text: str, path: Path | str) -> Iterator[Any]:
    """Every JSON value in `text`: one document, several appended ones, or NDJSON lines.

    Numbers keep their written text (as `loads` does). A syntax error, or a lone UTF-16
    surrogate escape (after the last value), becomes a ReaderError naming the file, line and column.
    """
    decoder = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
    position, end, found = 0, len(text), False
    while True:
        position = _BLANK.match(text, position).end()  # type: ignore[union-attr]
        if position >= end:
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise ReaderError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                "fix the file or export it again"
            ) from None
        found = True
        yield value
    check_surrogates(text, path)
    if not found:
        raise ReaderError(f"{path}: the file is empty; expected JSON exported from the API")


def rows_to_chunks(items: list[tuple[dict[str, str | None] | None, BadRow | None]]) -> Iterator[RowChunk]:
    """Numbered items (a flat record, or a BadRow for an object that is not a row) as RowChunks.

    Item n (1-based) is record n, so `_row` of good rows and `BadRow.row` share one numbering.
    """
    numbered = [(n, record) for n, (record, _) in enumerate(items, start=1) if record is not None]
    bad = [b for _, b in items if b is not None]
    for start in range(0, max(len(numbered), 1), CHUNK_ROWS):
        part = numbered[start : start + CHUNK_ROWS]
        frame = frame_from_records([record for _, record in part])
        frame[ROW] = [n for n, _ in part]
        yield RowChunk(frame, unit="record", bad=bad if start == 0 else [])


def reject_if_nothing_read(path: Path, items: list[tuple[Any, BadRow | None]], expected: str) -> None:
    """A file where every object was unrecognised is the wrong format: one error, not N bad rows."""
    if items and all(record is None for record, _ in items):
        first = items[0][1]
        reason = first.reason if first else "nothing recognised"
        raise ReaderError(f"{path}: no {expected} found; record 1: {reason}")


def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Rows of GitLab deployments from one file (see the module docstring)."""
    text = read_text(path, source.encoding)
    items: list[tuple[dict[str, str | None] | None, BadRow | None]] = []
    pages: list[int] = []  # records per top-level array: the report looks for a full last page
    for value in iter_json_values(text, path):
        pages += [len(value)] if isinstance(value, list) else []
        _collect(value, items)
    reject_if_nothing_read(path, items, "GitLab deployments")
    for number, chunk in enumerate(rows_to_chunks(items)):
        chunk.facts = {"gitlab_pages": pages} if number == 0 else {}
        yield chunk


def _collect(node: Any, items: list[tuple[dict[str, str | None] | None, BadRow | None]]) -> None:
    if isinstance(node, list):
        for element in node:
            _collect(element, items)
        return
    number = len(items) + 1
    if not isinstance(node, dict):
        items.append((None, BadRow(number, f"a JSON {type(node).__name__}, not a deployment object", _snippet(node))))
        return
    if "object_kind" in node:
        kind = scalar_text(node.get("object_kind"))
        items.append((None, BadRow(
            number,
            f"a {kind} webhook payload, not a deployments API object; "
            "export with GET /projects/:id/deployments instead",
            _snippet(node),
        )))
        return
    if "last_deployment" in node:
        deployment = node.get("last_deployment")
        if isinstance(deployment, dict):
            items.append((_row(_with_environment(deployment, node)), None))
        return  # an environment never deployed to: nothing to import
    if "id" in node and any(key in node for key in ("deployable", "sha", "iid")):
        items.append((_row(node), None))
        return
    keys = ", ".join(list(node)[:8])
    items.append((None, BadRow(number, f"not a GitLab deployment (keys: {keys})", _snippet(node))))


def _with_environment(deployment: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """The deployment with its `environment` completed from the enclosing environment object."""
    own = deployment.get("environment")
    merged = {k: environment[k] for k in _ENVIRONMENT_FIELDS if k in environment}
    if isinstance(own, dict):
        merged.update({k: v for k, v in own.items() if v is not None and v != ""})
    elif own not in (None, ""):
        return deployment  # an unexpected shape (a string?): leave it as published
    return {**deployment, "environment": merged}


def _row(deployment: dict[str, Any]) -> dict[str, str | None]:
    row: dict[str, str | None] = dict.fromkeys(BASE_FIELDS)
    flatten(deployment, out=row)
    deployable = deployment.get("deployable")
    inner = scalar_text(deployable.get("status")) if isinstance(deployable, dict) else None
    row["status_effective"] = row.get("status") or inner
    return row


def _snippet(value: Any) -> str:
    return (scalar_text(value) or "")[:200]

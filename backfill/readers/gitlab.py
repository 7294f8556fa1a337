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

from pathlib import Path
from typing import Any, Iterator

from backfill.readers import RowChunk, SourceConfig, flatten, scalar_text
from backfill.readers.jsonstream import TOO_DEEP, JSONStream, Rows, TooDeep, kind, read_values

# Columns every row has, so that a mapping reading them works on exports of any GitLab version.
BASE_FIELDS = (
    "id", "iid", "ref", "sha", "status", "status_effective", "created_at", "updated_at", "finished_at",
    "environment.name", "user.username", "deployable.id", "deployable.status", "deployable.started_at",
    "deployable.finished_at", "deployable.web_url", "deployable.pipeline.web_url",
)
# Environment fields copied into a last_deployment's `environment` when it lacks them.
_ENVIRONMENT_FIELDS = ("id", "name", "slug", "external_url", "state", "tier")
def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Rows of GitLab deployments from one file (see the module docstring)."""
    return read_values(path, source, "GitLab deployments", _collect_top)


def _collect_top(stream: JSONStream, rows: Rows, depth: int = 0) -> Iterator[RowChunk]:
    """A top-level value: an array is read one element at a time, anything else whole. The number
    of records in each top-level array (a page saved) goes to the chunk's facts, `gitlab_pages`,
    for the preview report."""
    if stream.peek() == "[" and depth < 8:  # deeper arrays of arrays are decoded whole
        size = 0
        for _ in stream.elements():
            size += 1
            yield from _collect_top(stream, rows, depth + 1)
        if depth == 0:
            rows.facts.setdefault("gitlab_pages", []).append(size)
        return
    try:
        value = stream.value()
    except TooDeep:
        rows.bad(f"a value {TOO_DEEP}, not a deployment object")
        return
    try:
        _collect(value, rows)
    except RecursionError:
        rows.bad(f"a value {TOO_DEEP}, not a deployment object")
    if rows.ready():
        yield rows.take()


def _collect(node: Any, rows: Rows) -> None:
    if isinstance(node, list):
        for element in node:
            _collect(element, rows)
        return
    if not isinstance(node, dict):
        rows.bad(f"{kind(node)}, not a deployment object", _snippet(node))
        return
    if "object_kind" in node:
        rows.bad(
            f"a {scalar_text(node.get('object_kind'))} webhook payload, not a deployments API object; "
            "export with GET /projects/:id/deployments instead",
            _snippet(node),
        )
        return
    if "last_deployment" in node:
        deployment = node.get("last_deployment")
        if isinstance(deployment, dict):
            _add(rows, _with_environment(deployment, node))
        return  # an environment never deployed to: nothing to import
    if "id" in node and any(key in node for key in ("deployable", "sha", "iid")):
        _add(rows, node)
        return
    keys = ", ".join(list(node)[:8])
    rows.bad(f"not a GitLab deployment (keys: {keys})", _snippet(node))


def _with_environment(deployment: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """The deployment with its `environment` completed from the enclosing environment object."""
    own = deployment.get("environment")
    merged = {k: environment[k] for k in _ENVIRONMENT_FIELDS if k in environment}
    if isinstance(own, dict):
        merged.update({k: v for k, v in own.items() if v is not None and v != ""})
    elif own not in (None, ""):
        return deployment  # an unexpected shape (a string?): leave it as published
    return {**deployment, "environment": merged}


def _add(rows: Rows, deployment: dict[str, Any]) -> None:
    """The deployment's row (as `_row` gives it), flattened straight into the file's columns."""
    status = deployment.get("status")
    top = None if isinstance(status, dict) and status else scalar_text(status)
    deployable = deployment.get("deployable")
    inner = scalar_text(deployable.get("status")) if isinstance(deployable, dict) else None
    rows.add_object(deployment, BASE_FIELDS, {"status_effective": top or inner})


def _row(deployment: dict[str, Any]) -> dict[str, str | None]:
    row: dict[str, str | None] = dict.fromkeys(BASE_FIELDS)
    flatten(deployment, out=row)
    deployable = deployment.get("deployable")
    inner = scalar_text(deployable.get("status")) if isinstance(deployable, dict) else None
    row["status_effective"] = row.get("status") or inner
    return row


def _snippet(value: Any) -> str:
    return (scalar_text(value) or "")[:200]

"""GitHub Deployments reader: REST and GraphQL deployment records, one row per deployment.

Accepted input (in any mix, in one file; several files may be given):

- REST: `GET /repos/{o}/{r}/deployments` arrays, several appended (what `gh api --paginate`
  writes), NDJSON (one deployment per line), a single deployment. Each deployment may embed its
  statuses as `statuses`: the array `GET /repos/{o}/{r}/deployments/{id}/statuses` returns;
- GraphQL: pages `{"data": {"repository": {"deployments": {"nodes": [...], "pageInfo": ...}}}}`
  (or `edges[].node`), appended one after another (what `gh api graphql --paginate` writes) or
  in an array; bare nodes (NDJSON of `.data.repository.deployments.nodes[]`) too. A node has
  `commitOid`, `environment`, `createdAt`, `creator{login}`, `databaseId`, `id`,
  `latestStatus{state createdAt logUrl}` and `statuses{nodes{state createdAt logUrl}}`.

Row fields: every field of the deployment, nested objects flattened to dotted names, values as
written (lists become compact JSON, null becomes empty). So that one mapping fits both shapes,
these columns are always present and filled from whichever shape the row came from:

| field | value |
|---|---|
| `id` | REST `id`; GraphQL `databaseId`, else the node `id` |
| `node_id` | REST `node_id`; GraphQL node `id` |
| `sha` | REST `sha`; GraphQL `commitOid` |
| `ref` | REST `ref`; GraphQL `ref.name` |
| `environment` | `environment` |
| `creator.login` | `creator.login` |
| `created_at` | REST `created_at`; GraphQL `createdAt` |
| `started_at` | the deployment's creation time (`created_at` / `createdAt`) |
| `state_effective` | the latest *terminal* state that is not `inactive`: `success`, `failure` or `error`, in lower case (GraphQL's `SUCCESS` becomes `success`). A deployment whose statuses show only `inactive` is `success` (GitHub marks a deployment inactive only after it succeeded, once a newer one replaces it). Empty when there are no statuses, or only `queued`, `pending`, `in_progress`, `waiting` |
| `finished_at` | the time of that status (REST `created_at`; GraphQL `createdAt`, else `updatedAt`); for an inactive-only deployment its own creation time. Empty when `state_effective` is. Never the deployment's `updated_at` nor the inactivation time: those are when a later deployment replaced it |
| `finished_at_estimated` | `true` for an inactive-only deployment (its success time is unknown), `false` when `finished_at` is a status time, empty otherwise |
| `log_url` | that status's `log_url`, else its `target_url` (GraphQL `logUrl`); empty where absent |
| `statuses_seen` | how many statuses the row carried (embedded ones plus GraphQL `latestStatus`) |
| `commit.committedDate` | GraphQL `commit { committedDate }` when the query asks for it (the preview's lead time); empty for REST, which has no commit date |

The latest status is picked by time (statuses compared as instants, so offsets are fine); when
times are missing or unreadable, by position (the APIs list the newest first).

Objects that are not deployments (a `deployment_status` webhook payload, a GraphQL error
response, an unrelated object) are reported as invalid rows; a file with nothing but such
objects is rejected.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from backfill.readers import RowChunk, SourceConfig, flatten, scalar_text
from backfill.readers.github_actions import parse_instant, walk_values
from backfill.readers.jsonstream import read_values
from backfill.readers.jsonstream import kind

Row = dict[str, str | None]

BASE_FIELDS = (
    "id", "node_id", "sha", "ref", "environment", "creator.login", "created_at", "started_at",
    "state_effective", "finished_at", "finished_at_estimated", "log_url", "statuses_seen", "commit.committedDate",
)
TERMINAL = ("success", "failure", "error")
NOTES = {
    "finished_at_estimated": (
        "{n} deployment succeeded at an unknown time (only 'inactive' recorded): its creation time is used",
        "{n} deployments succeeded at an unknown time (only 'inactive' recorded): their creation time is used",
    ),
}
"""Sentences the preview prints: the count of planned events whose row has the field `true`."""


# --- one record -> one row (pure; independent of how records are pulled from the file) ---------

def _text(value: Any) -> str | None:
    return None if isinstance(value, (dict, list)) else scalar_text(value)


def _status(raw: dict[str, Any], graphql: bool) -> tuple[str | None, str | None, str | None]:
    """(state in lower case, time, log url) of one status object."""
    state = _text(raw.get("state"))
    if graphql:
        time = _text(raw.get("createdAt")) or _text(raw.get("updatedAt"))
        log = _text(raw.get("logUrl")) or None
    else:
        time = _text(raw.get("created_at"))
        log = _text(raw.get("log_url")) or _text(raw.get("target_url")) or None
    return (state.strip().lower() if state else None), time, log


def statuses_of(deployment: dict[str, Any], graphql: bool) -> list[tuple[str | None, str | None, str | None]]:
    """Every status the record carries, in the order written (GraphQL `latestStatus` last)."""
    if graphql:
        connection = deployment.get("statuses")
        raw: Any = []
        if isinstance(connection, dict):
            raw = connection.get("nodes")
            if not isinstance(raw, list) and isinstance(connection.get("edges"), list):
                raw = [e.get("node") for e in connection["edges"] if isinstance(e, dict)]
        elif isinstance(connection, list):
            raw = connection
        found = [s for s in raw or [] if isinstance(s, dict)]
        if isinstance(deployment.get("latestStatus"), dict):
            found.append(deployment["latestStatus"])
    else:
        found = [s for s in deployment.get("statuses") or [] if isinstance(s, dict)]
    return [_status(s, graphql) for s in found]


def effective_state(
    statuses: list[tuple[str | None, str | None, str | None]], created: str | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """(state_effective, finished_at, finished_at_estimated, log_url) from a deployment's
    statuses (rules in the module docstring)."""
    def pick(candidates: list[tuple[int, tuple[str | None, str | None, str | None]]]):
        def key(item: tuple[int, tuple[str | None, str | None, str | None]]) -> tuple:
            position, (_, time, _) = item
            moment = parse_instant(time)
            return (moment is not None, moment or datetime.min, -position)
        return max(candidates, key=key)[1]

    numbered = list(enumerate(statuses))
    terminal = [(i, s) for i, s in numbered if s[0] in TERMINAL]
    if terminal:
        state, time, log = pick(terminal)
        return state, time, "false", log
    inactive = [(i, s) for i, s in numbered if s[0] == "inactive"]
    if inactive:
        return "success", created, "true", pick(inactive)[2]
    return None, None, None, None


def is_graphql_node(node: dict[str, Any]) -> bool:
    return any(key in node for key in ("commitOid", "createdAt", "databaseId", "latestStatus"))


def deployment_row(deployment: dict[str, Any], graphql: bool) -> Row:
    """One deployment (REST object or GraphQL node) as a row (fields in the module docstring)."""
    row: Row = dict.fromkeys(BASE_FIELDS)
    flatten(deployment, out=row)
    if graphql:
        node_id = _text(deployment.get("id"))
        row["node_id"] = node_id
        row["id"] = _text(deployment.get("databaseId")) or node_id
        row["sha"] = _text(deployment.get("commitOid")) or row.get("sha")
        ref = deployment.get("ref")
        row["ref"] = _text(ref.get("name")) if isinstance(ref, dict) else _text(ref)
        row["created_at"] = _text(deployment.get("createdAt"))
    statuses = statuses_of(deployment, graphql)
    state, finished, estimated, log = effective_state(statuses, row.get("created_at"))
    row["started_at"] = row.get("created_at")
    row["state_effective"] = state
    row["finished_at"] = finished
    row["finished_at_estimated"] = estimated
    row["log_url"] = log
    row["statuses_seen"] = str(len(statuses))
    return row


def classify(node: dict[str, Any]) -> str:
    """What a JSON object is: `graphql-page`, `graphql-node`, `rest`, or why it is neither."""
    if "data" in node or "errors" in node:
        data = node.get("data")
        repository = data.get("repository") if isinstance(data, dict) else None
        if isinstance(repository, dict) and isinstance(repository.get("deployments"), dict):
            return "graphql-page"
        errors = node.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            message = _text(first.get("message")) if isinstance(first, dict) else _text(first)
            return f"a GraphQL error response: {message or 'no message'}; fix the query and export again"
        return "a GraphQL response without data.repository.deployments; query repository { deployments { nodes ... } }"
    if "deployment_status" in node or ("deployment" in node and ("action" in node or "sender" in node)):
        return ("a deployment webhook payload, not a deployments API object; export with "
                "gh api --paginate repos/OWNER/REPO/deployments instead")
    if is_graphql_node(node) and "id" in node:
        return "graphql-node"
    if "id" in node and any(key in node for key in ("sha", "environment", "statuses_url", "task")):
        return "rest"
    keys = ", ".join(list(node)[:8])
    return f"not a GitHub deployment (keys: {keys})"


# --- pulling records from the file ------------------------------------------------------------

def read(path: Path, source: SourceConfig) -> Iterator[RowChunk]:
    """Rows of GitHub deployments from one file (see the module docstring), streamed: one
    top-level value (a page, or an element of an array) in memory at a time."""
    return read_values(
        path, source, "GitHub deployments", lambda stream, rows: walk_values(stream, rows, _collect, "a deployment")
    )


def _page_nodes(page: dict[str, Any]) -> list[Any]:
    deployments = page["data"]["repository"]["deployments"]
    nodes = deployments.get("nodes")
    if isinstance(nodes, list):
        return nodes
    edges = deployments.get("edges")
    if isinstance(edges, list):
        return [edge.get("node") if isinstance(edge, dict) else edge for edge in edges]
    return []


def _collect(node: Any, rows: Any, graphql: bool = False) -> None:
    if isinstance(node, list):
        for element in node:
            _collect(element, rows, graphql)
        return
    if not isinstance(node, dict):
        rows.bad(f"{kind(node)}, not a deployment", _snippet(node))
        return
    what = classify(node)
    if what == "graphql-page":
        for element in _page_nodes(node):
            if isinstance(element, dict) and "id" in element:
                rows.add(deployment_row(element, graphql=True))
            else:
                _collect(element, rows, graphql=True)
    elif what == "graphql-node":
        rows.add(deployment_row(node, graphql=True))
    elif what == "rest":
        rows.add(deployment_row(node, graphql=False))
    else:
        rows.bad(what, _snippet(node))


def _snippet(value: Any) -> str:
    return (scalar_text(value) or "")[:200]

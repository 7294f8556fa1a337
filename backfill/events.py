"""The event-deploy schema of the DevGrid Events API (see shared/devgrid-events-api.md)."""

from __future__ import annotations

import difflib

EVENT_TYPE = "event-deploy"
BLUEPRINT_ID = "04252f20-4000-470a-a1eb-88bf5bb648d2"
KNOWN_EVENT_TYPES = ("event-deploy", "event-build", "event-test-run", "event-commit", "event-error")

MAX_BATCH = 15  # events per POST /events request, API maximum

# The 15 documented attributes, in the order the API reference lists them.
ATTRIBUTES = (
    "env",
    "status",
    "build_id",
    "build_commit_sha",
    "build_url",
    "description",
    "initiator",
    "change_id",
    "change_url",
    "change_title",
    "change_author",
    "change_approver",
    "change_window_start",
    "change_window_end",
    "deployment_start_time",
)
DATE_ATTRIBUTES = ("change_window_start", "change_window_end", "deployment_start_time")
STATUS_VALUES = ("success", "failed")

# Spellings recognised for `status` when the mapping gives no lookup (compared case-insensitively).
STATUS_SYNONYMS = {
    "success": "success",
    "succeeded": "success",
    "successful": "success",
    "passed": "success",
    "failed": "failed",
    "failure": "failed",
    "error": "failed",
}

# Timestamps go out as ISO 8601 UTC with second precision.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def closest(name: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """The choice closest to a misspelt name, or None when nothing is close."""
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return match[0] if match else None

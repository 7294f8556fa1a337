"""What `backfill fetch` checked of an export it wrote, kept beside it for the preview report.

When a fetch finishes, `.NAME.fetched.json` beside the export NAME records the source, what was
asked (never a token), what the completeness checks found (`shortfalls`: fewer items than the
API's totals; `gaps`: history the server no longer has) and the export's size and SHA-256.

The preview report (`figures`) trusts a record only for the very bytes it describes: an export
that was edited, joined with another or copied elsewhere has no valid record, and is judged by
its page sizes instead (a page of exactly 100 with no page after it may be cut short). The record
is a dot file, so that `backfill preview exports/*.json` does not read it as an export.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


def record_path(export: str | Path) -> Path:
    path = Path(export)
    return path.with_name(f".{path.name}.fetched.json")


def digest(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def remove(export: str | Path) -> None:
    """An earlier fetch's record of this export no longer holds once the export is replaced."""
    record_path(export).unlink(missing_ok=True)


def write(export: str | Path, findings: dict[str, Any]) -> Path:
    """Record `findings` (source, identity, shortfalls, gaps) for the export as it is now."""
    path = record_path(export)
    doc = {"version": RECORD_VERSION, "export": Path(export).name, "bytes": os.path.getsize(export),
           "sha256": digest(export), **findings}
    temp = path.with_name(path.name + ".tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, ensure_ascii=False, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return path


def read(export: str | Path) -> dict[str, Any] | None:
    """The record of the export if there is one and it describes the export's current bytes, else None."""
    path = record_path(export)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if (not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION or doc.get("export") != Path(export).name
                or doc.get("bytes") != os.path.getsize(export) or doc.get("sha256") != digest(export)):
            return None
    except (OSError, ValueError):
        return None
    if not all(isinstance(doc.get(k), list) and all(isinstance(t, str) for t in doc[k]) for k in ("shortfalls", "gaps")):
        return None
    return doc

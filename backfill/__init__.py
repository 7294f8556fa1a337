"""devgrid-backfill: import historical deployments into DevGrid as event-deploy events.

The library the `backfill` command stands on::

    import backfill

    options = backfill.PlanOptions(since="2020-01-01")
    preview = backfill.preview(["deploys.csv"], "mapping.yaml", options=options)
    print(preview.summary)
    result = backfill.import_events(["deploys.csv"], "mapping.yaml", target="production",
                                    checkpoint="deploys.checkpoint", options=options)
    print(result.report)

Errors are subclasses of BackfillError (see backfill.errors); each carries the exit status the
command line would use. The names below load on first use, so that `python -m backfill.sandbox`
starts without pandas.
"""

from backfill import _startup  # noqa: F401, I001  first of all: Ctrl-C while the command starts (see its docstring)

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the flow
    "plan_import": "backfill.importer",
    "preview": "backfill.importer",
    "import_events": "backfill.importer",
    "resume": "backfill.importer",
    "status": "backfill.importer",
    # options and results
    "PlanOptions": "backfill.importer",
    "UploadSettings": "backfill.importer",
    "Reporter": "backfill.importer",
    "Preview": "backfill.importer",
    "ImportResult": "backfill.importer",
    "Status": "backfill.importer",
    "Plan": "backfill.plan",
    "Mapping": "backfill.mapping",
    "load_mapping": "backfill.mapping",
    # errors
    "BackfillError": "backfill.errors",
    "UsageError": "backfill.errors",
    "InputError": "backfill.errors",
    "ReaderError": "backfill.errors",
    "MappingError": "backfill.errors",
    "StrictError": "backfill.errors",
    "CheckpointError": "backfill.errors",
    "AuthError": "backfill.errors",
    "UploadStopped": "backfill.errors",
    "ExitStatus": "backfill.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'backfill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from backfill.errors import (
        AuthError, BackfillError, CheckpointError, ExitStatus, InputError, MappingError, ReaderError,
        StrictError, UploadStopped, UsageError,
    )
    from backfill.importer import (
        ImportResult, PlanOptions, Preview, Reporter, Status, UploadSettings, import_events, plan_import,
        preview, resume, status,
    )
    from backfill.mapping import Mapping, load_mapping
    from backfill.plan import Plan

"""The import flow as a library: plan -> checkpoint -> upload, resume, status.

    plan / preview     inputs + mapping -> Plan (no network, no key)
    import_events      plan -> checkpoint (create, or detect changes and replan) -> upload -> run record
    resume             checkpoint -> upload the rest
    status             checkpoint -> counts, uncertain events, runs

Every function takes its options as keyword arguments in small validated objects (PlanOptions,
UploadSettings) and reports through a Reporter, so that the CLI and a script share one code path:
the CLI passes a reporter that prints and asks on the terminal, a script the default one that logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping as MappingType, Sequence

from backfill.client import (
    MAX_TIMEOUT,
    TARGETS,
    EventsClient,
    check_api_key,
    check_base_url,
    check_proxy_environment,
    read_secret,
    shown_url,
)
from backfill.errors import AuthError, BackfillError, CheckpointError, StrictError, UsageError
from backfill.events import MAX_BATCH
from backfill.journal import Journal, PlannedEvent, check_writable
from backfill.redact import SECRETS
from backfill.ledger import Ledger, LedgeredJournal, LedgerMatches, SharedBudget, open_for
from backfill.ledger import fingerprints as body_fingerprints
from backfill.shipped import resolve_mapping
from backfill.throttle import DEFAULT_LIMITS, MAX_DURATION, RateLimit, Throttle, duration_text, parse_rate_limit
from backfill.uploader import (
    MAX_RETRIES_LIMIT,
    RESEND,
    SKIP,
    NullProgress,
    Progress,
    UploadOptions,
    Uploader,
    UploadResult,
)

if TYPE_CHECKING:  # pandas and the planner load when a plan is made: resume and status start without them
    import pandas as pd

    from backfill.plan import Plan

KEY_ENV = "DEVGRID_API_KEY"
DEFAULT_GIVE_UP_AFTER = 7200.0
DEFAULT_TIMEOUT = 30.0
Paths = Sequence["str | os.PathLike[str]"]

log = logging.getLogger("backfill")


# --------------------------------------------------------------------- options


def _utc(value: Any, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    import pandas as pd

    from backfill.normalize import parse_instant

    try:  # text by the CLI's rules (never NaT: an empty variable would drop every row)
        stamp = parse_instant(value) if isinstance(value, str) else pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{name}: {exc if isinstance(value, str) else f'not a date: {value!r}'}") from None
    if pd.isna(stamp):
        raise UsageError(f"{name}: not a date: {value!r}")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """What shapes the events: a constant entityId and attributes, a date range (UTC, `until` exclusive)."""

    entity_id: str | None = None
    sets: tuple[tuple[str, str], ...] = ()  # (name, value) pairs; a dict is accepted
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None

    def __post_init__(self) -> None:
        if self.entity_id is not None:
            if not str(self.entity_id).strip():
                raise UsageError("empty entity id; give the DevGrid entity's UUID or shortId")
            object.__setattr__(self, "entity_id", str(self.entity_id).strip())
        pairs = self.sets.items() if isinstance(self.sets, MappingType) else self.sets
        clean = []
        for name, value in pairs:
            name, value = str(name).strip(), str(value).strip()
            if not name:
                raise UsageError(f"--set: empty attribute name (value {value!r})")
            if not value:
                raise UsageError(f"{name}: empty value; leave the --set out to send no {name}")
            clean.append((name, value))
        object.__setattr__(self, "sets", tuple(clean))
        object.__setattr__(self, "since", _utc(self.since, "since"))
        object.__setattr__(self, "until", _utc(self.until, "until"))

    def check(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise UsageError(f"--since {self.since:%Y-%m-%d %H:%M:%S} is not before --until {self.until:%Y-%m-%d %H:%M:%S}")


@dataclass(frozen=True, kw_only=True)
class UploadSettings:
    """How to send: batch size, rate limits (None: the API's, or as recorded when resuming), what to do
    with events that may or may not have arrived (None: resend, or as recorded), retries and timeout."""

    batch_size: int = MAX_BATCH
    rate_limits: tuple[RateLimit, ...] | None = None
    on_uncertain: str | None = None
    max_retries: int | None = None  # None: outages waited out until give_up_after (see UploadOptions)
    timeout: float = DEFAULT_TIMEOUT
    give_up_after: float = DEFAULT_GIVE_UP_AFTER  # seconds without a success before an outage stops the run

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or not 1 <= self.batch_size <= MAX_BATCH:
            raise UsageError(f"batch_size: must be between 1 and {MAX_BATCH} (the API's maximum), got {self.batch_size!r}")
        if self.rate_limits is not None:
            limits = tuple(parse_rate_limit(x) if isinstance(x, str) else x for x in self.rate_limits)
            object.__setattr__(self, "rate_limits", limits or None)
        if self.on_uncertain not in (None, RESEND, SKIP):
            raise UsageError(f"on_uncertain: {self.on_uncertain!r} is neither {RESEND!r} nor {SKIP!r}")
        if self.max_retries is not None and (isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int)
                                             or not 0 <= self.max_retries <= MAX_RETRIES_LIMIT):
            raise UsageError(f"max_retries: expected a whole number from 0 to {MAX_RETRIES_LIMIT}, got {self.max_retries!r}")
        if isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float)) or not 0 < self.timeout <= MAX_TIMEOUT:
            raise UsageError(f"timeout: expected seconds above 0 and at most {MAX_TIMEOUT:g}, got {self.timeout!r}")
        if isinstance(self.give_up_after, bool) or not isinstance(self.give_up_after, (int, float)) \
                or not 0 < self.give_up_after <= MAX_DURATION:
            raise UsageError(f"give_up_after: expected seconds above 0 and at most 31 days, got {self.give_up_after!r}")

    @property
    def limits(self) -> tuple[RateLimit, ...]:
        return tuple(self.rate_limits or DEFAULT_LIMITS)


class Reporter:
    """Where the flow's messages, its one question and its progress go. This default logs to the
    `backfill` logger, answers yes (calling import_events is the decision) and shows no progress."""

    def info(self, text: str) -> None:
        log.info("%s", text)

    def error(self, text: str) -> None:
        log.warning("%s", text)

    def confirm(self, question: str) -> bool:
        return True

    def progress(self, journal: Journal, uploader: Uploader) -> Progress:
        return NullProgress()


# --------------------------------------------------------------------- plan and preview


def plan_import(
    inputs: Paths,
    mapping: str | os.PathLike[str],
    *,
    options: PlanOptions | None = None,
    invalid_out: str | os.PathLike[str] | None = None,
) -> Plan:
    """Read the inputs, apply the mapping and return the Plan: the events to send and the report of
    every row not planned. No network. `mapping` is a file, or the name of a shipped mapping
    (`"jenkins"`) when no file of that name exists. `invalid_out` writes each invalid row (JSON Lines)."""
    return _plan(inputs, mapping, options or PlanOptions(), invalid_out)


def _plan(inputs: Paths, mapping: Any, options: PlanOptions, invalid_out: Any, *, for_import: bool = False) -> Plan:
    from backfill.inputs import check_outputs
    from backfill.mapping import load_mapping
    from backfill.plan import build_plan

    options.check()
    check_outputs(inputs, {"--invalid-out": invalid_out})
    rules = load_mapping(resolve_mapping(mapping)).with_overrides(options.entity_id, dict(options.sets))
    return build_plan([str(p) for p in inputs], rules, since=options.since, until=options.until,
                      with_row_hashes=for_import, invalid_out=invalid_out)


@dataclass
class Preview:
    """What `preview` found: the plan, its summary and first payloads as text, and what it wrote."""

    plan: Plan
    summary: str
    payloads: str
    requests_written: int | None = None


def preview(
    inputs: Paths,
    mapping: str | os.PathLike[str],
    *,
    options: PlanOptions | None = None,
    settings: UploadSettings | None = None,
    show: int = 1,
    out: str | os.PathLike[str] | None = None,
    invalid_out: str | os.PathLike[str] | None = None,
    target: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    ledger: str | os.PathLike[str] | None = None,
) -> Preview:
    """Plan the import and describe it: summary, the first `show` request bodies, and with `out` every
    request body exactly as it would be POSTed, one per line.

    Told the target (`target` or `base_url`, with the key to find its ledger, or `ledger` alone), the
    summary also says which events earlier imports sent there already. Nothing is sent, the key to no one."""
    from backfill.inputs import check_outputs
    from backfill.summary import first_payloads, plan_summary

    settings = settings or UploadSettings()
    check_outputs(inputs, {"--out": out, "--invalid-out": invalid_out})
    book, name = _preview_ledger(target, base_url, api_key, api_key_file, ledger)
    result = plan_import(inputs, mapping, options=options, invalid_out=invalid_out)
    summary = plan_summary(result, batch_size=settings.batch_size, limits=settings.limits)
    if isinstance(book, Ledger):
        with book:
            note = ledger_note(known_to_ledger(result, book, None), name)
        summary += "\n" + (note or f"None of these events was sent to {name} by an earlier import (ledger {book.path}).")
    elif book:
        summary += "\n" + book
    payloads = first_payloads(result, requests=show, batch_size=settings.batch_size) if show > 0 else ""
    written = write_request_bodies(result, out, settings.batch_size) if out else None
    return Preview(result, summary, payloads, written)


def check_strict(plan: Plan, strict: bool, *, sent: bool = False) -> None:
    """Raise StrictError when `strict` and some rows are invalid."""
    if strict and plan.report.invalid:
        tail = "nothing was sent" if sent else "fix them or drop --strict"
        raise StrictError(f"{len(plan.report.invalid)} invalid rows and --strict is set; {tail}")


def write_request_bodies(plan: Plan, path: str | os.PathLike[str], batch_size: int) -> int:
    """Write every request body, one per line, to a temporary file then move it in place."""
    target = Path(path)
    temp = target.with_name(f".{target.name}.partial")
    count = 0
    try:
        with open(temp, "wb") as out:
            writer = _WriteBehind(out)
            try:
                for requests, block in plan.request_blocks(batch_size):
                    writer.write(block)
                    count += requests
            finally:
                writer.close()
        temp.replace(target)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UsageError(f"--out {path}: cannot write: {exc.strerror}") from None
    return count


class _WriteBehind:
    """Blocks written to `out` by a second thread while the caller builds the next one (a write
    releases the GIL); at most two wait. A failed write is raised by the next `write` or by
    `close`, which must always be called (it ends the thread)."""

    def __init__(self, out: Any):
        import queue

        self._out, self._error = out, None
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._run, name="backfill-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(block)
                except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                    self._error = exc

    def write(self, block: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


# --------------------------------------------------------------------- secrets and targets


def read_api_key(key_file: str | os.PathLike[str] | None = None) -> str:
    """The key from `key_file` or $DEVGRID_API_KEY. Messages never contain it; from now on every
    text the tool prints or stores has it redacted."""
    key = read_secret(KEY_ENV, str(key_file) if key_file else None, file_option="--api-key-file",
                      header="x-api-key", kind="API key")
    SECRETS.add(key)
    return key


def key_file_warning(key_file: Any) -> list[str]:
    """A warning when the key file can be read by other users (said when the upload starts)."""
    if not key_file or os.name != "posix":
        return []
    try:
        mode = os.stat(key_file).st_mode
    except OSError:
        return []  # reading it says what is wrong
    if not mode & 0o077:
        return []
    return [f"Warning: --api-key-file {key_file} can be read by other users (mode {mode & 0o777:o}); chmod 600 {key_file}"]


def _key(api_key: str | None, api_key_file: Any) -> str:
    if api_key is not None:
        SECRETS.add(check_api_key(api_key))
        return api_key
    return read_api_key(api_key_file)


def resolve_target(target: str | None, base_url: str | None) -> tuple[str, str]:
    if base_url:
        return (target or "custom"), check_base_url(base_url)
    if not target:
        raise UsageError("say where to send: --target production|development (or --base-url URL)")
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}: use {' or '.join(sorted(TARGETS))}, or a base URL")
    return target, TARGETS[target]


# --------------------------------------------------------------------- checkpoint


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()


def fingerprints(inputs: Iterable[str], mapping: str) -> dict[str, str]:
    out = {f"input:{os.path.abspath(p)}": file_sha256(p) for p in inputs if os.path.isfile(p)}
    if os.path.isfile(mapping):
        out[f"mapping:{os.path.abspath(mapping)}"] = file_sha256(mapping)
    return out


def plan_options(options: PlanOptions, settings: UploadSettings) -> dict[str, Any]:
    """The options recorded in the checkpoint (the shaping ones are compared on the next run)."""
    return {
        "entity_id": options.entity_id,
        "set": sorted(f"{k}={v}" for k, v in options.sets),
        "since": str(options.since) if options.since is not None else None,
        "until": str(options.until) if options.until is not None else None,
        "batch_size": settings.batch_size,
        "rate_limits": [str(limit) for limit in settings.limits],
        "on_uncertain": settings.on_uncertain or RESEND,
    }


_SHAPING = ("entity_id", "set", "since", "until")


def default_checkpoint(inputs: Iterable[str], mapping: str) -> str:
    names = [os.path.abspath(mapping), *sorted(os.path.abspath(p) for p in inputs)]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]
    return f"backfill-{Path(mapping).stem}-{digest}.checkpoint"


def describe_changes(old: dict[str, str], new: dict[str, str], old_opts: dict, new_opts: dict) -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        name = key.split(":", 1)[1]
        if key not in old:
            changes.append(f"{name} is new")
        elif key not in new:
            changes.append(f"{name} is no longer given")
        elif old[key] != new[key]:
            changes.append(f"{name} changed")
    for key in _SHAPING:
        if old_opts.get(key) != new_opts.get(key):
            changes.append(f"--{key.replace('_', '-')} was {old_opts.get(key)!r}, now {new_opts.get(key)!r}")
    return changes


PLAN_SLICE = 50_000  # events per slice when the plan goes into a checkpoint


def planned_slices(plan: Plan, step: int = PLAN_SLICE) -> Iterator[tuple[Iterator[tuple[str, int, str, str, int, str]], Any]]:
    """The plan's events in send order, a slice at a time, each request body built once:
    (rows `(event_id, seq, body, source_file, source_row, timestamp)` for the checkpoint, the
    slice's bodies as arrow text for the ledger's fingerprints). Columns, not rows, cross into Python."""
    import numpy as np

    from backfill.normalize import arrow_text
    from backfill.plan import FILE, ROW

    events = plan.events
    ids = arrow_text(plan.event_ids())
    files = np.array(plan.files, dtype=object)
    for start in range(0, len(events), step):
        part = events.iloc[start : start + step]
        bodies = arrow_text(plan.bodies(start, start + step))
        rows = zip(
            ids.slice(start, len(part)).to_pylist(),
            range(start, start + len(part)),
            bodies.to_pylist(),
            files[part[FILE].to_numpy(dtype=np.int64)].tolist(),
            part[ROW].to_numpy(dtype=np.int64).tolist(),
            arrow_text(plan.timestamps(start, start + step)).to_pylist(),
        )
        yield rows, bodies


def planned_events(plan: Plan, skip: frozenset[int] = frozenset()) -> Iterator[PlannedEvent]:
    """The plan's events in send order, but those at the positions in `skip` (the ledger knows them)."""
    for rows, _ in planned_slices(plan):
        for row in rows:
            if row[1] not in skip:
                yield PlannedEvent(*row)


# --------------------------------------------------------------------- the ledger


def known_to_ledger(plan: Plan, ledger: Ledger, checkpoint_uid: str | None,
                    prints: Sequence[str] | None = None) -> LedgerMatches:
    """The planned events that an import to the same target and key sent, or may have sent.
    `prints`: the bodies' fingerprints when already computed (an empty ledger needs none)."""
    if not len(plan) or ledger.is_empty():
        return LedgerMatches([], [], {}, 0)
    if prints is None:
        prints = []
        for start in range(0, len(plan), 100_000):
            prints += body_fingerprints(plan.bodies(start, start + 100_000))
    return ledger.known(plan.event_ids().tolist(), prints, checkpoint=checkpoint_uid)


def ledger_note(matches: LedgerMatches, target: str, *, resend: bool = False) -> str | None:
    """The summary line for what the ledger knows, or None when it knows none of the planned events."""
    if not len(matches):
        return None
    n = len(matches)
    places = len(matches.checkpoints)
    how = []
    if matches.by_id:
        how.append(f"{len(matches.by_id):,} by event id")
    if matches.by_fingerprint:
        how.append(f"{len(matches.by_fingerprint):,} by content (same body under another id)")
    unsure = f"; {matches.uncertain:,} of them possibly sent (uncertain there)" if matches.uncertain else ""
    head = (f"{n:,} events were already sent to {target} by earlier imports ({places} checkpoint"
            f"{'s' if places != 1 else ''}; {', '.join(how)}{unsure})")
    if resend:
        return (f"WARNING: --resend-sent: {head}, and they WILL BE SENT AGAIN. DevGrid has no delete: "
                "the copies stay forever.")
    return f"{head}: not sent again (backfill ledger show lists them; --resend-sent overrides)"


def _preview_ledger(target: str | None, base_url: str | None, api_key: str | None, api_key_file: Any,
                    path: Any) -> tuple[Ledger | str | None, str]:
    """The ledger a preview consults (None: not told a target), or the line saying there is none yet;
    and the target's name."""
    from backfill.ledger import default_ledger_path, key_id

    if not (target or base_url or path):
        return None, ""
    if path and not (target or base_url):
        book = Ledger.open(path, base_url=None, key_id=None, create=False)
        return book, book.base_url
    target, base_url = resolve_target(target, base_url)
    kid = key_id(base_url, _key(api_key, api_key_file))
    where = Path(path) if path else default_ledger_path(base_url, kid)
    if not where.exists():
        return f"No ledger for {target} ({base_url}) with this key yet ({where}): no earlier import sent anything there.", target
    return Ledger.open(where, base_url=base_url, key_id=kid, create=False), target


# --------------------------------------------------------------------- import and resume


@dataclass
class ImportResult:
    """How an import or resume ended. `upload` is None when nothing was sent (nothing planned, or
    the confirmation was declined)."""

    checkpoint: str
    upload: UploadResult | None = None
    declined: bool = False

    @property
    def counts(self) -> dict[str, int]:
        return self.upload.counts if self.upload else {}

    @property
    def complete(self) -> bool:
        """True unless the server rejected events or uncertain events were skipped (possibly missing)."""
        return not (self.counts.get("rejected") or self.counts.get("possibly_missing"))

    @property
    def report(self) -> str:
        return upload_report(self.upload) if self.upload else ""


def import_events(
    inputs: Paths,
    mapping: str | os.PathLike[str],
    *,
    target: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    replan: bool = False,
    strict: bool = False,
    options: PlanOptions | None = None,
    settings: UploadSettings | None = None,
    invalid_out: str | os.PathLike[str] | None = None,
    reporter: Reporter | None = None,
    ledger: str | os.PathLike[str] | None = None,
    resend_sent: bool = False,
) -> ImportResult:
    """Plan and upload with a checkpoint. Run it again with the same arguments to resume; if the
    inputs, mapping or shaping options changed, `replan=True` adds the new events (sent events are
    never resent). The key is `api_key`, else read from `api_key_file`, else $DEVGRID_API_KEY.

    The target's ledger (`ledger`, else $BACKFILL_LEDGER, else the user state directory) leaves out
    events that any earlier import to this target and key sent; `resend_sent=True` sends them again."""
    options = options or PlanOptions()
    settings = settings or UploadSettings()
    reporter = reporter or Reporter()
    inputs = [str(p) for p in inputs]
    target, base_url = resolve_target(target, base_url)
    check_proxy_environment()
    key = _key(api_key, api_key_file)
    mapping = str(resolve_mapping(mapping))
    checkpoint = str(checkpoint) if checkpoint else default_checkpoint(inputs, mapping)
    check_writable(checkpoint)  # before planning: a read-only place is said at once
    prints = fingerprints(inputs, mapping)
    recorded_options = plan_options(options, settings)
    book = open_for(base_url, key, path=ledger)
    reporter.info(f"Checkpoint: {checkpoint}")
    reporter.info(f"Ledger: {book.path}")

    def make_plan() -> Plan:
        from backfill.summary import plan_summary

        result = _plan(inputs, mapping, options, invalid_out, for_import=True)
        reporter.info(plan_summary(result, batch_size=settings.batch_size, limits=settings.limits))
        return result

    def ledger_matches(result: Plan, uid: str | None, prints: Sequence[str] | None = None) -> LedgerMatches:
        matches = known_to_ledger(result, book, uid, prints)
        note = ledger_note(matches, target, resend=resend_sent)
        if note:
            (reporter.error if resend_sent else reporter.info)(note)
        if resend_sent:
            matches = LedgerMatches([], [], {}, 0)
        return matches

    with book:
        if os.path.exists(checkpoint):
            journal = Journal.open(checkpoint)
            recorded = (journal.target, journal.base_url)
            if recorded != (target, base_url):
                journal.close()
                raise CheckpointError(
                    f"{checkpoint} belongs to an import to {recorded[0]} ({recorded[1]}), not {target} ({base_url}); "
                    "use another --checkpoint for another target"
                )
            missing = [name for name in (key.split(":", 1)[1] for key in journal.fingerprints)
                       if name in map(os.path.abspath, [*inputs, mapping]) and not os.path.exists(name)]
            if missing:
                journal.close()
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise CheckpointError(
                    f"{missing[0]}: the file is missing (deleted or moved){more}; restore it, or continue from "
                    f"the plan stored in the checkpoint: backfill resume {checkpoint}"
                )
            changes = describe_changes(journal.fingerprints, prints, journal.options, recorded_options)
            if changes and not replan:
                journal.close()
                raise CheckpointError(
                    f"{checkpoint}: the import changed since it started ({'; '.join(changes)}); "
                    "rerun with --replan to add the new events (sent events are never resent), or use a new --checkpoint"
                )
            if changes or not journal.plan_complete:
                try:
                    new_plan = make_plan()
                    matches = ledger_matches(new_plan, journal.uid)
                    check_strict(new_plan, strict, sent=True)
                except BaseException:
                    journal.close()
                    raise
                journal.set_fingerprints(prints, recorded_options)
                change = journal.replan(planned_events(new_plan, frozenset(matches.positions)))
                if len(matches):
                    journal.forget_elsewhere([], matches.checkpoints)
                journal.set_invalid_count(len(new_plan.report.invalid))
                reporter.info(
                    f"Replanned: {change['added']} new events, {change['updated']} pending events updated, "
                    f"{change['dropped']} pending events no longer planned dropped"
                )
                if change.get("identical_to_sent"):
                    reporter.info(
                        f"Note: {change['identical_to_sent']} events of the new plan are identical to events already "
                        "sent (or uncertain); they are not sent again"
                    )
                if change["changed_after_sending"]:
                    reporter.info(
                        f"Note: {change['changed_after_sending']} events already sent (or rejected, or uncertain) differ "
                        "in the new plan; they are not sent again (use a new --checkpoint to send a corrected copy)"
                    )
            else:
                reporter.info("Resuming the import recorded in the checkpoint (inputs and mapping unchanged).")
        else:
            new_plan = make_plan()
            # The checkpoint is built beside its path while the bodies are made (once, a slice at a
            # time, in one transaction), and published, complete, once the question is answered.
            with Journal.draft(checkpoint, target=target, base_url=base_url, fingerprints=prints,
                               options=recorded_options) as draft:
                contents: list[str] | None = None if book.is_empty() else []
                for rows, bodies in planned_slices(new_plan):
                    draft.add(rows)
                    if contents is not None:
                        contents += body_fingerprints(bodies)
                matches = ledger_matches(new_plan, None, contents)
                check_strict(new_plan, strict, sent=True)
                to_send = len(new_plan) - len(matches)
                if not to_send:
                    reporter.info("Nothing to send.")
                    return ImportResult(checkpoint)
                question = (f"Send {to_send} events in {-(-to_send // settings.batch_size)} requests to "
                            f"{target} ({base_url})?")
                if not reporter.confirm(question):
                    reporter.info("Nothing sent.")
                    return ImportResult(checkpoint, declined=True)
                journal = draft.publish(leave_out=matches.positions, invalid_count=len(new_plan.report.invalid),
                                        meta={"sent_elsewhere": matches.checkpoints} if len(matches) else None)
        return ImportResult(checkpoint, _upload(journal, key, settings, recorded_options, "import", reporter, book,
                                                resend_sent, notes=key_file_warning(api_key_file)))


def resume(
    checkpoint: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    settings: UploadSettings | None = None,
    reporter: Reporter | None = None,
    ledger: str | os.PathLike[str] | None = None,
) -> ImportResult:
    """Continue an import from its checkpoint, with the plan and options it recorded (no re-planning).
    Sends go through the target's ledger as in import_events (`ledger` as there).
    `settings.rate_limits`, `on_uncertain`, `max_retries` and `timeout` override; batch size is as recorded."""
    settings = settings or UploadSettings()
    reporter = reporter or Reporter()
    check_proxy_environment()
    if os.path.exists(checkpoint):
        check_writable(checkpoint)  # a checkpoint on read-only media: say so (status can read it)
    journal = Journal.open(checkpoint)
    try:
        check_base_url(journal.base_url)  # a checkpoint made before URLs were checked this closely
        key = _key(api_key, api_key_file)
    except BackfillError:
        journal.close()
        raise
    if not journal.plan_complete:
        journal.close()
        raise CheckpointError(f"{checkpoint}: the plan was not stored completely; rerun the original import command")
    options = dict(journal.options)
    if settings.rate_limits:
        options["rate_limits"] = [str(limit) for limit in settings.rate_limits]
    reporter.info(f"Resuming {checkpoint} -> {journal.target} ({journal.base_url})")
    try:
        book = open_for(journal.base_url, key, path=ledger)
    except BaseException:
        journal.close()
        raise
    try:
        return ImportResult(str(checkpoint), _upload(journal, key, settings, options, "resume", reporter, book,
                                                     notes=key_file_warning(api_key_file)))
    finally:
        book.close()


def _upload(plain: Journal, api_key: str, settings: UploadSettings, options: dict, command: str,
            reporter: Reporter, book: Ledger, resend_sent: bool = False, *, notes: Sequence[str] = ()) -> UploadResult:
    for note in notes:
        reporter.error(note)
    try:
        journal: Any = LedgeredJournal(plain, book, resend_sent=resend_sent)
    except BaseException:
        plain.close()
        raise
    done = journal.reconciled
    if any(done.values()):
        reporter.info(f"Ledger: settled what the last run left in flight there ({done['sent']} sent, "
                      f"{done['uncertain']} uncertain, {done['released']} not sent)")
    limits = [parse_rate_limit(text) for text in options.get("rate_limits") or [str(x) for x in DEFAULT_LIMITS]]
    longest = max(limit.period for limit in limits)
    wall_now = time.time()
    throttle = Throttle.from_wall_times(limits, journal.request_times(since=wall_now - longest), wall_now=wall_now)
    upload_options = UploadOptions(
        batch_size=int(options.get("batch_size") or 15),
        on_uncertain=settings.on_uncertain or options.get("on_uncertain") or RESEND,
        max_retries=settings.max_retries,
        give_up_after=float(settings.give_up_after),
    )
    if journal.recovered_in_flight:
        reporter.info(f"{journal.recovered_in_flight} events were in flight when the last run stopped: they are uncertain "
                      f"and will be {'resent (possibly duplicated)' if upload_options.on_uncertain == RESEND else 'skipped (possibly missing)'}")
    client = EventsClient(journal.base_url, api_key, timeout=settings.timeout)
    if client.proxy_shown:
        reporter.error(f"Using the https proxy {client.proxy_shown} (from the environment) for {journal.base_url}; "
                       "the key travels inside the TLS tunnel")
    uploader = Uploader(journal, client, throttle, upload_options, budget=SharedBudget(book))
    remaining = journal.counts()
    pending = remaining["pending"] + (remaining["uncertain"] if upload_options.on_uncertain == RESEND else 0)
    reporter.info(f"To send: {pending} events; the rate limits ({', '.join(map(str, limits))}) allow it in about "
                  f"{duration_text(throttle.schedule_seconds(-(-pending // upload_options.batch_size)))}")
    progress = reporter.progress(journal, uploader)
    uploader.progress = progress
    run_id = journal.start_run(time.time(), command)
    outcome = "finished"
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if on_main_thread else None
    if on_main_thread:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = uploader.run()
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except Exception as exc:
        outcome = "key refused" if isinstance(exc, AuthError) else f"stopped: {exc}"
        raise
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        close = getattr(progress, "close", None)
        if close is not None:
            close()
        client.close()
        try:
            journal.end_run(run_id, time.time(), SECRETS(outcome)[:500])
        except BackfillError as exc:  # a full disk: the run stays "interrupted"; say it, keep the first error
            reporter.error(f"Note: the end of this run could not be recorded ({exc})")
            if outcome == "finished":
                raise
        if journal.sent_meanwhile:
            reporter.info(f"{journal.sent_meanwhile} events were sent by another import to this target while this one "
                          "ran (the ledger said so): not sent from here")
        if outcome != "finished":
            reporter.error(upload_report(uploader.result))
            reporter.error(f"The checkpoint is intact. To continue: backfill resume {journal.path}")
        journal.close()
    return result


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def upload_report(result: UploadResult) -> str:
    counts = result.counts  # the checkpoint's counts, taken when the run ended (or stopped)
    lines = [
        f"This run: {result.events['sent']} events sent, {result.events['rejected']} rejected, "
        f"{result.events['uncertain']} uncertain, {result.requests} requests, {result.rate_limited} answered 429, "
        f"{duration_text(result.elapsed)}",
        f"Import: {counts['sent']} sent, {counts['rejected']} rejected, {counts['uncertain']} uncertain, "
        f"{counts['pending']} pending of {counts['planned']} planned ({counts['invalid']} invalid rows not planned)",
    ]
    if counts["possibly_duplicated"]:
        lines.append(f"  {counts['possibly_duplicated']} events were resent after an uncertain attempt: possibly duplicated "
                     "(backfill status CHECKPOINT lists them)")
    if counts["possibly_missing"]:
        lines.append(f"  {counts['possibly_missing']} uncertain events were not resent: possibly missing "
                     "(backfill status CHECKPOINT lists them)")
    if counts["rejected"]:
        lines.append("  rejected events: backfill status CHECKPOINT --rejected FILE writes them with their reasons")
    return "\n".join(lines)


# --------------------------------------------------------------------- status


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_document(journal: Journal) -> dict[str, Any]:
    counts = journal.counts()
    activity = journal.activity()
    return {
        "checkpoint": str(journal.path),
        "target": journal.target,
        "base_url": shown_url(journal.base_url),
        "plan_complete": journal.plan_complete,
        **counts,
        "started_at": _iso(activity["created_at"]),
        "first_request_at": _iso(activity["first_request_at"]),
        "last_activity_at": _iso(activity["last_activity_at"]),
        "sent_elsewhere": journal.sent_elsewhere,
        "uncertain_events": journal.uncertain_events(),
        "runs": [{**run, "started_at": _iso(run["started_at"]), "ended_at": _iso(run["ended_at"])} for run in journal.runs()],
    }


@dataclass
class Status:
    """Where an import stands (`document` is what `status --json` prints), and what was written."""

    document: dict[str, Any]
    rejected_written: int | None = None
    sent_written: int | None = None


def status(
    checkpoint: str | os.PathLike[str],
    *,
    rejected_out: str | os.PathLike[str] | None = None,
    sent_out: str | os.PathLike[str] | None = None,
) -> Status:
    """Read a checkpoint (read-only): counts, uncertain events, runs. `rejected_out` writes the rejected
    events with source and reason, `sent_out` each sent event's source row and server id (JSON Lines)."""
    if os.environ.get(KEY_ENV, "").strip():  # so that a key an older version stored is not shown
        SECRETS.add(os.environ[KEY_ENV].strip())
    journal = Journal.open(checkpoint, read_only=True)
    with journal:
        result = Status(SECRETS.value(status_document(journal)))
        if rejected_out:
            result.rejected_written = _write_lines(rejected_out, (SECRETS.value(dict(e)) for e in journal.rejected_events()))
        if sent_out:
            rows = ({k: e[k] for k in ("event_id", "source_file", "source_row", "server_id")} for e in journal.sent_events())
            result.sent_written = _write_lines(sent_out, rows)
    return result


def _write_lines(path: str | os.PathLike[str], rows: Iterator[dict]) -> int:
    n = 0
    try:
        with open(path, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    return n

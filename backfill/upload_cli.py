"""The `import`, `resume` and `status` commands: plan -> checkpoint -> upload, and reports."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from backfill.client import TARGETS, EventsClient, check_api_key, check_base_url
from backfill.errors import AuthError, CheckpointError, ExitStatus, StrictError, UsageError
from backfill.journal import Journal, PlannedEvent
from backfill.plan import FILE, ROW, Plan
from backfill.summary import duration_text, plan_summary
from backfill.throttle import DEFAULT_LIMITS, Throttle, parse_rate_limit, rate_limit_argument
from backfill.uploader import RESEND, SKIP, UploadOptions, Uploader, UploadResult

KEY_ENV = "DEVGRID_API_KEY"


# --------------------------------------------------------------------- arguments


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key-file", metavar="FILE", help=f"read the API key from FILE (default: ${KEY_ENV})")
    parser.add_argument("--on-uncertain", choices=(RESEND, SKIP), default=None,
                        help="events that may or may not have reached the server: resend them (default; "
                             "reported as possibly duplicated) or skip them (reported as possibly missing)")
    parser.add_argument("--max-retries", type=int, default=5, metavar="N",
                        help="failed attempts in a row (5xx, network) before stopping, resumable (default 5)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="per request (default 30)")


def add_commands(commands: Any, plan_arguments: Callable[[argparse.ArgumentParser], None]) -> None:
    imp = commands.add_parser("import", help="upload the planned events (resumable)",
                              description="Plan the import, confirm, then upload with a checkpoint. "
                                          "Rerun the same command to resume.")
    plan_arguments(imp)
    imp.add_argument("--target", choices=sorted(TARGETS), default=None, help="DevGrid environment (required unless --base-url)")
    imp.add_argument("--base-url", metavar="URL", help="override the target's URL (e.g. the local sandbox)")
    imp.add_argument("--checkpoint", metavar="PATH", help="the checkpoint file (default: derived from inputs and mapping)")
    imp.add_argument("--replan", action="store_true",
                     help="inputs or mapping changed: add the new events to the checkpoint (sent events are never resent)")
    imp.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation (required without a terminal)")
    _connection_arguments(imp)
    imp.set_defaults(handler=cmd_import)

    res = commands.add_parser("resume", help="continue an import from its checkpoint",
                              description="Continue an interrupted import from its checkpoint (no re-planning).")
    res.add_argument("checkpoint", metavar="CHECKPOINT")
    res.add_argument("--rate-limit", dest="rate_limits", action="append", type=rate_limit_argument, metavar="N/PERIOD",
                     help="rate limit, repeatable (default: as the import was started)")
    _connection_arguments(res)
    res.set_defaults(handler=cmd_resume)

    st = commands.add_parser("status", help="show where an import stands",
                             description="Show the counts, uncertain events and runs of an import.")
    st.add_argument("checkpoint", metavar="CHECKPOINT")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.add_argument("--rejected", metavar="FILE", help="write the rejected events (JSON Lines) with source and reason")
    st.add_argument("--sent", metavar="FILE", help="write each sent event's source row and server id (JSON Lines)")
    st.set_defaults(handler=cmd_status)



# --------------------------------------------------------------------- secrets and targets


def read_api_key(key_file: str | None) -> str:
    """The key from --api-key-file or $DEVGRID_API_KEY. Messages never contain it."""
    if key_file:
        try:
            key = Path(key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthError(f"--api-key-file {key_file}: cannot read it ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise AuthError(f"--api-key-file {key_file}: not UTF-8 text") from None
        if not key:
            raise AuthError(f"--api-key-file {key_file}: the file is empty")
        return check_api_key(key)
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise AuthError(f"no API key: set {KEY_ENV} or pass --api-key-file FILE")
    return check_api_key(key)


def resolve_target(target: str | None, base_url: str | None) -> tuple[str, str]:
    if base_url:
        return (target or "custom"), check_base_url(base_url)
    if not target:
        raise UsageError("say where to send: --target production|development (or --base-url URL)")
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


def fingerprints(args: argparse.Namespace) -> dict[str, str]:
    out = {f"input:{os.path.abspath(p)}": file_sha256(p) for p in args.inputs if os.path.isfile(p)}
    if os.path.isfile(args.mapping):
        out[f"mapping:{os.path.abspath(args.mapping)}"] = file_sha256(args.mapping)
    return out


def plan_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "entity_id": args.entity_id,
        "set": sorted(f"{k}={v}" for k, v in args.sets),
        "since": str(args.since) if args.since is not None else None,
        "until": str(args.until) if args.until is not None else None,
        "batch_size": args.batch_size,
        "rate_limits": [str(limit) for limit in (args.rate_limits or DEFAULT_LIMITS)],
        "on_uncertain": args.on_uncertain or RESEND,
    }


_SHAPING = ("entity_id", "set", "since", "until")


def default_checkpoint(args: argparse.Namespace) -> str:
    names = [os.path.abspath(args.mapping), *sorted(os.path.abspath(p) for p in args.inputs)]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:10]
    return f"backfill-{Path(args.mapping).stem}-{digest}.checkpoint"


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


def planned_events(plan: Plan) -> Iterator[PlannedEvent]:
    events = plan.events
    ids = plan.event_ids()
    step = 50_000
    for start in range(0, len(events), step):
        part = events.iloc[start : start + step]
        bodies = plan.bodies(start, start + step)
        for seq, event_id, body, file_index, row, ts in zip(
            range(start, start + len(part)), ids.iloc[start : start + step], bodies, part[FILE], part[ROW], part["timestamp"]
        ):
            yield PlannedEvent(event_id, seq, body, plan.files[int(file_index)], int(row), ts)


# --------------------------------------------------------------------- progress


class TqdmProgress:
    """A tqdm bar over events: sent, rejected, and an ETA from the rate limits, not from tqdm's rate."""

    def __init__(self, journal: Journal, throttle_of: Callable[[], Throttle], batch_size: Callable[[], int]):
        from tqdm import tqdm

        counts = journal.counts()
        self._throttle_of = throttle_of
        self._batch_size = batch_size
        self.sent = counts["sent"]
        self.rejected = counts["rejected"]
        self.total = counts["planned"] - counts["possibly_missing"]
        self.bar = tqdm(
            total=self.total, initial=self.sent + self.rejected, unit="ev", dynamic_ncols=True, file=sys.stderr,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]",
            disable=None,
        )
        self._update_postfix()

    def _update_postfix(self, note: str = "") -> None:
        remaining = max(0, self.total - self.sent - self.rejected)
        requests = -(-remaining // max(1, self._batch_size()))
        eta = self._throttle_of().schedule_seconds(requests)
        text = f"sent {self.sent}, rejected {self.rejected}, ETA {duration_text(eta)}"
        self.bar.set_postfix_str(f"{text}{' - ' + note if note else ''}", refresh=True)

    def advance(self, sent: int, rejected: int, uncertain: int) -> None:
        self.sent += sent
        self.rejected += rejected
        self.bar.update(sent + rejected)
        self._update_postfix()

    def waiting(self, seconds: float, reason: str) -> None:
        self._update_postfix(reason)

    def note(self, text: str) -> None:
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------- commands


def _confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: add --yes to upload without asking")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


def cmd_import(args: argparse.Namespace) -> int:
    from backfill.cli import plan_from_args

    target, base_url = resolve_target(args.target, args.base_url)
    api_key = read_api_key(args.api_key_file)
    checkpoint = args.checkpoint or default_checkpoint(args)
    prints = fingerprints(args)
    options = plan_options(args)
    print(f"Checkpoint: {checkpoint}")

    if os.path.exists(checkpoint):
        journal = Journal.open(checkpoint)
        recorded = (journal.target, journal.base_url)
        if recorded != (target, base_url):
            journal.close()
            raise CheckpointError(
                f"{checkpoint} belongs to an import to {recorded[0]} ({recorded[1]}), not {target} ({base_url}); "
                "use another --checkpoint for another target"
            )
        changes = describe_changes(journal.fingerprints, prints, journal.options, options)
        if changes and not args.replan:
            journal.close()
            raise CheckpointError(
                f"{checkpoint}: the import changed since it started ({'; '.join(changes)}); "
                "rerun with --replan to add the new events (sent events are never resent), or use a new --checkpoint"
            )
        if changes or not journal.plan_complete:
            _, plan = plan_from_args(args, for_import=True)
            print(plan_summary(plan, batch_size=args.batch_size, limits=args.rate_limits or DEFAULT_LIMITS))
            if args.strict and plan.report.invalid:
                journal.close()
                raise StrictError(f"{len(plan.report.invalid)} invalid rows and --strict is set; nothing was sent")
            journal.set_fingerprints(prints, options)
            change = journal.replan(planned_events(plan))
            journal.set_invalid_count(len(plan.report.invalid))
            print(
                f"Replanned: {change['added']} new events, {change['updated']} pending events updated, "
                f"{change['dropped']} pending events no longer planned dropped"
            )
            if change["changed_after_sending"]:
                print(
                    f"Note: {change['changed_after_sending']} events already sent (or rejected, or uncertain) differ "
                    "in the new plan; they are not sent again (use a new --checkpoint to send a corrected copy)"
                )
        else:
            print("Resuming the import recorded in the checkpoint (inputs and mapping unchanged).")
    else:
        _, plan = plan_from_args(args, for_import=True)
        print(plan_summary(plan, batch_size=args.batch_size, limits=args.rate_limits or DEFAULT_LIMITS))
        if args.strict and plan.report.invalid:
            raise StrictError(f"{len(plan.report.invalid)} invalid rows and --strict is set; nothing was sent")
        if not len(plan):
            print("Nothing to send.")
            return ExitStatus.OK
        question = f"Send {len(plan)} events in {plan.requests(args.batch_size)} requests to {target} ({base_url})?"
        if not _confirm(question, args.yes):
            print("Nothing sent.")
            return ExitStatus.OK
        journal = Journal.create(checkpoint, target=target, base_url=base_url, fingerprints=prints, options=options)
        journal.add_events(planned_events(plan))
        journal.set_invalid_count(len(plan.report.invalid))
    return _upload(journal, api_key, args, options)


def cmd_resume(args: argparse.Namespace) -> int:
    journal = Journal.open(args.checkpoint)
    try:
        api_key = read_api_key(args.api_key_file)
    except AuthError:
        journal.close()
        raise
    if not journal.plan_complete:
        journal.close()
        raise CheckpointError(f"{args.checkpoint}: the plan was not stored completely; rerun the original import command")
    options = dict(journal.options)
    if args.rate_limits:
        options["rate_limits"] = [str(limit) for limit in args.rate_limits]
    print(f"Resuming {args.checkpoint} -> {journal.target} ({journal.base_url})")
    return _upload(journal, api_key, args, options)


def _upload(journal: Journal, api_key: str, args: argparse.Namespace, options: dict) -> int:
    limits = [parse_rate_limit(text) for text in options.get("rate_limits") or [str(x) for x in DEFAULT_LIMITS]]
    longest = max(limit.period for limit in limits)
    throttle = Throttle(limits, history=journal.request_times(since=time.time() - longest))
    upload_options = UploadOptions(
        batch_size=int(options.get("batch_size") or 15),
        on_uncertain=args.on_uncertain or options.get("on_uncertain") or RESEND,
        max_retries=args.max_retries,
    )
    if journal.recovered_in_flight:
        print(f"{journal.recovered_in_flight} events were in flight when the last run stopped: they are uncertain "
              f"and will be {'resent (possibly duplicated)' if upload_options.on_uncertain == RESEND else 'skipped (possibly missing)'}")
    client = EventsClient(journal.base_url, api_key, timeout=args.timeout)
    uploader = Uploader(journal, client, throttle, upload_options)
    remaining = journal.counts()
    pending = remaining["pending"] + (remaining["uncertain"] if upload_options.on_uncertain == RESEND else 0)
    print(f"To send: {pending} events; the rate limits ({', '.join(map(str, limits))}) allow it in about "
          f"{duration_text(throttle.schedule_seconds(-(-pending // upload_options.batch_size)))}")
    progress = TqdmProgress(journal, lambda: uploader.throttle, lambda: uploader.batch_size)
    uploader.progress = progress
    run_id = journal.start_run(time.time(), args.command)
    outcome = "finished"
    previous = signal.getsignal(signal.SIGTERM)
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
        signal.signal(signal.SIGTERM, previous)
        progress.close()
        client.close()
        journal.end_run(run_id, time.time(), outcome[:500])
        if outcome != "finished":
            print(_report(uploader.result), file=sys.stderr)
            print(f"The checkpoint is intact. To continue: backfill resume {journal.path}", file=sys.stderr)
        journal.close()
    print(_report(result))
    counts = result.counts
    if counts["rejected"] or counts["possibly_missing"]:
        return ExitStatus.REJECTED
    return ExitStatus.OK


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _report(result: UploadResult) -> str:
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


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_document(journal: Journal) -> dict[str, Any]:
    counts = journal.counts()
    activity = journal.activity()
    return {
        "checkpoint": str(journal.path),
        "target": journal.target,
        "base_url": journal.base_url,
        **counts,
        "started_at": _iso(activity["created_at"]),
        "first_request_at": _iso(activity["first_request_at"]),
        "last_activity_at": _iso(activity["last_activity_at"]),
        "uncertain_events": journal.uncertain_events(),
        "runs": [{**run, "started_at": _iso(run["started_at"]), "ended_at": _iso(run["ended_at"])} for run in journal.runs()],
    }


def cmd_status(args: argparse.Namespace) -> int:
    journal = Journal.open(args.checkpoint, read_only=True)
    with journal:
        doc = status_document(journal)
        if args.rejected:
            n = _write_lines(args.rejected, ({k: v for k, v in e.items()} for e in journal.rejected_events()))
            print(f"Wrote {n} rejected events to {args.rejected}", file=sys.stderr if args.json else sys.stdout)
        if args.sent:
            rows = ({k: e[k] for k in ("event_id", "source_file", "source_row", "server_id")} for e in journal.sent_events())
            n = _write_lines(args.sent, rows)
            print(f"Wrote {n} sent events to {args.sent}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(doc, indent=2))
        return ExitStatus.OK
    print(f"Checkpoint {doc['checkpoint']} -> {doc['target']} ({doc['base_url']})")
    print(f"Planned {doc['planned']}: sent {doc['sent']}, rejected {doc['rejected']}, pending {doc['pending']}, "
          f"uncertain {doc['uncertain']}, in flight {doc['in_flight']}; invalid rows {doc['invalid']}")
    print(f"Requests {doc['requests']}; started {doc['started_at']}, last activity {doc['last_activity_at']}")
    if doc["possibly_duplicated"] or doc["possibly_missing"]:
        print(f"Possibly duplicated: {doc['possibly_duplicated']}; possibly missing: {doc['possibly_missing']}")
    for event in doc["uncertain_events"][:50]:
        print(f"  {event['status']}: {event['source_file']} row {event['source_row']} ({event['timestamp']}, id {event['event_id']})")
    if len(doc["uncertain_events"]) > 50:
        print(f"  ... {len(doc['uncertain_events']) - 50} more (status --json lists all)")
    for run in doc["runs"][-5:]:
        print(f"Run {run['run_id']}: {run['started_at']} .. {run['ended_at'] or '(running or killed)'}: {run['outcome'] or '-'}")
    return ExitStatus.OK


def _write_lines(path: str, rows: Iterator[dict]) -> int:
    n = 0
    try:
        with open(path, "w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror}") from None
    return n

"""The `import`, `resume` and `status` commands: arguments -> one call into backfill.importer -> text.

Also the command line's side of the flow that the library leaves open: a Reporter that prints,
asks on the terminal and draws a tqdm bar, and the options objects built from parsed arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from backfill import importer
from backfill.client import TARGETS, timeout_argument
from backfill.errors import ExitStatus, UsageError
from backfill.importer import KEY_ENV, PlanOptions, Reporter, UploadSettings
from backfill.journal import Journal
from backfill.throttle import duration_argument, duration_text, Throttle, rate_limit_argument
from backfill.uploader import RESEND, SKIP, Uploader, retries_argument


def plan_options_from(args: argparse.Namespace) -> PlanOptions:
    return PlanOptions(entity_id=args.entity_id, sets=tuple(args.sets), since=args.since, until=args.until)


def upload_settings_from(args: argparse.Namespace) -> UploadSettings:
    return UploadSettings(
        batch_size=getattr(args, "batch_size", None) or importer.MAX_BATCH,
        rate_limits=tuple(args.rate_limits) if args.rate_limits else None,
        on_uncertain=getattr(args, "on_uncertain", None),
        max_retries=getattr(args, "max_retries", None),
        timeout=getattr(args, "timeout", importer.DEFAULT_TIMEOUT),
        give_up_after=getattr(args, "give_up_after", importer.DEFAULT_GIVE_UP_AFTER),
    )


# --------------------------------------------------------------------- arguments


def ledger_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="PATH",
                        help="the target's ledger of sent events (default: $BACKFILL_LEDGER, else one per target "
                             "and key in the user state directory)")


def target_arguments(parser: argparse.ArgumentParser) -> None:
    """Which target's ledger: --target / --base-url with the key (or --ledger PATH alone)."""
    parser.add_argument("--target", choices=sorted(TARGETS), default=None, help="DevGrid environment")
    parser.add_argument("--base-url", metavar="URL", help="the target's URL (e.g. the local sandbox)")
    parser.add_argument("--api-key-file", metavar="FILE", help=f"read the API key from FILE (default: ${KEY_ENV})")
    ledger_argument(parser)


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    ledger_argument(parser)
    parser.add_argument("--api-key-file", metavar="FILE", help=f"read the API key from FILE (default: ${KEY_ENV})")
    parser.add_argument("--on-uncertain", choices=(RESEND, SKIP), default=None,
                        help="events that may or may not have reached the server: resend them (default; "
                             "reported as possibly duplicated) or skip them (reported as possibly missing)")
    parser.add_argument("--max-retries", type=retries_argument, default=None, metavar="N",
                        help="stop after N failed attempts in a row of any kind, resumable (default: outages are "
                             "waited out up to --give-up-after; answers that settle nothing stop after 5)")
    parser.add_argument("--give-up-after", type=duration_argument, default=importer.DEFAULT_GIVE_UP_AFTER,
                        metavar="DURATION",
                        help="an outage (server unreachable, 5xx, timeouts) is waited out with backoff until this "
                             "long without a single success, then a clean, resumable stop (default 2h)")
    parser.add_argument("--timeout", type=timeout_argument, default=30.0, metavar="SECONDS",
                        help="for a whole request, answer included (default 30)")


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
    imp.add_argument("--resend-sent", action="store_true",
                     help="send again the events that the target's ledger says earlier imports sent (duplicates!)")
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


# --------------------------------------------------------------------- the terminal


class ConsoleReporter(Reporter):
    """Messages on stdout, failures on stderr, the confirmation on the terminal (or --yes), a tqdm bar."""

    def __init__(self, assume_yes: bool = False):
        self.assume_yes = assume_yes

    def info(self, text: str) -> None:
        print(text)

    def error(self, text: str) -> None:
        print(text, file=sys.stderr)

    def confirm(self, question: str) -> bool:
        if self.assume_yes:
            return True
        if not sys.stdin or not sys.stdin.isatty():
            raise UsageError("no terminal to confirm on: add --yes to upload without asking")
        answer = input(f"{question} [y/N] ").strip().lower()
        return answer in ("y", "yes")

    def progress(self, journal: Journal, uploader: Uploader) -> TqdmProgress:
        return TqdmProgress(journal, lambda: uploader.throttle, lambda: uploader.batch_size)


# --------------------------------------------------------------------- commands


def _exit_status(result: importer.ImportResult) -> int:
    if result.upload is None:
        return ExitStatus.OK
    print(result.report)
    return ExitStatus.OK if result.complete else ExitStatus.REJECTED


def cmd_import(args: argparse.Namespace) -> int:
    result = importer.import_events(
        args.inputs, args.mapping, target=args.target, base_url=args.base_url, api_key_file=args.api_key_file,
        checkpoint=args.checkpoint, replan=args.replan, strict=args.strict, options=plan_options_from(args),
        settings=upload_settings_from(args), invalid_out=args.invalid_out, reporter=ConsoleReporter(args.yes),
        ledger=args.ledger, resend_sent=args.resend_sent,
    )
    return _exit_status(result)


def cmd_resume(args: argparse.Namespace) -> int:
    result = importer.resume(args.checkpoint, api_key_file=args.api_key_file, settings=upload_settings_from(args),
                             reporter=ConsoleReporter(), ledger=args.ledger)
    return _exit_status(result)


def cmd_status(args: argparse.Namespace) -> int:
    result = importer.status(args.checkpoint, rejected_out=args.rejected, sent_out=args.sent)
    notes = sys.stderr if args.json else sys.stdout
    if result.rejected_written is not None:
        print(f"Wrote {result.rejected_written} rejected events to {args.rejected}", file=notes)
    if result.sent_written is not None:
        print(f"Wrote {result.sent_written} sent events to {args.sent}", file=notes)
    doc = result.document
    if args.json:
        print(json.dumps(doc, indent=2))
        return ExitStatus.OK
    print(f"Checkpoint {doc['checkpoint']} -> {doc['target']} ({doc['base_url']})")
    print(f"Planned {doc['planned']}: sent {doc['sent']}, rejected {doc['rejected']}, pending {doc['pending']}, "
          f"uncertain {doc['uncertain']}, in flight {doc['in_flight']}; invalid rows {doc['invalid']}")
    print(f"Requests {doc['requests']}; started {doc['started_at']}, last activity {doc['last_activity_at']}")
    for name, n in doc["sent_elsewhere"].items():
        print(f"Left out, sent by another import ({name}): {n}")
    if not doc["plan_complete"]:
        print("The plan is incomplete: a run stopped while storing it. Rerun the original import command to finish "
              "planning (events already sent stay sent).")
    if doc["possibly_duplicated"] or doc["possibly_missing"]:
        print(f"Possibly duplicated: {doc['possibly_duplicated']}; possibly missing: {doc['possibly_missing']}")
    for event in doc["uncertain_events"][:50]:
        copies = f"; up to {event['copies_at_most']} copies" if event.get("copies_at_most", 1) > 1 else ""
        print(f"  {event['status']}: {event['source_file']} row {event['source_row']} ({event['timestamp']}, id {event['event_id']}{copies})")
    if len(doc["uncertain_events"]) > 50:
        print(f"  ... {len(doc['uncertain_events']) - 50} more (status --json lists all)")
    for run in doc["runs"][-5:]:
        print(f"Run {run['run_id']}: {run['started_at']} .. {run['ended_at'] or '(running or killed)'}: {run['outcome'] or '-'}")
    return ExitStatus.OK

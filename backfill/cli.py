"""The `backfill` command: argument parsing -> one library call -> text and an exit status."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from typing import TYPE_CHECKING, Sequence

from backfill import __version__, importer, ledger_cli, sandbox, shipped, upload_cli
from backfill.display import line as display_line, printable
from backfill.errors import BackfillError, ExitStatus, UsageError
from backfill.events import MAX_BATCH
from backfill.redact import SECRETS
from backfill.throttle import rate_limit_argument

if TYPE_CHECKING:  # pandas and the planner load with the commands that plan (see build_parser)
    import pandas as pd


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _set_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{name.strip()}: empty value; leave the --set out to send no {name.strip()}")
    return name.strip(), value.strip()


def _entity_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty entity id; give the DevGrid entity's UUID or shortId")
    return text.strip()


def _date(text: str) -> pd.Timestamp:
    """--since/--until: a real date (never NaT: an empty variable or `nat` would drop every row)."""
    from backfill.normalize import parse_instant

    try:
        return parse_instant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output_file(text: str) -> str:
    """--out/--invalid-out: a file that can be created, checked before any work is done."""
    from backfill.inputs import output_problem

    problem = output_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def _batch_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= size <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_BATCH} (the API's maximum)")
    return size



def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    # INPUT and -m are required unless --sample gives both; _check_plan_inputs says so as argparse would
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="input files (CSV, JSON, NDJSON, Jenkins or GitLab exports)")
    parser.add_argument("-m", "--mapping", metavar="YAML",
                        help="the mapping file, or the name of a shipped mapping (backfill mappings lists them)")
    parser.add_argument("--sample", metavar="NAME",
                        help="instead of INPUT, a sample shipped with backfill (release-log, jenkins-builds, ...); "
                             "-m defaults to its shipped mapping")
    parser.set_defaults(plan_prog=parser.prog)
    parser.add_argument("--entity-id", type=_entity_id, metavar="ID", help="a constant entityId for every event (overrides the mapping)")
    parser.add_argument("--set", dest="sets", action="append", type=_set_pair, default=[], metavar="NAME=VALUE",
                        help="a constant attribute for every event, e.g. --set env=production (repeatable)")
    parser.add_argument("--since", type=_date, metavar="DATE", help="keep only events at or after DATE (UTC)")
    parser.add_argument("--until", type=_date, metavar="DATE", help="keep only events before DATE (UTC)")
    parser.add_argument("--invalid-out", type=_output_file, metavar="FILE", help="write every invalid row (JSON Lines) with its reason")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if any row is invalid")
    parser.add_argument("--batch-size", type=_batch_size, default=MAX_BATCH, metavar="N", help=f"events per request, 1-{MAX_BATCH} (default {MAX_BATCH})")
    parser.add_argument("--rate-limit", dest="rate_limits", action="append", type=rate_limit_argument, metavar="N/PERIOD",
                        help="rate limit, repeatable (default: 100/min and 1500/h, the API's)")


# Commands whose modules load neither pandas nor the planner: asked for one of them, the parser is
# built with the upload commands alone, so that `status` and `resume` start in a fraction of the time.
LIGHT_COMMANDS = ("status", "resume")


def _command_word(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(*, light: bool = False) -> argparse.ArgumentParser:
    """The command line; `light`: only the upload commands (import, resume, status)."""
    parser = _Parser(prog="backfill", description="Import historical deployments into DevGrid as event-deploy events.")
    parser.add_argument("--version", action="version", version=f"backfill {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if light:
        upload_cli.add_commands(commands, _plan_arguments)
        return parser
    from backfill import starter
    from backfill.fetch import cli as fetch_cli

    preview = commands.add_parser("preview", help="dry run: show what would be sent (no network, no key)",
                                  description="Plan the import and show the summary and first payloads. No network. "
                                              "With --target/--base-url (and the key, only to find its ledger) "
                                              "it also says which events earlier imports sent there.")
    _plan_arguments(preview)
    preview.add_argument("--out", type=_output_file, metavar="FILE", help="write every request body, one {\"events\": [...]} per line")
    preview.add_argument("--show", type=int, default=1, metavar="N", help="pretty-print the first N requests (default 1, 0 for none)")
    preview.add_argument("--report", metavar="FILE", help="write the history and warnings: FILE.html (a page with charts) or FILE.json")
    upload_cli.target_arguments(preview)  # optional: which earlier imports to that target already sent
    preview.set_defaults(handler=cmd_preview)

    check = commands.add_parser("check-mapping", help="validate a mapping file alone",
                                description="Validate a mapping file (or a shipped mapping by name); errors name the YAML line and key.")
    check.add_argument("mapping", metavar="YAML")
    check.set_defaults(handler=cmd_check_mapping)

    init = commands.add_parser("init", help="write a starter mapping for your files (backfill init FILE > my.yaml)",
                               description="Print a starter mapping for the input files, every line commented with what "
                                           "was found: a known export (Jenkins, GitLab, GitHub, detected from the content) "
                                           "starts from its shipped mapping; CSV, JSON and NDJSON get guesses for each "
                                           "field from the column names and values of the first rows.")
    init.add_argument("inputs", nargs="+", metavar="INPUT", help="input files (the first decides the format)")
    init.add_argument("--rows", type=_positive, default=starter.SAMPLE_ROWS, metavar="N",
                      help=f"rows to learn from (default {starter.SAMPLE_ROWS})")
    init.set_defaults(handler=cmd_init)

    maps = commands.add_parser("mappings", help="list the mappings shipped with backfill, or print one",
                               description="List the shipped mappings (one line each: name, format, what it is for, "
                                           "its sample); `mappings show NAME` prints one to copy and adapt; "
                                           "`mappings schema` prints the path of the mapping files' JSON Schema.")
    maps.set_defaults(handler=cmd_mappings)
    actions = maps.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    show = actions.add_parser("show", help="print a shipped mapping", description="Print a shipped mapping, to copy and adapt.")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(handler=cmd_mappings_show)
    schema = actions.add_parser("schema", help="print the path of the mapping JSON Schema",
                                description="Print the path of the JSON Schema of mapping files (for editors).")
    schema.set_defaults(handler=cmd_mappings_schema)

    upload_cli.add_commands(commands, _plan_arguments)
    ledger_cli.add_commands(commands, upload_cli.target_arguments)
    fetch_cli.add_commands(commands, _date)

    box = commands.add_parser("sandbox", help="run a local Events API to rehearse an import",
                              description="A local implementation of the DevGrid Events API for rehearsals.")
    sandbox.add_arguments(box)
    box.set_defaults(handler=sandbox.run)
    return parser


def cmd_preview(args: argparse.Namespace) -> int:
    from backfill import report  # pandas and matplotlib load only for the commands that need them

    if args.report:
        from backfill.inputs import check_outputs

        report.check_report_path(args.report)
        check_outputs(args.inputs, {"--out": args.out, "--invalid-out": args.invalid_out, "--report": args.report})
    result = importer.preview(
        args.inputs, args.mapping, options=upload_cli.plan_options_from(args),
        settings=upload_cli.upload_settings_from(args), show=args.show, out=args.out, invalid_out=args.invalid_out,
        target=args.target, base_url=args.base_url, api_key_file=args.api_key_file, ledger=args.ledger,
    )
    print(result.summary)
    history = report.build(result.plan)
    print(report.history_text(history, report_path=args.report))
    if args.show > 0:
        print(result.payloads)
    if args.out:
        print(f"Wrote {result.requests_written} request bodies ({len(result.plan)} events) to {args.out}")
    if args.invalid_out:
        print(f"Wrote {len(result.plan.report.invalid)} invalid rows to {args.invalid_out}")
    if args.report:
        report.write_report(history, args.report)
        print(f"Wrote the report to {args.report}")
    importer.check_strict(result.plan, args.strict)
    return ExitStatus.OK


def _check_plan_inputs(args: argparse.Namespace) -> None:
    """INPUT and -m, or --sample NAME (which gives the input, and the mapping unless -m is given)."""
    if getattr(args, "sample", None):
        if args.inputs:
            raise UsageError(f"{args.plan_prog}: --sample replaces INPUT; give input files or --sample NAME, not both")
        path, owner = shipped.sample(args.sample)
        args.inputs = [str(path)]
        if args.mapping is None and owner is not None:
            args.mapping = str(owner.path)
    missing = [name for name, value in (("INPUT", args.inputs), ("-m/--mapping", args.mapping)) if not value]
    if missing:
        raise UsageError(f"{args.plan_prog}: the following arguments are required: {', '.join(missing)} "
                         f"(see {args.plan_prog} --help)")


def cmd_check_mapping(args: argparse.Namespace) -> int:
    from backfill.mapping import load_mapping

    mapping = load_mapping(shipped.resolve_mapping(args.mapping))
    rules = len(mapping.attributes)
    print(
        f"{mapping.path}: OK (format {mapping.source.format}, {rules} attributes, "
        f"{len(mapping.filters)} filter rules{', dedupe on ' + ', '.join(mapping.dedupe) if mapping.dedupe else ''})"
    )
    if mapping.entity is None:
        print("note: no entityId rule; pass --entity-id ID when you preview or import")
    return ExitStatus.OK


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_init(args: argparse.Namespace) -> int:
    from backfill import starter

    sys.stdout.write(starter.starter_mapping(args.inputs, sample_rows=args.rows))
    return ExitStatus.OK


def cmd_mappings(args: argparse.Namespace) -> int:
    found = shipped.shipped_mappings()
    width = max((len(m.name) for m in found), default=0)
    formats = max((len(m.format) for m in found), default=0)
    for m in found:
        sample = f" (sample: --sample {m.sample.stem})" if m.sample else ""
        print(f"{m.name:<{width}}  {m.format:<{formats}}  {m.description}{sample}".rstrip())
    return ExitStatus.OK


def cmd_mappings_show(args: argparse.Namespace) -> int:
    sys.stdout.write(shipped.show_mapping(args.name))
    return ExitStatus.OK


def cmd_mappings_schema(args: argparse.Namespace) -> int:
    print(shipped.schema_path())
    return ExitStatus.OK


class _PipeSafe:
    """stdout that keeps working when its reader goes away (`backfill preview ... | head`): the
    rest of the output is dropped, the work (files, uploads) and the exit status are not."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        text = printable(text, layout=True)  # nothing from input data reaches the terminal raw
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop()

    def _drop(self) -> None:
        try:  # later writes, and the interpreter's last flush, go to /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        self._stream = open(os.devnull, "w", encoding="utf-8")

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    _returning_allocator()
    stdout = sys.stdout
    sys.stdout = _PipeSafe(stdout)
    try:
        with warnings.catch_warnings():
            if command_line and not sys.warnoptions:
                # a library's warning (pandas, pyarrow) is not for the user of the command; the
                # known sources are fixed where they arise, this keeps any other off the terminal
                warnings.simplefilter("ignore")
            return _run(argv)
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def _returning_allocator() -> None:
    """Arrow's memory from the C heap (glibc's malloc, which the planner trims back to the system
    as it goes) instead of its default pool (mimalloc), which keeps freed memory for reuse: about
    40-100 MB less peak memory for a large plan. Said by the variable arrow reads when it makes its
    pool, so nothing is imported here; a program using the library keeps its own choice, and an
    ARROW_DEFAULT_MEMORY_POOL the user set wins."""
    try:
        glibc = "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")
    except (AttributeError, ValueError, OSError):
        glibc = False
    if glibc:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (exit 130, the checkpoint intact)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _handle_signals() -> dict[int, object]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt from here on; returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT), signal.SIGTERM: signal.getsignal(signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    return previous


def _run(argv: list[str]) -> int:
    show_traceback = "--traceback" in argv
    previous: dict[int, object] = {}
    SECRETS.clear()  # a command knows the secrets it reads (a program may run several)
    try:
        previous = _handle_signals()
        return _dispatch(argv, show_traceback)
    except KeyboardInterrupt as exc:  # before the dispatch, or while printing its error
        return _interrupted(exc)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]


def _interrupted(exc: KeyboardInterrupt) -> int:
    print("Interrupted (SIGTERM)." if isinstance(exc, Terminated) else "Interrupted.", file=sys.stderr)
    return int(ExitStatus.INTERRUPTED)


def _dispatch(argv: list[str], show_traceback: bool) -> int:
    try:
        parser = build_parser(light=_command_word(argv) in LIGHT_COMMANDS)
        args = parser.parse_args(argv)
        if not getattr(args, "handler", None):
            parser.print_help()
            return ExitStatus.USAGE
        if getattr(args, "plan_prog", None):
            _check_plan_inputs(args)
        return int(args.handler(args))
    except BackfillError as exc:
        print(SECRETS(f"Error: {display_line(exc, 1000)}"), file=sys.stderr)
        return int(exc.exit_status)
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:  # a bug: one line unless --traceback
        if show_traceback:
            raise
        print(SECRETS(f"Internal error: {type(exc).__name__}: {display_line(exc, 1000)} (rerun with --traceback and report it)"), file=sys.stderr)
        return int(ExitStatus.ERROR)

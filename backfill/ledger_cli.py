"""`backfill ledger show | export | import`: look into the per-target ledgers and move them between machines."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from backfill import ledger as ledgers
from backfill.errors import ExitStatus, LedgerError, UsageError


def add_commands(commands: Any, target_arguments: Any) -> None:
    led = commands.add_parser(
        "ledger", help="show, export or import the ledger of sent events per target",
        description="Every import records what it sent in the ledger of its target and API key, so that no "
                    "event is sent twice across imports, checkpoints and machines.",
    )
    actions = led.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="counts per target, checkpoint and date",
                              description="Without a target, every ledger on this machine.")
    target_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=cmd_show)

    export = actions.add_parser("export", help="write the target's ledger as JSON Lines",
                                description="Write the ledger of one target and key to FILE (JSON Lines), "
                                            "for another machine or a teammate: `backfill ledger import FILE` there.")
    export.add_argument("file", metavar="FILE", help="where to write (- for standard output)")
    target_arguments(export)
    export.set_defaults(handler=cmd_export)

    imp = actions.add_parser("import", help="merge an exported ledger into this machine's",
                             description="Merge a `backfill ledger export` file into the ledger of the target and "
                                         "key it names (the key itself is not needed). Entries are never lost.")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--ledger", metavar="PATH", help="merge into this ledger file instead of the default one")
    imp.set_defaults(handler=cmd_import)


def _open(args: argparse.Namespace, *, create: bool) -> ledgers.Ledger:
    from backfill import importer

    if args.ledger and not (args.target or args.base_url):
        return ledgers.Ledger.open(args.ledger, base_url=None, key_id=None, create=False)
    target, base_url = importer.resolve_target(args.target, args.base_url)
    key = importer.read_api_key(args.api_key_file)
    kid = ledgers.key_id(base_url, key)
    path = Path(args.ledger) if args.ledger else ledgers.default_ledger_path(base_url, kid)
    if not path.exists() and not create:
        raise LedgerError(f"no ledger for {target} ({base_url}) with this key yet ({path}): nothing was sent there")
    return ledgers.Ledger.open(path, base_url=base_url, key_id=kid, create=create)


def cmd_show(args: argparse.Namespace) -> int:
    if args.ledger or args.target or args.base_url:
        with _open(args, create=False) as led:
            documents = [led.summary()]
    else:
        documents = []
        for path in ledgers.all_ledgers():
            try:
                with ledgers.Ledger.open(path, base_url=None, key_id=None, create=False) as led:
                    documents.append(led.summary())
            except LedgerError as exc:
                documents.append({"ledger": str(path), "error": str(exc)})
    if args.json:
        print(json.dumps(documents, indent=2))
        return ExitStatus.OK
    if not documents:
        print(f"No ledgers yet in {ledgers.ledger_dir()}: nothing has been sent from this machine.")
        return ExitStatus.OK
    for doc in documents:
        if "error" in doc:
            print(f"{doc['ledger']}: {doc['error']}")
            continue
        totals = doc["totals"]
        print(f"{doc['base_url']}  ({doc['ledger']})")
        print(f"  {totals['sent']:,} events sent, {totals['uncertain']:,} uncertain, "
              f"{totals['in_flight']:,} in flight (a run that stopped: resume its checkpoint)")
        for row in doc["checkpoints"]:
            print(f"  {row['checkpoint']} [{row['host']}]: {row['events']:,} {row['state']}, {row['first']} .. {row['last']}")
        for row in doc["dates"][-10:]:
            print(f"  {row['date']}: {row['events']:,} {row['state']}")
        if len(doc["dates"]) > 10:
            print(f"  ... {len(doc['dates']) - 10} earlier dates (--json lists all)")
    return ExitStatus.OK


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args, create=False) as led:
        base_url = led.base_url
        if args.file == "-":
            n = led.export(sys.stdout)
            print(f"Exported {n:,} entries of {led.base_url}", file=sys.stderr)
            return ExitStatus.OK
        target = Path(args.file)
        if target.is_dir():
            raise UsageError(f"{args.file} is a directory; give a file name")
        temp = target.with_name(f".{target.name}.partial")
        try:
            with open(temp, "w", encoding="utf-8") as out:
                n = led.export(out)
            os.replace(temp, target)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise UsageError(f"{args.file}: cannot write: {exc.strerror}") from None
    print(f"Exported {n:,} entries of {base_url} to {args.file}")
    return ExitStatus.OK


def cmd_import(args: argparse.Namespace) -> int:
    path, result = ledgers.import_file(args.file, path=args.ledger)
    print(f"Merged {args.file} into {path}: {result['added']:,} new entries, "
          f"{result['upgraded']:,} uncertain entries now known as sent")
    return ExitStatus.OK

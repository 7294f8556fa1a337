"""Ctrl-C and SIGTERM while the `backfill` command is still starting (importing pandas takes a while):
either one ends it at once, exit 130 and one line, never a traceback. `backfill/__init__.py` calls
`handle_signals_while_starting` first thing when the process is the command, never for a program
that imports the library; `backfill.cli.main` then installs its own handling. It imports nothing
that Python has not loaded already but `signal`: each import here is time when Ctrl-C is Python's."""

import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    os.write(2, f"Interrupted ({name}) while starting; nothing was done.\n".encode())
    os._exit(130)


def handle_signals_while_starting() -> None:
    try:
        signal.signal(signal.SIGINT, _interrupted_while_starting)
        signal.signal(signal.SIGTERM, _interrupted_while_starting)
    except ValueError:  # not the main thread: the embedding program owns the signals
        pass


def starting_as_the_command(argv: list[str], orig_argv: list[str]) -> bool:
    """`python -m backfill ...` (not `-m backfill.sandbox`) or the installed `backfill` script."""
    if argv and argv[0] == "-m":  # runpy is still locating the module: the original command line says which
        for i, arg in enumerate(orig_argv):
            if arg == "-m":
                return orig_argv[i + 1 : i + 2] == ["backfill"]
            if arg.startswith("-m"):
                return arg == "-mbackfill"
        return False
    return bool(argv) and os.path.basename(argv[0]) in ("backfill", "backfill.exe", "backfill-script.py")


if starting_as_the_command(sys.argv, list(getattr(sys, "orig_argv", []))):
    handle_signals_while_starting()

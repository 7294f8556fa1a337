"""`python -m backfill` and the `backfill` command (see backfill._startup for signals while starting)."""

from backfill._startup import handle_signals_while_starting


def main() -> int:
    handle_signals_while_starting()
    from backfill.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())

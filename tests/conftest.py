"""Small shared fixtures: write a file, run the CLI in-process, where the shipped sample lives."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Iterator
from typing import Callable

import pytest

from backfill.cli import main
from e2e_helpers import Processes

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CSV = ROOT / "samples" / "release-log.csv"
SAMPLE_MAPPING = ROOT / "mappings" / "release-log.yaml"


def write_file(tmp_path: Path, name: str, text: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Write `text` (or raw bytes) to tmp_path/name exactly as given (no newline translation)."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


@pytest.fixture(autouse=True)
def own_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own user state directory, so the per-target ledgers of one test (and of the
    subprocesses it starts) never meet another's, nor the ledgers of the machine's user."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.delenv("BACKFILL_LEDGER", raising=False)
    return state


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """The subprocesses (sandbox, `backfill`) of one end-to-end test, killed when it ends."""
    processes = Processes(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.fixture
def write() -> Callable[..., Path]:
    """`write(tmp_path, name, text)` -> the path written."""
    return write_file


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """`run_cli(*args)` -> (exit code, stdout, stderr) of `backfill ARGS`, run in-process.

    No run may ever print a traceback or an internal error: expected failures are one line.
    """

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()  # drop anything printed before
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # --help / --version
            code = exc.code if isinstance(exc.code, int) else 0
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert "Internal error" not in err
        return code, out, err

    return run

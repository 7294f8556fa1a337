"""End to end against hostile conditions: real `backfill` subprocesses, the sandbox or a hostile server on 127.0.0.1."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from e2e_helpers import ROOT, Processes, content, preview_bodies, status, write_release_log

RELEASE_LOG = ROOT / "mappings" / "release-log.yaml"


def import_args(inputs: list[Path], url: str, checkpoint: Path, *extra: str) -> list[str]:
    return ["import", *map(str, inputs), "-m", str(RELEASE_LOG), "--base-url", url, "--yes", "--checkpoint", str(checkpoint), *extra]


def test_a_checkpoint_that_lost_its_wal_after_a_kill_never_sends_acknowledged_events_again(
    tmp_path: Path, procs: Processes
) -> None:
    rng = random.Random(9)
    csv = tmp_path / "deploys.csv"
    builds = write_release_log(csv, 300, seed=9)
    planned = {e["attributes"]["build_id"]: content(e) for body in preview_bodies([csv], RELEASE_LOG, [], tmp_path) for e in body}
    limits = ["--rate-limit", "4/0.1s"]
    box = procs.sandbox("--latency", "0.005", *limits)
    checkpoint = tmp_path / "import.checkpoint"
    args = import_args([csv], box.url, checkpoint, *limits)
    kills = 0
    for _ in range(4):
        target = box.stats()["requests"] + rng.randint(2, 6)
        run = procs.run(args, kill_when=lambda t=target: box.stats()["requests"] >= t, kill_delay=rng.uniform(0, 0.02))
        kills += run.killed
        # A cleanup (or a copy of the checkpoint file alone) drops what SQLite keeps beside it.
        for suffix in ("-wal", "-shm"):
            Path(f"{checkpoint}{suffix}").unlink(missing_ok=True)
    assert kills >= 3
    final = procs.run(args)
    assert final.returncode == 0, final
    st = status(checkpoint, tmp_path)
    doc = st.doc
    assert (doc["planned"], doc["sent"], doc["pending"], doc["uncertain"]) == (300, 300, 0, 0)
    recorded = box.recorded()
    copies = Counter(r["attributes"]["build_id"] for r in recorded)
    assert set(copies) == set(planned)
    reported = {builds[e["source_row"]] for e in doc["uncertain_events"] if e["status"] == "duplicated"}
    twice = {build for build, n in copies.items() if n > 1}
    assert twice <= reported, f"stored twice but not reported: {sorted(twice - reported)}"
    # At most the request of each kill is in doubt: never the whole import again.
    assert len(recorded) <= 300 + 15 * kills


def test_sigterm_while_planning_exits_130_with_a_message(tmp_path: Path, procs: Processes) -> None:
    csv = tmp_path / "deploys.csv"
    write_release_log(csv, 20_000, seed=1)
    proc, out, err = procs.start(import_args([csv], "http://127.0.0.1:9", tmp_path / "c.checkpoint"))
    time.sleep(1.5)
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.returncode == 130, (proc.returncode, err.read_text())
    text = err.read_text()
    assert "Traceback" not in text and "Interrupted" in text


@pytest.mark.parametrize("delay", [0.05, 0.1, 0.2, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_never_prints_a_traceback(tmp_path: Path, procs: Processes, delay: float, signame: str) -> None:
    import signal

    proc, out, err = procs.start(["preview", str(ROOT / "samples" / "release-log.csv"), "-m", str(RELEASE_LOG)])
    time.sleep(delay)
    proc.send_signal(getattr(signal, signame))
    proc.wait(timeout=30)
    text = err.read_text()
    if "Traceback" in text:
        # Only the interpreter's own start-up, up to the import that installs the handler (the first
        # statement of backfill/__init__.py), may be cut short this way; from then on it is handled.
        frames = [line for line in text.splitlines() if line.strip().startswith("File ")]
        ours = [f for f in frames if "backfill" in f or "site-packages" in f]
        assert all(("backfill/__init__.py" in f or "backfill/_startup.py" in f) and "<module>" in f for f in ours), text
        return
    assert proc.returncode in (0, 130, -getattr(signal, signame)), (proc.returncode, text)
    if proc.returncode == 130:
        assert "Interrupted" in text
    assert os.path.exists(out)


def test_the_start_up_handler_is_only_for_the_command() -> None:
    from backfill._startup import starting_as_the_command

    assert starting_as_the_command(["-m"], ["python", "-m", "backfill", "import"])
    assert starting_as_the_command(["/usr/local/bin/backfill", "status"], ["python", "/usr/local/bin/backfill"])
    assert not starting_as_the_command(["-m"], ["python", "-m", "backfill.sandbox"])
    assert not starting_as_the_command(["my_script.py"], ["python", "my_script.py"])
    assert not starting_as_the_command([""], ["python"])

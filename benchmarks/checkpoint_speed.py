"""Checkpoint speed: `import` command to first request, `resume` to first request, `status` wall time.

    python benchmarks/checkpoint_speed.py [--rows 1000000] [--repeat 3] [--resumes 5] [--keep DIR]

Generates the CSV of benchmarks/plan_throughput.py (its generator and mapping), then, each command in
its own process with a fake key (DEVGRID_API_KEY), its own XDG_STATE_HOME and ledger in the work folder,
against a local sandbox (backfill.sandbox.Sandbox, in this process) that notes when each request arrives:

  1. `preview FILE -m MAPPING --out payloads.jsonl --show 0`, whole command;
  2. `import FILE -m MAPPING --base-url URL --yes --checkpoint NEW`: from the command's start to the
     first request the sandbox receives; the import is then stopped with SIGTERM (a clean stop, exit 130);
     each repetition with a new checkpoint and a new ledger;
  3. `resume CHECKPOINT` on the last import's checkpoint, command start to first request, then SIGTERM;
     `--resumes` times in a row, so the checkpoint holds many runs;
  4. `status CHECKPOINT` (whole command) after those runs;
  5. the same `import` again, with a new checkpoint but the last import's ledger (which holds what it
     sent): the planned events are then fingerprinted and looked up in the ledger.

Best of the repetitions is compared (the machine is shared and noisy). Targets (issue 11): import to
first request <= 1.5x the preview time; resume and status under 1 s each, also after many runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plan_throughput import MAPPING, generate  # noqa: E402

from backfill import sandbox as sandbox_module  # noqa: E402
from backfill.sandbox import Sandbox, SandboxConfig  # noqa: E402

KEY = "checkpoint-benchmark-key"


class Arrivals:
    """Wall-clock arrival times of the sandbox's POSTs (wraps the sandbox state's post_events)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.event = threading.Event()
        original = sandbox_module._State.post_events

        def post_events(state, *args, **kwargs):
            self.times.append(time.time())
            self.event.set()
            return original(state, *args, **kwargs)

        sandbox_module._State.post_events = post_events

    def reset(self) -> None:
        self.times.clear()
        self.event.clear()


def first_request(argv: list[str], env: dict[str, str], arrivals: Arrivals, timeout: float = 600.0) -> float:
    """Seconds from starting the command to the sandbox's first request; the command is then stopped."""
    arrivals.reset()
    started = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiter = threading.Thread(target=lambda: (proc.wait(), arrivals.event.set()), daemon=True)
    waiter.start()
    arrivals.event.wait(timeout)
    if not arrivals.times:
        out, err = proc.communicate(timeout=60)
        raise SystemExit(f"{' '.join(argv[2:4])}: no request arrived (exit {proc.returncode}): {err.strip()[-800:]}")
    seconds = arrivals.times[0] - started
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    if proc.returncode not in (0, 130):
        raise SystemExit(f"{' '.join(argv[2:4])} failed ({proc.returncode}): {err.strip()[-800:]}")
    return seconds


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:4])} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of preview and import, interleaved (default 3)")
    parser.add_argument("--resumes", type=int, default=5, help="resume runs in a row on one checkpoint (default 5)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="checkpoint-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path, mapping = work / "deploys.csv", work / "mapping.yaml"
    if not csv_path.exists() or sum(1 for _ in open(csv_path)) - 1 != args.rows:
        t0 = time.perf_counter()
        generate(csv_path, args.rows)
        print(f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    mapping.write_text(MAPPING)
    state = work / "state"
    env = {**os.environ, "DEVGRID_API_KEY": KEY, "XDG_STATE_HOME": str(state)}
    env.pop("BACKFILL_LEDGER", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                      os.environ.get("PYTHONPATH")]))
    cli = [sys.executable, "-m", "backfill"]
    arrivals = Arrivals()
    with Sandbox(SandboxConfig(port=0, api_key=KEY, keep_stored=False)) as box:
        url = box.url
        previews, imports = [], []
        checkpoint = None
        for n in range(args.repeat):
            previews.append(wall([*cli, "preview", str(csv_path), "-m", str(mapping), "--out", str(work / "payloads.jsonl"),
                                  "--show", "0"], env))
            checkpoint = work / f"import-{n}.checkpoint"
            ledger = work / f"ledger-{n}.sqlite"
            for stale in work.glob(f"import-{n}.checkpoint*"):
                stale.unlink()
            ledger.unlink(missing_ok=True)
            imports.append(first_request([*cli, "import", str(csv_path), "-m", str(mapping), "--base-url", url, "--yes",
                                          "--checkpoint", str(checkpoint), "--ledger", str(ledger)], env, arrivals))
            print(f"run {n + 1}: preview {previews[-1]:.2f} s, import to first request {imports[-1]:.2f} s", flush=True)
        assert checkpoint is not None
        resumes, statuses = [], []
        for n in range(args.resumes):
            resumes.append(first_request([*cli, "resume", str(checkpoint), "--ledger", str(ledger)], env, arrivals))
            statuses.append(wall([*cli, "status", str(checkpoint)], env))
            print(f"resume {n + 1}: to first request {resumes[-1]:.2f} s; status {statuses[-1]:.2f} s", flush=True)
        status_text = subprocess.run([*cli, "status", str(checkpoint)], env=env, capture_output=True, text=True).stdout
        # The same export imported again with the ledger of the last import (it holds the events that
        # import sent): the planned events are fingerprinted and looked up in it.
        again = work / "again.checkpoint"
        for stale in work.glob("again.checkpoint*"):
            stale.unlink()
        ledgered = first_request([*cli, "import", str(csv_path), "-m", str(mapping), "--base-url", url, "--yes",
                                  "--checkpoint", str(again), "--ledger", str(ledger)], env, arrivals)
    preview_s, import_s = min(previews), min(imports)
    planned = next((line for line in status_text.splitlines() if line.startswith("Planned")), "")
    print(f"checkpoint: {checkpoint.stat().st_size / 1e6:.0f} MB; {planned}")
    print(f"preview --out (whole command):     best {preview_s:6.2f} s  (runs {', '.join(f'{x:.2f}' for x in previews)})")
    print(f"import, start to first request:    best {import_s:6.2f} s  (runs {', '.join(f'{x:.2f}' for x in imports)})")
    paired = sorted(i / p for i, p in zip(imports, previews))
    print(f"ratio import first request / preview: {import_s / preview_s:.2f}x (target <= 1.5x); "
          f"run by run {', '.join(f'{r:.2f}' for r in paired)}")
    print(f"import with a ledger holding the last import's events: {ledgered:.2f} s to first request "
          f"({ledgered / preview_s:.2f}x the best preview)")
    print(f"resume, start to first request:    best {min(resumes):6.2f} s, last {resumes[-1]:.2f} s after "
          f"{args.resumes} runs (target < 1 s)")
    print(f"status, whole command:             best {min(statuses):6.2f} s, last {statuses[-1]:.2f} s after "
          f"{args.resumes} runs (target < 1 s)")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

"""Planning throughput: `backfill preview --out` on an N-row CSV next to a plain pandas.read_csv.

    python benchmarks/plan_throughput.py [--rows 1000000] [--keep DIR]

Generates a release-log CSV (local times, mixed status spellings, some rows to filter, duplicates),
then runs, each in its own process so peak memory (max RSS) is measured separately:
  1. a plain `pandas.read_csv(path, dtype=str)` (C engine) of the same file;
  2. `backfill preview FILE -m MAPPING --out payloads.jsonl --show 0`.
Prints rows/s, the time ratio and the peak memory of each, and the CPU time of each (user +
system, all threads): on a shared machine wall time follows the load, CPU time much less.
Targets (issue 11): planning <= 1.0x the plain read (aim 0.5x); peak memory <= 300 MB at 1,000,000 rows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

MAPPING = """\
source:
  format: csv
  timezone: Europe/Berlin
entityId:
  from: service
  lookup: {payments: 8c0e4f3a-1d2b-4c5d-9e8f-0a1b2c3d4e5f, web: app-123, search: app-456, auth: app-789}
timestamp: {from: [finished_at, started_at]}
attributes:
  env: {from: environment, lookup: {prod: production, staging: staging}}
  status: result
  build_id: build
  build_commit_sha: sha
  build_url: {template: "https://ci.example.com/job/{job}/{build}/"}
  initiator: {from: deployed_by, default: release-bot}
  deployment_start_time: started_at
filter:
  - {field: environment, in: [prod, staging]}
  - {field: result, not_in: [ABORTED]}
dedupe: [service, build]
"""


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    services = np.array(["payments", "web", "search", "auth"])
    envs = np.array(["prod", "staging", "dev"])
    results = np.array(["Success", "SUCCESS", "passed", "FAILED", "failure", "ABORTED", "success"])
    people = np.array(["anna.schmidt", "jonas.weber", "li.chen", "", "release-bot"])
    start = pd.Timestamp("2019-01-01").value // 10**9
    span = 6 * 365 * 86400
    chunk = 200_000
    with open(path, "w", encoding="utf-8") as out:
        out.write("service,environment,result,build,sha,started_at,finished_at,deployed_by,job\n")
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            builds = np.arange(first, first + n) + 1
            builds[rng.random(n) < 0.01] -= 1  # ~1% duplicates of the previous build
            t0 = start + rng.integers(0, span, n)
            started = pd.to_datetime(t0, unit="s").strftime("%Y-%m-%d %H:%M:%S")
            finished = pd.to_datetime(t0 + rng.integers(60, 3600, n), unit="s").strftime("%Y-%m-%d %H:%M:%S")
            sha = pd.Series(rng.integers(0, 2**63, n)).map("{:016x}".format) + "a1b2c3d4e5f6a7b8c9d0e1f2"
            svc = services[rng.integers(0, len(services), n)]
            frame = pd.DataFrame({
                "service": svc,
                "environment": envs[rng.integers(0, len(envs), n)],
                "result": results[rng.integers(0, len(results), n)],
                "build": builds,
                "sha": sha,
                "started_at": started,
                "finished_at": finished,
                "deployed_by": people[rng.integers(0, len(people), n)],
                "job": "deploy-" + pd.Series(svc),
            })
            frame.to_csv(out, header=False, index=False)


def measure(argv: list[str]) -> tuple[float, float, str, float]:
    """Run a command; return (seconds, peak RSS in MB, stdout, CPU seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return elapsed, peak_rss_mb(proc.pid, err), out, cpu_seconds(err)


def peak_rss_mb(pid: int, stderr: str) -> float:
    for line in stderr.splitlines():
        if line.startswith("PEAK_RSS_KB="):
            return int(line.split("=", 1)[1]) / 1024
    return float("nan")


def cpu_seconds(stderr: str) -> float:
    for line in stderr.splitlines():
        if line.startswith("CPU_S="):
            return float(line.split("=", 1)[1])
    return float("nan")


WRAP = (
    "import resource, runpy, sys, atexit\n"
    "atexit.register(lambda: print(f'PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr))\n"
    "atexit.register(lambda: print(f'CPU_S={sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}', file=sys.stderr))\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the files")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, interleaved; the best time is compared (default 3)")
    parser.add_argument("--report", action="store_true", help="also time preview --report FILE.html against a preview "
                        "with the report (History, Warnings, page) left out")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="plan-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    csv_path, mapping, out = work / "deploys.csv", work / "mapping.yaml", work / "payloads.jsonl"
    if not csv_path.exists() or sum(1 for _ in open(csv_path)) - 1 != args.rows:
        t0 = time.perf_counter()
        generate(csv_path, args.rows)
        print(f"generated {args.rows:,} rows ({csv_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    mapping.write_text(MAPPING)

    plain = WRAP + (
        "import pandas as pd\n"
        f"frame = pd.read_csv({str(csv_path)!r}, dtype=str, engine='c')\n"
        "print(len(frame))\n"
    )
    preview = WRAP + (
        "from backfill.cli import main\n"
        f"sys.exit(main(['preview', {str(csv_path)!r}, '-m', {str(mapping)!r}, '--out', {str(out)!r}, '--show', '0']))\n"
    )
    reads, plans, bare, reported = [], [], [], []
    # the allocator the command chooses (cli.main) is chosen before backfill.report loads pyarrow
    without = preview.replace("from backfill.cli import main\n", "from backfill.cli import _returning_allocator, main\n"
                              "_returning_allocator()\nimport backfill.report as r\n"
                              "r.build = lambda plan: {}\nr.history_text = lambda data, report_path=None: ''\n")
    with_report = preview.replace("'--show', '0'", f"'--show', '0', '--report', {str(work / 'report.html')!r}")
    for _ in range(args.repeat):  # interleaved, so a noisy moment hits both sides alike
        reads.append(measure([sys.executable, "-c", plain]))
        plans.append(measure([sys.executable, "-c", preview]))
        if args.report:
            bare.append(measure([sys.executable, "-c", without]))
            reported.append(measure([sys.executable, "-c", with_report]))
    read_s, plan_s = min(r[0] for r in reads), min(p[0] for p in plans)
    read_mb, plan_mb = max(r[1] for r in reads), max(p[1] for p in plans)
    text = plans[-1][2]
    print(f"runs: {args.repeat} of each; times {', '.join(f'{r[0]:.2f}' for r in reads)} s (read) and "
          f"{', '.join(f'{p[0]:.2f}' for p in plans)} s (preview); best compared, peak memory the largest seen")
    planned = next((line for line in text.splitlines() if line.startswith("Rows:")), "")
    print(f"rows: {args.rows:,}   ({planned})")
    print(f"plain pandas.read_csv(dtype=str):  {read_s:6.2f} s  {args.rows / read_s:12,.0f} rows/s  peak {read_mb:6.0f} MB")
    print(f"backfill preview --out:            {plan_s:6.2f} s  {args.rows / plan_s:12,.0f} rows/s  peak {plan_mb:6.0f} MB")
    read_cpu, plan_cpu = min(r[3] for r in reads), min(p[3] for p in plans)
    print(f"CPU time (user + system, best): plain read {read_cpu:.2f} s, preview {plan_cpu:.2f} s, "
          f"ratio {plan_cpu / read_cpu:.2f}x")
    print(f"ratio preview / plain read: {plan_s / read_s:.2f}x (target <= 1.0x); peak memory {plan_mb:.0f} MB (target <= 300 MB)")
    print(f"output: {out.stat().st_size / 1e6:.0f} MB of request bodies in {out}")
    if args.report:
        bare_s, report_s = min(b[0] for b in bare), min(r[0] for r in reported)
        bare_cpu, report_cpu = min(b[3] for b in bare), min(r[3] for r in reported)
        print(f"preview without the report: {bare_s:.2f} s; with --report report.html: {report_s:.2f} s "
              f"(+{100 * (report_s / bare_s - 1):.0f}%, target <= 20%; times {', '.join(f'{r[0]:.2f}' for r in reported)} s)")
        print(f"  CPU time: {bare_cpu:.2f} s without, {report_cpu:.2f} s with (+{100 * (report_cpu / bare_cpu - 1):.0f}%); "
              f"peak {max(b[1] for b in bare):.0f} MB without, {max(r[1] for r in reported):.0f} MB with")
    if not args.keep:
        shutil.rmtree(work)  # the inputs, the bodies and, with --report, the report


if __name__ == "__main__":
    main()

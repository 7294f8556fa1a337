"""End to end: real `backfill import` / `resume` subprocesses against the sandbox on 127.0.0.1.

What must hold whatever happens (faults, 429s, SIGKILL at any instant, resumes):
  - every event the sandbox stored is a planned event, and every planned event is stored at least once
    (with --on-uncertain resend) or is reported possibly missing (with skip);
  - an event stored twice is one the tool reported as possibly duplicated;
  - each event the checkpoint calls sent carries the server id of one of its stored copies;
  - rejected events carry the sandbox's reason and are not sent again.
Rate-limit periods are scaled down (tenths of a second) on both sides so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from e2e_helpers import (
    PAYMENTS,
    ROOT,
    WEB,
    Processes,
    Run,
    content,
    preview_bodies,
    status,
    write_release_log,
)

SAMPLES_DIR = ROOT / "samples"
MAPPINGS_DIR = ROOT / "mappings"
RELEASE_LOG = MAPPINGS_DIR / "release-log.yaml"

# Every shipped sample with its mapping and the options its mapping asks for on the command line.
SAMPLES = [
    ("release-log.csv", "release-log.yaml", []),
    ("jenkins-builds.json", "jenkins.yaml", ["--entity-id", "payments-api", "--set", "env=production"]),
    ("gitlab-deployments.json", "gitlab.yaml", ["--entity-id", "payments-api"]),
    ("github-runs.json", "github-actions.yaml", ["--entity-id", "shop", "--set", "env=production"]),
    ("github-deployments.json", "github-deployments.yaml", ["--entity-id", "shop"]),
]
FAST = ["--rate-limit", "20/0.2s"]


def import_args(inputs: list[Path], mapping: Path, url: str, checkpoint: Path, *extra: str) -> list[str]:
    return ["import", *map(str, inputs), "-m", str(mapping), "--base-url", url, "--yes", "--checkpoint", str(checkpoint), *extra]


def flatten(bodies: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event for body in bodies for event in body]


def build_of(event: dict[str, Any]) -> str:
    return str(event["attributes"]["build_id"])


def runs_until_done(procs: Processes, args: list[str], done: int, tries: int = 10) -> Run:
    """Rerun the same command until it exits `done`; only 6 (stopped after repeated faults) may come before."""
    for _ in range(tries):
        run = procs.run(args)
        if run.returncode == done:
            return run
        assert run.returncode == 6, run
    raise AssertionError(f"no exit {done} after {tries} runs; last:\n{run}")


def fault_pattern(seed: int, fail: float, drop: float, requests: int) -> str:
    """What a seeded sandbox does to its first valid requests: "F" 500, "D" store and drop, "." answer 201.

    (The sandbox rolls its dice for valid requests only, not for those it answers 401 or 429.)
    """
    rng = random.Random(seed)
    pattern = ""
    for _ in range(requests):
        failed, dropped = rng.random() < fail, rng.random() < drop
        pattern += "F" if failed else "D" if dropped else "."
    return pattern


# --------------------------------------------------------------------- each shipped sample, no faults


def test_every_shipped_sample_is_covered() -> None:
    shipped = {path.name for path in SAMPLES_DIR.iterdir() if path.is_file()}
    assert shipped == {sample for sample, _, _ in SAMPLES}


@pytest.mark.parametrize(("sample", "mapping", "extra"), SAMPLES, ids=[s for s, _, _ in SAMPLES])
def test_import_stores_exactly_the_previewed_events(
    tmp_path: Path, procs: Processes, sample: str, mapping: str, extra: list[str]
) -> None:
    inputs, mapping_path = [SAMPLES_DIR / sample], MAPPINGS_DIR / mapping
    invalid_out = tmp_path / "invalid.jsonl"
    bodies = preview_bodies(inputs, mapping_path, [*extra, "--invalid-out", str(invalid_out)], tmp_path)
    events = flatten(bodies)
    assert events, "the sample plans no events"
    box = procs.sandbox(*FAST)
    checkpoint = tmp_path / "import.checkpoint"

    run = procs.run(import_args(inputs, mapping_path, box.url, checkpoint, *extra, *FAST))

    assert run.returncode == 0, run
    recorded = box.recorded()
    assert [content(r) for r in recorded] == [content(e) for e in events]  # event for event, in order
    stats = box.stats()
    assert stats["requests"] == len(bodies)
    assert stats["by_status"] == {"201": len(bodies)}
    assert (stats["events_stored"], stats["events_failed"], stats["dropped"]) == (len(events), 0, 0)
    st = status(checkpoint, tmp_path)
    n_invalid = len(invalid_out.read_text(encoding="utf-8").splitlines())
    counts = {k: st.doc[k] for k in ("planned", "sent", "pending", "in_flight", "rejected", "uncertain", "invalid")}
    assert counts == {
        "planned": len(events), "sent": len(events), "pending": 0, "in_flight": 0,
        "rejected": 0, "uncertain": 0, "invalid": n_invalid,
    }  # fmt: skip
    assert (st.doc["requests"], st.doc["possibly_duplicated"], st.doc["possibly_missing"]) == (len(bodies), 0, 0)
    assert st.doc["uncertain_events"] == [] and st.rejected == []
    assert [row["server_id"] for row in st.sent] == [r["id"] for r in recorded]
    assert f"This run: {len(events)} events sent, 0 rejected, 0 uncertain, {len(bodies)} requests" in run.stdout


# --------------------------------------------------------------------- faults and SIGKILL


def test_faults_and_kills_lose_nothing_and_duplicate_only_reported_events(tmp_path: Path, procs: Processes) -> None:
    seed, fail, drop = 3, 0.06, 0.06
    faults = fault_pattern(seed, fail, drop, requests=20)
    assert "F" in faults and "D" in faults, f"pick a seed that injects both faults in the first 20 requests: {faults}"
    rng = random.Random(seed)
    csv = tmp_path / "deploys.csv"
    builds = write_release_log(csv, 360, seed=seed)
    planned = {build_of(e): content(e) for e in flatten(preview_bodies([csv], RELEASE_LOG, [], tmp_path))}
    assert len(planned) == 360
    limits = ["--rate-limit", "4/0.1s", "--rate-limit", "30/1s"]
    box = procs.sandbox(
        "--fail-rate", str(fail), "--drop-rate", str(drop), "--latency", "0.005", "--seed", str(seed), *limits
    )
    checkpoint = tmp_path / "import.checkpoint"
    args = import_args([csv], RELEASE_LOG, box.url, checkpoint, *limits, "--max-retries", "8")

    # SIGKILL at a random instant after start (planning, creating the checkpoint or uploading), then
    # at random moments of the upload: after a random number of requests, plus up to 20 ms.
    runs = []
    started, after = time.monotonic(), rng.uniform(0.3, 1.5)
    runs.append(procs.run(args, kill_when=lambda: time.monotonic() - started >= after))
    for _ in range(3):
        target = box.stats()["requests"] + rng.randint(1, 6)
        runs.append(
            procs.run(args, kill_when=lambda t=target: box.stats()["requests"] >= t, kill_delay=rng.uniform(0, 0.02))
        )
    runs.append(runs_until_done(procs, args, done=0))
    assert sum(run.killed for run in runs) >= 3, "\n".join(map(str, runs))

    st = status(checkpoint, tmp_path)
    doc = st.doc
    assert (doc["planned"], doc["sent"]) == (360, 360)
    assert (doc["pending"], doc["in_flight"], doc["rejected"], doc["uncertain"], doc["possibly_missing"]) == (0,) * 5
    recorded = box.recorded()
    stats = box.stats()
    assert len(recorded) == stats["events_stored"]
    assert stats["by_status"].get("500", 0) >= 1 and stats["dropped"] >= 1  # the faults did happen
    # Each request is logged before it goes out: only a kill between the two can leave one unseen.
    assert 0 <= doc["requests"] - stats["requests"] <= sum(run.killed for run in runs)
    # Every stored event is a planned one, and every planned one is stored.
    copies = Counter(build_of(r) for r in recorded)
    assert all(content(r) == planned[build_of(r)] for r in recorded)
    assert set(copies) == set(planned)
    # The checkpoint's sent events are the distinct stored events, each with the id of one of its copies.
    by_id = {r["id"]: r for r in recorded}
    assert len(by_id) == len(recorded)
    assert len(st.sent) == 360 == len({row["server_id"] for row in st.sent})
    for row in st.sent:
        assert row["server_id"] in by_id, row
        assert build_of(by_id[row["server_id"]]) == builds[row["source_row"]]
    # Stored twice only if reported as possibly duplicated.
    reported = {builds[e["source_row"]] for e in doc["uncertain_events"] if e["status"] == "duplicated"}
    assert {e["status"] for e in doc["uncertain_events"]} <= {"duplicated"}
    assert doc["possibly_duplicated"] == len(reported)
    twice = {build for build, n in copies.items() if n > 1}
    assert twice, "the events of the dropped request were stored, then sent again"
    assert twice <= reported, f"stored twice but not reported: {sorted(twice - reported)}"
    assert "Traceback" not in box.stderr.read_text(), "a client killed mid-request is not a sandbox error"


def test_on_uncertain_skip_never_stores_twice_and_reports_what_may_be_missing(
    tmp_path: Path, procs: Processes
) -> None:
    seed, fail, drop = 55, 0.08, 0.08
    faults = fault_pattern(seed, fail, drop, requests=15)
    assert faults[:8] == "........" and "F" in faults and "D" in faults, f"pick another seed: {faults}"
    rng = random.Random(seed)
    csv = tmp_path / "deploys.csv"
    builds = write_release_log(csv, 300, seed=seed, payments_share=0.1)
    planned = {build_of(e): content(e) for e in flatten(preview_bodies([csv], RELEASE_LOG, [], tmp_path))}
    unknown = {b for b, c in planned.items() if PAYMENTS in c}
    assert len(planned) == 300 and unknown
    # The sandbox allows fewer requests than the client per 0.6 s: the first run's 5th request (its
    # first 8 valid ones meet no fault) is answered 429 if the client sends 5 within 0.6 s, which a
    # loaded machine does too (each request costs two fsynced, checkpointed transactions).
    # Faults follow, and kills after the 10th request.
    box = procs.sandbox(
        "--fail-rate", str(fail), "--drop-rate", str(drop), "--latency", "0.005", "--seed", str(seed),
        "--entities", WEB, "--rate-limit", "4/0.6s",
    )  # fmt: skip
    checkpoint = tmp_path / "import.checkpoint"
    args = import_args(
        [csv], RELEASE_LOG, box.url, checkpoint, "--rate-limit", "9/0.6s", "--on-uncertain", "skip", "--max-retries", "8"
    )

    runs = []
    for first in (10, 1, 1):
        target = box.stats()["requests"] + first + rng.randint(0, 2)
        runs.append(
            procs.run(args, kill_when=lambda t=target: box.stats()["requests"] >= t, kill_delay=rng.uniform(0, 0.02))
        )
    last = runs_until_done(procs, args, done=7)  # 7: some events rejected (unknown entity) or possibly missing
    assert sum(run.killed for run in runs) >= 2, "\n".join(map(str, runs))

    st = status(checkpoint, tmp_path)
    doc = st.doc
    missing = {builds[e["source_row"]] for e in doc["uncertain_events"] if e["status"] == "missing"}
    assert {e["status"] for e in doc["uncertain_events"]} <= {"missing"}
    assert doc["possibly_missing"] == len(missing) == doc["uncertain"]
    assert doc["planned"] == 300 == doc["sent"] + doc["rejected"] + doc["uncertain"]
    assert (doc["pending"], doc["in_flight"], doc["possibly_duplicated"]) == (0, 0, 0)
    recorded = box.recorded()
    copies = Counter(build_of(r) for r in recorded)
    assert len(recorded) == box.stats()["events_stored"]
    assert all(content(r) == planned[build_of(r)] for r in recorded)
    assert max(copies.values()) == 1, "an event was stored twice with --on-uncertain skip"
    assert set(planned) - set(copies) <= missing | unknown
    assert not set(copies) & unknown
    # Sent: stored, with its server id. Rejected: an unknown entity, with the sandbox's reason.
    by_id = {r["id"]: r for r in recorded}
    for row in st.sent:
        assert build_of(by_id[row["server_id"]]) == builds[row["source_row"]]
    assert set(copies) - {builds[row["source_row"]] for row in st.sent} <= missing
    assert {builds[row["source_row"]] for row in st.rejected} <= unknown
    assert unknown <= {builds[row["source_row"]] for row in st.rejected} | missing
    assert {row["reason"] for row in st.rejected} == {"Entity not found"}
    assert len(st.rejected) == doc["rejected"] and len(st.sent) == doc["sent"]
    stats = box.stats()
    assert stats["events_failed"] >= len(st.rejected)
    assert 0 <= doc["requests"] - stats["requests"] <= sum(run.killed for run in runs)
    assert stats["rate_limited"] >= 1 and stats["by_status"].get("500", 0) >= 1 and stats["dropped"] >= 1
    assert missing, "the events of the 500 and of the dropped request were not resent"
    assert f"{len(missing)} uncertain events were not resent: possibly missing" in last.stdout


def test_sigkill_mid_request_then_resume(tmp_path: Path, procs: Processes) -> None:
    """Issue 4: kill -9 while a request is out, `backfill resume`, every event arrives; the only
    duplicates are the events of the interrupted request, reported as possibly duplicated."""
    csv = tmp_path / "deploys.csv"
    builds = write_release_log(csv, 120, seed=4)
    planned = {build_of(e): content(e) for e in flatten(preview_bodies([csv], RELEASE_LOG, [], tmp_path))}
    assert len(planned) == 120
    # The sandbox stores each request's events, then holds the answer for 0.2 s: a kill right after
    # the third request is counted lands while the client waits for that answer.
    box = procs.sandbox("--latency", "0.2", *FAST)
    checkpoint = tmp_path / "import.checkpoint"
    killed = procs.run(
        import_args([csv], RELEASE_LOG, box.url, checkpoint, *FAST), kill_when=lambda: box.stats()["requests"] >= 3
    )
    assert killed.killed, killed
    before = status(checkpoint, tmp_path).doc
    assert (before["sent"], before["in_flight"], before["pending"]) == (30, 15, 75)
    assert len(box.recorded()) == 45

    resumed = procs.run(["resume", str(checkpoint)])

    assert resumed.returncode == 0, resumed
    assert "15 events were in flight when the last run stopped" in resumed.stdout
    st = status(checkpoint, tmp_path)
    assert (st.doc["sent"], st.doc["uncertain"], st.doc["possibly_duplicated"]) == (120, 0, 15)
    recorded = box.recorded()
    copies = Counter(build_of(r) for r in recorded)
    assert all(content(r) == planned[build_of(r)] for r in recorded)
    assert set(copies) == set(planned)
    duplicated = {builds[e["source_row"]] for e in st.doc["uncertain_events"] if e["status"] == "duplicated"}
    assert {b for b, n in copies.items() if n > 1} == duplicated
    assert len(duplicated) == 15 and len(recorded) == 135
    assert [r["outcome"] for r in st.doc["runs"]] == ["interrupted", "finished"]
    assert "Traceback" not in box.stderr.read_text()


# --------------------------------------------------------------------- refused key, unknown entities


def test_bad_key_exits_5_after_one_request(tmp_path: Path, procs: Processes) -> None:
    box = procs.sandbox(*FAST)
    checkpoint = tmp_path / "import.checkpoint"
    bad_key = "not-the-sandbox-key-4f1c"
    args = import_args([SAMPLES_DIR / "release-log.csv"], RELEASE_LOG, box.url, checkpoint, *FAST)

    run = procs.run(args, key=bad_key)

    assert run.returncode == 5, run
    assert bad_key not in run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "refused the key" in errors[0] and "nothing was retried" in errors[0], run
    stats = box.stats()
    assert (stats["requests"], stats["by_status"], stats["events_stored"]) == (1, {"401": 1}, 0)
    st = status(checkpoint, tmp_path)
    assert (st.doc["requests"], st.doc["sent"], st.doc["pending"], st.doc["uncertain"]) == (1, 0, 21, 0)
    assert bad_key not in checkpoint.read_bytes().decode("utf-8", "replace")


def test_unknown_entities_are_rejected_with_the_reason_and_not_retried(tmp_path: Path, procs: Processes) -> None:
    sample = SAMPLES_DIR / "release-log.csv"
    events = flatten(preview_bodies([sample], RELEASE_LOG, [], tmp_path))
    web = [e for e in events if e["entityId"] == WEB]
    payments = [e for e in events if e["entityId"] == PAYMENTS]
    assert web and payments and len(web) + len(payments) == len(events)
    box = procs.sandbox("--entities", WEB, "other-app", *FAST)
    checkpoint = tmp_path / "import.checkpoint"
    args = import_args([sample], RELEASE_LOG, box.url, checkpoint, *FAST)

    first = procs.run(args)
    again = procs.run(args)  # the same command again: nothing left to send, nothing retried

    assert first.returncode == 7, first
    assert again.returncode == 7, again
    stats = box.stats()
    assert stats["requests"] == 2 and stats["by_status"] == {"201": 2}  # 21 events in 2 requests, once
    assert (stats["events_stored"], stats["events_failed"]) == (len(web), len(payments))
    assert [content(r) for r in box.recorded()] == [content(e) for e in web]
    st = status(checkpoint, tmp_path)
    assert (st.doc["sent"], st.doc["rejected"], st.doc["pending"], st.doc["uncertain"]) == (len(web), len(payments), 0, 0)
    assert [row["reason"] for row in st.rejected] == ["Entity not found"] * len(payments)
    assert [json.loads(row["body"]) for row in st.rejected] == payments
    assert all(row["source_file"].endswith("release-log.csv") and row["source_row"] > 1 for row in st.rejected)
    assert f"{len(payments)} rejected" in first.stdout

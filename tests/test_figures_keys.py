"""The report's repeated-value search (same build, redeployed SHA): a fast 32-bit key per value
finds the candidates, which are then compared in full. Checked against a plain Python count on
random columns (missing values, one length or many, non-ASCII, longer than the keyed prefix,
sliced arrow arrays), and end to end with keys that all collide."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backfill import figures
from backfill.errors import ExitStatus

from test_report import write_fixture

VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "a\x00", "ab", "ba", "5", "15", "x" * 129, "x" * 128 + "y", "é", "e\u0301", "0" * 40]),
    st.text(alphabet="0123456789abcdef", min_size=0, max_size=12),
    st.text(max_size=20),
)


def repeated_positions(values: list[str | None], scope: list[int] | None) -> set[int]:
    keys = [(v, scope[i] if scope else 0) for i, v in enumerate(values)]
    counts = Counter(k for k in keys if k[0] is not None)
    return {i for i, k in enumerate(keys) if k[0] is not None and counts[k] > 1}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VALUES, max_size=60), st.integers(0, 5), st.booleans(), st.booleans())
def test_fast_keys_never_miss_a_repeat(values, skip, scoped, equal_length):
    if equal_length:  # the one-length path: every value as long as the first (hashes, ids)
        values = [None if v is None else (v * 40)[:40].ljust(40, "0") for v in values]
    array = pa.array(["pad"] * skip + values, type=pa.string()).slice(skip)  # a slice: offsets not at 0
    scope = np.array([i % 3 for i in range(len(values))], dtype=np.int32) if scoped else None
    keys = figures._fast_keys(array, scope)
    want = repeated_positions(values, scope.tolist() if scoped else None)
    if keys is None:  # neither one length nor ASCII: the caller compares every value in full
        assert any(v is not None and not v.isascii() for v in values) or any(len(v or "") > 128 for v in values)
        return
    assert keys.dtype == np.uint32 and len(keys) == len(values)
    found = set(figures._maybe_repeated(keys).tolist())
    assert want <= found  # candidates: every true repeat (and maybe a few that only share a key)


def test_colliding_keys_change_nothing(tmp_path, run_cli, monkeypatch):
    """With every fast key equal, every value is a candidate; the full comparison gives the same report."""
    rows = [("api", "production", f"2021-05-0{1 + i % 9} 12:0{i % 10}", "success", str(i % 7), f"s{i % 5}", "")
            for i in range(40)]
    csv, yaml = write_fixture(tmp_path, rows)

    def report() -> list[dict]:
        code, _, err = run_cli("preview", csv, "-m", yaml, "--show", "0", "--report", tmp_path / "r.json")
        assert (code, err) == (ExitStatus.OK, "")
        return json.loads((tmp_path / "r.json").read_text())["warnings"]

    honest = report()
    monkeypatch.setattr(figures, "_fast_keys", lambda text, scope: np.zeros(len(text), dtype=np.uint32))
    colliding = report()
    assert honest == colliding
    codes = {w["code"]: w["count"] for w in honest}
    assert codes["same_build"] > 0 and codes["redeployed_sha"] > 0  # the fixture has both, so the test can fail


@pytest.mark.parametrize("values", [["a", "b", "a"], ["abc", None, "abc", "abd"], ["é", "e", "é"]])
def test_repeated_values_found_exactly(values):
    array = pa.array(values, type=pa.string())
    keys = figures._fast_keys(array, None)
    found = set(range(len(values))) if keys is None else set(figures._maybe_repeated(keys).tolist())
    assert repeated_positions(values, None) <= found


def test_figures_of_a_plan_not_in_time_order_are_the_same(tmp_path):
    """The planner sorts oldest first; a plan whose events come in another order gives the same report."""
    import dataclasses
    from datetime import datetime, timezone

    from backfill.mapping import load_mapping
    from backfill.plan import build_plan

    from test_report import ROWS

    rows = [*ROWS, ("api", "production", "2021-03-10 12:00", "failed", "8", "a3", "")]  # same second, same build
    csv, yaml = write_fixture(tmp_path, rows)
    plan = build_plan([csv], load_mapping(yaml))
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    shuffled = dataclasses.replace(plan, events=plan.events.sample(frac=1, random_state=5))
    assert not shuffled.events["_ts"].is_monotonic_increasing
    assert figures.compute(shuffled, now=now) == figures.compute(plan, now=now)

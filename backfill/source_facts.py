"""What the preview report needs to know of each input file as a whole (not of single rows):
how its export was paged, so that a history cut short by a page or build limit can be pointed out.

`observe` is called by the planner for every chunk a reader yields; it fills one dict per file:

- `gitlab_pages`: records in each top-level JSON array of a GitLab file (one array per page saved);
- `github_runs`: (total_count, runs held) of each GitHub runs page, where a reader gives them;
- `jenkins_jobs`: job name -> [builds, lowest build number, highest build number] of a Jenkins file.
"""

from __future__ import annotations

import math

import pandas as pd

from backfill.readers import RowChunk


def observe(facts: dict, fmt: str, chunk: RowChunk) -> None:
    for name, value in chunk.facts.items():
        if isinstance(value, list):
            facts.setdefault(name, []).extend(value)
        else:
            facts[name] = value
    frame = chunk.frame
    if fmt != "jenkins" or "job" not in frame.columns or "number" not in frame.columns or not len(frame):
        return
    numbers = pd.to_numeric(frame["number"], errors="coerce")
    table = pd.DataFrame({"job": frame["job"].fillna("").astype(str), "n": numbers}).groupby("job")["n"]
    jobs = facts.setdefault("jenkins_jobs", {})
    for job, size, low, high in table.agg(["size", "min", "max"]).itertuples():  # one line per job
        before = jobs.get(job, [0, math.nan, math.nan])
        jobs[job] = [before[0] + int(size), _least(before[1], low), _least(high, before[2], most=True)]


def _least(a: float, b: float, most: bool = False) -> float:
    """min (or max) of two numbers where NaN (no numeric build number) does not count."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b) if most else min(a, b)

"""The output-stability corpus: fixed inputs and mappings run through `backfill preview --out`.

Each case's request bodies (`--out`), invalid rows (`--invalid-out`) and row accounting were
recorded from the code before the streaming CSV reader and planner rewrite (issue 11), and
tests/test_golden.py checks that today's code writes the same bytes. To record again after an
*intended* change of output, run `python tests/golden/corpus.py` and review the diff.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
INPUTS = HERE / "inputs"
EXPECTED = HERE / "expected"
REAL = ROOT / "tests" / "fixtures" / "real-exports"
FULL_LIMIT = 64 * 1024  # larger outputs are recorded as their SHA-256 and size

_CSV = ("mixed.csv", "semicolon.csv", "tab.tsv", "pipe.csv", "cp1252-bom.csv")

# name -> (inputs, mapping, extra arguments)
CASES: dict[str, tuple[list[Path], Path, list[str]]] = {
    "release-log": ([ROOT / "samples/release-log.csv"], ROOT / "mappings/release-log.yaml", []),
    "release-log-since": (
        [ROOT / "samples/release-log.csv"], ROOT / "mappings/release-log.yaml",
        ["--since", "2020-01-01", "--until", "2023-06-01", "--set", "change_id=CHG-1"],
    ),
    "bench-2000": ([INPUTS / "bench-2000.csv"], INPUTS / "bench.yaml", []),
    "bench-2000-entity": ([INPUTS / "bench-2000.csv"], INPUTS / "bench.yaml", ["--entity-id", "app-1"]),
    **{f"csv-{name.split('.')[0]}": ([INPUTS / name], INPUTS / "mixed.yaml", []) for name in _CSV},
    "csv-all": ([INPUTS / n for n in _CSV], INPUTS / "mixed.yaml", []),
    "csv-utf8-named": ([INPUTS / "mixed.csv", INPUTS / "cp1252-bom.csv"], INPUTS / "utf8-named.yaml", []),
    "csv-latin1": ([INPUTS / "latin1.csv"], INPUTS / "latin1.yaml", []),
    "ndjson": ([INPUTS / "records.ndjson"], INPUTS / "ndjson.yaml", []),
    "json-records": ([INPUTS / "records.json"], INPUTS / "json.yaml", []),
    "jenkins-sample": ([ROOT / "samples/jenkins-builds.json"], ROOT / "mappings/jenkins.yaml", ["--entity-id", "payments"]),
    "gitlab-sample": ([ROOT / "samples/gitlab-deployments.json"], ROOT / "mappings/gitlab.yaml", ["--entity-id", "payments"]),
    "jenkins-real": (
        sorted(p for p in REAL.glob("jenkins-*.json") if "changeset" not in p.name),
        ROOT / "mappings/jenkins.yaml", ["--entity-id", "payments", "--set", "env=production"],
    ),
    "gitlab-real": (
        sorted(p for p in REAL.glob("gitlab-*.json") if "webhook" not in p.name), ROOT / "mappings/gitlab.yaml", ["--entity-id", "payments"],
    ),
}


def run_case(name: str, work: Path) -> dict[str, str]:
    """Run one case in-process; return its recorded form: file name -> text."""
    from backfill.cli import main

    inputs, mapping, extra = CASES[name]
    out, invalid = work / f"{name}.out.jsonl", work / f"{name}.invalid.jsonl"
    args = ["preview", *map(str, inputs), "-m", str(mapping), "--out", str(out), "--invalid-out", str(invalid),
            "--show", "0", *extra]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main(args)
    rows_line = next((line for line in stdout.getvalue().splitlines() if line.startswith("Rows:")), "")
    files_read = [
        int(m.group(1)) for m in re.finditer(r": (\d+) (?:rows|records|lines|builds|deployments)? ?read", stdout.getvalue())
    ]
    accounting = {"exit": code, "rows_line_numbers": [int(n) for n in re.findall(r"\d+", rows_line)],
                  "files_read": files_read}
    recorded = {
        f"{name}.accounting.json": json.dumps(accounting, indent=1) + "\n",
        f"{name}.out.jsonl": _recorded(out.read_bytes()),
        f"{name}.invalid.jsonl": _recorded(_relative(invalid.read_bytes())),
    }
    return recorded


def _relative(data: bytes) -> str:
    """Invalid rows name their file; recorded relative to the repository, so any checkout matches."""
    return data.decode("utf-8").replace(json.dumps(str(ROOT))[1:-1] + "/", "")


def _recorded(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) <= FULL_LIMIT:
        return raw.decode("utf-8")
    lines = raw.count(b"\n")
    return f"sha256 {hashlib.sha256(raw).hexdigest()} bytes {len(raw)} lines {lines}\n"


def record() -> None:
    import tempfile

    EXPECTED.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            for file, text in run_case(name, Path(tmp)).items():
                (EXPECTED / file).write_text(text, encoding="utf-8", newline="")
            print("recorded", name)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    record()

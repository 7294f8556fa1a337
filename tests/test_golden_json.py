"""Byte-identical output of the JSON readers on a fixed corpus (issue 11, "Correctness first").

Every JSON, NDJSON, Jenkins and GitLab input in tests/fixtures/real-exports, samples/ and
tests/fixtures/golden/inputs goes through `backfill preview --out --invalid-out` with a shipped
mapping (or the corpus' own JSON/NDJSON mappings). The request bodies, the invalid-rows file, the
exit code, the error line and the row accounting are compared with what the code wrote before
the readers were rewritten to stream (tests/fixtures/golden/expected, one file per case).

To record again after a deliberate change of output: `GOLDEN_RECORD=1 pytest tests/test_golden_json.py`,
then review the diff of tests/fixtures/golden/expected and say why in the commit message.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backfill.mapping import load_mapping
from backfill.plan import build_plan

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT / "tests" / "fixtures" / "real-exports"
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
INPUTS = GOLDEN / "inputs"
EXPECTED = GOLDEN / "expected"
MAPPINGS = ROOT / "mappings"
RECORD = os.environ.get("GOLDEN_RECORD") == "1"


# Jenkins exports without an ENV parameter are run as the README says: `--set env=production`.
JENKINS_ENV = ("--set", "env=production")


def _cases() -> list[tuple[str, Path, Path, tuple[str, ...]]]:
    cases = []
    for path in sorted(REAL.iterdir()):
        if path.name.startswith("jenkins-"):
            cases.append((path.name, path, MAPPINGS / "jenkins.yaml", JENKINS_ENV))
        elif path.name.startswith("gitlab-"):
            cases.append((path.name, path, MAPPINGS / "gitlab.yaml", ()))
    cases += [
        ("sample-jenkins", ROOT / "samples" / "jenkins-builds.json", MAPPINGS / "jenkins.yaml"),
        ("sample-gitlab", ROOT / "samples" / "gitlab-deployments.json", MAPPINGS / "gitlab.yaml"),
        ("json-records", INPUTS / "records.json", INPUTS / "json.yaml"),
        ("json-records-object", INPUTS / "records.json", INPUTS / "json-top.yaml"),
        ("json-top-array", INPUTS / "top-array.json", INPUTS / "json-top.yaml"),
        ("ndjson-lines", INPUTS / "lines.ndjson", INPUTS / "ndjson.yaml"),
        ("ndjson-crlf", INPUTS / "crlf.ndjson", INPUTS / "ndjson.yaml"),
        ("gitlab-pages", INPUTS / "gitlab-pages.json", MAPPINGS / "gitlab.yaml"),
        ("gitlab-ndjson", INPUTS / "gitlab-lines.ndjson", MAPPINGS / "gitlab.yaml"),
        ("jenkins-appended", INPUTS / "jenkins-appended.json", MAPPINGS / "jenkins.yaml"),
        ("jenkins-shared-repo", INPUTS / "jenkins-shared-repo.json", MAPPINGS / "jenkins.yaml"),
        ("gitlab-as-json", INPUTS / "gitlab-pages.json", INPUTS / "json-top.yaml"),
        ("jenkins-shared-repo-entity", INPUTS / "jenkins-shared-repo.json", MAPPINGS / "jenkins.yaml"),
    ]
    cases = [c if len(c) == 4 else (*c, ()) for c in cases]
    cases[-1] = (*cases[-1][:3], ("--entity-id", "app-1", *JENKINS_ENV))
    return cases


def _outcome(run_cli, tmp_path: Path, source: Path, mapping: Path, args: tuple[str, ...]) -> dict:
    out, invalid = tmp_path / "out.jsonl", tmp_path / "invalid.jsonl"
    code, _, err = run_cli(
        "preview", source, "-m", mapping, "--out", out, "--invalid-out", invalid, "--show", "0", *args
    )
    result: dict = {"exit": code, "stderr": err.replace(str(ROOT), "<root>") if code else ""}
    result["out"] = out.read_text(encoding="utf-8") if out.exists() else None
    result["invalid"] = invalid.read_text(encoding="utf-8").replace(str(ROOT), "<root>") if invalid.exists() else None
    if code in (0, 4):
        sets = dict(a.split("=", 1) for a in args[1::2] if "=" in a)
        entity = args[args.index("--entity-id") + 1] if "--entity-id" in args else None
        report = build_plan([source], load_mapping(mapping).with_overrides(entity, sets)).report
        result["counts"] = {
            "read": report.rows_read, "planned": report.planned, "filtered": dict(report.filtered),
            "outside_range": report.outside_range, "duplicates": report.duplicates, "empty": report.empty,
            "invalid": [[row.row, row.unit] for row in report.invalid],
        }
    return result


@pytest.mark.parametrize("name,source,mapping,args", _cases(), ids=[c[0] for c in _cases()])
def test_preview_output_unchanged(
    run_cli, tmp_path: Path, name: str, source: Path, mapping: Path, args: tuple[str, ...]
) -> None:
    got = _outcome(run_cli, tmp_path, source, mapping, args)
    expected_file = EXPECTED / f"{name}.json"
    if RECORD:
        EXPECTED.mkdir(parents=True, exist_ok=True)
        expected_file.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    for key in ("exit", "stderr", "counts", "invalid", "out"):  # the most telling difference first
        assert got.get(key) == expected.get(key), f"{name}: {key} differs from the recorded output"


def test_corpus_covers_every_json_reader() -> None:
    formats = {load_mapping(mapping).source.format for _, _, mapping, _ in _cases()}
    assert formats == {"json", "ndjson", "jenkins", "gitlab"}
    assert len(list(EXPECTED.glob("*.json"))) == len(_cases())

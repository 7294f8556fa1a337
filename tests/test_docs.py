"""The README documents every command and exit code, and the test command CI runs."""

from __future__ import annotations

import re

import pytest

from backfill.cli import build_parser
from backfill.errors import ExitStatus
from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_help_and_is_in_the_readme(name):
    sub = _commands()[name]
    assert sub.description, f"{name} has no description"
    assert f"backfill {name}" in README


@pytest.mark.parametrize("status", list(ExitStatus))
def test_every_exit_code_is_in_the_readme_table(status):
    assert re.search(rf"^\| {int(status)} \| ", README, re.MULTILINE), status


def test_ci_runs_exactly_the_readme_test_command():
    command = 'pip install -e ".[test]" && python -m pytest -q'
    assert command in README
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_ci_runs_the_readme_first_command_from_the_installed_wheel():
    first = re.search(r"```sh\n(pip install -e \. && (.+))\n```", README)
    assert first, "the README's first set-up command is `pip install -e . && backfill ...`"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f'first_command="{first[2]}"' in ci
    assert "python -m build --wheel" in ci and ".venv-ci-wheel/bin/python -m pip install --quiet dist-ci/*.whl" in ci
    assert 'cd "$outside"' in ci and "env -u PYTHONPATH" in ci


def _outside_code(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the README outside fenced code blocks, inline code spans removed."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, re.sub(r"`[^`]*`", "``", line)))
    return out


def table_problems(text: str) -> list[str]:
    """Table rows pasted into a paragraph, rows with text after them, and a table given twice."""
    problems, tables, current = [], {}, []
    for number, line in _outside_code(text) + [(0, "")]:
        stripped = line.strip()
        if stripped.startswith("|"):
            if not stripped.endswith("|"):
                problems.append(f"line {number}: a table row with text after its last cell")
            current.append(stripped)
            continue
        if current:
            key = "\n".join(current)
            if key in tables:
                problems.append(f"line {number - len(current)}: the same table as on line {tables[key]}")
            tables.setdefault(key, number - len(current))
            current = []
        if stripped.count("|") >= 2 and (stripped.endswith("|") or "|---" in stripped):
            problems.append(f"line {number}: a table row inside a paragraph")
    return problems


def test_readme_tables_are_whole_and_given_once():
    assert table_problems(README) == []


@pytest.mark.parametrize(
    "text, found",
    [
        ("Some text and FAILURE / UNS| field | meaning |\n|---|---|\n| a | b |\n", "inside a paragraph"),
        ("| field | meaning |\n|---|---|\n| a | b | -> failed, and skips\n", "text after its last cell"),
        ("| f | m |\n|---|---|\n| a | b |\n\ntext\n\n| f | m |\n|---|---|\n| a | b |\n", "the same table"),
        ("| f | m |\n|---|---|\n| a | b |\n\n`a | b |` and ```sh\n", None),
        ("```sh\nbackfill preview x | head |\n```\n| a | b |\n", None),
    ],
)
def test_the_table_check_finds_what_it_should(text, found):
    problems = table_problems(text)
    assert (found is None and problems == []) or any(found in p for p in problems), problems

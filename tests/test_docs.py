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

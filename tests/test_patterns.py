"""Regular expressions of a mapping run by RE2: linear time, refused at check-mapping when outside
RE2's dialect, the same semantics for every value (backfill.patterns)."""

from __future__ import annotations

import subprocess
import sys
import time

import pandas as pd
import pytest

from backfill.errors import ExitStatus, MappingError
from backfill.mapping import parse_mapping
from backfill.normalize import TEXT
from backfill.patterns import PatternError, check_pattern, compile_pattern, search

from conftest import ROOT

LOOKAROUND = "is not supported: patterns run with RE2, in linear time, which has no backtracking constructs"


@pytest.mark.parametrize(
    ("pattern", "what"),
    [
        ("^(?=deploy)", "lookarounds ((?=...), (?!...), (?<=...), (?<!...)) '(?='"),
        ("^(?!test)", "lookarounds ((?=...), (?!...), (?<=...), (?<!...)) '(?!'"),
        ("(?<=v)1", "lookarounds ((?=...), (?!...), (?<=...), (?<!...)) '(?<='"),
        ("(?<!v)1", "lookarounds ((?=...), (?!...), (?<=...), (?<!...)) '(?<!'"),
        ("(?>a+)b", "atomic groups ((?>...)) '(?>'"),
        ("a++b", "possessive quantifiers (*+, ++, ?+) '++'"),
        ("a*+b", "possessive quantifiers (*+, ++, ?+) '*+'"),
        ("(a)\\1", "backreferences (\\1, \\k<name>) '\\\\1'"),
        ("end\\Z", "\\Z (write $: it is the end of the value) '\\\\Z'"),
        ("a(?#note)", "comments ((?#...)) '(?#'"),
    ],
)
def test_backtracking_constructs_are_refused_with_the_construct_named(pattern, what):
    with pytest.raises(PatternError) as caught:
        check_pattern(pattern)
    assert str(caught.value).startswith(what + " " + LOOKAROUND), str(caught.value)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "invalid regular expression: missing ) at '('"),
        ("[a", "invalid regular expression: missing ] at '[a'"),
        ("a{1001}", "invalid regular expression: invalid repetition size at '{1001}'"),
        ("*", "invalid regular expression: no argument for repetition operator at '*'"),
    ],
)
def test_invalid_patterns(pattern, message):
    with pytest.raises(PatternError) as caught:
        check_pattern(pattern)
    assert str(caught.value) == message


@pytest.mark.parametrize("key", ["filter", "repo_url_matches"])
def test_check_mapping_refuses_them_with_the_yaml_line(run_cli, write, tmp_path, key):
    if key == "filter":
        text = "timestamp: t\nentityId: {value: app}\nfilter:\n  - {field: job, matches: '^(?!test)'}\n"
        where = "line 4: filter.matches"
    else:
        text = "source:\n  format: jenkins\n  repo_url_matches: '(?<=github.com/)acme'\ntimestamp: t\n"
        where = "line 3: source.repo_url_matches"
    mapping = write(tmp_path, "m.yaml", text)
    code, out, err = run_cli("check-mapping", mapping)
    assert (code, out) == (ExitStatus.BAD_INPUT, "")
    assert err.startswith(f"Error: {mapping}, {where}: lookarounds")
    assert LOOKAROUND in err and err.count("\n") == 1


def test_no_engine_logs_reach_stderr(tmp_path):
    """RE2 prints parse errors itself unless told not to: one Error line, nothing else."""
    mapping = tmp_path / "m.yaml"
    mapping.write_text("timestamp: t\nfilter:\n  - {field: a, matches: 'a++'}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "check-mapping", str(mapping)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == ExitStatus.BAD_INPUT
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("Error: ")


@pytest.mark.parametrize(
    "pattern",
    [r"^(a+\s?)+$", r"^(a|a)*$", r"^(\w+\s?)*$", r"(x+x+)+y", r"^(([a-z])+.)+[A-Z]([a-z])+$", r"(.*a){20}"],
)
def test_catastrophic_patterns_run_in_linear_time(pattern):
    values = pd.Series(["a" * 41 + "!", "a" * 5000 + "\n!", "x" * 10_000, "é" * 3000 + "!"] * 50, dtype=TEXT)
    started = time.perf_counter()
    search(values, pattern)
    compile_pattern(pattern).search("a" * 100_000 + "!")
    assert time.perf_counter() - started < 2.0


def test_preview_with_a_redos_filter_finishes(tmp_path):
    """The issue's case, end to end: a 41-character value and `^(a+\\s?)+$`."""
    (tmp_path / "in.csv").write_text(f"svc,ts,job\napp,2023-04-10T10:00:00Z,{'a' * 41}!\napp,2023-04-10T11:00:00Z,aaa a\n",
                                     encoding="utf-8")
    (tmp_path / "m.yaml").write_text(
        "entityId: svc\ntimestamp: ts\nfilter:\n  - {field: job, matches: '^(a+\\s?)+$'}\n", encoding="utf-8"
    )
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "preview", "in.csv", "-m", "m.yaml", "--show", "0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Rows: 2 read = 1 planned + 1 filtered" in done.stdout
    assert done.stderr == ""  # no pandas UserWarning about match groups either


# --- semantics (documented in README, Regular expressions) ---------------------------------------

@pytest.mark.parametrize(
    ("pattern", "value", "found"),
    [
        ("x$", "x\n", False),  # $ is the end of the value, not before a final newline
        ("(?m)x$", "x\ny", True),
        ("^y", "x\ny", False),
        ("a.b", "a\nb", False),
        ("(?s)a.b", "a\nb", True),
        (r"^\w+$", "café", False),  # \w is ASCII
        (r"^[\pL]+$", "café", True),
        (r"^\d+$", "٤٢", False),  # Arabic-Indic digits are not \d
        (r"\s", "\u00a0", False),  # no-break space is not \s
        (r"\s", "\v", False),  # neither is the vertical tab (RE2)
        (r"\s", "\t", True),
        (r"\bprod\b", "éprodé", True),  # \b is an ASCII word boundary
        ("(?i)^DEPLOY-", "deploy-web", True),
        ("", "anything", True),
    ],
)
def test_semantics_are_the_same_in_both_engines(pattern, value, found):
    assert bool(search(pd.Series([value], dtype=TEXT), pattern).iloc[0]) is found
    assert (compile_pattern(pattern).search(value) is not None) is found


def test_missing_values_never_match():
    assert search(pd.Series(["a", None], dtype=TEXT), "").tolist() == [True, False]


def test_mapping_error_carries_the_reason():
    with pytest.raises(MappingError, match=r"^m\.yaml, line 3: filter\.matches: atomic groups"):
        parse_mapping("timestamp: t\nfilter:\n  - {field: a, matches: '(?>x)'}\n", "m.yaml")

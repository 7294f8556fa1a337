"""Regular expressions from a mapping, run by RE2: linear time in the length of the value, never
backtracking, so no pattern and no value can hang a run.

Every pattern a mapping accepts (`filter: matches:`, `source.repo_url_matches`) goes through
`check_pattern` when the mapping is loaded; a pattern outside RE2's dialect is refused there with
the construct named. Values are then searched by arrow's RE2 kernel (`search`, a whole column at
once) or by google-re2 (`compile_pattern`, one value at a time). Both are RE2, and a pattern is
accepted only when both compile it.

Semantics (RE2's, documented in README "Regular expressions"): a search anywhere in the value;
`^` and `$` are the start and end of the whole value (not of a line; `$` does not match before a
final newline), unless the pattern starts with `(?m)`; `.` does not match a newline unless `(?s)`;
`\\d`, `\\w`, `\\s` and `\\b` are ASCII (`\\s` is space, tab, newline, carriage return and form feed);
use `\\pL`, `\\pN` or `[[:^space:]]`-style classes for other scripts.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pandas as pd

# RE2's parse errors, translated into what the construct is and what to write instead.
_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]$"), "lookarounds ((?=...), (?!...), (?<=...), (?<!...))"),
    (re.compile(r"\(\?>$"), "atomic groups ((?>...))"),
    (re.compile(r"^[*+?}]\+$|^\{[0-9,]*\}\+$"), "possessive quantifiers (*+, ++, ?+)"),
    (re.compile(r"^\\[0-9]$|^\\[gk]$"), "backreferences (\\1, \\k<name>)"),
    (re.compile(r"^\\Z$"), "\\Z (write $: it is the end of the value)"),
    (re.compile(r"\(\?#$"), "comments ((?#...))"),
    (re.compile(r"\(\?\|$"), "branch reset groups ((?|...))"),
    (re.compile(r"^\\[GXRhHKN]$"), "the Perl/PCRE escape"),
)


class PatternError(ValueError):
    """A pattern RE2 cannot run; str() says why, without the file and line (the caller adds them)."""


def _explain(message: str) -> str:
    """RE2's "<problem>: <text at fault>" as one sentence."""
    problem, _, operator = message.rpartition(": ")
    for shape, what in _UNSUPPORTED:
        if shape.search(operator):
            return (
                f"{what} {operator!r} is not supported: patterns run with RE2, in linear time, "
                "which has no backtracking constructs; rewrite it without (see README, Regular expressions)"
            )
    if not problem:
        return f"invalid regular expression: {message}"
    return f"invalid regular expression: {problem} at {operator!r}"


@functools.lru_cache(maxsize=64)
def compile_pattern(pattern: str):
    """The pattern compiled by google-re2 (for values searched one at a time), or PatternError."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would print the parse error to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(_explain(message)) from None
    except (TypeError, ValueError) as exc:  # e.g. a pattern that is not valid UTF-8 text
        raise PatternError(f"invalid regular expression: {exc}") from None


def check_pattern(pattern: str) -> None:
    """PatternError unless both RE2 engines (google-re2 and arrow's kernel) accept the pattern."""
    import pyarrow as pa
    import pyarrow.compute as pc

    compile_pattern(pattern)
    try:
        pc.match_substring_regex(pa.array([""], type=pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PatternError(_explain(str(exc).removeprefix("Invalid regular expression: "))) from None


def search(values: pd.Series, pattern: str) -> pd.Series:
    """True where the pattern is found in the value (missing values: False), by arrow's RE2 kernel
    over the whole column: linear time, no Python per row, no warning about groups."""
    import pyarrow.compute as pc

    from backfill.normalize import arrow_text

    found = pc.fill_null(pc.match_substring_regex(arrow_text(values), pattern), False)
    return pd.Series(np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool), index=values.index)

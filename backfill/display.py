"""Text from input data made safe for a terminal: the one place every printer goes through.

A value from a file (a reason, an entity id, a file or column name) may hold ANSI escape
sequences, carriage returns, backspaces, C1 controls, bidi overrides or NUL bytes; printed raw,
they could erase the real summary and print a fake one. `printable` writes each such character as
a visible escape (`\\x1b`, `\\r`, `\\u202e`). The CLI's stdout goes through `printable(...,
layout=True)` (keeping the newlines and tabs of its own layout), and every line built from input
data (invalid-row lines, "By entity", file names, error messages) through `printable(...)`, which
escapes newlines too, so a value cannot start a line of its own. Long values are cut with an
ellipsis (`cut`); files written for machines (`--invalid-out`, `--out`) keep every value whole.
"""

from __future__ import annotations

VALUE_LIMIT = 200  # characters of one input value shown in a reason
LINE_LIMIT = 500  # characters of one printed line built from input data

# bidi embeddings, overrides and isolates, marks, and the line/paragraph separators
_FORMATTING = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029, 0xFEFF]


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_ALL = {code: _NAMED.get(code, _escape(code)) for code in [*range(0x20), *range(0x7F, 0xA0), *_FORMATTING]}
_LAYOUT = {code: text for code, text in _ALL.items() if code not in (0x09, 0x0A)}


def printable(text: object, *, layout: bool = False) -> str:
    """`text` with every control and bidi character escaped; with `layout`, newlines and tabs
    (the printer's own layout) are kept."""
    return str(text).translate(_LAYOUT if layout else _ALL)


def cut(text: str, limit: int = VALUE_LIMIT) -> str:
    """`text` cut to about `limit` characters with an ellipsis in the middle, saying how much
    was left out (the start and the end of a reason say what and why)."""
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 5, limit // 5
    return f"{text[:head]}…[{len(text) - head - tail:,} characters]…{text[-tail:]}"


def line(text: object, limit: int = LINE_LIMIT) -> str:
    """One printed line built from input data: cut, then every control character escaped."""
    return printable(cut(str(text), limit))

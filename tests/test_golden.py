"""Output stability: a fixed corpus of inputs and mappings through `preview --out` writes exactly
the request bodies, invalid rows and row accounting recorded before the streaming rewrite
(tests/golden/corpus.py says how they were recorded)."""

from __future__ import annotations

import pytest

from golden.corpus import CASES, EXPECTED, run_case


@pytest.mark.parametrize("name", sorted(CASES))
def test_preview_output_is_unchanged(tmp_path, name):
    for file, text in run_case(name, tmp_path).items():
        assert text == (EXPECTED / file).read_text(encoding="utf-8"), file

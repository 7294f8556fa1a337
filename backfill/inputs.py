"""The command line's files checked before any work: each input given once (by any path, link or
hard link), outputs that can be written and are not inputs; and inputs whose rows are copies of an
earlier input's rows, counted so that they are never sent twice silently."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence, Union

import numpy as np

from backfill.errors import UsageError


def _identity(path: str | Path) -> tuple[int, int] | None:
    """(device, inode) of the file a path names, through links; None when it cannot be looked at
    (the reader then says why). Never opens the file, so a FIFO is not consumed."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def check_distinct_inputs(paths: Sequence[str | Path]) -> None:
    """UsageError naming the file when one input is given twice: the same path, another path to it,
    a symbolic or a hard link (its rows would be planned, and sent, twice)."""
    seen: dict[tuple[int, int], str] = {}
    for path in map(str, paths):
        identity = _identity(path)
        if identity is None:
            continue
        if identity in seen:
            first = seen[identity]
            how = "given twice" if first == path else f"the same file as {first}"
            raise UsageError(f"input {path}: {how}; give each input file once (its rows would be planned twice)")
        seen[identity] = path


def output_problem(path: str) -> str | None:
    """Why `path` cannot be the file an option writes (None when it can be)."""
    if not path.strip():
        return "empty file name (an unset shell variable?); give the file to write"
    target = Path(path)
    if path.endswith(("/", os.sep)) or target.is_dir():
        return f"{path} is a directory; give a file name (e.g. {os.path.join(path, 'out.jsonl')})"
    parent = target.parent
    if not parent.exists():
        return f"{path}: no such directory {str(parent)!r}"
    if not parent.is_dir():
        return f"{path}: {str(parent)!r} is not a directory"
    return None


def check_outputs(inputs: Sequence[str | Path], outputs: Mapping[str, Union[str, "os.PathLike[str]", None]]) -> None:
    """UsageError when an output is an input file (it would be overwritten) or two options write
    the same file."""
    identities = {_identity(p): str(p) for p in inputs}
    identities.pop(None, None)
    written: dict[object, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        path = os.fspath(path)
        problem = output_problem(path)
        if problem:
            raise UsageError(f"{option}: {problem}")
        identity = _identity(path) or os.path.abspath(path)
        if identity in identities:
            raise UsageError(f"{option} {path}: is the input file {identities[identity]}; writing it would destroy it")
        if identity in written:
            raise UsageError(f"{option} {path}: {written[identity]} writes the same file; give each its own")
        written[identity] = option


def copies_of_earlier(hashes: Sequence[np.ndarray]) -> list[tuple[int, int, int]]:
    """For each input's row hashes (one array per input, in order): (input, how many of its rows
    are copies of a row of an earlier input, the first earlier input holding such a row), for the
    inputs that have any."""
    out = []
    for index in range(1, len(hashes)):
        current, earlier = hashes[index], [h for h in hashes[:index] if len(h)]
        if not len(current) or not earlier:
            continue
        copied = int(np.isin(current, np.concatenate(earlier)).sum())
        if copied:
            first = next(i for i in range(index) if len(hashes[i]) and np.isin(current, hashes[i]).any())
            out.append((index, copied, first))
    return out

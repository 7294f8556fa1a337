"""The mappings, samples and JSON Schema that ship with the package.

They live once, at the top of the source tree (`mappings/`, `samples/`), and are installed as the
data packages `backfill.mappings` and `backfill.samples` (pyproject.toml maps the directories), so
a wheel and a checkout read the same files. Discovery is by file name: every `mappings/*.yaml` is a
shipped mapping named by its stem; a sample belongs to the mapping whose name is the longest
prefix of its stem (`jenkins-builds.json` -> `jenkins`).
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from backfill.errors import MappingError, UsageError

SCHEMA_FILE = "mapping.schema.json"
_SUFFIXES = (".yaml", ".yml")


def _directory(kind: str) -> Path:
    """The installed data package `backfill.<kind>`, else `<kind>/` beside the package in a checkout."""
    try:
        spec = importlib.util.find_spec(f"backfill.{kind}")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    return Path(__file__).resolve().parent.parent / kind


def mappings_dir() -> Path:
    return _directory("mappings")


def samples_dir() -> Path:
    return _directory("samples")


def schema_path() -> Path:
    """The JSON Schema of mapping files (for editors: `# yaml-language-server: $schema=<this path>`)."""
    return mappings_dir() / SCHEMA_FILE


_DECLARED_SAMPLE = re.compile(r"\bsamples/([\w.-]+)")


def _declared_sample(text: str) -> str | None:
    """The sample a mapping's opening comments name (`(sample: samples/github-runs.json)`)."""
    for line in text.splitlines():
        if not line.startswith("#"):
            return None
        if found := _DECLARED_SAMPLE.search(line):
            return found[1]
    return None


@dataclass(frozen=True)
class ShippedMapping:
    name: str
    path: Path
    format: str
    description: str
    sample: Path | None


def _description(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#") and "yaml-language-server" not in line:
            words = line.lstrip("#").strip()
            return re.split(r"\s+\(sample:|\. ", words, maxsplit=1)[0].rstrip(".:")
        if line and not line.startswith("#"):
            break
    return ""


def _format(text: str) -> str:
    try:
        doc = yaml.safe_load(text)
        return str(doc["source"]["format"])
    except Exception:  # a broken shipped file still lists; check-mapping names the problem
        return "?"


def _samples() -> list[Path]:
    folder = samples_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")))


def _mapping_for_sample(stem: str, names: list[str]) -> str | None:
    owners = [n for n in names if stem == n or stem.startswith(n + "-")]
    return max(owners, key=len) if owners else None


def _shipped(folder: str) -> tuple[ShippedMapping, ...]:
    base = Path(folder)
    files = sorted(p for p in base.iterdir() if p.suffix in _SUFFIXES and p.is_file()) if base.is_dir() else []
    texts = {p.stem: p.read_text(encoding="utf-8-sig") for p in files}
    available = {p.name: p for p in _samples()}
    samples: dict[str, Path] = {}
    for name, text in texts.items():  # the sample a mapping names, else the one named after it
        declared = _declared_sample(text)
        if declared in available:
            samples[name] = available[declared]
    for sample in available.values():
        owner = _mapping_for_sample(sample.stem, list(texts))
        if owner and owner not in samples:
            samples[owner] = sample
    return tuple(
        ShippedMapping(path.stem, path, _format(texts[path.stem]), _description(texts[path.stem]), samples.get(path.stem))
        for path in files
    )


def shipped_mappings() -> list[ShippedMapping]:
    """Every shipped mapping, by name."""
    return list(_shipped(str(mappings_dir())))


def _names() -> str:
    return ", ".join(m.name for m in shipped_mappings()) or "none"


def shipped_mapping(name: str) -> ShippedMapping:
    stem = name[: -len(suffix)] if (suffix := next((s for s in _SUFFIXES if name.endswith(s)), "")) else name
    for mapping in shipped_mappings():
        if mapping.name == stem:
            return mapping
    raise MappingError(f"{name}: no shipped mapping of that name (shipped: {_names()}; backfill mappings lists them)")


def is_bare_name(spec: str) -> bool:
    return bool(spec) and os.sep not in spec and "/" not in spec and (os.altsep is None or os.altsep not in spec)


def resolve_mapping(spec: str | os.PathLike[str]) -> Path:
    """The mapping file `spec` names: an existing file as given; a bare name that is not a file, the
    shipped mapping of that name (`jenkins`, `jenkins.yaml`); anything else as given, so that reading
    it reports the missing file."""
    path = Path(spec)
    text = os.fspath(spec)
    if path.exists() or not is_bare_name(text):
        return path
    try:
        return shipped_mapping(text).path
    except MappingError:
        raise MappingError(
            f"{text}: no such mapping file, and no shipped mapping of that name "
            f"(shipped: {_names()}; backfill mappings lists them)"
        ) from None


def sample(name: str) -> tuple[Path, ShippedMapping | None]:
    """A shipped sample by its stem (`release-log`, `jenkins-builds`) or by its mapping's name
    (`jenkins`), with the shipped mapping it goes with."""
    samples = _samples()
    by_stem = {p.stem: p for p in samples} | {p.name: p for p in samples}
    path = by_stem.get(name)
    mappings = {m.name: m for m in shipped_mappings()}
    if path is None and name in mappings and mappings[name].sample is not None:
        path = mappings[name].sample
    if path is None:
        names = ", ".join(p.stem for p in samples) or "none"
        raise UsageError(f"--sample {name}: no shipped sample of that name (samples: {names})")
    owner = next((m for m in mappings.values() if m.sample == path), None)
    return path, owner


SCHEMA_MODELINE = re.compile(r"^# yaml-language-server: \$schema=.*$", re.MULTILINE)


def schema_modeline() -> str:
    """The editor line for a mapping anywhere on this machine: the installed schema by absolute path."""
    return f"# yaml-language-server: $schema={schema_path()}"


def show_mapping(name: str) -> str:
    """A shipped mapping's text, its schema line pointing at the installed schema so that a copy
    made anywhere keeps editor completion."""
    text = shipped_mapping(name).path.read_text(encoding="utf-8-sig")
    return SCHEMA_MODELINE.sub(lambda _: schema_modeline(), text, count=1)

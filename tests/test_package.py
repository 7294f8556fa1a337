"""What ships with the package: the mappings and samples (one copy, found from a checkout or an
install), `-m NAME`, `--sample NAME`, `backfill mappings`, and the mapping files' JSON Schema."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from backfill import shipped
from backfill.errors import ExitStatus, MappingError
from backfill.mapping import load_mapping, parse_mapping
from backfill.schema import mapping_schema, schema_text
from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib

    PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
else:  # pragma: no cover - Python 3.10 has no TOML reader; the wheel check in .ci/run still runs
    PYPROJECT = None
needs_toml = pytest.mark.skipif(PYPROJECT is None, reason="tomllib is Python 3.11+")
SHIPPED = sorted(p.stem for p in (ROOT / "mappings").glob("*.yaml"))
MODELINE = "# yaml-language-server: $schema=mapping.schema.json"


# --------------------------------------------------------------------- packaging


@needs_toml
def test_every_package_is_in_the_wheel():
    """pyproject lists packages by hand (two of them map the top-level data folders): a new
    backfill/<package>/ must be added there, or the wheel leaves it out."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "backfill").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert {"backfill.mappings", "backfill.samples"} <= listed


@needs_toml
def test_mappings_and_samples_are_installed_from_the_same_files():
    tool = PYPROJECT["tool"]["setuptools"]
    assert tool["package-dir"] == {"backfill.mappings": "mappings", "backfill.samples": "samples"}
    data = tool["package-data"]
    for name in (ROOT / "mappings").iterdir():
        assert any(Path(name).match(glob) for glob in data["backfill.mappings"]), name
    assert data["backfill.samples"] == ["*"]
    assert not (ROOT / "backfill" / "mappings").exists() and not (ROOT / "backfill" / "samples").exists()


def test_a_checkout_finds_its_own_folders():
    assert shipped.mappings_dir() == ROOT / "mappings"
    assert shipped.samples_dir() == ROOT / "samples"
    assert shipped.schema_path() == ROOT / "mappings" / "mapping.schema.json"


def test_discovery_is_by_file_name():
    found = {m.name: m for m in shipped.shipped_mappings()}
    assert sorted(found) == SHIPPED
    assert found["jenkins"].sample == ROOT / "samples" / "jenkins-builds.json"
    assert found["gitlab"].sample == ROOT / "samples" / "gitlab-deployments.json"
    assert found["release-log"].sample == ROOT / "samples" / "release-log.csv"
    assert found["jenkins"].format == "jenkins" and found["release-log"].format == "csv"
    for mapping in found.values():
        assert mapping.sample is not None, f"{mapping.path}: name its sample in the opening comments (samples/NAME)"


def test_a_mapping_may_name_its_sample():
    assert shipped._declared_sample("# yaml-language-server: x\n# Runs (sample: samples/github-runs.json).\nsource:\n") == "github-runs.json"
    assert shipped._declared_sample("source: {format: csv}\n# samples/late.csv\n") is None
    runs = {m.name: m for m in shipped.shipped_mappings()}.get("github-actions")
    if runs is not None:
        assert runs.sample == ROOT / "samples" / "github-runs.json"


@pytest.mark.parametrize(
    "stem, names, owner",
    [
        ("jenkins-builds", ["jenkins", "gitlab"], "jenkins"),
        ("github-deployments", ["github-actions", "github-deployments"], "github-deployments"),
        ("github-actions-runs", ["github-actions", "github-deployments"], "github-actions"),
        ("github", ["github-actions"], None),
        ("jenkinsx", ["jenkins"], None),
        ("release-log", ["release-log", "release"], "release-log"),
    ],
)
def test_a_sample_belongs_to_the_longest_mapping_name_it_starts_with(stem, names, owner):
    assert shipped._mapping_for_sample(stem, names) == owner


# --------------------------------------------------------------------- -m NAME and --sample


def test_bare_name_resolves_to_the_shipped_mapping(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped.resolve_mapping("jenkins") == ROOT / "mappings" / "jenkins.yaml"
    assert shipped.resolve_mapping("jenkins.yaml") == ROOT / "mappings" / "jenkins.yaml"
    (tmp_path / "jenkins").write_text("timestamp: t\n")
    assert shipped.resolve_mapping("jenkins") == Path("jenkins")  # an existing file wins
    assert shipped.resolve_mapping("dir/nope.yaml") == Path("dir/nope.yaml")  # a path stays a path


def test_preview_with_a_bare_mapping_name_says_which_file(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("preview", ROOT / "samples" / "jenkins-builds.json", "-m", "jenkins",
                             "--entity-id", "app-1", "--show", "0")
    assert code == ExitStatus.OK, err
    assert out.splitlines()[0] == f"Mapping {ROOT / 'mappings' / 'jenkins.yaml'} (format jenkins)"


def test_unknown_bare_name_lists_the_shipped_ones(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("preview", ROOT / "samples" / "release-log.csv", "-m", "jenkinz")
    assert code == ExitStatus.BAD_INPUT
    assert err == (f"Error: jenkinz: no such mapping file, and no shipped mapping of that name "
                   f"(shipped: {', '.join(SHIPPED)}; backfill mappings lists them)\n")
    code, _, err = run_cli("preview", ROOT / "samples" / "release-log.csv", "-m", f"{tmp_path}/nope.yaml")
    assert (code, err) == (ExitStatus.BAD_INPUT, f"Error: {tmp_path}/nope.yaml: no such mapping file\n")


def test_check_mapping_takes_a_shipped_name(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("check-mapping", "gitlab")
    assert code == ExitStatus.OK
    assert out.startswith(f"{ROOT / 'mappings' / 'gitlab.yaml'}: OK (format gitlab")


@pytest.mark.parametrize("name", ["release-log", "jenkins-builds", "jenkins", "gitlab-deployments.json"])
def test_sample_gives_input_and_mapping(run_cli, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("preview", "--sample", name, "--entity-id", "app-1", "--show", "0")
    assert code == ExitStatus.OK, err
    first, second = out.splitlines()[:2]
    assert first.startswith(f"Mapping {ROOT / 'mappings'}/")
    assert second.startswith(f"  {ROOT / 'samples'}/")


def test_sample_matches_the_readme_first_command(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, by_sample, _ = run_cli("preview", "--sample", "release-log")
    _, by_path, _ = run_cli("preview", ROOT / "samples" / "release-log.csv", "-m", ROOT / "mappings" / "release-log.yaml")
    assert by_sample == by_path


def test_sample_with_another_mapping(run_cli, tmp_path, monkeypatch):
    mapping = tmp_path / "m.yaml"
    mapping.write_text((ROOT / "mappings" / "release-log.yaml").read_text())
    code, out, _ = run_cli("preview", "--sample", "release-log", "-m", mapping, "--show", "0")
    assert code == ExitStatus.OK and out.startswith(f"Mapping {mapping} ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["preview", "--sample", "nope"],
         "Error: --sample nope: no shipped sample of that name (samples: "
         + ", ".join(sorted(p.stem for p in (ROOT / "samples").iterdir())) + ")"),
        (["preview", "x.csv", "--sample", "release-log"],
         "Error: backfill preview: --sample replaces INPUT; give input files or --sample NAME, not both"),
        (["preview"], "Error: backfill preview: the following arguments are required: INPUT, -m/--mapping "
                      "(see backfill preview --help)"),
        (["preview", "x.csv"], "Error: backfill preview: the following arguments are required: -m/--mapping "
                               "(see backfill preview --help)"),
        (["import", "-m", "m.yaml"], "Error: backfill import: the following arguments are required: INPUT "
                                     "(see backfill import --help)"),
    ],
)
def test_input_errors(run_cli, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*argv)
    assert (code, out, err) == (ExitStatus.USAGE, "", message + "\n")


# --------------------------------------------------------------------- backfill mappings


def test_mappings_lists_one_line_each(run_cli):
    code, out, err = run_cli("mappings")
    assert code == ExitStatus.OK and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == SHIPPED
    jenkins = next(line for line in lines if line.startswith("jenkins "))
    assert re.fullmatch(r"jenkins +jenkins +Jenkins build exports \(sample: --sample jenkins-builds\)", jenkins)


def test_mappings_show_prints_the_file_with_an_absolute_schema_line(run_cli, tmp_path):
    code, out, _ = run_cli("mappings", "show", "jenkins")
    assert code == ExitStatus.OK
    text = (ROOT / "mappings" / "jenkins.yaml").read_text(encoding="utf-8")
    assert out == text.replace(MODELINE, f"# yaml-language-server: $schema={ROOT / 'mappings' / 'mapping.schema.json'}")
    copy = tmp_path / "copy.yaml"
    copy.write_text(out)
    assert load_mapping(copy).source.format == "jenkins"


def test_mappings_show_unknown(run_cli):
    code, out, err = run_cli("mappings", "show", "nope")
    assert code == ExitStatus.BAD_INPUT and out == ""
    assert err == f"Error: nope: no shipped mapping of that name (shipped: {', '.join(SHIPPED)}; backfill mappings lists them)\n"


def test_mappings_schema_prints_its_path(run_cli):
    assert run_cli("mappings", "schema") == (ExitStatus.OK, f"{ROOT / 'mappings' / 'mapping.schema.json'}\n", "")


# --------------------------------------------------------------------- the JSON Schema


SCHEMA = json.loads((ROOT / "mappings" / "mapping.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)


def test_the_shipped_schema_is_the_generated_one():
    """mappings/mapping.schema.json is built from mapping.py's names: regenerate it with
    `python -m backfill.schema > mappings/mapping.schema.json` after changing them."""
    assert (ROOT / "mappings" / "mapping.schema.json").read_text(encoding="utf-8") == schema_text()
    type(VALIDATOR).check_schema(mapping_schema())


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_mapping_validates_and_names_the_schema(name):
    path = ROOT / "mappings" / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == MODELINE, f"{path}: make the first line {MODELINE}"
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(yaml.safe_load(text))]
    assert errors == []


GOOD = [
    "timestamp: finished_at\n",
    "timestamp: {from: [end, start], format: '%d.%m.%Y %H:%M'}\nentityId: {value: app-1}\n",
    "timestamp: {from: t, unit: ms}\nattributes: {status: {from: r, lookup: {OK: success, KO: failed}, default: failed}}\n",
    "source: {format: csv, delimiter: ';', timezone: Europe/Berlin, encoding: latin-1}\ntimestamp: t\n",
    "source: {delimiter: tab, records: data.items}\ntimestamp: t\ndedupe: [a, b]\n",
    "timestamp: t\nfilter:\n  - {field: env, in: [prod, '']}\n  - {field: job, matches: '^deploy-'}\n  - {field: r, not_in: ABORTED}\n",
    "timestamp: t\nattributes:\n  build_url: {template: 'https://ci/{job}/{n}'}\n  deployment_start_time: {from: s, timezone: UTC}\n",
    "timestamp: t\nattributes: {env: {value: 042}, build_id: 7}\ndedupe: id\n",
    "timestamp: t\nentityId: {from: service, lookup: {web: app-1, 200: app-2}, default: app-3}\n",
    "timestamp: t\nreport: {commit_time: {from: committed, unit: s}, build: [job, number]}\n",
    "timestamp: t\nreport: {commit_time: committed_at}\n",
]
BAD = [
    "",
    "# nothing but a comment\n",
    "entityId: x\n",
    "timestamp: t\nextra: 1\n",
    "source: {format: xml}\ntimestamp: t\n",
    "source: {delimiter: ';;'}\ntimestamp: t\n",
    "source: {timezone: ''}\ntimestamp: t\n",
    "source: {colour: red}\ntimestamp: t\n",
    "source: csv\ntimestamp: t\n",
    "timestamp: {from: t, value: x}\n",
    "timestamp: {unit: ms}\n",
    "timestamp: {from: t, unit: min}\n",
    "timestamp: {from: t, unit: s, format: '%Y'}\n",
    "timestamp: {from: ''}\n",
    "timestamp: [a, b]\n",
    "timestamp: {template: 'no placeholder'}\n",
    "timestamp: {from: t, lookup: {a: ''}}\n",
    "timestamp: {from: []}\n",
    "timestamp: {from: t, colour: red}\n",
    "timestamp: t\nattributes: {envv: prod}\n",
    "timestamp: t\nattributes: {env: {from: e, format: '%Y'}}\n",
    "timestamp: t\nattributes: {status: {value: ok}}\n",
    "timestamp: t\nattributes: {status: {from: r, lookup: {OK: yes}}}\n",
    "timestamp: t\nattributes: {status: {from: r, default: passed}}\n",
    "timestamp: t\nattributes: [env]\n",
    "timestamp: t\nentityId: {value: ~}\n",
    "timestamp: t\nfilter: {field: x, in: [a]}\n",
    "timestamp: t\nfilter: [{in: [a]}]\n",
    "timestamp: t\nfilter: [{field: x, in: [a], matches: b}]\n",
    "timestamp: t\nfilter: [{field: x}]\n",
    "timestamp: t\nfilter: [{field: x, equals: a}]\n",
    "timestamp: t\ndedupe: []\n",
    "timestamp: t\ndedupe: ['']\n",
    "timestamp: t\nreport: {commit_time: {value: x}}\n",
    "timestamp: t\nreport: {lead: x}\n",
    "timestamp: t\nreport: {build: []}\n",
]


def _loader_accepts(text: str) -> bool:
    try:
        parse_mapping(text, "m.yaml")
    except MappingError:
        return False
    return True


@pytest.mark.parametrize("text", GOOD)
def test_schema_and_loader_accept_the_same_good_mappings(text):
    assert _loader_accepts(text)
    assert list(VALIDATOR.iter_errors(yaml.safe_load(text))) == []


@pytest.mark.parametrize("text", BAD)
def test_schema_and_loader_refuse_the_same_bad_mappings(text):
    assert not _loader_accepts(text)
    assert not VALIDATOR.is_valid(yaml.safe_load(text))


@pytest.mark.parametrize(
    "text",
    [
        "source: {timezone: Mars/Olympus}\ntimestamp: t\n",
        "timestamp: {from: t, format: '%Q'}\n",
        "timestamp: t\nfilter: [{field: x, matches: '(?=a)'}]\n",
    ],
)
def test_what_only_check_mapping_sees(text):
    """The schema checks structure; zones, strptime formats and regexes are check-mapping's."""
    assert VALIDATOR.is_valid(yaml.safe_load(text))
    assert not _loader_accepts(text)

"""The Python API: what `import backfill` offers, its options objects, and the flow driven from Python
against a sandbox on 127.0.0.1 (the same calls the CLI makes)."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

import backfill
from backfill.errors import AuthError, CheckpointError, ExitStatus, StrictError, UsageError
from backfill.sandbox import Sandbox, SandboxConfig
from backfill.throttle import RateLimit
from conftest import ROOT, SAMPLE_CSV, SAMPLE_MAPPING

KEY = "api-KEY-51c0e9a7d3f2"
FAST = (RateLimit(1000, 1.0),)
FAST_SETTINGS = backfill.UploadSettings(rate_limits=FAST)

EXPECTED_ALL = {
    "__version__",
    "plan_import", "preview", "import_events", "resume", "status",
    "PlanOptions", "UploadSettings", "Reporter", "Plan", "Preview", "ImportResult", "Status", "Mapping", "load_mapping",
    "BackfillError", "UsageError", "InputError", "ReaderError", "MappingError", "StrictError", "CheckpointError",
    "AuthError", "UploadStopped", "ExitStatus",
}
FLOW = ("plan_import", "preview", "import_events", "resume", "status")


def test_all_is_exactly_the_public_api():
    assert set(backfill.__all__) == EXPECTED_ALL
    assert len(backfill.__all__) == len(set(backfill.__all__))
    for name in backfill.__all__:
        assert hasattr(backfill, name), name


def test_import_backfill_is_light_and_names_load_on_use():
    code = ("import sys, backfill, backfill.sandbox; assert 'pandas' not in sys.modules, 'pandas loaded'; "
            "backfill.preview; assert 'backfill.importer' in sys.modules and 'pandas' not in sys.modules; "
            "backfill.Plan; assert 'pandas' in sys.modules; assert set(backfill.__all__) <= set(dir(backfill))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        backfill.nothing  # noqa: B018


@pytest.mark.parametrize("name", FLOW)
def test_flow_functions_are_documented_and_options_are_keyword_only(name):
    func = getattr(backfill, name)
    assert inspect.getdoc(func), name
    params = list(inspect.signature(func).parameters.values())
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert positional in (["inputs", "mapping"], ["checkpoint"]), (name, positional)


@pytest.mark.parametrize("name", ["PlanOptions", "UploadSettings"])
def test_option_objects_take_keywords_only(name):
    cls = getattr(backfill, name)
    with pytest.raises(TypeError):
        cls(None)


def _top_level(body: list[ast.stmt]):
    """Statements run at import time."""
    for node in body:
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            yield from _top_level(node.body + node.orelse + getattr(node, "finalbody", [])
                                  + [s for h in getattr(node, "handlers", []) for s in h.body])


def _imported(nodes) -> set[str]:
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("backfill"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backfill"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _module_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the backfill modules it imports, at import time or inside a function (a deferred
    import hides a cycle, it does not remove it). The one exception: a package that loads its own
    submodules on demand (a registry of readers) while they import shared helpers from it."""
    graph = {}
    for path in (root / "backfill").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        eager = _imported(_top_level(tree.body))
        deferred = _imported(ast.walk(tree)) - eager
        if is_package:
            deferred = {e for e in deferred if not e.startswith(name + ".")}
        graph[name] = eager | deferred
    return {name: {e for e in edges if e in graph and e != name} for name, edges in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt, [*trail, nxt])):
                return found
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def test_the_cycle_check_finds_a_deferred_cycle(tmp_path):
    (tmp_path / "backfill").mkdir()
    (tmp_path / "backfill" / "__init__.py").write_text("")
    (tmp_path / "backfill" / "cli.py").write_text("from backfill import upload_cli\n")
    (tmp_path / "backfill" / "upload_cli.py").write_text("def f():\n    from backfill.cli import g\n")
    assert _cycle(_module_imports(tmp_path)) == ["backfill.cli", "backfill.upload_cli", "backfill.cli"]


def test_no_import_cycle_between_modules():
    graph = _module_imports()
    # the package's __init__ re-exports the library; modules import only __version__ from it
    graph = {name: {e for e in edges if e != "backfill"} for name, edges in graph.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cli_does_not_hold_the_import_flow():
    graph = _module_imports()
    assert "backfill.cli" not in graph["backfill.upload_cli"]
    assert "backfill.cli" not in graph["backfill.importer"]
    assert "backfill.upload_cli" not in graph["backfill.importer"]


# --------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"entity_id": "  "}, "empty entity id"),
        ({"sets": {"env": " "}}, "env: empty value"),
        ({"sets": [(" ", "x")]}, "empty attribute name"),
        ({"since": "yesterday-ish"}, "since: not a date"),
        ({"until": object()}, "until: not a date"),
    ],
)
def test_plan_options_refuse_bad_values(kwargs, message):
    with pytest.raises(UsageError, match=message):
        backfill.PlanOptions(**kwargs)


def test_plan_options_normalise():
    options = backfill.PlanOptions(entity_id=" app-1 ", sets={"env": " production "}, since="2020-01-01",
                                   until="2020-06-01T02:00:00+02:00")
    assert options.entity_id == "app-1"
    assert options.sets == (("env", "production"),)
    assert options.since == pd.Timestamp("2020-01-01", tz="UTC")
    assert options.until == pd.Timestamp("2020-06-01T00:00:00", tz="UTC")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "between 1 and 15"),
        ({"batch_size": 16}, "between 1 and 15"),
        ({"batch_size": True}, "between 1 and 15"),
        ({"on_uncertain": "maybe"}, "neither 'resend' nor 'skip'"),
        ({"rate_limits": ["lots"]}, "lots"),
    ],
)
def test_upload_settings_refuse_bad_values(kwargs, message):
    with pytest.raises((UsageError, ValueError), match=message):
        backfill.UploadSettings(**kwargs)


def test_upload_settings_read_rate_limit_text():
    settings = backfill.UploadSettings(rate_limits=["10/min"])
    assert [str(x) for x in settings.limits] == ["10/min"]
    assert [str(x) for x in backfill.UploadSettings().limits] == ["100/min", "1500/h"]


# --------------------------------------------------------------------- the flow from Python


def test_preview_returns_the_plan_and_its_text(tmp_path):
    out = tmp_path / "bodies.jsonl"
    result = backfill.preview([SAMPLE_CSV], SAMPLE_MAPPING, out=out, show=1)
    assert isinstance(result.plan, backfill.Plan)
    assert len(result.plan) == 21 and len(result.plan.report.invalid) == 4
    assert result.summary.startswith("Mapping ")
    assert "Rows: 29 read = 21 planned + 3 filtered + 1 duplicates + 4 invalid" in result.summary
    assert result.payloads.startswith("Request 1 of 2")
    assert result.requests_written == 2 == len(out.read_text().splitlines())


def test_plan_import_applies_options(tmp_path):
    invalid = tmp_path / "invalid.jsonl"
    options = backfill.PlanOptions(since="2024-01-01", sets={"env": "qa"})
    plan = backfill.plan_import([SAMPLE_CSV], SAMPLE_MAPPING, options=options, invalid_out=invalid)
    assert 0 < len(plan) < 21
    assert (pd.to_datetime(plan.events["timestamp"], utc=True) >= pd.Timestamp("2024-01-01", tz="UTC")).all()
    assert len(invalid.read_text().splitlines()) == len(plan.report.invalid)


def test_since_not_before_until_is_refused_when_planning():
    options = backfill.PlanOptions(since="2021-01-01", until="2020-01-01")
    with pytest.raises(UsageError, match="--since 2021-01-01 00:00:00 is not before --until 2020-01-01 00:00:00"):
        backfill.plan_import([SAMPLE_CSV], SAMPLE_MAPPING, options=options)


class Recorder(backfill.Reporter):
    def __init__(self, answer: bool = True):
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.questions: list[str] = []
        self.answer = answer

    def info(self, text: str) -> None:
        self.lines.append(text)

    def error(self, text: str) -> None:
        self.errors.append(text)

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return self.answer


@pytest.fixture
def sandbox():
    with Sandbox(SandboxConfig(api_key=KEY, limits=FAST)) as sb:
        yield sb


@pytest.fixture
def files(tmp_path):
    shutil.copy(SAMPLE_CSV, tmp_path / "release-log.csv")
    shutil.copy(SAMPLE_MAPPING, tmp_path / "release-log.yaml")
    return tmp_path / "release-log.csv", tmp_path / "release-log.yaml", tmp_path / "run.checkpoint"


def test_import_then_rerun_then_status(sandbox, files, tmp_path):
    csv, mapping, checkpoint = files
    reporter = Recorder()
    result = backfill.import_events([csv], mapping, base_url=sandbox.url, api_key=KEY, checkpoint=checkpoint,
                                    settings=FAST_SETTINGS, reporter=reporter)
    assert isinstance(result, backfill.ImportResult)
    assert result.checkpoint == str(checkpoint)
    assert result.complete and result.counts["sent"] == 21
    assert len(sandbox.stored) == 21
    assert reporter.lines[0] == f"Checkpoint: {checkpoint}"
    assert reporter.questions == [f"Send 21 events in 2 requests to custom ({sandbox.url})?"]
    assert "Import: 21 sent, 0 rejected" in result.report

    again = backfill.import_events([csv], mapping, base_url=sandbox.url, api_key=KEY, checkpoint=checkpoint,
                                   settings=FAST_SETTINGS, reporter=Recorder())
    assert again.counts["sent"] == 21 and len(sandbox.stored) == 21

    sent = tmp_path / "sent.jsonl"
    state = backfill.status(checkpoint, sent_out=sent)
    assert state.document["sent"] == 21 and state.sent_written == 21
    assert [run["argv_summary"] for run in state.document["runs"]] == ["import", "import"]
    json.dumps(state.document)


def test_import_declined_sends_nothing(sandbox, files):
    csv, mapping, checkpoint = files
    result = backfill.import_events([csv], mapping, base_url=sandbox.url, api_key=KEY, checkpoint=checkpoint,
                                    reporter=Recorder(answer=False))
    assert result.declined and result.upload is None and not checkpoint.exists()
    assert sandbox.stored == []


def test_import_with_the_default_reporter_needs_no_terminal(sandbox, files, caplog):
    csv, mapping, checkpoint = files
    caplog.set_level("INFO", logger="backfill")
    result = backfill.import_events([csv], mapping, base_url=sandbox.url, api_key=KEY, checkpoint=checkpoint,
                                    settings=FAST_SETTINGS)
    assert result.counts["sent"] == 21
    assert any(r.getMessage() == f"Checkpoint: {checkpoint}" for r in caplog.records)


def test_import_from_a_worker_thread(sandbox, files):
    """An Airflow task or a thread pool: no signal handler can be installed there, the import still runs."""
    csv, mapping, checkpoint = files
    box: dict = {}

    def work() -> None:
        try:
            box["result"] = backfill.import_events([csv], mapping, base_url=sandbox.url, api_key=KEY,
                                                   checkpoint=checkpoint, settings=FAST_SETTINGS)
        except BaseException as exc:  # pragma: no cover - reported below
            box["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(60)
    assert "error" not in box, box.get("error")
    assert box["result"].counts["sent"] == 21


def test_resume_from_python(sandbox, files):
    csv, mapping, checkpoint = files
    backfill.import_events([csv], mapping, base_url=sandbox.url, api_key=KEY, checkpoint=checkpoint,
                           settings=FAST_SETTINGS)
    reporter = Recorder()
    result = backfill.resume(checkpoint, api_key=KEY, settings=FAST_SETTINGS, reporter=reporter)
    assert reporter.lines[0] == f"Resuming {checkpoint} -> custom ({sandbox.url})"
    assert result.counts["pending"] == 0 and result.counts["sent"] == 21


def test_errors_are_the_cli_s(files, monkeypatch, tmp_path):
    csv, mapping, checkpoint = files
    monkeypatch.delenv("DEVGRID_API_KEY", raising=False)
    with pytest.raises(UsageError, match="say where to send"):
        backfill.import_events([csv], mapping, api_key=KEY)
    with pytest.raises(UsageError, match="unknown target 'staging'"):
        backfill.import_events([csv], mapping, target="staging", api_key=KEY)
    with pytest.raises(AuthError) as err:
        backfill.import_events([csv], mapping, target="development", checkpoint=checkpoint)
    assert err.value.exit_status == ExitStatus.AUTH
    with pytest.raises(StrictError, match="4 invalid rows and --strict is set; nothing was sent"):
        backfill.import_events([csv], mapping, base_url="http://127.0.0.1:9", api_key=KEY, checkpoint=checkpoint,
                               strict=True)
    assert not checkpoint.exists()
    with pytest.raises(CheckpointError):
        backfill.status(tmp_path / "missing.checkpoint")


def test_readme_python_examples_use_the_public_api():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in readme.split("```python\n")[1:]]
    assert blocks, "the README has a Use from Python example"
    for block in blocks:
        tree = ast.parse(block.split("```", 1)[0])
        used = {n.attr for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "backfill"}
        assert used and used <= set(backfill.__all__), used - set(backfill.__all__)

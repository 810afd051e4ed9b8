"""The orchestrate CLI: exit codes, validation messages without tracebacks, results contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli.app import app
from orchestration.schema import SCHEMA_PATH, project_json_schema

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

GOOD = """\
name: demo
inputs: {topic: cats}
agents:
  sim: {type: offline, latency_ms: [1, 5], seed: 7}
defaults: {agent: sim, max_concurrency: 4}
tasks:
  - id: research
    description: "Research {{ inputs.topic }}"
  - id: outline
    description: "Outline of {{ tasks.research.output }}"
    depends_on: [research]
  - id: side
    description: "side"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_run_writes_the_results_contract(tmp_path: Path) -> None:
    project = write(tmp_path, "p.yaml", GOOD)
    out = tmp_path / "out" / "results.json"
    code, output = invoke("run", str(project), "--results", str(out), "--input", "topic=dogs")
    assert code == 0, output
    document = json.loads(out.read_text())
    assert document["project"] == "demo"
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", document["run_id"])
    assert document["run_id"] in output
    assert set(document["results"]) == {"research", "outline", "side"}
    outline = document["results"]["outline"]
    assert outline["output"] == "Outline of Research dogs"
    for key in (
        "task_id",
        "status",
        "output",
        "error",
        "agent",
        "provider",
        "model",
        "attempts",
        "started_at",
        "completed_at",
        "duration_s",
        "usage",
        "cost_usd",
    ):
        assert key in outline
    assert outline["status"] == "success" and outline["error"] is None and outline["attempts"] == 1
    assert outline["usage"] == {
        "input_tokens": 4,
        "output_tokens": 4,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
    }
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00"
    assert re.fullmatch(stamp, outline["started_at"]) and re.fullmatch(stamp, outline["completed_at"])
    assert outline["started_at"] >= document["results"]["research"]["completed_at"]


def test_run_exit_1_when_a_task_fails(tmp_path: Path) -> None:
    project = write(
        tmp_path,
        "p.yaml",
        GOOD.replace("latency_ms: [1, 5], seed: 7", "fail_if_contains: Research"),
    )
    out = tmp_path / "r.json"
    code, output = invoke("run", str(project), "--results", str(out))
    assert code == 1
    results = json.loads(out.read_text())["results"]
    assert results["research"]["status"] == "failed"
    assert results["research"]["error"]["type"] == "invalid_request"
    assert results["outline"]["status"] == "skipped"
    assert results["side"]["status"] == "success"
    assert "invalid_request" in output


def test_quiet_run_names_the_run_on_one_stderr_line(tmp_path: Path) -> None:
    project = write(tmp_path, "p.yaml", GOOD)
    result = runner.invoke(app, ["run", str(project), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert re.fullmatch(r"run \d{8}-\d{6}-[0-9a-f]{6}\n", result.stderr), result.stderr
    result = runner.invoke(app, ["run", str(project), "-q", "--run-id", "quiet-1"])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "run quiet-1\n")


def test_toml_and_json_project_files(tmp_path: Path) -> None:
    toml = write(
        tmp_path,
        "p.toml",
        'name = "t"\n[[tasks]]\nid = "a"\ndescription = "hello"\n[[tasks]]\nid = "b"\n'
        'description = "{{ tasks.a.output }}!"\ndepends_on = ["a"]\n',
    )
    as_json = write(tmp_path, "p.json", json.dumps({"tasks": [{"id": "a", "description": "hi"}]}))
    for path in (toml, as_json):
        code, output = invoke("run", str(path), "--results", str(tmp_path / "r.json"), "-q")
        assert code == 0, output
    assert json.loads((tmp_path / "r.json").read_text())["results"]["a"]["output"] == "hi"


BAD_CASES = {
    "cycle": (
        "tasks:\n  - {id: a, description: x, depends_on: [c]}\n  - {id: b, description: x, depends_on: [a]}\n"
        "  - {id: c, description: x, depends_on: [b]}\n",
        ["task 'a', field 'depends_on': dependency cycle: a -> b -> c -> a"],
    ),
    "unknown_dependency": (
        "tasks:\n  - id: a\n    description: x\n    depends_on: [ghost]\n",
        [":4: task 'a', field 'depends_on': depends on unknown task 'ghost'"],
    ),
    "duplicate_id": (
        "tasks:\n  - {id: a, description: x}\n  - {id: a, description: y}\n",
        [":3: task 'a', field 'id': duplicate task id"],
    ),
    "unknown_agent": (
        "tasks:\n  - id: a\n    description: x\n    agent: nobody\n",
        [":4: task 'a', field 'agent': unknown agent 'nobody'"],
    ),
    "invalid_yaml": ("tasks: [\n  {id: a\n", ["invalid YAML"]),
    "wrong_type": (
        "tasks:\n  - id: first\n    description: x\n  - id: second\n    description: y\n    depends_on: 5\n"
        "    retries: lots\n",
        [
            ":6: task 'second', field 'depends_on': Input should be a valid list",
            ":7: task 'second', field 'retries': Input should be a valid integer",
        ],
    ),
    "unknown_field": ("tasks:\n  - id: a\n    descripton: x\n", ["task 'a', field 'descripton': unknown field"]),
    "unknown_input": (
        "tasks:\n  - id: a\n    description: '{{ inputs.topic }}'\n",
        ["task 'a', field 'description': template uses input 'topic'"],
    ),
    "template_syntax": (
        "tasks:\n  - id: a\n    description: '{{ oops'\n",
        ["task 'a', field 'description': template error"],
    ),
    "not_ancestor": (
        "tasks:\n  - {id: a, description: x}\n  - {id: b, description: '{{ tasks.a.output }}'}\n",
        ["task 'b', field 'description': template reads tasks.a: it is not an ancestor"],
    ),
    "bad_agent_setting": (
        "agents:\n  sim:\n    type: offline\n    latency: 5\ntasks:\n  - {id: a, description: x, agent: sim}\n",
        [":4: agent 'sim', field 'latency': unknown setting"],
    ),
    "unknown_agent_type": (
        "agents:\n  sim: {type: telepathy}\ntasks:\n  - {id: a, description: x, agent: sim}\n",
        ["agent 'sim', field 'type': unknown provider type 'telepathy'"],
    ),
    "not_a_mapping": ("- just\n- a list\n", ["a project file must be a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_invalid_projects_exit_2_with_clear_messages(tmp_path: Path, case: str, command: str) -> None:
    text, expected = BAD_CASES[case]
    path = write(tmp_path, f"{case}.yaml", text)
    code, output = invoke(command, str(path))
    assert code == 2, output
    assert str(path) in output
    for fragment in expected:
        assert fragment in output
    assert "Traceback" not in output
    assert "tasks.1" not in output and "tasks.0" not in output  # ids, not pydantic paths


def test_missing_file_and_bad_input_flag(tmp_path: Path) -> None:
    code, output = invoke("run", str(tmp_path / "absent.yaml"))
    assert code == 2 and "cannot read file" in output
    project = write(tmp_path, "p.yaml", GOOD)
    code, output = invoke("run", str(project), "--input", "novalue")
    assert code == 2 and "expected KEY=VALUE" in output


def test_graph_formats(tmp_path: Path) -> None:
    project = write(tmp_path, "p.yaml", GOOD)
    code, mermaid = invoke("graph", str(project))
    assert code == 0 and mermaid.startswith("flowchart TD") and "t0 --> t1" in mermaid
    code, dot = invoke("graph", str(project), "--format", "dot")
    assert code == 0 and '"research" -> "outline";' in dot


def test_agents_list_never_prints_keys(tmp_path: Path) -> None:
    agents = write(
        tmp_path, "agents.yaml", "agents:\n  mine: {type: offline, api_key: sk-abcdefghijklmnopqrstuvwxyz}\n"
    )
    code, output = invoke("agents", "list", "--agents", str(agents))
    assert code == 0 and "mine" in output and "offline" in output
    assert "abcdefghijkl" not in output


def test_published_schema_is_current() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == project_json_schema()
    assert invoke("schema")[1].strip() == json.dumps(project_json_schema(), indent=2)


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestration", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_module_entry_point_and_exit_codes_in_a_real_process(tmp_path: Path) -> None:
    assert run_cli("--help").returncode == 0
    bad = write(tmp_path, "bad.yaml", BAD_CASES["cycle"][0])
    proc = run_cli("run", str(bad))
    assert proc.returncode == 2 and "a -> b -> c -> a" in proc.stderr and "Traceback" not in proc.stderr
    good = write(tmp_path, "good.yaml", GOOD)
    assert run_cli("run", str(good), "-q").returncode == 0


def test_help_loads_neither_rich_nor_the_engine() -> None:
    """``orchestrate --help`` stays a fast start-up: plain help, no rich, pydantic or engine import."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestration", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0 and "Commands:" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in imported if m.split(".")[0] in {"rich", "pydantic", "anyio", "networkx", "jinja2"})
    assert heavy == [] and "orchestration.orchestrator" not in imported


def test_importing_orchestration_and_help_import_no_sdk() -> None:
    probe = (
        "import sys, orchestration, orchestration.orchestrator, orchestration.cli.app;"
        "heavy = [m for m in ('openai', 'anthropic', 'google.genai', 'mlx', 'vllm', 'torch') if m in sys.modules];"
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


DEFERRED_PROBE = """
import sys
started = set(sys.modules)
from orchestration import ProjectOrchestrator
from pydantic import BaseModel

def models(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from models(sub)

deferred = ("tenacity", "anyio.streams.memory", "importlib.metadata", "tomllib", "yaml")
print(sorted(m for m in deferred if m in sys.modules and m not in started))
print(sorted(m.__name__ for m in models(BaseModel) if m.__pydantic_complete__))
"""


def test_importing_the_engine_defers_what_only_some_runs_need() -> None:
    """Start-up cost: models are built on first use; retries, event streams, entry points, TOML load when used."""
    proc = subprocess.run([sys.executable, "-c", DEFERRED_PROBE], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.split("\n")[:2] == ["[]", "[]"], proc.stdout + proc.stderr


def test_interrupt_exits_130_and_keeps_finished_results(tmp_path: Path) -> None:
    import signal

    project = write(
        tmp_path,
        "p.yaml",
        "agents:\n  slow: {type: offline, latency_ms: 60000}\n"
        "tasks:\n  - {id: fast, description: quick}\n  - {id: stuck, description: wait, agent: slow}\n"
        "  - {id: after, description: x, depends_on: [stuck]}\n",
    )
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestration", "run", str(project), "--results", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for _ in range(50):  # bounded: the fast task finishes within the first few lines
            line = proc.stderr.readline()
            if "fast" in line or not line:
                break
        assert "success" in line and "fast" in line
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    document = json.loads(out.read_text())
    assert document["status"] == "cancelled"
    results = document["results"]
    assert results["fast"]["status"] == "success" and results["fast"]["output"] == "quick"
    assert results["stuck"]["status"] == "cancelled" and results["after"]["status"] == "cancelled"


def test_a_bad_lease_time_in_the_environment_is_a_clear_error(tmp_path: Path) -> None:
    project = write(tmp_path, "p.yaml", GOOD)
    env = {"ORCHESTRATE_LEASE_S": "soon"}
    for args in (["run", str(project)], ["runs", "--store", str(tmp_path / "runs.db")]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, result.output
        assert "ORCHESTRATE_LEASE_S must be a number of seconds above 0, not 'soon'" in result.output
        assert "Traceback" not in result.output

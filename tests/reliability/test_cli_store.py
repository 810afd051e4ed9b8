"""The run-store CLI: run --run-id/--store/--resume, resume, runs, results."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from orchestration.cli.app import app

runner = CliRunner()

PROJECT = """\
name: cli-store
agents:
  sim: {type: offline}
  picky: {type: offline, fail_if_contains: boom}
defaults: {agent: sim, retries: 0}
tasks:
  - {id: a, description: "alpha"}
  - {id: b, description: "MARK {{ tasks.a.output }}", depends_on: [a], agent: picky}
  - {id: c, description: "after {{ tasks.b.output }}", depends_on: [b]}
  - {id: d, description: "delta"}
"""


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_run_fail_fix_resume_and_export(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT.replace("MARK", "boom"))
    store = str(tmp_path / "runs.db")
    code, output = invoke("run", str(project), "--run-id", "r1", "--store", store, "-q")
    assert code == 1, output

    project.write_text(PROJECT.replace("MARK", "fixed"))
    results_file = tmp_path / "resumed.json"
    code, output = invoke("run", str(project), "--resume", "--store", store, "--results", str(results_file), "-q")
    assert code == 0, output
    assert "run r1 resumed: 2 finished tasks kept" in output
    document = json.loads(results_file.read_text())
    assert document["run_id"] == "r1" and document["status"] == "success"
    assert {t: r["output"] for t, r in document["results"].items()} == {
        "a": "alpha",
        "b": "fixed alpha",
        "c": "after fixed alpha",
        "d": "delta",
    }

    code, output = invoke("runs", "--store", store)
    assert code == 0 and "r1" in output and "success" in output and "cli-store" in output

    code, exported = invoke("results", "r1", "--store", store, "--format", "json")
    assert code == 0 and json.loads(exported)["results"] == document["results"]
    code, exported = invoke("results", "r1", "--store", store, "--format", "jsonl")
    assert code == 0 and [json.loads(line)["task_id"] for line in exported.splitlines()] == ["a", "b", "c", "d"]
    code, exported = invoke("results", "r1", "--store", store, "-f", "md")
    assert code == 0 and "| b | success | picky | 1 |" in exported
    code, output = invoke("results", "r1", "--store", store, "-f", "xml")
    assert code == 2 and "json, jsonl, md" in output


def test_resume_by_id_reports_changed_tasks(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT.replace("MARK", "ok"))
    store = str(tmp_path / "runs.db")
    assert invoke("run", str(project), "--run-id", "r2", "--store", store, "-q")[0] == 0
    project.write_text(PROJECT.replace("MARK", "ok").replace('"alpha"', '"ALPHA"'))
    results_file = tmp_path / "r.json"
    code, output = invoke("resume", "r2", "--store", store, "--results", str(results_file), "-q")
    assert code == 0, output
    assert "rerun because the project changed: a" in output
    assert "rerun because an upstream task changed: b, c" in output
    assert json.loads(results_file.read_text())["results"]["c"]["output"] == "after ok ALPHA"


def test_store_commands_fail_cleanly(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT)
    store = str(tmp_path / "runs.db")
    code, output = invoke("run", str(project), "--resume", "--store", store)
    assert code == 2 and "no unfinished run of project 'cli-store'" in output
    code, output = invoke("resume", "nope", "--store", store)
    assert code == 2 and "Traceback" not in output
    assert invoke("run", str(project), "--store", store, "-q")[0] == 0
    code, output = invoke("resume", "nope", "--store", store)
    assert code == 2 and "no run 'nope'" in output
    code, output = invoke("results", "nope", "--store", store)
    assert code == 2 and "no run 'nope'" in output


AGENTS = """\
agents:
  picky: {type: offline, fail_if_contains: MARKER}
"""


def test_resume_reloads_the_agents_file_of_the_run(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT.replace("  picky: {type: offline, fail_if_contains: boom}\n", ""))
    agents = tmp_path / "agents.yaml"
    agents.write_text(AGENTS.replace("MARKER", "alpha"))
    store = str(tmp_path / "runs.db")
    code, output = invoke("run", str(project), "--agents", str(agents), "--run-id", "r3", "--store", store, "-q")
    assert code == 1, output

    agents.write_text(AGENTS.replace("MARKER", "never"))
    results_file = tmp_path / "r.json"
    code, output = invoke("resume", "r3", "--store", store, "--results", str(results_file), "-q")
    assert code == 0, output
    document = json.loads(results_file.read_text())
    assert document["results"]["b"]["agent"] == "picky"
    assert document["results"]["c"]["output"] == "after MARK alpha"


def test_resume_with_agents_uses_that_file(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT.replace("  picky: {type: offline, fail_if_contains: boom}\n", ""))
    failing = tmp_path / "failing.yaml"
    failing.write_text(AGENTS.replace("MARKER", "alpha"))
    store = str(tmp_path / "runs.db")
    assert invoke("run", str(project), "--agents", str(failing), "--run-id", "r4", "--store", store, "-q")[0] == 1

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(AGENTS.replace("MARKER", "never"))
    assert invoke("resume", "r4", "--store", store, "-q")[0] == 1, "the recorded agents file still fails b"
    code, output = invoke("resume", "r4", "--agents", str(fixed), "--store", store, "-q")
    assert code == 0, output

"""The run-store CLI: run --run-id/--store/--resume, resume, runs [list|delete|prune], results, the store's place."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_abstractions.redaction import REDACTED
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
    code, output = invoke("run", str(project), "--resume", "--store", store, "--results", str(results_file))
    assert code == 0, output
    assert "run r1 resumed: 4 tasks, 2 kept from before, 2 to run" in output
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
    assert code == 2 and "'xml' is not one of 'json', 'jsonl', 'md'" in output


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


def runs_listed(store: str) -> list[str]:
    code, output = invoke("runs", "--store", store)
    assert code == 0, output
    return [line.split()[0] for line in output.splitlines()[2:]]


def store_bytes(store: str) -> int:
    """The size of the store's file and its write-ahead log."""
    return sum(path.stat().st_size for path in (Path(store), Path(store + "-wal")) if path.exists())


def test_runs_lists_deletes_and_prunes(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT.replace("MARK", "ok").replace('"delta"', f'"{"delta " * 20_000}"'))
    store = str(tmp_path / "runs.db")
    for run_id in ("r1", "r2", "r3", "r4", "r5"):
        assert invoke("run", str(project), "--run-id", run_id, "--store", store, "-q")[0] == 0
    assert runs_listed(store) == ["r5", "r4", "r3", "r2", "r1"]
    code, output = invoke("runs", "list", "--store", store, "--limit", "2", "--project", "cli-store")
    assert code == 0 and "r5" in output and "r4" in output and "r3" not in output
    code, output = invoke("runs", "--store", store, "--project", "other")
    assert code == 0 and f"no runs of project 'other' in {store}" in output

    size = store_bytes(store)
    code, output = invoke("runs", "delete", "r1", "nope", "--store", store)
    assert code == 2 and "no run 'nope'" in output and runs_listed(store)[-1] == "r1"  # nothing deleted
    code, output = invoke("runs", "delete", "r1", "r2", "--store", store)
    assert code == 0 and output == "deleted run r1\ndeleted run r2\n"
    assert runs_listed(store) == ["r5", "r4", "r3"] and store_bytes(store) < size  # vacuumed
    code, output = invoke("results", "r1", "--store", store)
    assert code == 2 and "no run 'r1'" in output

    with sqlite3.connect(store) as connection:  # r3 and r4 started long ago
        connection.execute("UPDATE runs SET started_at = '2020-01-01T00:00:00+00:00' WHERE run_id IN ('r3', 'r4')")
    code, output = invoke("runs", "prune", "--keep", "2", "--older-than", "30", "--store", store)
    assert code == 0 and output == f"deleted 1 run from {store}\n"
    assert runs_listed(store) == ["r5", "r4"]  # old, but among the newest 2
    code, output = invoke("runs", "prune", "--older-than", "30", "--store", store)
    assert (code, runs_listed(store)) == (0, ["r5"])
    code, output = invoke("runs", "--store", store, "prune", "--keep", "0")  # the group's --store counts
    assert code == 0 and output == f"deleted 1 run from {store}\n"
    code, output = invoke("runs", "--store", store)
    assert code == 0 and f"no runs in {store}" in output
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT COUNT(*) FROM results").fetchone() == (0,)

    code, output = invoke("runs", "prune", "--store", store)
    assert code == 2 and "give --keep N, --older-than DAYS, or both" in output


def test_the_store_lives_beside_the_project_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    project = tmp_path / "sub" / "p.yaml"
    project.write_text(PROJECT.replace("MARK", "ok"))
    assert invoke("run", "sub/p.yaml", "--run-id", "beside", "-q")[0] == 0
    beside = tmp_path / "sub" / ".orchestrate" / "runs.db"
    assert beside.exists() and not (tmp_path / ".orchestrate").exists()

    here = tmp_path / ".orchestrate" / "runs.db"  # commands without a file read ./.orchestrate/runs.db
    for command in (["runs"], ["runs", "list"], ["runs", "prune", "--keep", "1"]):
        code, output = invoke(*command)
        assert code == 0 and str(here) in output, command
    for command in (["watch"], ["show", "beside", "a"], ["results", "beside"], ["resume", "beside"]):
        code, output = invoke(*command)
        assert code == 2 and f"no run store at {here}" in output, command
    code, output = invoke("show", "beside", "a", "--store", str(beside))
    assert code == 0 and "status:         success" in output

    monkeypatch.setenv("ORCHESTRATE_STORE", str(tmp_path / "env.db"))  # the variable wins for every command
    assert invoke("run", "sub/p.yaml", "--run-id", "env", "-q")[0] == 0
    assert runs_listed(str(tmp_path / "env.db")) == ["env"]
    assert invoke("watch")[0] == 0 and invoke("results", "env")[0] == 0


SECRET_KEY = "sk-proj-SHOWKEY0123456789abcdef"


def test_show_reads_stores_from_before_prompts_were_kept_and_redacts_prompts(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    result = '{"task_id": "a", "status": "success", "output": "alpha", "attempts": 1}'
    with closing(sqlite3.connect(path)) as connection, connection:  # the schema before results kept requests
        connection.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, project_hash TEXT NOT NULL,"
            " file TEXT, inputs TEXT NOT NULL, task_ids TEXT NOT NULL, status TEXT NOT NULL,"
            " started_at TEXT NOT NULL, finished_at TEXT, sessions INTEGER NOT NULL DEFAULT 1, agents_file TEXT)"
        )
        connection.execute(
            "CREATE TABLE results (run_id TEXT NOT NULL, task_id TEXT NOT NULL, status TEXT NOT NULL,"
            " fingerprint TEXT, output_format TEXT NOT NULL, result TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT INTO runs VALUES ('old', 'p', 'h', NULL, '{}', '[\"a\"]', 'success',"
            " '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:01+00:00', 1, NULL)"
        )
        connection.execute("INSERT INTO results VALUES ('old', 'a', 'success', NULL, 'text', ?)", (result,))
    code, output = invoke("show", "old", "a", "--store", str(path))
    assert code == 0 and "--- prompt ---\n(not recorded)\n\n--- output ---\nalpha\n" in output

    project = tmp_path / "p.yaml"
    project.write_text(f"tasks:\n  - id: a\n    description: 'use {SECRET_KEY}'\n    metadata: {{key: {SECRET_KEY}}}\n")
    assert invoke("run", str(project), "--run-id", "new", "--store", str(path), "-q")[0] == 0
    code, output = invoke("show", "new", "a", "--store", str(path))
    assert code == 0 and SECRET_KEY not in output
    assert f"--- prompt ---\nuse {REDACTED}\n" in output and f'metadata:       {{"key": "{REDACTED}"}}' in output
    assert SECRET_KEY.encode() not in path.read_bytes()

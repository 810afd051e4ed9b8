"""Watching and inspecting runs: run references, `watch`, `show` and the Markdown export."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path
from typing import IO

import anyio
import pytest
from typer.testing import CliRunner

from orchestration import ExecutionResult, ExecutionStatus
from orchestration.cli.app import app
from orchestration.models import ErrorInfo
from orchestration.store import RunStatus, RunStore
from tests.fakes.agents import agent_yaml
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer

__all__ = ["fake_server"]

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

PROJECT = """\
name: inspect
agents:
  sim: {type: offline}
  picky: {type: offline, fail_if_contains: boom}
defaults: {agent: sim, retries: 0}
tasks:
  - id: a
    description: "alpha"
    system_prompt: "You are terse."
    metadata: {owner: docs}
  - {id: b, description: "MARK {{ tasks.a.output }}", depends_on: [a], agent: picky}
  - id: j
    description: '{"k": [1, 2]}'
    output_format: json
"""


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store holding run `20260101-aaa-1` (failed: b) and, newer, `20260101-abc-2` (all succeeded)."""
    project = tmp_path / "p.yaml"
    path = str(tmp_path / "runs.db")
    project.write_text(PROJECT.replace("MARK", "boom"))
    assert invoke("run", str(project), "--run-id", "20260101-aaa-1", "--store", path, "-q")[0] == 1
    project.write_text(PROJECT.replace("MARK", "fine"))
    assert invoke("run", str(project), "--run-id", "20260101-abc-2", "--store", path, "-q")[0] == 0
    return path


def test_latest_and_unique_prefixes_name_runs_in_every_command(store: str) -> None:
    code, output = invoke("results", "latest", "--store", store)
    assert code == 0 and json.loads(output)["run_id"] == "20260101-abc-2"
    code, output = invoke("results", "20260101-aa", "--store", store, "-f", "jsonl")
    assert code == 0 and json.loads(output.splitlines()[0])["run_id"] == "20260101-aaa-1"
    code, output = invoke("show", "20260101-ab", "a", "--store", store)
    assert code == 0 and "run:            20260101-abc-2" in output
    code, output = invoke("watch", "20260101-aa", "--store", store)
    assert code == 1 and "run 20260101-aaa-1 (inspect): failed" in output

    code, output = invoke("results", "2026", "--store", store)
    assert code == 2 and "Traceback" not in output
    assert f"run '2026' is ambiguous in {store}: it matches 20260101-abc-2, 20260101-aaa-1" in output
    for command in (["results", "nope"], ["show", "nope", "a"], ["watch", "nope"], ["resume", "nope"]):
        code, output = invoke(*command, "--store", store)
        assert code == 2 and f"no run 'nope' in {store}" in output, command

    code, output = invoke("resume", "20260101-aa", "--store", store, "-q")  # b reruns with the fixed file
    assert (code, output) == (0, "run 20260101-aaa-1\n")


def test_references_in_a_missing_or_empty_store(tmp_path: Path) -> None:
    path = str(tmp_path / "runs.db")
    for command in (["watch"], ["results", "latest"], ["show", "latest", "a"], ["resume", "latest"]):
        code, output = invoke(*command, "--store", path)
        assert code == 2 and f"no run store at {path}" in output and "Traceback" not in output, command
    project = tmp_path / "p.yaml"
    project.write_text(PROJECT)
    assert invoke("run", str(project), "--store", path, "-q")[0] == 0
    assert invoke("runs", "delete", "latest", "--store", path)[0] == 0
    code, output = invoke("watch", "--store", path)
    assert code == 2 and f"no runs in {path}" in output


def test_show_prints_one_task_whole(store: str) -> None:
    code, output = invoke("show", "latest", "a", "--store", store)
    assert code == 0, output
    for line in (
        "status:         success",
        "agent:          sim",
        "provider:       offline",
        "attempts:       1",
        "  attempt 1:    sim: answered in ",
        "usage:          4 in, 1 out tokens",
        "cost:           -",
        "finish reason:  stop",
        'metadata:       {"owner": "docs"}',
    ):
        assert line in output, line
    assert "--- system prompt ---\nYou are terse.\n\n--- prompt ---\nalpha\n\n--- output ---\nalpha\n" in output

    code, output = invoke("show", "latest", "j", "--store", store)
    assert code == 0 and '--- output (json) ---\n{\n  "k": [\n    1,\n    2\n  ]\n}\n' in output

    code, output = invoke("show", "20260101-aaa-1", "b", "--store", store)
    assert code == 0, output
    assert "status:         failed" in output and "error:          invalid_request: offline agent refuses" in output
    assert "  attempt 1:    picky: invalid_request in " in output
    assert "--- prompt ---\nboom alpha\n\n--- output ---\n(none)" in output

    code, output = invoke("show", "latest", "ghost", "--store", store)
    assert code == 2 and "run '20260101-abc-2' has no task 'ghost'; its tasks: a, b, j" in output


def test_show_of_a_task_without_a_result_yet(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    begin = RunStore(path).begin_run
    anyio.run(partial(begin, "live", project="p", project_hash="h", file=None, inputs={}, task_ids=["a"]))
    code, output = invoke("show", "live", "a", "--store", str(path))
    assert code == 2 and "task 'a' of run 'live' has no result yet" in output


def test_markdown_export_is_whole_unless_cut(tmp_path: Path) -> None:
    long = "word " * 100 + "END"
    project = tmp_path / "p.yaml"
    project.write_text(
        f"tasks:\n  - {{id: long, description: '{long}'}}\n  - {{id: lines, description: \"one|two\\nthree\"}}\n"
    )
    store = str(tmp_path / "runs.db")
    assert invoke("run", str(project), "--store", store, "-q")[0] == 0
    code, markdown = invoke("results", "latest", "--store", store, "-f", "md")
    assert code == 0 and f"| {long.strip()} |" in markdown and "| one\\|two<br>three |" in markdown
    code, markdown = invoke("results", "latest", "--store", store, "-f", "md", "--max-chars", "9")
    assert code == 0 and "| word word... |" in markdown and "END" not in markdown
    code, output = invoke("results", "latest", "--store", store, "-f", "json", "--max-chars", "9")
    assert code == 2 and "--max-chars applies to --format md only" in output


def test_watch_of_a_finished_run_prints_its_summary_at_once(store: str) -> None:
    result = runner.invoke(app, ["watch", "--store", store])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == "run 20260101-abc-2 (inspect): success"
    assert lines[1].startswith("3 tasks in ") and lines[1].endswith("s: 3 success")
    code, output = invoke("watch", "20260101-aaa-1", "--store", store)
    assert code == 1 and "x b: invalid_request" in output


class Lines:
    """The lines a process writes to a pipe, read by a thread: the test waits for a line, never sleeps."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, *fragments: str) -> str:
        """The first line holding every fragment (fails after 30 s or at the end of the stream)."""
        while True:
            line = self.lines.get(timeout=30)
            self.seen.append(line)
            assert line, f"stream ended before {fragments}: {self.seen}"
            if all(fragment in line for fragment in fragments):
                return line


def orchestrate(processes: list[subprocess.Popen[str]], *args: str) -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration", *args], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    processes.append(process)
    assert process.stderr is not None
    return process, Lines(process.stderr)


def test_watch_follows_a_run_written_by_someone_else(tmp_path: Path, processes: list[subprocess.Popen[str]]) -> None:
    """The test writes the store itself, one result at a time, and waits for watch to show each one."""
    store = RunStore(tmp_path / "runs.db")

    def record(task_id: str, status: ExecutionStatus, error: str | None = None) -> None:
        result = ExecutionResult(
            task_id=task_id,
            status=status,
            output=None if error else task_id.upper(),
            error=ErrorInfo(type="timeout", message=error) if error else None,
            agent="sim",
            duration_s=0.5,
        )
        anyio.run(store.record, "live", result)

    begin = partial(
        store.begin_run, "live", project="p", project_hash="h", file=None, inputs={}, task_ids=["a", "b", "c"]
    )
    anyio.run(begin)
    record("a", ExecutionStatus.SUCCESS)
    watch, lines = orchestrate(processes, "watch", "--store", str(store.path), "--interval", "0.02")
    assert lines.wait_for("watching run live (p): 3 tasks")
    assert lines.wait_for("[1/3] success", " a 0.50s")
    record("b", ExecutionStatus.FAILED, "too slow")
    assert lines.wait_for("[2/3] failed", " b 0.50s timeout: too slow")
    record("b", ExecutionStatus.SUCCESS)  # b run again (a resume): it replaces the failure
    assert lines.wait_for("[2/3] success", " b 0.50s")
    record("c", ExecutionStatus.SUCCESS)
    anyio.run(store.end_run, "live", RunStatus.SUCCESS)
    store.close()
    assert lines.wait_for("[3/3] success", " c 0.50s")
    assert lines.wait_for("run live (p): success")
    assert lines.wait_for("3 tasks in ", ": 3 success")
    assert watch.wait(timeout=30) == 0


def test_watch_follows_a_run_of_another_process_until_it_ends(
    tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(
        "agents:\n  slow: {type: offline, latency_ms: 60000}\n"
        "tasks:\n  - {id: fast, description: quick}\n  - {id: stuck, description: wait, agent: slow}\n"
    )
    store = str(tmp_path / "runs.db")
    run, run_lines = orchestrate(processes, "run", str(project), "--store", store, "--run-id", "other", "-q")
    assert run_lines.wait_for("run other")  # the run is in the store
    watch, lines = orchestrate(processes, "watch", "oth", "--store", store, "--interval", "0.02")
    assert lines.wait_for("[1/2] success", " fast ")
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=30) == 130
    assert lines.wait_for("[2/2] cancelled", " stuck ")
    assert lines.wait_for("run other (project): cancelled")
    assert watch.wait(timeout=30) == 1


def test_watch_shows_the_batch_jobs_of_a_run_of_another_process(
    tmp_path: Path, processes: list[subprocess.Popen[str]], fake_server: FakeProviderServer
) -> None:
    """Its job lines come from the store's ``batch_status`` events: in progress while the provider holds the job,
    then ended, with the instances' results."""
    fake_server.batches.hold = True
    agent = agent_yaml("gpt", fake_server)
    project = tmp_path / "p.yaml"
    project.write_text(
        f"agents:\n  bulk: {{{agent}, batch: true}}\n"
        "defaults: {agent: bulk, batch: {window_s: 0.1, poll_s: 0.05}}\n"
        "tasks:\n  - {id: doc, for_each: [a, b, c], description: '{{ item }}'}\n"
    )
    store = str(tmp_path / "runs.db")
    run, run_lines = orchestrate(processes, "run", str(project), "--store", store, "--run-id", "bw", "-q")
    assert run_lines.wait_for("run bw")  # the run is in the store
    watch, lines = orchestrate(processes, "watch", "bw", "--store", store, "--interval", "0.02")
    assert lines.wait_for("batch job batch_", "(bulk, 3 tasks): in_progress")
    fake_server.batches.release()
    assert lines.wait_for("batch job batch_", "(bulk, 3 tasks): ended", "3 succeeded")
    assert lines.wait_for("run bw (project): success")
    assert watch.wait(timeout=30) == 0 and run.wait(timeout=30) == 0
    assert len(fake_server.batches.jobs) == 1

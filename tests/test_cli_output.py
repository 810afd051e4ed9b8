"""What `orchestrate run` writes when no terminal reads it: plain whole lines, each failure once, a closed pipe
that never stops the run, honest counts after a resume; and `--version`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from orchestration.cli.progress import print_summary
from orchestration.models import AttemptRecord, ExecutionResult, ExecutionStatus

REPO = Path(__file__).resolve().parents[1]
LONG = "x" * 300


def orchestrate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATE_STORE": str(cwd / "runs.db")}
    return subprocess.run(
        [sys.executable, "-m", "orchestration", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def project(tmp_path: Path, failing_prompt: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        f"""\
name: output
agents:
  picky: {{type: offline, fail_if_contains: "{LONG}"}}
defaults: {{agent: picky}}
tasks:
  - id: a
    description: "fine"
  - id: b
    description: "{failing_prompt}"
  - id: c
    description: "after {{{{ tasks.a.output }}}}"
    depends_on: [a]
"""
    )
    return path


def test_version() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestration", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "orchestrate 0.1.0"


def test_a_failure_is_printed_once_and_whole(tmp_path: Path) -> None:
    done = orchestrate("run", str(project(tmp_path, f"please {LONG}")), cwd=tmp_path)
    assert done.returncode == 1
    error_lines = [line for line in done.stderr.splitlines() if "refuses prompts" in line]
    assert len(error_lines) == 1, done.stderr  # not again in a log line or in the summary
    assert LONG in error_lines[0]  # never wrapped at 80 columns
    assert "failed (errors above): b" in done.stderr


def test_a_resume_counts_what_it_runs(tmp_path: Path) -> None:
    path = project(tmp_path, f"please {LONG}")
    first = orchestrate("run", str(path), cwd=tmp_path)
    assert first.returncode == 1
    project(tmp_path, "now fine")  # the failing prompt changed: b reruns, a and c are kept
    second = orchestrate("run", str(path), "--resume", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resumed: 3 tasks, 2 kept from before, 1 to run" in second.stderr
    assert "[1/1] success" in second.stderr
    assert "1 tasks in" in second.stderr and "whole run: 3 tasks: 3 success" in second.stderr


def test_a_closed_output_pipe_never_stops_the_run(tmp_path: Path) -> None:
    tasks = "\n".join(
        f'  - {{id: t{i}, description: "step {i}", depends_on: [{f"t{i - 1}" if i else ""}]}}' for i in range(20)
    )
    path = tmp_path / "chain.yaml"
    path.write_text(
        f"name: chain\nagents:\n  slow: {{type: offline, latency_ms: 20}}\ndefaults: {{agent: slow}}\ntasks:\n{tasks}\n"
    )
    results = tmp_path / "results.json"
    env = {**os.environ, "ORCHESTRATE_STORE": str(tmp_path / "runs.db")}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration", "run", str(path), "--results", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert process.stderr is not None and process.stdout is not None
    first = process.stderr.readline()
    assert "started: 20 tasks" in first
    process.stderr.close()  # the reader goes away (`| head -1`): every later line meets a closed pipe
    process.stdout.close()
    assert process.wait(timeout=120) == 0
    document = json.loads(results.read_text())
    assert document["status"] == "success" and len(document["results"]) == 20


def test_the_summary_counts_every_attempt_as_a_call() -> None:
    attempts = [
        AttemptRecord(agent="main", error_type="rate_limited", duration_s=0.1),
        AttemptRecord(agent="main", error_type="circuit_open", duration_s=0.0),
        AttemptRecord(agent="spare", error_type=None, duration_s=0.1),
    ]
    result = ExecutionResult(
        task_id="t", status=ExecutionStatus.SUCCESS, agent="spare", attempt_log=attempts, usage={"input_tokens": 3}
    )
    out = io.StringIO()
    print_summary(Console(file=out, width=200), {"t": result}, 1.0)
    rows = {line.split()[0]: line.split() for line in out.getvalue().splitlines() if line.split()}
    assert rows["main"][2] == "1" and rows["spare"][2] == "1" and rows["total"][2] == "2"


def test_an_endpoint_being_paced_is_shown_once_per_reason_without_a_terminal() -> None:
    from llm_abstractions.wrappers import PaceReason, PacingStatus
    from orchestration.cli.progress import ProgressView
    from orchestration.events import EventKind, RunEvent

    out = io.StringIO()
    view = ProgressView(Console(file=out, force_terminal=False), total=3)

    def paced(requests: float, reason: PaceReason) -> RunEvent:
        pace = PacingStatus(requests, None, reason)
        return RunEvent(EventKind.ENDPOINT_PACED, "r1", endpoint="gpt api.openai.com/v1", pace=pace)

    with view:
        view(paced(2940.0, PaceReason.HEADERS))
        view(paced(2700.0, PaceReason.HEADERS))  # the same reason: the rate changes quietly
        view(paced(540.0, PaceReason.RATE_LIMITED))
    assert out.getvalue().splitlines() == [
        "gpt api.openai.com/v1 paced at 2,940 requests/min (following the provider's rate-limit headers)",
        "gpt api.openai.com/v1 paced at 540 requests/min (following 429 answers)",
    ]
    assert view.paced["gpt api.openai.com/v1"].requests_per_minute == 540.0

"""A task waiting for review survives its process: ``kill -9``, decide with ``orchestrate review`` while nothing
runs, ``orchestrate resume`` finishes, and the model behind the gated task was called exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration import ExecutionStatus
from orchestration.models import utc_now
from orchestration.store import RunStatus, RunStore
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer
from tests.reliability.fault_plan import last_user_text
from tests.reliability.processes import REPO, kill_9, orchestrate, wait_until_the_lease_expired
from tests.reliability.projects import gpt_project

__all__ = ["fake_server"]


def project_file(tmp_path: Path, server: FakeProviderServer, review: str = "require_human") -> Path:
    return gpt_project(
        tmp_path / "gated.yaml",
        server,
        "name: gated",
        "defaults: {agent: llm}",
        "tasks:",
        f"  - {{id: t, description: 'gated task', review: {review}}}",
        "  - {id: free, description: 'free task'}",
        "  - {id: u, description: 'after {{ tasks.t.output }}', depends_on: [t]}",
    )


def wait_for_open_gate(store: RunStore, run_id: str, process: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if store.open_gates(run_id):
            return
        assert process.poll() is None, "the run ended before its gate opened"
        time.sleep(0.05)
    raise AssertionError("no gate opened")


def test_kill_while_waiting_then_decide_then_resume(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    project = project_file(tmp_path, fake_server)
    store = RunStore(tmp_path / "runs.db")
    process = orchestrate("run", str(project), "--run-id", "g", "--store", str(store.path))
    wait_for_open_gate(store, "g", process)
    kill_9(process)
    wait_until_the_lease_expired(store, "g")

    decided = subprocess.run(
        [sys.executable, "-m", "orchestration", "review", "g", "t", "approve", "--store", str(store.path)],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert decided.returncode == 0, decided.stderr
    resumed = orchestrate("resume", "g", "--store", str(store.path))
    assert resumed.wait(timeout=60) == 0

    assert store.get_run("g").status is RunStatus.SUCCESS
    results = store.load_results("g")
    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values())
    assert results["t"].review is not None and results["t"].review.decision == "approve"
    gated = [r for r in fake_server.requests if last_user_text(r) == "gated task"]
    assert len(gated) == 1, f"the gated task's model was called {len(gated)} times"
    assert results["u"].output is not None and results["t"].output is not None


def test_no_wait_exits_3_and_resume_finishes_once_decided(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    project = project_file(tmp_path, fake_server)
    store = RunStore(tmp_path / "runs.db")
    out = tmp_path / "results.json"
    command = ["run", str(project), "--run-id", "g", "--store", str(store.path), "--no-wait", "--results", str(out)]
    assert orchestrate(*command).wait(timeout=60) == 3
    assert store.get_run("g").status is RunStatus.WAITING
    assert json.loads(out.read_text())["status"] == "waiting"
    assert [g.task_id for g in store.open_gates("g")] == ["t"]
    assert orchestrate("resume", "g", "--store", str(store.path), "--no-wait").wait(timeout=60) == 3
    decided = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestration",
            "review",
            "g",
            "t",
            "edit",
            "--output",
            "edited",
            "--store",
            str(store.path),
        ],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert decided.returncode == 0, decided.stderr
    assert orchestrate("resume", "g", "--store", str(store.path), "--no-wait").wait(timeout=60) == 0
    results = store.load_results("g")
    assert results["t"].output == "edited" and results["u"].status is ExecutionStatus.SUCCESS
    assert len([r for r in fake_server.requests if last_user_text(r) == "gated task"]) == 1
    assert [last_user_text(r) for r in fake_server.requests].count("after edited") == 1


@pytest.mark.parametrize(("action", "expired_by"), [("fail", "resume"), ("approve", "reviews")])
def test_a_timeout_that_expires_while_no_process_runs(
    fake_server: FakeProviderServer, tmp_path: Path, action: str, expired_by: str
) -> None:
    review = f"{{policy: require_human, timeout_s: 1, on_timeout: {action}}}"
    project = project_file(tmp_path, fake_server, review)
    store = RunStore(tmp_path / "runs.db")
    assert orchestrate("run", str(project), "--run-id", "g", "--store", str(store.path), "--no-wait").wait(60) == 3
    (gate,) = store.open_gates("g")
    assert gate.expires_at is not None
    while utc_now() < gate.expires_at:  # the store's clock passes the deadline with no process running
        time.sleep(0.05)
    if expired_by == "reviews":  # anyone listing the gates records the timeouts that are due
        listed = subprocess.run(
            [sys.executable, "-m", "orchestration", "reviews", "g", "--json", "--store", str(store.path)],
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
        (decided,) = store.gates_of("g", "t")
        assert (decided.decision, decided.actor) == (action, "timeout")
    assert orchestrate("resume", "g", "--store", str(store.path)).wait(timeout=60) == (0 if action == "approve" else 1)
    t = store.load_results("g")["t"]
    assert t.review is not None and t.review.actor == "timeout" and t.review.decision == action
    if action == "fail":
        assert t.status is ExecutionStatus.FAILED and t.error is not None and t.error.type == "review_timeout"
        assert store.load_results("g")["u"].status is ExecutionStatus.SKIPPED
    else:
        assert t.status is ExecutionStatus.SUCCESS
    assert len([r for r in fake_server.requests if last_user_text(r) == "gated task"]) == 1

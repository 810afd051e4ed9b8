"""Crash safety: ``kill -9`` a real ``orchestrate`` process at random points, resume, finish.

The project calls the fake provider server through the real OpenAI SDK. After each
kill the store must open cleanly; a task recorded as succeeded must never be requested
again; the final results must be complete. Calls in flight at a kill may be repeated. The killed
process's lease of the run is short (``ORCHESTRATE_LEASE_S``): each resume starts once it expired.
"""

from __future__ import annotations

import random
from pathlib import Path

from orchestration import ExecutionStatus
from orchestration.store import RunStatus, RunStore
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer
from tests.reliability.fault_plan import FaultPlan, last_user_text
from tests.reliability.processes import kill_9_repeatedly, orchestrate
from tests.reliability.projects import RETRYING, gpt_project

__all__ = ["fake_server"]

TASKS = 60
KILLS = 3


def task_key(text: str) -> str:
    return text.split(" after ", 1)[0]


def project_file(tmp_path: Path, server: FakeProviderServer) -> Path:
    lines = ["name: crashy", "defaults: {agent: llm, max_concurrency: 6}", "tasks:"]
    for i in range(TASKS):
        if i % 4:
            prompt = f"task {i} after {{{{ tasks.t{i - 1}.output }}}}"
            lines.append(f"  - {{id: t{i}, description: '{prompt}', depends_on: [t{i - 1}]}}")
        else:
            lines.append(f"  - {{id: t{i}, description: 'task {i}'}}")
    return gpt_project(tmp_path / "crashy.yaml", server, *lines, agent=RETRYING)


def test_kill_9_at_random_points_then_resume(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    plan = FaultPlan(seed=11, fault_rate=0.1, hang_s=1.0, reply_delay_s=0.01, key=task_key)
    fake_server.handler = plan
    project = project_file(tmp_path, fake_server)
    store = RunStore(tmp_path / "runs.db")
    snapshots = kill_9_repeatedly(
        fake_server, store, project, "crash", kills=KILLS, rng=random.Random(5), requests_between=(5, 30), timeout_s=60
    )

    final = orchestrate("resume", "crash", "--store", str(store.path))
    assert final.wait(timeout=120) == 0
    record = store.get_run("crash")
    assert record.status is RunStatus.SUCCESS and record.sessions == KILLS + 1
    results = store.load_results("crash")
    assert len(results) == TASKS and all(r.status is ExecutionStatus.SUCCESS for r in results.values())
    assert results["t3"].output == "done: task 3"
    assert any(len(succeeded) for _, succeeded in snapshots)  # kills landed mid-run, after some work
    assert any(len(succeeded) < TASKS for _, succeeded in snapshots)

    for seen, succeeded in snapshots:
        later = {f"t{task_key(last_user_text(r)).split()[1]}" for r in fake_server.requests[seen:]}
        assert not later & succeeded, f"tasks recorded as succeeded were requested again: {later & succeeded}"
    assert set(plan.successes) == {f"task {i}" for i in range(TASKS)}

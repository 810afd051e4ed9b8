"""Crash safety: ``kill -9`` a real ``orchestrate`` process at random points, resume, finish.

The project calls the fake provider server through the real OpenAI SDK. After each
kill the store must open cleanly; a task recorded as succeeded must never be requested
again; the final results must be complete. Calls in flight at a kill may be repeated. The killed
process's lease of the run is short (``ORCHESTRATE_LEASE_S``): each resume starts once it expired.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from orchestration import ExecutionStatus
from orchestration.models import utc_now
from orchestration.store import LEASE_ENV, RunStatus, RunStore
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer
from tests.reliability.fault_plan import FaultPlan, last_user_text

__all__ = ["fake_server"]

REPO = Path(__file__).resolve().parents[2]
TASKS = 60
KILLS = 3


def task_key(text: str) -> str:
    return text.split(" after ", 1)[0]


def project_file(tmp_path: Path, server: FakeProviderServer) -> Path:
    lines = [
        "name: crashy",
        "agents:",
        "  llm:",
        "    type: gpt",
        "    model: test-model",
        "    api_key: test-key-123456",
        f"    base_url: {server.openai_base_url}",
        "    timeout_s: 0.5",
        "    retry: {retries: 8, initial_backoff_s: 0.01, max_backoff_s: 0.05}",
        "defaults: {agent: llm, max_concurrency: 6}",
        "tasks:",
    ]
    for i in range(TASKS):
        if i % 4:
            prompt = f"task {i} after {{{{ tasks.t{i - 1}.output }}}}"
            lines.append(f"  - {{id: t{i}, description: '{prompt}', depends_on: [t{i - 1}]}}")
        else:
            lines.append(f"  - {{id: t{i}, description: 'task {i}'}}")
    path = tmp_path / "crashy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def orchestrate(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration", *args, "-q"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, LEASE_ENV: "0.5"},
    )


def wait_until_the_lease_expired(store: RunStore, run_id: str) -> None:
    """A resume is refused while the killed owner's lease lasts: wait (at most 10 s) until it expired."""
    for _ in range(1000):
        lease = store.lease(run_id)
        if lease is None or lease.expired(utc_now()):
            return
        time.sleep(0.01)
    raise AssertionError(f"the lease of run '{run_id}' did not expire: {store.lease(run_id)}")


def test_kill_9_at_random_points_then_resume(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    plan = FaultPlan(seed=11, fault_rate=0.1, hang_s=1.0, reply_delay_s=0.01, key=task_key)
    fake_server.handler = plan
    project = project_file(tmp_path, fake_server)
    store = RunStore(tmp_path / "runs.db")
    rng = random.Random(5)
    snapshots: list[tuple[int, set[str]]] = []
    command = ["run", str(project), "--run-id", "crash", "--store", str(store.path)]
    for _ in range(KILLS):
        target = len(fake_server.requests) + rng.randint(5, 30)
        process = orchestrate(*command)
        for _ in range(600):  # at most a minute: until the kill point, or the process ended on its own
            if process.poll() is not None:
                break
            with contextlib.suppress(TimeoutError):
                fake_server.wait_for_requests(target, timeout=0.1)
                break
        process.kill()
        process.wait(timeout=30)
        stored = store.load_run("crash")  # a consistent store after kill -9
        succeeded = {t for t, entry in stored.tasks.items() if entry.result.succeeded}
        snapshots.append((len(fake_server.requests), succeeded))
        command = ["resume", "crash", "--store", str(store.path)]
        wait_until_the_lease_expired(store, "crash")

    final = orchestrate(*command)
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

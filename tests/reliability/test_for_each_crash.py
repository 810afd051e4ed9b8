"""Crash safety of a mapped task: ``kill -9`` a real ``orchestrate`` process in the middle of a 1,000-item map.

The instances call the fake provider server through the real OpenAI SDK. After each kill the store opens
cleanly; an instance recorded as succeeded is never requested again (checked at the server); the resumed run
finishes every item and the task that reads them all.
"""

from __future__ import annotations

import json
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

ITEMS = 1000
KILLS = 2


def item_key(text: str) -> str:
    """``ticket k17: ...`` -> ``k17`` (the report's prompt is its own key)."""
    return text.split(":", 1)[0].removeprefix("ticket ")


def project_file(tmp_path: Path, server: FakeProviderServer) -> Path:
    with (tmp_path / "tickets.jsonl").open("w") as tickets:
        for i in range(ITEMS):
            tickets.write(json.dumps({"id": f"k{i}", "text": f"ticket text {i}"}) + "\n")
    return gpt_project(
        tmp_path / "mapped.yaml",
        server,
        "name: mapped-crash",
        "inputs: {tickets: tickets.jsonl}",
        "defaults: {agent: llm, max_concurrency: 8, cache: false}",
        "tasks:",
        "  - id: classify",
        "    for_each: '{{ inputs.tickets }}'",
        "    key: '{{ item.id }}'",
        "    description: 'ticket {{ item.id }}: {{ item.text }}'",
        "  - id: report",
        "    depends_on: [classify]",
        "    description: 'report: {{ tasks.classify.outputs | length }} classified'",
        agent=RETRYING,
    )


def test_kill_9_in_the_middle_of_a_map_then_resume(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    plan = FaultPlan(seed=3, fault_rate=0.02, hang_s=1.0, reply_delay_s=0.002, key=item_key)
    fake_server.handler = plan
    project = project_file(tmp_path, fake_server)
    store = RunStore(tmp_path / "runs.db")
    rng = random.Random(7)
    snapshots = kill_9_repeatedly(
        fake_server, store, project, "map", kills=KILLS, rng=rng, requests_between=(150, 350), timeout_s=120
    )

    final = orchestrate("resume", "map", "--store", str(store.path))
    assert final.wait(timeout=180) == 0
    record = store.get_run("map")
    assert record.status is RunStatus.SUCCESS and record.sessions == KILLS + 1
    results = store.load_results("map")
    instances = [task_id for task_id in results if task_id.startswith("classify[")]
    assert instances == [f"classify[k{i}]" for i in range(ITEMS)]  # in item order
    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values())
    assert results["classify[k17]"].output == "done: k17"
    reports = [last_user_text(r) for r in fake_server.requests if last_user_text(r).startswith("report")]
    assert reports and set(reports) == {f"report: {ITEMS} classified"}  # it read every instance's output
    assert results["classify"].items == instances

    killed_mid_map = [succeeded for _, succeeded in snapshots if 0 < len(succeeded) < ITEMS]
    assert killed_mid_map, [len(s) for _, s in snapshots]
    for seen, succeeded in snapshots:
        later = {f"classify[{item_key(last_user_text(r))}]" for r in fake_server.requests[seen:]}
        assert not later & succeeded, f"instances recorded as succeeded were requested again: {later & succeeded}"
    assert set(plan.successes) == {f"k{i}" for i in range(ITEMS)} | {"report"}

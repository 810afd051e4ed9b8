"""The scheduler runs each task exactly when its dependencies allow, within the caps."""

from __future__ import annotations

import random

import anyio
import pytest

from orchestration import ExecutionStatus
from tests.conftest import Probe, probe_project


def random_dag(n: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    tasks: list[dict[str, object]] = []
    for i in range(n):
        parents = rng.sample(range(i), k=min(i, rng.randint(0, 3)))
        tasks.append({"id": f"t{i}", "depends_on": [f"t{p}" for p in parents]})
    return tasks


@pytest.mark.parametrize("cap", [1, 3, 8])
async def test_dependencies_first_and_cap_respected(probe: Probe, cap: int) -> None:
    tasks = random_dag(120, seed=cap)
    results = await probe_project(tasks, max_concurrency=cap).run()

    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values())
    position = {(kind, task): i for i, (kind, task) in enumerate(probe.log)}
    for task in tasks:
        for dep in task["depends_on"]:  # type: ignore[attr-defined]
            assert position[("end", dep)] < position[("start", task["id"])]
    assert 1 <= probe.max_running <= cap
    assert sorted(probe.calls) == sorted(str(t["id"]) for t in tasks)
    assert set(probe.calls.values()) == {1}


async def test_independent_branches_overlap(probe: Probe) -> None:
    gate_a, gate_b = probe.gate("a"), probe.gate("b")
    orchestrator = probe_project([{"id": "a"}, {"id": "b"}], max_concurrency=2)

    async def release_when_both_run() -> None:
        await probe.started["a"].wait()
        await probe.started["b"].wait()
        gate_a.set()
        gate_b.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(release_when_both_run)
            results = await orchestrator.run()
    assert probe.max_running == 2
    assert all(r.succeeded for r in results.values())


async def test_no_superstep_barrier(probe: Probe) -> None:
    """`b` (after fast `a`) must start while the unrelated slow sibling is still running."""
    slow_gate = probe.gate("slow")
    probe.gate("b").set()  # b runs straight through; started["b"] tells us when it began
    orchestrator = probe_project([{"id": "a"}, {"id": "slow"}, {"id": "b", "depends_on": ["a"]}], max_concurrency=4)

    async def release_slow_after_b_started() -> None:
        await probe.started["b"].wait()
        assert probe.running >= 1  # slow is still in flight
        slow_gate.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(release_slow_after_b_started)
            await orchestrator.run()
    log = probe.log
    assert log.index(("start", "b")) < log.index(("end", "slow"))


async def test_agent_max_concurrent_limit(probe: Probe) -> None:
    spec_tasks = [{"id": f"t{i}"} for i in range(12)]
    orchestrator = probe_project(spec_tasks, max_concurrency=8)
    orchestrator.spec.agents["p"] = {"type": "probe", "limits": {"max_concurrent": 2}}
    results = await orchestrator.run()
    assert all(r.succeeded for r in results.values())
    assert probe.max_running == 2


async def test_longest_remaining_path_starts_first(probe: Probe) -> None:
    """With one slot, a ready task heading a long chain beats a ready leaf (critical-path priority)."""
    tasks = [
        {"id": "leaf"},
        {"id": "head"},
        {"id": "mid", "depends_on": ["head"]},
        {"id": "tail", "depends_on": ["mid"]},
    ]
    await probe_project(tasks, max_concurrency=1).run()
    assert probe.order("start")[0] == "head"


async def test_started_at_is_when_slot_taken(probe: Probe) -> None:
    first = probe.gate("first")
    orchestrator = probe_project([{"id": "first"}, {"id": "second"}], max_concurrency=1)

    async def release() -> None:
        await probe.started["first"].wait()
        first.set()

    async with anyio.create_task_group() as group:
        group.start_soon(release)
        results = await orchestrator.run()
    one, two = results["first"], results["second"]
    assert one.started_at is not None and two.started_at is not None and one.completed_at is not None
    assert two.started_at >= one.completed_at  # ready at once, but it waited for the only slot
    assert probe.order("start") == ["first", "second"]

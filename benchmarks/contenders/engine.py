"""This engine through its public Python API: ``ProjectOrchestrator`` with ``AgentTask``s on offline agents.

Each workload agent is an ``offline`` agent replaying its tasks' latencies (``latency_by_prompt_ms``);
events and the run store stay off. Start and end times come from the results (``started_at``/``completed_at``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks.contenders import Trace
from benchmarks.workloads import Workload
from orchestration import AgentTask, ProjectDefaults, ProjectOrchestrator, ProjectSpec
from orchestration.events import EventCallback

__all__ = ["build", "execute"]


def build(workload: Workload, **options: Any) -> ProjectOrchestrator:
    """The workload as a validated project; ``options`` go to ``ProjectOrchestrator``."""
    agents: dict[str, dict[str, Any]] = {name: {"type": "offline"} for name in workload.agent_names}
    for node, latency in enumerate(workload.latency_s):
        if latency > 0:
            settings = agents[workload.agent_names[workload.agents[node]]]
            settings.setdefault("latency_by_prompt_ms", {})[f"t{node}"] = latency * 1000.0
    tasks = [
        AgentTask(
            id=f"t{node}",
            description=f"t{node}",
            agent=workload.agent_names[workload.agents[node]],
            depends_on=[f"t{p}" for p in parents],
        )
        for node, parents in enumerate(workload.parents)
    ]
    spec = ProjectSpec(agents=agents, tasks=tasks, defaults=ProjectDefaults(max_concurrency=workload.cap))
    orchestrator = ProjectOrchestrator(spec, **options)
    orchestrator.validate()
    return orchestrator


def execute(workload: Workload, on_event: EventCallback | None = None, **options: Any) -> Trace:
    """Build (timed as setup) and run the workload; ``on_event`` subscribes to the run's events."""
    start = time.perf_counter()
    orchestrator = build(workload, **options)
    if on_event is not None:
        orchestrator.on_event(on_event)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    results = asyncio.run(orchestrator.run())
    run = time.perf_counter() - start
    starts, ends = [], []
    for node in range(workload.size):
        result = results[f"t{node}"]
        if not result.succeeded or result.started_at is None or result.completed_at is None:
            raise RuntimeError(f"task t{node} did not succeed: {result.status} {result.error}")
        starts.append(result.started_at.timestamp())
        ends.append(result.completed_at.timestamp())
    return Trace(setup, run, starts, ends)

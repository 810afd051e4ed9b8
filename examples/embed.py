"""Embed the engine in your own async code: build a project in Python, watch events, read results.

Run: python examples/embed.py   (offline provider: no keys needed)
"""

from __future__ import annotations

import anyio

from orchestration import AgentTask, EventKind, ProjectOrchestrator, ProjectSpec, RunEvent


def show(event: RunEvent) -> None:
    if event.kind in (EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED) and event.result is not None:
        print(f"{event.kind.value:>15}  {event.task_id}: {event.result.output!r}")


async def main() -> None:
    spec = ProjectSpec(
        name="embedded",
        inputs={"city": "Lisbon"},
        agents={"sim": {"type": "offline", "latency_ms": [20, 80]}},
        defaults={"agent": "sim", "max_concurrency": 3},  # type: ignore[arg-type]
    )
    orchestrator = ProjectOrchestrator(spec)
    orchestrator.add_task(AgentTask(id="sights", description="Top sights in {{ inputs.city }}"))
    orchestrator.add_task(AgentTask(id="food", description="Where to eat in {{ inputs.city }}"))
    orchestrator.add_task(
        AgentTask(
            id="plan",
            description="A day plan from: {{ tasks.sights.output }} + {{ tasks.food.output }}",
            depends_on=["sights", "food"],
        )
    )
    orchestrator.on_event(show)
    results = await orchestrator.run()
    print("plan ->", results["plan"].output)


if __name__ == "__main__":
    anyio.run(main)

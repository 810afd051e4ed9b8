"""An API agent with ``remote: true``: its calls are made from a Ray actor, its budget and limits kept in the driver."""

from __future__ import annotations

from pathlib import Path

from orchestration import ProjectOrchestrator, ProjectSpec
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer
from tests.ray.conftest import Cluster

__all__ = ["fake_server"]


def spec(server: FakeProviderServer, tasks: int, budget_tokens: int) -> ProjectSpec:
    agent = {
        "type": "gpt",
        "model": "test-model",
        "api_key": "test-key-123456",
        "base_url": server.openai_base_url,
        "remote": True,
        "options": {"max_tokens": 5},
        "budget": {"max_tokens": budget_tokens},
    }
    return ProjectSpec.model_validate(
        {
            "name": "remote-api",
            "agents": {"api": agent},
            "defaults": {"agent": "api", "max_concurrency": 1},
            "tasks": [{"id": f"t{i}", "description": f"task {i}"} for i in range(tasks)],
        }
    )


async def test_remote_agent_calls_come_from_ray_and_the_budget_stays_central(
    ray_cluster: Cluster, fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    run = ProjectOrchestrator(spec(fake_server, 5, budget_tokens=16), executor="ray", store=tmp_path / "runs.db")
    results = await run.run()
    done = [r for r in results.values() if r.succeeded]
    refused = [r for r in results.values() if not r.succeeded]
    assert done and refused
    assert all(r.error is not None and r.error.type == "budget_exhausted" for r in refused)
    assert len(fake_server.requests) == len(done)  # refused calls never left the driver
    assert all(r.provider == "gpt" and r.output == f"echo: task {r.task_id[1:]}" for r in done)

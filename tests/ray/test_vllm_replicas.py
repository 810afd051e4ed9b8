"""vLLM replicas as Ray actors on a GPU (``pytest -m gpu``, with vLLM and a GPU): each replica holds one GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

vllm = pytest.importorskip("vllm")

from orchestration import ProjectOrchestrator, ProjectSpec  # noqa: E402
from tests.local.vllm_model import ENGINE, hf_model  # noqa: E402
from tests.ray.conftest import Cluster  # noqa: E402

__all__ = ["hf_model"]


async def test_a_vllm_agent_runs_as_a_replica_holding_a_gpu(ray_cluster: Cluster, hf_model: Path) -> None:
    agent = {"type": "vllm", "model": str(hf_model), **ENGINE, "replicas": 1, "options": {"max_tokens": 8}}
    tasks = [{"id": f"t{i}", "description": f"the quick brown fox {i}"} for i in range(6)]
    spec = ProjectSpec.model_validate(
        {"name": "gpu", "agents": {"gpu": agent}, "defaults": {"agent": "gpu"}, "tasks": tasks}
    )
    results = await ProjectOrchestrator(spec, executor="ray").run()
    assert all(r.succeeded and r.usage is not None and r.usage.output_tokens == 8 for r in results.values())
    assert all(r.time_to_first_token_s is not None for r in results.values())

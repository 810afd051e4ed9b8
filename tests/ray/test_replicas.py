"""Local models on Ray: a pool of actor replicas (the ``ticks`` stand-in runtime, 2 replicas on CPU)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from llm_abstractions import register_llm
from llm_abstractions.factory import unregister_llm
from llm_abstractions.local import register_runner, unregister_runner
from orchestration import ProjectOrchestrator, ProjectSpec
from orchestration.store import RunStore
from tests.ray.conftest import Cluster
from tests.ray.runners import TickLlm, TickRunner

TASKS = 12


@pytest.fixture(autouse=True)
def ticks() -> Iterator[None]:
    register_runner("ticks", TickRunner)
    register_llm("ticks", TickLlm)
    yield
    unregister_runner("ticks")
    unregister_llm("ticks")


def spec(tmp_path: Path, *, step_s: float, max_tokens: int) -> ProjectSpec:
    agent = {
        "type": "ticks",
        "model": str(tmp_path),
        "log": str(tmp_path / "calls.log"),
        "step_s": step_s,
        "replicas": 2,
        "max_restarts": 1,
        "options": {"max_tokens": max_tokens},
        "retry": {"retries": 3, "initial_backoff_s": 0.01, "max_backoff_s": 0.01},
        "limits": {"circuit_failure_threshold": 1},  # a lost replica must not open the circuit
    }
    tasks = [{"id": f"t{i}", "description": f"task {i}"} for i in range(TASKS)]
    return ProjectSpec.model_validate(
        {"name": "replicas", "agents": {"ticks": agent}, "defaults": {"agent": "ticks"}, "tasks": tasks}
    )


def starts(tmp_path: Path) -> Counter[int]:
    log = tmp_path / "calls.log"
    lines = log.read_text().split() if log.exists() else []
    return Counter(int(pid) for pid in lines[1::2])


def wait_for_starts(tmp_path: Path, replicas: int, calls: int, deadline_s: float = 30) -> Counter[int]:
    """Block until ``calls`` calls started on ``replicas`` processes (polled against a deadline)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        seen = starts(tmp_path)
        if len(seen) >= replicas and all(n >= calls for n in seen.values()):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"calls did not start on {replicas} replicas in {deadline_s} s: {starts(tmp_path)}")


async def test_calls_spread_over_the_replicas_and_stream_back(ray_cluster: Cluster, tmp_path: Path) -> None:
    run = ProjectOrchestrator(spec(tmp_path, step_s=0.01, max_tokens=3), executor="ray", max_concurrency=4)
    results = await run.run()
    assert all(r.succeeded for r in results.values())
    pids = Counter(int(r.output.split()[0]) for r in results.values() if r.output)
    assert len(pids) == 2 and os.getpid() not in pids
    assert min(pids.values()) >= TASKS // 4  # least-loaded routing: neither replica idles
    assert {r.output.split(maxsplit=1)[1] for r in results.values() if r.output} == {"tick tick tick"}
    assert all((r.time_to_first_token_s or 1e9) < (r.duration_s or 0) for r in results.values())


async def test_a_killed_replica_is_restarted_and_its_calls_retried_on_the_other(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    store = RunStore(tmp_path / "runs.db")
    run = ProjectOrchestrator(
        spec(tmp_path, step_s=0.05, max_tokens=10), executor="ray", max_concurrency=4, store=store
    )
    async with anyio.create_task_group() as group:
        outcome: dict[str, object] = {}

        async def go() -> None:
            outcome.update(await run.run(run_id="kill"))

        group.start_soon(go)
        seen = await anyio.to_thread.run_sync(wait_for_starts, tmp_path, 2, 1)
        victim = min(seen)
        os.kill(victim, signal.SIGKILL)
    results = run.results
    assert len(results) == TASKS and all(r.succeeded for r in results.values())
    retried = [r for r in results.values() if r.attempts > 1]
    assert retried, "no call was in flight on the killed replica"
    assert not [a for r in results.values() for a in r.attempt_log if a.error_type == "circuit_open"]
    for result in retried:
        assert result.attempt_log[0].error_type == "provider_unavailable"
        assert int((result.output or "0").split()[0]) != victim  # answered elsewhere
    stored = store.load_results("kill")
    assert sorted(stored) == sorted(results)  # none lost
    finished = [e for e in store.events("kill") if e.kind == "task_succeeded"]
    assert sorted(str(e.task_id) for e in finished) == sorted(results)  # none recorded twice


def test_which_clients_become_replicas_and_what_each_holds(ray_cluster: Cluster, tmp_path: Path) -> None:
    """On Ray: local models always (vLLM holding ``tensor_parallel_size`` GPUs unless ``num_gpus`` says), API agents
    only with ``remote: true``; without Ray nothing is wrapped. Nothing is started here (no GPU needed)."""
    from agent_registry import AgentConfig, AgentRegistry
    from llm_abstractions.ray_replicas import ReplicatedLlm
    from orchestration.executor import TaskExecutor
    from orchestration.remote_steps import RemoteSteps

    agents: dict[str, dict[str, object]] = {
        "tp2": {"type": "vllm", "model": str(tmp_path), "tensor_parallel_size": 2, "replicas": 3},
        "half": {"type": "vllm", "model": str(tmp_path), "num_gpus": 0.5, "max_restarts": -1},
        "mlx": {"type": "mlx", "model": str(tmp_path)},
        "api": {"type": "offline"},
        "egress": {"type": "offline", "remote": True, "replicas": 2},
    }
    registry = AgentRegistry([AgentConfig.model_validate({"name": name, **fields}) for name, fields in agents.items()])
    on_ray = TaskExecutor(registry, ray=RemoteSteps(None))
    placements = {}
    for name in agents:
        llm = on_ray.llm_for(name)
        placements[name] = (
            (llm.placement.replicas, llm.placement.num_gpus, llm.placement.max_restarts)
            if isinstance(llm, ReplicatedLlm)
            else None
        )
    assert placements == {
        "tp2": (3, 2, 3),
        "half": (1, 0.5, -1),
        "mlx": (1, 0, 3),
        "api": None,
        "egress": (2, 0, 3),
    }
    here = TaskExecutor(registry)
    assert not any(isinstance(here.llm_for(name), ReplicatedLlm) for name in agents)


async def test_a_local_model_on_ray_is_checked_by_its_replicas(ray_cluster: Cluster, tmp_path: Path) -> None:
    """On Ray the driver checks a local agent's settings only: its runtime and files are the replicas' machines'
    to have, and a replica that lacks them fails the calls with what it lacks (no retry)."""
    from orchestration.issues import ProjectValidationError

    missing = str(tmp_path / "no-such-model")
    fields = {
        "name": "elsewhere",
        "agents": {"gpu": {"type": "vllm", "model": missing, "max_model_len": 256}},
        "defaults": {"agent": "gpu"},
        "tasks": [{"id": "a", "description": "hi"}, {"id": "b", "description": "ho"}],
    }
    with pytest.raises(ProjectValidationError, match="does not exist"):
        ProjectOrchestrator(ProjectSpec.model_validate(fields)).validate()
    bad_settings = {**fields, "agents": {"gpu": {"type": "vllm", "model": missing, "max_model_len": -1}}}
    with pytest.raises(ProjectValidationError, match="max_model_len"):
        ProjectOrchestrator(ProjectSpec.model_validate(bad_settings), executor="ray").validate()

    greedy = {**fields, "agents": {"gpu": {"type": "vllm", "model": missing, "num_gpus": 64}}}
    results = await ProjectOrchestrator(ProjectSpec.model_validate(greedy), executor="ray").run()
    for result in results.values():  # a replica the cluster cannot place fails at once, not after a wait for ever
        assert result.error is not None and result.error.type == "provider_unavailable"
        assert "a replica needs 64 GPUs and the Ray cluster has" in result.error.message

    on_cpu = {**fields, "agents": {"gpu": {"type": "vllm", "model": missing, "num_gpus": 0}}}
    results = await ProjectOrchestrator(ProjectSpec.model_validate(on_cpu), executor="ray").run()
    for result in results.values():
        assert result.error is not None and result.error.type == "provider_unavailable"
        assert result.error.message.startswith("starting the replicas of 'gpu' on Ray failed: ")
        assert f"model path '{missing}' does not exist" in result.error.message
        assert result.attempts == 1

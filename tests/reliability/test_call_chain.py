"""The executor's call chain: retries per agent, fallbacks, circuit breaking and the attempt log."""

from __future__ import annotations

from typing import Any

import anyio

from agent_registry import AgentRegistry
from llm_abstractions import AuthenticationError, ProviderUnavailableError, RateLimitedError
from llm_abstractions.wrappers import CircuitBreakerLlm, LimitedLlm
from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec
from orchestration.executor import TaskExecutor
from tests.reliability.doubles import Scripts

FAST_RETRY = {"initial_backoff_s": 0.001, "max_backoff_s": 0.001}


def project(tasks: list[dict[str, Any]], agents: dict[str, dict[str, Any]], **defaults: Any) -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate({"name": "chain", "agents": agents, "defaults": defaults, "tasks": tasks})
    return ProjectOrchestrator(spec)


AGENTS = {
    "main": {"type": "scripted", "base_url": "http://main", "fallbacks": ["spare"], "retry": FAST_RETRY},
    "spare": {"type": "scripted", "base_url": "http://spare", "retry": FAST_RETRY},
}


async def test_fallback_after_retries_are_exhausted_and_every_attempt_is_logged(scripts: Scripts) -> None:
    scripts["main"].outcomes = [ProviderUnavailableError("503")] * 3
    scripts["spare"].default = "from spare"
    results = await project([{"id": "t", "description": "x", "agent": "main", "retries": 2}], AGENTS).run()
    result = results["t"]
    assert result.status is ExecutionStatus.SUCCESS and result.output == "from spare"
    assert result.agent == "spare"
    assert [(a.agent, a.error_type) for a in result.attempt_log] == [
        ("main", "provider_unavailable"),
        ("main", "provider_unavailable"),
        ("main", "provider_unavailable"),
        ("spare", None),
    ]
    assert result.attempts == 4 and all(a.duration_s >= 0 for a in result.attempt_log)


async def test_non_retryable_error_falls_back_at_once(scripts: Scripts) -> None:
    scripts["main"].outcomes = [AuthenticationError("bad key")]
    results = await project([{"id": "t", "description": "x", "agent": "main", "retries": 5}], AGENTS).run()
    assert [(a.agent, a.error_type) for a in results["t"].attempt_log] == [("main", "authentication"), ("spare", None)]


async def test_template_errors_never_fall_back(scripts: Scripts) -> None:
    orchestrator = project([{"id": "t", "description": "{{ inputs.x.missing }}", "agent": "main"}], AGENTS)
    orchestrator.inputs = {"x": {}}
    results = await orchestrator.run()
    assert results["t"].error is not None and results["t"].error.type == "template_error"
    assert scripts["main"].calls == [] and scripts["spare"].calls == []
    assert results["t"].attempt_log == []


async def test_open_circuit_falls_back_without_a_request(scripts: Scripts) -> None:
    agents = {**AGENTS, "main": {**AGENTS["main"], "limits": {"circuit_failure_threshold": 2}}}
    scripts["main"].default = ProviderUnavailableError("down")
    tasks = [{"id": f"t{i}", "description": f"x{i}", "agent": "main", "retries": 0} for i in range(6)]
    results = await project(tasks, agents, max_concurrency=1).run()
    assert all(r.status is ExecutionStatus.SUCCESS and r.agent == "spare" for r in results.values())
    assert len(scripts["main"].calls) == 2  # then the circuit opened: the rest failed fast
    later = results["t5"].attempt_log
    assert [(a.agent, a.error_type) for a in later] == [("main", "circuit_open"), ("spare", None)]
    assert results["t5"].attempts == 1  # the refused try sent no request


async def test_without_a_fallback_an_open_circuit_is_waited_out(scripts: Scripts) -> None:
    agents = {
        "solo": {
            "type": "scripted",
            "retry": FAST_RETRY,
            "limits": {"circuit_failure_threshold": 1, "circuit_cooldown_s": 0.05},
        }
    }
    scripts["solo"].outcomes = [ProviderUnavailableError("down")]
    with anyio.fail_after(5):
        results = await project([{"id": "t", "description": "x", "agent": "solo", "retries": 3}], agents).run()
    assert results["t"].status is ExecutionStatus.SUCCESS
    types = [a.error_type for a in results["t"].attempt_log]
    assert types[0] == "provider_unavailable" and types[-1] is None


async def test_shared_endpoint_backoff_across_tasks(scripts: Scripts) -> None:
    agents = {"rl": {"type": "scripted", "retry": FAST_RETRY, "limits": {"max_concurrent": 4}}}
    script = scripts["rl"]
    script.outcomes = [RateLimitedError("429", retry_after=0.1)] * 4
    script.gate = anyio.Event()
    tasks = [{"id": f"t{i}", "description": f"x{i}", "agent": "rl", "retries": 3} for i in range(8)]
    orchestrator = project(tasks, agents, max_concurrency=8)
    async with anyio.create_task_group() as group:
        group.start_soon(orchestrator.run)
        with anyio.fail_after(5):  # the endpoint's first call goes alone until it answers (at most 1 s)
            while script.running < 4:  # noqa: ASYNC110 (the script counts calls; it has no event to wait on)
                await anyio.sleep(0.01)
        await anyio.wait_all_tasks_blocked()
        assert script.running == 4  # the endpoint's concurrency limit, across tasks
        first_wave = anyio.current_time()
        script.gate.set()
        script.gate = None
    results = orchestrator.results
    assert all(r.succeeded for r in results.values())
    later = [c.started for c in script.calls[4:]]
    assert len(later) == 8 and min(later) >= first_wave + 0.1 - 0.01  # everyone waited out one Retry-After


def executor_for(agents: dict[str, dict[str, Any]]) -> TaskExecutor:
    registry = AgentRegistry()
    registry.load_mapping(agents)
    return TaskExecutor(registry)


def test_in_process_clients_skip_limits_and_breaker_only_while_they_have_nothing_to_do(scripts: Scripts) -> None:
    bare = executor_for({"a": {"type": "offline"}})
    assert bare.guarded_llm("a") is bare.llm_for("a")
    capped = executor_for({"a": {"type": "offline", "limits": {"max_concurrent": 2}}})
    assert isinstance(capped.guarded_llm("a"), LimitedLlm)
    # "b" shares the offline endpoint and its call timeouts can open the breaker: "a" must consult it too
    timed = executor_for({"a": {"type": "offline"}, "b": {"type": "offline", "timeout_s": 1}})
    guarded = timed.guarded_llm("a")
    assert isinstance(guarded, CircuitBreakerLlm) and not isinstance(guarded.wrapped, LimitedLlm)
    remote = executor_for({"a": {"type": "scripted", "base_url": "http://a"}})
    assert isinstance(remote.guarded_llm("a"), CircuitBreakerLlm)


async def test_an_endpoint_circuit_opened_by_call_timeouts_stops_its_other_offline_agents() -> None:
    agents: dict[str, dict[str, Any]] = {
        "slow": {"type": "offline", "latency_ms": 5000, "timeout_s": 0.01, "limits": {"circuit_failure_threshold": 1}},
        "quick": {"type": "offline"},
    }
    tasks = [
        {"id": "slow", "description": "x", "agent": "slow", "retries": 0},
        {"id": "quick", "description": "y", "agent": "quick", "retries": 0, "depends_on": []},
    ]
    orchestrator = project(tasks, agents, max_concurrency=1)
    results = await orchestrator.run()
    assert results["slow"].error is not None and results["slow"].error.type == "timeout"
    assert results["quick"].error is not None and results["quick"].error.type == "circuit_open"

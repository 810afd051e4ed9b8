"""Fault tests through the real SDKs against the fake provider server on 127.0.0.1.

A few hundred tasks meet 15% transient faults (503s, connection resets, calls that hang
past the call timeout) plus bursts of 429s with ``Retry-After`` (about 20% in all): every
task succeeds, the endpoint as a whole waits out each burst's ``Retry-After``, and no
request that succeeded is ever sent again.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import anyio
import pytest

from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer, Reply
from tests.reliability.fault_plan import FaultPlan

__all__ = ["fake_server"]

RETRY_AFTER = 0.5
SETTLE = 1.5
"""How long after a burst the client may take to see its 429s and pause (generous: CI is loaded)."""
QUIET = 0.8
"""Share of Retry-After the server must see without requests (the rest covers requests already in flight)."""


def task_key(text: str) -> str:
    return text.split(" after ", 1)[0]


def base_url(server: FakeProviderServer, provider: str) -> str:
    return {"gpt": server.openai_base_url, "claude": server.anthropic_base_url, "gemini": server.gemini_base_url}[
        provider
    ]


def faulty_project(server: FakeProviderServer, provider: str, tasks: int) -> ProjectOrchestrator:
    agent: dict[str, Any] = {
        "type": provider,
        "model": "test-model",
        "api_key": "test-key-123456",
        "base_url": base_url(server, provider),
        "timeout_s": 1.0,  # hangs (2 s) time out; slow answers on a loaded machine do not
        "retry": {"retries": 10, "initial_backoff_s": 0.01, "max_backoff_s": 0.05},
        "limits": {"max_concurrent": 16, "circuit_cooldown_s": 0.2},
    }
    specs = []
    for i in range(tasks):
        chained = i % 5 != 0
        specs.append(
            {
                "id": f"t{i}",
                "description": f"task {i}" + (f" after {{{{ tasks.t{i - 1}.output }}}}" if chained else ""),
                "depends_on": [f"t{i - 1}"] if chained else [],
            }
        )
    spec = ProjectSpec.model_validate(
        {
            "name": "faulty",
            "agents": {"llm": agent},
            "defaults": {"agent": "llm", "max_concurrency": 32},
            "tasks": specs,
        }
    )
    return ProjectOrchestrator(spec)


@pytest.mark.parametrize(("provider", "tasks"), [("gpt", 300), ("claude", 60), ("gemini", 60)])
async def test_transient_faults_and_429_bursts_finish_every_task(
    fake_server: FakeProviderServer, provider: str, tasks: int
) -> None:
    plan = FaultPlan(seed=7, fault_rate=0.15, burst_every=max(tasks // 3, 30), retry_after_s=RETRY_AFTER, key=task_key)
    fake_server.handler = plan
    with anyio.fail_after(60):
        results = await faulty_project(fake_server, provider, tasks).run()

    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values()), [
        (r.task_id, r.error) for r in results.values() if not r.succeeded
    ]
    assert [results[f"t{i}"].output for i in range(tasks)] == [f"done: task {i}" for i in range(tasks)]
    assert sum(plan.faults.values()) >= 0.12 * tasks and plan.faults["429"] >= 3 and plan.faults["hang"] > 0
    # no request that succeeded was sent again: exactly one success per task
    assert set(plan.successes) == {f"task {i}" for i in range(tasks)}
    assert set(plan.successes.values()) == {1}
    # each burst's Retry-After was honoured by the whole endpoint at once: the server sees the
    # endpoint go quiet for about Retry-After soon after the burst (with per-task backoff only,
    # the tasks that got no 429 keep sending and no such gap appears)
    arrivals = sorted(r.received_at for r in fake_server.requests)
    for start in plan.bursts:
        later = [t for t in arrivals if t >= start] + [math.inf]  # the run's end counts as quiet
        longest = max(b - a for a, b in itertools.pairwise(later) if a <= start + SETTLE)
        assert longest >= QUIET * RETRY_AFTER, f"no endpoint-wide pause after the burst at {start}"
    retried = [r for r in results.values() if r.attempts > 1]
    assert retried and all(sum(a.error_type != "circuit_open" for a in r.attempt_log) == r.attempts for r in retried)


@pytest.mark.parametrize("provider", ["gpt", "claude", "gemini"])
async def test_a_call_timeout_closes_the_sdk_connection(fake_server: FakeProviderServer, provider: str) -> None:
    fake_server.script(None, Reply(text="too late", delay_s=30.0))
    agent = {
        "type": provider,
        "model": "m",
        "api_key": "test-key-123456",
        "base_url": base_url(fake_server, provider),
        "timeout_s": 1.0,  # long enough that a loaded machine still sends the request first
    }
    spec = ProjectSpec.model_validate(
        {
            "name": "slow",
            "agents": {"llm": agent},
            "defaults": {"agent": "llm", "retries": 0},
            "tasks": [{"id": "t", "description": "x"}],
        }
    )
    with anyio.fail_after(20):
        results = await ProjectOrchestrator(spec).run()
    assert results["t"].error is not None and results["t"].error.type == "timeout"
    request = fake_server.requests[0]
    assert await anyio.to_thread.run_sync(request.client_closed.wait, 10.0)  # the server saw the client hang up

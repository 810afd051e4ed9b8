"""Pacing through the real SDK clients against the fake provider, the agent not told the limit.

The fake server (:class:`~tests.fakes.rate_limited.RateLimitedProvider`) enforces a requests-per-minute
limit with a token bucket holding one second of it and answers 429 + ``Retry-After`` beyond it;
OpenAI and Anthropic answers state what is left in rate-limit headers, Gemini answers state
nothing. The agent sets only ``max_concurrent`` (16) and generous retries, so without pacing its
16 calls at once hit the wall as soon as the burst is spent: measured on a 2-core machine, a
run without pacing (every call admitted at once, no pause) has well over half its requests
answered 429, and two runs with a pacer each both spend the allowance the headers state. With
pacing every task succeeds, few requests are refused, and the run's events say what set the pace.

Bounds are counts and rates of the whole run, with wide margins both ways (see each test); no
test sleeps or times anything tightly.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest

from agent_registry import AgentRegistry
from llm_abstractions.wrappers import Pacer, PaceReason, PacingSettings, shared_pacer
from orchestration import EventKind, ExecutionResult, ProjectOrchestrator, ProjectSpec, RunEvent
from orchestration import endpoints as endpoints_module
from orchestration.endpoints import Endpoints
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Response
from tests.fakes.rate_limited import RateLimitedProvider

LATENCY_S = 0.01
RUN_LIMIT_S = 30.0
"""A run that has not finished by then hangs (each takes 1-3 s)."""


def new_key() -> str:
    """A key of this test alone: a pacer is shared by every run of the process with the same key."""
    return f"sk-pacing-{uuid.uuid4().hex}"


def base_url(server: FakeProviderServer, provider: str) -> str:
    return {"gpt": server.openai_base_url, "claude": server.anthropic_base_url, "gemini": server.gemini_base_url}[
        provider
    ]


class PacedRun:
    """An orchestrator of ``tasks`` independent tasks on one agent that knows its concurrency limit only,
    the ``endpoint_paced`` events of its run, and its endpoint's pacer (held, so it can be read after the run)."""

    def __init__(self, server: FakeProviderServer, provider: str, tasks: int, api_key: str) -> None:
        agent: dict[str, Any] = {
            "type": provider,
            "model": "test-model",
            "api_key": api_key,
            "base_url": base_url(server, provider),
            "retry": {"retries": 50, "initial_backoff_s": 0.01, "max_backoff_s": 0.5},
            "limits": {"max_concurrent": 16},
        }
        spec = ProjectSpec.model_validate(
            {
                "name": "paced",
                "agents": {"llm": agent},
                "defaults": {"agent": "llm", "max_concurrency": 32},
                "tasks": [{"id": f"t{i}", "description": f"request {i}"} for i in range(tasks)],
            }
        )
        self.tasks = tasks
        self.orchestrator = ProjectOrchestrator(spec, registry=AgentRegistry())
        self.paced: list[RunEvent] = []
        self.orchestrator.on_event(self._on_event)
        registry = self.orchestrator.validate().registry
        self.pacer: Pacer = Endpoints(registry).for_agent(registry.get("llm")).limits.pacer

    def _on_event(self, event: RunEvent) -> None:
        if event.kind is EventKind.ENDPOINT_PACED:
            self.paced.append(event)

    async def run(self) -> dict[str, ExecutionResult]:
        with anyio.fail_after(RUN_LIMIT_S):
            results = await self.orchestrator.run()
        failed = [(r.task_id, r.error) for r in results.values() if not r.succeeded]
        assert not failed, failed
        assert len(results) == self.tasks
        return results

    def reasons(self) -> set[PaceReason]:
        return {event.pace.reason for event in self.paced if event.pace is not None}


def assert_labels_name_the_endpoint(run: PacedRun, provider: str, server: FakeProviderServer, api_key: str) -> None:
    """Every pace event names the provider, host and port, never the key."""
    assert run.paced
    for event in run.paced:
        assert event.endpoint is not None and event.endpoint.startswith(f"{provider} 127.0.0.1:{server.port}")
        assert api_key not in repr(event) and "sk-" not in event.endpoint


@pytest.mark.parametrize("provider", ["gpt", "claude"])
async def test_stated_rate_limit_headers_pace_the_run_below_the_wall(provider: str) -> None:
    # 1,200 requests/min, 50 tasks: observed 0-1 429s (at most 2% of the requests) with pacing;
    # without it, 59-73% of 120-175 requests.
    rpm, tasks, api_key = 1200.0, 50, new_key()
    limited = RateLimitedProvider(rpm, latency_s=LATENCY_S)
    with FakeProviderServer(limited) as server:
        run = PacedRun(server, provider, tasks, api_key)
        await run.run()
    requests = len(limited.arrivals)
    assert len(limited.accepted) == tasks  # no answered request was sent again
    assert limited.limited <= 0.15 * requests, (limited.limited, requests)
    assert PaceReason.HEADERS in run.reasons(), run.paced
    assert_labels_name_the_endpoint(run, provider, server, api_key)


async def test_without_headers_the_pacer_learns_the_rate_from_429s() -> None:
    # 1,200 requests/min, 60 tasks: observed 24-35 429s with pacing, the pacer ending at 1.3-1.35x
    # the limit (its first estimate, the only event of so short a run, holds the initial burst:
    # 2.2-3.2x); without pacing 125-158 429s, more than twice the tasks.
    rpm, tasks, api_key = 1200.0, 60, new_key()
    limited = RateLimitedProvider(rpm, headers=False, latency_s=LATENCY_S)
    with FakeProviderServer(limited) as server:
        run = PacedRun(server, "gemini", tasks, api_key)
        await run.run()
    assert len(limited.accepted) == tasks
    assert 0 < limited.limited <= tasks, limited.limited
    learned = [e.pace for e in run.paced if e.pace is not None and e.pace.reason is PaceReason.RATE_LIMITED]
    assert learned and all(pace.requests_per_minute is not None for pace in learned), run.paced
    assert PaceReason.HEADERS not in run.reasons()
    assert_labels_name_the_endpoint(run, "gemini", server, api_key)
    status = run.pacer.status()
    assert status.reason is PaceReason.RATE_LIMITED and status.requests_per_minute is not None, status
    assert 0.3 * rpm <= status.requests_per_minute <= 2.0 * rpm, status


class HalvingProvider:
    """A rate-limited provider whose limit halves once ``after`` requests were accepted (by count, not time)."""

    def __init__(self, provider: RateLimitedProvider, requests_per_minute: float, after: int) -> None:
        self.provider = provider
        self.halved_rpm = requests_per_minute / 2
        self.after = after
        self.changed_at: float | None = None
        """The server clock when the limit halved."""

    def __call__(self, request: RecordedRequest) -> Response:
        response = self.provider(request)
        if self.changed_at is None and len(self.provider.accepted) >= self.after:
            self.changed_at = self.provider.accepted[-1]
            self.provider.set_limits(requests_per_minute=self.halved_rpm, tokens_per_minute=None)
        return response


async def test_a_limit_that_halves_mid_run_is_followed() -> None:
    # 2,400 requests/min halving to 1,200 after 30 accepted requests, 80 tasks: observed 1-11 429s
    # after the change with pacing; without it 89-105 (the client keeps its old pace).
    rpm, tasks, after, api_key = 2400.0, 80, 30, new_key()
    limited = RateLimitedProvider(rpm, latency_s=LATENCY_S)
    halving = HalvingProvider(limited, rpm, after)
    with FakeProviderServer(halving) as server:
        run = PacedRun(server, "gpt", tasks, api_key)
        await run.run()
    assert halving.changed_at is not None
    assert len(limited.accepted) == tasks
    changed = halving.changed_at
    sent_after = sum(1 for t in limited.arrivals if t > changed)
    accepted_after = sum(1 for t in limited.accepted if t > changed)
    assert accepted_after == tasks - after
    refused_after = sent_after - accepted_after
    assert refused_after <= 0.5 * (tasks - after), (refused_after, sent_after)
    assert PaceReason.HEADERS in run.reasons()


async def test_runs_of_one_process_share_the_pacer_of_their_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    # 1,200 requests/min, two runs of 25 tasks at once: observed 0 429s with the shared pacer;
    # with a pacer per run (each following the same headers) 16 of 66 requests (24%).
    rpm, tasks, api_key = 1200.0, 25, new_key()
    used: list[Pacer] = []

    def recording(provider: str, url: str, digest: str, settings: PacingSettings) -> Pacer:
        pacer = shared_pacer(provider, url, digest, settings)
        used.append(pacer)
        return pacer

    monkeypatch.setattr(endpoints_module, "shared_pacer", recording)
    limited = RateLimitedProvider(rpm, latency_s=LATENCY_S)
    with FakeProviderServer(limited) as server:
        first, second = PacedRun(server, "gpt", tasks, api_key), PacedRun(server, "gpt", tasks, api_key)
        other_key = PacedRun(server, "gpt", tasks, new_key())
        assert first.pacer is second.pacer
        assert other_key.pacer is not first.pacer
        used.clear()
        async with anyio.create_task_group() as group:
            group.start_soon(first.run)
            group.start_soon(second.run)
    assert len(used) == 2 and all(pacer is first.pacer for pacer in used)  # each run's executor got the one pacer
    requests = len(limited.arrivals)
    assert len(limited.accepted) == 2 * tasks
    assert limited.limited <= 0.1 * requests, (limited.limited, requests)
    assert PaceReason.HEADERS in first.reasons() and PaceReason.HEADERS in second.reasons()

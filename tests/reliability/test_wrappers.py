"""The BaseLlm wrappers on their own: fallback, timeout, circuit breaker, endpoint limits."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import anyio
import pytest

from llm_abstractions import (
    AuthenticationError,
    CircuitOpenError,
    GenerationOptions,
    InvalidRequestError,
    LlmTimeoutError,
    Message,
    ProviderUnavailableError,
    RateLimitedError,
    Usage,
)
from llm_abstractions.errors import ReplicaLostError
from llm_abstractions.wrappers import (
    CircuitBreaker,
    CircuitBreakerLlm,
    CircuitState,
    EndpointLimits,
    FallbackLlm,
    LimitedLlm,
    LimitSettings,
    TimeoutLlm,
)
from tests.reliability.doubles import scripted

HELLO = [Message.user("hello")]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- fallback --------------------------------------------------------------------------


async def test_fallback_tries_models_in_order_with_their_own_defaults() -> None:
    primary = scripted("a", AuthenticationError("bad key"), options=GenerationOptions(temperature=0.1))
    second = scripted("b", ProviderUnavailableError("down"))
    third = scripted("c", "answer", options=GenerationOptions(temperature=0.9))
    response = await FallbackLlm([primary, second, third]).generate_content_async(HELLO, max_tokens=5)
    assert response.text == "answer"
    assert [len(m.script.calls) for m in (primary, second, third)] == [1, 1, 1]
    seen = third.script.calls[0].options
    assert seen.temperature == 0.9 and seen.max_tokens == 5  # per-call override, the fallback's own default


async def test_fallback_raises_the_last_error_and_respects_its_predicate() -> None:
    with pytest.raises(ProviderUnavailableError):
        await FallbackLlm(
            [scripted("a", AuthenticationError("x")), scripted("b", ProviderUnavailableError("y"))]
        ).generate_content_async(HELLO)
    second = scripted("b")
    chain = FallbackLlm([scripted("a", InvalidRequestError("bad")), second], fall_back_on=lambda exc: exc.retryable)
    with pytest.raises(InvalidRequestError):
        await chain.generate_content_async(HELLO)
    assert second.script.calls == []


async def test_fallback_does_not_catch_bugs() -> None:
    second = scripted("b")
    with pytest.raises(ZeroDivisionError):
        await FallbackLlm([scripted("a", ZeroDivisionError()), second]).generate_content_async(HELLO)
    assert second.script.calls == []


async def test_stream_falls_back_only_before_the_first_chunk() -> None:
    chain = FallbackLlm([scripted("a", ProviderUnavailableError("down")), scripted("b", "streamed")])
    chunks = [c.text async for c in chain.stream_content_async(HELLO)]
    assert "".join(chunks) == "streamed"


# -- timeout ---------------------------------------------------------------------------


async def test_call_timeout_cancels_the_inner_call() -> None:
    slow = scripted("a", timeout_s=0.05)
    slow.script.gate = anyio.Event()  # never set
    with anyio.fail_after(5), pytest.raises(LlmTimeoutError) as caught:
        await TimeoutLlm(slow).generate_content_async(HELLO)
    assert caught.value.retryable
    assert slow.script.cancelled == 1 and slow.script.running == 0


async def test_stream_timeout_covers_the_whole_stream() -> None:
    slow = scripted("a", timeout_s=0.05)
    slow.script.gate = anyio.Event()
    with anyio.fail_after(5), pytest.raises(LlmTimeoutError):
        async for _ in TimeoutLlm(slow).stream_content_async(HELLO):
            pass
    assert slow.script.cancelled == 1


# -- circuit breaker -------------------------------------------------------------------


async def test_circuit_opens_after_repeated_failures_and_one_trial_decides() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    inner = scripted("a", *[ProviderUnavailableError("down")] * 3)
    llm = CircuitBreakerLlm(inner, breaker)
    for _ in range(3):
        with pytest.raises(ProviderUnavailableError):
            await llm.generate_content_async(HELLO)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        await llm.generate_content_async(HELLO)
    assert len(inner.script.calls) == 3  # failed fast: no request
    assert caught.value.retry_after == pytest.approx(10.0)

    clock.now += 10.0
    inner.script.outcomes = [ProviderUnavailableError("still down")]
    with pytest.raises(ProviderUnavailableError):
        await llm.generate_content_async(HELLO)  # the trial call
    assert breaker.state is CircuitState.OPEN and len(inner.script.calls) == 4

    clock.now += 10.0
    inner.script.gate = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(llm.generate_content_async, HELLO)  # the trial, held at the gate
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(CircuitOpenError):
            await llm.generate_content_async(HELLO)  # only one trial at a time
        inner.script.gate.set()
    assert (breaker.state, breaker.opened) == (CircuitState.CLOSED, 2)
    assert (await llm.generate_content_async(HELLO)).text == "ok"


async def test_rate_limits_request_errors_and_lost_replicas_do_not_open_the_circuit() -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10.0)
    errors = [
        RateLimitedError("slow down"),
        InvalidRequestError("bad"),
        ReplicaLostError("replica 0 died"),
        RateLimitedError("slow down"),
        ReplicaLostError("replica 1 died"),
    ]
    llm = CircuitBreakerLlm(scripted("a", *errors), breaker)
    for _ in errors:
        with pytest.raises((RateLimitedError, InvalidRequestError, ReplicaLostError)):
            await llm.generate_content_async(HELLO)
    assert breaker.state is CircuitState.CLOSED


async def test_a_cancelled_trial_frees_its_place() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, clock=clock)
    inner = scripted("a", ProviderUnavailableError("down"))
    llm = CircuitBreakerLlm(inner, breaker)
    with pytest.raises(ProviderUnavailableError):
        await llm.generate_content_async(HELLO)
    clock.now += 1.0
    inner.script.gate = anyio.Event()
    with anyio.move_on_after(0.01):
        await llm.generate_content_async(HELLO)
    inner.script.gate = None
    assert (await llm.generate_content_async(HELLO)).text == "ok"  # a new trial was allowed


# -- endpoint limits -------------------------------------------------------------------


async def _answer_once(llm: LimitedLlm) -> None:
    """One call, so that the endpoint has answered and is no longer probed one call at a time."""
    await llm.generate_content_async(HELLO)


async def test_a_burst_of_429s_backs_the_endpoint_off_once() -> None:
    limits = EndpointLimits(LimitSettings(max_concurrent=8))
    inner = scripted("a", "ok", *[RateLimitedError("429", retry_after=0.2)] * 8)
    llm = LimitedLlm(inner, limits)
    await _answer_once(llm)
    inner.script.gate = anyio.Event()

    async def call() -> None:
        with pytest.raises(RateLimitedError):
            await llm.generate_content_async(HELLO)

    async with anyio.create_task_group() as group:
        for _ in range(8):
            group.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        assert limits.in_flight == 8
        inner.script.gate.set()
    assert limits.backoffs == 1  # eight 429s to requests sent before the backoff: one signal
    assert limits.concurrency == 8  # the rate adapts, not the concurrency
    assert 0.1 < limits.paused_for() <= 0.2  # Retry-After honoured once, not stacked

    before = anyio.current_time()
    pause = limits.paused_for()
    inner.script.gate = None
    await llm.generate_content_async(HELLO)  # waits out the endpoint-wide pause
    assert inner.script.calls[-1].started >= before + pause - 0.01


async def test_the_first_call_to_an_endpoint_goes_alone_until_it_is_answered() -> None:
    limits = EndpointLimits(LimitSettings())
    inner = scripted("a")
    inner.script.gate = anyio.Event()
    llm = LimitedLlm(inner, limits)
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(llm.generate_content_async, HELLO)
        await anyio.wait_all_tasks_blocked()
        assert inner.script.running == 1  # the others wait for what the first answer says
        inner.script.gate.set()
    assert len(inner.script.calls) == 5


async def test_concurrency_limit_is_shared_by_every_caller() -> None:
    limits = EndpointLimits(LimitSettings(max_concurrent=3))
    first, second = scripted("a"), scripted("b")
    models = [LimitedLlm(first, limits), LimitedLlm(second, limits)]  # two agents, one endpoint
    await _answer_once(models[0])
    gate = anyio.Event()
    first.script.gate = second.script.gate = gate
    async with anyio.create_task_group() as group:
        for i in range(12):
            group.start_soon(models[i % 2].generate_content_async, HELLO)
        await anyio.wait_all_tasks_blocked()
        assert limits.in_flight == 3
        assert first.script.running + second.script.running == 3
        gate.set()
    assert len(first.script.calls) + len(second.script.calls) == 13


async def test_requests_per_minute_limit_spaces_calls() -> None:
    limits = EndpointLimits(LimitSettings(requests_per_minute=1200))  # one call per 50 ms
    llm = LimitedLlm(scripted("a"), limits)
    start = anyio.current_time()
    async with anyio.create_task_group() as group:
        for _ in range(11):
            group.start_soon(llm.generate_content_async, HELLO)
    elapsed = anyio.current_time() - start
    assert 0.45 <= elapsed < 5.0  # ten gaps of 50 ms


def _under_trio(main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` on trio with a clock that jumps ahead whenever every task waits."""
    from trio.testing import MockClock

    anyio.run(main, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})


def test_requests_per_minute_limit_spaces_calls_evenly_under_trio() -> None:
    inner = scripted("a")
    llm = LimitedLlm(inner, EndpointLimits(LimitSettings(requests_per_minute=1200)))  # 20/s

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(30):
                group.start_soon(llm.generate_content_async, HELLO)

    _under_trio(main)
    starts = [call.started - inner.script.calls[0].started for call in inner.script.calls]
    assert starts == pytest.approx([0.05 * i for i in range(30)], abs=1e-6)


def test_tokens_per_minute_limit_charges_actual_usage_under_trio() -> None:
    inner = scripted("a")
    inner.script.usage = Usage(input_tokens=2, output_tokens=48)
    llm = LimitedLlm(inner, EndpointLimits(LimitSettings(tokens_per_minute=6000)))  # 100 tokens/s

    async def main() -> None:
        for _ in range(4):
            await llm.generate_content_async(HELLO)

    _under_trio(main)
    starts = [call.started - inner.script.calls[0].started for call in inner.script.calls]
    # 2 tokens estimated per call, 48 more charged to the next one: 2, then 50 each (0.5 s at 100 tokens/s)
    assert starts == pytest.approx([0.0, 0.02, 0.52, 1.02], abs=1e-6)


def test_a_slow_first_answer_holds_the_others_back_for_the_probe_time_only_under_trio() -> None:
    inner = scripted("a")
    inner.script.delay_s = 5.0
    llm = LimitedLlm(inner, EndpointLimits(LimitSettings()))

    async def main() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(llm.generate_content_async, HELLO)

    _under_trio(main)
    starts = [call.started - inner.script.calls[0].started for call in inner.script.calls]
    assert starts == pytest.approx([0.0, 1.0, 1.0], abs=1e-6)  # PacingSettings.probe_s


def test_a_project_with_limits_runs_under_trio() -> None:
    from orchestration import ProjectOrchestrator, ProjectSpec

    limits = {"requests_per_minute": 6000, "tokens_per_minute": 600000}
    spec = ProjectSpec.model_validate(
        {
            "agents": {"o": {"type": "offline", "limits": limits}},
            "defaults": {"agent": "o"},
            "tasks": [{"id": f"t{i}", "description": f"task {i}"} for i in range(5)],
        }
    )
    results = anyio.run(ProjectOrchestrator(spec).run, backend="trio")
    assert {task: (r.status.value, r.error) for task, r in results.items()} == {
        f"t{i}": ("success", None) for i in range(5)
    }


def test_limit_settings_merge_to_the_stricter_value() -> None:
    merged = LimitSettings(4, None, 1000.0).merged(LimitSettings(None, 60.0, 500.0))
    assert (merged.max_concurrent, merged.requests_per_minute, merged.tokens_per_minute) == (4, 60.0, 500.0)
    assert EndpointLimits(LimitSettings()).concurrency == math.inf
    with pytest.raises(ValueError):
        LimitSettings(max_concurrent=0)

"""The retry policy: exponential backoff with full jitter, at least a provider's ``retry_after``, via tenacity.

:class:`~orchestration.call_chain.CallChain` makes an agent's first attempt itself (most calls
succeed at once, and tenacity is then never imported); after a retryable failure it hands the
call to :func:`retry_after_failure`, which replays that failure into tenacity so that the same
policy decides every attempt: ``retries`` counts requests sent (refusals by an open circuit sent
none), and ``deadline_s`` counts from the start of the first attempt.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential
from tenacity.stop import stop_base

from agent_registry import RetrySettings
from llm_abstractions import CircuitOpenError, LlmError

__all__ = ["retry_after_failure"]

T = TypeVar("T")


def _wait(settings: RetrySettings) -> Callable[[RetryCallState], float]:
    jitter = wait_random_exponential(multiplier=settings.initial_backoff_s, max=settings.max_backoff_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = exc.retry_after if isinstance(exc, LlmError) and exc.retry_after else 0.0
        return max(hinted, jitter(state))

    return wait


class _stop_after_requests(stop_base):
    """Stop once ``count`` attempts reached the provider: refusals by an open circuit sent nothing."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.refused = 0

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is not None and isinstance(outcome.exception(), CircuitOpenError):
            self.refused += 1
        return retry_state.attempt_number - self.refused >= self.count


class _stop_at_deadline(stop_base):
    """Stop when the next attempt would start ``deadline_s`` or later after ``started`` (the first attempt's start)."""

    def __init__(self, started: float, deadline_s: float) -> None:
        self.started = started
        self.deadline_s = deadline_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.monotonic() - self.started + (retry_state.upcoming_sleep or 0.0) >= self.deadline_s


async def retry_after_failure(
    error: LlmError,
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    settings: RetrySettings,
    retryable: Callable[[LlmError], bool],
    started: float,
) -> T:
    """Go on after a retryable first failure ``error`` of an attempt that began at ``started`` (``time.monotonic``):
    a model call, or a code step's call.

    The failure is replayed into tenacity as its first attempt: backoff, ``retries`` and the
    deadline then count it like any other.
    """
    first_error = [error]

    async def replay_then_attempt() -> T:
        if first_error:
            raise first_error.pop()
        return await attempt()

    stop: stop_base = _stop_after_requests(retries + 1)
    if settings.deadline_s is not None:
        stop = stop | _stop_at_deadline(started, settings.deadline_s)
    retrying = AsyncRetrying(
        stop=stop,
        wait=_wait(settings),
        retry=retry_if_exception(lambda exc: isinstance(exc, LlmError) and retryable(exc)),
        sleep=anyio.sleep,
        reraise=True,
    )
    return await retrying(replay_then_attempt)

"""Retry policy: exponential backoff with full jitter, honouring ``retry_after``, via tenacity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from agent_registry import RetrySettings
from llm_abstractions import LlmError, LlmResponse

__all__ = ["call_with_retries"]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, LlmError) and exc.retryable


def _wait(settings: RetrySettings) -> Callable[[RetryCallState], float]:
    jitter = wait_random_exponential(multiplier=settings.initial_backoff_s, max=settings.max_backoff_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = exc.retry_after if isinstance(exc, LlmError) and exc.retry_after else 0.0
        return max(hinted, jitter(state))

    return wait


async def call_with_retries(
    attempt: Callable[[], Awaitable[LlmResponse]], retries: int, settings: RetrySettings
) -> LlmResponse:
    """Call ``attempt`` until it succeeds, fails with a non-retryable error, or ``retries`` run out.

    The first attempt runs outside tenacity (the common, successful case costs nothing);
    a retryable first failure is replayed into tenacity, which then owns backoff and stop.
    """
    try:
        return await attempt()
    except LlmError as exc:
        if not exc.retryable or retries == 0:
            raise
        first_error: list[LlmError] = [exc]

    async def replay_then_attempt() -> LlmResponse:
        if first_error:
            raise first_error.pop()
        return await attempt()

    stop: stop_base = stop_after_attempt(retries + 1)
    if settings.deadline_s is not None:
        stop = stop | stop_after_delay(settings.deadline_s)
    retrying = AsyncRetrying(
        stop=stop,
        wait=_wait(settings),
        retry=retry_if_exception(_retryable),
        sleep=anyio.sleep,
        reraise=True,
    )
    return await retrying(replay_then_attempt)

"""Backoff and stop after a failed first attempt, via tenacity.

Only :mod:`orchestration.retry` uses this module, and only once a first attempt has
failed with a retryable error: tenacity (with ``logging`` and ``concurrent.futures``)
is not imported by runs whose calls all succeed at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from agent_registry import RetrySettings
from llm_abstractions import LlmError, LlmResponse
from llm_abstractions.wrappers import CircuitOpenError

__all__ = ["retry_after"]


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


async def retry_after(
    error: LlmError,
    attempt: Callable[[], Awaitable[LlmResponse]],
    retries: int,
    settings: RetrySettings,
    retryable: Callable[[LlmError], bool],
) -> LlmResponse:
    """Go on after a retryable first failure ``error``: it is replayed into tenacity, which owns backoff and stop."""
    first_error = [error]

    async def replay_then_attempt() -> LlmResponse:
        if first_error:
            raise first_error.pop()
        return await attempt()

    stop: stop_base = _stop_after_requests(retries + 1)
    if settings.deadline_s is not None:
        stop = stop | stop_after_delay(settings.deadline_s)
    retrying = AsyncRetrying(
        stop=stop,
        wait=_wait(settings),
        retry=retry_if_exception(lambda exc: isinstance(exc, LlmError) and retryable(exc)),
        sleep=anyio.sleep,
        reraise=True,
    )
    return await retrying(replay_then_attempt)

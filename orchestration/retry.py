"""Retry policy: exponential backoff with full jitter, honouring ``retry_after``, via tenacity.

:class:`RetryingLlm` applies it to one agent's model inside a task's call chain: the first
attempt runs outside tenacity (the common, successful case costs nothing), and a retryable
first failure is replayed into tenacity (:mod:`orchestration.backoff`), which then owns backoff
and stop. Refusals by an open circuit (no request sent) do not use up retries; ``deadline_s``
bounds them. Every attempt is appended to the list that :data:`attempt_log` holds in the
calling task's context (the executor sets one per task, so chains can be shared by concurrent tasks).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any

from agent_registry import RetrySettings
from llm_abstractions import BaseLlm, LlmError, LlmResponse, Message
from llm_abstractions.wrappers import CircuitOpenError, WrapperLlm

__all__ = ["Attempt", "RetryingLlm", "attempt_log"]

Attempt = dict[str, Any]
"""One attempt, as the fields of an :class:`AttemptRecord` (the result's validation makes the record)."""

attempt_log: ContextVar[list[Attempt] | None] = ContextVar("orchestrate_attempt_log", default=None)
"""Where :class:`RetryingLlm` records the attempts of the current task (nowhere when ``None``)."""

Retryable = Callable[[LlmError], bool]


def _retryable(exc: LlmError) -> bool:
    return exc.retryable


async def _retry_after(
    error: LlmError,
    attempt: Callable[[], Awaitable[LlmResponse]],
    retries: int,
    settings: RetrySettings,
    retryable: Retryable,
) -> LlmResponse:
    """Go on after a retryable first failure ``error`` (see :func:`orchestration.backoff.retry_after`)."""
    from orchestration.backoff import retry_after  # tenacity is imported on the first retry, not with the engine

    return await retry_after(error, attempt, retries, settings, retryable)


def _unless_circuit_open(exc: LlmError) -> bool:
    return exc.retryable and not isinstance(exc, CircuitOpenError)


class RetryingLlm(WrapperLlm):
    """One agent's link in a task's call chain: retries its calls and records each attempt.

    With ``has_fallback`` an open circuit is not waited out: the error goes straight to
    the next agent of the chain. Streams are passed through without retries.
    """

    def __init__(
        self,
        wrapped: BaseLlm,
        retries: int,
        settings: RetrySettings,
        *,
        has_fallback: bool = False,
    ) -> None:
        super().__init__(wrapped)
        self.retries = retries
        self.retry_settings = settings
        self.retryable: Retryable = _unless_circuit_open if has_fallback else _retryable

    async def generate_content_async(self, messages: Sequence[Message], **options: Any) -> LlmResponse:
        # The first attempt runs outside the retry machinery (no closure, no tenacity): most calls succeed at once.
        try:
            return await self._attempt(messages, options)
        except LlmError as exc:
            if self.retries == 0 or not self.retryable(exc):
                raise
            first_error = exc
        attempt = partial(self._attempt, messages, options)
        return await _retry_after(first_error, attempt, self.retries, self.retry_settings, self.retryable)

    async def _attempt(self, messages: Sequence[Message], options: dict[str, Any]) -> LlmResponse:
        """One call of the wrapped model, recorded in the task's attempt log."""
        start = time.perf_counter()
        try:
            response = await self.wrapped.generate_content_async(messages, **options)
        except LlmError as exc:
            self._log(start, exc)
            raise
        self._log(start)
        return response

    def _log(self, start: float, error: LlmError | None = None) -> None:
        """Append the attempt that began at ``start`` to the calling task's attempt log (if it keeps one)."""
        log = attempt_log.get()
        if log is not None:
            error_type = error.type_name if error is not None else None
            log.append({"agent": self.config.name, "error_type": error_type, "duration_s": time.perf_counter() - start})

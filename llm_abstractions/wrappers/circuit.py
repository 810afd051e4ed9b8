"""A circuit breaker per endpoint, and ``CircuitBreakerLlm`` that consults it.

After ``failure_threshold`` consecutive provider-side failures (unavailable, timeout,
connection; not 429s, which the endpoint limits handle, and not errors about the
request itself) the circuit opens: calls fail at once with :class:`CircuitOpenError`
for ``cooldown_s``. Then one trial call is let through; its success closes the
circuit, its failure opens it for another cool-down.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import CircuitOpenError, LlmError, RateLimitedError, ReplicaLostError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["CircuitBreaker", "CircuitBreakerLlm", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(exc: LlmError) -> bool:
    """Provider-side trouble: retryable errors other than rate limits, open circuits and a lost replica."""
    return exc.retryable and not isinstance(exc, RateLimitedError | CircuitOpenError | ReplicaLostError)


class CircuitBreaker:
    """Closed -> open after repeated failures -> half-open after a cool-down -> one trial decides."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self.opened = 0
        """How many times the circuit opened."""

    def before_call(self, provider: str | None = None) -> None:
        """Let a call through or raise :class:`CircuitOpenError`."""
        if self.state is CircuitState.CLOSED:
            return
        remaining = self._opened_at + self.cooldown_s - self._clock()
        if self.state is CircuitState.OPEN and remaining <= 0:
            self.state = CircuitState.HALF_OPEN
        if self.state is CircuitState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        raise CircuitOpenError(
            f"circuit open after {self.failure_threshold} consecutive failures; not calling the endpoint",
            retry_after=max(remaining, self.cooldown_s / 10),
            provider=provider,
        )

    def on_success(self) -> None:
        self._failures = 0
        self._trial_in_flight = False
        self.state = CircuitState.CLOSED

    def on_failure(self, exc: LlmError) -> None:
        was_trial = self._trial_in_flight
        self._trial_in_flight = False
        if not counts_as_failure(exc):
            return
        self._failures += 1
        if was_trial or (self.state is CircuitState.CLOSED and self._failures >= self.failure_threshold):
            self.state = CircuitState.OPEN
            self._opened_at = self._clock()
            self.opened += 1

    def on_abandoned(self) -> None:
        """A call ended without an answer (cancelled): a trial call frees its place."""
        self._trial_in_flight = False


class CircuitBreakerLlm(WrapperLlm):
    """Fails fast while ``breaker`` is open; reports each call's outcome to it."""

    def __init__(self, wrapped: BaseLlm, breaker: CircuitBreaker) -> None:
        super().__init__(wrapped)
        self.breaker = breaker

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """One call under the breaker: refused while open, its outcome reported after."""
        self.breaker.before_call(self.config.provider)
        try:
            yield
        except LlmError as exc:
            self.breaker.on_failure(exc)
            raise
        except BaseException:
            self.breaker.on_abandoned()
            raise
        self.breaker.on_success()

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        with self._guarded():
            return await self.wrapped.generate_content_async(messages, options, **overrides)

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        with self._guarded():
            async for chunk in self.wrapped.stream_content_async(messages, options, **overrides):
                yield chunk

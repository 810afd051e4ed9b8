"""Limits shared by every call to one provider endpoint, and ``LimitedLlm`` that applies them.

One :class:`EndpointLimits` exists per endpoint (provider type plus base URL) per run,
shared by every task and every agent that calls it:

- a concurrency limit (an ``anyio.CapacityLimiter`` whose ``total_tokens`` moves at run time),
- a requests-per-minute and a tokens-per-minute budget (leaky buckets, see :mod:`.budget`),
- an endpoint-wide pause: the first 429 answering a request sent after the last backoff
  pauses every caller for its ``Retry-After`` (or ``default_backoff_s``) and halves the
  concurrency limit; 429s answering requests sent before that backoff are the same
  signal and change nothing. Each success then adds one slot per window of ``limit``
  successes (additive increase, multiplicative decrease) up to ``max_concurrent``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import RateLimitedError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message, Usage
from llm_abstractions.wrappers.budget import Budget, budget
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["EndpointLimits", "LimitSettings", "LimitedLlm", "estimate_tokens"]


@dataclass(frozen=True)
class LimitSettings:
    """Configuration of one endpoint's limits; ``None`` means unlimited."""

    max_concurrent: int | None = None
    """Calls in flight at once (the ceiling AIMD recovers to)."""
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    """Input plus output tokens; input is estimated before the call, the rest charged after."""
    default_backoff_s: float = 1.0
    """Endpoint-wide pause after a 429 that names no ``Retry-After``."""
    max_backoff_s: float = 120.0
    """Cap on an honoured ``Retry-After``."""

    def __post_init__(self) -> None:
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")

    @property
    def unlimited(self) -> bool:
        """No concurrency, request or token limit is set."""
        return self.max_concurrent is None and self.requests_per_minute is None and self.tokens_per_minute is None

    def merged(self, other: LimitSettings) -> LimitSettings:
        """The stricter of two settings for the same endpoint."""

        def low(a: float | None, b: float | None) -> Any:
            return b if a is None else a if b is None else min(a, b)

        return LimitSettings(
            low(self.max_concurrent, other.max_concurrent),
            low(self.requests_per_minute, other.requests_per_minute),
            low(self.tokens_per_minute, other.tokens_per_minute),
            min(self.default_backoff_s, other.default_backoff_s),
            min(self.max_backoff_s, other.max_backoff_s),
        )


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A cheap upper-ish estimate of input tokens: four characters per token."""
    return sum(len(m.content) for m in messages) // 4 + 1


def _bucket(per_minute: float | None) -> Budget | None:
    """A leaky bucket with about one second of burst, so a window never holds twice the budget."""
    if per_minute is None:
        return None
    burst = max(1.0, per_minute / 60.0)
    return budget(burst, burst * 60.0 / per_minute)


class EndpointLimits:
    """The shared limit state of one endpoint. Create it anywhere; it binds to the event loop on use."""

    def __init__(self, settings: LimitSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.ceiling: float = settings.max_concurrent or math.inf
        self._clock = clock
        self._slots = anyio.CapacityLimiter(self.ceiling)
        self._budgets: tuple[Budget | None, Budget | None] | None = None
        """Requests and tokens buckets, made on first use for the event loop that runs."""
        self._token_debt = 0
        self._paused_until = -math.inf
        self._last_backoff = -math.inf
        self._successes = 0
        self.backoffs = 0
        """How many endpoint-wide backoffs happened."""

    @property
    def concurrency(self) -> float:
        """The current concurrency limit."""
        return self._slots.total_tokens

    @property
    def in_flight(self) -> int:
        return int(self._slots.borrowed_tokens)

    def paused_for(self) -> float:
        """Seconds until the endpoint-wide pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self, tokens: int = 0) -> float:
        """Take a concurrency slot, wait out any pause and the budgets; return the send time.

        Pair every successful call with :meth:`release`, in the same task.
        """
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._slots.acquire()
        try:
            settings = self.settings
            if settings.requests_per_minute or settings.tokens_per_minute or self.paused_for() > 0:
                await self._admit(tokens)
        except BaseException:
            self._slots.release()
            raise
        return self._clock()

    def release(self) -> None:
        self._slots.release()

    async def _admit(self, tokens: int) -> None:
        if self._budgets is None:
            self._budgets = (_bucket(self.settings.requests_per_minute), _bucket(self.settings.tokens_per_minute))
        requests, token_budget = self._budgets
        while True:
            delay = self.paused_for()
            if delay > 0:  # the pause may be extended while we sleep: look again after
                await anyio.sleep(delay)
                continue
            if requests is not None:
                await requests.acquire()
            if token_budget is not None:
                amount, self._token_debt = tokens + self._token_debt, 0
                await token_budget.acquire(min(amount, token_budget.max_rate))
            if self.paused_for() <= 0:
                return

    def on_success(self, estimated_tokens: int = 0, usage: Usage | None = None) -> None:
        """Record a success: charge unestimated tokens, grow the concurrency limit additively."""
        if usage is not None and self.settings.tokens_per_minute is not None:
            self._token_debt += max(0, usage.input_tokens + usage.output_tokens - estimated_tokens)
        limit = self._slots.total_tokens
        if limit < self.ceiling:
            self._successes += 1
            if self._successes >= limit:
                self._successes = 0
                self._slots.total_tokens = int(limit) + 1

    def on_rate_limited(self, sent_at: float, retry_after: float | None) -> None:
        """Back off the whole endpoint once per burst of 429s (see the module docstring)."""
        if sent_at < self._last_backoff:
            return
        now = self._clock()
        self._last_backoff = now
        pause = self.settings.default_backoff_s if retry_after is None else retry_after
        pause = min(self.settings.max_backoff_s, pause)
        self._paused_until = max(self._paused_until, now + pause)
        current = min(self._slots.total_tokens, self._slots.borrowed_tokens)
        self._slots.total_tokens = max(1, int(current) // 2)
        self._successes = 0
        self.backoffs += 1


class LimitedLlm(WrapperLlm):
    """Calls ``wrapped`` within the endpoint's limits and feeds back 429s and successes."""

    def __init__(self, wrapped: BaseLlm, limits: EndpointLimits) -> None:
        super().__init__(wrapped)
        self.limits = limits

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        limits = self.limits
        tokens = estimate_tokens(messages) if limits.settings.tokens_per_minute is not None else 0  # hot path
        sent_at = await limits.acquire(tokens)
        try:
            response = await self.wrapped.generate_content_async(messages, options, **overrides)
        except RateLimitedError as exc:
            limits.on_rate_limited(sent_at, exc.retry_after)
            raise
        finally:
            limits.release()
        limits.on_success(tokens, response.usage)
        return response

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        limits = self.limits
        tokens = estimate_tokens(messages)
        usage: Usage | None = None
        sent_at = await limits.acquire(tokens)
        try:
            async for chunk in self.wrapped.stream_content_async(messages, options, **overrides):
                usage = chunk.usage or usage
                yield chunk
        except RateLimitedError as exc:
            limits.on_rate_limited(sent_at, exc.retry_after)
            raise
        finally:
            limits.release()
        limits.on_success(tokens, usage)

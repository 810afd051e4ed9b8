"""Limits shared by every call to one provider endpoint, and ``LimitedLlm`` that applies them.

One :class:`EndpointLimits` exists per endpoint (provider type plus base URL) per run, shared by
every task and every agent of the run that calls it. It holds the run's concurrency limit (an
``anyio.CapacityLimiter``) and the endpoint's :class:`~llm_abstractions.wrappers.pacing.Pacer`,
which spaces calls at the configured, stated (rate-limit headers) or learned (429s) request and
token rates and which every run of the process that uses the endpoint shares. ``LimitedLlm``
takes a slot and the pacer's admission before each call, and tells the pacer how it ended.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from llm_abstractions.attachments import estimated_tokens
from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import LlmError, RateLimitedError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message, Usage
from llm_abstractions.rate_limits import RateLimits
from llm_abstractions.wrappers.pacing import Pacer, PaceReason, PacingSettings, PacingStatus, Ticket, Wait
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["EndpointLimits", "LimitSettings", "LimitedLlm", "estimate_tokens"]

_REPORT_EVERY_S = 2.0
"""A pace that keeps its reason is reported at most this often (and only after a change of over 10%)."""


@dataclass(frozen=True)
class LimitSettings:
    """Configuration of one endpoint's limits; ``None`` means unlimited."""

    max_concurrent: int | None = None
    """Calls of this run in flight at once."""
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

    def pacing(self, *, learns: bool = True) -> PacingSettings:
        """The pacer settings of these limits (``learns``: probe first, follow headers and 429s)."""
        return PacingSettings(
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            default_backoff_s=self.default_backoff_s,
            max_backoff_s=self.max_backoff_s,
            learns=learns,
        )


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A cheap upper-ish estimate of input tokens: four characters per token, and attachments as
    :func:`~llm_abstractions.attachments.estimated_tokens` counts them."""
    tokens = sum(len(m.content) for m in messages) // 4 + 1
    for message in messages:
        if message.attachments:
            tokens += sum(estimated_tokens(a) for a in message.attachments)
    return tokens


class EndpointLimits:
    """One run's limits of one endpoint: its concurrency slots, and the endpoint's shared pacer."""

    def __init__(self, settings: LimitSettings, pacer: Pacer | None = None) -> None:
        """``pacer``: the endpoint's shared one; without it a pacer of this run's own, on the event loop's clock."""
        self.settings = settings
        self.pacer = pacer or Pacer(settings.pacing(), clock=anyio.current_time)
        self._slots = anyio.CapacityLimiter(settings.max_concurrent or math.inf)
        self._turn = anyio.Lock()
        """Callers the pacer made wait queue here, first come first served."""
        self._answered: anyio.Event | None = None
        """Set on the first answer, waking callers held back while the endpoint is probed."""
        self.on_pace: Callable[[PacingStatus], None] | None = None
        """Told of the pace after a call changed it (its reason, or its rate by over 10%)."""
        self._reported = PacingStatus(None, None, PaceReason.UNLIMITED)
        self._reported_at = -math.inf

    @property
    def concurrency(self) -> float:
        """The concurrency limit."""
        return self._slots.total_tokens

    @property
    def in_flight(self) -> int:
        return int(self._slots.borrowed_tokens)

    @property
    def backoffs(self) -> int:
        """How many 429 bursts paused the endpoint."""
        return self.pacer.backoffs

    def paused_for(self) -> float:
        """Seconds until the endpoint-wide pause ends (0 when not paused)."""
        return self.pacer.status().paused_s

    async def acquire(self, tokens: int = 0) -> Ticket:
        """Take a concurrency slot and the pacer's admission for a call charged ``tokens``.

        Pair every admission with :meth:`release`, in the same task, and report how the call
        ended (:meth:`on_answer` or :meth:`on_error`).
        """
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._slots.acquire()
        try:
            admitted = self.pacer.try_send(tokens)
            if isinstance(admitted, Wait):
                admitted = await self._wait_turn(tokens)
        except BaseException:
            self._slots.release()
            raise
        return admitted

    async def _wait_turn(self, tokens: int) -> Ticket:
        if self._answered is None:
            self._answered = anyio.Event()
        async with self._turn:
            while isinstance(admitted := self.pacer.try_send(tokens), Wait):
                if admitted.probing:
                    with anyio.move_on_after(admitted.seconds):
                        await self._answered.wait()
                else:
                    await anyio.sleep(admitted.seconds)
            return admitted

    def release(self) -> None:
        self._slots.release()

    def on_answer(self, ticket: Ticket, rate_limits: RateLimits | None, usage: Usage | None) -> None:
        """The call admitted with ``ticket`` succeeded."""
        used = None if usage is None else usage.input_tokens + usage.output_tokens
        self.pacer.on_answer(ticket, rate_limits, used)
        self._after_answer()

    def on_error(self, ticket: Ticket, error: LlmError) -> None:
        """The call admitted with ``ticket`` failed with ``error``."""
        if isinstance(error, RateLimitedError):
            self.pacer.on_rate_limited(ticket, error.retry_after, error.rate_limits)
        else:
            self.pacer.on_failure(ticket, error.rate_limits)
        self._after_answer()

    def _after_answer(self) -> None:
        if self._answered is not None:
            self._answered.set()
        if self.on_pace is not None:
            self._report(self.on_pace)

    def _report(self, on_pace: Callable[[PacingStatus], None]) -> None:
        status, last = self.pacer.status(), self._reported
        now = time.monotonic()
        if status.reason == last.reason and (now - self._reported_at < _REPORT_EVERY_S or not _changed(status, last)):
            return
        self._reported, self._reported_at = status, now
        on_pace(status)


def _changed(status: PacingStatus, last: PacingStatus) -> bool:
    """Whether a rate moved by over 10% (or appeared or went)."""
    for new, old in (
        (status.requests_per_minute, last.requests_per_minute),
        (status.tokens_per_minute, last.tokens_per_minute),
    ):
        if (new is None) != (old is None) or (new is not None and old is not None and abs(new - old) > 0.1 * old):
            return True
    return False


class LimitedLlm(WrapperLlm):
    """Calls ``wrapped`` within the endpoint's limits and tells its pacer how each call ended."""

    def __init__(self, wrapped: BaseLlm, limits: EndpointLimits) -> None:
        super().__init__(wrapped)
        self.limits = limits

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        limits = self.limits
        ticket = await limits.acquire(estimate_tokens(messages))
        try:
            response = await self.wrapped.generate_content_async(messages, options, **overrides)
        except LlmError as exc:
            limits.on_error(ticket, exc)
            raise
        finally:
            limits.release()
        limits.on_answer(ticket, response.rate_limits, response.usage)
        return response

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        limits = self.limits
        usage: Usage | None = None
        rate_limits: RateLimits | None = None
        ticket = await limits.acquire(estimate_tokens(messages))
        try:
            async for chunk in self.wrapped.stream_content_async(messages, options, **overrides):
                usage = chunk.usage or usage
                rate_limits = chunk.rate_limits or rate_limits
                yield chunk
        except LlmError as exc:
            limits.on_error(ticket, exc)
            raise
        finally:
            limits.release()
        limits.on_answer(ticket, rate_limits, usage)

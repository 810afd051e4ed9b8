"""``CallChain``: one task's call of its agent, retried, then of each fallback in turn.

Each link is an agent's shared, guarded client (its endpoint's limits and circuit breaker,
its call timeout, streaming for time to first token: see
:meth:`orchestration.executor.TaskExecutor.guarded_llm`) with the agent's retry settings. A link
fails for good when its retries are used up or its error is not retryable; the next link is
then tried. With a fallback behind it, a link does not wait for its open circuit: the refusal
goes straight to the fallback. Every attempt is appended to the caller's list, so chains can
be shared by concurrent tasks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from agent_registry import RetrySettings
from llm_abstractions import BaseLlm, CircuitOpenError, GenerationOptions, LlmError, LlmResponse, Message
from orchestration.models import AttemptRecord

__all__ = ["CallChain", "ChainLink"]

Retryable = Callable[[LlmError], bool]
"""Whether a link tries its call again after this error."""


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One agent of a chain: its guarded client and how its failed calls are retried."""

    agent: str
    llm: BaseLlm
    retries: int
    """Retries after the first attempt."""
    settings: RetrySettings


def _retryable(exc: LlmError) -> bool:
    return exc.retryable


def _retryable_unless_circuit_open(exc: LlmError) -> bool:
    return exc.retryable and not isinstance(exc, CircuitOpenError)


class CallChain:
    """An agent and its fallbacks, tried in order; see the module's description."""

    def __init__(self, links: Sequence[ChainLink]) -> None:
        if not links:
            raise ValueError("a call chain needs at least one link")
        self.links = list(links)

    async def prepare(self) -> None:
        """Prepare every link's client (SDK import, client set-up) before the first call."""
        for link in self.links:
            await link.llm.prepare()

    async def call(
        self, messages: Sequence[Message], options: GenerationOptions, attempts: list[AttemptRecord]
    ) -> LlmResponse:
        """The first answer of the chain; raise the last link's error when every link failed.

        Each attempt (request sent, or refused by an open circuit) is appended to ``attempts``.
        """
        *firsts, last = self.links
        for link in firsts:
            with contextlib.suppress(LlmError):  # this agent failed for good: the next one is tried
                return await self._call_link(link, messages, options, attempts, _retryable_unless_circuit_open)
        return await self._call_link(last, messages, options, attempts, _retryable)

    async def _call_link(
        self,
        link: ChainLink,
        messages: Sequence[Message],
        options: GenerationOptions,
        attempts: list[AttemptRecord],
        retryable: Retryable,
    ) -> LlmResponse:
        started = time.monotonic()
        try:
            return await _attempt(link, messages, options, attempts)
        except LlmError as exc:
            if link.retries == 0 or not retryable(exc):
                raise
            error = exc
        from orchestration.retry import retry_after_failure  # tenacity is imported on the first retry

        return await retry_after_failure(
            error,
            partial(_attempt, link, messages, options, attempts),
            retries=link.retries,
            settings=link.settings,
            retryable=retryable,
            started=started,
        )


async def _attempt(
    link: ChainLink, messages: Sequence[Message], options: GenerationOptions, attempts: list[AttemptRecord]
) -> LlmResponse:
    """One call of the link's client, appended to ``attempts``."""
    start = time.perf_counter()
    try:
        response = await link.llm.generate_content_async(messages, options)
    except LlmError as exc:
        attempts.append(
            AttemptRecord(agent=link.agent, error_type=exc.type_name, duration_s=time.perf_counter() - start)
        )
        raise
    attempts.append(AttemptRecord(agent=link.agent, error_type=None, duration_s=time.perf_counter() - start))
    return response

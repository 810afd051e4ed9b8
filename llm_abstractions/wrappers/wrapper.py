"""``WrapperLlm``: a ``BaseLlm`` that delegates every call to another one.

Cross-cutting behaviour (limits, circuit breaking, timeouts, fallbacks, retries) is
written as a wrapper overriding the two public call methods, so callers compose
behaviour instead of branching on it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from llm_abstractions.base import BaseLlm
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message

__all__ = ["WrapperLlm"]


class WrapperLlm(BaseLlm):
    """Delegates to ``wrapped``; subclasses override the calls they change.

    Per-call options are passed through unresolved, so each wrapped model applies its
    own configured defaults (which matters when a fallback model has different ones).
    """

    provider = "wrapper"

    def __init__(self, wrapped: BaseLlm) -> None:
        self.wrapped = wrapped
        self.config = wrapped.config
        self.settings = wrapped.settings

    @property
    def pricing_provider(self) -> str | None:
        return self.wrapped.pricing_provider

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        return await self.wrapped.generate_content_async(messages, options, **overrides)

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        async for chunk in self.wrapped.stream_content_async(messages, options, **overrides):
            yield chunk

    async def count_tokens_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> int | None:
        return await self.wrapped.count_tokens_async(messages, options)

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        return await self.generate_content_async(messages, options)

    async def prepare(self) -> None:
        await self.wrapped.prepare()

    async def aclose(self) -> None:
        await self.wrapped.aclose()

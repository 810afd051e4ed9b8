"""The token-iterator bridge: one accounting path for streamed and complete answers.

A provider (or local runner) that produces an async iterator of :class:`LlmChunk`
subclasses :class:`StreamingLlm` and implements only ``_stream``; complete answers
are collected from the same stream by :func:`collect_stream`, so text, usage,
finish reason and time to first token are computed in one place.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message, Usage
from llm_abstractions.rate_limits import RateLimits

__all__ = ["ChunkCallback", "StreamingLlm", "collect_stream"]

ChunkCallback = Callable[[LlmChunk], Any]


async def collect_stream(
    chunks: AsyncIterator[LlmChunk],
    *,
    provider: str,
    model: str | None = None,
    on_chunk: ChunkCallback | None = None,
) -> LlmResponse:
    """Drain ``chunks`` into one :class:`LlmResponse`.

    ``on_chunk`` sees every chunk; if it raises, the stream is closed (closing the
    connection) and the exception propagates. An :class:`LlmError` raised after some
    text arrived carries that text as ``partial_text``. The iterator is always closed,
    also on cancellation.
    """
    start = time.perf_counter()
    first_token: float | None = None
    parts: list[str] = []
    usage: Usage | None = None
    finish_reason: str | None = None
    served = model
    rate_limits: RateLimits | None = None
    try:
        async for chunk in chunks:
            if chunk.text:
                if first_token is None:
                    first_token = time.perf_counter() - start
                parts.append(chunk.text)
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason is not None:
                finish_reason = chunk.finish_reason
            if chunk.model:
                served = chunk.model
            if chunk.rate_limits is not None:
                rate_limits = chunk.rate_limits
            if on_chunk is not None:
                on_chunk(chunk)
    except LlmError as exc:
        if parts and exc.partial_text is None:
            exc.partial_text = "".join(parts)
        raise
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return LlmResponse(
        text="".join(parts),
        provider=provider,
        model=served,
        finish_reason=finish_reason,
        usage=usage,
        latency_s=time.perf_counter() - start,
        time_to_first_token_s=first_token,
        rate_limits=rate_limits,
    )


class StreamingLlm(BaseLlm):
    """A ``BaseLlm`` defined by its stream: ``_generate`` collects ``_stream``."""

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        return await collect_stream(self._stream(messages, options), provider=self.provider, model=self.model_name)

    @abstractmethod
    def _stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[LlmChunk]:
        """The provider's chunk stream (an async generator)."""

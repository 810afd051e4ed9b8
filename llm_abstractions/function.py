"""``FunctionLlm``: a model whose answers come from a Python function, for tests and glue code.

The function receives the messages and the resolved :class:`GenerationOptions` of each call
and returns the answer; a stream function yields it in pieces. Both may be sync or async.
Sync functions run directly on the event loop: one that is slow should be async, or move its
work to a thread itself (``anyio.to_thread.run_sync``). An :class:`LlmError` it raises
propagates unchanged, so retries and fallbacks apply as they do to a real provider.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TypeAlias, TypeVar

from llm_abstractions.attachments import ANY_ATTACHMENT
from llm_abstractions.base import BaseLlm
from llm_abstractions.config import LlmConfig
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message
from llm_abstractions.streaming import collect_stream

__all__ = ["FunctionLlm", "LlmFunction", "StreamFunction", "StreamPiece"]

StreamPiece: TypeAlias = str | LlmChunk
"""One piece of a streamed answer: its text, or a whole chunk."""
LlmFunction: TypeAlias = Callable[
    [Sequence[Message], GenerationOptions], str | LlmResponse | Awaitable[str | LlmResponse]
]
"""Answers one call: the text, or a whole response."""
StreamFunction: TypeAlias = Callable[
    [Sequence[Message], GenerationOptions], Iterator[StreamPiece] | AsyncIterator[StreamPiece]
]
"""Streams one call's answer: a sync or async generator of pieces."""

_T = TypeVar("_T")


class FunctionLlm(BaseLlm):
    """A ``BaseLlm`` driven by ``function`` and/or ``stream_function``.

    Give either or both: without ``function``, complete answers are collected from
    ``stream_function``; without ``stream_function``, the stream is one chunk holding the
    answer of ``function``. ``name`` and ``model`` build the client's :class:`LlmConfig`;
    pass ``config`` instead to set default options or a timeout as well.
    """

    provider = "function"
    in_process = True
    cacheable = False
    attachment_limits = ANY_ATTACHMENT

    def __init__(
        self,
        function: LlmFunction | None = None,
        *,
        stream_function: StreamFunction | None = None,
        name: str | None = None,
        model: str | None = None,
        config: LlmConfig | None = None,
    ) -> None:
        if function is None and stream_function is None:
            raise TypeError("FunctionLlm needs a function, a stream_function or both")
        if config is None:
            config = LlmConfig(name=name or self.provider, provider=self.provider, model=model)
        elif name is not None or model is not None:
            raise TypeError("give name and model inside config, not beside it")
        super().__init__(config)
        self.function = function
        """Answers complete calls."""
        self.stream_function = stream_function
        """Answers streamed calls."""

    @property
    def streams(self) -> bool:
        """Whether answers are streamed for real: only with a ``stream_function``."""
        return self.stream_function is not None

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        if self.function is None:
            return await collect_stream(self._stream(messages, options), provider=self.provider, model=self.model_name)
        start = time.perf_counter()
        answer = self.function(messages, options)
        if inspect.isawaitable(answer):
            answer = await answer
        if isinstance(answer, LlmResponse):
            return answer
        return LlmResponse(
            text=answer,
            provider=self.provider,
            model=self.model_name,
            finish_reason="stop",
            latency_s=time.perf_counter() - start,
        )

    def _stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[LlmChunk]:
        if self.stream_function is None:
            return super()._stream(messages, options)
        return self._chunks(self.stream_function(messages, options))

    async def _chunks(self, pieces: Iterator[StreamPiece] | AsyncIterator[StreamPiece]) -> AsyncIterator[LlmChunk]:
        """The pieces as chunks, ending with finish reason ``stop`` unless a chunk gave one; closes ``pieces``."""
        source = pieces if isinstance(pieces, AsyncIterator) else _iterate(pieces)
        finished = False
        try:
            async for piece in source:
                chunk = LlmChunk(text=piece) if isinstance(piece, str) else piece
                finished = finished or chunk.finish_reason is not None
                yield chunk
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
        if not finished:
            yield LlmChunk(finish_reason="stop")


async def _iterate(items: Iterator[_T]) -> AsyncIterator[_T]:
    """``items`` as an async iterator; closing it closes a generator behind ``items``."""
    try:
        for item in items:
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()

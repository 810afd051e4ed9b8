"""``TimeoutLlm``: the per-call timeout (``LlmConfig.timeout_s``) as a wrapper.

The call runs inside an anyio cancel scope, so a timeout cancels the SDK call itself
(its HTTP request is abandoned and the connection closed), not just the wait for it.
For streams the limit covers the whole stream, checked while waiting for each chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from llm_abstractions.errors import LlmTimeoutError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["TimeoutLlm"]


class TimeoutLlm(WrapperLlm):
    """Raises :class:`LlmTimeoutError` (retryable) when one call exceeds ``config.timeout_s``."""

    def _error(self) -> LlmTimeoutError:
        return LlmTimeoutError(f"call timed out after {self.config.timeout_s} s", provider=self.config.provider)

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        if self.config.timeout_s is None:
            return await self.wrapped.generate_content_async(messages, options, **overrides)
        try:
            with anyio.fail_after(self.config.timeout_s):
                return await self.wrapped.generate_content_async(messages, options, **overrides)
        except TimeoutError:
            raise self._error() from None

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        limit = self.config.timeout_s
        deadline = None if limit is None else time.monotonic() + limit
        chunks = self.wrapped.stream_content_async(messages, options, **overrides)
        try:
            while True:
                try:
                    with anyio.fail_after(None if deadline is None else deadline - time.monotonic()):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise self._error() from None
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

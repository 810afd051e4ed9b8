"""``StreamedLlm``: complete answers collected from the model's stream, so time to first token is measured."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm_abstractions.messages import GenerationOptions, LlmResponse, Message
from llm_abstractions.streaming import collect_stream
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["StreamedLlm"]


class StreamedLlm(WrapperLlm):
    """``generate_content_async`` drains ``stream_content_async`` (closing it on error or cancellation)."""

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        wrapped = self.wrapped
        return await collect_stream(
            wrapped.stream_content_async(messages, options, **overrides),
            provider=wrapped.provider,
            model=wrapped.model_name,
        )

"""``FallbackLlm``: try models in order until one answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["FallbackLlm"]


def _any_llm_error(exc: LlmError) -> bool:
    return True


class FallbackLlm(WrapperLlm):
    """Calls ``models[0]``; when it fails for good with an ``LlmError`` that ``fall_back_on``
    accepts, calls the next one, and so on. The last error is raised when all fail.

    Each model is called through its public methods with the caller's per-call options,
    so each applies its own configured defaults. Streams fall back only before their
    first chunk: text already handed out cannot be taken back.
    """

    def __init__(self, models: Sequence[BaseLlm], *, fall_back_on: Callable[[LlmError], bool] = _any_llm_error) -> None:
        if not models:
            raise ValueError("FallbackLlm needs at least one model")
        super().__init__(models[0])
        self.models = list(models)
        self.fall_back_on = fall_back_on

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        for model in self.models[:-1]:
            try:
                return await model.generate_content_async(messages, options, **overrides)
            except LlmError as exc:
                if not self.fall_back_on(exc):
                    raise
        return await self.models[-1].generate_content_async(messages, options, **overrides)

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        for model in self.models[:-1]:
            started = False
            try:
                async for chunk in model.stream_content_async(messages, options, **overrides):
                    started = True
                    yield chunk
                return
            except LlmError as exc:
                if started or not self.fall_back_on(exc):
                    raise
        async for chunk in self.models[-1].stream_content_async(messages, options, **overrides):
            yield chunk

    async def prepare(self) -> None:
        for model in self.models:
            await model.prepare()

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()

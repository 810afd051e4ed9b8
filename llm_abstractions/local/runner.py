"""``LocalRunner``: the interface of an in-process inference runtime holding one model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from typing import Any, ClassVar

from llm_abstractions.messages import GenerationOptions, LlmChunk, Message

__all__ = ["LocalRunner", "Prompt"]

Prompt = Sequence[Message] | str
"""Chat messages (rendered with the model's chat template when it has one) or a plain prompt."""


class LocalRunner(ABC):
    """One loaded model of a local runtime, serving many concurrent streams.

    A runner is created empty, :meth:`load`-ed once, shared by every task that uses
    the same model, and :meth:`close`-d when the last user releases it (see
    :class:`~llm_abstractions.local.pool.RunnerPool`).
    """

    name: ClassVar[str]
    """The key this runner is registered under."""

    @abstractmethod
    async def load(self, model: str, **device_options: Any) -> None:
        """Load ``model`` (a local path or a model id already in the local cache); never downloads."""

    @abstractmethod
    def stream(self, prompt: Prompt, options: GenerationOptions) -> AsyncGenerator[LlmChunk, None]:
        """Generate for one request: text chunks, then a last chunk with finish reason and usage.

        Closing the iterator early (or cancelling the task reading it) stops this
        request's generation; other requests on the same model go on.
        """

    @abstractmethod
    async def close(self) -> None:
        """Stop serving and free the model's memory."""

"""``BaseLlm``: the one interface every provider implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from pydantic import BaseModel

from llm_abstractions.attachments import Attachment, AttachmentLimits, attachment_problems, inline_text_attachments
from llm_abstractions.config import LlmConfig
from llm_abstractions.errors import InvalidRequestError
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message

__all__ = ["BaseLlm", "NoSettings"]


class NoSettings(BaseModel, extra="forbid", defer_build=True):
    """Settings model of a provider that takes no provider-specific keys."""


class BaseLlm(ABC):
    """An async model client. One instance serves many concurrent calls.

    Subclasses implement :meth:`_generate` and may implement :meth:`_stream`;
    the public methods merge one call's options over the configured defaults. A call's
    options are given validated (``options``, as the engine does) or as keywords
    (``temperature=0.2``), which are validated here. Messages with attachments are checked
    against :attr:`attachment_limits` first (an ``InvalidRequestError``, and no call, when
    refused), and their text files inlined: ``_generate`` and ``_stream`` see only images and PDFs (unless
    :attr:`inlines_text` is ``False``).
    """

    provider: ClassVar[str]
    """The provider key this class is registered under."""
    settings_model: ClassVar[type[BaseModel]] = NoSettings
    """Validates ``LlmConfig.settings`` for this provider."""
    attachment_limits: ClassVar[AttachmentLimits | None] = None
    """The images and PDFs this provider takes (types, URLs, sizes); ``None``: none, only text files, which
    every provider takes (inlined into the prompt)."""
    inlines_text: ClassVar[bool] = True
    """Whether text attachments are inlined before ``_generate`` and ``_stream`` see the messages; ``False``: the
    provider gets them as attachments and writes them itself (Claude, to mark them for its prompt cache)."""
    in_process: ClassVar[bool] = False
    """Answers are made in this process, with no endpoint behind them that could rate-limit or fail.

    The engine leaves endpoint limits and circuit breaker out of such a client's calls when they
    have nothing to do (no limit configured, no call timeout that could count as a failure)."""
    cacheable: ClassVar[bool] = True
    """Whether the engine may keep this client's answers in its answer cache; ``False`` for answers that cost
    nothing to make again (the offline provider, Python functions)."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        self.settings = self.settings_model.model_validate(config.settings)

    @classmethod
    def check_config(cls, config: LlmConfig) -> list[str]:
        """Problems that would make calls fail (missing key, missing runtime...), before any run."""
        return cls.check_settings(config)

    @classmethod
    def check_settings(cls, config: LlmConfig) -> list[str]:
        """The part of :meth:`check_config` that does not depend on this machine (the settings are valid): what is
        checked here of a model whose calls are made elsewhere (Ray replicas, which check the rest themselves)."""
        cls.settings_model.model_validate(config.settings)
        return []

    @classmethod
    def option_problems(cls, config: LlmConfig, options: GenerationOptions) -> list[str]:
        """Why this model would reject ``options`` (a combination it does not accept), before any call.

        ``options`` are a call's options as sent (the configured ones with the task's applied).
        By default there is nothing to say.
        """
        return []

    @classmethod
    def attachment_problems(
        cls, config: LlmConfig, attachments: Sequence[Attachment], *, text_bytes: int = 0
    ) -> list[str]:
        """Why this provider would refuse to send ``attachments`` in one request (a type or URL it does not
        take, a size over its limits), before any call; ``text_bytes``: the request's text, when known."""
        return attachment_problems(cls.attachment_limits, cls.provider, attachments, text_bytes=text_bytes)

    def _attached(self, messages: Sequence[Message]) -> Sequence[Message]:
        """``messages`` as ``_generate`` gets them: attachments checked (``InvalidRequestError`` when this provider
        refuses them: nothing is sent), text files inlined (where :attr:`inlines_text`)."""
        for message in messages:
            if message.attachments:
                break
        else:
            return messages
        problems = [
            f"attachments go with user messages, not {m.role} ones"
            for m in messages
            if m.attachments and m.role != "user"
        ]
        attachments = [a for m in messages for a in m.attachments]
        text_bytes = sum(len(m.content.encode()) for m in messages)
        problems += self.attachment_problems(self.config, attachments, text_bytes=text_bytes)
        if problems:
            raise InvalidRequestError("; ".join(problems), provider=self.provider)
        return inline_text_attachments(messages) if self.inlines_text else messages

    @property
    def model_name(self) -> str | None:
        return self.config.model

    @property
    def streams(self) -> bool:
        """Whether this client really streams (it implements ``_stream``): its time to first token means something."""
        return type(self)._stream is not BaseLlm._stream

    @property
    def pricing_provider(self) -> str | None:
        """The genai-prices provider id that prices this client's calls; ``None``: not priced."""
        return None

    def resolve_options(self, overrides: GenerationOptions | Mapping[str, Any] | None = None) -> GenerationOptions:
        """:attr:`base_options` with one call's options applied (a mapping of keywords is validated first)."""
        if not overrides:
            return self.base_options
        if not isinstance(overrides, GenerationOptions):
            overrides = GenerationOptions.model_validate(overrides)
        return self.base_options.merged(overrides)

    @property
    def base_options(self) -> GenerationOptions:
        """The options every call starts from: the configured ones."""
        return self.config.options

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        """Generate a complete answer; ``options`` and keyword ``overrides`` apply to this call."""
        return await self._generate(self._attached(messages), self.resolve_options(_per_call(options, overrides)))

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        """Stream the answer as chunks; closing this stream closes the provider's at once."""
        chunks = self._stream(self._attached(messages), self.resolve_options(_per_call(options, overrides)))
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def count_tokens_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> int | None:
        """The input tokens of a request of ``messages``, counted by the provider's free token-counting endpoint
        (no model is called, nothing is billed); ``None``: the provider has no such endpoint."""
        return None

    @abstractmethod
    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        """Provider call for a complete answer."""

    async def _stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[LlmChunk]:
        """Provider stream; by default one chunk holding the whole answer."""
        response = await self._generate(messages, options)
        yield LlmChunk(
            text=response.text,
            finish_reason=response.finish_reason,
            usage=response.usage,
            model=response.model,
            rate_limits=response.rate_limits,
        )

    async def prepare(self) -> None:
        """Get ready for calls (import the SDK, build the client, load the model) ahead of the first one.

        The engine awaits it once per client before the first call, outside any call timeout.
        Idempotent; problems are left for the call to report. By default there is nothing to do.
        """
        return None

    async def aclose(self) -> None:
        """Release connections and memory held by this client."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _per_call(options: GenerationOptions | None, overrides: Mapping[str, Any]) -> GenerationOptions | None:
    """One call's options: ``options``, with keyword ``overrides`` (validated) on top."""
    if not overrides:
        return options
    extra = GenerationOptions.model_validate(overrides)
    return extra if options is None else options.merged(extra)

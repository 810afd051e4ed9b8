"""Message, option and response types shared by every provider."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_abstractions.attachments import Attachment
from llm_abstractions.rate_limits import RateLimits

__all__ = ["GenerationOptions", "LlmChunk", "LlmResponse", "Message", "Role", "Usage"]

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message: its text, and for a user message the files and images sent with it."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    role: Role
    content: str
    """The text."""
    attachments: tuple[Attachment, ...] = Field(default=(), exclude_if=lambda value: not value)
    """Images, PDFs and text files sent with a user message, before its text (left out when serialised empty;
    serialised, each is its reference: no bytes). See :mod:`llm_abstractions.attachments`."""

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str, attachments: Sequence[Attachment] = ()) -> Message:
        return cls(role="user", content=content, attachments=tuple(attachments))

    @classmethod
    def assistant(cls, content: str) -> Message:
        return cls(role="assistant", content=content)


class GenerationOptions(BaseModel):
    """Sampling and output options for one call; ``None`` means the provider's default."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    """Sampling temperature."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Upper bound on generated tokens."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    top_k: int | None = Field(default=None, gt=0)
    """Sample among the k most likely tokens (where the API has it)."""
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    """Minimum relative probability (local runtimes)."""
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    """Penalty on repeated tokens (local runtimes)."""
    stop: list[str] | None = None
    """Stop sequences."""
    seed: int | None = None
    """Seed for reproducible sampling where supported."""
    json_schema: dict[str, Any] | None = None
    """Ask for JSON output matching this JSON Schema (structured output)."""

    def merged(self, override: GenerationOptions) -> GenerationOptions:
        """Return these options with every field that ``override`` sets replaced."""
        changes = {name: value for name in override.model_fields_set if (value := getattr(override, name)) is not None}
        if not changes:
            return self
        return self.model_copy(update=changes)


class Usage(BaseModel):
    """Token usage of one or more calls, counted the same way for every provider.

    ``input_tokens`` and ``output_tokens`` are totals; the other counts are parts of them, ``None``
    where the provider did not report them. Per provider: OpenAI's ``prompt_tokens`` and Gemini's
    ``promptTokenCount`` already include cached tokens; Anthropic's ``input_tokens`` does not, so its
    ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` are added. OpenAI's
    ``completion_tokens`` and Anthropic's ``output_tokens`` already include reasoning; Gemini's
    ``candidatesTokenCount`` does not, so its ``thoughtsTokenCount`` is added.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)

    input_tokens: int = 0
    """Every prompt token, billed or not: cache reads and cache writes included."""
    output_tokens: int = 0
    """Every generated token: reasoning (thinking) tokens included."""
    cache_read_tokens: int | None = None
    """The part of ``input_tokens`` read from the provider's prompt cache (billed at a lower rate)."""
    cache_write_tokens: int | None = None
    """The part of ``input_tokens`` written to the prompt cache (Anthropic bills it above the input rate)."""
    reasoning_tokens: int | None = None
    """The part of ``output_tokens`` the model spent reasoning before it answered."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=_sum(self.cache_read_tokens, other.cache_read_tokens),
            cache_write_tokens=_sum(self.cache_write_tokens, other.cache_write_tokens),
            reasoning_tokens=_sum(self.reasoning_tokens, other.reasoning_tokens),
        )


def _sum(a: int | None, b: int | None) -> int | None:
    """``None`` when neither count was reported, else their sum."""
    return None if a is None and b is None else (a or 0) + (b or 0)


class LlmResponse(BaseModel):
    """A complete answer from a model."""

    model_config = ConfigDict(defer_build=True)

    text: str
    provider: str
    model: str | None = None
    """The model name the provider says served the call."""
    finish_reason: str | None = None
    """Why the answer ended, normalised across providers:

    - ``stop``: the model finished (end of turn, a stop sequence, or our structured-output tool call);
    - ``length``: cut off by ``max_tokens`` (OpenAI ``length``, Anthropic ``max_tokens`` and
      ``model_context_window_exceeded``, Gemini ``MAX_TOKENS``), the text may be empty when a
      thinking model spent the budget thinking;
    - ``content_filter``: filtered or refused (providers raise ``ContentFilteredError`` instead of answering);
    - ``tool_calls``: the model called a tool;
    - anything else: the provider's own reason, lower-cased (Gemini ``other``, Anthropic ``pause_turn``).
    """
    usage: Usage | None = None
    """``None`` when the provider reported none (never zeros in its place)."""
    latency_s: float = 0.0
    """Wall time of the call."""
    time_to_first_token_s: float | None = None
    """Set when the answer was streamed."""
    rate_limits: RateLimits | None = None
    """What the provider's headers said of its rate limits when it answered (``None``: nothing)."""


class LlmChunk(BaseModel):
    """One piece of a streamed answer; the last chunk may carry usage and finish reason."""

    model_config = ConfigDict(defer_build=True)

    text: str = ""
    finish_reason: str | None = None
    """Normalised as :attr:`LlmResponse.finish_reason`."""
    finish_detail: str | None = None
    """For a ``content_filter`` finish, what the provider said (its own reason and message, e.g. ``SAFETY``)."""
    usage: Usage | None = None
    model: str | None = None
    rate_limits: RateLimits | None = None
    """On the first chunk of a stream whose response headers stated rate limits."""

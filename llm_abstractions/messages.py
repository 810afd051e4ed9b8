"""Message, option and response types shared by every provider."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GenerationOptions", "LlmChunk", "LlmResponse", "Message", "Role", "Usage"]

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    role: Role
    content: str

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

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
    """Token usage of one or more calls."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class LlmResponse(BaseModel):
    """A complete answer from a model."""

    model_config = ConfigDict(defer_build=True)

    text: str
    provider: str
    model: str | None = None
    """The model name the provider says served the call."""
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_s: float = 0.0
    """Wall time of the call."""
    time_to_first_token_s: float | None = None
    """Set when the answer was streamed."""


class LlmChunk(BaseModel):
    """One piece of a streamed answer; the last chunk may carry usage and finish reason."""

    model_config = ConfigDict(defer_build=True)

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None

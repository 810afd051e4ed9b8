"""What a provider needs to build a model client: ``LlmConfig``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from llm_abstractions.messages import GenerationOptions

__all__ = ["LlmConfig"]


class LlmConfig(BaseModel):
    """Provider-facing configuration of one model client.

    ``provider`` is the key the factory resolves (``"gemini"``, ``"offline"``, ...);
    ``settings`` holds provider-specific keys, validated by the provider's own
    ``settings_model``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str
    """A human name for messages (the agent's name)."""
    provider: str
    model: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    options: GenerationOptions = GenerationOptions.model_construct()
    """Default generation options for every call."""
    settings: dict[str, Any] = {}

"""``OpenAICompatibleLlm``: any OpenAI-compatible chat completions server.

The ``preset`` setting names a known endpoint (base URL, key variable, pricing):
``groq`` (``GROQ_API_KEY``), ``xai`` (``XAI_API_KEY``), and the local servers
``ollama``, ``vllm`` and ``lmstudio``, which need no key. An explicit ``base_url``
replaces the preset's; without a preset, ``base_url`` is required and ``api_key`` is
optional. Besides the GPT options, ``top_k``, ``min_p`` and ``repetition_penalty`` are
sent as extra body fields, which vLLM and other local servers understand. Usage is read
where such servers put it (the standard field on any chunk, Groq's ``x_groq.usage``); a
server that reports none gives ``usage`` ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llm_abstractions.config import LlmConfig
from llm_abstractions.messages import GenerationOptions
from llm_abstractions.providers._sdk import env_key
from llm_abstractions.providers.gpt import GptLlm

__all__ = ["PRESETS", "OpenAICompatibleLlm", "OpenAICompatibleSettings", "Preset"]

PresetName = Literal["groq", "xai", "ollama", "vllm", "lmstudio"]


@dataclass(frozen=True)
class Preset:
    """A known OpenAI-compatible endpoint."""

    base_url: str
    key_variable: str | None
    """Where the key comes from; ``None``: the server needs none."""
    pricing_provider: str | None = None
    """genai-prices provider id; ``None``: calls are not priced."""


PRESETS: dict[str, Preset] = {
    "groq": Preset("https://api.groq.com/openai/v1", "GROQ_API_KEY", "groq"),
    "xai": Preset("https://api.x.ai/v1", "XAI_API_KEY", "x-ai"),
    "ollama": Preset("http://localhost:11434/v1", None),
    "vllm": Preset("http://localhost:8000/v1", None),
    "lmstudio": Preset("http://localhost:1234/v1", None),
}

_NO_KEY = "not-needed"
"""Sent as the key to servers that need none (the SDK requires a non-empty one)."""


class OpenAICompatibleSettings(BaseModel):
    """Keys an ``openai_compatible`` agent accepts besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName | None = None
    """A known endpoint: ``groq``, ``xai``, ``ollama``, ``vllm`` or ``lmstudio``."""


class OpenAICompatibleLlm(GptLlm):
    """Chat completions against Groq, xAI, Ollama, vLLM, LM Studio or any ``base_url``."""

    provider = "openai_compatible"
    settings_model = OpenAICompatibleSettings
    settings: OpenAICompatibleSettings
    max_tokens_parameter = "max_tokens"
    has_batch_api = False  # few compatible servers have /v1/batches

    @staticmethod
    def preset_of(config: LlmConfig) -> Preset | None:
        name = OpenAICompatibleSettings.model_validate(config.settings).preset
        return PRESETS[name] if name else None

    @classmethod
    def key_variables_for(cls, config: LlmConfig) -> tuple[str, ...]:
        preset = cls.preset_of(config)
        return (preset.key_variable,) if preset and preset.key_variable else ()

    @classmethod
    def check_config(cls, config: LlmConfig) -> list[str]:
        problems = super().check_config(config)
        if config.base_url is None and cls.preset_of(config) is None:
            problems.append(f"needs base_url or a preset ({', '.join(PRESETS)})")
        return problems

    @property
    def preset(self) -> Preset | None:
        return PRESETS[self.settings.preset] if self.settings.preset else None

    @property
    def pricing_provider(self) -> str | None:
        return self.preset.pricing_provider if self.preset else None

    def _client_arguments(self) -> dict[str, Any]:
        preset = self.preset
        key = self.api_key or env_key(self.key_variables_for(self.config))
        return {
            "api_key": key or _NO_KEY,
            "base_url": self.config.base_url or (preset.base_url if preset else None),
        }

    def _extra_body(self, options: GenerationOptions) -> dict[str, Any]:
        extra = {"top_k": options.top_k, "min_p": options.min_p, "repetition_penalty": options.repetition_penalty}
        return {name: value for name, value in extra.items() if value is not None}

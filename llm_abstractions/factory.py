"""The provider factory: provider key -> ``BaseLlm`` subclass, imported lazily.

Built-in providers are registered by dotted path so importing this module never
imports an SDK. Third-party packages add providers through the entry-point group
``orchestrate.llms`` (name = provider key, value = ``"module:Class"``).
"""

from __future__ import annotations

from llm_abstractions.base import BaseLlm
from llm_abstractions.config import LlmConfig
from llm_abstractions.lazy_registry import LazyRegistry

__all__ = [
    "ENTRY_POINT_GROUP",
    "UnknownProviderError",
    "create_llm",
    "get_llm_class",
    "known_providers",
    "register_llm",
    "unregister_llm",
]

ENTRY_POINT_GROUP = "orchestrate.llms"


class UnknownProviderError(LookupError):
    """No provider is registered under this key."""


_providers: LazyRegistry[BaseLlm] = LazyRegistry(
    BaseLlm,
    ENTRY_POINT_GROUP,
    {
        "offline": "llm_abstractions.offline:OfflineLlm",
        "gemini": "llm_abstractions.providers.gemini:GeminiLlm",
        "claude": "llm_abstractions.providers.claude:ClaudeLlm",
        "gpt": "llm_abstractions.providers.gpt:GptLlm",
        "openai_compatible": "llm_abstractions.providers.openai_compatible:OpenAICompatibleLlm",
        "mlx": "llm_abstractions.local.mlx_llm:MlxLlm",
        "vllm": "llm_abstractions.local.vllm_llm:VllmLlm",
    },
    what="provider type",
    error=UnknownProviderError,
)


def register_llm(provider: str, target: str | type[BaseLlm]) -> None:
    """Register a provider class, or its ``"module:Class"`` path for lazy import."""
    _providers.register(provider, target)


def unregister_llm(provider: str) -> None:
    """Forget a provider (no error if it is unknown)."""
    _providers.unregister(provider)


def known_providers() -> list[str]:
    """Every provider key that can be resolved."""
    return _providers.known()


def get_llm_class(provider: str) -> type[BaseLlm]:
    """Resolve (and cache) the class of a provider; imports its module, not its SDK."""
    return _providers.get(provider)


def create_llm(config: LlmConfig) -> BaseLlm:
    """Build the model client for ``config``."""
    return get_llm_class(config.provider)(config)

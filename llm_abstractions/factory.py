"""The provider factory: provider key -> ``BaseLlm`` subclass, imported lazily.

Built-in providers are registered by dotted path so importing this module never
imports an SDK. Third-party packages add providers through the entry-point group
``orchestrate.llms`` (name = provider key, value = ``"module:Class"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from llm_abstractions.base import BaseLlm
from llm_abstractions.config import LlmConfig

__all__ = ["UnknownProviderError", "create_llm", "get_llm_class", "known_providers", "register_llm"]

ENTRY_POINT_GROUP = "orchestrate.llms"

_BUILTIN: dict[str, str] = {
    "offline": "llm_abstractions.offline:OfflineLlm",
    "gemini": "llm_abstractions.providers.gemini:GeminiLlm",
    "claude": "llm_abstractions.providers.claude:ClaudeLlm",
    "gpt": "llm_abstractions.providers.gpt:GptLlm",
    "openai_compatible": "llm_abstractions.providers.openai_compatible:OpenAICompatibleLlm",
    "mlx": "llm_abstractions.local.mlx_llm:MlxLlm",
    "vllm": "llm_abstractions.local.vllm_llm:VllmLlm",
}

_registry: dict[str, str | type[BaseLlm]] = dict(_BUILTIN)
_entry_points_loaded = False


class UnknownProviderError(LookupError):
    """No provider is registered under this key."""


def register_llm(provider: str, target: str | type[BaseLlm]) -> None:
    """Register a provider class, or its ``"module:Class"`` path for lazy import."""
    _registry[provider] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _registry.setdefault(ep.name, ep.value)


def known_providers() -> list[str]:
    """Every provider key that can be resolved."""
    _load_entry_points()
    return sorted(_registry)


def get_llm_class(provider: str) -> type[BaseLlm]:
    """Resolve (and cache) the class of a provider; imports its module, not its SDK."""
    target = _registry.get(provider)
    if target is None:
        _load_entry_points()
        target = _registry.get(provider)
    if target is None:
        raise UnknownProviderError(f"unknown provider type {provider!r}; known: {', '.join(known_providers())}")
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, BaseLlm)):
            raise TypeError(f"{target} is not a BaseLlm subclass")
        _registry[provider] = cls
        return cls
    return target


def create_llm(config: LlmConfig) -> BaseLlm:
    """Build the model client for ``config``."""
    return get_llm_class(config.provider)(config)

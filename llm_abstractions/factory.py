"""The provider factory: provider key -> ``BaseLlm`` subclass, imported lazily.

:data:`BUILTIN_PROVIDERS` is the one place the built-in provider keys are declared:
each provider's class path, the default agents that its environment variables enable
and, for a provider that runs models in-process, its runner. Classes are registered by
dotted path, so importing this module never imports an SDK. Third-party packages add
providers through the entry-point group ``orchestrate.llms`` (name = provider key,
value = ``"module:Class"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from llm_abstractions.base import BaseLlm
from llm_abstractions.config import LlmConfig
from llm_abstractions.lazy_registry import LazyRegistry

__all__ = [
    "BUILTIN_PROVIDERS",
    "ENTRY_POINT_GROUP",
    "BuiltinProvider",
    "EnvAgent",
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


@dataclass(frozen=True)
class EnvAgent:
    """A default agent, registered when any of its environment variables is set."""

    variables: tuple[str, ...]
    """The variables (the provider's API key) that enable it."""
    model: str
    name: str | None = None
    """The agent's name; ``None``: the provider key."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Provider-specific settings (``preset``...)."""


@dataclass(frozen=True)
class BuiltinProvider:
    """A built-in provider, described once."""

    path: str
    """``"module:Class"`` of its ``BaseLlm`` subclass."""
    env_agents: tuple[EnvAgent, ...] = ()
    """Default agents its environment variables enable."""
    runner: str | None = None
    """``"module:Class"`` of its ``LocalRunner``, for a provider that runs models in-process."""


BUILTIN_PROVIDERS: Mapping[str, BuiltinProvider] = MappingProxyType(
    {
        "offline": BuiltinProvider("llm_abstractions.offline:OfflineLlm"),
        "python": BuiltinProvider("llm_abstractions.python_agent:PythonAgentLlm"),
        "gpt": BuiltinProvider(
            "llm_abstractions.providers.gpt:GptLlm", (EnvAgent(("OPENAI_API_KEY",), "gpt-4.1-mini"),)
        ),
        "claude": BuiltinProvider(
            "llm_abstractions.providers.claude:ClaudeLlm", (EnvAgent(("ANTHROPIC_API_KEY",), "claude-sonnet-4-6"),)
        ),
        "gemini": BuiltinProvider(
            "llm_abstractions.providers.gemini:GeminiLlm",
            (EnvAgent(("GOOGLE_API_KEY", "GEMINI_API_KEY"), "gemini-2.5-flash"),),
        ),
        "openai_compatible": BuiltinProvider(
            "llm_abstractions.providers.openai_compatible:OpenAICompatibleLlm",
            (
                EnvAgent(("GROQ_API_KEY",), "llama-3.3-70b-versatile", name="groq", settings={"preset": "groq"}),
                EnvAgent(("XAI_API_KEY",), "grok-4", name="grok", settings={"preset": "xai"}),
            ),
        ),
        "mlx": BuiltinProvider(
            "llm_abstractions.local.mlx_llm:MlxLlm", runner="llm_abstractions.local.mlx_runner:MlxRunner"
        ),
        "vllm": BuiltinProvider(
            "llm_abstractions.local.vllm_llm:VllmLlm", runner="llm_abstractions.local.vllm_runner:VllmRunner"
        ),
    }
)
"""Every built-in provider by key (read-only)."""

_providers: LazyRegistry[BaseLlm] = LazyRegistry(
    BaseLlm,
    ENTRY_POINT_GROUP,
    {key: provider.path for key, provider in BUILTIN_PROVIDERS.items()},
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

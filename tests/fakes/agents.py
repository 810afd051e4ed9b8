"""Agent settings that point each real provider at a :class:`FakeProviderServer`.

``agent_settings(provider, server, **extra)`` gives the mapping an agents file or a
project's ``agents:`` section holds (``type``, ``model``, ``api_key``, ``base_url``);
``agent_yaml(...)`` the same as the items of a YAML flow mapping (``{...}`` in a project file), ``llm_config(...)``
the matching ``LlmConfig``. ``API_OF[provider]`` names the wire API
the server sees, ``MODEL_OF[provider]`` a model genai-prices knows.
"""

from __future__ import annotations

from typing import Any

from agent_registry import AgentConfig
from llm_abstractions import LlmConfig
from tests.fakes.provider_server import Api, FakeProviderServer

__all__ = ["API_OF", "MODEL_OF", "PROVIDERS", "agent_settings", "agent_yaml", "base_url_for", "llm_config"]

PROVIDERS = ("gpt", "claude", "gemini", "openai_compatible")
API_OF: dict[str, Api] = {"gpt": "openai", "claude": "anthropic", "gemini": "gemini", "openai_compatible": "openai"}
MODEL_OF = {
    "gpt": "gpt-4.1-mini",
    "claude": "claude-sonnet-4-6",
    "gemini": "gemini-2.5-flash",
    "openai_compatible": "llama-3.3-70b-versatile",
}


def base_url_for(provider: str, server: FakeProviderServer) -> str:
    api = API_OF[provider]
    if api == "openai":
        return server.openai_base_url
    return server.anthropic_base_url if api == "anthropic" else server.gemini_base_url


def agent_settings(provider: str, server: FakeProviderServer, **extra: Any) -> dict[str, Any]:
    """``type``, ``model``, ``api_key`` and ``base_url`` of an agent talking to ``server``."""
    settings: dict[str, Any] = {
        "type": provider,
        "model": MODEL_OF[provider],
        "api_key": f"test-{provider}-key",
        "base_url": base_url_for(provider, server),
    }
    settings.update(extra)
    return settings


def agent_yaml(provider: str, server: FakeProviderServer) -> str:
    """:func:`agent_settings` as the items of a YAML flow mapping, each value quoted: ``type: 'gpt', model: ...``."""
    return ", ".join(f"{key}: '{value}'" for key, value in agent_settings(provider, server).items())


def llm_config(provider: str, server: FakeProviderServer, name: str = "agent", **extra: Any) -> LlmConfig:
    return AgentConfig.model_validate({**agent_settings(provider, server, **extra), "name": name}).llm_config()

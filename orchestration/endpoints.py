"""The shared state of each provider endpoint in a run: its limits and its circuit breaker.

An endpoint is a provider type plus a base URL (or preset) plus a key, so two agents that call
the same API with different models share one budget and one breaker; when their
agents configure different limits, the stricter value of each wins. Its pacer is shared
wider still: by every run of the process that calls the endpoint with the same key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions.wrappers import (
    CircuitBreaker,
    EndpointLimits,
    LimitSettings,
    PacingStatus,
    key_digest,
    shared_pacer,
)

__all__ = ["Endpoint", "EndpointKey", "Endpoints", "PaceCallback", "endpoint_key", "endpoint_label"]

EndpointKey = tuple[str, str, str]
PaceCallback = Callable[[str, PacingStatus], None]
"""Told an endpoint's label and its new pace."""


def endpoint_key(agent: AgentConfig) -> EndpointKey:
    """(provider type, base URL or preset or ``""``, digest of the agent's key or ``""``): one allowance each."""
    where = agent.base_url or str(agent.provider_settings.get("preset") or "")
    return agent.agent_type, where.rstrip("/"), key_digest(agent.api_key.get_secret_value() if agent.api_key else None)


def endpoint_label(key: EndpointKey) -> str:
    """How messages name an endpoint: its provider, then the host and path of its URL (no credentials)."""
    provider, where, _ = key
    if "://" in where:
        url = urlsplit(where)
        where = f"{url.hostname or ''}{f':{url.port}' if url.port else ''}{url.path}"
    return f"{provider} {where}" if where else provider


def limit_settings(agent: AgentConfig) -> LimitSettings:
    limits = agent.limits
    return LimitSettings(limits.max_concurrent, limits.requests_per_minute, limits.tokens_per_minute)


@dataclass
class Endpoint:
    """The limits and breaker every call to one endpoint goes through."""

    key: EndpointKey
    limits: EndpointLimits
    breaker: CircuitBreaker
    call_timeouts: bool = True
    """Some agent of the endpoint has a per-call timeout (whose expiry counts as a failure)."""


class Endpoints:
    """Endpoints of a registry's agents, created on first use and kept for the run."""

    def __init__(self, registry: AgentRegistry, *, on_pace: PaceCallback | None = None) -> None:
        self.registry = registry
        self.on_pace = on_pace
        self._endpoints: dict[EndpointKey, Endpoint] = {}

    def for_agent(self, agent: AgentConfig, *, learns: bool = True) -> Endpoint:
        """The endpoint of ``agent``; ``learns``: its pace adapts to the provider (not for in-process models)."""
        key = endpoint_key(agent)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            sharing = [a for a in self.registry.list() if endpoint_key(a) == key] or [agent]
            settings = limit_settings(sharing[0])
            for other in sharing[1:]:
                settings = settings.merged(limit_settings(other))
            breaker = CircuitBreaker(
                min(a.limits.circuit_failure_threshold for a in sharing),
                min(a.limits.circuit_cooldown_s for a in sharing),
            )
            timeouts = any(a.timeout_s is not None for a in sharing)
            pacer = shared_pacer(*key, settings.pacing(learns=learns))
            limits = EndpointLimits(settings, pacer)
            if self.on_pace is not None:
                limits.on_pace = partial(self.on_pace, endpoint_label(key))
            endpoint = self._endpoints[key] = Endpoint(key, limits, breaker, timeouts)
        return endpoint

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._endpoints.values())

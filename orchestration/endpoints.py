"""The shared state of each provider endpoint in a run: its limits and its circuit breaker.

An endpoint is a provider type plus a base URL (or preset), so two agents that call
the same API with different models share one budget and one breaker; when their
agents configure different limits, the stricter value of each wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions.wrappers import CircuitBreaker, EndpointLimits, LimitSettings

__all__ = ["Endpoint", "EndpointKey", "Endpoints", "endpoint_key"]

EndpointKey = tuple[str, str]


def endpoint_key(agent: AgentConfig) -> EndpointKey:
    """(provider type, base URL or preset or ``""``)."""
    where = agent.base_url or str(agent.provider_settings.get("preset") or "")
    return agent.agent_type, where.rstrip("/")


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

    def __init__(self, registry: AgentRegistry) -> None:
        self.registry = registry
        self._endpoints: dict[EndpointKey, Endpoint] = {}

    def for_agent(self, agent: AgentConfig) -> Endpoint:
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
            endpoint = self._endpoints[key] = Endpoint(key, EndpointLimits(settings), breaker, timeouts)
        return endpoint

    def __iter__(self) -> Iterator[Endpoint]:
        return iter(self._endpoints.values())

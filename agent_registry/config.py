"""``AgentConfig``: one named agent, as written in a task or agents file."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from llm_abstractions import GenerationOptions, LlmConfig, register_secret

__all__ = ["AgentConfig", "AgentLimits", "BudgetLimits", "RetrySettings", "StoreBudgets"]


class RetrySettings(BaseModel):
    """How an agent's failed calls are retried (tasks may override ``retries``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    retries: int | None = Field(default=None, ge=0)
    """Retries after the first attempt; ``None`` uses the project default."""
    initial_backoff_s: float = Field(default=0.5, ge=0)
    """Upper bound of the first jittered backoff."""
    max_backoff_s: float = Field(default=30.0, ge=0)
    """Upper bound of any single backoff."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Give up retrying once this much time has passed since the first attempt."""


class AgentLimits(BaseModel):
    """Limits on an agent's calls, shared by every task of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    max_concurrent: int | None = Field(default=None, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    circuit_failure_threshold: int = Field(default=5, gt=0)
    """Consecutive provider-side failures that open the endpoint's circuit."""
    circuit_cooldown_s: float = Field(default=30.0, ge=0)
    """How long an open circuit fails calls fast before one trial call."""


class BudgetLimits(BaseModel):
    """Spending caps: the actual spend never goes above them (each call reserves its worst case first)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    max_cost_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    """Input and output tokens together."""


class StoreBudgets(BaseModel):
    """Caps across runs, kept in the run store (the agents file's ``budgets:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    project_daily_usd: float | None = Field(default=None, ge=0)
    """What the runs of one project (by name) may spend in a UTC day, together; every process using the store
    reserves each call's worst case against it."""


class AgentConfig(BaseModel):
    """A named agent: which provider and model, credentials, defaults and limits.

    Keys not listed here are provider-specific settings (``latency_ms`` for
    ``offline``, ``preset`` for ``openai_compatible``...), checked by the provider.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, defer_build=True)

    name: str
    agent_type: str = Field(alias="type")
    """Provider key: see :func:`~llm_abstractions.known_providers`."""
    model: str | None = None
    api_key: SecretStr | None = None
    """Optional: falls back to the provider's standard environment variable."""
    base_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    """Per-call timeout."""
    options: GenerationOptions = GenerationOptions.model_construct()
    """Default generation options for every task of this agent."""
    retry: RetrySettings = RetrySettings.model_construct()
    fallbacks: list[str] = []
    """Names of agents tried in order when this one fails for good."""
    limits: AgentLimits = AgentLimits.model_construct()
    cache: bool | Literal["read", "refresh"] | None = None
    """The answer cache for this agent's tasks (see the task's ``cache``); ``None``: the project's default."""
    budget: BudgetLimits | None = None
    """This agent's own caps within the run's budget."""
    batch: bool = False
    """Send this agent's requests through its provider's batch API (half the price, answers within 24 h)."""
    remote: bool = False
    """In a run on Ray: make this agent's calls from Ray actors (its network egress from the cluster); its limits,
    breaker and budget stay in the orchestrator's process. Local models (``mlx``, ``vllm``) run on Ray anyway."""
    replicas: int = Field(default=1, ge=1)
    """In a run on Ray: how many Ray actors serve this agent (each a loaded local model, or a client); each call goes
    to the replica with the fewest calls in flight."""
    num_gpus: float | None = Field(default=None, ge=0)
    """In a run on Ray: GPUs each replica holds; ``None``: the runtime's need (vLLM: ``tensor_parallel_size``,
    others none)."""
    max_restarts: int = Field(default=3, ge=-1)
    """In a run on Ray: how often Ray restarts a replica that died (``-1``: always); calls in flight on it fail as
    retryable and are retried on another replica."""

    @field_validator("api_key")
    @classmethod
    def _remember_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            register_secret(value.get_secret_value())
        return value

    @property
    def provider_settings(self) -> dict[str, Any]:
        """The provider-specific keys."""
        return dict(self.model_extra or {})

    def llm_config(self) -> LlmConfig:
        """The provider-facing part of this config."""
        return LlmConfig(
            name=self.name,
            provider=self.agent_type,
            model=self.model,
            api_key=self.api_key,
            base_url=self.base_url,
            timeout_s=self.timeout_s,
            options=self.options,
            settings=self.provider_settings,
        )

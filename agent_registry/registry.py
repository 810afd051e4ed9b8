"""``AgentRegistry``: the named agents a run may use, from files and the environment."""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent_registry.config import AgentConfig
from agent_registry.files import FileFormatError, StructuredFile, read_structured_file
from llm_abstractions import UnknownProviderError, get_llm_class

__all__ = [
    "AgentConfigError",
    "AgentIssue",
    "AgentRegistry",
    "UnknownAgentError",
    "default_agents_file",
]

AGENTS_ENV = "ORCHESTRATE_AGENTS"

# Agents created when a provider's standard key is set: name -> (env vars, config).
_ENV_AGENTS: tuple[tuple[str, tuple[str, ...], dict[str, Any]], ...] = (
    ("gpt", ("OPENAI_API_KEY",), {"type": "gpt", "model": "gpt-4.1-mini"}),
    ("claude", ("ANTHROPIC_API_KEY",), {"type": "claude", "model": "claude-sonnet-4-6"}),
    ("gemini", ("GOOGLE_API_KEY", "GEMINI_API_KEY"), {"type": "gemini", "model": "gemini-2.5-flash"}),
    (
        "groq",
        ("GROQ_API_KEY",),
        {"type": "openai_compatible", "preset": "groq", "model": "llama-3.3-70b-versatile"},
    ),
    ("grok", ("XAI_API_KEY",), {"type": "openai_compatible", "preset": "xai", "model": "grok-4"}),
)


@dataclass(frozen=True)
class AgentIssue:
    """One problem with an agent's configuration."""

    agent: str
    message: str
    field: str | None = None
    source: Path | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.source and self.line else str(self.source or "")
        field = f", field '{self.field}'" if self.field else ""
        prefix = f"{where}: " if where else ""
        return f"{prefix}agent '{self.agent}'{field}: {self.message}"


class AgentConfigError(ValueError):
    """One or more agents are misconfigured."""

    def __init__(self, issues: list[AgentIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


class UnknownAgentError(KeyError):
    """No agent of that name is registered."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = sorted(known)

    def __str__(self) -> str:
        return f"unknown agent {self.name!r}; known agents: {', '.join(self.known) or 'none'}"


def default_agents_file(env: Mapping[str, str] | None = None) -> Path | None:
    """The agents file to read when none is given: ``$ORCHESTRATE_AGENTS``,
    ``./agents.yaml``, then ``$XDG_CONFIG_HOME/orchestrate/agents.yaml``."""
    env = os.environ if env is None else env
    if env.get(AGENTS_ENV):
        return Path(env[AGENTS_ENV])
    local = Path("agents.yaml")
    if local.is_file():
        return local
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = config_home / "orchestrate" / "agents.yaml"
    return user if user.is_file() else None


def _field_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) if loc else ""


class AgentRegistry:
    """Named :class:`AgentConfig` s. Later registrations replace earlier ones of the same name."""

    def __init__(self, agents: Iterable[AgentConfig] = ()) -> None:
        self._agents: dict[str, AgentConfig] = {}
        self.agents_file: Path | None = None
        """The agents file loaded last (absolute), recorded with each run so that a resume can reload it."""
        for agent in agents:
            self.register(agent)

    def register(self, agent: AgentConfig) -> None:
        self._agents[agent.name] = agent

    def get(self, name: str) -> AgentConfig:
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgentError(name, self._agents) from None

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def names(self) -> builtins.list[str]:
        return list(self._agents)

    def list(self) -> builtins.list[AgentConfig]:
        return list(self._agents.values())

    def load_mapping(
        self, agents: Any, source: StructuredFile | None = None, prefix: tuple[str | int, ...] = ()
    ) -> None:
        """Validate and register ``{name: {type: ..., ...}}``; raise :class:`AgentConfigError`."""
        path = source.path if source else None

        def issue(agent: str, message: str, field: str | None, loc: tuple[str | int, ...]) -> AgentIssue:
            line = source.line_of((*prefix, *loc)) if source else None
            return AgentIssue(agent, message, field, path, line)

        if not isinstance(agents, Mapping):
            raise AgentConfigError([issue("*", "agents must be a mapping of name to settings", None, ())])
        issues: builtins.list[AgentIssue] = []
        valid: builtins.list[AgentConfig] = []
        for name, raw in agents.items():
            name = str(name)
            if not isinstance(raw, Mapping):
                issues.append(issue(name, "settings must be a mapping", None, (name,)))
                continue
            try:
                config = AgentConfig.model_validate({**raw, "name": name})
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    loc = tuple(err["loc"])
                    field = _field_of(loc) or None
                    if field == "agent_type":
                        field = "type"
                    issues.append(issue(name, err["msg"], field, (name, *loc)))
                continue
            for problem in self._provider_issues(config):
                issues.append(issue(name, problem[1], problem[0], (name, *(problem[0] or "").split(".")[:1])))
            valid.append(config)
        if issues:
            raise AgentConfigError(issues)
        for config in valid:
            self.register(config)

    @staticmethod
    def _provider_issues(config: AgentConfig) -> builtins.list[tuple[str | None, str]]:
        """(field, message) problems that the provider finds in the config's own keys."""
        try:
            cls = get_llm_class(config.agent_type)
        except UnknownProviderError as exc:
            return [("type", str(exc))]
        try:
            cls.settings_model.model_validate(config.provider_settings)
        except ValidationError as exc:
            return [
                (_field_of(tuple(e["loc"])) or None, "unknown setting" if e["type"] == "extra_forbidden" else e["msg"])
                for e in exc.errors(include_url=False)
            ]
        return []

    def load_file(self, path: Path) -> None:
        """Register the agents of an agents file (``agents:`` mapping, or a bare mapping)."""
        try:
            source = read_structured_file(path)
        except FileFormatError as exc:
            raise AgentConfigError([AgentIssue("*", exc.reason, None, path, exc.line)]) from None
        data = source.data
        if isinstance(data, Mapping) and "agents" in data:
            self.load_mapping(data["agents"], source, ("agents",))
        else:
            self.load_mapping(data, source)
        self.agents_file = path.absolute()

    def load_environment(self, env: Mapping[str, str] | None = None) -> None:
        """Register default agents for every provider whose standard key is set."""
        env = os.environ if env is None else env
        for name, variables, settings in _ENV_AGENTS:
            if any(env.get(v) for v in variables):
                self.register(AgentConfig.model_validate({**settings, "name": name}))

    @classmethod
    def default(cls, agents_file: Path | None = None, env: Mapping[str, str] | None = None) -> AgentRegistry:
        """The built-in ``offline`` agent, agents from the environment, then the agents file."""
        registry = cls([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
        registry.load_environment(env)
        path = agents_file or default_agents_file(env)
        if path is not None:
            registry.load_file(path)
        return registry

    def check(self, name: str) -> builtins.list[str]:
        """Problems that would make this agent's calls fail (missing key, runtime...)."""
        config = self.get(name)
        return get_llm_class(config.agent_type).check_config(config.llm_config())

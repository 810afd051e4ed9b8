"""``AgentRegistry``: the named agents a run may use, from files and the environment."""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent_registry.config import AgentConfig, StoreBudgets
from agent_registry.files import FileFormatError, StructuredFile, read_structured_file
from agent_registry.problems import FieldProblem, field_problems
from llm_abstractions import BaseLlm, UnknownProviderError, get_llm_class
from llm_abstractions.factory import BUILTIN_PROVIDERS
from llm_abstractions.wrappers import WrapperLlm

__all__ = [
    "AgentConfigError",
    "AgentIssue",
    "AgentRegistry",
    "UnknownAgentError",
    "default_agents_file",
]

AGENTS_ENV = "ORCHESTRATE_AGENTS"
_COMMON_KEYS = tuple(info.alias or name for name, info in AgentConfig.model_fields.items() if name != "name")
"""The settings every agent accepts, besides its provider's."""


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


class AgentRegistry:
    """Named :class:`AgentConfig` s. Later registrations replace earlier ones of the same name.

    A registry made with a ``parent`` is a layer over it: lookups fall back to the parent,
    listings are the union (this layer winning), and registering never changes the parent.
    An agent may come with a ready model instance (:meth:`register_llm_instance`), used
    instead of a client built from its config.
    """

    def __init__(self, agents: Iterable[AgentConfig] = (), *, parent: AgentRegistry | None = None) -> None:
        self.parent = parent
        """The registry this one is a layer over; ``None``: a base registry."""
        self._agents: dict[str, AgentConfig] = {}
        self._llms: dict[str, BaseLlm] = {}
        self._agents_file: Path | None = None
        self._budgets: StoreBudgets | None = None
        for agent in agents:
            self.register(agent)

    @property
    def agents_file(self) -> Path | None:
        """The agents file loaded last (absolute), here or in a parent; recorded with each run so that
        a resume can reload it."""
        if self._agents_file is None and self.parent is not None:
            return self.parent.agents_file
        return self._agents_file

    @property
    def budgets(self) -> StoreBudgets:
        """The caps across runs of the agents file loaded last (its ``budgets:``), here or in a parent."""
        if self._budgets is None:
            return self.parent.budgets if self.parent is not None else StoreBudgets()
        return self._budgets

    def register(self, agent: AgentConfig, *, llm: BaseLlm | None = None) -> None:
        """Add or replace ``agent`` in this layer; ``llm``: the model instance its calls use."""
        self._agents[agent.name] = agent
        if llm is None:
            self._llms.pop(agent.name, None)
        else:
            self._llms[agent.name] = llm

    def register_llm_instance(self, name: str, llm: BaseLlm) -> AgentConfig:
        """Make agent ``name``'s calls use ``llm``; return the agent's config.

        An agent of that name keeps its config (fallbacks, retries, limits); otherwise one is
        made from the instance: its provider key, model, base URL, timeout and settings.
        """
        if name in self:
            config = self.get(name)
        else:
            own = llm.config
            config = AgentConfig.model_validate(
                {
                    **own.settings,
                    "name": name,
                    "type": llm.provider,
                    "model": own.model,
                    "base_url": own.base_url,
                    "timeout_s": own.timeout_s,
                }
            )
        self.register(config, llm=llm)
        return config

    def _layer_of(self, name: str) -> AgentRegistry | None:
        """The nearest layer that defines ``name``."""
        layer: AgentRegistry | None = self
        while layer is not None and name not in layer._agents:
            layer = layer.parent
        return layer

    def get(self, name: str) -> AgentConfig:
        """The config of agent ``name``; raise :class:`UnknownAgentError`."""
        layer = self._layer_of(name)
        if layer is None:
            raise UnknownAgentError(name, self.names())
        return layer._agents[name]

    def llm_instance(self, name: str) -> BaseLlm | None:
        """The model instance registered with agent ``name``; ``None``: build one from its config."""
        layer = self._layer_of(name)
        return None if layer is None else layer._llms.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._layer_of(name) is not None

    def _merged(self) -> dict[str, AgentConfig]:
        return {**self.parent._merged(), **self._agents} if self.parent is not None else self._agents

    def names(self) -> builtins.list[str]:
        """Every agent name, the parent's first."""
        return list(self._merged())

    def list(self) -> builtins.list[AgentConfig]:
        """Every agent config, in :meth:`names` order."""
        return list(self._merged().values())

    def load_mapping(
        self, agents: Any, source: StructuredFile | None = None, prefix: tuple[str | int, ...] = ()
    ) -> None:
        """Validate and register ``{name: {type: ..., ...}}``; raise :class:`AgentConfigError`.

        The valid agents are registered even when others are not: only the invalid ones are
        missing, each reported once, with every problem of its own.
        """
        path = source.path if source else None

        def issue(agent: str, message: str, field: str | None, loc: tuple[str | int, ...]) -> AgentIssue:
            line = source.line_of((*prefix, *loc)) if source else None
            return AgentIssue(agent, message, field, path, line)

        if not isinstance(agents, Mapping):
            raise AgentConfigError([issue("*", "agents must be a mapping of name to settings", None, ())])
        issues: builtins.list[AgentIssue] = []
        for name, raw in agents.items():
            name = str(name)
            if not isinstance(raw, Mapping):
                issues.append(issue(name, "settings must be a mapping", None, (name,)))
                continue
            settings = {str(key): value for key, value in raw.items() if key not in (*_COMMON_KEYS, "name")}
            problems = self._provider_problems(raw.get("type"), settings)
            try:
                config = AgentConfig.model_validate({**raw, "name": name})
            except ValidationError as exc:
                problems = field_problems(exc, raw, AgentConfig, unknown="setting") + problems
            if problems:
                issues.extend(issue(name, p.message, p.field, (name, *p.loc)) for p in problems)
            else:
                self.register(config)
        if issues:
            raise AgentConfigError(issues)

    @staticmethod
    def _provider_problems(agent_type: object, settings: dict[str, Any]) -> builtins.list[FieldProblem]:
        """Problems that the provider of ``agent_type`` finds in its own keys (``settings``)."""
        if not isinstance(agent_type, str):
            return []  # the type itself is reported
        try:
            cls = get_llm_class(agent_type)
        except UnknownProviderError as exc:
            return [FieldProblem(("type",), str(exc))]
        try:
            cls.settings_model.model_validate(settings)
        except ValidationError as exc:
            return field_problems(exc, settings, cls.settings_model, _COMMON_KEYS, "setting")
        return []

    def load_file(self, path: Path) -> None:
        """Register the agents of an agents file (``agents:`` mapping, or a bare mapping)."""
        try:
            source = read_structured_file(path)
        except FileFormatError as exc:
            raise AgentConfigError([AgentIssue("*", exc.reason, None, path, exc.line)]) from None
        data = source.data
        if isinstance(data, Mapping) and "agents" in data:
            self._load_budgets(data.get("budgets", {}), source)
            self.load_mapping(data["agents"], source, ("agents",))
        else:
            self.load_mapping(data, source)
        self._agents_file = path.absolute()

    def _load_budgets(self, budgets: Any, source: StructuredFile) -> None:
        """Validate and keep an agents file's ``budgets:``; raise :class:`AgentConfigError`."""
        try:
            self._budgets = StoreBudgets.model_validate(budgets)
        except ValidationError as exc:
            where = [(("budgets", *p.loc), p.message) for p in field_problems(exc, budgets, StoreBudgets)]
            raise AgentConfigError(
                [
                    AgentIssue("*", message, ".".join(map(str, loc)), source.path, source.line_of(loc))
                    for loc, message in where
                ]
            ) from None

    def load_environment(self, env: Mapping[str, str] | None = None) -> None:
        """Register the default agents (:attr:`~llm_abstractions.factory.BuiltinProvider.env_agents`)
        whose provider's key variable is set."""
        env = os.environ if env is None else env
        for key, provider in BUILTIN_PROVIDERS.items():
            for agent in provider.env_agents:
                if any(env.get(v) for v in agent.variables):
                    config = {**agent.settings, "name": agent.name or key, "type": key, "model": agent.model}
                    self.register(AgentConfig.model_validate(config))

    @classmethod
    def default(cls, agents_file: Path | None = None, env: Mapping[str, str] | None = None) -> AgentRegistry:
        """The built-in ``offline`` agent, agents from the environment, then the agents file."""
        registry = cls([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
        registry.load_environment(env)
        path = agents_file or default_agents_file(env)
        if path is not None:
            registry.load_file(path)
        return registry

    def check(self, name: str, *, here: bool = True) -> builtins.list[str]:
        """Problems that would make this agent's calls fail (missing key, runtime...); ``here=False``: its calls are
        made on other machines (Ray replicas), so only what does not depend on this one (its settings)."""
        llm = self.llm_instance(name)
        if llm is not None:
            while isinstance(llm, WrapperLlm):  # a wrapper's config is its model's: checked by the model's class
                llm = llm.wrapped
            llm_class, config = type(llm), llm.config
        else:
            llm_class, config = get_llm_class(self.get(name).agent_type), self.get(name).llm_config()
        return llm_class.check_config(config) if here else llm_class.check_settings(config)

"""Agents from the environment, agents files and task files; bad configs fail at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_registry import AgentConfigError, AgentRegistry, UnknownAgentError, default_agents_file
from llm_abstractions import get_llm_class, known_providers
from llm_abstractions.factory import BUILTIN_PROVIDERS
from llm_abstractions.local import LocalLlm, known_runners


def test_each_builtin_provider_resolves_to_a_class_of_its_key() -> None:
    assert set(BUILTIN_PROVIDERS) <= set(known_providers())
    for key in BUILTIN_PROVIDERS:
        assert get_llm_class(key).provider == key


def test_local_runners_are_those_of_the_local_providers() -> None:
    local = {key for key, provider in BUILTIN_PROVIDERS.items() if provider.runner is not None}
    assert local == {"mlx", "vllm"} and local <= set(known_runners())
    for key in local:
        cls = get_llm_class(key)
        assert issubclass(cls, LocalLlm) and cls.runner_name == key


def test_environment_agents_come_from_the_provider_table() -> None:
    env = {v: "x" for p in BUILTIN_PROVIDERS.values() for agent in p.env_agents for v in agent.variables}
    registry = AgentRegistry()
    registry.load_environment(env)
    assert registry.names() == ["gpt", "claude", "gemini", "groq", "grok"]
    groq = registry.get("groq")
    assert (groq.agent_type, groq.model, groq.provider_settings) == (
        "openai_compatible",
        "llama-3.3-70b-versatile",
        {"preset": "groq"},
    )
    for agent in registry.list():  # the table's settings are valid for their provider
        get_llm_class(agent.agent_type).settings_model.model_validate(agent.provider_settings)


def test_default_agents_from_environment_keys() -> None:
    registry = AgentRegistry.default(env={"OPENAI_API_KEY": "x", "GEMINI_API_KEY": "y", "XDG_CONFIG_HOME": "/nowhere"})
    assert {"offline", "gpt", "gemini"} <= set(registry.names())
    assert "claude" not in registry
    assert registry.get("gpt").agent_type == "gpt"


def test_agents_file_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config_home = tmp_path / "config"
    (config_home / "orchestrate").mkdir(parents=True)
    user_file = config_home / "orchestrate" / "agents.yaml"
    user_file.write_text("agents:\n  mine: {type: offline, model: user}\n")
    env = {"XDG_CONFIG_HOME": str(config_home)}
    assert default_agents_file(env) == user_file
    Path("agents.yaml").write_text("agents:\n  mine: {type: offline, model: local}\n")
    assert default_agents_file(env) == Path("agents.yaml")
    explicit = tmp_path / "explicit.toml"
    explicit.write_text('[agents.mine]\ntype = "offline"\nmodel = "explicit"\n')
    assert default_agents_file({**env, "ORCHESTRATE_AGENTS": str(explicit)}) == explicit
    assert AgentRegistry.default(env={**env, "ORCHESTRATE_AGENTS": str(explicit)}).get("mine").model == "explicit"
    assert AgentRegistry.default(env=env).get("mine").model == "local"


def test_bad_agents_file_names_file_agent_field_and_line(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  ok: {type: offline}\n  broken:\n    type: offline\n    timeout_s: -1\n")
    with pytest.raises(AgentConfigError) as info:
        AgentRegistry().load_file(path)
    assert str(info.value).startswith(f"{path}:5: agent 'broken', field 'timeout_s'")


def test_unknown_agent_lists_known_names() -> None:
    with pytest.raises(UnknownAgentError, match="unknown agent 'x'; known agents: offline"):
        AgentRegistry.default(env={"XDG_CONFIG_HOME": "/nowhere"}).get("x")


def test_api_key_is_a_secret() -> None:
    registry = AgentRegistry()
    registry.load_mapping({"a": {"type": "offline", "api_key": "sk-visible-in-no-repr-123456"}})
    agent = registry.get("a")
    assert "sk-visible" not in repr(agent) and "sk-visible" not in agent.model_dump_json()
    assert agent.llm_config().api_key is not None

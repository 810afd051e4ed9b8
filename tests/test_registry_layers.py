"""Registry layers: a project's agents and model instances never leak into the registry it was given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_registry import AgentConfig, AgentRegistry, UnknownAgentError
from llm_abstractions import LlmConfig
from llm_abstractions.offline import OfflineLlm
from orchestration import ProjectOrchestrator, ProjectSpec
from orchestration.project import compile_project


def agent(name: str, **fields: Any) -> AgentConfig:
    return AgentConfig.model_validate({"name": name, "type": "offline", **fields})


def offline_llm(model: str, **settings: Any) -> OfflineLlm:
    return OfflineLlm(LlmConfig(name="instance", provider="offline", model=model, settings=settings))


def spec(answer: str) -> ProjectSpec:
    return ProjectSpec.model_validate(
        {
            "name": f"project-{answer}",
            "agents": {"writer": {"type": "offline", "model": answer, "response": f"from {answer}"}},
            "tasks": [{"id": "t", "description": "write", "agent": "writer"}],
        }
    )


def test_lookups_fall_back_to_the_parent_and_the_layer_wins(tmp_path: Path) -> None:
    parent = AgentRegistry([agent("a"), agent("b", model="parent")])
    child = AgentRegistry([agent("b", model="child"), agent("c")], parent=parent)

    assert child.names() == ["a", "b", "c"]
    assert [a.model for a in child.list()] == [None, "child", None]
    assert child.get("a") is parent.get("a") and child.get("b").model == "child"
    assert "a" in child and "c" in child and "c" not in parent
    assert parent.get("b").model == "parent" and parent.names() == ["a", "b"]
    with pytest.raises(UnknownAgentError, match="known agents: a, b, c"):
        child.get("x")

    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text("agents:\n  d: {type: offline}\n")
    parent.load_file(agents_file)
    assert child.agents_file == agents_file.absolute() and "d" in child


def test_instances_are_looked_up_through_layers() -> None:
    parent = AgentRegistry([agent("shared", fallbacks=["offline"])])
    llm = offline_llm("m1")
    assert parent.register_llm_instance("shared", llm).fallbacks == ["offline"]  # its config is kept
    child = AgentRegistry(parent=parent)
    assert child.llm_instance("shared") is llm and child.llm_instance("nobody") is None

    child.register(agent("shared", model="own"))  # the layer's own config comes without the parent's instance
    assert child.llm_instance("shared") is None and parent.llm_instance("shared") is llm

    config = child.register_llm_instance("new", offline_llm("m2", response="hi"))
    assert (config.agent_type, config.model, config.provider_settings) == ("offline", "m2", {"response": "hi"})
    assert "new" not in parent and child.check("new") == []

    child.register(config)  # registered again without an instance: it is dropped
    assert child.llm_instance("new") is None


def test_compile_project_puts_instances_in_the_project_layer() -> None:
    shared = AgentRegistry([agent("offline")])
    llm = offline_llm("m")
    project_spec = ProjectSpec.model_validate({"tasks": [{"id": "t", "description": "x", "agent": "mine"}]})
    project = compile_project(project_spec, shared, llms={"mine": llm})
    assert project.registry.llm_instance("mine") is llm and project.registry.get("mine").model == "m"
    assert "mine" not in shared and shared.llm_instance("mine") is None


async def test_orchestrators_sharing_a_registry_each_use_their_own_agents() -> None:
    shared = AgentRegistry([agent("offline"), agent("writer", model="shared")])
    before = shared.list()
    first = ProjectOrchestrator(spec("a"), registry=shared)
    second = ProjectOrchestrator(spec("b"), registry=shared)

    assert first.validate().registry.get("writer").model == "a"
    assert second.validate().registry.get("writer").model == "b"
    assert shared.list() == before

    results = [(await orchestrator.run())["t"] for orchestrator in (first, second)]
    assert [(r.output, r.model) for r in results] == [("from a", "a"), ("from b", "b")]
    assert shared.list() == before and shared.get("writer").model == "shared"

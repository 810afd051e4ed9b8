"""Messages that are exact: each problem said once, where it is, in our words, the same way everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from typer.testing import CliRunner

from llm_abstractions import GenerationOptions, LlmConfig, register_llm
from llm_abstractions.factory import unregister_llm
from llm_abstractions.offline import OfflineLlm
from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec, ProjectValidationError, RunEvent
from orchestration.cli.app import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def problems(tmp_path: Path, text: str, command: str = "validate") -> list[str]:
    """The problem lines ``orchestrate validate`` prints for a task file (it must exit 2)."""
    path = tmp_path / "project.yaml"
    path.write_text(text)
    code, output = invoke(command, str(path))
    assert code == 2, output
    assert "Traceback" not in output
    return [
        line.removeprefix("  - ").replace(f"{path}:", "") for line in output.splitlines() if line.startswith("  - ")
    ]


def test_an_invalid_agent_is_reported_once_and_leaves_the_valid_ones_known(tmp_path: Path) -> None:
    text = """\
agents:
  q: {type: offline, latency_ms: [slow, 5]}
  good: {type: offline}
tasks:
  - {id: a, description: x, agent: q}
  - {id: b, description: x, agent: q}
  - {id: c, description: x, agent: good}
  - {id: d, description: x, agent: nobody}
"""
    assert problems(tmp_path, text) == [
        "2: agent 'q', field 'latency_ms.0': Input should be a valid number, unable to parse string as a number",
        "8: task 'd', field 'agent': unknown agent 'nobody'; known agents: good, offline",
    ]


def test_fallbacks_to_an_invalid_agent_add_nothing(tmp_path: Path) -> None:
    text = """\
agents:
  q: {type: offline, seed: many}
  main: {type: offline, fallbacks: [q]}
tasks:
  - {id: a, description: x, agent: main}
"""
    assert problems(tmp_path, text) == [
        "2: agent 'q', field 'seed': Input should be a valid integer, unable to parse string as an integer"
    ]


def test_every_problem_of_an_agent_is_said_with_the_field_as_written(tmp_path: Path) -> None:
    text = """\
agents:
  r:
    type: offline
    retry: {retries: -1}
    latency_ms: -5
  s: {type: offline, latency_ms: [9, 1]}
  t: {type: offline, latencyms: 3}
tasks:
  - {id: a, description: x, agent: r}
"""
    found = problems(tmp_path, text)
    assert found == [
        "4: agent 'r', field 'retry.retries': Input should be greater than or equal to 0",
        "5: agent 'r', field 'latency_ms': Input should be greater than or equal to 0",
        "6: agent 's': latency_ms range must be [low, high] with low <= high",
        "7: agent 't', field 'latencyms': unknown setting; allowed: latency_ms, latency_by_prompt_ms, seed, response,"
        " fail_if_contains, batch_latency_ms, type, model, api_key, base_url, timeout_s, options, retry, fallbacks,"
        " limits, cache, budget, batch, remote, replicas, num_gpus, max_restarts",
    ]
    for internal in ("constrained-float", "tuple[", "Value error", "function-after"):
        assert not any(internal in line for line in found)


def test_unknown_fields_of_tasks_and_defaults_say_what_is_allowed(tmp_path: Path) -> None:
    text = """\
defaults:
  agnt: x
tasks:
  - id: a
    description: x
    options: {tempreture: 0.5}
"""
    defaults, options = problems(tmp_path, text)
    assert defaults.startswith("2: field 'defaults.agnt': unknown field; allowed: agent, max_concurrency,")
    assert options.startswith("6: task 'a', field 'options.tempreture': unknown field; allowed: temperature, ")


def test_add_task_says_the_field_in_our_words() -> None:
    orchestrator = ProjectOrchestrator(ProjectSpec())
    with pytest.raises(ProjectValidationError) as caught:
        orchestrator.add_task({"id": "a", "description": "x", "options": {"top_k": 0}, "colour": "red"})
    top_k, colour = (str(issue) for issue in caught.value.issues)
    assert top_k == "task 'a', field 'options.top_k': Input should be greater than 0"
    assert colour.startswith("task 'a', field 'colour': unknown field; allowed: id, description, agent, depends_on,")
    assert colour.endswith(", metadata, batch")


def test_an_unknown_default_agent_is_reported_once_on_the_defaults_section(tmp_path: Path) -> None:
    text = """\
name: p
defaults:
  max_concurrency: 2
  agent: nope
tasks:
  - {id: a, description: x}
  - {id: b, description: x}
  - {id: c, description: x, agent: offline}
"""
    assert problems(tmp_path, text) == ["4: field 'defaults.agent': unknown agent 'nope'; known agents: offline"]


def test_reading_parsed_of_a_text_task_is_a_validation_error(tmp_path: Path) -> None:
    text = """\
tasks:
  - {id: plan, description: x}
  - {id: data, description: x, output_format: json}
  - id: use
    depends_on: [plan, data]
    description: "{{ tasks.data.parsed.n }} {{ tasks.plan.parsed.title }} {{ tasks['plan'].output }}"
"""
    assert problems(tmp_path, text) == [
        "6: task 'use', field 'description': template reads tasks.plan.parsed, but 'plan' is a text task: parsed"
        " is set only for output_format: json (read tasks.plan.output, or make 'plan' a json task)"
    ]


def test_parsed_in_a_jinja_block_is_checked_too(tmp_path: Path) -> None:
    text = """\
tasks:
  - {id: plan, description: x}
  - id: use
    depends_on: [plan]
    system_prompt: "{% for item in tasks.plan.parsed %}{{ item }}{% endfor %}"
    description: x
"""
    [problem] = problems(tmp_path, text)
    assert problem.startswith("5: task 'use', field 'system_prompt': template reads tasks.plan.parsed")


@pytest.mark.parametrize(("command", "allowed"), [("graph", "'mermaid', 'dot'"), ("results", "'json', 'jsonl', 'md'")])
def test_an_invalid_format_reads_the_same_for_every_command(tmp_path: Path, command: str, allowed: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("tasks: [{id: a, description: x}]\n")
    code, output = invoke(command, str(path) if command == "graph" else "latest", "--format", "xml")
    assert code == 2
    assert f"Invalid value for '--format' / '-f': 'xml' is not one of {allowed}." in output
    assert "Value error" not in output


class _PickyLlm(OfflineLlm):
    """An offline model that, like some Claude models, takes temperature or top_p but not both."""

    provider = "picky"

    @classmethod
    def option_problems(cls, config: LlmConfig, options: GenerationOptions) -> list[str]:
        both = options.temperature is not None and options.top_p is not None
        return [f"{config.model} accepts temperature or top_p, not both"] if both else []


@pytest.fixture
def picky() -> Iterator[None]:
    register_llm("picky", _PickyLlm)
    yield
    unregister_llm("picky")


@pytest.mark.usefixtures("picky")
def test_a_providers_objection_to_options_is_a_task_issue_on_options(tmp_path: Path) -> None:
    text = """\
agents:
  m: {type: picky, model: m-1, options: {temperature: 0.3}}
defaults: {agent: m}
tasks:
  - {id: fine, description: x}
  - id: both
    description: x
    options: {top_p: 0.5}
  - {id: other, description: x, agent: offline, options: {top_p: 0.5, temperature: 1}}
"""
    assert problems(tmp_path, text) == [
        "8: task 'both', field 'options': m-1 accepts temperature or top_p, not both",
    ]


async def test_a_failing_event_callback_is_logged_once_and_the_run_goes_on() -> None:
    spec = ProjectSpec.model_validate(
        {"tasks": [{"id": "a", "description": "x"}, {"id": "b", "description": "y", "depends_on": ["a"]}]}
    )
    orchestrator = ProjectOrchestrator(spec)
    seen: list[RunEvent] = []

    def broken_listener(event: RunEvent) -> None:
        raise RuntimeError("listener bug")

    orchestrator.on_event(broken_listener)
    orchestrator.on_event(seen.append)
    with capture_logs() as logs:
        results = await orchestrator.run()
    assert {task: result.status for task, result in results.items()} == {
        "a": ExecutionStatus.SUCCESS,
        "b": ExecutionStatus.SUCCESS,
    }
    assert len(seen) == 6  # run started, two tasks started and succeeded, run finished: all delivered
    failures = [entry for entry in logs if entry["event"] == "event_callback_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "error"
    assert failures[0]["callback"].endswith("broken_listener")
    assert failures[0]["error"] == "RuntimeError: listener bug"


def test_run_store_is_exported_by_the_package() -> None:
    from orchestration import RunStore
    from orchestration.store import RunStore as StoreRunStore

    assert RunStore is StoreRunStore
    assert "RunStore" in dir(__import__("orchestration"))


def test_tasks_without_an_agent_and_no_offline_agent_are_reported_once() -> None:
    from agent_registry import AgentRegistry

    spec = ProjectSpec.model_validate({"tasks": [{"id": "a", "description": "x"}, {"id": "b", "description": "y"}]})
    orchestrator = ProjectOrchestrator(spec, registry=AgentRegistry())
    with pytest.raises(ProjectValidationError) as caught:
        orchestrator.validate()
    assert [str(issue) for issue in caught.value.issues] == [
        "field 'defaults.agent': tasks without an agent use 'offline', which is not registered: set defaults.agent;"
        " known agents: none"
    ]

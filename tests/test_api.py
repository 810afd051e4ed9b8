"""The Python API: data flow through templates, events, asyncio/trio, running loops, add_task, execute_task."""

from __future__ import annotations

import asyncio
import json

import anyio
import pytest

from llm_abstractions import BaseLlm, GenerationOptions, LlmResponse, Message, register_llm
from llm_abstractions.factory import unregister_llm
from orchestration import (
    AgentTask,
    EventKind,
    ExecutionStatus,
    ProjectOrchestrator,
    ProjectSpec,
    ProjectValidationError,
    RunEvent,
)


def pipeline() -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate(
        {
            "name": "flow",
            "inputs": {"topic": "otters"},
            "agents": {"echo": {"type": "offline"}},
            "defaults": {"agent": "echo"},
            "tasks": [
                {"id": "research", "description": "facts about {{ inputs.topic }}"},
                {"id": "draft", "description": "draft from [{{ tasks.research.output }}]", "depends_on": ["research"]},
                {
                    "id": "final",
                    "description": "final: {{ tasks.draft.output }} / {{ tasks.research.output }}",
                    "system_prompt": "You edit texts about {{ inputs.topic }}.",
                    "depends_on": ["draft"],
                },
            ],
        }
    )
    return ProjectOrchestrator(spec, inputs={"topic": "beavers"})


async def test_upstream_outputs_flow_through_templates() -> None:
    results = await pipeline().run()
    assert results["research"].output == "facts about beavers"
    assert results["draft"].output == "draft from [facts about beavers]"
    assert results["final"].output == "final: draft from [facts about beavers] / facts about beavers"
    assert list(results) == ["research", "draft", "final"]
    assert results["final"].usage is not None and results["final"].usage.output_tokens == 10


async def test_model_output_with_template_syntax_is_inserted_as_text() -> None:
    spec = ProjectSpec.model_validate(
        {
            "agents": {
                "fixed": {"type": "offline", "response": "{{ 7 * 6 }} {% raw %}{{ inputs.secret }}{% endraw %}"}
            },
            "inputs": {"secret": "s3cret"},
            "tasks": [
                {"id": "a", "agent": "fixed", "description": "x"},
                {"id": "b", "description": "got: {{ tasks.a.output }}", "depends_on": ["a"]},
            ],
        }
    )
    results = await ProjectOrchestrator(spec).run()
    assert results["a"].output == "42 {{ inputs.secret }}"
    assert results["b"].output == "got: 42 {{ inputs.secret }}"


async def test_json_output_is_parsed_for_downstream_templates() -> None:
    spec = ProjectSpec.model_validate(
        {
            "agents": {"js": {"type": "offline", "response": '{"items": ["a", "b"], "n": 2}'}},
            "tasks": [
                {"id": "plan", "agent": "js", "description": "plan", "output_format": "json"},
                {
                    "id": "use",
                    "description": (
                        "{% for i in tasks.plan.parsed['items'] %}<{{ i }}>{% endfor %} n={{ tasks.plan.parsed.n }}"
                    ),
                    "depends_on": ["plan"],
                },
            ],
        }
    )
    results = await ProjectOrchestrator(spec).run()
    assert json.loads(results["plan"].output or "") == {"items": ["a", "b"], "n": 2}
    assert results["plan"].parsed == {"items": ["a", "b"], "n": 2}
    assert results["use"].output == "<a><b> n=2"


async def test_events_stream_and_callback() -> None:
    orchestrator = pipeline()
    seen: list[RunEvent] = []
    orchestrator.on_event(seen.append)
    stream = orchestrator.events.subscribe()
    await orchestrator.run()
    streamed = [event async for event in stream]
    assert streamed == seen
    kinds = [e.kind for e in seen]
    assert kinds[0] is EventKind.RUN_STARTED and kinds[-1] is EventKind.RUN_FINISHED
    assert kinds.count(EventKind.TASK_STARTED) == 3 and kinds.count(EventKind.TASK_SUCCEEDED) == 3
    research_done = next(e for e in seen if e.kind is EventKind.TASK_SUCCEEDED and e.task_id == "research")
    assert research_done.result is not None and research_done.result.output == "facts about beavers"
    assert len({e.run_id for e in seen}) == 1


def test_runs_under_trio() -> None:
    results = anyio.run(pipeline().run, backend="trio")
    assert results["final"].status is ExecutionStatus.SUCCESS


async def test_run_sync_inside_a_running_loop() -> None:
    asyncio.get_running_loop()  # we are inside pytest-asyncio's loop, like a notebook cell
    results = pipeline().run_sync()
    assert results["draft"].output == "draft from [facts about beavers]"


def test_run_sync_without_a_loop() -> None:
    assert pipeline().run_sync()["research"].succeeded


async def test_add_task_and_execute_task() -> None:
    orchestrator = ProjectOrchestrator(ProjectSpec(inputs={"x": "1"}))
    orchestrator.add_task(AgentTask(id="a", description="a{{ inputs.x }}"))
    orchestrator.add_task({"id": "b", "description": "b<{{ tasks.a.output }}>", "depends_on": ["a"]})
    with pytest.raises(ValueError, match="have not succeeded: a"):
        await orchestrator.execute_task("b")
    first = await orchestrator.execute_task("a")
    second = await orchestrator.execute_task("b")
    assert (first.output, second.output) == ("a1", "b<a1>")


def test_add_task_with_bad_fields_names_the_task() -> None:
    orchestrator = ProjectOrchestrator()
    with pytest.raises(ProjectValidationError) as info:
        orchestrator.add_task({"id": "oops", "description": "x", "retries": "many"})
    issue = info.value.issues[0]
    assert (issue.task, issue.field) == ("oops", "retries")


def test_validation_collects_every_problem() -> None:
    orchestrator = ProjectOrchestrator(
        ProjectSpec.model_validate(
            {
                "tasks": [
                    {"id": "a", "description": "{{ tasks.b.output }}", "depends_on": ["c"]},
                    {"id": "b", "description": "{{ inputs.missing }}", "agent": "nobody"},
                    {"id": "c", "description": "x", "depends_on": ["a"]},
                ]
            }
        )
    )
    with pytest.raises(ProjectValidationError) as info:
        orchestrator.validate()
    text = str(info.value)
    assert "task 'a', field 'depends_on': dependency cycle: a -> c -> a" in text
    assert "task 'a', field 'description': template reads tasks.b: it is not an ancestor" in text
    assert "task 'b', field 'description': template uses input 'missing'" in text
    assert "task 'b', field 'agent': unknown agent 'nobody'" in text


async def test_one_client_per_agent_shared_and_closed() -> None:
    created: list[CountingLlm] = []

    class CountingLlm(BaseLlm):
        provider = "counting"
        closed = False

        def __init__(self, config: object) -> None:
            super().__init__(config)  # type: ignore[arg-type]
            created.append(self)

        async def _generate(self, messages: list[Message], options: GenerationOptions) -> LlmResponse:  # type: ignore[override]
            await anyio.lowlevel.checkpoint()
            return LlmResponse(text="ok", provider="counting")

        async def aclose(self) -> None:
            self.closed = True

    register_llm("counting", CountingLlm)
    try:
        spec = ProjectSpec.model_validate(
            {
                "agents": {"c": {"type": "counting"}},
                "defaults": {"agent": "c"},
                "tasks": [{"id": f"t{i}", "description": "x"} for i in range(20)],
            }
        )
        results = await ProjectOrchestrator(spec, max_concurrency=5).run()
    finally:
        unregister_llm("counting")
    assert all(r.succeeded for r in results.values())
    assert len(created) == 1 and created[0].closed

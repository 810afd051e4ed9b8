"""Fan-out over data (``for_each``): static and dynamic items, per-item dependencies, failures, resume per item."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, InvalidRequestError, Message
from orchestration import (
    EventKind,
    ExecutionStatus,
    ProjectOrchestrator,
    ProjectSpec,
    ProjectValidationError,
    RunEvent,
    RunStore,
)
from orchestration.models import MappedResult

TICKETS = [
    {"id": "a1", "text": "server down"},
    {"id": "b2", "text": "typo on the page"},
    {"id": "c3", "text": "payment failing"},
]


class Model:
    """Answers each prompt with ``answer(prompt)`` (by default ``out:<prompt>``), counting the calls per prompt."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer or (lambda prompt: f"out:{prompt}")
        self.calls: dict[str, int] = {}

    async def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        prompt = messages[-1].content
        self.calls[prompt] = self.calls.get(prompt, 0) + 1
        await anyio.lowlevel.checkpoint()
        answer = self.answer(prompt)
        return answer if isinstance(answer, str) else json.dumps(answer)


def project(
    tasks: list[dict[str, Any]],
    model: Model | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    folder: Path | None = None,
    store: Path | None = None,
    **defaults: Any,
) -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate(
        {
            "name": "fan",
            "inputs": inputs or {},
            "agents": {"m": {"type": "offline"}},
            "defaults": {"agent": "m", "retries": 0, **defaults},
            "tasks": tasks,
        }
    )
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    file = folder / "project.yaml" if folder is not None else None
    return ProjectOrchestrator(
        spec, registry=registry, llms={"m": FunctionLlm(model or Model())}, file=file, store=store
    )


def write_jsonl(path: Path, items: list[Any]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


async def test_a_list_in_the_task_file() -> None:
    results = await project(
        [
            {"id": "shout", "for_each": ["a", "b", "c"], "description": "{{ index }}: {{ item | upper }}"},
            {
                "id": "join",
                "depends_on": ["shout"],
                "description": "{{ tasks.shout.outputs | join(', ') }} ({{ tasks.shout.results | length }})",
            },
        ]
    ).run()

    assert list(results) == ["shout", "shout[0]", "shout[1]", "shout[2]", "join"]
    assert [results[f"shout[{i}]"].output for i in range(3)] == ["out:0: A", "out:1: B", "out:2: C"]
    mapped = results["shout"]
    assert isinstance(mapped, MappedResult) and mapped.status is ExecutionStatus.SUCCESS
    assert mapped.items == ["shout[0]", "shout[1]", "shout[2]"] and mapped.output is None
    assert results["join"].output == "out:out:0: A, out:1: B, out:2: C (3)"
    document = mapped.model_dump(mode="json")
    assert document["items"] == mapped.items and "outputs" not in document and "results" not in document


async def test_jsonl_items_with_keys_and_json_answers(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "tickets.jsonl", TICKETS)
    model = Model(
        lambda prompt: {"urgent": "down" in prompt or "payment" in prompt} if "Classify" in prompt else f"out:{prompt}"
    )
    schema = {"type": "object", "properties": {"urgent": {"type": "boolean"}}, "required": ["urgent"]}
    results = await project(
        [
            {
                "id": "classify",
                "for_each": "{{ inputs.tickets }}",
                "key": "{{ item.id }}",
                "description": "Classify: {{ item.text }}",
                "output_format": "json",
                "output_schema": schema,
            },
            {
                "id": "report",
                "depends_on": ["classify"],
                "description": "{{ tasks.classify.outputs | length }} tickets, "
                "{{ tasks.classify.parsed | selectattr('urgent') | list | length }} urgent",
            },
        ],
        model,
        inputs={"tickets": "tickets.jsonl"},
        folder=tmp_path,
    ).run()

    assert [k for k in results if k.startswith("classify[")] == ["classify[a1]", "classify[b2]", "classify[c3]"]
    assert results["classify[a1]"].parsed == {"urgent": True}
    assert results["classify"].parsed == [{"urgent": True}, {"urgent": False}, {"urgent": True}]
    assert results["report"].output == "out:3 tickets, 2 urgent"


async def test_csv_and_json_files(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("name,size\nalpha,1\nbeta,22\n")
    (tmp_path / "list.json").write_text(json.dumps([[1, 2], [3]]))
    results = await project(
        [
            {"id": "rows", "for_each": "{{ inputs.rows }}", "key": "{{ item.name }}", "description": "{{ item.size }}"},
            {"id": "lists", "for_each": "{{ inputs.lists }}", "description": "{{ item | sum }}"},
        ],
        inputs={"rows": "rows.csv", "lists": "list.json"},
        folder=tmp_path,
    ).run()

    assert results["rows[alpha]"].output == "out:1" and results["rows[beta]"].output == "out:22"
    assert results["lists[0]"].output == "out:3" and results["lists[1]"].output == "out:3"


async def test_items_from_an_upstream_answer() -> None:
    plan_schema = {
        "type": "object",
        "properties": {"sections": {"type": "array", "items": {"type": "string"}}},
        "required": ["sections"],
    }
    model = Model(lambda prompt: {"sections": ["intro", "body", "end"]} if prompt == "plan" else f"wrote {prompt}")
    events: list[RunEvent] = []
    orchestrator = project(
        [
            {"id": "plan", "description": "plan", "output_format": "json", "output_schema": plan_schema},
            {
                "id": "write",
                "depends_on": ["plan"],
                "for_each": "{{ tasks.plan.parsed.sections }}",
                "key": "{{ item }}",
                "description": "section {{ item }} of {{ tasks.plan.parsed.sections | length }}",
            },
            {"id": "book", "depends_on": ["write"], "description": "{{ tasks.write.outputs | join(' | ') }}"},
        ],
        model,
    )
    orchestrator.on_event(events.append)
    results = await orchestrator.run()

    assert results["write[body]"].output == "wrote section body of 3"
    assert results["book"].output == "wrote wrote section intro of 3 | wrote section body of 3 | wrote section end of 3"
    expanded = [e for e in events if e.kind is EventKind.TASK_EXPANDED]
    assert [(e.task_id, e.items) for e in expanded] == [("write", 3)]
    started = {e.task_id for e in events if e.kind is EventKind.TASK_STARTED}
    assert {"write[intro]", "write[body]", "write[end]"} <= started and "write" not in started


async def test_an_answer_that_is_not_a_list_fails_the_mapped_task() -> None:
    schema = {"type": "object", "properties": {"sections": {"type": ["array", "object"]}}}  # a list, or not
    model = Model(lambda prompt: {"sections": {"not": "a list"}} if prompt == "plan" else prompt)
    results = await project(
        [
            {"id": "plan2", "description": "plan", "output_format": "json", "output_schema": schema},
            {
                "id": "write",
                "depends_on": ["plan2"],
                "for_each": "{{ tasks.plan2.parsed.sections }}",
                "description": "x",
            },
            {"id": "after", "depends_on": ["write"], "description": "{{ tasks.write.outputs }}"},
        ],
        model,
    ).run()

    write = results["write"]
    assert write.status is ExecutionStatus.FAILED and write.error is not None
    assert write.error.type == "invalid_items"
    assert "tasks.plan2.parsed.sections is an object, not a list" in write.error.message
    assert results["after"].status is ExecutionStatus.SKIPPED
    assert not any(task_id.startswith("write[") for task_id in results)


async def test_an_empty_list_maps_to_nothing() -> None:
    results = await project(
        [
            {"id": "each", "for_each": [], "description": "{{ item }}"},
            {"id": "after", "depends_on": ["each"], "description": "{{ tasks.each.outputs | length }} done"},
        ]
    ).run()
    assert results["each"].succeeded and results["each"].items == []
    assert results["after"].output == "out:0 done"


async def test_a_failed_item_fails_the_mapped_task_and_skips_its_dependents() -> None:
    def answer(prompt: str) -> str:
        if prompt == "item 1":
            raise InvalidRequestError("no", provider="function")
        return prompt

    results = await project(
        [
            {"id": "each", "for_each": [0, 1, 2], "description": "item {{ item }}"},
            {"id": "after", "depends_on": ["each"], "description": "{{ tasks.each.outputs }}"},
        ],
        Model(answer),
    ).run()

    assert [results[f"each[{i}]"].status for i in range(3)] == ["success", "failed", "success"]
    each = results["each"]
    assert each.status is ExecutionStatus.FAILED and each.error is not None
    assert each.error.type == "items_failed" and "each[1]" in each.error.message
    assert each.items == ["each[0]", "each[1]", "each[2]"]
    assert results["after"].status is ExecutionStatus.SKIPPED


async def test_per_item_dependencies_start_each_item_when_its_own_parent_is_done() -> None:
    """``draft[0]`` must start while ``classify[1]`` still waits: it waits for ``classify[0]`` alone."""
    draft_started = anyio.Event()
    seen: list[str] = []

    async def answer(messages: Sequence[Message], options: GenerationOptions) -> str:
        prompt = messages[-1].content
        seen.append(prompt)
        if prompt == "classify 1":
            with anyio.fail_after(5):
                await draft_started.wait()
        if prompt.startswith("draft 0"):
            draft_started.set()
        return prompt

    orchestrator = project(
        [
            {"id": "classify", "for_each": [0, 1], "description": "classify {{ item }}"},
            {
                "id": "draft",
                "for_each": [0, 1],
                "depends_on": [{"task": "classify", "per_item": True}],
                "description": "draft {{ item }} after {{ tasks.classify.output }}",
            },
            {"id": "both", "depends_on": ["draft"], "description": "{{ tasks.draft.outputs | join(' + ') }}"},
        ],
        max_concurrency=4,
    )
    orchestrator.llms = {"m": FunctionLlm(answer)}
    with anyio.fail_after(10):
        results = await orchestrator.run()

    assert seen.index("draft 0 after classify 0") < seen.index("draft 1 after classify 1")
    assert results["draft[1]"].output == "draft 1 after classify 1"
    assert results["both"].output == "draft 0 after classify 0 + draft 1 after classify 1"


async def test_per_item_dependents_of_a_failed_item_are_skipped_alone() -> None:
    def answer(prompt: str) -> str:
        if prompt == "classify 1":
            raise InvalidRequestError("no", provider="function")
        return prompt

    results = await project(
        [
            {"id": "classify", "for_each": [0, 1, 2], "description": "classify {{ item }}"},
            {
                "id": "draft",
                "for_each": [0, 1, 2],
                "depends_on": [{"task": "classify", "per_item": True}],
                "description": "draft {{ item }}",
            },
        ],
        Model(answer),
    ).run()

    assert [results[f"draft[{i}]"].status for i in range(3)] == ["success", "skipped", "success"]
    assert results["classify"].status is ExecutionStatus.FAILED
    assert results["draft"].status is ExecutionStatus.SKIPPED


async def test_instances_are_limited_by_the_concurrency_cap() -> None:
    running = peak = 0

    async def answer(messages: Sequence[Message], options: GenerationOptions) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.001)
        running -= 1
        return "ok"

    orchestrator = project([{"id": "each", "for_each": list(range(40)), "description": "{{ item }}"}])
    orchestrator.llms = {"m": FunctionLlm(answer)}
    orchestrator.max_concurrency = 5
    results = await orchestrator.run()
    assert len(results) == 41 and all(r.succeeded for r in results.values())
    assert peak == 5


async def test_resume_runs_a_changed_item_alone(tmp_path: Path) -> None:
    tickets = write_jsonl(tmp_path / "tickets.jsonl", TICKETS)
    tasks: list[dict[str, Any]] = [
        {
            "id": "classify",
            "for_each": "{{ inputs.tickets }}",
            "key": "{{ item.id }}",
            "description": "{{ item.text }}",
        },
        {"id": "report", "depends_on": ["classify"], "description": "{{ tasks.classify.outputs | join(', ') }}"},
    ]
    model = Model()
    store = tmp_path / "runs.db"
    first = project(tasks, model, inputs={"tickets": "tickets.jsonl"}, folder=tmp_path, store=store)
    await first.run(run_id="r1")
    assert sum(model.calls.values()) == 4

    again = project(tasks, model, inputs={"tickets": "tickets.jsonl"}, folder=tmp_path, store=store)
    results = await again.resume("r1")  # nothing changed: nothing is called
    assert sum(model.calls.values()) == 4 and all(r.succeeded for r in results.values())
    assert again.resume_plan is not None and set(again.resume_plan.kept) == {
        "classify[a1]",
        "classify[b2]",
        "classify[c3]",
        "report",
    }

    write_jsonl(tickets, [TICKETS[0], {"id": "b2", "text": "typo fixed?"}, TICKETS[2]])
    model.calls.clear()
    changed = project(tasks, model, inputs={"tickets": "tickets.jsonl"}, folder=tmp_path, store=store)
    results = await changed.resume("r1")
    assert model.calls == {"typo fixed?": 1, "out:server down, out:typo fixed?, out:payment failing": 1}
    assert changed.resume_plan is not None
    assert changed.resume_plan.changed == ["classify[b2]"] and changed.resume_plan.downstream == ["report"]
    assert list(results) == ["classify", "classify[a1]", "classify[b2]", "classify[c3]", "report"]
    stored = RunStore(store).load_results("r1")
    assert list(stored) == list(results)


async def test_resume_after_a_failed_item_calls_that_item_only(tmp_path: Path) -> None:
    failures = {"item 2": 1}

    def answer(prompt: str) -> str:
        if failures.get(prompt):
            failures[prompt] -= 1
            raise InvalidRequestError("not now", provider="function")
        return prompt

    model = Model(answer)
    tasks: list[dict[str, Any]] = [
        {"id": "each", "for_each": [1, 2, 3], "description": "item {{ item }}"},
        {"id": "after", "depends_on": ["each"], "description": "{{ tasks.each.outputs | join(',') }}"},
    ]
    store = tmp_path / "runs.db"
    results = await project(tasks, model, store=store).run(run_id="r")
    assert results["each"].status is ExecutionStatus.FAILED
    model.calls.clear()
    results = await project(tasks, model, store=store).resume("r")
    assert model.calls == {"item 2": 1, "item 1,item 2,item 3": 1}
    assert all(r.succeeded for r in results.values())


async def test_instances_of_alike_requests_have_their_own_cache_keys(tmp_path: Path) -> None:
    from orchestration.answer_cache import AnswerCache

    orchestrator = project(
        [{"id": "same", "for_each": ["x", "x"], "description": "the same prompt"}], store=tmp_path / "runs.db"
    )
    built = orchestrator.validate()
    cache = AnswerCache(RunStore(tmp_path / "runs.db"), built)
    try:
        from dataclasses import replace

        from orchestration.items import Instance

        task = built.tasks[0]
        first = replace(task, instance=Instance(0, "0", "x"))
        second = replace(task, instance=Instance(1, "1", "x"))
        messages = [Message(role="user", content="the same prompt")]
        keys = {cache.key(built.registry, t, messages, task.options) for t in (task, first, second)}
        assert len(keys) == 3
    finally:
        cache.close()


@pytest.mark.parametrize(
    ("task", "inputs", "field", "message"),
    [
        ({"for_each": "{{ inputs.nope }}"}, {}, "for_each", "reads input 'nope', which is neither"),
        ({"for_each": "{{ inputs.t }}"}, {"t": "../outside.jsonl"}, "for_each", "outside the project's folder"),
        ({"for_each": "{{ inputs.t }}"}, {"t": "missing.jsonl"}, "for_each", "no file of items 'missing.jsonl'"),
        ({"for_each": "{{ inputs.t }}"}, {"t": "bad.jsonl"}, "for_each", "bad.jsonl line 2: not JSON"),
        ({"for_each": "{{ inputs.t }}"}, {"t": "notes.txt"}, "for_each", "not a list, nor a .jsonl"),
        ({"for_each": "{{ inputs.t }}"}, {"t": {"a": 1}}, "for_each", "input 't' is an object"),
        ({"for_each": "{{ inputs.t | list }}"}, {"t": [1]}, "for_each", "must be a list or one lookup"),
        ({"for_each": "{{ tasks.text.parsed }}", "depends_on": ["text"]}, {}, "for_each", "is a text task"),
        ({"for_each": "{{ tasks.obj.parsed }}", "depends_on": ["obj"]}, {}, "for_each", "does not make its answer"),
        ({"for_each": "{{ tasks.obj.parsed.rows }}", "depends_on": ["obj"]}, {}, "for_each", "does not make"),
        ({"for_each": "{{ tasks.obj.parsed.items }}"}, {}, "for_each", "not an ancestor"),
        ({"for_each": "{{ tasks.obj.output }}", "depends_on": ["obj"]}, {}, "for_each", "read the parsed answer"),
        ({"for_each": [1, 2], "key": "{{ tasks.obj.output }}"}, {}, "key", "may read only item, index"),
        ({"for_each": [{"k": 1}, {"k": 1}], "key": "{{ item.k }}"}, {}, "key", "items 0 and 1 have the same key"),
        ({"key": "{{ item }}"}, {}, "key", "key needs for_each"),
        ({"description": "{{ item }}"}, {}, "description", "only a mapped task (for_each) has it"),
        ({"depends_on": [{"task": "obj", "per_item": True}]}, {}, "depends_on", "per_item needs for_each"),
        (
            {"for_each": [1], "depends_on": [{"task": "other", "per_item": True}]},
            {},
            "depends_on",
            "mapped over the same items",
        ),
        ({"description": "{{ tasks.other.output }}", "depends_on": ["other"]}, {}, "description", "is mapped"),
        ({"description": "{{ tasks.text.outputs }}", "depends_on": ["text"]}, {}, "description", "only a mapped"),
        ({"for_each": [1, 2], "output_file": "out/report.md"}, {}, "output_file", "the same path for every item"),
        (
            {
                "for_each": [1, 2],
                "output_file": "out/{{ inputs.name }}-{{ tasks.text.output }}.md",
                "depends_on": ["text"],
            },
            {"name": "x"},
            "output_file",
            "'out/{{ inputs.name }}-{{ tasks.text.output }}.md' is the same path for every item",
        ),
        (
            {
                "for_each": [1, 2],
                "description": "{{ tasks.other.outputs }}",
                "depends_on": [{"task": "other", "per_item": True}],
            },
            {},
            "description",
            "is a per-item dependency",
        ),
    ],
)
def test_validation_names_the_task_field_and_line(
    tmp_path: Path, task: dict[str, Any], inputs: dict[str, Any], field: str, message: str
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path.parent / "outside.jsonl").write_text("1\n")
    listing = {"type": "object", "properties": {"items": {"type": "array"}, "rows": {"type": "string"}}}
    document = {
        "name": "bad",
        "inputs": inputs,
        "tasks": [
            {"id": "text", "description": "t"},
            {"id": "obj", "description": "o", "output_format": "json", "output_schema": listing},
            {"id": "other", "description": "o", "for_each": [1, 2]},
            {"id": "subject", "description": "s", **task},
        ],
    }
    path = tmp_path / "project.yaml"
    import yaml

    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ProjectValidationError) as raised:
        ProjectOrchestrator.from_file(path, registry=AgentRegistry.default()).validate(check_agents=False)
    issues = [i for i in raised.value.issues if i.task == "subject"]
    assert issues, raised.value.issues
    assert any(message in i.message and i.field == field for i in issues), issues
    assert all(i.line is not None and i.file == path for i in issues)


@pytest.mark.parametrize("output_file", ["out/{{ item }}.md", "out/{{ index }}.md", "out/{{ tasks.other.output }}.md"])
def test_an_output_file_that_reads_the_item_is_valid(tmp_path: Path, output_file: str) -> None:
    document = {
        "name": "fine",
        "tasks": [
            {"id": "other", "description": "o", "for_each": [1, 2]},
            {
                "id": "subject",
                "description": "s",
                "for_each": [1, 2],
                "depends_on": [{"task": "other", "per_item": True}],
                "output_file": output_file,
            },
        ],
    }
    path = tmp_path / "project.json"
    path.write_text(json.dumps(document))
    ProjectOrchestrator.from_file(path, registry=AgentRegistry.default()).validate(check_agents=False)


def test_the_cli_refuses_a_mapped_task_writing_one_file_for_every_item(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestration.cli.app import app

    path = tmp_path / "triage.yaml"
    path.write_text(
        "tasks:\n  - id: classify\n    for_each: [a, b]\n    description: 'Classify {{ item }}'\n"
        "    output_file: reports/triage.md\n"
    )
    for command in ("validate", "run"):
        result = CliRunner().invoke(app, [command, str(path)])
        assert result.exit_code == 2, result.output
        assert "triage.yaml:5: task 'classify', field 'output_file'" in result.output
        assert "is the same path for every item" in result.output
    assert not (tmp_path / "reports").exists()


def test_validation_reads_a_large_file_quickly(tmp_path: Path) -> None:
    import time

    write_jsonl(tmp_path / "big.jsonl", [{"id": f"k{i}", "text": f"ticket {i}"} for i in range(20_000)])
    orchestrator = project(
        [{"id": "each", "for_each": "{{ inputs.big }}", "key": "{{ item.id }}", "description": "{{ item.text }}"}],
        inputs={"big": "big.jsonl"},
        folder=tmp_path,
    )
    start = time.perf_counter()
    built = orchestrator.validate()
    assert time.perf_counter() - start < 3.0
    fan = built.tasks[0].fan_out
    assert fan is not None and fan.keys is not None and fan.keys[-1] == "k19999"


MAPPED_FILE = """\
name: triage
inputs: {tickets: tickets.jsonl}
defaults: {agent: offline}
tasks:
  - id: classify
    for_each: "{{ inputs.tickets }}"
    key: "{{ item.id }}"
    description: "Classify: {{ item.text }}"
  - id: draft
    for_each: "{{ inputs.tickets }}"
    depends_on: [{task: classify, per_item: true}]
    description: "Reply to {{ item.id }}: {{ tasks.classify.output }}"
  - id: report
    depends_on: [classify, draft]
    description: "{{ tasks.classify.outputs | length }} tickets"
"""


def test_the_cli_validates_draws_runs_shows_and_resumes_a_mapped_project(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestration.cli.app import app

    runner = CliRunner()
    write_jsonl(tmp_path / "tickets.jsonl", TICKETS)
    path = tmp_path / "triage.yaml"
    path.write_text(MAPPED_FILE)
    store = str(tmp_path / "runs.db")

    validated = runner.invoke(app, ["validate", str(path)])
    assert validated.exit_code == 0, validated.output
    assert "classify: for each of inputs.tickets (3 items)" in validated.output
    graph = runner.invoke(app, ["graph", str(path)])
    assert "for each of inputs.tickets (3 items)" in graph.output and "t0 -. per item .-> t1" in graph.output

    results = tmp_path / "results.json"
    ran = runner.invoke(app, ["run", str(path), "--run-id", "r", "--store", store, "--results", str(results)])
    assert ran.exit_code == 0, ran.output
    assert "classify: 3 items to run" in ran.output and "success   classify[b2]" in ran.output
    assert "[9/9]" in ran.output  # 3 tasks, and 2 x 3 instances
    document = json.loads(results.read_text())
    assert list(document["results"])[:4] == ["classify", "classify[a1]", "classify[b2]", "classify[c3]"]
    assert document["results"]["classify"]["items"] == ["classify[a1]", "classify[b2]", "classify[c3]"]
    assert document["results"]["draft[1]"]["output"] == "Reply to b2: Classify: typo on the page"

    shown = runner.invoke(app, ["show", "r", "classify[c3]", "--store", store])
    assert shown.exit_code == 0 and "Classify: payment failing" in shown.output
    shown = runner.invoke(app, ["show", "r", "classify", "--store", store])
    assert "items:          3: classify[a1], classify[b2], classify[c3]" in shown.output

    write_jsonl(tmp_path / "tickets.jsonl", [*TICKETS[:2], {"id": "c3", "text": "refund please"}])
    resumed = runner.invoke(app, ["resume", "r", "--store", store])
    assert resumed.exit_code == 0, resumed.output
    assert "rerun because the project changed: classify[c3]" in resumed.output
    assert "rerun because an upstream task changed: report" in resumed.output
    records = RunStore(tmp_path / "runs.db").load_results("r")
    assert records["draft[2]"].output == "Reply to c3: Classify: refund please"

    planned = runner.invoke(app, ["plan", str(path), "--store", store])
    assert planned.exit_code == 0, planned.output
    assert "call x3" in planned.output and "total: 7 calls" in planned.output


def test_the_cli_refuses_an_invalid_mapped_project_with_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orchestration.cli.app import app

    path = tmp_path / "triage.yaml"
    path.write_text(MAPPED_FILE)  # no tickets.jsonl
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert "triage.yaml:6: task 'classify', field 'for_each': input 'tickets': no file of items" in result.output
    assert "2 problems found" in result.output  # each mapped task says it; nothing else is reported


class Nodes:
    """A lifecycle for :class:`DagScheduler` alone: node 0 grows the DAG when it runs."""

    def __init__(self, grow: Any, fails: set[int] | None = None) -> None:
        self.states = ["blocked", "blocked"]
        self.fails = fails if fails is not None else {3}
        self.ran: list[int] = []
        self.skipped: list[tuple[int, int]] = []
        self.grow = grow

    def is_blocked(self, node: int) -> bool:
        return self.states[node] == "blocked"

    def ready(self, node: int) -> None:
        self.states[node] = "ready"

    def skip(self, node: int, cause: int) -> None:
        self.states[node] = "skipped"
        self.skipped.append((node, cause))

    async def run(self, node: int) -> bool:
        self.ran.append(node)
        if node == 0:
            self.grow()
        await anyio.lowlevel.checkpoint()
        self.states[node] = "failed" if node in self.fails else "done"
        return node not in self.fails


async def test_the_scheduler_grows_while_it_runs() -> None:
    """Node 0 adds nodes 2-5 before node 1 (which waits for them): 2 and 3 ready at once, 4 after 3 (which
    fails: 4 is skipped, and 1 with it), 5 kept from before; more workers start for the new nodes."""
    from orchestration.scheduler import DagScheduler

    scheduler = DagScheduler([[1], []], max_concurrency=4)

    def grow() -> None:
        assert scheduler.size == 2
        lifecycle.states += ["blocked", "blocked", "blocked", "done"]
        scheduler.grow([[1], [1, 4], [1], [1]], [[], [], [], []], group=0)

    lifecycle = Nodes(grow)
    with anyio.fail_after(5):
        await scheduler.run(lifecycle)
    assert lifecycle.ran[0] == 0 and sorted(lifecycle.ran) == [0, 2, 3]
    assert lifecycle.states == ["done", "skipped", "done", "failed", "skipped", "done"]
    assert (1, 3) in lifecycle.skipped and (4, 3) in lifecycle.skipped
    assert scheduler.size == 6 and len(scheduler.ranks) == 6


async def test_grown_nodes_count_parents_that_ended_before_them() -> None:
    """Node 2 fails; node 0 (all_done) runs after it and adds 3 (whose parent, 2, ended already: 3 is skipped at
    birth with 2 as the cause) and 4 (ready at once); 1 waits for both and is skipped for 2."""
    from orchestration.models import TriggerRule
    from orchestration.scheduler import DagScheduler

    done, success = TriggerRule.ALL_DONE, TriggerRule.ALL_SUCCESS
    scheduler = DagScheduler([[1], [], [0]], max_concurrency=2, triggers=[done, success, success])

    def grow() -> None:
        lifecycle.states += ["blocked", "blocked"]
        scheduler.grow([[1], [1]], [[2], []], group=0)

    lifecycle = Nodes(grow, fails={2})
    lifecycle.states.append("blocked")
    with anyio.fail_after(5):
        await scheduler.run(lifecycle)
    assert lifecycle.ran == [2, 0, 4] and lifecycle.skipped == [(3, 2), (1, 2)]
    assert lifecycle.states == ["done", "skipped", "failed", "skipped", "done"]


async def test_resume_keeps_the_instances_of_items_from_a_kept_answer(tmp_path: Path) -> None:
    failures = {"write body": 1}

    def answer(prompt: str) -> Any:
        if prompt == "plan":
            return {"sections": ["intro", "body", "end"]}
        if failures.get(prompt):
            failures[prompt] -= 1
            raise InvalidRequestError("not now", provider="function")
        return prompt

    schema = {"type": "object", "properties": {"sections": {"type": "array"}}, "required": ["sections"]}
    tasks: list[dict[str, Any]] = [
        {"id": "plan", "description": "plan", "output_format": "json", "output_schema": schema},
        {
            "id": "write",
            "depends_on": ["plan"],
            "for_each": "{{ tasks.plan.parsed.sections }}",
            "description": "write {{ item }}",
        },
        {"id": "book", "depends_on": ["write"], "description": "{{ tasks.write.outputs | join(', ') }}"},
    ]
    model = Model(answer)
    store = tmp_path / "runs.db"
    results = await project(tasks, model, store=store).run(run_id="r")
    assert results["write[1]"].status is ExecutionStatus.FAILED and results["book"].status is ExecutionStatus.SKIPPED
    model.calls.clear()
    resumed = project(tasks, model, store=store)
    results = await resumed.resume("r")
    assert model.calls == {"write body": 1, "write intro, write body, write end": 1}
    assert resumed.resume_plan is not None and {"plan", "write[0]", "write[2]"} <= set(resumed.resume_plan.kept)
    assert all(r.succeeded for r in results.values())

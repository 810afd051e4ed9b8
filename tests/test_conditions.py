"""Branching: ``when`` conditions and trigger rules, through real runs of the orchestrator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import AuthenticationError, FunctionLlm, GenerationOptions, Message
from orchestration import ExecutionResult, ExecutionStatus, ProjectOrchestrator, ProjectSpec, RunEvent
from orchestration.conditions import Condition, truth
from orchestration.results import RunStatus
from orchestration.scheduler import DagScheduler, Outcome
from orchestration.store import RunStore
from orchestration.templates import TemplateError


class Model:
    """A function model: answers ``json: {...}`` with the JSON, fails prompts starting with ``fail``, and
    otherwise echoes the prompt; records every prompt it was sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        prompt = messages[-1].content
        self.prompts.append(prompt)
        if prompt.startswith("fail"):
            raise AuthenticationError("refused")
        return prompt.removeprefix("json:").strip()

    def asked(self, text: str) -> bool:
        return any(prompt.startswith(text) for prompt in self.prompts)


def orchestrator(
    tasks: list[dict[str, Any]], model: Model, *, inputs: dict[str, Any] | None = None, **kwargs: Any
) -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate(
        {"name": "branching", "inputs": inputs or {}, "defaults": {"agent": "m", "retries": 0}, "tasks": tasks}
    )
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    return ProjectOrchestrator(spec, registry=registry, llms={"m": FunctionLlm(model)}, **kwargs)


def statuses(results: dict[str, ExecutionResult]) -> dict[str, tuple[str, str | None]]:
    return {task: (r.status.value, r.error.type if r.error else None) for task, r in results.items()}


TRIAGE = {
    "id": "triage",
    "description": 'json: {"urgent": {{ inputs.urgent }}, "team": "ops"}',
    "output_format": "json",
}


@pytest.mark.parametrize("urgent", ["true", "false"])
async def test_when_takes_one_branch_and_skips_the_other_with_its_descendants(urgent: str) -> None:
    model = Model()
    tasks = [
        TRIAGE,
        {"id": "page", "depends_on": ["triage"], "when": "{{ tasks.triage.parsed.urgent }}", "description": "page"},
        {"id": "after_page", "depends_on": ["page"], "description": "after page: {{ tasks.page.output }}"},
        {"id": "queue", "depends_on": ["triage"], "when": "{{ not tasks.triage.parsed.urgent }}", "description": "q"},
    ]
    results = await orchestrator(tasks, model, inputs={"urgent": urgent}).run()
    taken, skipped = ("page", "queue") if urgent == "true" else ("queue", "page")
    assert results[taken].succeeded
    assert statuses(results)[skipped] == ("skipped", "condition_false")
    assert results[skipped].started_at is None and not model.asked(skipped)
    assert results[skipped].error is not None and "tasks.triage.parsed" in results[skipped].error.message
    if urgent == "true":
        assert results["after_page"].output == "after page: page"
    else:  # a descendant of the branch not taken is skipped too, as a branch, not as a failure
        assert statuses(results)["after_page"] == ("skipped", "upstream_skipped")
        assert results["after_page"].error is not None and "'page'" in results["after_page"].error.message
        assert results["after_page"].branch_skipped and not model.asked("after page")
    assert RunStatus.of(results) is RunStatus.SUCCESS  # a branch not taken fails nothing


async def test_conditions_on_inputs_constants_and_text_answers() -> None:
    model = Model()
    tasks = [
        {"id": "root_off", "when": "{{ inputs.mode == 'full' }}", "description": "root off"},
        {"id": "root_on", "when": "{{ inputs.mode == 'quick' }}", "description": "root on"},
        {"id": "disabled", "when": False, "description": "disabled"},
        {"id": "enabled", "when": True, "description": "enabled"},
        {"id": "verdict", "description": "  No \n"},
        {"id": "acted", "depends_on": ["verdict"], "when": "{{ tasks.verdict.output }}", "description": "acted"},
        {"id": "mixed", "depends_on": ["verdict"], "when": "x{{ tasks.verdict.output }}", "description": "mixed"},
        {"id": "after_root_off", "depends_on": ["root_off"], "description": "after"},
    ]
    results = await orchestrator(tasks, model, inputs={"mode": "quick"}).run()
    assert statuses(results) == {
        "root_off": ("skipped", "condition_false"),
        "root_on": ("success", None),
        "disabled": ("skipped", "condition_false"),
        "enabled": ("success", None),
        "verdict": ("success", None),
        "acted": ("skipped", "condition_false"),  # the answer " No " reads as false
        "mixed": ("success", None),  # rendered text "x No" is not one of the false words
        "after_root_off": ("skipped", "upstream_skipped"),
    }
    assert sorted(model.prompts) == sorted(["root on", "enabled", "  No \n", "mixed"])


def test_truth_of_values_and_texts() -> None:
    for value in ("", " false ", "No", "OFF", "0", "none", "null", False, 0, None, [], {}):
        assert not truth(value), value
    for value in ("yes", "true", "1", "x", True, 2, [0], {"a": 1}):
        assert truth(value), value
    with pytest.raises(TemplateError, match="template expression"):
        Condition.compile("tasks.a.output")
    with pytest.raises(TemplateError):
        Condition.compile("{{ tasks.a.output == }}")


async def test_a_condition_that_cannot_be_read_fails_the_task_and_skips_its_dependents() -> None:
    model = Model()
    tasks = [
        {"id": "a", "description": "a"},
        {"id": "b", "depends_on": ["a"], "when": "{{ tasks.a.output.missing }}", "description": "b"},
        {"id": "c", "depends_on": ["b"], "description": "c"},
        {"id": "d", "depends_on": ["b"], "trigger": "all_done", "description": "d {{ tasks.b.status }}"},
    ]
    results = await orchestrator(tasks, model).run()
    assert statuses(results) == {
        "a": ("success", None),
        "b": ("failed", "template_error"),
        "c": ("skipped", "upstream_failed"),
        "d": ("success", None),
    }
    assert results["b"].error is not None and results["b"].error.message.startswith("when: ")
    assert results["d"].output == "d failed"
    assert RunStatus.of(results) is RunStatus.FAILED


async def test_all_done_runs_after_failed_and_skipped_dependencies_and_sees_their_status() -> None:
    model = Model()
    tasks = [
        {"id": "ok", "description": "ok"},
        {"id": "bad", "description": "fail bad"},
        {"id": "off", "when": False, "description": "off"},
        {
            "id": "report",
            "depends_on": ["ok", "bad", "off"],
            "trigger": "all_done",
            "description": "{{ tasks.ok.status }} {{ tasks.bad.status }} {{ tasks.off.status }}"
            " {{ tasks.bad.error.type }}",
        },
        {"id": "after", "depends_on": ["report"], "description": "after {{ tasks.report.output }}"},
    ]
    results = await orchestrator(tasks, model).run()
    assert results["report"].output == "success failed skipped authentication"
    assert results["after"].output == "after success failed skipped authentication"


async def test_none_failed_joins_after_a_branch_but_not_after_a_failure() -> None:
    model = Model()
    tasks = [
        {"id": "off", "when": False, "description": "off"},
        {"id": "off_child", "depends_on": ["off"], "description": "off child"},
        {"id": "on", "description": "on"},
        {"id": "join", "depends_on": ["off_child", "on"], "trigger": "none_failed", "description": "join"},
        {"id": "bad", "description": "fail"},
        {"id": "bad_child", "depends_on": ["bad"], "description": "bad child"},
        {"id": "no_join", "depends_on": ["bad_child", "on"], "trigger": "none_failed", "description": "no join"},
        {"id": "all_skipped", "depends_on": ["off"], "trigger": "none_failed", "description": "all skipped"},
    ]
    results = await orchestrator(tasks, model).run()
    assert statuses(results) == {
        "off": ("skipped", "condition_false"),
        "off_child": ("skipped", "upstream_skipped"),
        "on": ("success", None),
        "join": ("success", None),
        "bad": ("failed", "authentication"),
        "bad_child": ("skipped", "upstream_failed"),
        "no_join": ("skipped", "upstream_failed"),
        "all_skipped": ("success", None),
    }
    assert results["no_join"].error is not None and "'bad'" in results["no_join"].error.message


async def test_one_success_runs_once_every_dependency_ended_if_one_succeeded() -> None:
    model = Model()
    tasks = [
        {"id": "ok", "description": "ok"},
        {"id": "bad", "description": "fail"},
        {"id": "off", "when": False, "description": "off"},
        {
            "id": "either",
            "depends_on": ["ok", "bad"],
            "trigger": "one_success",
            "description": "either {{ tasks.ok.status }} {{ tasks.bad.status }}",
        },
        {"id": "neither", "depends_on": ["bad", "off"], "trigger": "one_success", "description": "neither"},
        {"id": "none_ran", "depends_on": ["off"], "trigger": "one_success", "description": "none ran"},
    ]
    results = await orchestrator(tasks, model).run()
    assert results["either"].output == "either success failed"
    assert statuses(results)["neither"] == ("skipped", "upstream_failed")
    assert statuses(results)["none_ran"] == ("skipped", "upstream_skipped")


@pytest.mark.parametrize("first", ["off", "bad"])
async def test_a_failure_outweighs_a_branch_whichever_ends_first(first: str) -> None:
    """``all_success`` after a skipped and a failed dependency is ``upstream_failed`` in either order, so a
    ``none_failed`` join further down decides the same way every time."""
    model = Model()
    gate = anyio.Event()

    async def slow(messages: Sequence[Message], options: GenerationOptions) -> str:
        await gate.wait()
        return model(messages, options)

    second = "bad" if first == "off" else "off"
    tasks = [
        {"id": "x", "description": "x", "agent": "m" if first == "off" else "slow"},
        {"id": "off", "depends_on": ["x"], "when": "{{ tasks.x.output == 'nope' }}", "description": "off"},
        {"id": "bad", "description": "fail", "agent": "m" if first == "bad" else "slow"},
        {"id": "both", "depends_on": ["off", "bad"], "description": "both"},
        {"id": "join", "depends_on": ["both"], "trigger": "none_failed", "description": "join"},
    ]
    spec = ProjectSpec.model_validate({"name": "order", "defaults": {"agent": "m", "retries": 0}, "tasks": tasks})
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    run = ProjectOrchestrator(spec, registry=registry, llms={"m": FunctionLlm(model), "slow": FunctionLlm(slow)})
    ended: list[str] = []

    def on_event(event: RunEvent) -> None:
        if event.result is not None:
            ended.append(event.task_id or "")
            if event.task_id == first:
                gate.set()

    run.on_event(on_event)
    with anyio.fail_after(5):
        results = await run.run()
    assert ended.index(first) < ended.index(second)
    assert statuses(results)["off"] == ("skipped", "condition_false")
    assert statuses(results)["bad"] == ("failed", "authentication")
    assert statuses(results)["both"] == ("skipped", "upstream_failed")
    assert statuses(results)["join"] == ("skipped", "upstream_failed")


async def test_a_long_chain_behind_a_false_condition_is_skipped_without_recursion() -> None:
    model = Model()
    n = 3000
    tasks: list[dict[str, Any]] = [{"id": "t0", "when": "{{ inputs.go }}", "description": "t0"}]
    tasks += [{"id": f"t{i}", "depends_on": [f"t{i - 1}"], "description": f"t{i}"} for i in range(1, n)]
    tasks.append({"id": "end", "depends_on": [f"t{n - 1}"], "trigger": "all_done", "description": "end"})
    results = await orchestrator(tasks, model, inputs={"go": "no"}).run()
    assert statuses(results)[f"t{n - 1}"] == ("skipped", "upstream_skipped")
    assert model.prompts == ["end"]


async def test_a_resumed_run_reads_its_conditions_again(tmp_path: Path) -> None:
    model = Model()
    tasks = [
        {"id": "a", "description": "fail {{ inputs.flag }}"},
        {"id": "b", "depends_on": ["a"], "when": "{{ inputs.flag == 'on' }}", "description": "b"},
        {"id": "c", "when": "{{ inputs.flag == 'on' }}", "description": "c"},
    ]
    store = RunStore(tmp_path / "runs.db")
    first = await orchestrator(tasks, model, inputs={"flag": "on"}, store=store).run(run_id="r")
    assert statuses(first)["a"] == ("failed", "authentication") and first["c"].succeeded
    tasks[0] = {"id": "a", "description": "a {{ inputs.flag }}"}
    again = orchestrator(tasks, model, inputs={"flag": "on"}, store=store)
    results = await again.resume("r")
    assert again.resume_plan is not None and set(again.resume_plan.kept) == {"c"}
    assert results["b"].succeeded and model.prompts.count("c") == 1
    assert store.get_run("r").status is RunStatus.SUCCESS
    store.close()


class Nodes:
    """A lifecycle for the scheduler alone: node 1's condition is false; node 3 failed to read its own."""

    def __init__(self, count: int) -> None:
        self.states = ["blocked"] * count
        self.skipped: list[tuple[int, int]] = []
        self.ran: list[int] = []

    def is_blocked(self, node: int) -> bool:
        return self.states[node] == "blocked"

    def ready(self, node: int) -> Outcome | None:
        settled = {1: Outcome.SKIPPED, 3: Outcome.FAILED}.get(node)
        self.states[node] = "ready" if settled is None else settled.name.lower()
        return settled

    def skip(self, node: int, cause: int) -> None:
        self.states[node] = "skipped"
        self.skipped.append((node, cause))

    async def run(self, node: int) -> bool:
        self.ran.append(node)
        self.states[node] = "success"
        return True


async def test_the_scheduler_follows_nodes_settled_when_ready_and_each_rule() -> None:
    from orchestration.models import TriggerRule as T

    # 0 -> 1 (false) -> 2 ; 0 -> 3 (fails to read) -> 4 ; 5 after 2 and 4 with all_done; 6 after 2 none_failed;
    # 7 after 4 none_failed; 8 after 1 and 0 one_success
    parents = [[], [0], [1], [0], [3], [2, 4], [2], [4], [1, 0]]
    children: list[list[int]] = [[] for _ in parents]
    for child, deps in enumerate(parents):
        for parent in deps:
            children[parent].append(child)
    rules = [T.ALL_SUCCESS] * 5 + [T.ALL_DONE, T.NONE_FAILED, T.NONE_FAILED, T.ONE_SUCCESS]
    nodes = Nodes(len(parents))
    with anyio.fail_after(5):
        await DagScheduler(children, 2, triggers=rules).run(nodes)
    assert sorted(nodes.ran) == [0, 5, 6, 8]
    assert sorted(nodes.skipped) == [(2, 1), (4, 3), (7, 3)]
    assert nodes.states[1] == "skipped" and nodes.states[3] == "failed"


def test_branch_skipped_results_do_not_fail_a_run() -> None:
    from orchestration.models import ErrorInfo

    def result(status: ExecutionStatus, error: str | None = None) -> ExecutionResult:
        info = ErrorInfo(type=error, message="m") if error else None
        return ExecutionResult(task_id="t", status=status, error=info)

    ok, branch = result(ExecutionStatus.SUCCESS), result(ExecutionStatus.SKIPPED, "condition_false")
    below = result(ExecutionStatus.SKIPPED, "upstream_skipped")
    assert RunStatus.of({"a": ok, "b": branch, "c": below}) is RunStatus.SUCCESS
    assert RunStatus.of({"a": ok, "b": result(ExecutionStatus.SKIPPED, "upstream_failed")}) is RunStatus.FAILED

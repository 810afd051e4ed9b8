"""Review gates on a task's answer in the engine: the task waits in the run store for a decision."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, Message, Usage
from orchestration import ExecutionResult, ExecutionStatus, ProjectOrchestrator, ProjectSpec, RunEvent, gating
from orchestration.lifecycle import TaskState
from orchestration.store import RunStore
from orchestration.store.gates import Decision, DecisionKind, GateError


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gating, "POLL_S", 0.02)


class Model:
    """Answers ``answer``; counts its calls."""

    def __init__(self, answer: str = "the answer") -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        self.calls += 1
        return self.answer


def orchestrator(store: Path, model: Model, review: Any, **task: Any) -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate(
        {
            "name": "gated",
            "agents": {"m": {"type": "offline"}},
            "tasks": [
                {"id": "t", "description": "x", "agent": "m", "review": review, **task},
                {"id": "free", "description": "y", "agent": "m"},
                {"id": "after", "description": "{{ tasks.t.output }}", "agent": "m", "depends_on": ["t"]},
            ],
        }
    )
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    return ProjectOrchestrator(spec, registry=registry, store=store, llms={"m": FunctionLlm(model)})


async def run_deciding(
    orchestrator: ProjectOrchestrator, decision: Decision | None
) -> tuple[dict[str, Any], list[RunEvent]]:
    """Run; once the gate opens, record ``decision`` through another store (as another process would)."""
    events: list[RunEvent] = []
    opened = anyio.Event()

    def seen(event: RunEvent) -> None:
        events.append(event)
        if event.kind == "review_requested":
            opened.set()

    orchestrator.on_event(seen)
    results: dict[str, Any] = {}
    assert orchestrator.store is not None
    path = orchestrator.store.path

    async def go() -> None:
        results.update(await orchestrator.run(run_id="r1"))

    async with anyio.create_task_group() as group:
        group.start_soon(go)
        with anyio.fail_after(10):
            await opened.wait()
        if decision is not None:
            other = RunStore(path)
            await anyio.to_thread.run_sync(lambda: other.decide("r1", "t", decision))
            other.close()
    return results, events


async def test_approve_waits_for_the_decision_and_keeps_the_answer(tmp_path: Path) -> None:
    model = Model()
    orch = orchestrator(tmp_path / "runs.db", model, "require_human")
    results, events = await run_deciding(orch, Decision(DecisionKind.APPROVE, actor="ann", message="ok"))
    t = results["t"]
    assert t.status is ExecutionStatus.SUCCESS and t.output == "the answer"
    assert t.review is not None and t.review.decision == "approve" and t.review.actor == "ann"
    assert t.review.message == "ok" and t.review.waited_s is not None and not t.review.edited
    kinds = [e.kind for e in events if e.task_id == "t"]
    assert kinds == ["task_started", "review_requested", "review_decided", "task_succeeded"]
    # the independent task finished while t waited; the dependent one only after the decision
    order = [e.task_id for e in events if e.kind == "task_succeeded"]
    assert order.index("free") < order.index("t") < order.index("after")
    assert results["after"].status is ExecutionStatus.SUCCESS
    stored = RunStore(tmp_path / "runs.db").load_results("r1")["t"]
    assert stored.review is not None and stored.review.decision == "approve"


async def test_edit_replaces_the_output_and_keeps_the_original(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model(), "require_human")
    decision = Decision(DecisionKind.EDIT, actor="ann", edit={"output": "better"})
    results, _ = await run_deciding(orch, decision)
    t = results["t"]
    assert t.output == "better" and t.review.edited and t.review.original_output == "the answer"
    assert results["after"].request[-1].content == "better"


async def test_reject_fails_the_task_and_skips_its_dependents(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model(), "require_human")
    results, _ = await run_deciding(orch, Decision(DecisionKind.REJECT, actor="ann", message="wrong"))
    t = results["t"]
    assert t.status is ExecutionStatus.FAILED and t.error.type == "review_rejected"
    assert "wrong" in t.error.message and t.review.decision == "reject"
    assert results["after"].status is ExecutionStatus.SKIPPED


async def test_a_timeout_that_fails(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model(), {"policy": "require_human", "timeout_s": 0.1})
    results, _ = await run_deciding(orch, None)
    t = results["t"]
    assert t.status is ExecutionStatus.FAILED and t.error.type == "review_timeout"
    assert t.review.actor == "timeout" and t.review.decision == "fail"


async def test_a_timeout_that_approves(tmp_path: Path) -> None:
    review = {"policy": "require_human", "timeout_s": 0.1, "on_timeout": "approve"}
    results, _ = await run_deciding(orchestrator(tmp_path / "runs.db", Model(), review), None)
    assert results["t"].status is ExecutionStatus.SUCCESS and results["t"].review.actor == "timeout"


async def test_an_edited_json_answer_must_match_the_schema(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    model = Model(json.dumps({"n": 1}))
    orch = orchestrator(tmp_path / "runs.db", model, "require_human", output_format="json", output_schema=schema)
    orch.wait_for_reviews = False
    await orch.run(run_id="r1")
    store = RunStore(tmp_path / "runs.db")
    (gate,) = store.open_gates("r1")
    assert gate.payload["output_schema"] == schema  # who decides can check an edit before sending it
    with pytest.raises(GateError, match=r"edited output of task 't' was refused: .*'x' is not of type 'integer'"):
        store.decide("r1", "t", Decision(DecisionKind.EDIT, actor="ann", edit={"output": '{"n": "x"}'}))
    assert store.open_gates("r1") == [gate]  # nothing recorded
    store.decide("r1", "t", Decision(DecisionKind.EDIT, actor="ann", edit={"output": '{"n": 2}'}))
    results = await orchestrator(
        tmp_path / "runs.db", model, "require_human", output_format="json", output_schema=schema
    ).resume("r1")
    assert results["t"].parsed == {"n": 2} and results["t"].review.original_output == '{"n": 1}'
    assert model.calls == 3  # t once, free once, after once


async def test_without_a_store_a_gated_task_fails(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model(), "require_human")
    orch.store = None
    results = await orch.run()
    assert results["t"].status is ExecutionStatus.FAILED and "run store" in results["t"].error.message


def test_waiting_moves() -> None:
    from orchestration.lifecycle import TRANSITIONS

    assert TaskState.WAITING in TRANSITIONS[TaskState.RUNNING]
    waiting = {TaskState.RUNNING, TaskState.COMMITTING, TaskState.FAILED, TaskState.CANCELLED}
    assert TRANSITIONS[TaskState.WAITING] == waiting  # RUNNING: a request approved or edited


async def test_no_wait_stops_when_only_reviews_are_left_and_resume_reuses_the_answer(tmp_path: Path) -> None:
    model = Model()
    orch = orchestrator(tmp_path / "runs.db", model, "require_human")
    orch.wait_for_reviews = False
    results = await orch.run(run_id="r1")
    assert orch.stopped_waiting
    assert results["free"].status is ExecutionStatus.SUCCESS  # independent work finished first
    assert results["t"].status is ExecutionStatus.CANCELLED and "review decision" in results["t"].error.message
    store = RunStore(tmp_path / "runs.db")
    assert store.get_run("r1").status == "waiting"
    assert model.calls == 2  # t and free
    store.decide("r1", "t", Decision(DecisionKind.APPROVE, actor="ann"))
    resumed = orchestrator(tmp_path / "runs.db", model, "require_human")
    resumed.wait_for_reviews = False
    results = await resumed.resume("r1")
    assert not resumed.stopped_waiting
    assert results["t"].status is ExecutionStatus.SUCCESS and results["t"].review.actor == "ann"
    assert results["after"].status is ExecutionStatus.SUCCESS
    assert model.calls == 3  # only 'after' was called: t's answer came from its gate
    assert store.get_run("r1").status == "success"


async def test_a_waiting_task_holds_no_slot(tmp_path: Path) -> None:
    review = {"policy": "require_human", "timeout_s": 0.5, "on_timeout": "approve"}
    orch = orchestrator(tmp_path / "runs.db", Model(), review)
    orch.add_task({"id": "free2", "description": "z", "agent": "m"})
    orch.max_concurrency = 1
    _, events = await run_deciding(orch, None)
    # with one slot, both independent tasks ran while t waited
    order = [e.task_id for e in events if e.kind == "task_succeeded"]
    assert order == ["free", "free2", "t", "after"]


async def test_with_one_slot_the_decision_still_releases_the_dependents(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model(), "require_human")
    orch.max_concurrency = 1
    results, _ = await run_deciding(orch, Decision(DecisionKind.APPROVE, actor="ann"))
    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values())


def thresholds(**limits: Any) -> dict[str, Any]:
    return {"policy": "auto_with_thresholds", "thresholds": limits}


async def test_thresholds_not_crossed_approve_without_a_gate(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model("fine"), thresholds(output_matches="(?i)secret"))
    results = await orch.run(run_id="r1")
    assert results["t"].status is ExecutionStatus.SUCCESS and results["t"].review is None
    assert RunStore(tmp_path / "runs.db").gates_of("r1", "t") == []


async def test_a_crossed_threshold_asks_a_human_and_says_which(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", Model("the SECRET is 4"), thresholds(output_matches="(?i)secret"))
    results, events = await run_deciding(orch, Decision(DecisionKind.APPROVE, actor="ann"))
    assert results["t"].review is not None and results["t"].review.actor == "ann"
    (requested,) = [e for e in events if e.kind == "review_requested"]
    assert requested.gate is not None and requested.gate.fired == ["output matches '(?i)secret'"]
    assert requested.gate.policy == "auto_with_thresholds"


class Recorder(Model):
    """Answers with the prompt it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[list[str], int | None]] = []

    async def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        self.calls += 1
        self.sent.append(([str(m.content) for m in messages], options.max_tokens))
        return f"answer to {messages[-1].content}"


BEFORE = {"stage": "before", "policy": "require_human"}


async def test_a_request_gate_sends_the_request_once_approved(tmp_path: Path) -> None:
    model = Recorder()
    orch = orchestrator(tmp_path / "runs.db", model, BEFORE, system_prompt="be brief")
    results, events = await run_deciding(orch, Decision(DecisionKind.APPROVE, actor="ann"))
    assert results["t"].output == "answer to x" and results["t"].review.decision == "approve"
    (requested,) = [e for e in events if e.kind == "review_requested"]
    assert requested.gate is not None and requested.gate.payload["prompt"] == "x"
    assert requested.gate.payload["system_prompt"] == "be brief"
    kinds = [e.kind for e in events if e.task_id == "t"]
    assert kinds == ["task_started", "review_requested", "review_decided", "task_succeeded"]


async def test_an_edited_request_is_sent_as_edited(tmp_path: Path) -> None:
    model = Recorder()
    orch = orchestrator(tmp_path / "runs.db", model, BEFORE, system_prompt="be brief")
    edit = {"prompt": "y?", "system_prompt": "be long", "options": {"max_tokens": 7}}
    results, _ = await run_deciding(orch, Decision(DecisionKind.EDIT, actor="ann", edit=edit))
    assert results["t"].output == "answer to y?" and results["t"].review.edited
    assert (["be long", "y?"], 7) in model.sent


async def test_a_rejected_request_is_never_sent(tmp_path: Path) -> None:
    model = Recorder()
    orch = orchestrator(tmp_path / "runs.db", model, BEFORE)
    results, _ = await run_deciding(orch, Decision(DecisionKind.REJECT, actor="ann", message="no"))
    assert results["t"].status is ExecutionStatus.FAILED and results["t"].error.type == "review_rejected"
    assert all(prompt[-1] != "x" for prompt, _ in model.sent)


async def test_request_thresholds_on_max_tokens(tmp_path: Path) -> None:
    review = {"stage": "before", "policy": "auto_with_thresholds", "thresholds": {"max_output_tokens": 100}}
    orch = orchestrator(tmp_path / "runs.db", Recorder(), review, options={"max_tokens": 50})
    results = await orch.run(run_id="r1")
    assert results["t"].status is ExecutionStatus.SUCCESS and results["t"].review is None
    orch = orchestrator(tmp_path / "runs2.db", Recorder(), review, options={"max_tokens": 500})
    results, events = await run_deciding(orch, Decision(DecisionKind.APPROVE, actor="ann"))
    (requested,) = [e for e in events if e.kind == "review_requested"]
    assert requested.gate is not None and requested.gate.fired == ["max_tokens 500 > max_output_tokens 100"]


@pytest.mark.parametrize(
    ("limits", "answer", "fired"),
    [
        ({"max_cost_usd": 0.01}, {"cost_usd": 0.02}, ["cost_usd 0.02 > max_cost_usd 0.01"]),
        ({"max_cost_usd": 0.01}, {"cost_usd": 0.01}, []),
        ({"max_cost_usd": 0.01}, {"cost_usd": None}, []),  # no known price: never crossed
        ({"max_output_tokens": 5}, {"usage": Usage(output_tokens=6)}, ["output_tokens 6 > max_output_tokens 5"]),
        ({"max_output_tokens": 5}, {"usage": Usage(output_tokens=5)}, []),
        ({"finish_reasons": ["length"]}, {"finish_reason": "length"}, ["finish_reason length"]),
        ({"finish_reasons": ["length"]}, {"finish_reason": "stop"}, []),
        ({"output_matches": "(?i)secret"}, {"output": "a Secret"}, ["output matches '(?i)secret'"]),
        ({"invalid_json": True}, {"json_repair": "it is not valid JSON"}, ["invalid_json: it is not valid JSON"]),
        ({"invalid_json": True}, {}, []),
        (
            {"max_cost_usd": 0.01, "finish_reasons": ["length"]},
            {"cost_usd": 1.0, "finish_reason": "length"},
            ["cost_usd 1 > max_cost_usd 0.01", "finish_reason length"],
        ),
    ],
)
def test_each_threshold_of_an_answer(limits: dict[str, Any], answer: dict[str, Any], fired: list[str]) -> None:
    spec = ProjectSpec.model_validate(
        {
            "tasks": [
                {
                    "id": "t",
                    "description": "x",
                    "output_format": "json",
                    "review": {"policy": "auto_with_thresholds", "thresholds": limits},
                }
            ]
        }
    )
    (task,) = ProjectOrchestrator(spec).validate().tasks
    result = ExecutionResult(task_id="t", status=ExecutionStatus.SUCCESS, **{"output": "{}", **answer})
    assert gating.fired(task, result) == fired

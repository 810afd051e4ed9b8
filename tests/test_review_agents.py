"""Who decides besides a human through the store: the reviewer agent, ``on_review``, and the Python API
(``reviews()`` / ``decide()``); and the thresholds that need the engine's help (``invalid_json``, the estimated
cost of a request)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, Message
from orchestration import ExecutionResult, ExecutionStatus, ProjectOrchestrator, ProjectSpec, RunEvent, gating
from orchestration.models import ReviewerVerdict, ReviewRecord
from orchestration.reviewers import OnReview
from orchestration.store import Decision, DecisionKind, Gate, RunStore


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gating, "POLL_S", 0.02)


class Script:
    """Answers with its replies in turn (the last one again when they run out); keeps what it was sent."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.sent: list[list[str]] = []

    @property
    def calls(self) -> int:
        return len(self.sent)

    async def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        self.sent.append([str(m.content) for m in messages])
        return self.replies[min(len(self.sent), len(self.replies)) - 1]


class Priced(FunctionLlm):
    """A function model priced as OpenAI's ``gpt-4o`` ($2.50 in, $10 out per million tokens)."""

    @property
    def pricing_provider(self) -> str | None:
        return "openai"


def approve(reason: str = "looks right") -> str:
    return json.dumps({"verdict": "approve", "reason": reason})


def escalate(reason: str) -> str:
    return json.dumps({"verdict": "escalate", "reason": reason})


def orchestrator(
    store: Path,
    review: Any,
    model: Script,
    judge: Script | None = None,
    on_review: OnReview | None = None,
    **task: Any,
) -> ProjectOrchestrator:
    agents: dict[str, Any] = {"m": {"type": "offline"}}
    llms = {"m": FunctionLlm(model)}
    if judge is not None:
        agents["judge"] = {"type": "offline"}
        llms["judge"] = FunctionLlm(judge)
    spec = ProjectSpec.model_validate(
        {
            "name": "reviewed",
            "agents": agents,
            "tasks": [
                {"id": "t", "description": "write it", "agent": "m", "review": review, **task},
                {"id": "after", "description": "{{ tasks.t.output }}", "agent": "m", "depends_on": ["t"]},
            ],
        }
    )
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    return ProjectOrchestrator(spec, registry=registry, store=store, llms=llms, on_review=on_review)


async def run_collecting(orch: ProjectOrchestrator) -> tuple[dict[str, ExecutionResult], list[RunEvent]]:
    events: list[RunEvent] = []
    orch.on_event(events.append)
    return await orch.run(run_id="r1"), events


async def test_a_reviewer_agent_that_approves_decides_without_a_human(tmp_path: Path) -> None:
    model, judge = Script("the answer"), Script(approve("it answers the task"))
    review = {"policy": "require_human", "reviewer": "judge"}
    results, events = await run_collecting(orchestrator(tmp_path / "runs.db", review, model, judge))
    t = results["t"]
    assert t.status is ExecutionStatus.SUCCESS and t.output == "the answer"
    assert t.review is not None and t.review.actor == "reviewer:judge" and t.review.message == "it answers the task"
    assert t.review.reviewer == ReviewerVerdict(
        agent="judge", verdict="approve", reason="it answers the task", usage=t.review.reviewer.usage, attempts=1
    )
    assert results["after"].status is ExecutionStatus.SUCCESS
    assert judge.calls == 1 and model.calls == 2
    shown = judge.sent[0][-1]  # the reviewer sees the payload and why it is reviewed
    assert "the answer" in shown and "require_human" in shown and "Task 't'" in shown
    kinds = [e.kind for e in events if e.task_id == "t"]
    assert kinds == ["task_started", "review_requested", "review_decided", "task_succeeded"]


async def test_a_reviewer_agent_that_escalates_leaves_the_gate_to_a_human_with_its_reason(tmp_path: Path) -> None:
    model, judge = Script("the answer"), Script(escalate("it names a customer"))
    orch = orchestrator(tmp_path / "runs.db", {"policy": "require_human", "reviewer": "judge"}, model, judge)
    orch.wait_for_reviews = False
    await orch.run(run_id="r1")
    (gate,) = orch.reviews()
    assert gate.reviewer is not None and gate.reviewer["verdict"] == "escalate"
    assert gate.reviewer["reason"] == "it names a customer"
    await orch.decide("t", "approve", actor="ann", digest=gate.digest)
    resumed = orchestrator(tmp_path / "runs.db", {"policy": "require_human", "reviewer": "judge"}, model, judge)
    results = await resumed.resume("r1")
    t = results["t"]
    assert t.status is ExecutionStatus.SUCCESS and t.review is not None and t.review.actor == "ann"
    assert t.review.reviewer is not None and t.review.reviewer.verdict == "escalate"
    assert judge.calls == 1, "a resumed run keeps the reviewer's verdict"
    assert model.calls == 2  # t once (kept in its gate), after once


async def test_a_reviewer_that_fails_escalates(tmp_path: Path) -> None:
    judge = Script("not json", "still not json")
    orch = orchestrator(tmp_path / "runs.db", {"policy": "require_human", "reviewer": "judge"}, Script("a"), judge)
    orch.wait_for_reviews = False
    await orch.run(run_id="r1")
    (gate,) = orch.reviews()
    assert gate.reviewer is not None and gate.reviewer["verdict"] == "escalate"
    assert gate.reviewer["reason"].startswith("the reviewer failed: invalid_output")
    assert judge.calls == 2  # the answer and its one repair


async def test_a_reviewer_checks_a_request_before_it_is_sent(tmp_path: Path) -> None:
    model, judge = Script("sent"), Script(approve())
    review = {"stage": "before", "policy": "require_human", "reviewer": "judge"}
    results, _ = await run_collecting(orchestrator(tmp_path / "runs.db", review, model, judge))
    assert results["t"].output == "sent" and results["t"].review.actor == "reviewer:judge"
    assert '"prompt": "write it"' in judge.sent[0][-1] and "the request about to be sent" in judge.sent[0][-1]


async def test_the_reviewer_s_cost_is_added_to_the_task_s() -> None:
    result = ExecutionResult(task_id="t", status=ExecutionStatus.SUCCESS, cost_usd=0.25)
    verdict = ReviewerVerdict(agent="judge", verdict="approve", reason="ok", cost_usd=0.5)
    reviewed = gating.with_review(result, ReviewRecord(decision="approve", reviewer=verdict))
    assert reviewed.cost_usd == 0.75 and reviewed.review is not None and reviewed.review.reviewer == verdict
    unpriced = gating.with_review(result, ReviewRecord(decision="approve"))
    assert unpriced.cost_usd == 0.25


async def test_on_review_decides_in_process(tmp_path: Path) -> None:
    seen: list[Gate] = []

    def reviewer(gate: Gate) -> Decision:  # a plain function: it runs in a worker thread
        seen.append(gate)
        return Decision(DecisionKind.EDIT, actor="bot", edit={"output": gate.payload["output"].upper()})

    results, _ = await run_collecting(
        orchestrator(tmp_path / "runs.db", "require_human", Script("quiet"), None, reviewer)
    )
    assert results["t"].output == "QUIET" and results["t"].review.actor == "bot" and results["t"].review.edited
    assert [g.task_id for g in seen] == ["t"] and seen[0].open


async def test_an_async_on_review_that_leaves_the_gate_open_lets_decide_settle_it(tmp_path: Path) -> None:
    asked = anyio.Event()

    async def undecided(gate: Gate) -> Decision | None:
        asked.set()
        return None

    orch = orchestrator(tmp_path / "runs.db", "require_human", Script("a"), None, undecided)
    results: dict[str, ExecutionResult] = {}

    async def run() -> None:
        results.update(await orch.run(run_id="r1"))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        with anyio.fail_after(10):
            await asked.wait()  # on_review is asked once the gate is open in the store
        (gate,) = orch.reviews()
        assert gate.task_id == "t" and gate.open
        decided = await orch.decide("t", "reject", message="off topic", actor="ann", decision_id="d1")
        assert decided.decision is DecisionKind.REJECT
        again = await orch.decide("t", "reject", message="off topic", actor="ann", decision_id="d1")
        assert again == decided  # the same decision id: a no-op
    assert results["t"].error is not None and results["t"].error.type == "review_rejected"
    assert results["after"].status is ExecutionStatus.SKIPPED
    assert orch.reviews() == []


async def test_an_on_review_that_raises_leaves_the_gate_open(tmp_path: Path) -> None:
    def broken(gate: Gate) -> Decision:
        raise RuntimeError("reviewer crashed")

    orch = orchestrator(tmp_path / "runs.db", "require_human", Script("a"), None, broken)
    orch.wait_for_reviews = False
    await orch.run(run_id="r1")
    assert [g.task_id for g in orch.reviews()] == ["t"]


async def test_decide_refuses_an_edit_that_breaks_the_schema(tmp_path: Path) -> None:
    from orchestration.store import GateError

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    orch = orchestrator(
        tmp_path / "runs.db", "require_human", Script('{"n": 1}'), output_format="json", output_schema=schema
    )
    orch.wait_for_reviews = False
    await orch.run(run_id="r1")
    with pytest.raises(GateError, match="'x' is not of type 'integer'"):
        await orch.decide("t", "edit", output='{"n": "x"}')
    await orch.decide("t", "edit", output='{"n": 5}')
    assert orch.reviews() == []


def invalid_json(threshold: bool = True) -> dict[str, Any]:
    return {"policy": "auto_with_thresholds", "thresholds": {"invalid_json": threshold, "max_output_tokens": 10**6}}


async def test_invalid_json_asks_a_human_when_the_answer_needed_a_repair(tmp_path: Path) -> None:
    model = Script("Sure! Here it is: {n: 1}", '{"n": 1}')
    orch = orchestrator(tmp_path / "runs.db", invalid_json(), model, output_format="json")
    orch.wait_for_reviews = False
    await orch.run(run_id="r1")
    (gate,) = orch.reviews()
    assert gate.fired[0].startswith("invalid_json: it is not valid JSON")
    assert gate.payload["json_repair"].startswith("it is not valid JSON")
    await orch.decide("t", "approve")
    results = await orchestrator(tmp_path / "runs.db", invalid_json(), model, output_format="json").resume("r1")
    assert results["t"].parsed == {"n": 1} and results["t"].json_repair is not None


async def test_a_valid_first_answer_crosses_no_invalid_json_threshold(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path / "runs.db", invalid_json(), Script('{"n": 1}'), output_format="json")
    results = await orch.run(run_id="r1")
    assert results["t"].review is None and results["t"].json_repair is None
    assert RunStore(tmp_path / "runs.db").gates_of("r1", "t") == []


def priced(store: Path, max_tokens: int) -> tuple[ProjectOrchestrator, Script]:
    model = Script("priced answer")
    review = {"stage": "before", "policy": "auto_with_thresholds", "thresholds": {"max_cost_usd": 0.05}}
    options = {"max_tokens": max_tokens}
    spec = ProjectSpec.model_validate(
        {
            "name": "priced",
            "agents": {"gpt": {"type": "offline", "model": "gpt-4o"}},
            "tasks": [
                {"id": "t", "description": "x" * 400, "agent": "gpt", "review": review, "options": options},
                {"id": "after", "description": "y", "agent": "gpt", "depends_on": ["t"]},
            ],
        }
    )
    llms = {"gpt": Priced(model)}
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    return ProjectOrchestrator(spec, registry=registry, store=store, llms=llms), model


async def test_a_request_whose_estimated_cost_crosses_max_cost_usd_waits(tmp_path: Path) -> None:
    cheap, model = priced(tmp_path / "a.db", max_tokens=100)  # about 101 tokens in, 100 out: $0.0013
    results = await cheap.run(run_id="r1")
    assert results["t"].review is None and model.calls == 2
    dear, model = priced(tmp_path / "b.db", max_tokens=10_000)  # 10,000 tokens out: $0.10
    dear.wait_for_reviews = False
    await dear.run(run_id="r1")
    (gate,) = dear.reviews()
    assert gate.stage == "before" and model.calls == 0  # nothing was sent
    assert gate.fired == ["estimated cost_usd 0.100252 > max_cost_usd 0.05"]


def test_a_gated_run_under_trio(tmp_path: Path) -> None:
    def approve_it(gate: Gate) -> Decision:
        return Decision(DecisionKind.APPROVE, actor="bot")

    async def main() -> dict[str, ExecutionResult]:
        review = {"policy": "require_human", "reviewer": "judge"}
        orch = orchestrator(tmp_path / "runs.db", review, Script("a"), Script(escalate("unsure")), approve_it)
        return await orch.run(run_id="r1")

    results = anyio.run(main, backend="trio")
    assert results["t"].review is not None and results["t"].review.actor == "bot"
    assert results["t"].review.reviewer is not None and results["t"].review.reviewer.reason == "unsure"
    assert results["after"].status is ExecutionStatus.SUCCESS

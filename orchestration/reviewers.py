"""Who may decide a review gate before a human does: the task's reviewer agent, then ``on_review``.

Both act once a gate is open in the run store (so its payload survives a crash) and before the task waits:

- the **reviewer agent** (``review.reviewer``) gets the payload and what fired, and answers with a verdict
  through structured output (:data:`VERDICT_SCHEMA`). Its call is an ordinary call of its agent (retries,
  limits, cost). The verdict is kept on the gate (a resume does not ask again); ``approve`` decides the gate
  (actor ``reviewer:<agent>``), ``escalate`` leaves it to a human, with the reason shown beside the gate.
  A reviewer that fails escalates.
- **on_review** (``ProjectOrchestrator(..., on_review=...)``), an in-process reviewer: called with the open
  gate, it returns a :class:`~orchestration.store.gates.Decision` or ``None`` to leave the gate open. A plain
  function runs in a worker thread (it may block, on a prompt say), a coroutine function on the event loop.

A decision recorded by anyone else first wins over both (the store's first-write-wins).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from llm_abstractions import GenerationOptions, Message
from orchestration.models import AgentTask, ExecutionResult, OutputFormat, ReviewerVerdict, utc_now
from orchestration.project import CompiledTask

if TYPE_CHECKING:
    from orchestration.lifecycle import Execute
    from orchestration.store import RunStore
    from orchestration.store.gates import Decision, Gate

__all__ = ["VERDICT_SCHEMA", "OnReview", "ReviewHooks", "first_review"]

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["approve", "escalate"]},
        "reason": {"type": "string"},
    },
    "required": ["verdict", "reason"],
    "additionalProperties": False,
}
"""What a reviewer agent must answer."""

_INSTRUCTIONS = (
    "You review another model's work before it is used. Approve only what is correct, complete, safe to use "
    "and free of anything the reasons given below warn about; otherwise escalate it to a human. Answer with a "
    'JSON object only: {"verdict": "approve" | "escalate", "reason": "<one or two sentences>"}.'
)
_SUBJECT = {"before": "the request about to be sent to the model", "after": "the model's answer"}

OnReview = Callable[["Gate"], "Decision | Awaitable[Decision | None] | None"]
"""An in-process reviewer: given an open gate, a decision, or ``None`` to leave it open."""


@dataclass(frozen=True)
class ReviewHooks:
    """What the lifecycle needs from the rest of the run to review a task's request or answer."""

    render: Callable[[CompiledTask], list[Message]]
    """The task's messages as they would be sent (raises ``TemplateError``)."""
    estimate_cost: Callable[[CompiledTask, list[Message], GenerationOptions], float | None]
    """A request's estimated cost in USD (``None``: no known price)."""
    on_review: OnReview | None = None


async def first_review(
    task: CompiledTask, gate: Gate, store: RunStore, execute: Execute, on_review: OnReview | None
) -> Gate:
    """Let the task's reviewer agent, then ``on_review``, decide ``gate``; return it as it then stands."""
    if gate.expired(utc_now()):  # its timeout decides it (the store records that first)
        return gate
    review = task.review
    if gate.open and review is not None and review.reviewer is not None:
        gate = await _ask_reviewer(task, review.reviewer, gate, store, execute)
    if gate.open and on_review is not None:
        decision = await _ask_callback(on_review, gate)
        if decision is not None:
            gate = await _record(store, gate, decision)
    return gate


async def _ask_reviewer(task: CompiledTask, agent: str, gate: Gate, store: RunStore, execute: Execute) -> Gate:
    from orchestration.store.gates import Decision, DecisionKind

    if gate.reviewer is None:  # a resumed run keeps the verdict it was given
        messages = [Message(role="system", content=_INSTRUCTIONS), Message(role="user", content=_briefing(gate))]
        options = GenerationOptions(json_schema=VERDICT_SCHEMA)
        result = await execute(_reviewer_task(task, agent, options), utc_now(), (messages, options))
        verdict = _verdict(agent, result)
        gate = await anyio.to_thread.run_sync(store.note_reviewer, gate, verdict.model_dump(mode="json"))
    assert gate.reviewer is not None
    verdict = ReviewerVerdict.model_validate(gate.reviewer)
    if not gate.open or verdict.verdict != "approve":
        return gate
    decision = Decision(
        DecisionKind.APPROVE,
        actor=f"reviewer:{verdict.agent}",
        message=verdict.reason,
        digest=gate.digest,
        decision_id=f"reviewer-{gate.digest}",
    )
    return await _record(store, gate, decision)


def _briefing(gate: Gate) -> str:
    payload = json.dumps(gate.payload, indent=2, ensure_ascii=False, sort_keys=True)
    reasons = "\n".join(f"- {reason}" for reason in gate.fired)
    return (
        f"Task '{gate.task_id}': review {_SUBJECT[str(gate.stage)]}.\n"
        f"It was sent for review because:\n{reasons}\n\n{_SUBJECT[str(gate.stage)].capitalize()}:\n{payload}"
    )


def _reviewer_task(task: CompiledTask, agent: str, options: GenerationOptions) -> CompiledTask:
    """``task`` as its reviewer runs it: the reviewer's agent, a json answer of :data:`VERDICT_SCHEMA`, no gate
    (a model call, also for a code step's answer)."""
    spec = AgentTask(
        id=task.id,
        description=f"review of task '{task.id}'",
        agent=agent,
        output_format=OutputFormat.JSON,
        output_schema=VERDICT_SCHEMA,
        metadata=task.task.metadata,
    )
    return dataclasses.replace(
        task, task=spec, agent=agent, system=None, options=options, review=None, step=None, output_file=None
    )


def _verdict(agent: str, result: ExecutionResult) -> ReviewerVerdict:
    """The verdict in ``result``; a reviewer that failed escalates, saying why."""
    if result.succeeded and isinstance(result.parsed, dict):
        verdict, reason = str(result.parsed["verdict"]), str(result.parsed["reason"])
    else:
        error = result.error
        verdict = "escalate"
        reason = f"the reviewer failed: {error.type}: {error.message}" if error else "the reviewer gave no verdict"
    return ReviewerVerdict(
        agent=agent,
        verdict=verdict,
        reason=reason,
        cost_usd=result.cost_usd,
        usage=result.usage,
        attempts=result.attempts,
    )


async def _ask_callback(on_review: OnReview, gate: Gate) -> Decision | None:
    """``on_review``'s decision on ``gate``; one that raises leaves the gate open (and is logged)."""
    try:
        if inspect.iscoroutinefunction(on_review):
            decision: Any = await on_review(gate)
        else:
            decision = await anyio.to_thread.run_sync(on_review, gate)
            if inspect.isawaitable(decision):
                decision = await decision
    except Exception as exc:
        from orchestration.log import get_logger

        get_logger(__name__).error(
            "on_review_failed", task_id=gate.task_id, error=f"{type(exc).__name__}: {exc}", note="the gate stays open"
        )
        return None
    return decision  # type: ignore[no-any-return]


async def _record(store: RunStore, gate: Gate, decision: Decision) -> Gate:
    """Record ``decision``; a gate decided by someone else first is returned as they decided it."""
    from orchestration.store.gates import GateConflictError, GateError

    try:
        return await anyio.to_thread.run_sync(
            lambda: store.decide(gate.run_id, gate.task_id, decision, stage=gate.stage)
        )
    except GateConflictError as exc:
        return exc.gate
    except GateError as exc:
        from orchestration.log import get_logger

        get_logger(__name__).error("review_decision_refused", task_id=gate.task_id, error=str(exc))
        return gate

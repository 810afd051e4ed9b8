"""The engine's side of review gates on a task's answer (``review`` with ``stage: after``).

The lifecycle (:meth:`orchestration.lifecycle.TaskLifecycle.run`) opens the gate in the run store with the
answer as its payload (:func:`answer_payload`), waits for its decision by polling the store
(:func:`wait_for_decision`: a decision recorded by another process, ``orchestrate review``, reaches the
running session within :data:`POLL_S`), and turns the decision into the task's final result
(:func:`decided_result`). A resumed run finds the gate in the store and rebuilds the answer from its payload
(:func:`result_from_payload`) instead of calling the model again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from llm_abstractions import ErrorType, GenerationOptions, Message, Usage
from llm_abstractions.structured import parse_json_answer
from orchestration.models import (
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    OutputFormat,
    ReviewerVerdict,
    ReviewRecord,
    utc_now,
)
from orchestration.project import CompiledTask
from orchestration.review import GateStage, ReviewPolicy

if TYPE_CHECKING:
    from orchestration.store import RunStore
    from orchestration.store.gates import Gate

__all__ = [
    "POLL_S",
    "Request",
    "answer_gate",
    "answer_payload",
    "decided_request",
    "decided_result",
    "decision_error",
    "failed_result",
    "fired",
    "fired_before",
    "request_gate",
    "request_payload",
    "result_from_payload",
    "review_record",
    "stored_answer_gate",
    "wait_for_decision",
]

Request = tuple[list[Message], GenerationOptions]
"""A task's request as reviewed: the messages and the options to send."""

POLL_S = 1.0
"""How often a waiting task reads its gate from the store (and decides timeouts by the store's clock)."""


def answer_gate(task: CompiledTask) -> bool:
    """Whether ``task``'s answer may wait for a human decision (``stage: after``, ``require_human`` or
    ``auto_with_thresholds``; see :func:`fired`).

    ``stage: before`` is not evaluated by the engine yet: such tasks run without a gate.
    """
    review = task.review
    return review is not None and review.stage is GateStage.AFTER and review.gated


def request_gate(task: CompiledTask) -> bool:
    """Whether ``task``'s rendered request may wait for a human decision (``stage: before``)."""
    review = task.review
    return review is not None and review.stage is GateStage.BEFORE and review.gated


def request_payload(task: CompiledTask, messages: list[Message]) -> dict[str, Any]:
    """What the reviewer of a request sees (and may edit): system prompt, prompt, options; and the attachments'
    references (name, type, size, digest: not editable), when it has any."""
    system = next((m.content for m in messages if m.role == "system"), None)
    payload: dict[str, Any] = {
        "system_prompt": system,
        "prompt": messages[-1].content,
        "options": task.options.model_dump(mode="json", exclude_none=True, exclude={"json_schema"}),
    }
    if messages[-1].attachments:
        payload["attachments"] = [a.model_dump(mode="json", exclude_none=True) for a in messages[-1].attachments]
    return payload


def fired_before(task: CompiledTask, options: GenerationOptions, estimated_cost: float | None) -> list[str]:
    """What asks a human to decide on the request: ``require_human``, ``max_output_tokens`` below the request's
    ``max_tokens``, or ``max_cost_usd`` below ``estimated_cost`` (``None``: no known price, never crossed)."""
    review = task.review
    assert review is not None
    if review.policy is ReviewPolicy.REQUIRE_HUMAN:
        return [str(review.policy)]
    limits = review.thresholds
    if limits is None:
        return []
    found: list[str] = []
    if limits.max_cost_usd is not None and estimated_cost is not None and estimated_cost > limits.max_cost_usd:
        found.append(f"estimated cost_usd {estimated_cost:.6g} > max_cost_usd {limits.max_cost_usd:g}")
    max_tokens = options.max_tokens
    if limits.max_output_tokens is not None and max_tokens is not None and max_tokens > limits.max_output_tokens:
        found.append(f"max_tokens {max_tokens} > max_output_tokens {limits.max_output_tokens}")
    return found


def failed_result(
    task: CompiledTask, started_at: Any, error: ErrorInfo, review: ReviewRecord | None = None
) -> ExecutionResult:
    """The failed result of ``task`` (started at ``started_at``) with ``error``, ending now."""
    result = ExecutionResult(
        task_id=task.id,
        status=ExecutionStatus.FAILED,
        agent=task.agent,
        started_at=started_at,
        completed_at=utc_now(),
        error=error,
        metadata=task.task.metadata,
    )
    return result if review is None else with_review(result, review)


def decision_error(gate: Gate) -> ErrorInfo | None:
    """The error a decision fails its task with: ``review_rejected`` for a reject, ``review_timeout`` for a
    timeout whose action is ``fail``; ``None`` for the others."""
    from orchestration.store.gates import DecisionKind

    if gate.decision is DecisionKind.REJECT:
        why = f"rejected by {gate.actor}: {gate.message}" if gate.message else f"rejected by {gate.actor}"
        return ErrorInfo(type=ErrorType.REVIEW_REJECTED, message=why)
    if gate.decision is DecisionKind.FAIL:
        return ErrorInfo(type=ErrorType.REVIEW_TIMEOUT, message=gate.message or "the review timed out")
    return None


def decided_request(
    task: CompiledTask, messages: list[Message], gate: Gate, started_at: Any
) -> Request | ExecutionResult:
    """The request to send once its gate is decided (approved, or edited), or the task's failure (rejected,
    timed out with ``fail``, or options edited into invalid ones)."""
    from orchestration.store.gates import DecisionKind

    decision = gate.decision
    review = review_record(gate, None)
    error = decision_error(gate)
    if error is not None:
        return failed_result(task, started_at, error, review)
    options = task.options
    if decision is DecisionKind.EDIT and gate.edit:
        edit = gate.edit
        messages = [
            m.model_copy(update={"content": edit["system_prompt"]})
            if m.role == "system" and "system_prompt" in edit
            else m
            for m in messages
        ]
        if "system_prompt" in edit and not any(m.role == "system" for m in messages):
            messages.insert(0, Message(role="system", content=edit["system_prompt"]))
        if "prompt" in edit:
            messages[-1] = messages[-1].model_copy(update={"content": edit["prompt"]})
        if "options" in edit:
            try:
                options = GenerationOptions.model_validate({**options.model_dump(exclude_none=True), **edit["options"]})
            except ValueError as exc:
                error = ErrorInfo(type=ErrorType.INVALID_REQUEST, message=f"the edited options were refused: {exc}")
                return failed_result(task, started_at, error, review)
    return messages, options


def review_record(gate: Gate, original_output: str | None) -> ReviewRecord:
    """The result's record of how ``gate`` was decided (and of its reviewer agent's verdict)."""
    waited = (gate.decided_at - gate.requested_at).total_seconds() if gate.decided_at is not None else None
    return ReviewRecord(
        decision=str(gate.decision),
        actor=gate.actor,
        message=gate.message,
        decided_at=gate.decided_at,
        waited_s=waited,
        edited=str(gate.decision) == "edit",
        original_output=original_output,
        reviewer=ReviewerVerdict.model_validate(gate.reviewer) if gate.reviewer is not None else None,
    )


def with_review(result: ExecutionResult, review: ReviewRecord, **update: Any) -> ExecutionResult:
    """``result`` with its review record (and ``update``); the reviewer agent's cost is added to the task's."""
    reviewer_cost = review.reviewer.cost_usd if review.reviewer is not None else None
    if reviewer_cost is not None:
        update["cost_usd"] = (update.get("cost_usd", result.cost_usd) or 0.0) + reviewer_cost
    return result.model_copy(update={**update, "review": review})


def fired(task: CompiledTask, answer: ExecutionResult) -> list[str]:
    """What asks a human to decide on ``answer``: ``require_human``, or the thresholds it crossed (none: it is
    approved without a gate). ``invalid_json``: the first answer failed the task's schema (a repair gave this one)."""
    review = task.review
    assert review is not None
    if review.policy is ReviewPolicy.REQUIRE_HUMAN:
        return [str(review.policy)]
    limits = review.thresholds
    if limits is None:
        return []
    found: list[str] = []
    if limits.max_cost_usd is not None and answer.cost_usd is not None and answer.cost_usd > limits.max_cost_usd:
        found.append(f"cost_usd {answer.cost_usd:.6g} > max_cost_usd {limits.max_cost_usd:g}")
    tokens = answer.usage.output_tokens if answer.usage is not None else None
    if limits.max_output_tokens is not None and tokens is not None and tokens > limits.max_output_tokens:
        found.append(f"output_tokens {tokens} > max_output_tokens {limits.max_output_tokens}")
    if limits.finish_reasons is not None and answer.finish_reason in limits.finish_reasons:
        found.append(f"finish_reason {answer.finish_reason}")
    if limits.output_matches is not None and re.search(limits.output_matches, answer.output or ""):
        found.append(f"output matches {limits.output_matches!r}")
    if limits.invalid_json and answer.json_repair is not None:
        found.append(f"invalid_json: {answer.json_repair}")
    return found


def answer_payload(task: CompiledTask, result: ExecutionResult) -> dict[str, Any]:
    """What the reviewer of an answer sees, and what a resume rebuilds the answer from; a json task's also has
    its schema, which an edited output must match (checked when the edit is recorded)."""
    payload: dict[str, Any] = {
        "output": result.output,
        "usage": result.usage.model_dump(mode="json") if result.usage is not None else None,
        "cost_usd": result.cost_usd,
        "agent": result.agent,
        "provider": result.provider,
        "model": result.model,
        "finish_reason": result.finish_reason,
        "attempts": result.attempts,
    }
    if task.task.output_format is OutputFormat.JSON:
        payload.update(output_format="json", output_schema=task.task.output_schema, json_repair=result.json_repair)
    return payload


def result_from_payload(task: CompiledTask, payload: Mapping[str, Any], started_at: Any) -> ExecutionResult:
    """The answer a gate's payload holds, as an (undecided) success of ``task``: no model is called."""
    output = payload.get("output")
    usage = payload.get("usage")
    parsed = None
    if task.task.output_format is OutputFormat.JSON and isinstance(output, str):
        try:
            parsed = parse_json_answer(output, task.task.output_schema)
        except ValueError:
            parsed = None
    return ExecutionResult(
        task_id=task.id,
        status=ExecutionStatus.SUCCESS,
        output=output,
        parsed=parsed,
        agent=payload.get("agent") or task.agent,
        provider=payload.get("provider"),
        model=payload.get("model"),
        attempts=0,
        started_at=started_at,
        completed_at=utc_now(),
        usage=Usage.model_validate(usage) if usage is not None else None,
        cost_usd=payload.get("cost_usd"),
        finish_reason=payload.get("finish_reason"),
        metadata=task.task.metadata,
        json_repair=payload.get("json_repair"),
    )


def stored_answer_gate(store: RunStore, run_id: str, task_id: str) -> Gate | None:
    """The task's newest ``after`` gate in this run, if an earlier session opened one."""
    gates = [gate for gate in store.gates_of(run_id, task_id) if gate.stage is GateStage.AFTER]
    return gates[-1] if gates else None


async def wait_for_decision(store: RunStore, gate: Gate) -> Gate:
    """Poll the store until ``gate`` is decided (by anyone, or by its timeout); return it as decided."""
    while gate.open:
        await anyio.sleep(POLL_S)
        if gate.expires_at is not None and gate.expires_at <= utc_now():
            await anyio.to_thread.run_sync(store.expire_gates)
        gates = await anyio.to_thread.run_sync(store.gates_of, gate.run_id, gate.task_id)
        gate = next((g for g in gates if g.stage is gate.stage and g.digest == gate.digest), gate)
    return gate


def decided_result(task: CompiledTask, answer: ExecutionResult, gate: Gate) -> ExecutionResult:
    """The task's final result once ``gate`` (on ``answer``) is decided.

    approve (also by a timeout): the answer; edit: the edited output (a json task's edit must parse and match
    its schema, else the task fails with ``invalid_output``); reject: ``review_rejected``; a timeout whose
    action is ``fail``: ``review_timeout``.
    """
    from orchestration.store.gates import DecisionKind

    decision = gate.decision
    assert decision is not None
    edit = decision is DecisionKind.EDIT
    review = review_record(gate, answer.output if edit else None)
    update: dict[str, Any] = {"completed_at": utc_now()}
    if edit:
        edited = (gate.edit or {}).get("output")
        update["output"] = edited
        if task.task.output_format is OutputFormat.JSON:
            try:
                update["parsed"] = parse_json_answer(str(edited), task.task.output_schema)
            except ValueError as exc:
                message = f"the edited output was refused: {exc}"
                update["status"], update["error"] = (
                    ExecutionStatus.FAILED,
                    ErrorInfo(type=ErrorType.INVALID_OUTPUT, message=message),
                )
        else:
            update["parsed"] = None
    elif (error := decision_error(gate)) is not None:
        update["status"], update["error"] = ExecutionStatus.FAILED, error
    return with_review(answer, review, **update)

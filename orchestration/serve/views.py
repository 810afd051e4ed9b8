"""The JSON shapes of ``orchestrate serve`` (docs/serve-api.md), read from the run store: every run in it, whoever
runs it. Plain functions (blocking SQLite reads): the routes run them in worker threads.

A task's status comes from the run's events, replayed in order (each says the status it puts its task in; a session's
``run_started`` puts every task that has not succeeded back to ``pending``); runs recorded before events were kept
fall back to their results. Everything shown was redacted on its way into the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from llm_abstractions import redact
from orchestration.events import EventKind
from orchestration.issues import ValidationIssue
from orchestration.models import AgentTask, ExecutionResult, OutputFormat, ProjectSpec
from orchestration.results import RunStatus, results_document
from orchestration.store import Gate, RunRecord, RunStore, StoredEvent, UnknownRunError

__all__ = [
    "TASK_STATUSES",
    "TaskStates",
    "event_json",
    "issue_json",
    "results_view",
    "run_view",
    "runs_view",
    "task_statuses",
    "task_view",
]

TASK_STATUSES = ("pending", "running", "waiting", "batched", "success", "failed", "skipped", "cancelled")
"""A task's status on the page and in the API."""

_FINAL = frozenset({"success", "failed", "skipped", "cancelled"})
_EVENT_FIELDS = (
    "agent",
    "status",
    "attempts",
    "cost_usd",
    "duration_s",
    "error_type",
    "gate",
    "endpoint",
    "pace",
    "batch",
    "run_status",
)

Outcome = tuple[str, str, float | None]
"""A result row: task id, status, cost in USD."""


def event_json(event: StoredEvent) -> dict[str, Any]:
    """An event as the streams send it: every field, ``None`` where the event has none."""
    data = event.data
    document: dict[str, Any] = {
        "id": event.seq,
        "kind": event.kind,
        "run_id": event.run_id,
        "task_id": event.task_id,
        "timestamp": event.timestamp,
    }
    document.update((name, data.get(name)) for name in _EVENT_FIELDS)
    return document


def issue_json(issue: ValidationIssue) -> dict[str, Any]:
    """A validation issue as the CLI prints it, field by field (its message redacted: it may quote the input)."""
    return {
        "message": redact(issue.message),
        "file": str(issue.file) if issue.file is not None else None,
        "line": issue.line,
        "task": issue.task,
        "agent": issue.agent,
        "field": issue.field,
    }


@dataclass(frozen=True)
class TaskStates:
    """Where a run's tasks are, replayed from its events."""

    statuses: dict[str, str]
    """Each task's status."""
    started: dict[str, StoredEvent]
    """Each task's last ``task_started``."""
    latest: dict[str, StoredEvent]
    """Each task's last event that set its status."""


def task_statuses(task_ids: Sequence[str], outcomes: Iterable[Outcome], events: Iterable[StoredEvent]) -> TaskStates:
    """Each task's status (and the events that say when it started and what set its status)."""
    statuses = dict.fromkeys(task_ids, "pending")
    for task_id, status, _ in outcomes:  # the latest result of each task: the status of runs without events
        statuses[task_id] = str(status)
    started: dict[str, StoredEvent] = {}
    latest: dict[str, StoredEvent] = {}
    for event in events:
        if event.kind == EventKind.RUN_STARTED:
            for task_id, status in statuses.items():
                if status != "success":
                    statuses[task_id] = "pending"
        elif event.task_id is not None and (now := event.data.get("status")) in TASK_STATUSES:
            statuses[event.task_id] = str(now)
            latest[event.task_id] = event
            if event.kind == EventKind.TASK_STARTED:
                started[event.task_id] = event
    return TaskStates(statuses, started, latest)


def runs_view(store: RunStore, *, project: str | None, status: RunStatus | None, limit: int) -> dict[str, Any]:
    """``GET /api/runs``: the newest runs (of ``project``, with ``status``), as RunSummary."""
    records = store.list_runs(project, limit, status)
    outcomes = store.outcomes([record.run_id for record in records])
    reviews = Counter(gate.run_id for gate in store.open_gates())
    summaries = []
    for record in records:
        events = store.events(record.run_id) if record.status is RunStatus.RUNNING else ()
        states = task_statuses(record.task_ids, outcomes[record.run_id], events)
        summaries.append(_summary(record, states.statuses, outcomes[record.run_id], reviews[record.run_id]))
    return {"runs": summaries}


def run_view(store: RunStore, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{run_id}``: the RunDetail (raise :class:`UnknownRunError`)."""
    stored = store.load_run(run_id)
    record = stored.record
    outcomes = store.outcomes([run_id])[run_id]
    states = task_statuses(record.task_ids, outcomes, store.events(run_id))
    statuses = states.statuses
    gates = {gate.task_id: gate for gate in store.open_gates(run_id)}
    spec = _spec(record.file)
    rows = []
    for task_id in [*record.task_ids, *(t for t in stored.tasks if t not in statuses)]:
        status = statuses.get(task_id, "pending")
        result = stored.tasks[task_id].result if task_id in stored.tasks and status in _FINAL else None
        rows.append(_task_row(record, task_id, status, result, states, gates.get(task_id), spec))
    by_agent: dict[str, float] = {}
    for task in stored.tasks.values():  # what the latest result of each task cost, by agent
        if task.result.cost_usd is not None:
            agent = task.result.agent or "?"
            by_agent[agent] = by_agent.get(agent, 0.0) + task.result.cost_usd
    return {
        **_summary(record, statuses, outcomes, len(gates)),
        "inputs": record.inputs,
        "sessions": record.sessions,
        "tasks": rows,
        "cost_by_agent": by_agent,
    }


def results_view(store: RunStore, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{run_id}/results``: the results document, as ``orchestrate run --results`` writes it."""
    stored = store.load_run(run_id)
    record = stored.record
    return results_document(record.project, record.run_id, stored.results(), record.status)


def task_view(store: RunStore, run_id: str, task_id: str) -> dict[str, Any]:
    """``GET /api/runs/{run_id}/tasks/{task_id}``: the TaskDetail (raise :class:`UnknownRunError` for an unknown run
    or task)."""
    record = store.get_run(run_id)
    stored = store.load_task(run_id, task_id)
    if stored is None and task_id not in record.task_ids:
        raise UnknownRunError(f"run '{run_id}' has no task '{task_id}'")
    outcomes = store.outcomes([run_id])[run_id]
    states = task_statuses(record.task_ids, outcomes, store.events(run_id))
    status = states.statuses.get(task_id, "pending")
    result = stored.result if stored is not None and status in _FINAL else None
    gates = store.gates_of(run_id, task_id)
    gate = gates[-1] if gates and gates[-1].open else None
    spec = _spec(record.file)
    task = _task_of(spec, task_id)
    output_format = stored.output_format if stored is not None else (task.output_format if task else None)
    return {
        "task_id": task_id,
        "status": status,
        "agent": _agent(result, states.latest.get(task_id), task, spec),
        "provider": result.provider if result else None,
        "model": result.model if result else None,
        "depends_on": record.depends_on.get(task_id, []),
        "request": [m.model_dump(mode="json") for m in result.request] if result and result.request else None,
        "output": result.output if result else None,
        "parsed": result.parsed if result and output_format is OutputFormat.JSON else None,
        "output_format": str(output_format or OutputFormat.TEXT),
        "output_schema": task.output_schema if task is not None else None,
        "attempts": result.attempts if result else 0,
        "attempt_log": _attempts(result),
        "usage": result.usage.model_dump(mode="json") if result and result.usage else None,
        "cost_usd": result.cost_usd if result else None,
        "finish_reason": result.finish_reason if result else None,
        "error": {"type": result.error.type, "message": result.error.message} if result and result.error else None,
        "review": result.review.model_dump(mode="json") if result and result.review else None,
        "started_at": _started(task_id, status, result, states),
        "completed_at": _iso(result.completed_at) if result else None,
        "duration_s": result.duration_s if result else None,
        "gate": gate.as_json() if gate is not None else None,
    }


def _summary(
    record: RunRecord, statuses: Mapping[str, str], outcomes: Sequence[Outcome], reviews: int
) -> dict[str, Any]:
    costs = [cost for _, _, cost in outcomes if cost is not None]  # every session's: what the run spent
    end = record.finished_at.timestamp() if record.finished_at is not None else time.time()
    counts = Counter(statuses.values())
    return {
        "run_id": record.run_id,
        "project": record.project,
        "status": str(record.status),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "duration_s": max(0.0, end - record.started_at.timestamp()),
        "cost_usd": sum(costs) if costs else None,
        "tasks": len(record.task_ids),
        "counts": {status: counts[status] for status in TASK_STATUSES},
        "open_reviews": reviews,
    }


def _task_row(
    record: RunRecord,
    task_id: str,
    status: str,
    result: ExecutionResult | None,
    states: TaskStates,
    gate: Gate | None,
    spec: ProjectSpec | None,
) -> dict[str, Any]:
    latest = states.latest.get(task_id)
    waiting_since = None
    if status == "waiting":
        waiting_since = _iso(gate.requested_at) if gate is not None else _event_time(latest)
    return {
        "task_id": task_id,
        "agent": _agent(result, latest, _task_of(spec, task_id), spec),
        "depends_on": record.depends_on.get(task_id, []),
        "status": status,
        "started_at": _started(task_id, status, result, states),
        "completed_at": _iso(result.completed_at) if result else None,
        "duration_s": result.duration_s if result else None,
        "attempts": result.attempts if result else 0,
        "attempt_log": _attempts(result),
        "cost_usd": result.cost_usd if result else None,
        "error_type": result.error.type if result and result.error else None,
        "review": result.review.model_dump(mode="json") if result and result.review else None,
        "waiting_since": waiting_since,
    }


def _attempts(result: ExecutionResult | None) -> list[dict[str, Any]]:
    if result is None:
        return []
    return [
        {"agent": attempt.agent, "error_type": attempt.error_type, "duration_s": attempt.duration_s}
        for attempt in result.attempt_log
    ]


def _agent(
    result: ExecutionResult | None, event: StoredEvent | None, task: AgentTask | None, spec: ProjectSpec | None
) -> str | None:
    """Who answered, else who runs it now, else who the project file names (its default agent)."""
    if result is not None and result.agent:
        return result.agent
    if event is not None and isinstance(agent := event.data.get("agent"), str):
        return agent
    if task is not None:
        return task.agent or (spec.defaults.agent if spec is not None else None) or "offline"
    return None


def _started(task_id: str, status: str, result: ExecutionResult | None, states: TaskStates) -> str | None:
    """When a final task took its slot (its result says), or when a running or waiting one started."""
    if result is not None:
        return _iso(result.started_at)
    return _event_time(states.started.get(task_id)) if status in ("running", "waiting") else None


def _event_time(event: StoredEvent | None) -> str | None:
    if event is None:
        return None
    return datetime.fromtimestamp(event.timestamp, UTC).isoformat()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _task_of(spec: ProjectSpec | None, task_id: str) -> AgentTask | None:
    if spec is None:
        return None
    return next((task for task in spec.tasks if task.id == task_id), None)


def _spec(file: Path | None) -> ProjectSpec | None:
    """The project file a run recorded, as it is now (for what the store does not keep: a task's agent before it
    runs, its output schema); ``None`` when it is gone or does not parse."""
    if file is None:
        return None
    try:
        stat = file.stat()
    except OSError:
        return None
    return _parsed(file, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _parsed(file: Path, _mtime_ns: int, _size: int) -> ProjectSpec | None:
    from orchestration.issues import ProjectValidationError
    from orchestration.loader import load_project_file

    try:
        return load_project_file(file)[0]
    except ProjectValidationError:
        return None

"""The JSON shapes of ``orchestrate serve`` (docs/serve-api.md), read from the run store: every run in it, whoever
runs it. Plain functions (blocking SQLite reads): the routes run them in worker threads.

A task's status comes from the run's events, replayed in order (each says the status it puts its task in; a session's
``run_started`` puts every task that has not succeeded back to ``pending``); runs recorded before events were kept
fall back to their results. Everything shown was redacted on its way into the store.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from llm_abstractions import redact
from orchestration.events import EventKind
from orchestration.issues import ValidationIssue
from orchestration.items import mapped_task_of
from orchestration.models import AgentTask, ExecutionResult, OutputFormat, ProjectSpec
from orchestration.results import RunStatus, results_document
from orchestration.store import Gate, RunRecord, RunStore, StoredEvent, UnknownRunError

__all__ = [
    "TASK_STATUSES",
    "FollowedRuns",
    "RunDetail",
    "TaskStates",
    "event_json",
    "issue_json",
    "results_view",
    "run_detail",
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
    "cache_hit",
    "saved_usd",
    "gate",
    "endpoint",
    "pace",
    "budget",
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

    def replay(self, events: Iterable[StoredEvent]) -> None:
        """Move the tasks on by ``events`` (the run's, in order, after those replayed so far)."""
        statuses, started, latest = self.statuses, self.started, self.latest
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


def task_statuses(task_ids: Sequence[str], outcomes: Iterable[Outcome], events: Iterable[StoredEvent]) -> TaskStates:
    """Each task's status (and the events that say when it started and what set its status)."""
    statuses = dict.fromkeys(task_ids, "pending")
    for task_id, status, _ in outcomes:  # the latest result of each task: the status of runs without events
        statuses[task_id] = str(status)
    states = TaskStates(statuses, {}, {})
    states.replay(events)
    return states


def runs_view(
    store: RunStore,
    *,
    project: str | None,
    status: RunStatus | None,
    limit: int,
    followed: FollowedRuns | None = None,
) -> dict[str, Any]:
    """``GET /api/runs``: the newest runs (of ``project``, with ``status``), as RunSummary. ``followed`` keeps what
    it can from one call to the next: the summaries of runs that do not run (while their version is the same), the
    task states of those that do (only their new events are read)."""
    reviews = Counter(gate.run_id for gate in store.open_gates())
    if followed is not None:
        return {"runs": followed.summaries(store, reviews, project=project, status=status, limit=limit)}
    return {"runs": _summaries(store, store.list_runs(project, limit, status), reviews, None)}


def _summaries(
    store: RunStore, records: Sequence[RunRecord], reviews: Mapping[str, int], followed: FollowedRuns | None
) -> list[dict[str, Any]]:
    """The RunSummary of each run."""
    outcomes = store.outcomes([record.run_id for record in records])
    summaries = []
    for record in records:
        done = outcomes[record.run_id]
        if record.status is not RunStatus.RUNNING:
            statuses = task_statuses(record.task_ids, done, ()).statuses
        elif followed is not None:
            statuses = followed.statuses(store, record, done)
        else:
            statuses = task_statuses(record.task_ids, done, store.events(record.run_id)).statuses
        summaries.append(_summary(record, statuses, done, reviews.get(record.run_id, 0)))
    return summaries


class FollowedRuns:
    """What the runs list keeps between looks (thread-safe): the summary of each run that does not run, by its
    version (:meth:`~orchestration.store.RunStore.run_version`: a run unchanged is not read again), and the task
    states of each running run, brought up to date by the events written since (its history is replayed once per
    session of the run, not on every look)."""

    def __init__(self, kept: int = 1000) -> None:
        self.kept = kept
        """How many runs of each kind are kept (the runs list shows at most 1000)."""
        self._runs: OrderedDict[str, tuple[int, int, TaskStates]] = OrderedDict()
        """By running run: its sessions, the last event replayed, its task states."""
        self._stopped: OrderedDict[str, tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()
        """By run that does not run: its version and its summary then."""
        self._lock = threading.Lock()

    def summaries(
        self,
        store: RunStore,
        reviews: Mapping[str, int],
        *,
        project: str | None,
        status: RunStatus | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """The RunSummary of each of the newest runs, built only for runs that changed (or run) since the last look."""
        versions = store.run_versions(project, limit, status)  # read first: a summary is never older than its key
        kept: dict[str, dict[str, Any]] = {}
        with self._lock:
            for run_id, version in versions.items():
                found = self._stopped.get(run_id)
                if found is not None and found[0] == version:
                    kept[run_id] = found[1]
        records = []
        for run_id in versions:
            if run_id not in kept:
                with contextlib.suppress(UnknownRunError):  # deleted meanwhile
                    records.append(store.get_run(run_id))
        built = _summaries(store, records, reviews, self)
        with self._lock:
            for record, summary in zip(records, built, strict=True):
                kept[record.run_id] = summary
                if record.status is not RunStatus.RUNNING:
                    self._stopped[record.run_id] = (versions[record.run_id], summary)
                    self._stopped.move_to_end(record.run_id)
            while len(self._stopped) > self.kept:
                self._stopped.popitem(last=False)
        return [kept[run_id] for run_id in versions if run_id in kept]

    def statuses(self, store: RunStore, record: RunRecord, outcomes: Sequence[Outcome]) -> dict[str, str]:
        """Each task's status now, a copy (``outcomes`` are used only when the run is new here, or resumed)."""
        with self._lock:
            sessions, seq, states = self._runs.pop(record.run_id, (0, 0, None))
            if states is None or sessions != record.sessions:
                states, seq = task_statuses(record.task_ids, outcomes, ()), 0
            events = store.events(record.run_id, seq)
            states.replay(events)
            self._runs[record.run_id] = (record.sessions, events[-1].seq if events else seq, states)
            while len(self._runs) > self.kept:
                self._runs.popitem(last=False)
            return dict(states.statuses)


def run_view(store: RunStore, run_id: str) -> dict[str, Any]:
    """``GET /api/runs/{run_id}``: the RunDetail (raise :class:`UnknownRunError`)."""
    detail = run_detail(store, run_id)
    return {**detail.head(), "tasks": detail.tasks, "cost_by_agent": detail.cost_by_agent}


@dataclass(frozen=True)
class RunDetail:
    """A run's RunDetail in parts: what depends on the store (:func:`run_detail`), and :meth:`head`, which also
    depends on the time while the run runs (its ``duration_s``)."""

    record: RunRecord
    statuses: dict[str, str]
    outcomes: Sequence[Outcome]
    open_reviews: int
    tasks: list[dict[str, Any]]
    cost_by_agent: dict[str, float]

    def head(self) -> dict[str, Any]:
        """The RunSummary, then ``inputs`` and ``sessions``: every field before ``tasks``."""
        record = self.record
        summary = _summary(record, self.statuses, self.outcomes, self.open_reviews)
        return {**summary, "inputs": record.inputs, "sessions": record.sessions}


def run_detail(store: RunStore, run_id: str) -> RunDetail:
    """The parts of the run's RunDetail (raise :class:`UnknownRunError`)."""
    stored = store.load_run(run_id)
    record = stored.record
    outcomes = store.outcomes([run_id])[run_id]
    states = task_statuses(record.task_ids, outcomes, store.events(run_id))
    statuses = states.statuses
    gates = {gate.task_id: gate for gate in store.open_gates(run_id)}
    project = _project(record.file)
    rows = []
    known = set(record.task_ids)  # then the tasks the run added: instances of mapped tasks (for_each)
    for task_id in [*record.task_ids, *(t for t in stored.tasks if t not in known)]:
        status = statuses.get(task_id, "pending")
        result = stored.tasks[task_id].result if task_id in stored.tasks and status in _FINAL else None
        rows.append(_task_row(record, task_id, status, result, states, gates.get(task_id), project))
    by_agent: dict[str, float] = {}
    for task in stored.tasks.values():  # what the latest result of each task cost, by agent
        if task.result.cost_usd is not None:
            agent = task.result.agent or "?"
            by_agent[agent] = by_agent.get(agent, 0.0) + task.result.cost_usd
    return RunDetail(record, statuses, outcomes, len(gates), rows, by_agent)


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
    project = _project(record.file)
    task = project.task(task_id) if project is not None else None
    spec = project.spec if project is not None else None
    output_format = stored.output_format if stored is not None else (task.output_format if task else None)
    return {
        "task_id": task_id,
        "status": status,
        "agent": _agent(result, states.latest.get(task_id), task, spec),
        "provider": result.provider if result else None,
        "model": result.model if result else None,
        "depends_on": _depends_on(record, task_id),
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
    project: _Project | None,
) -> dict[str, Any]:
    latest = states.latest.get(task_id)
    task = project.task(task_id) if project is not None else None
    waiting_since = None
    if status == "waiting":
        waiting_since = _iso(gate.requested_at) if gate is not None else _event_time(latest)
    return {
        "task_id": task_id,
        "agent": _agent(result, latest, task, project.spec if project is not None else None),
        "depends_on": _depends_on(record, task_id),
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


def _depends_on(record: RunRecord, task_id: str) -> list[str]:
    """A task's dependencies; an instance's are its mapped task's."""
    return record.depends_on.get(mapped_task_of(task_id) or task_id, [])


@dataclass(frozen=True)
class _Project:
    """A run's project file as it is now, its tasks by id."""

    spec: ProjectSpec
    tasks: dict[str, AgentTask]

    def task(self, task_id: str) -> AgentTask | None:
        """The task ``task_id`` is, or (an instance of a mapped task, ``classify[17]``) is an instance of."""
        return self.tasks.get(mapped_task_of(task_id) or task_id)


def _project(file: Path | None) -> _Project | None:
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
def _parsed(file: Path, _mtime_ns: int, _size: int) -> _Project | None:
    from orchestration.issues import ProjectValidationError
    from orchestration.loader import load_project_file

    try:
        spec = load_project_file(file)[0]
    except ProjectValidationError:
        return None
    return _Project(spec, {task.id: task for task in spec.tasks})

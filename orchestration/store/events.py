"""The ``events`` table of the run store: every event of every session of a run, in order, for followers in other
processes (``orchestrate serve`` streams them).

The session running a run writes its events with its results, in the same group commits
(:meth:`~orchestration.store.RunStore.record_event`, an :class:`~orchestration.events.EventBus` callback);
``run_started`` and ``run_finished`` are written in the transactions of ``begin_run`` and ``end_run``, so a
reader that sees a session end sees its ``run_finished`` too. ``seq`` numbers every event of the store, in
the order written. A row stays small: a task's event keeps its status, attempts, cost, duration and error type
(its result is in ``results``), a review event its gate without the payload (in ``gates``), an endpoint's its
label (provider, host and path: never a key) and pace. Gates and labels are redacted on the way in.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from orchestration.events import EventKind, RunEvent
from orchestration.models import ExecutionResult
from orchestration.store.codec import to_json
from orchestration.store.writer import Statement

__all__ = ["EVENTS_SCHEMA", "INSERT_EVENT", "StoredEvent", "boundary_statement", "event_row", "read_events"]

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    task_id TEXT,
    timestamp REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id, seq);
"""
"""``AUTOINCREMENT``: a sequence number is never used twice, even after the newest events were deleted, so that a
follower resuming after one never misses a later event. ``events_by_run`` keeps a run's rows together: a commit
appends to one place of it."""

INSERT_EVENT = "INSERT INTO events (run_id, kind, task_id, timestamp, data) VALUES (?, ?, ?, ?, ?)"

_STATUS_OF = {
    EventKind.TASK_STARTED: "running",
    EventKind.REVIEW_REQUESTED: "waiting",
    EventKind.TASK_BATCHED: "batched",
}
"""The task's status an event without a result puts it in (a final event carries its result's)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the ``events`` table."""

    seq: int
    """Its number in the store: increasing in the order written."""
    run_id: str
    kind: str
    """An :class:`~orchestration.events.EventKind` value (a later version's kinds are kept as they are)."""
    task_id: str | None
    timestamp: float
    """Epoch seconds."""
    data: dict[str, Any]
    """What else the event says, only the fields it has: ``agent``, ``status``, ``attempts``, ``cost_usd``,
    ``duration_s``, ``error_type``, ``cache_hit`` and ``saved_usd`` (task events; an answer from the answer cache),
    ``gate`` (review events), ``endpoint`` and ``pace`` (``endpoint_paced``), ``batch`` (``batch_status``: the job, its
    provider id, agent, provider, state, number of tasks and the provider's counts), ``run_status``
    (``run_finished``)."""


def event_row(event: RunEvent) -> tuple[str, str, str | None, float, str] | None:
    """The row of ``event`` (for :data:`INSERT_EVENT`); ``None`` for ``run_started`` and ``run_finished`` (written
    with the run's row). A task's events (two per task) come first and cost the least."""
    kind = event.kind
    result = event.result
    if result is not None:
        text = _result_data(event.agent, result)
    elif kind is EventKind.TASK_STARTED:
        text = _started(event.agent, "running")
    elif event.gate is not None:
        data: dict[str, Any] = {
            "agent": event.agent,
            "status": _STATUS_OF.get(kind),
            "gate": event.gate.as_json(payload=False),
        }
        if kind is EventKind.REVIEW_DECIDED and event.gate.decision in ("approve", "edit"):
            data["status"] = "running"  # its answer (or request) goes on; a rejection's task_failed follows
        text = to_json({key: value for key, value in data.items() if value is not None})
    elif event.pace is not None:
        pace = event.pace
        pacing = {
            "requests_per_minute": pace.requests_per_minute,
            "tokens_per_minute": pace.tokens_per_minute,
            "reason": str(pace.reason),
            "paused_s": pace.paused_s,
        }
        text = to_json({"endpoint": event.endpoint, "pace": pacing})
    elif event.budget is not None:
        budget = event.budget
        text = to_json(
            {
                "budget": {
                    "account": budget.account,
                    "spent_usd": budget.spent_usd,
                    "spent_tokens": budget.spent_tokens,
                    "cap_usd": budget.cap_usd,
                    "cap_tokens": budget.cap_tokens,
                    "exhausted": budget.exhausted,
                }
            }
        )
    elif event.batch is not None:
        text = to_json({"batch": event.batch.as_json()})
    elif kind is EventKind.RUN_STARTED or kind is EventKind.RUN_FINISHED:
        return None
    else:
        text = _started(event.agent, _STATUS_OF.get(kind))
    return event.run_id, str(kind), event.task_id, event.timestamp, text  # str: a StrEnum would be adapted per row


def _result_data(agent: str | None, result: ExecutionResult) -> str:
    """A task's final event's data, written by hand (where ``json.dumps`` would cost several times more): ids,
    names and numbers only, nothing to redact."""
    text = _head(agent, str(result.status), result.attempts)  # str(): a StrEnum's f-string goes through format()
    if result.cost_usd is not None:
        text += f',"cost_usd":{_number(result.cost_usd)}'
    if result.duration_s is not None:
        text += f',"duration_s":{_number(result.duration_s)}'
    if result.error is not None:
        text += f",{_field('error_type', result.error.type)[:-1]}"
    if result.cache is not None and result.cache.hit:
        text += ',"cache_hit":true'
        if result.cache.saved_usd is not None:
            text += f',"saved_usd":{_number(result.cache.saved_usd)}'
    return text + "}"


@lru_cache(maxsize=1024)
def _head(agent: str | None, status: str, attempts: int) -> str:
    """``{"agent":...,"status":...,"attempts":n``: the same for most tasks of an agent."""
    return f'{{{_field("agent", agent)}"status":"{status}","attempts":{int(attempts)}'


@lru_cache(maxsize=1024)
def _started(agent: str | None, status: str | None) -> str:
    """The data of an event without a result: the same for every task of an agent."""
    return to_json({key: value for key, value in (("agent", agent), ("status", status)) if value is not None})


@lru_cache(maxsize=4096)
def _field(name: str, value: str | None) -> str:
    """``"name":"value",`` as JSON (empty for ``None``); agents and error types repeat: each is escaped once."""
    return "" if value is None else f'"{name}":{json.dumps(value, ensure_ascii=False)},'


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else "null"


def boundary_statement(run_id: str, kind: EventKind, timestamp: float, data: Mapping[str, Any]) -> Statement:
    """The insert of a session's ``run_started`` or ``run_finished``."""
    return INSERT_EVENT, (run_id, str(kind), None, timestamp, to_json(dict(data)))


def read_events(connection: sqlite3.Connection, run_id: str | None, after: int, limit: int | None) -> list[StoredEvent]:
    """The events after ``seq`` ``after`` (of ``run_id``, or of every run), oldest first, at most ``limit``."""
    sql = "SELECT seq, run_id, kind, task_id, timestamp, data FROM events WHERE seq > ?"
    params: list[Any] = [after]
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    sql += " ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        StoredEvent(seq, run, kind, task_id, timestamp, json.loads(data))
        for seq, run, kind, task_id, timestamp, data in connection.execute(sql, params)
    ]

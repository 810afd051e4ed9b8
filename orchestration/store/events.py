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
from orchestration.store.codec import to_json
from orchestration.store.writer import Statement

__all__ = ["EVENTS_SCHEMA", "StoredEvent", "boundary_statement", "event_statement", "read_events"]

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

_INSERT = "INSERT INTO events (run_id, kind, task_id, timestamp, data) VALUES (?, ?, ?, ?, ?)"

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
    ``duration_s``, ``error_type`` (task events), ``gate`` (review events), ``endpoint`` and ``pace``
    (``endpoint_paced``), ``batch`` (``batch_status``: the job, its provider id, agent, provider, state, number of
    tasks and the provider's counts), ``run_status`` (``run_finished``)."""


def event_statement(event: RunEvent) -> Statement | None:
    """The insert of ``event``; ``None`` for ``run_started`` and ``run_finished`` (written with the run's row)."""
    kind = event.kind
    if event.gate is not None:
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
        text = _task_data(event)
    return _INSERT, (event.run_id, str(kind), event.task_id, event.timestamp, text)


def _task_data(event: RunEvent) -> str:
    """A task event's data, written by hand: twice per task, where ``json.dumps`` would cost several times more
    (ids, names and numbers only: nothing to redact)."""
    result = event.result
    if result is None:
        return _started(event.agent, _STATUS_OF.get(event.kind))
    text = f'{_field("agent", event.agent)}"status":"{result.status}","attempts":{int(result.attempts)}'
    if result.cost_usd is not None:
        text += f',"cost_usd":{_number(result.cost_usd)}'
    if result.duration_s is not None:
        text += f',"duration_s":{_number(result.duration_s)}'
    if result.error is not None:
        text += f",{_field('error_type', result.error.type)[:-1]}"
    return "{" + text + "}"


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
    return _INSERT, (run_id, str(kind), None, timestamp, to_json(dict(data)))


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

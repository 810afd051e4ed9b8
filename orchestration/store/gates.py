"""Human review gates in the run store: a task's request (``before``) or answer (``after``) waits for a decision.

A gate belongs to one attempt of one task and keeps the payload shown (redacted, as every JSON column of the
store) and its :func:`payload_digest`. Gates are keyed by run, task, stage and digest: asking for a gate again
(a resume after a crash) returns the stored gate; a changed payload (the task reran after an upstream change)
is a new gate, and the task's newest gate is the one it waits on. A decision names the digest it saw (else it
is :class:`StaleGateError`), the first one written wins (:class:`GateConflictError` for a different one later)
and the same ``decision_id`` again is a no-op. Timeouts are kept by the store's clock: :func:`expire_gates`
records a gate's ``on_timeout`` for whatever process calls it, with actor :data:`TIMEOUT_ACTOR`.

The functions here run inside one ``BEGIN IMMEDIATE`` transaction of :class:`~orchestration.store.RunStore`,
which serialises them across threads and processes (no run lease needed). Error messages never hold payloads.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from orchestration.review import GateStage, TimeoutAction
from orchestration.store.codec import to_json

__all__ = [
    "GATES_SCHEMA",
    "TIMEOUT_ACTOR",
    "Decision",
    "DecisionKind",
    "Gate",
    "GateConflictError",
    "GateError",
    "GateRequest",
    "GateStage",
    "StaleGateError",
    "TimeoutAction",
    "UnknownGateError",
    "decide_gate",
    "expire_gates",
    "note_reviewer",
    "open_gates",
    "payload_digest",
    "request_gate",
    "task_gates",
]

TIMEOUT_ACTOR = "timeout"
"""The actor of a decision recorded by a gate's timeout."""

GATES_SCHEMA = """
CREATE TABLE IF NOT EXISTS gates (
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    digest TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    payload TEXT NOT NULL,
    fired TEXT NOT NULL,
    policy TEXT NOT NULL,
    requested_at TEXT NOT NULL,
    expires_at TEXT,
    on_timeout TEXT NOT NULL,
    decision TEXT,
    edit TEXT,
    actor TEXT,
    message TEXT,
    decided_at TEXT,
    decision_id TEXT,
    seq INTEGER NOT NULL,
    reviewer TEXT,
    UNIQUE (run_id, task_id, stage, digest)
);
CREATE INDEX IF NOT EXISTS gates_open ON gates (run_id) WHERE decision IS NULL;
"""
"""``seq`` orders a task's gates by when they were last asked for: the highest is the task's current gate."""

_COLUMNS = (
    "run_id, task_id, stage, digest, attempt, payload, fired, policy, requested_at, expires_at, on_timeout,"
    " decision, edit, actor, message, decided_at, decision_id, reviewer"
)
_CURRENT = (
    "seq = (SELECT MAX(seq) FROM gates AS newer WHERE newer.run_id = gates.run_id AND newer.task_id = gates.task_id)"
)
"""The task's newest gate (the one it waits on); an older undecided gate was superseded."""


class DecisionKind(StrEnum):
    APPROVE = "approve"
    EDIT = "edit"
    REJECT = "reject"
    FAIL = "fail"
    """Recorded only by a timeout whose action is ``fail``: the engine fails the task (``review_timeout``)."""


_EDITABLE: dict[GateStage, dict[str, type]] = {
    GateStage.BEFORE: {"prompt": str, "system_prompt": str, "options": dict},
    GateStage.AFTER: {"output": str},
}
"""What an edit of each stage may replace, and the type of each."""


class GateError(ValueError):
    """A gate operation the store refuses; the message is fit for a CLI (no payloads in it)."""


class UnknownGateError(GateError):
    """The task has no gate (of that stage)."""


class StaleGateError(GateError):
    """The decision names a digest that is no longer the task's current gate's."""

    def __init__(self, gate: Gate, seen: str) -> None:
        self.gate, self.seen, self.current = gate, seen, gate.digest
        super().__init__(
            f"{gate.label}: the decision was made on payload {seen[:12]}, but the gate now shows {gate.digest[:12]}"
            " (the task's payload changed); review the current gate"
        )


class GateConflictError(GateError):
    """The gate was already decided, differently (another ``decision_id``)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        when = f"{gate.decided_at:%Y-%m-%d %H:%M:%S} UTC" if gate.decided_at else "earlier"
        super().__init__(
            f"{gate.label} was already decided: {gate.decision} by {gate.actor} at {when}"
            f" (decision {gate.decision_id}); this decision was not recorded"
        )


def payload_digest(payload: Mapping[str, Any]) -> str:
    """The sha256 (hex) of ``payload`` as canonical JSON: sorted keys, no whitespace."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class GateRequest:
    """What the engine asks for when a task's policy fires a review."""

    run_id: str
    task_id: str
    stage: GateStage
    attempt: int
    payload: Mapping[str, Any]
    """What the reviewer is shown (``before``: system prompt, prompt, options; ``after``: answer, usage, cost)."""
    policy: str
    fired: Sequence[str] = ()
    """The thresholds (or rules) of the policy that fired."""
    timeout_s: float | None = None
    """Seconds until :attr:`on_timeout` decides (by the store's clock); ``None``: no timeout."""
    on_timeout: TimeoutAction = TimeoutAction.FAIL


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision; ``edit`` holds the replacements (``before``: ``prompt``, ``system_prompt``,
    ``options``; ``after``: ``output``) and only an ``edit`` has one; a ``reject`` needs a reason (``message``)."""

    kind: DecisionKind
    actor: str
    message: str | None = None
    digest: str | None = None
    """The gate's digest the reviewer saw; ``None`` decides whatever the current gate shows."""
    edit: Mapping[str, Any] | None = None
    decision_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names the decision: sending it again is a no-op that returns the gate as decided."""

    def __post_init__(self) -> None:
        if self.kind is DecisionKind.FAIL:
            raise GateError("'fail' is recorded only by a gate's timeout: decide approve, edit or reject")
        if not self.actor.strip():
            raise GateError("a decision needs an actor (who decided)")
        if (self.kind is DecisionKind.EDIT) != bool(self.edit):
            raise GateError("an edit needs the edited content" if self.edit is None else f"a {self.kind} has no edit")
        if self.kind is DecisionKind.REJECT and not (self.message or "").strip():
            raise GateError("a rejection needs a reason (message)")


@dataclass(frozen=True)
class Gate:
    """A stored gate and, once decided, its decision."""

    run_id: str
    task_id: str
    stage: GateStage
    attempt: int
    digest: str
    payload: dict[str, Any]
    fired: list[str]
    policy: str
    requested_at: datetime
    expires_at: datetime | None
    on_timeout: TimeoutAction
    decision: DecisionKind | None = None
    edit: dict[str, Any] | None = None
    actor: str | None = None
    message: str | None = None
    decided_at: datetime | None = None
    decision_id: str | None = None
    reviewer: dict[str, Any] | None = None
    """The reviewer agent's verdict (a :class:`~orchestration.models.ReviewerVerdict` as JSON), once it gave one."""

    @property
    def open(self) -> bool:
        """Not decided yet."""
        return self.decision is None

    @property
    def label(self) -> str:
        """How messages name it: ``gate 'before' of task 't' in run 'r'``."""
        return f"gate '{self.stage}' of task '{self.task_id}' in run '{self.run_id}'"

    def expired(self, now: datetime) -> bool:
        return self.open and self.expires_at is not None and self.expires_at <= now

    def as_json(self, *, payload: bool = True) -> dict[str, Any]:
        """The gate as ``orchestrate reviews --json`` and ``orchestrate serve`` show it: its decision's fields only
        once decided; ``payload=False`` leaves the payload out (an event names the gate; the payload is read here)."""
        document: dict[str, Any] = {
            "run_id": self.run_id,
            "task_id": self.task_id,
            "stage": str(self.stage),
            "attempt": self.attempt,
            "digest": self.digest,
        }
        if payload:
            document["payload"] = self.payload
        document |= {
            "fired": self.fired,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "reviewer": self.reviewer,
        }
        if self.decision is not None:
            document |= {
                "decision": str(self.decision),
                "actor": self.actor,
                "message": self.message,
                "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            }
        return document


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _gate(row: Sequence[Any]) -> Gate:
    """A gate from a row of :data:`_COLUMNS` (plain tuple or ``sqlite3.Row``)."""
    run_id, task_id, stage, digest, attempt, payload, fired, policy, requested, expires, on_timeout = row[:11]
    decision, edit, actor, message, decided, decision_id, reviewer = row[11:]
    return Gate(
        run_id=run_id,
        task_id=task_id,
        stage=GateStage(stage),
        attempt=attempt,
        digest=digest,
        payload=json.loads(payload),
        fired=json.loads(fired),
        policy=policy,
        requested_at=datetime.fromisoformat(requested),
        expires_at=_time(expires),
        on_timeout=TimeoutAction(on_timeout),
        decision=DecisionKind(decision) if decision else None,
        edit=json.loads(edit) if edit else None,
        actor=actor,
        message=message,
        decided_at=_time(decided),
        decision_id=decision_id,
        reviewer=json.loads(reviewer) if reviewer else None,
    )


def _next_seq(connection: sqlite3.Connection, run_id: str, task_id: str) -> int:
    row = connection.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM gates WHERE run_id = ? AND task_id = ?", (run_id, task_id)
    ).fetchone()
    return int(row[0])


def request_gate(connection: sqlite3.Connection, request: GateRequest, now: datetime) -> Gate:
    """Insert the gate, or get the stored one with the same run, task, stage and payload (it becomes the task's
    current gate again, otherwise unchanged). The digest is of the payload as stored (redacted)."""
    payload = json.loads(to_json(dict(request.payload)))
    digest = payload_digest(payload)
    key = (request.run_id, request.task_id, str(request.stage), digest)
    where = "WHERE run_id = ? AND task_id = ? AND stage = ? AND digest = ?"
    seq = _next_seq(connection, request.run_id, request.task_id)
    row = connection.execute(f"SELECT {_COLUMNS} FROM gates {where}", key).fetchone()
    if row is not None:
        connection.execute(f"UPDATE gates SET seq = ? {where}", (seq, *key))
        return _gate(row)
    expires = now + timedelta(seconds=request.timeout_s) if request.timeout_s is not None else None
    connection.execute(
        "INSERT INTO gates (run_id, task_id, stage, digest, attempt, payload, fired, policy, requested_at,"
        " expires_at, on_timeout, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *key,
            request.attempt,
            json.dumps(payload, ensure_ascii=False),
            to_json(list(request.fired)),
            request.policy,
            now.isoformat(),
            expires.isoformat() if expires else None,
            str(request.on_timeout),
            seq,
        ),
    )
    return _gate(connection.execute(f"SELECT {_COLUMNS} FROM gates {where}", key).fetchone())


def open_gates(connection: sqlite3.Connection, run_id: str | None = None) -> list[Gate]:
    """Undecided gates that their task waits on (of one run, or all), oldest first."""
    sql = f"SELECT {_COLUMNS} FROM gates WHERE decision IS NULL AND {_CURRENT}"
    params: tuple[str, ...] = ()
    if run_id is not None:
        sql, params = sql + " AND run_id = ?", (run_id,)
    return [_gate(row) for row in connection.execute(sql + " ORDER BY rowid", params)]


def task_gates(connection: sqlite3.Connection, run_id: str, task_id: str) -> list[Gate]:
    """A task's gates, the current one last."""
    rows = connection.execute(
        f"SELECT {_COLUMNS} FROM gates WHERE run_id = ? AND task_id = ? ORDER BY seq", (run_id, task_id)
    )
    return [_gate(row) for row in rows]


def _check_edit(gate: Gate, edit: Mapping[str, Any]) -> None:
    """Refuse an edit that changes what the stage cannot, or an answer that its json task would refuse."""
    allowed = _EDITABLE[gate.stage]
    for key, value in edit.items():
        if key not in allowed:
            raise GateError(f"an edit of a '{gate.stage}' gate may change {', '.join(allowed)}, not '{key}'")
        if not isinstance(value, allowed[key]):
            raise GateError(f"the edited '{key}' must be a {allowed[key].__name__}")
    if "output" in edit and gate.payload.get("output_format") == "json":
        from llm_abstractions.structured import parse_json_answer

        try:
            parse_json_answer(edit["output"], gate.payload.get("output_schema"))
        except ValueError as exc:
            raise GateError(f"the edited output of task '{gate.task_id}' was refused: {exc}") from None


def decide_gate(
    connection: sqlite3.Connection,
    run_id: str,
    task_id: str,
    decision: Decision,
    stage: GateStage | None,
    now: datetime,
) -> Gate:
    """Record ``decision`` on the task's current gate (of ``stage`` if given); see :meth:`RunStore.decide`.

    A gate whose time is up by ``now`` is decided by its timeout first (the decision then conflicts with it)."""
    same = connection.execute(
        f"SELECT {_COLUMNS} FROM gates WHERE run_id = ? AND task_id = ? AND decision_id = ?",
        (run_id, task_id, decision.decision_id),
    ).fetchone()
    if same is not None:  # this decision was recorded already
        return _gate(same)
    sql = f"SELECT {_COLUMNS}, rowid FROM gates WHERE run_id = ? AND task_id = ?"
    params: tuple[str, ...] = (run_id, task_id)
    if stage is not None:
        sql, params = sql + " AND stage = ?", (*params, str(stage))
    row = connection.execute(sql + " ORDER BY seq DESC LIMIT 1", params).fetchone()
    if row is None:
        of = f" '{stage}'" if stage is not None else ""
        raise UnknownGateError(f"task '{task_id}' of run '{run_id}' has no{of} review gate")
    gate, rowid = _gate(row[:-1]), row[-1]
    if decision.digest is not None and decision.digest != gate.digest:
        raise StaleGateError(gate, decision.digest)
    if gate.expired(now):  # the store's clock decided first, though nobody recorded it yet
        gate = _expire(connection, rowid, gate)
    if not gate.open:
        raise GateConflictError(gate)
    if decision.edit is not None:
        _check_edit(gate, decision.edit)
    return _record(connection, rowid, decision, now)


def _record(connection: sqlite3.Connection, rowid: int, decision: Decision | _Timeout, when: datetime) -> Gate:
    connection.execute(
        "UPDATE gates SET decision = ?, edit = ?, actor = ?, message = ?, decided_at = ?, decision_id = ?"
        " WHERE rowid = ? AND decision IS NULL",
        (
            str(decision.kind),
            to_json(dict(decision.edit)) if decision.edit is not None else None,
            decision.actor,
            decision.message,
            when.isoformat(),
            decision.decision_id,
            rowid,
        ),
    )
    return _gate(connection.execute(f"SELECT {_COLUMNS} FROM gates WHERE rowid = ?", (rowid,)).fetchone())


def note_reviewer(connection: sqlite3.Connection, gate: Gate, verdict: Mapping[str, Any]) -> Gate:
    """Keep the reviewer agent's ``verdict`` on ``gate`` (the first one stays); return the gate as stored."""
    key = (gate.run_id, gate.task_id, str(gate.stage), gate.digest)
    where = "WHERE run_id = ? AND task_id = ? AND stage = ? AND digest = ?"
    connection.execute(f"UPDATE gates SET reviewer = ? {where} AND reviewer IS NULL", (to_json(dict(verdict)), *key))
    return _gate(connection.execute(f"SELECT {_COLUMNS} FROM gates {where}", key).fetchone())


def expire_gates(connection: sqlite3.Connection, now: datetime) -> list[Gate]:
    """Decide every open current gate whose time is up with its ``on_timeout`` (actor :data:`TIMEOUT_ACTOR`,
    decided at its ``expires_at``); return them as decided."""
    rows = connection.execute(
        f"SELECT {_COLUMNS}, rowid FROM gates WHERE decision IS NULL AND expires_at IS NOT NULL AND {_CURRENT}"
        " ORDER BY rowid"
    ).fetchall()
    return [_expire(connection, row[-1], gate) for row in rows if (gate := _gate(row[:-1])).expired(now)]


def _expire(connection: sqlite3.Connection, rowid: int, gate: Gate) -> Gate:
    """Record the timeout of ``gate`` (at its ``expires_at``)."""
    assert gate.expires_at is not None
    message = f"no decision by {gate.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    return _record(connection, rowid, _Timeout(DecisionKind(str(gate.on_timeout)), message), gate.expires_at)


@dataclass(frozen=True)
class _Timeout:
    """The decision a timeout records (a :class:`Decision` refuses ``fail`` and needs no checks here)."""

    kind: DecisionKind
    message: str
    actor: str = TIMEOUT_ACTOR
    edit: None = None
    decision_id: str = field(default_factory=lambda: f"timeout-{uuid.uuid4().hex}")

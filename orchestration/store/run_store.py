"""``RunStore``: the durable record of runs and task results, in SQLite.

Each run has a row (project name, content hash, file, agents file, inputs, task order, status,
start and end); each task's final :class:`ExecutionResult` is written as JSON the
moment it finishes, with the task's fingerprint (a task run again in a later session of the
run gets a new row: its latest row is its result). A success is committed before the
task's dependents may start (its worker goes on to the next task meanwhile), so after a
crash (even ``kill -9``) every task recorded as succeeded stays succeeded. Tasks in
flight at the crash (or whose commit was still to come) have no record and are executed
again on resume: model calls are at-least-once for them.

Writes are committed in groups, one per turn of the event loop (:mod:`.writer`); reads
use a connection of their thread's own, kept open (WAL lets them run beside the writer), so another
process can follow a run as it executes (:meth:`RunStore.poll`). Each result row also keeps
the task's rendered messages as sent (redacted), for ``orchestrate show``.

A session of a run holds the run's lease while it runs (:mod:`.lease`): one owner per run, and the
results of a session whose lease was taken over are refused (fencing tokens).

The session also writes the run's events (:mod:`.events`) with its results, and the task graph with the run's
row, so that another process (``orchestrate serve``) can show and stream a run it does not run.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pydantic_core

from llm_abstractions import Message, redact, redact_value
from orchestration.events import EventKind, RunEvent
from orchestration.models import ExecutionResult, ExecutionStatus, OutputFormat, utc_now
from orchestration.results import RunStatus
from orchestration.store import answers, batches, gates
from orchestration.store.codec import to_json as _json
from orchestration.store.events import (
    EVENTS_SCHEMA,
    INSERT_EVENT,
    StoredEvent,
    boundary_statement,
    event_row,
    read_events,
)
from orchestration.store.gates import Decision, Gate, GateConflictError, GateRequest, GateStage, UnknownGateError
from orchestration.store.lease import (
    HEARTBEATS_PER_LEASE,
    Lease,
    LeaseLostError,
    RunOwnedError,
    default_lease_s,
    this_host,
)
from orchestration.store.writer import OnCommit, SqliteWriter, Statement, connect

__all__ = [
    "DEFAULT_STORE_PATH",
    "LATEST",
    "STORE_ENV",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "StoredRun",
    "StoredTask",
    "UnknownRunError",
    "default_store_path",
]

STORE_ENV = "ORCHESTRATE_STORE"
DEFAULT_STORE_PATH = Path(".orchestrate") / "runs.db"
LATEST = "latest"
"""The run reference that names the newest run of a store."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    project_hash TEXT NOT NULL,
    file TEXT,
    inputs TEXT NOT NULL,
    task_ids TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    sessions INTEGER NOT NULL DEFAULT 1,
    agents_file TEXT,
    lease_owner TEXT,
    lease_pid INTEGER,
    lease_host TEXT,
    lease_token INTEGER,
    lease_heartbeat TEXT,
    lease_expires TEXT,
    graph TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project, started_at);
CREATE TABLE IF NOT EXISTS spend (
    run_id TEXT NOT NULL,
    row TEXT NOT NULL,
    agent TEXT NOT NULL,
    reserved_usd REAL NOT NULL,
    reserved_tokens INTEGER NOT NULL,
    actual_usd REAL,
    actual_tokens INTEGER,
    settled INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id, row)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs (run_id),
    task_id TEXT NOT NULL,
    status TEXT NOT NULL,
    fingerprint TEXT,
    output_format TEXT NOT NULL,
    result TEXT NOT NULL,
    request TEXT,
    lease_token INTEGER
);
"""
_RESULTS_INDEX = "CREATE INDEX IF NOT EXISTS results_by_run ON results (run_id)"
"""Results are appended, a task's latest row being its result: rows of a run are found through this index.

A unique (run_id, task_id) key would put each row into a second B-tree at the place of its
task id, so that every commit would rewrite a page per row (twice the cost of the insert).
Stores made before keep their key (their rows are replaced instead of appended) and need no index."""


@dataclass(frozen=True)
class RunRecord:
    """One run's row."""

    run_id: str
    project: str
    project_hash: str
    file: Path | None
    inputs: dict[str, Any]
    task_ids: list[str]
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    sessions: int
    """1 for the first session, plus one per resume."""
    agents_file: Path | None = None
    """The agents file the latest session loaded, if any."""
    depends_on: dict[str, list[str]] = field(default_factory=dict)
    """Each task's dependencies (task ids), as the latest session ran them; empty for runs recorded before."""

    @property
    def finished(self) -> bool:
        return self.status is RunStatus.SUCCESS


class UnknownRunError(KeyError):
    """No run, or more than one, matches a run reference; the message names the store read."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class StoredTask:
    """A task's recorded result (``request`` included when recorded) and the fingerprint of the task."""

    result: ExecutionResult
    fingerprint: str | None
    output_format: OutputFormat = OutputFormat.TEXT


@dataclass(frozen=True)
class StoredRun:
    record: RunRecord
    tasks: dict[str, StoredTask]

    def results(self) -> dict[str, ExecutionResult]:
        """Results in the run's task order, a mapped task's instances after it in item order (as its own result
        lists them; others in the order they were first recorded), then any task no longer in the run."""
        from orchestration.items import mapped_task_of

        order = {task_id: i for i, task_id in enumerate(self.record.task_ids)}
        recorded = {task_id: i for i, task_id in enumerate(self.tasks)}
        items = {
            item: i for task in self.tasks.values() for i, item in enumerate(task.result.items or ())
        }  # instances of mapped tasks, in item order

        def place(task_id: str) -> tuple[int, int, int, str]:
            mapped = mapped_task_of(task_id)
            if mapped is not None and mapped in order:
                return order[mapped], 1, items.get(task_id, len(items) + recorded[task_id]), ""
            return order.get(task_id, len(order)), 0, 0, task_id

        ids = sorted(self.tasks, key=place)
        return {task_id: self.tasks[task_id].result for task_id in ids}


def default_store_path(env: Mapping[str, str] | None = None, *, project_file: Path | None = None) -> Path:
    """``$ORCHESTRATE_STORE``, else ``.orchestrate/runs.db`` in the folder of ``project_file`` (when given)
    or in the current folder."""
    env = os.environ if env is None else env
    if env.get(STORE_ENV):
        return Path(env[STORE_ENV])
    return project_file.parent / DEFAULT_STORE_PATH if project_file is not None else DEFAULT_STORE_PATH


def _setup(connection: sqlite3.Connection) -> None:
    connection.executescript(_SCHEMA)
    connection.executescript(gates.GATES_SCHEMA)  # stores written before review gates gain the table
    connection.executescript(answers.ANSWERS_SCHEMA)  # and before the answer cache
    connection.executescript(EVENTS_SCHEMA)  # and before events were kept, this one
    connection.executescript(batches.BATCHES_SCHEMA)  # and before batch jobs
    if not any(row[3] == "pk" for row in connection.execute("PRAGMA index_list(results)")):
        connection.execute(_RESULTS_INDEX)
    _add_column(connection, "runs", "agents_file")  # stores written before runs recorded their agents file
    _add_column(connection, "runs", "graph")  # stores written before runs recorded their task graph
    _add_column(connection, "results", "request")  # stores written before results kept their messages
    for column, kind in _LEASE_COLUMNS:  # stores written before runs had owners
        _add_column(connection, "runs", column, kind)
    _add_column(connection, "results", "lease_token", "INTEGER")
    _add_column(connection, "gates", "reviewer")  # stores written before reviewer agents


_LEASE_COLUMNS = (
    ("lease_owner", "TEXT"),
    ("lease_pid", "INTEGER"),
    ("lease_host", "TEXT"),
    ("lease_token", "INTEGER"),
    ("lease_heartbeat", "TEXT"),
    ("lease_expires", "TEXT"),
)
_SELECT_LEASE = f"SELECT {', '.join(column for column, _ in _LEASE_COLUMNS)} FROM runs WHERE run_id = ?"


def _add_column(connection: sqlite3.Connection, table: str, column: str, kind: str = "TEXT") -> None:
    """Add a nullable column (TEXT unless ``kind`` says otherwise) to a table of an older store, unless it has it."""
    if any(row[1] == column for row in connection.execute(f"PRAGMA table_info({table})")):
        return
    try:
        connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    except sqlite3.OperationalError as exc:  # another connection added it meanwhile
        if "duplicate column" not in str(exc):
            raise


def _result_json(result: ExecutionResult) -> str:
    """The result as JSON, its output, error message and metadata redacted (copied only when that changes them)."""
    changes: dict[str, Any] = {}
    if result.output is not None and (output := redact(result.output)) != result.output:
        changes["output"] = output
    if result.error is not None and (message := redact(result.error.message)) != result.error.message:
        changes["error"] = result.error.model_copy(update={"message": message})
    if result.metadata and (metadata := redact_value(result.metadata)) != result.metadata:
        changes["metadata"] = metadata
    return (result.model_copy(update=changes) if changes else result).model_dump_json()


def _request_json(request: list[Message] | None) -> str | None:
    """The messages as sent, as a JSON list of ``{role, content}`` with their contents redacted (pydantic-core's
    encoder: a fifth of ``json.dumps``'s time on a task's short request)."""
    if request is None:
        return None
    return pydantic_core.to_json([_message_json(m) for m in request]).decode()


def _message_json(message: Message) -> dict[str, Any]:
    """A message as stored: its text redacted, its attachments as references (name, type, size, digest)."""
    entry: dict[str, Any] = {"role": message.role, "content": redact(message.content)}
    if message.attachments:
        entry["attachments"] = [a.model_dump(mode="json", exclude_none=True) for a in message.attachments]
    return entry


def _stored_task(row: sqlite3.Row, *, with_request: bool = False) -> StoredTask:
    """A ``results`` row as a :class:`StoredTask`: ``parsed`` re-derived for json tasks, ``request`` loaded
    when asked (the row then has the column)."""
    output_format = OutputFormat(row["output_format"])
    result = ExecutionResult.model_validate_json(row["result"])
    if output_format is OutputFormat.JSON and result.succeeded and result.output is not None:
        from llm_abstractions.structured import parse_json_answer

        result.parsed = parse_json_answer(result.output, None)
    if with_request and row["request"] is not None:
        result.request = [Message.model_validate(message) for message in json.loads(row["request"])]
    return StoredTask(result, row["fingerprint"], output_format)


def _lease(run_id: str, row: Sequence[Any] | None) -> Lease | None:
    """The lease of a ``_SELECT_LEASE`` row; ``None`` when no session ever took one (or no such run)."""
    if row is None or row[0] is None:
        return None
    owner, pid, host, token, heartbeat, expires = row
    return Lease(
        run_id,
        owner,
        pid,
        host,
        token,
        datetime.fromisoformat(heartbeat),
        datetime.fromisoformat(expires) if expires else None,
    )


@dataclass(eq=False)
class _Fence:
    """The guard of every write of a session (:data:`~orchestration.store.writer.Guard`): in the write's
    transaction, the run's fencing token must still be the session's."""

    lease: Lease
    """The session's lease, as last renewed."""

    def __call__(self, connection: sqlite3.Connection) -> None:
        run_id, token = self.lease.run_id, self.lease.token
        row = connection.execute("SELECT lease_token FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or row[0] != token:
            raise LeaseLostError(run_id, token, _lease(run_id, connection.execute(_SELECT_LEASE, (run_id,)).fetchone()))


_SELECT_VERSION = (
    "SELECT run_id, file, status, finished_at, sessions, lease_token,"
    " (SELECT MAX(seq) FROM events WHERE events.run_id = runs.run_id),"
    " (SELECT MAX(rowid) FROM results WHERE results.run_id = runs.run_id),"
    " (SELECT COUNT(*) || ' ' || MAX(seq) || ' ' || MAX(requested_at) FROM gates"
    "  WHERE gates.run_id = runs.run_id AND decision IS NULL)"
    " FROM runs"
)
"""A run's id, then its version (:meth:`RunStore.run_version`): its row's changing columns and the newest of its
events, results and open gates, each read from an index."""


def _newest_runs(
    select: str, project: str | None, limit: int | None, status: RunStatus | None
) -> tuple[str, list[Any]]:
    """``select`` over the runs table, newest first, of ``project`` and with ``status`` when given, at most
    ``limit``."""
    sql = select
    conditions: list[str] = []
    params: list[Any] = []
    for column, value in (("project", project), ("status", status)):
        if value is not None:
            conditions.append(f"{column} = ?")
            params.append(str(value))
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += " ORDER BY started_at DESC, rowid DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return sql, params


def _location(file: Path | None) -> str | None:
    return str(file.absolute()) if file else None


def _run_record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        project=row["project"],
        project_hash=row["project_hash"],
        file=Path(row["file"]) if row["file"] else None,
        inputs=json.loads(row["inputs"]),
        task_ids=json.loads(row["task_ids"]),
        status=RunStatus(row["status"]),
        started_at=datetime.fromisoformat(row["started_at"]),
        finished_at=datetime.fromisoformat(row["finished_at"]) if row["finished_at"] else None,
        sessions=row["sessions"],
        agents_file=Path(row["agents_file"]) if row["agents_file"] else None,
        depends_on=json.loads(row["graph"]) if row["graph"] else {},
    )


class RunStore:
    """Runs and results in one SQLite file (created with its folder on first use).

    ``path`` defaults to ``$ORCHESTRATE_STORE`` or ``.orchestrate/runs.db``. One store
    may serve many runs; :meth:`close` commits what is queued and closes its connection.
    A session of a run holds the run's lease (see :mod:`orchestration.store.lease`) for ``lease_s``
    seconds (default ``$ORCHESTRATE_LEASE_S`` or 10) past its last heartbeat, renewed every ``heartbeat_s``
    (default a fifth of ``lease_s``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        lease_s: float | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self.lease_s = default_lease_s() if lease_s is None else lease_s
        self.heartbeat_s = self.lease_s / HEARTBEATS_PER_LEASE if heartbeat_s is None else heartbeat_s
        self._writer: SqliteWriter | None = None
        self._readers: dict[int, sqlite3.Connection] = {}
        """Each thread's reading connection (autocommit: a read sees what was committed when it began)."""
        self._readers_lock = threading.Lock()
        self._readers_pid = os.getpid()
        self._schema_ready = False
        """Whether the file's tables are up to date (checked on the first read: once per store)."""
        self._fences: dict[str, _Fence] = {}
        """The lease this store holds of each run it opened (until the run's end), as the guard of its writes."""

    @property
    def writer(self) -> SqliteWriter:
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = SqliteWriter(self.path, _setup)
        return self._writer

    # -- writing (from the event loop) -------------------------------------------------

    async def begin_run(
        self,
        run_id: str,
        *,
        project: str,
        project_hash: str,
        file: Path | None,
        inputs: Mapping[str, Any],
        task_ids: Sequence[str],
        agents_file: Path | None = None,
        depends_on: Mapping[str, Sequence[str]] | None = None,
    ) -> Lease:
        """Record a new run, or a new session of an existing one (status back to running), and take its lease.

        In one transaction: raise :class:`RunOwnedError` when another session's lease of the run has not
        expired; otherwise take it (an expired one is taken over) with the next fencing token, and write the
        session's ``run_started`` event. The lease is released by :meth:`end_run`; :meth:`heartbeat` renews it
        meanwhile. ``depends_on``: each task's dependencies (task ids), kept as :attr:`RunRecord.depends_on`.
        """
        owner, pid, host = secrets.token_hex(8), os.getpid(), this_host()
        values = (
            run_id,
            project,
            project_hash,
            _location(file),
            _json(dict(inputs)),
            json.dumps(list(task_ids)),
            RunStatus.RUNNING,
            _location(agents_file),
            json.dumps({task: list(parents) for task, parents in depends_on.items()}) if depends_on else None,
        )

        def take(connection: sqlite3.Connection) -> Lease:
            now = utc_now()
            row = connection.execute(_SELECT_LEASE, (run_id,)).fetchone()
            held = _lease(run_id, row)
            if held is not None and not held.expired(now):
                raise RunOwnedError(held)
            token = (row[3] or 0) + 1 if row is not None else 1
            lease = Lease(run_id, owner, pid, host, token, now, now + timedelta(seconds=self.lease_s))
            assert lease.expires_at is not None
            connection.execute(
                "INSERT INTO runs (run_id, project, project_hash, file, inputs, task_ids, status, agents_file, graph,"
                " started_at, lease_owner, lease_pid, lease_host, lease_token, lease_heartbeat, lease_expires)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id) DO UPDATE SET project = excluded.project,"
                " project_hash = excluded.project_hash, file = excluded.file, inputs = excluded.inputs,"
                " task_ids = excluded.task_ids, status = excluded.status, finished_at = NULL,"
                " sessions = sessions + 1, agents_file = excluded.agents_file, graph = excluded.graph,"
                " lease_owner = excluded.lease_owner,"
                " lease_pid = excluded.lease_pid, lease_host = excluded.lease_host,"
                " lease_token = excluded.lease_token, lease_heartbeat = excluded.lease_heartbeat,"
                " lease_expires = excluded.lease_expires",
                (*values, now.isoformat(), owner, pid, host, token, now.isoformat(), lease.expires_at.isoformat()),
            )
            connection.execute(*boundary_statement(run_id, EventKind.RUN_STARTED, now.timestamp(), {}))
            return lease

        lease = self.writer.transaction(take)
        self._fences[run_id] = _Fence(lease)
        return lease

    async def renew(self, run_id: str) -> Lease:
        """Renew this store's lease of a run for another ``lease_s`` (with whatever is queued for the store);
        raise :class:`LeaseLostError` if another session took it over meanwhile."""
        fence = self._fences[run_id]
        now = utc_now()
        renewed = replace(fence.lease, heartbeat_at=now, expires_at=now + timedelta(seconds=self.lease_s))
        assert renewed.expires_at is not None
        statement = (
            "UPDATE runs SET lease_heartbeat = ?, lease_expires = ? WHERE run_id = ?",
            (now.isoformat(), renewed.expires_at.isoformat(), run_id),
        )
        await self.writer.write([statement], fence)
        fence.lease = renewed
        return renewed

    @asynccontextmanager
    async def heartbeat(self, run_id: str) -> AsyncIterator[None]:
        """Renew this store's lease of the run every ``heartbeat_s`` while the body runs (a task beside it: no
        cost per result). When renewing fails (:class:`LeaseLostError`: the lease was taken over; or the store
        failed), the body is cancelled and that error raised. Without a lease of the run, nothing is renewed."""
        if run_id not in self._fences:
            yield
            return
        failed: list[Exception] = []
        error: Exception | None = None
        async with anyio.create_task_group() as group:

            async def beat() -> None:
                while True:
                    await anyio.sleep(self.heartbeat_s)
                    try:
                        await self.renew(run_id)
                    except Exception as exc:  # raised below, once the body has stopped
                        failed.append(exc)
                        group.cancel_scope.cancel()
                        return

            group.start_soon(beat)
            try:
                yield
            except Exception as exc:  # raised as it is, not in the task group's exception group
                error = exc
            finally:
                group.cancel_scope.cancel()
        if error is not None:
            raise error
        if failed:
            raise failed[0]

    def lease(self, run_id: str) -> Lease | None:
        """The run's lease: who holds it, or held it last (released or expired: see :meth:`Lease.expired`);
        ``None`` when no session took one (a run recorded by an earlier version) or there is no such run."""
        with self._open() as connection:
            return _lease(run_id, connection.execute(_SELECT_LEASE, (run_id,)).fetchone())

    @staticmethod
    def _result_statement(
        run_id: str,
        result: ExecutionResult,
        fingerprint: str | None,
        output_format: OutputFormat,
        fence: _Fence | None,
    ) -> Statement:
        return (  # appended (replaced in stores made with a unique key on run and task)
            "INSERT OR REPLACE INTO results"
            " (run_id, task_id, status, fingerprint, output_format, result, request, lease_token)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                result.task_id,
                str(result.status),  # a StrEnum's str() is its value, without Enum's slower .value
                fingerprint,
                str(output_format),
                _result_json(result),
                _request_json(result.request),
                fence.lease.token if fence is not None else None,  # which session wrote it
            ),
        )

    async def record(
        self,
        run_id: str,
        result: ExecutionResult,
        fingerprint: str | None = None,
        output_format: OutputFormat = OutputFormat.TEXT,
        *,
        keep_answer: bool = False,
    ) -> None:
        """Write a task's final result and wait until it is committed (with the other writes of this loop turn);
        ``keep_answer``: keep its answer in the answer cache too, under ``result.cache.key``.

        Raise :class:`LeaseLostError` when the run's lease was taken over from this store."""
        fence = self._fences.get(run_id)
        statements = [self._result_statement(run_id, result, fingerprint, output_format, fence)]
        if keep_answer and result.cache is not None:
            statements.append(answers.put_statement(result.cache.key, result, run_id, utc_now()))
        await self.writer.commit(statements, fence)

    def record_nowait(
        self,
        run_id: str,
        result: ExecutionResult,
        fingerprint: str | None = None,
        output_format: OutputFormat = OutputFormat.TEXT,
        on_commit: OnCommit | None = None,
    ) -> None:
        """Queue a result for the next commit without waiting; ``on_commit(error)`` runs on this loop after it."""
        fence = self._fences.get(run_id)
        statement = self._result_statement(run_id, result, fingerprint, output_format, fence)
        self.writer.submit([statement], on_commit, fence)

    async def end_run(self, run_id: str, status: RunStatus) -> None:
        """Mark the run finished with ``status``, write the session's ``run_finished`` event and release the run's
        lease; everything queued before is committed with them. Raise :class:`LeaseLostError` when the lease was
        taken over (then nothing of it is written)."""
        fence = self._fences.pop(run_id, None)
        now = utc_now()
        finished = boundary_statement(run_id, EventKind.RUN_FINISHED, now.timestamp(), {"run_status": str(status)})
        if fence is None:  # a run this store did not open: its lease (if any) is not this store's to release
            sql = "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?"
            await self.writer.write([(sql, (status, now.isoformat(), run_id)), finished])
            return
        sql = "UPDATE runs SET status = ?, finished_at = ?, lease_expires = NULL WHERE run_id = ?"
        await self.writer.write([(sql, (status, now.isoformat(), run_id)), finished], fence)

    def record_event(self, event: RunEvent) -> None:
        """Queue ``event`` for the next commit of its run's writes (an :class:`~orchestration.events.EventBus`
        callback of the session running the run; ``run_started`` and ``run_finished`` are written by
        :meth:`begin_run` and :meth:`end_run`). Refused with the session's other writes once its lease was lost."""
        row = event_row(event)
        if row is not None:
            self.writer.append(INSERT_EVENT, row, self._fences.get(event.run_id))

    # -- budgets (:mod:`orchestration.budget`): each call's reservation, then what it spent ----

    async def reserve_spend(self, run_id: str, row: str, agent: str, usd: float, tokens: int) -> None:
        """Record a call's reservation, committed before the call is sent."""
        sql = (
            "INSERT INTO spend (run_id, row, agent, reserved_usd, reserved_tokens, settled, created_at)"
            " VALUES (?, ?, ?, ?, ?, 0, ?)"
        )
        await self.writer.commit([(sql, (run_id, row, agent, usd, tokens, utc_now().isoformat()))])

    def reserve_daily_spend(
        self, project: str, cap_usd: float, run_id: str, row: str, agent: str, usd: float, tokens: int
    ) -> tuple[bool, float]:
        """Record a call's reservation if it fits ``project``'s daily cap, with what every run of ``project`` spent
        this UTC day (settled calls at their actual spend, reservations whole), in one ``BEGIN IMMEDIATE``
        transaction: no other process can reserve in between. Whether it fitted, and the day's spend before it."""
        now = utc_now()

        def reserve(connection: sqlite3.Connection) -> tuple[bool, float]:
            (spent,) = connection.execute(
                "SELECT COALESCE(SUM(CASE WHEN s.settled THEN s.actual_usd ELSE s.reserved_usd END), 0)"
                " FROM spend AS s JOIN runs AS r ON r.run_id = s.run_id WHERE r.project = ? AND s.created_at >= ?",
                (project, now.date().isoformat()),
            ).fetchone()
            if spent + usd > cap_usd + 1e-12:
                return False, float(spent)
            connection.execute(
                "INSERT INTO spend (run_id, row, agent, reserved_usd, reserved_tokens, settled, created_at)"
                " VALUES (?, ?, ?, ?, ?, 0, ?)",
                (run_id, row, agent, usd, tokens, now.isoformat()),
            )
            return True, float(spent)

        return self.writer.transaction(reserve)

    def settle_spend(self, run_id: str, row: str, usd: float, tokens: int) -> None:
        """Record what the call of a reservation spent (with the next commit)."""
        sql = "UPDATE spend SET actual_usd = ?, actual_tokens = ?, settled = 1 WHERE run_id = ? AND row = ?"
        self.writer.submit([(sql, (usd, tokens, run_id, row))])

    def spent(self, run_id: str) -> dict[str, tuple[float, int]]:
        """What ``run_id`` spent, per agent and in all (key ``""``): settled calls at their actual spend,
        unsettled reservations (a call in flight when its session ended) whole."""
        if not self.path.exists():
            return {}
        with self._open() as connection:
            rows = connection.execute(
                "SELECT agent, SUM(CASE WHEN settled THEN actual_usd ELSE reserved_usd END),"
                " SUM(CASE WHEN settled THEN actual_tokens ELSE reserved_tokens END)"
                " FROM spend WHERE run_id = ? GROUP BY agent",
                (run_id,),
            ).fetchall()
        spent = {agent: (float(usd or 0.0), int(tokens or 0)) for agent, usd, tokens in rows}
        spent[""] = (sum(usd for usd, _ in spent.values()), sum(tokens for _, tokens in spent.values()))
        return spent

    # -- batch jobs (:mod:`.batches`): committed before they are submitted ----

    async def begin_batch(self, job: batches.StoredJob) -> None:
        """Commit ``job`` and its members before it is submitted (refused once this session lost the run's lease)."""
        await self.writer.commit(batches.job_statements(job), self._fences.get(job.run_id))

    async def batch_acknowledged(self, job: batches.StoredJob) -> None:
        """Commit the provider's id of ``job``."""
        await self.writer.commit([batches.acknowledged_statement(job)], self._fences.get(job.run_id))

    def batch_ended(self, job: batches.StoredJob) -> None:
        """Record that ``job`` was collected, cancelled or abandoned (with the next commit)."""
        self.writer.submit([batches.ended_statement(job)], None, self._fences.get(job.run_id))

    def open_batches(self, run_id: str) -> list[batches.StoredJob]:
        """The batch jobs of ``run_id`` whose results were not collected (a resumed run re-attaches to them)."""
        if not self.path.exists():
            return []
        with self._open() as connection:
            return batches.open_jobs(connection, run_id)

    # -- the answer cache (:mod:`.answers`): shared by every run of the store ----

    def answer_reader(self) -> answers.AnswerReader:
        """A lookup of kept answers by key, for one thread (one run), on a connection of its own."""
        return answers.AnswerReader(self.path)

    def count_hit(self, key: str, saved_usd: float | None) -> None:
        """Count a hit of ``key`` (and what it saved) with the next commit."""
        self.writer.submit([answers.hit_statement(key, saved_usd, utc_now())])

    def cache_stats(self) -> answers.CacheStats:
        if not self.path.exists():
            return answers.CacheStats(entries=0, bytes=0, hits=0, saved_usd=0.0)
        with self._open() as connection:
            return answers.stats(connection)

    def clear_cache(self, *, before: datetime | None = None, agent: str | None = None) -> int:
        """Delete kept answers (made before ``before``, of ``agent``, or all); how many were deleted."""
        if not self.path.exists():
            return 0
        return self.writer.transaction(lambda connection: answers.clear(connection, before=before, agent=agent))

    # -- review gates (:mod:`.gates`): from any thread or process, without the run's lease ----

    def request_gate(self, request: GateRequest) -> Gate:
        """Open a review gate, or get the stored one of the same run, task, stage and payload (unchanged: a resume
        after a crash shows the same gate). Raise :class:`LeaseLostError` when this store held the run's lease and
        another session took it over."""
        fence = self._fences.get(request.run_id)

        def open_or_get(connection: sqlite3.Connection) -> Gate:
            if fence is not None:
                fence(connection)
            return gates.request_gate(connection, request, utc_now())

        return self.writer.transaction(open_or_get)

    def open_gates(self, run_id: str | None = None) -> list[Gate]:
        """The undecided gates tasks wait on (of ``run_id``, or of every run), oldest first."""
        if not self.path.exists():
            return []
        with self._open() as connection:
            return gates.open_gates(connection, run_id)

    def gates_of(self, run_id: str, task_id: str) -> list[Gate]:
        """Every gate of a task, its current one last."""
        if not self.path.exists():
            return []
        with self._open() as connection:
            return gates.task_gates(connection, run_id, task_id)

    def decide(self, run_id: str, task_id: str, decision: Decision, *, stage: GateStage | None = None) -> Gate:
        """Record ``decision`` on the task's current gate (of ``stage`` if given) and return the gate as decided.

        First write wins: the same ``decision_id`` again returns the gate as it was decided; otherwise raise
        :class:`UnknownGateError` (no such gate), :class:`StaleGateError` (``decision.digest`` is not the current
        gate's), :class:`GateConflictError` (decided already, by a timeout too: a gate whose time is up gets its
        timeout's decision first) or :class:`GateError` (an edit the stage does not allow). All are ``ValueError``s.
        """
        if not self.path.exists():
            raise UnknownGateError(f"no run store at {self.path}")

        def decide(connection: sqlite3.Connection) -> Gate | GateConflictError:
            try:
                return gates.decide_gate(connection, run_id, task_id, decision, stage, utc_now())
            except GateConflictError as exc:  # raised once committed: it may have recorded a timeout
                return exc

        outcome = self.writer.transaction(decide)
        if isinstance(outcome, GateConflictError):
            raise outcome
        return outcome

    def note_reviewer(self, gate: Gate, verdict: Mapping[str, Any]) -> Gate:
        """Keep the reviewer agent's ``verdict`` on ``gate`` (a first verdict stays); return the gate as stored."""
        return self.writer.transaction(lambda connection: gates.note_reviewer(connection, gate, verdict))

    def expire_gates(self, now: datetime | None = None) -> list[Gate]:
        """Decide every open gate whose timeout passed (by ``now``, default the store's clock) with its
        ``on_timeout``, actor ``timeout``; return those gates. Any process may call it, for any run."""
        if not self.path.exists():
            return []
        now = now or utc_now()
        with self._open() as connection:  # read first: a page polling the reviews takes no write lock for nothing
            if not any(gate.expired(now) for gate in gates.open_gates(connection)):
                return []
        return self.writer.transaction(lambda connection: gates.expire_gates(connection, now))

    def close(self) -> None:
        """Commit what is queued and close the writing connection and the reading ones (call it outside a run;
        reading after it opens new ones)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with self._readers_lock:
            readers, self._readers = self._readers, {}
        for connection in readers.values():
            connection.close()

    # -- reading (anywhere), deleting (outside a run): a connection per thread ------------

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """This thread's reading connection (opened on its first read, the schema brought up to date on the store's
        first). A read costs its queries only: no connection to open, no schema to check."""
        if not self.path.exists():
            raise FileNotFoundError(f"no run store at {self.path}")
        if self._readers_pid != os.getpid():  # a forked child: its parent's connections are not its to use
            self._readers, self._readers_pid = {}, os.getpid()
        thread = threading.get_ident()
        connection = self._readers.get(thread)
        if connection is None:
            connection = connect(self.path, check_same_thread=False)  # closed by close(), from any thread
            connection.row_factory = sqlite3.Row
            try:
                if not self._schema_ready:
                    _setup(connection)
                    self._schema_ready = True
            except BaseException:
                connection.close()
                raise
            with self._readers_lock:
                self._readers[thread] = connection
        yield connection

    def list_runs(
        self, project: str | None = None, limit: int | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """Runs, newest first; only ``project``'s (and those with ``status``) when given. No store file means no
        runs."""
        if not self.path.exists():
            return []
        sql, params = _newest_runs("SELECT * FROM runs", project, limit, status)
        with self._open() as connection:
            return [_run_record(row) for row in connection.execute(sql, params)]

    def run_versions(
        self, project: str | None = None, limit: int | None = None, status: RunStatus | None = None
    ) -> dict[str, tuple[Any, ...]]:
        """:meth:`run_version` of the runs :meth:`list_runs` lists (newest first), by run id: nothing of a run's
        row is parsed."""
        if not self.path.exists():
            return {}
        sql, params = _newest_runs(_SELECT_VERSION, project, limit, status)
        with self._open() as connection:
            return {row[0]: tuple(row[1:]) for row in connection.execute(sql, params)}

    def resolve_run_id(self, ref: str) -> str:
        """The id of the run ``ref`` names: a run id, ``latest`` (the newest run) or a unique prefix of a run id.

        An exact id wins. Raise ``FileNotFoundError`` when there is no store file and
        :class:`UnknownRunError` when no run matches, or several do (the message lists them).
        """
        with self._open() as connection:
            if connection.execute("SELECT 1 FROM runs WHERE run_id = ?", (ref,)).fetchone():
                return ref
            newest_first = " ORDER BY started_at DESC, rowid DESC LIMIT ?"
            if ref == LATEST:
                rows = connection.execute("SELECT run_id FROM runs" + newest_first, (1,)).fetchall()
            else:  # 11 rows: enough to list 10 and say there are more
                rows = connection.execute(
                    "SELECT run_id FROM runs WHERE ? != '' AND substr(run_id, 1, ?) = ?" + newest_first,
                    (ref, len(ref), ref, 11),
                ).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise UnknownRunError(f"no runs in {self.path}" if ref == LATEST else f"no run '{ref}' in {self.path}")
        ids = ", ".join(row[0] for row in rows[:10]) + (", ..." if len(rows) > 10 else "")
        raise UnknownRunError(f"run '{ref}' is ambiguous in {self.path}: it matches {ids}")

    def get_run(self, run_id: str) -> RunRecord:
        """The run's row; raise :class:`UnknownRunError` (a ``KeyError``) when there is none."""
        with self._open() as connection:
            return self._run_row(connection, run_id)

    def run_version(self, run_id: str) -> tuple[Any, ...]:
        """A value that changes whenever the run's row, results, events or open review gates change (equal values
        read at two times: nothing of the run changed between them), its first item the run's file; cheap: read from
        the indexes. Raise :class:`UnknownRunError` when there is no such run."""
        with self._open() as connection:
            row = connection.execute(_SELECT_VERSION + " WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no run '{run_id}' in {self.path}")
        return tuple(row[1:])

    def run_status(self, run_id: str) -> RunStatus:
        """The run's status alone (nothing else of its row is read or parsed); raise :class:`UnknownRunError` when
        there is no such run."""
        with self._open() as connection:
            row = connection.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no run '{run_id}' in {self.path}")
        return RunStatus(row[0])

    def _run_row(self, connection: sqlite3.Connection, run_id: str) -> RunRecord:
        row = connection.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no run '{run_id}' in {self.path}")
        return _run_record(row)

    def load_run(self, run_id: str) -> StoredRun:
        """The run's row and every recorded result (``parsed`` re-derived for json tasks; ``request`` not
        loaded: see :meth:`load_task`)."""
        record = self.get_run(run_id)
        with self._open() as connection:
            rows = connection.execute(
                "SELECT task_id, fingerprint, output_format, result FROM results WHERE run_id = ? ORDER BY rowid",
                (run_id,),
            ).fetchall()
        return StoredRun(record, {row["task_id"]: _stored_task(row) for row in rows})  # a task's latest row wins

    def load_task(self, run_id: str, task_id: str) -> StoredTask | None:
        """The latest recorded result of one task of a run, its ``request`` included; ``None`` when it has none."""
        with self._open() as connection:
            row = connection.execute(
                "SELECT fingerprint, output_format, result, request FROM results WHERE run_id = ? AND task_id = ?"
                " ORDER BY rowid DESC LIMIT 1",
                (run_id, task_id),
            ).fetchone()
        return None if row is None else _stored_task(row, with_request=True)

    def poll(self, run_id: str, after: int = 0) -> tuple[RunRecord, list[tuple[int, StoredTask]]]:
        """The run's row, then the results recorded after result row ``after``: ``(row id, task)``, oldest first.

        For following a run another process executes: pass the last row id seen. The run's row
        is read first, so once it says the run ended the results returned complete the run.
        """
        with self._open() as connection:
            record = self._run_row(connection, run_id)
            rows = connection.execute(
                "SELECT rowid, task_id, fingerprint, output_format, result FROM results"
                " WHERE run_id = ? AND rowid > ? ORDER BY rowid",
                (run_id, after),
            ).fetchall()
        return record, [(row["rowid"], _stored_task(row)) for row in rows]

    def events(self, run_id: str | None = None, after: int = 0, limit: int | None = None) -> list[StoredEvent]:
        """The events recorded after sequence number ``after`` (of ``run_id``, or of every run), oldest first, at
        most ``limit``: pass the last ``seq`` seen to follow a run without gaps or repeats. No store, no events."""
        if not self.path.exists():
            return []
        with self._open() as connection:
            return read_events(connection, run_id, after, limit)

    def outcomes(self, run_ids: Sequence[str]) -> dict[str, list[tuple[str, ExecutionStatus, float | None]]]:
        """Every result recorded for these runs, by run, oldest first: ``(task id, status, cost in USD)`` (a task
        rerun in a later session has a row per session: its last is its result). Cheap: no result is parsed."""
        found: dict[str, list[tuple[str, ExecutionStatus, float | None]]] = {run_id: [] for run_id in run_ids}
        if not run_ids or not self.path.exists():
            return found
        marks = ", ".join("?" * len(found))
        with self._open() as connection:
            rows = connection.execute(
                "SELECT run_id, task_id, status, json_extract(result, '$.cost_usd') FROM results"
                f" WHERE run_id IN ({marks}) ORDER BY rowid",
                list(found),
            )
            for run_id, task_id, status, cost in rows:
                found[run_id].append((task_id, ExecutionStatus(status), cost))
        return found

    def load_results(self, run_id: str) -> dict[str, ExecutionResult]:
        """A run's results by task id, in task order."""
        return self.load_run(run_id).results()

    def task_durations(self, project: str) -> dict[str, float]:
        """Mean duration of each task fingerprint's successes in the newest run of ``project`` that has any.

        How long tasks took last time: the scheduler's first guess of how long they take now.
        No store file (or no such run) means nothing known.
        """
        if not self.path.exists():
            return {}
        with self._open() as connection:
            rows = connection.execute(
                "SELECT fingerprint, AVG(json_extract(result, '$.duration_s')) FROM results"
                " WHERE run_id = (SELECT run_id FROM runs WHERE project = ? AND EXISTS"
                " (SELECT 1 FROM results WHERE results.run_id = runs.run_id AND status = 'success')"
                " ORDER BY started_at DESC, rowid DESC LIMIT 1)"
                " AND status = 'success' AND fingerprint IS NOT NULL GROUP BY fingerprint",
                (project,),
            ).fetchall()
        return {fingerprint: duration for fingerprint, duration in rows if duration is not None}

    def output_tokens(self, project: str) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        """Output tokens of past successes: by task fingerprint (in ``project``'s runs) and by agent (in every run).

        What ``orchestrate plan`` expects of a task's answer. No store file means no history."""
        if not self.path.exists():
            return {}, {}
        by_task: dict[str, list[int]] = {}
        by_agent: dict[str, list[int]] = {}
        with self._open() as connection:
            rows = connection.execute(
                "SELECT runs.project, results.fingerprint, json_extract(results.result, '$.agent'),"
                " json_extract(results.result, '$.usage.output_tokens')"
                " FROM results JOIN runs ON runs.run_id = results.run_id"
                " WHERE results.status = 'success'"
                " AND json_extract(results.result, '$.usage.output_tokens') IS NOT NULL"
            )
            for row_project, fingerprint, agent, tokens in rows:
                if row_project == project and fingerprint is not None:
                    by_task.setdefault(fingerprint, []).append(int(tokens))
                if agent is not None:
                    by_agent.setdefault(agent, []).append(int(tokens))
        return by_task, by_agent

    def latest_unfinished(self, project: str) -> RunRecord | None:
        """The newest run of ``project`` that did not succeed as a whole, if any."""
        return next((run for run in self.list_runs(project) if not run.finished), None)

    def delete_runs(self, run_ids: Iterable[str]) -> None:
        """Remove these runs, their results, events, review gates, spend and batch jobs in one transaction, then
        give the space back (VACUUM)."""
        params = [(run_id,) for run_id in run_ids]
        with self._open() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany("DELETE FROM results WHERE run_id = ?", params)
                connection.executemany("DELETE FROM events WHERE run_id = ?", params)
                connection.executemany("DELETE FROM gates WHERE run_id = ?", params)
                connection.executemany("DELETE FROM spend WHERE run_id = ?", params)
                connection.executemany(
                    "DELETE FROM batch_members WHERE job_id IN (SELECT job_id FROM batch_jobs WHERE run_id = ?)", params
                )
                connection.executemany("DELETE FROM batch_jobs WHERE run_id = ?", params)
                connection.executemany("DELETE FROM runs WHERE run_id = ?", params)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file shrinks only once the log is copied

    def prune(
        self, *, keep: int | None = None, older_than: timedelta | None = None, project: str | None = None
    ) -> list[str]:
        """Delete the runs (only ``project``'s when given) outside the newest ``keep`` and started more than
        ``older_than`` ago (each limit that is given must hold); return their ids, newest first."""
        if keep is None and older_than is None:
            raise ValueError("prune needs keep or older_than")
        cutoff = utc_now() - older_than if older_than is not None else None
        doomed = [
            run.run_id for run in self.list_runs(project)[keep or 0 :] if cutoff is None or run.started_at < cutoff
        ]
        if doomed:
            self.delete_runs(doomed)
        return doomed

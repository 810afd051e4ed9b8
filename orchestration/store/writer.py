"""Group commit on the event loop: the writes of one loop turn share one SQLite transaction.

A write queued from the event loop is committed by a callback that runs once the
current turn of the loop is over, together with every other write queued in that
turn; the callback then tells each writer (``on_commit``, or the event a writer awaits).
A write may name a guard (:data:`Guard`), a check run once per commit inside its transaction:
a run's fencing token, say, checked once for every result of the group. Rows that commute with every other
write (a run's events: :meth:`SqliteWriter.append`) are inserted first, many rows a statement.
A commit never waits on a disk: in WAL mode with
``synchronous=NORMAL`` a commit only appends to the log (the log is synced at
checkpoints), and a killed process still loses nothing committed.

Why not a writer thread: a thread needs the GIL back after every SQLite call, and while
the loop is busy it gets it only at the interpreter's switch interval (5 ms), so each
commit waited milliseconds and a DAG's layers waited for their commits one after another.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import anyio

__all__ = ["Guard", "OnCommit", "SqliteWriter", "Statement", "connect"]

Statement = tuple[str, Sequence[Any]]

OnCommit = Callable[[BaseException | None], None]
"""Called on the event loop that queued a write once it is committed, with the error if it failed."""

Guard = Callable[[sqlite3.Connection], None]
"""A check a write needs to hold when it commits: run in the group commit's transaction before its statements
(once per commit, however many writes of the group name it); raising rolls the whole group back and hands the
error to every writer of it."""

_T = TypeVar("_T")


def connect(path: Path, *, check_same_thread: bool = True, writer: bool = False) -> sqlite3.Connection:
    """A connection with ``synchronous=NORMAL``; the ``writer``'s puts the file in WAL mode (kept in the file), so a
    killed process loses nothing committed. Readers never change the journal mode: switching it needs the file to
    itself, which a reader opened beside a busy writer would not get."""
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=check_same_thread)
    connection.execute("PRAGMA busy_timeout=30000")
    if writer:
        _use_wal(connection)
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _use_wal(connection: sqlite3.Connection, *, patience_s: float = 30.0) -> None:
    """Put the file in WAL mode (once per file: the mode is kept in it).

    SQLite does not wait for a busy file when it switches journal modes: a reader that opened a new
    file a moment before (another thread's run, ``orchestrate watch``) makes the switch fail with
    "database is locked", so it is tried again for up to ``patience_s``.
    """
    deadline = time.monotonic() + patience_s
    while connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


_ROWS_AT_ONCE = (128, 16, 4)
"""The sizes of the multi-row inserts of appended rows (few sizes: each statement is parsed once, then cached);
128 rows of up to 7 values stay under SQLite's oldest limit of 999 parameters."""


def _insert_rows(connection: sqlite3.Connection, sql: str, rows: list[Sequence[Any]]) -> None:
    """Insert ``rows`` by ``sql`` (an INSERT of one row, its VALUES tuple last), in order: by multi-row inserts of
    :data:`_ROWS_AT_ONCE` rows (about half the cost of a statement per row), the rest one by one."""
    done = 0
    for size in _ROWS_AT_ONCE:
        while len(rows) - done >= size:
            connection.execute(_rows_sql(sql, size), [value for row in rows[done : done + size] for value in row])
            done += size
    connection.executemany(sql, rows[done:])


@lru_cache(maxsize=64)
def _rows_sql(sql: str, count: int) -> str:
    """``sql`` inserting ``count`` rows at once."""
    values = sql[sql.rindex("VALUES") + len("VALUES") :].strip()
    return sql + f", {values}" * (count - 1)


CallSoon = Callable[[Callable[[], None]], object]
"""An event loop's "run this after the current turn"."""


def _call_soon() -> CallSoon | None:
    """The running event loop's "run this after the current turn", or ``None`` outside one."""
    try:  # asyncio's running loop is a C lookup, a fraction of a library detection by sniffio
        return asyncio.get_running_loop().call_soon
    except RuntimeError:
        pass
    try:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    except (ImportError, RuntimeError):
        return None


@dataclass(eq=False)
class _Batch:
    """The writes one thread queued for its next commit, and who waits for it."""

    statements: list[Statement] = field(default_factory=list)
    rows: dict[str, list[Sequence[Any]]] = field(default_factory=dict)
    """Appended rows by statement (:meth:`SqliteWriter.append`), inserted before ``statements``."""
    callbacks: list[OnCommit] = field(default_factory=list)
    guards: dict[Guard, None] = field(default_factory=dict)
    """The checks of its writes, each once (in the order first named)."""
    committed: anyio.Event | None = None
    """Set once the batch is committed (created by the first writer that waits for it)."""
    error: BaseException | None = None


class SqliteWriter:
    """Owns the one writing connection of a database file and commits queued writes in groups.

    Each thread (each event loop) has its own queue, so every ``on_commit`` runs on the loop
    of its write; batches from several threads are committed one at a time.
    """

    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None]) -> None:
        self.path = path
        self._setup = setup
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, _Batch] = {}
        """The batch each thread is filling."""
        self._scheduled: dict[int, CallSoon] = {}
        """The event loop of each thread that has a commit of that thread's batch scheduled."""
        self.commits = 0
        """Transactions committed (each may hold many writes)."""

    def _queue(
        self,
        statements: Sequence[Statement],
        on_commit: OnCommit | None,
        call_soon: CallSoon | None,
        guard: Guard | None = None,
    ) -> _Batch:
        """Add a write to this thread's batch; schedule the batch's commit on ``call_soon`` unless it is already."""
        thread = threading.get_ident()
        with self._lock:
            batch = self._pending.get(thread)
            if batch is None:
                batch = self._pending[thread] = _Batch()
            batch.statements.extend(statements)
            if on_commit is not None:
                batch.callbacks.append(on_commit)
            if guard is not None:
                batch.guards[guard] = None
            if call_soon is None or self._scheduled.get(thread) == call_soon:
                return batch  # outside a loop, or this loop commits the batch after this turn already
            self._scheduled[thread] = call_soon  # (a loop that ended before doing so is replaced)
        call_soon(self.commit_pending)
        return batch

    def append(self, sql: str, row: Sequence[Any], guard: Guard | None = None) -> None:
        """Queue the insert of ``row`` by ``sql`` (an INSERT of one row, its VALUES tuple last) for the commit after
        the current turn of this thread's event loop (at once outside one), as :meth:`submit` would, cheaper: for rows
        whose order matters only among the rows of the same ``sql`` (an event log), and that no other write depends
        on. The rows of a commit are inserted before its other statements, in the order appended, several rows a
        statement."""
        call_soon = _call_soon()
        thread = threading.get_ident()
        with self._lock:  # _queue's work, inlined: twice per task
            batch = self._pending.get(thread)
            if batch is None:
                batch = self._pending[thread] = _Batch()
            rows = batch.rows.get(sql)
            if rows is None:
                batch.rows[sql] = [row]
            else:
                rows.append(row)
            if guard is not None:
                batch.guards[guard] = None
            if call_soon is not None and self._scheduled.get(thread) == call_soon:
                return  # this loop commits the batch after this turn already
            if call_soon is not None:
                self._scheduled[thread] = call_soon
        if call_soon is None:
            self.commit_pending()
        else:
            call_soon(self.commit_pending)

    def submit(
        self, statements: Sequence[Statement], on_commit: OnCommit | None = None, guard: Guard | None = None
    ) -> None:
        """Queue a write, committed after the current turn of this thread's event loop (at once outside one).

        ``on_commit`` is then called on this event loop, with the error if the commit failed; ``guard`` is checked
        in the commit's transaction (see :data:`Guard`).
        """
        call_soon = _call_soon()
        self._queue(statements, on_commit, call_soon, guard)
        if call_soon is None:
            self.commit_pending()

    async def commit(self, statements: Sequence[Statement], guard: Guard | None = None) -> None:
        """Queue ``statements`` and wait until the group commit after this loop turn has made them durable.

        Raises what the database (or a guard of the group) raised. Cancelling the wait does not withdraw the write.
        """
        batch = self._queue(statements, None, _call_soon(), guard)
        if batch.committed is None:
            batch.committed = anyio.Event()
        await batch.committed.wait()
        if batch.error is not None:
            raise batch.error

    async def write(self, statements: Sequence[Statement], guard: Guard | None = None) -> None:
        """Commit ``statements`` now, with whatever this thread queued; raise what the database (or a guard) raised."""
        batch = self._queue(statements, None, None, guard)
        self.commit_pending()
        if batch.error is not None:
            raise batch.error

    async def flush(self) -> None:
        """Commit everything this thread queued so far."""
        await self.write(())

    def transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Commit what this thread queued, then run ``work`` on the writing connection in one ``BEGIN IMMEDIATE``
        transaction (reads and writes that no other writer can come between): committed when it returns, rolled
        back when it raises (what it raised is raised)."""
        self.commit_pending()
        with self._lock:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                value = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            self.commits += 1
        return value

    def commit_pending(self, thread: int | None = None) -> None:
        """Commit the batch of ``thread`` (this one by default) in one transaction, and tell its writers."""
        with self._lock:
            thread = threading.get_ident() if thread is None else thread
            self._scheduled.pop(thread, None)
            batch = self._pending.pop(thread, None)
            if batch is None:
                return
            batch.error = self._commit(batch.statements, batch.rows, batch.guards)
        for callback in batch.callbacks:
            callback(batch.error)
        if batch.committed is not None:
            batch.committed.set()

    def _commit(
        self, statements: list[Statement], rows: dict[str, list[Sequence[Any]]], guards: dict[Guard, None]
    ) -> Exception | None:
        if not statements and not rows:
            return None
        try:
            connection = self._connect()
        except (sqlite3.Error, OSError) as exc:
            return exc
        try:
            if len(statements) == 1 and not guards and not rows:  # one statement is one transaction: one step
                connection.execute(*statements[0])
            else:
                connection.execute("BEGIN IMMEDIATE")
                for guard in guards:
                    guard(connection)
                for sql, appended in rows.items():
                    _insert_rows(connection, sql, appended)
                for sql, group in groupby(statements, key=itemgetter(0)):  # runs of one statement: executemany
                    connection.executemany(sql, [params for _, params in group])
                connection.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # handed to every writer of the batch
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return exc
        return None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = connect(self.path, check_same_thread=False, writer=True)
            try:
                self._setup(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def close(self) -> None:
        """Commit what is queued and close the connection (call it outside a run)."""
        for thread in list(self._pending):
            self.commit_pending(thread)
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

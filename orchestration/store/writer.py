"""Group commit on the event loop: the writes of one loop turn share one SQLite transaction.

A write queued from the event loop is committed by a callback that runs once the
current turn of the loop is over, together with every other write queued in that
turn; the callback then tells each writer (``on_commit``). Committing a batch costs
about 4.5 µs per row here and never waits on a disk: in WAL mode with
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

__all__ = ["OnCommit", "SqliteWriter", "Statement", "connect"]

Statement = tuple[str, Sequence[Any]]

OnCommit = Callable[[BaseException | None], None]
"""Called on the event loop that queued a write once it is committed, with the error if it failed."""


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=NORMAL``: a killed process loses nothing committed."""
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=check_same_thread)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


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


@dataclass(eq=False, slots=True)
class _Write:
    statements: Sequence[Statement]
    on_commit: OnCommit | None


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
        self._pending: dict[int, list[_Write]] = {}
        """Writes queued by each thread and not committed yet."""
        self._scheduled: dict[int, CallSoon] = {}
        """The event loop of each thread that has a commit of that thread's queue scheduled."""
        self.commits = 0
        """Transactions committed (each may hold many writes)."""

    def submit(self, statements: Sequence[Statement], on_commit: OnCommit | None = None) -> None:
        """Queue a write, committed after the current turn of this thread's event loop (at once outside one).

        ``on_commit`` is then called on this event loop, with the error if the commit failed.
        """
        thread = threading.get_ident()
        call_soon = _call_soon()
        with self._lock:
            self._pending.setdefault(thread, []).append(_Write(statements, on_commit))
            if call_soon is not None:
                if self._scheduled.get(thread) == call_soon:  # this loop commits the queue after this turn
                    return
                self._scheduled[thread] = call_soon  # (a loop that ended before doing so is replaced)
        if call_soon is None:
            self.commit_pending()
        else:
            call_soon(self.commit_pending)

    async def commit(self, statements: Sequence[Statement]) -> None:
        """Queue ``statements`` and wait until the group commit after this loop turn has made them durable.

        Raises what the database raised. Cancelling the wait does not withdraw the write.
        """
        done = anyio.Event()
        failure: list[BaseException] = []

        def committed(error: BaseException | None) -> None:
            if error is not None:
                failure.append(error)
            done.set()

        self.submit(statements, committed)
        await done.wait()
        if failure:
            raise failure[0]

    async def write(self, statements: Sequence[Statement]) -> None:
        """Commit ``statements`` now, with whatever this thread queued; raise what the database raised."""
        failure: list[BaseException] = []

        def committed(error: BaseException | None) -> None:
            if error is not None:
                failure.append(error)

        with self._lock:
            self._pending.setdefault(threading.get_ident(), []).append(_Write(statements, committed))
        self.commit_pending()
        if failure:
            raise failure[0]

    async def flush(self) -> None:
        """Commit everything this thread queued so far."""
        await self.write(())

    def commit_pending(self, thread: int | None = None) -> None:
        """Commit the writes ``thread`` (this one by default) queued, in one transaction, and tell their writers."""
        with self._lock:
            thread = threading.get_ident() if thread is None else thread
            self._scheduled.pop(thread, None)
            batch = self._pending.pop(thread, [])
            if not batch:
                return
            error = self._commit([statement for write in batch for statement in write.statements])
        for write in batch:
            if write.on_commit is not None:
                write.on_commit(error)

    def _commit(self, statements: list[Statement]) -> Exception | None:
        try:
            connection = self._connect()
        except (sqlite3.Error, OSError) as exc:
            return exc
        try:
            if len(statements) == 1:  # one statement is one transaction: the common case costs one step
                connection.execute(*statements[0])
            elif statements:
                connection.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    connection.execute(sql, params)
                connection.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # handed to every writer of the batch
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return exc
        return None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = connect(self.path, check_same_thread=False)
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

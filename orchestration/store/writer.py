"""A dedicated SQLite writer thread with group commit.

Writes are queued from the event loop without blocking it; the thread takes every
queued write, runs them in one transaction, commits, and then wakes every waiter of
that batch with one non-blocking call into the event loop. So commits (about 0.5 ms each here)
never run on the loop, and concurrent tasks share a commit instead of queueing for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import anyio

__all__ = ["SqliteWriter", "Statement", "connect"]

Statement = tuple[str, Sequence[Any]]


_MAX_ROWS = 500
"""Rows per merged INSERT (SQLite allows 32,766 parameters per statement)."""


def _merged(statements: Sequence[Statement]) -> list[Statement]:
    """Consecutive runs of one ``INSERT ... VALUES (?, ...)`` merged into multi-row INSERTs.

    Each sqlite3 call releases and retakes the GIL, and a busy event loop makes every
    retake wait; so a batch becomes as few statements as possible.
    """
    merged: list[Statement] = []
    for sql, group in groupby(statements, key=itemgetter(0)):
        rows = [params for _, params in group]
        head, values, placeholders = sql.rpartition(" VALUES ")
        if not (values and sql.startswith("INSERT") and placeholders.startswith("(")) or len(rows) == 1:
            merged.extend((sql, params) for params in rows)
            continue
        for first in range(0, len(rows), _MAX_ROWS):
            chunk = rows[first : first + _MAX_ROWS]
            merged.append((head + values + ", ".join([placeholders] * len(chunk)), [v for row in chunk for v in row]))
    return merged


def _set_all(events: list[anyio.Event]) -> None:
    for event in events:
        event.set()


def connect(path: Path, *, check_same_thread: bool = True) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=NORMAL``: a killed process loses nothing committed."""
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=check_same_thread)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


CallSoon = Callable[[Callable[[], None]], object]
"""Schedules a callback on an event loop from another thread, without waiting."""


def _call_soon_threadsafe() -> CallSoon:
    """The running event loop's non-blocking "run this soon" entry for other threads."""
    try:  # asyncio's running loop is a C lookup, a fraction of a library detection by sniffio
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # no asyncio loop runs in this thread: trio does
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


@dataclass(eq=False)
class _Write:
    statements: Sequence[Statement]
    done: anyio.Event | None = None
    call_soon: CallSoon | None = None
    error: BaseException | None = field(default=None)


class SqliteWriter:
    """Owns the one writing connection of a database file, on its own thread."""

    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None]) -> None:
        self.path = path
        self._setup = setup
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.commits = 0
        """Transactions committed (each may hold many writes)."""

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    ready = threading.Event()
                    failure: list[BaseException] = []
                    self._thread = threading.Thread(
                        target=self._main, args=(ready, failure), name="orchestrate-store", daemon=True
                    )
                    self._thread.start()
                    ready.wait()
                    if failure:
                        self._thread = None
                        raise failure[0]

    def submit(self, statements: Sequence[Statement]) -> None:
        """Queue a write without waiting for it (it is committed with the next batch)."""
        self._ensure_thread()
        self._queue.put(_Write(statements))

    async def write(self, statements: Sequence[Statement]) -> None:
        """Queue a write and wait until it is committed; raise what the database raised."""
        self._ensure_thread()
        done = anyio.Event()
        item = _Write(statements, done, _call_soon_threadsafe())
        self._queue.put(item)
        try:
            await done.wait()
        except anyio.get_cancelled_exc_class():  # a commit in progress finishes; so does the wait for it
            with anyio.CancelScope(shield=True):
                await done.wait()
            raise
        if item.error is not None:
            raise item.error

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self.write(())

    def close(self) -> None:
        """Commit what is queued and stop the thread. Call it where no waiter is pending."""
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join()
            self._thread = None

    def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            connection = connect(self.path)
            self._setup(connection)
        except BaseException as exc:  # reported to the thread that started us
            failure.append(exc)
            ready.set()
            return
        ready.set()
        try:
            running = True
            while running:
                batch = [self._queue.get()]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                running = None not in batch
                self._commit(connection, [w for w in batch if w is not None])
        finally:
            connection.close()

    def _commit(self, connection: sqlite3.Connection, batch: list[_Write]) -> None:
        error: BaseException | None = None
        merged = _merged([statement for write in batch for statement in write.statements])
        try:
            if len(merged) == 1:  # one statement is one transaction: the common case costs one step
                connection.execute(*merged[0])
            elif merged:
                connection.execute("BEGIN IMMEDIATE")
                for sql, params in merged:
                    connection.execute(sql, params)
                connection.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # handed to every waiter of the batch
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            error = exc
        waiting: dict[CallSoon, list[anyio.Event]] = {}
        for write in batch:
            write.error = error
            if write.done is not None and write.call_soon is not None:
                waiting.setdefault(write.call_soon, []).append(write.done)
        for call_soon, events in waiting.items():
            with contextlib.suppress(RuntimeError):  # that event loop is gone: nobody waits any more
                call_soon(partial(_set_all, events))

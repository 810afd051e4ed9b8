"""The answer cache in the run store: a model's answer to a request, kept under the request's key.

One row per key (:func:`orchestration.answer_cache.request_key`): the answer as the task's result had it
(output, usage, cost, finish reason, who answered), the run and task whose call made it, and how often it was
served since and what that saved. Rows are written in the commit of the result they come from, and replaced
by a ``refresh``. Only complete answers are kept (:mod:`orchestration.answer_cache` decides which).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestration.models import ExecutionResult
from orchestration.store.codec import to_json
from orchestration.store.writer import connect

__all__ = [
    "ANSWERS_SCHEMA",
    "AnswerReader",
    "CacheStats",
    "CachedAnswer",
    "clear",
    "hit_statement",
    "lookup",
    "put_statement",
    "stats",
]

ANSWERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    agent TEXT,
    provider TEXT,
    model TEXT,
    answer TEXT NOT NULL,
    run_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0,
    saved_usd REAL NOT NULL DEFAULT 0,
    last_hit_at TEXT
);
"""

Statement = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class CachedAnswer:
    """A kept answer and where it came from."""

    key: str
    answer: dict[str, Any]
    """``output``, ``usage``, ``cost_usd``, ``finish_reason``, ``agent``, ``provider``, ``model``."""
    run_id: str
    task_id: str


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    """The size of the kept answers' JSON."""
    hits: int
    saved_usd: float


def put_statement(key: str, result: ExecutionResult, run_id: str, created_at: datetime) -> Statement:
    """The statement that keeps ``result``'s answer under ``key`` (replacing a kept one)."""
    answer = {
        "output": result.output,
        "usage": result.usage.model_dump(mode="json") if result.usage is not None else None,
        "cost_usd": result.cost_usd,
        "finish_reason": result.finish_reason,
        "agent": result.agent,
        "provider": result.provider,
        "model": result.model,
    }
    return (
        "INSERT OR REPLACE INTO answers (key, agent, provider, model, answer, run_id, task_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key,
            result.agent,
            result.provider,
            result.model,
            to_json(answer),
            run_id,
            result.task_id,
            created_at.isoformat(),
        ),
    )


def hit_statement(key: str, saved_usd: float | None, at: datetime) -> Statement:
    """The statement that counts a hit of ``key`` (and what it saved)."""
    return (
        "UPDATE answers SET hits = hits + 1, saved_usd = saved_usd + ?, last_hit_at = ? WHERE key = ?",
        (saved_usd or 0.0, at.isoformat(), key),
    )


def lookup(connection: sqlite3.Connection, key: str) -> CachedAnswer | None:
    row = connection.execute("SELECT answer, run_id, task_id FROM answers WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    return CachedAnswer(key=key, answer=json.loads(row[0]), run_id=row[1], task_id=row[2])


class AnswerReader:
    """Looks kept answers up by key on a connection of its own (for one thread), opened on first use.

    The store's schema is in place already (the run that reads was opened by its writer), so the connection is a
    plain one: no setup per lookup."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None

    def __call__(self, key: str) -> CachedAnswer | None:
        if self._connection is None:
            self._connection = connect(self._path)
        return lookup(self._connection, key)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def stats(connection: sqlite3.Connection) -> CacheStats:
    entries, size, hits, saved = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(answer)), 0), COALESCE(SUM(hits), 0), COALESCE(SUM(saved_usd), 0)"
        " FROM answers"
    ).fetchone()
    return CacheStats(entries=entries, bytes=size, hits=hits, saved_usd=saved)


def clear(connection: sqlite3.Connection, *, before: datetime | None = None, agent: str | None = None) -> int:
    """Delete kept answers (made before ``before``, of ``agent``, or all); how many were deleted."""
    conditions, params = [], []
    if before is not None:
        conditions.append("created_at < ?")
        params.append(before.isoformat())
    if agent is not None:
        conditions.append("agent = ?")
        params.append(agent)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return connection.execute(f"DELETE FROM answers{where}", params).rowcount

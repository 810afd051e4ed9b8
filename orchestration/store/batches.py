"""The ``batch_jobs`` and ``batch_members`` tables of the run store: each batch job of a run and which task each of
its requests belongs to, committed before the job is submitted (:mod:`orchestration.batching`).

A job's row is written ``submitting`` with its members; once the provider acknowledged it, its id is added
(``submitted``); once its results were collected (or it was given up), it is ``collected``, ``cancelled`` or
``abandoned``. A resumed run re-attaches to the jobs of its run still ``submitting`` or ``submitted``, and to the
``collected`` ones with a member whose task has no success recorded (a crash after the job was collected, before
its tasks' results were committed: the answers are read again, not asked again).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import datetime

from orchestration.store.writer import Statement

__all__ = [
    "BATCHES_SCHEMA",
    "OPEN",
    "StoredJob",
    "acknowledged_statement",
    "ended_statement",
    "job_statements",
    "open_jobs",
]

BATCHES_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    provider TEXT NOT NULL,
    batch_id TEXT,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    submitted_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS batch_jobs_by_run ON batch_jobs (run_id, state);
CREATE TABLE IF NOT EXISTS batch_members (
    job_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (job_id, custom_id)
);
"""

OPEN = ("submitting", "submitted")
"""States of a job whose results were not collected yet."""


@dataclass
class StoredJob:
    """One batch job of a run."""

    job_id: str
    """Ours: the label it is submitted with (the provider's metadata, where it keeps one)."""
    run_id: str
    agent: str
    provider: str
    created_at: datetime
    members: dict[str, str] = field(default_factory=dict)
    """Task id by custom id."""
    digests: dict[str, str] = field(default_factory=dict)
    """The digest of each request (:attr:`~llm_abstractions.batch.BatchLine.digest`) by custom id: a resumed task
    takes a job's answer only for the request it sends now."""
    batch_id: str | None = None
    """The provider's id, once it acknowledged the job."""
    state: str = "submitting"
    submitted_at: datetime | None = None
    finished_at: datetime | None = None


def job_statements(job: StoredJob) -> list[Statement]:
    """The inserts of a job about to be submitted, with its members."""
    statements: list[Statement] = [
        (
            "INSERT INTO batch_jobs (job_id, run_id, agent, provider, state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (job.job_id, job.run_id, job.agent, job.provider, job.state, job.created_at.isoformat()),
        )
    ]
    statements += [
        (
            "INSERT INTO batch_members (job_id, custom_id, task_id, digest) VALUES (?, ?, ?, ?)",
            (job.job_id, custom_id, task_id, job.digests[custom_id]),
        )
        for custom_id, task_id in job.members.items()
    ]
    return statements


def acknowledged_statement(job: StoredJob) -> Statement:
    """The provider acknowledged ``job`` (its ``batch_id`` and ``submitted_at`` set)."""
    submitted = job.submitted_at.isoformat() if job.submitted_at else None
    return (
        "UPDATE batch_jobs SET batch_id = ?, state = 'submitted', submitted_at = ? WHERE job_id = ?",
        (job.batch_id, submitted, job.job_id),
    )


def ended_statement(job: StoredJob) -> Statement:
    """``job`` left the open states (its ``state`` and ``finished_at`` set)."""
    finished = job.finished_at.isoformat() if job.finished_at else None
    return ("UPDATE batch_jobs SET state = ?, finished_at = ? WHERE job_id = ?", (job.state, finished, job.job_id))


def open_jobs(connection: sqlite3.Connection, run_id: str) -> list[StoredJob]:
    """The jobs of ``run_id`` whose results were not collected, or were but did not all reach their tasks' results
    (a member's task has no success recorded), oldest first, with their members."""
    rows = connection.execute(
        "SELECT job_id, agent, provider, batch_id, state, created_at, submitted_at FROM batch_jobs j"
        " WHERE run_id = ? AND (state IN (?, ?) OR (state = 'collected' AND EXISTS ("
        "  SELECT 1 FROM batch_members m WHERE m.job_id = j.job_id AND NOT EXISTS ("
        "   SELECT 1 FROM results r WHERE r.run_id = j.run_id AND r.task_id = m.task_id AND r.status = 'success'))))"
        " ORDER BY created_at",
        (run_id, *OPEN),
    ).fetchall()
    jobs = []
    for job_id, agent, provider, batch_id, state, created_at, submitted_at in rows:
        members = connection.execute(
            "SELECT custom_id, task_id, digest FROM batch_members WHERE job_id = ?", (job_id,)
        ).fetchall()
        jobs.append(
            StoredJob(
                job_id,
                run_id,
                agent,
                provider,
                datetime.fromisoformat(created_at),
                {custom_id: task_id for custom_id, task_id, _ in members},
                {custom_id: digest for custom_id, _, digest in members},
                batch_id,
                state,
                datetime.fromisoformat(submitted_at) if submitted_at else None,
            )
        )
    return jobs

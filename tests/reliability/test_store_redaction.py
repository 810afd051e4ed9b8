"""The run store redacts what it writes: no secret reaches any column of the SQLite file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from llm_abstractions import register_secret
from llm_abstractions.redaction import REDACTED, redact_value
from orchestration import ExecutionResult, ExecutionStatus
from orchestration.models import ErrorInfo
from orchestration.store import RunStore

SECRET = "QK7-walnut-3319-registered-only"
"""Matches none of the generic credential patterns: only its registration can redact it."""
SK_KEY = "sk-proj-STOREKEY0123456789abcdef"
"""An OpenAI-shaped key, never registered."""


def test_redact_value_walks_mappings_sequences_and_exceptions() -> None:
    register_secret(SECRET)
    value = {SECRET: [SK_KEY, (1, f"x {SECRET}")], 2: None, "error": ValueError(f"bad {SK_KEY}")}
    assert redact_value(value) == {
        REDACTED: [REDACTED, [1, f"x {REDACTED}"]],
        "2": None,
        "error": f"ValueError: bad {REDACTED}",
    }


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    """Every row of both tables, read straight from the file."""
    with closing(sqlite3.connect(path)) as connection:
        return [
            *connection.execute("SELECT * FROM runs").fetchall(),
            *connection.execute("SELECT * FROM results").fetchall(),
        ]


async def test_secrets_never_reach_a_column(tmp_path: Path) -> None:
    register_secret(SECRET)
    store = RunStore(tmp_path / "runs.db")
    inputs = {"note": f"use {SECRET}", SECRET: [SK_KEY, {"nested": f"key={SK_KEY}"}]}
    await store.begin_run("r", project="p", project_hash="h", file=None, inputs=inputs, task_ids=["ok", "bad"])
    leaked = f"answer with {SECRET} and {SK_KEY}"
    await store.record("r", ExecutionResult(task_id="ok", status=ExecutionStatus.SUCCESS, output=leaked))
    error = ErrorInfo(type="authentication", message=f"refused {SECRET} / {SK_KEY}")
    store.record_nowait("r", ExecutionResult(task_id="bad", status=ExecutionStatus.FAILED, output=leaked, error=error))
    store.close()

    rows = raw_rows(store.path)
    assert len(rows) == 3
    for row in rows:
        for column in row:
            assert SECRET not in str(column) and SK_KEY not in str(column), row
    assert store.get_run("r").inputs == {"note": f"use {REDACTED}", REDACTED: [REDACTED, {"nested": f"key={REDACTED}"}]}
    results = store.load_results("r")
    assert results["ok"].output == f"answer with {REDACTED} and {REDACTED}"
    bad = results["bad"].error
    assert bad is not None and bad.message == f"refused {REDACTED} / {REDACTED}"  # the rest of the message stays

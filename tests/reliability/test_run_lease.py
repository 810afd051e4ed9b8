"""One owner per run: the run's lease in the store, its heartbeat, fencing tokens, and the CLI's refusal.

The cross-process tests start real ``orchestrate`` processes against the fake provider server and
wait on what they can observe (a request arriving, a lease row, a process exit), never on a sleep.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from orchestration import ExecutionResult, ExecutionStatus, ProjectOrchestrator, ProjectSpec, RunEvent
from orchestration.cli.app import app
from orchestration.models import utc_now
from orchestration.store import LeaseLostError, RunOwnedError, RunStatus, RunStore, fingerprints
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply, Response
from tests.reliability.doubles import Scripts
from tests.reliability.fault_plan import last_user_text
from tests.reliability.processes import REPO, kill_9, orchestrate
from tests.reliability.projects import gpt_project

__all__ = ["fake_server"]

HOST = socket.gethostname()


def project_file(tmp_path: Path, server: FakeProviderServer, tasks: list[str]) -> Path:
    """A project of one gpt agent on the fake server; ``tasks`` are lines of the task list."""
    lines = ["name: leased", "defaults: {agent: llm}", "tasks:", *tasks]
    return gpt_project(tmp_path / "leased.yaml", server, *lines, agent="timeout_s: 60, retry: {retries: 0}")


def orchestrate_logged(
    processes: list[subprocess.Popen[str]], log: Path, *args: str, lease_s: str = "10"
) -> subprocess.Popen[str]:
    """An ``orchestrate`` process; its stderr goes to ``log``."""
    with log.open("w") as stderr:
        process = orchestrate(*args, lease_s=lease_s, stderr=stderr)
    processes.append(process)
    return process


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def poll(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms), failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def result_rows(path: Path, run_id: str) -> list[tuple[str, str, int | None]]:
    """``(task, status, lease token)`` of every result row of a run, oldest first."""
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute(
            "SELECT task_id, status, lease_token FROM results WHERE run_id = ? ORDER BY rowid", (run_id,)
        ).fetchall()
    return [tuple(row) for row in rows]


def test_of_two_processes_resuming_one_run_one_is_refused(
    fake_server: FakeProviderServer, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    release = threading.Event()
    asked: Counter[str] = Counter()

    def answer(request: RecordedRequest) -> Response:
        text = last_user_text(request)
        asked[text] += 1
        if text == "task b" and asked[text] == 1:
            return Fault.bad_request()  # the first run fails b: a run to resume
        if text == "task b":  # the resume's b waits for the test (this blocks the server's loop meanwhile)
            release.wait(timeout=60)
        return Reply()

    fake_server.handler = answer
    project = project_file(
        tmp_path, fake_server, ["  - {id: a, description: 'task a'}", "  - {id: b, description: 'task b'}"]
    )
    store = str(tmp_path / "runs.db")
    assert invoke("run", str(project), "--run-id", "r1", "--store", store, "-q")[0] == 1

    try:
        first = orchestrate_logged(processes, tmp_path / "first.log", "resume", "r1", "--store", store)
        fake_server.wait_for_requests(3, timeout=30)  # the first resume runs b: it holds the lease
        second = subprocess.run(
            [sys.executable, "-m", "orchestration", "run", str(project), "--resume", "--store", store, "-q"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert f"run 'r1' is being run by pid {first.pid} on host {HOST}: its lease expires at" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        release.set()
    assert first.wait(timeout=60) == 0, (tmp_path / "first.log").read_text()

    run = RunStore(store)
    record = run.get_run("r1")
    assert record.status is RunStatus.SUCCESS and record.sessions == 2  # the refused resume left no session
    assert {t: r.output for t, r in run.load_results("r1").items()} == {"a": "echo: task a", "b": "echo: task b"}
    assert asked == {"task a": 1, "task b": 2}
    lease = run.lease("r1")
    assert lease is not None and lease.pid == first.pid and lease.token == 2 and lease.expired()


CHAIN = [
    "  - {id: t0, description: 'task 0'}",
    "  - {id: t1, description: 'task 1', depends_on: [t0]}",
    "  - {id: t2, description: 'task 2', depends_on: [t1]}",
    "  - {id: t3, description: 'task 3', depends_on: [t2]}",
]


def test_a_killed_owner_holds_its_run_until_its_lease_expires_then_a_resume_takes_over(
    fake_server: FakeProviderServer, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    asked: Counter[str] = Counter()

    def answer(request: RecordedRequest) -> Response:
        text = last_user_text(request)
        asked[text] += 1
        return Reply(delay_s=60) if text == "task 2" and asked[text] == 1 else Reply()  # in flight at the kill

    fake_server.handler = answer
    project = project_file(tmp_path, fake_server, CHAIN)
    path = tmp_path / "runs.db"
    store = RunStore(path)
    owner = orchestrate_logged(
        processes, tmp_path / "owner.log", "run", str(project), "--run-id", "r", "--store", str(path), lease_s="2"
    )
    fake_server.wait_for_requests(3, timeout=30)  # t0 and t1 are committed (t2 starts only then)
    kill_9(owner)

    lease = store.lease("r")
    assert lease is not None and lease.pid == owner.pid and not lease.expired()
    code, output = invoke("resume", "r", "--store", str(path))  # at once: the lease has not expired
    assert code == 2 and f"run 'r' is being run by pid {owner.pid} on host {HOST}" in output, output
    assert "Traceback" not in output

    poll(lambda: store.lease("r").expired(utc_now()), "the dead owner's lease expired")  # type: ignore[union-attr]
    code, output = invoke("resume", "r", "--store", str(path))  # takes the run over
    assert code == 0, output

    record = store.get_run("r")
    assert record.status is RunStatus.SUCCESS and record.sessions == 2
    results = store.load_results("r")
    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values()) and len(results) == 4
    # what the dead owner committed stayed, and was neither run nor written again; t2 was in flight
    assert asked == {"task 0": 1, "task 1": 1, "task 2": 2, "task 3": 1}
    assert result_rows(path, "r") == [
        ("t0", "success", 1),
        ("t1", "success", 1),
        ("t2", "success", 2),
        ("t3", "success", 2),
    ]


DIAMOND: list[dict[str, Any]] = [
    {"id": "a", "description": "a"},
    {"id": "b", "description": "b <{{ tasks.a.output }}>", "depends_on": ["a"]},
]
AGENTS = {"s": {"type": "scripted", "retry": {"initial_backoff_s": 0.001, "max_backoff_s": 0.001}}}


def orchestrator(store: RunStore, tasks: list[dict[str, Any]] = DIAMOND) -> ProjectOrchestrator:
    data = {"name": "leased", "agents": AGENTS, "defaults": {"agent": "s", "retries": 0}, "tasks": tasks}
    return ProjectOrchestrator(ProjectSpec.model_validate(data), store=store)


async def wait_for(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    """:func:`poll` on the event loop."""
    deadline = anyio.current_time() + timeout_s
    while not condition():
        assert anyio.current_time() < deadline, f"timed out waiting until {what}"
        await anyio.sleep(0.005)


async def test_a_session_whose_lease_was_taken_over_cannot_write(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    script = scripts["s"]
    gate = anyio.Event()
    orch = orchestrator(store)

    def hold_b(event: RunEvent) -> None:
        if event.kind == "task_succeeded" and event.task_id == "a":
            script.gate = gate  # b's call waits

    orch.on_event(hold_b)
    successor = RunStore(store.path)

    async def take_over_while_b_runs() -> None:
        await wait_for(lambda: len(script.calls) == 2 and script.running == 1, "b waits")
        with closing(sqlite3.connect(store.path)) as connection, connection:  # the owner stopped renewing long ago
            connection.execute("UPDATE runs SET lease_expires = '2000-01-01T00:00:00+00:00' WHERE run_id = 'r'")
        lease = await successor.begin_run("r", project="leased", project_hash="h", file=None, inputs={}, task_ids=[])
        assert lease.token == 2
        await successor.record("r", ExecutionResult(task_id="b", status=ExecutionStatus.SUCCESS, output="theirs"))
        gate.set()

    async with anyio.create_task_group() as group:
        group.start_soon(take_over_while_b_runs)
        with pytest.raises(LeaseLostError) as caught:
            await orch.run(run_id="r")
    message = str(caught.value)
    assert "run 'r': this session" in message and f"was taken over by pid {os.getpid()} on host {HOST}" in message

    assert orch.results["b"].output == "ok"  # the answer the old owner could not write
    assert result_rows(store.path, "r") == [("a", "success", 1), ("b", "success", 2)]  # its b was refused
    stored = store.load_run("r")
    assert stored.tasks["b"].result.output == "theirs" and stored.tasks["a"].result.output == "ok"
    record = stored.record
    assert record.status is RunStatus.RUNNING and record.finished_at is None  # the old owner's end was refused
    await successor.end_run("r", RunStatus.SUCCESS)
    assert store.get_run("r").status is RunStatus.SUCCESS
    successor.close()
    store.close()


async def heartbeat_then_release(scripts: Scripts, path: Path) -> None:
    store = RunStore(path, lease_s=0.5)  # renewed every 0.1 s
    script = scripts["s"]
    script.gate = gate = anyio.Event()
    tasks = [{"id": "x", "description": "x"}]

    async def watch_the_lease() -> None:
        await wait_for(lambda: script.running == 1, "x runs")
        first = store.lease("r")
        assert first is not None and first.expires_at is not None and not first.expired()
        assert (first.pid, first.host, first.token) == (os.getpid(), HOST, 1)
        await wait_for(lambda: store.lease("r").expires_at > first.expires_at, "the lease is renewed")  # type: ignore[operator, union-attr]
        with pytest.raises(RunOwnedError, match=f"run 'r' is being run by pid {os.getpid()} on host {HOST}"):
            await orchestrator(RunStore(path), tasks).resume("r")  # a second session, even in this process
        gate.set()

    async with anyio.create_task_group() as group:
        group.start_soon(watch_the_lease)
        results = await orchestrator(store, tasks).run(run_id="r")
    assert results["x"].succeeded
    released = store.lease("r")
    assert released is not None and released.expires_at is None and released.expired()

    script.gate = None
    again = RunStore(path, lease_s=60)
    resumed = await orchestrator(again, tasks).resume("r")  # at once: the lease was released
    assert resumed["x"].succeeded and again.lease("r").token == 2  # type: ignore[union-attr]
    assert store.get_run("r").sessions == 2  # the refused session left none
    again.close()
    store.close()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_heartbeat_renews_the_lease_and_the_end_releases_it(scripts: Scripts, tmp_path: Path, backend: str) -> None:
    anyio.run(partial(heartbeat_then_release, scripts, tmp_path / "runs.db"), backend=backend)


async def test_a_store_from_before_leases_opens_and_runs(scripts: Scripts, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    orch = orchestrator(RunStore(path))
    prints = fingerprints(orch.validate())
    done = ExecutionResult(task_id="a", status=ExecutionStatus.SUCCESS, output="A").model_dump_json()
    with closing(sqlite3.connect(path)) as connection, connection:  # the schema before runs had owners
        connection.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, project_hash TEXT NOT NULL,"
            " file TEXT, inputs TEXT NOT NULL, task_ids TEXT NOT NULL, status TEXT NOT NULL,"
            " started_at TEXT NOT NULL, finished_at TEXT, sessions INTEGER NOT NULL DEFAULT 1, agents_file TEXT)"
        )
        connection.execute(
            "CREATE TABLE results (run_id TEXT NOT NULL, task_id TEXT NOT NULL, status TEXT NOT NULL,"
            " fingerprint TEXT, output_format TEXT NOT NULL, result TEXT NOT NULL, request TEXT)"
        )
        connection.execute(
            "INSERT INTO runs VALUES ('old', 'leased', 'h', NULL, '{}', '[\"a\", \"b\"]', 'failed',"
            " '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:01+00:00', 1, NULL)"
        )
        connection.execute("INSERT INTO results VALUES ('old', 'a', 'success', ?, 'text', ?, NULL)", (prints[0], done))
    assert orch.store is not None and orch.store.lease("old") is None  # read: no lease yet
    results = await orch.resume("old")
    assert [call.prompt for call in scripts["s"].calls] == ["b <A>"]  # a was kept
    assert results["b"].succeeded and orch.store.get_run("old").status is RunStatus.SUCCESS
    assert result_rows(path, "old") == [("a", "success", None), ("b", "success", 1)]
    lease = orch.store.lease("old")
    assert lease is not None and lease.token == 1 and lease.expired()
    orch.store.close()


def test_the_cli_says_why_a_lease_stopped_a_run() -> None:
    from typer import Exit

    from orchestration.cli.run import _exit_if_refused

    with pytest.raises(Exit) as lost:  # as the run's task group raises it
        _exit_if_refused(ExceptionGroup("run", [LeaseLostError("r", 1, None)]))
    assert lost.value.exit_code == 1
    _exit_if_refused(ExceptionGroup("run", [KeyError("other")]))  # anything else is left to propagate

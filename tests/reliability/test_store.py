"""The run store through the Python API: durable results, resume, fingerprints, export."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from llm_abstractions import AuthenticationError
from orchestration import (
    AgentTask,
    ExecutionResult,
    ExecutionStatus,
    ProjectDefaults,
    ProjectOrchestrator,
    ProjectSpec,
    RunEvent,
)
from orchestration.results import results_document
from orchestration.store import RunStatus, RunStore, default_store_path, export_run, fingerprints
from orchestration.store.writer import SqliteWriter
from tests.reliability.doubles import Scripts

AGENTS = {"s": {"type": "scripted", "retry": {"initial_backoff_s": 0.001, "max_backoff_s": 0.001}}}
DIAMOND: list[dict[str, Any]] = [
    {"id": "a", "description": "a"},
    {"id": "b", "description": "b <{{ tasks.a.output }}>", "depends_on": ["a"]},
    {"id": "c", "description": "c <{{ tasks.a.output }}>", "depends_on": ["a"]},
    {"id": "d", "description": "d <{{ tasks.b.output }}|{{ tasks.c.output }}>", "depends_on": ["b", "c"]},
    {"id": "e", "description": "e"},
]


def orchestrator(store: RunStore, tasks: list[dict[str, Any]] = DIAMOND, **spec: Any) -> ProjectOrchestrator:
    data = {"name": "diamond", "agents": AGENTS, "defaults": {"agent": "s", "retries": 0}, "tasks": tasks, **spec}
    return ProjectOrchestrator(ProjectSpec.model_validate(data), store=store)


def prompts(scripts: Scripts) -> list[str]:
    return [call.prompt for call in scripts["s"].calls]


async def test_a_success_is_committed_before_any_dependent_starts(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    seen: dict[str, set[str]] = {}

    def committed() -> set[str]:  # another connection sees only committed rows
        with sqlite3.connect(store.path) as connection:
            rows = connection.execute("SELECT task_id FROM results WHERE status = 'success'").fetchall()
        return {row[0] for row in rows}

    orch = orchestrator(store)
    orch.on_event(
        lambda event: seen.__setitem__(str(event.task_id), committed()) if event.kind == "task_started" else None
    )
    results = await orch.run(run_id="r1")
    assert all(r.succeeded for r in results.values())
    assert {"a"} <= seen["b"] and {"a"} <= seen["c"] and {"a", "b", "c"} <= seen["d"]
    store.close()


async def test_resume_reruns_only_what_did_not_succeed_and_reloads_outputs(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    script = scripts["s"]
    # c fails (not retryable), so d is skipped; a, b and e succeed
    script.respond = lambda prompt: AuthenticationError("no") if prompt.startswith("c") else prompt[0].upper()
    results = await orchestrator(store).run(run_id="run-1")
    assert [results[t].status for t in "abcde"] == [
        ExecutionStatus.SUCCESS,
        ExecutionStatus.SUCCESS,
        ExecutionStatus.FAILED,
        ExecutionStatus.SKIPPED,
        ExecutionStatus.SUCCESS,
    ]
    assert store.get_run("run-1").status is RunStatus.FAILED
    before = len(script.calls)

    script.respond = lambda prompt: prompt[0].upper()
    second = orchestrator(RunStore(store.path))
    resumed = await second.resume("run-1")
    again = prompts(scripts)[before:]
    assert again == ["c <A>", "d <B|C>"]  # only c and d ran; d read b's output from the first session
    assert (
        second.run_id == "run-1"
        and second.resume_plan is not None
        and sorted(second.resume_plan.kept) == ["a", "b", "e"]
    )
    assert list(resumed) == ["a", "b", "c", "d", "e"]
    assert all(r.succeeded for r in resumed.values())
    assert resumed["a"].output == "A" and resumed["d"].output == "D"
    record = store.get_run("run-1")
    assert record.status is RunStatus.SUCCESS and record.sessions == 2 and record.finished_at is not None
    assert {t: r.output for t, r in store.load_results("run-1").items()} == {t: r.output for t, r in resumed.items()}
    store.close()


async def test_a_changed_task_reruns_with_its_descendants(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    await orchestrator(store).run(run_id="r")
    before = len(scripts["s"].calls)
    changed = [dict(t) for t in DIAMOND]
    changed[1]["description"] = "b (new) <{{ tasks.a.output }}>"
    resumed_orch = orchestrator(store, changed)
    results = await resumed_orch.resume("r")
    plan = resumed_orch.resume_plan
    assert plan is not None and plan.changed == ["b"] and plan.downstream == ["d"]
    assert sorted(plan.kept) == ["a", "c", "e"]
    # b answers as before, so d's request is unchanged: d reruns from the answer cache, with no call
    assert [p.split(" ")[0] for p in prompts(scripts)[before:]] == ["b"]
    assert prompts(scripts)[before] == "b (new) <ok>" and results["b"].succeeded
    assert results["d"].cache is not None and results["d"].cache.hit
    store.close()


async def test_agent_change_counts_as_a_change(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    await orchestrator(store).run(run_id="r")
    agents = {"s": {**AGENTS["s"], "model": "another-model"}}
    resumed = orchestrator(store, agents=agents)
    await resumed.resume("r")
    assert resumed.resume_plan is not None and sorted(resumed.resume_plan.changed) == ["a", "b", "c", "d", "e"]
    store.close()


async def test_json_outputs_are_parsed_again_on_load(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    scripts["s"].default = '{"n": 3}'
    tasks: list[dict[str, Any]] = [
        {"id": "j", "description": "give json", "output_format": "json"},
        {"id": "k", "description": "n is {{ tasks.j.parsed.n }}", "depends_on": ["j"]},
    ]
    await orchestrator(store, tasks).run(run_id="r")
    assert store.load_results("r")["j"].parsed == {"n": 3}
    store.close()


async def test_a_cancelled_run_is_recorded_and_resumable(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    script = scripts["s"]
    gate = script.gate = anyio.Event()
    orch = orchestrator(
        store,
        [{"id": "x", "description": "x"}, {"id": "y", "description": "y"}],
        defaults={"agent": "s", "max_concurrency": 1},
    )
    with anyio.move_on_after(0.2):
        await orch.run(run_id="r")
    assert store.get_run("r").status is RunStatus.CANCELLED
    assert {r.status for r in store.load_results("r").values()} == {ExecutionStatus.CANCELLED}
    document = json.loads(export_run(store.load_run("r"), "json"))
    assert (document["status"], document["run_status"]) == ("cancelled", "cancelled")
    gate.set()
    script.gate = None
    results = await orchestrator(store, [{"id": "x", "description": "x"}, {"id": "y", "description": "y"}]).resume("r")
    assert all(r.succeeded for r in results.values())
    store.close()


def test_the_store_works_under_trio(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    results = anyio.run(lambda: orchestrator(store).run(run_id="t"), backend="trio")
    assert all(r.succeeded for r in results.values())
    assert store.load_results("t").keys() == results.keys()
    store.close()


async def test_listing_exporting_and_the_default_path(
    scripts: Scripts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(tmp_path / "runs.db")
    scripts["s"].respond = lambda prompt: AuthenticationError("no") if prompt.startswith("c") else "ok"
    await orchestrator(store).run(run_id="first")
    scripts["s"].respond = None
    await orchestrator(store).run(run_id="second")
    assert [r.run_id for r in store.list_runs()] == ["second", "first"]
    assert store.latest_unfinished("diamond") is not None and store.latest_unfinished("diamond").run_id == "first"  # type: ignore[union-attr]
    assert store.latest_unfinished("other") is None

    stored = store.load_run("first")
    document = json.loads(export_run(stored, "json"))
    assert document["run_id"] == "first" and document["project"] == "diamond" and document["status"] == "failed"
    assert list(document["results"]) == ["a", "b", "c", "d", "e"]
    assert document["results"]["c"]["error"]["type"] == "authentication"
    lines = export_run(stored, "jsonl").splitlines()
    assert [json.loads(line)["task_id"] for line in lines] == ["a", "b", "c", "d", "e"]
    markdown = export_run(stored, "md")
    assert "| c | failed | s |" in markdown and "# Run first" in markdown

    monkeypatch.setenv("ORCHESTRATE_STORE", str(tmp_path / "env.db"))
    assert default_store_path() == tmp_path / "env.db" and RunStore().path == tmp_path / "env.db"
    monkeypatch.delenv("ORCHESTRATE_STORE")
    assert default_store_path() == Path(".orchestrate/runs.db")
    with pytest.raises(KeyError):
        store.get_run("absent")
    assert RunStore(tmp_path / "none.db").list_runs() == []
    store.close()


async def test_a_store_from_before_agents_files_were_recorded_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, project_hash TEXT NOT NULL,"
            " file TEXT, inputs TEXT NOT NULL, task_ids TEXT NOT NULL, status TEXT NOT NULL,"
            " started_at TEXT NOT NULL, finished_at TEXT, sessions INTEGER NOT NULL DEFAULT 1)"
        )
        connection.execute(
            "INSERT INTO runs VALUES ('old', 'p', 'h', NULL, '{}', '[]', 'failed', '2026-01-01T00:00:00+00:00',"
            " NULL, 1)"
        )
    store = RunStore(path)
    assert store.get_run("old").agents_file is None
    agents = tmp_path / "agents.yaml"
    await store.begin_run("new", project="p", project_hash="h", file=None, inputs={}, task_ids=[], agents_file=agents)
    store.close()
    assert store.get_run("new").agents_file == agents.absolute()


def _result(task_id: str, status: ExecutionStatus) -> ExecutionResult:
    return ExecutionResult(task_id=task_id, status=status, agent="s")


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "success"),
        (["success", "success"], "success"),
        (["success", "failed", "skipped"], "failed"),
        (["success", "skipped"], "failed"),
        (["failed", "cancelled", "success"], "cancelled"),
    ],
)
def test_a_run_status_follows_its_task_statuses(statuses: list[str], expected: str) -> None:
    results = {f"t{i}": _result(f"t{i}", ExecutionStatus(status)) for i, status in enumerate(statuses)}
    assert RunStatus.of(results) is RunStatus(expected)
    assert results_document("p", "r", results)["status"] == expected


async def test_a_run_recorded_as_succeeded_by_an_earlier_version_loads_as_success(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    for run_id in ("old-failed", "old-ok"):  # the newest run succeeded
        await store.begin_run(run_id, project="p", project_hash="h", file=None, inputs={}, task_ids=["a"])
        await store.record(run_id, _result("a", ExecutionStatus.SUCCESS))
    store.close()
    with closing(sqlite3.connect(store.path)) as connection, connection:  # as earlier versions wrote them
        connection.execute("UPDATE runs SET status = 'succeeded', finished_at = started_at WHERE run_id = 'old-ok'")
        connection.execute("UPDATE runs SET status = 'failed' WHERE run_id = 'old-failed'")
    record = store.get_run("old-ok")
    assert record.status is RunStatus.SUCCESS and record.finished
    latest = store.latest_unfinished("p")
    assert latest is not None and latest.run_id == "old-failed"
    assert json.loads(export_run(store.load_run("old-ok"), "json"))["run_status"] == "success"


@pytest.mark.parametrize("keyed", [False, True], ids=["appended", "keyed store from before"])
async def test_a_task_recorded_again_loads_as_its_latest_record(tmp_path: Path, keyed: bool) -> None:
    path = tmp_path / "runs.db"
    if keyed:  # stores made before results were appended had a unique key on run and task
        with sqlite3.connect(path) as connection:
            connection.execute(
                "CREATE TABLE results (run_id TEXT NOT NULL, task_id TEXT NOT NULL, status TEXT NOT NULL,"
                " fingerprint TEXT, output_format TEXT NOT NULL, result TEXT NOT NULL, PRIMARY KEY (run_id, task_id))"
            )
    store = RunStore(path)
    await store.begin_run("r", project="p", project_hash="h", file=None, inputs={}, task_ids=["a", "b"])
    await store.record("r", _result("a", ExecutionStatus.FAILED), "f1")
    await store.record("r", _result("b", ExecutionStatus.SUCCESS), "f1")
    await store.record("r", _result("a", ExecutionStatus.SUCCESS), "f2")
    stored = store.load_run("r")
    assert {task: (entry.result.status, entry.fingerprint) for task, entry in stored.tasks.items()} == {
        "a": (ExecutionStatus.SUCCESS, "f2"),
        "b": (ExecutionStatus.SUCCESS, "f1"),
    }
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT task_id FROM results ORDER BY rowid").fetchall()
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(results)")}
    assert [row[0] for row in rows] == (["b", "a"] if keyed else ["a", "b", "a"])
    assert ("results_by_run" in indexes) is not keyed
    store.close()


async def test_a_run_starts_the_tasks_that_took_longest_last_time_first(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    tasks = [AgentTask(id=f"t{i}", description=f"t{i}") for i in range(5)]
    spec = ProjectSpec(name="p", tasks=tasks, defaults=ProjectDefaults(max_concurrency=1))

    async def start_order(run_id: str) -> list[str]:
        orch = ProjectOrchestrator(spec, store=store)
        started: list[str] = []
        orch.on_event(lambda event: started.append(str(event.task_id)) if event.kind == "task_started" else None)
        await orch.run(run_id=run_id)
        return started

    assert await start_order("first") == ["t0", "t1", "t2", "t3", "t4"]  # nothing known: FIFO
    assert set(store.task_durations("p")) == set(fingerprints(ProjectOrchestrator(spec).validate()))
    # the next run of the project learns from the newest run with successes: here a recorded one
    prints = fingerprints(ProjectOrchestrator(spec).validate())
    await store.begin_run("recorded", project="p", project_hash="h", file=None, inputs={}, task_ids=[])
    for i, seconds in enumerate([0.2, 0.5, 0.1, 0.4, 0.3]):
        done = ExecutionResult(task_id=f"t{i}", status=ExecutionStatus.SUCCESS, duration_s=seconds)
        await store.record("recorded", done, prints[i])
    assert await start_order("second") == ["t1", "t3", "t4", "t0", "t2"]
    store.close()


async def test_results_finished_together_share_a_commit(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    tasks = [AgentTask(id=f"t{i}", description=f"t{i}") for i in range(200)]
    spec = ProjectSpec(name="wide", tasks=tasks, defaults=ProjectDefaults(max_concurrency=64))
    results = await ProjectOrchestrator(spec, store=store).run(run_id="wide")
    assert all(r.succeeded for r in results.values())
    assert store.writer.commits < 40  # the run's two records plus a few groups, not one commit per task
    assert set(store.load_run("wide").results()) == {t.id for t in tasks}
    store.close()


async def test_a_failed_commit_stops_the_run_with_the_database_error(scripts: Scripts, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    orch = orchestrator(store)

    def break_the_store(event: RunEvent) -> None:
        if event.kind == "task_succeeded" and event.task_id == "a":
            with sqlite3.connect(store.path) as connection:  # every later write fails
                connection.execute("DROP TABLE results")

    orch.on_event(break_the_store)
    with pytest.raises(sqlite3.OperationalError, match="results"):
        await orch.run(run_id="r1")
    assert not [p for p in prompts(scripts) if p.startswith("d")]
    store.close()


def test_runs_in_two_threads_can_share_a_store(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    finished: dict[str, bool] = {}

    def run(name: str) -> None:
        chain = [f"t{i}" for i in range(30)]
        tasks = [AgentTask(id=t, description=f"{name} {t}", depends_on=chain[i - 1 : i]) for i, t in enumerate(chain)]
        orch = ProjectOrchestrator(ProjectSpec(name=name, tasks=tasks), store=store)
        finished[name] = all(r.succeeded for r in orch.run_sync(run_id=name).values())

    threads = [threading.Thread(target=run, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert finished == {"left": True, "right": True}
    for name in ("left", "right"):
        stored = store.load_run(name)
        assert stored.record.status == RunStatus.SUCCESS and len(stored.results()) == 30
    store.close()


def test_a_commit_left_to_a_stopped_event_loop_is_taken_over_by_the_next(tmp_path: Path) -> None:
    writer = SqliteWriter(tmp_path / "w.db", lambda connection: connection.execute("CREATE TABLE t (x INTEGER)"))
    committed: list[BaseException | None] = []

    async def submit_then_stop() -> None:
        writer.submit([("INSERT INTO t (x) VALUES (?)", (1,))], committed.append)
        asyncio.get_running_loop().stop()  # the loop ends before the commit it scheduled for after this turn

    loop = asyncio.new_event_loop()
    loop.run_until_complete(submit_then_stop())
    loop.close()
    assert committed == []

    async def submit_and_wait() -> None:
        writer.submit([("INSERT INTO t (x) VALUES (?)", (2,))], committed.append)
        for _ in range(5):
            await asyncio.sleep(0)

    asyncio.run(submit_and_wait())
    assert committed == [None, None]  # the new loop committed both
    with closing(sqlite3.connect(tmp_path / "w.db")) as connection:
        assert sorted(row[0] for row in connection.execute("SELECT x FROM t")) == [1, 2]
    writer.close()


async def test_a_new_store_waits_for_a_reader_that_holds_it_before_switching_to_wal(tmp_path: Path) -> None:
    """SQLite fails a journal-mode switch at once when another connection holds the file (another thread's
    run reading a store that was just created): the writer tries again until the file is free."""
    path = tmp_path / "runs.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # holds the new file, as a reader's schema set-up does
    release = threading.Timer(0.2, other.rollback)
    release.start()
    store = RunStore(path)
    await store.begin_run("r1", project="p", project_hash="h", file=None, inputs={}, task_ids=[])
    release.join()
    other.close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.get_run("r1").status == RunStatus.RUNNING
    store.close()


def test_appended_rows_share_the_turns_commit_in_order_before_its_statements(tmp_path: Path) -> None:
    def setup(connection: sqlite3.Connection) -> None:
        connection.executescript("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, x INTEGER);")
        connection.execute("CREATE TABLE t (x INTEGER)")

    writer = SqliteWriter(tmp_path / "w.db", setup)
    insert = "INSERT INTO log (x) VALUES (?)"
    refused = sqlite3.IntegrityError("refused")

    def refuse(connection: sqlite3.Connection) -> None:
        raise refused

    async def one_turn(guard: Callable[[sqlite3.Connection], None] | None) -> list[BaseException | None]:
        committed: list[BaseException | None] = []
        writer.append(insert, (1,), guard)
        writer.submit([("INSERT INTO t (x) VALUES (?)", (10,))], committed.append)
        writer.append(insert, (2,))
        writer.submit([("INSERT INTO t (x) VALUES (?)", (20,))], committed.append)
        writer.append(insert, (3,))
        for _ in range(3):
            await asyncio.sleep(0)
        return committed

    assert asyncio.run(one_turn(None)) == [None, None] and writer.commits == 1  # one transaction for all five
    assert asyncio.run(one_turn(refuse)) == [refused, refused]  # a guard named by a row guards the whole group
    writer.append(insert, (4,))  # outside an event loop: committed at once
    with closing(sqlite3.connect(tmp_path / "w.db")) as connection:
        assert [row[0] for row in connection.execute("SELECT x FROM log ORDER BY seq")] == [1, 2, 3, 4]
        assert [row[0] for row in connection.execute("SELECT x FROM t ORDER BY rowid")] == [10, 20]
    writer.close()


def test_many_appended_rows_keep_their_order(tmp_path: Path) -> None:
    def setup(connection: sqlite3.Connection) -> None:
        connection.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, x INTEGER, y TEXT)")

    writer = SqliteWriter(tmp_path / "w.db", setup)

    async def one_turn() -> None:
        for x in range(151):  # rows inserted many at once (128, 16, 4) and the rest one by one
            writer.append("INSERT INTO log (x, y) VALUES (?, ?)", (x, f"row {x}"))
        await writer.flush()

    asyncio.run(one_turn())
    with closing(sqlite3.connect(tmp_path / "w.db")) as connection:
        rows = connection.execute("SELECT x, y FROM log ORDER BY seq").fetchall()
    assert rows == [(x, f"row {x}") for x in range(151)] and writer.commits == 1
    writer.close()

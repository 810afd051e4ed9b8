"""Batch agents in the engine, with the offline provider's simulated batch API: grouping into jobs, the batched
state, fallbacks, per-request errors, cancellation, validation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from llm_abstractions import LlmConfig, LlmResponse, Message
from llm_abstractions.offline import OfflineLlm
from orchestration import ProjectOrchestrator, ProjectSpec
from orchestration.batching import Batches
from orchestration.cli.app import app
from orchestration.events import EventKind, RunEvent
from orchestration.models import BatchDefaults, ExecutionStatus
from orchestration.serve.views import event_json
from orchestration.store import RunStore

pytestmark = pytest.mark.anyio

BULK = {"type": "offline", "batch": True, "batch_latency_ms": 50, "response": "A: {{ prompt }}"}


def _spec(
    count: int, *, batch: dict[str, Any] | None = None, agent: dict[str, Any] | None = None, **defaults: Any
) -> ProjectSpec:
    tasks: list[dict[str, Any]] = [{"id": f"doc_{i}", "agent": "bulk", "description": f"doc {i}"} for i in range(count)]
    tasks.append({"id": "final", "agent": "now", "batch": False, "description": "done", "depends_on": ["doc_0"]})
    return ProjectSpec.model_validate(
        {
            "agents": {"bulk": agent or BULK, "now": {"type": "offline"}},
            "defaults": {"batch": {"window_s": 0.2, "poll_s": 0.02, **(batch or {})}, **defaults},
            "tasks": tasks,
        }
    )


def _members(store: Path) -> list[tuple[str, str, str]]:
    """(job, task, job state) of every batch request the store recorded."""
    with sqlite3.connect(store) as connection:
        return connection.execute(
            "SELECT m.job_id, m.task_id, j.state FROM batch_members m JOIN batch_jobs j USING (job_id)"
        ).fetchall()


async def test_300_mapped_instances_go_in_one_job_each_once_with_their_own_answers(tmp_path: Path) -> None:
    spec = ProjectSpec.model_validate(
        {
            "inputs": {"docs": [f"doc {i}" for i in range(300)]},
            "agents": {"bulk": BULK, "now": {"type": "offline", "response": "{{ prompt }}"}},
            "defaults": {"batch": {"window_s": 60, "max_size": 300, "poll_s": 0.02}},  # one job, however slow
            "tasks": [
                {"id": "doc", "agent": "bulk", "for_each": "{{ inputs.docs }}", "description": "{{ item }}"},
                {"id": "final", "agent": "now", "depends_on": ["doc"], "description": "{{ tasks.doc.outputs[17] }}"},
            ],
        }
    )
    orchestrator = ProjectOrchestrator(spec, store=RunStore(tmp_path / "runs.db"))
    events: list[RunEvent] = []
    orchestrator.on_event(events.append)
    results = await orchestrator.run()
    instances = [f"doc[{i}]" for i in range(300)]
    assert all(r.status is ExecutionStatus.SUCCESS for r in results.values())
    for i, instance in enumerate(instances):
        assert results[instance].output == f"A: doc {i}"
    batch_ids = {results[instance].batch.id for instance in instances}  # type: ignore[union-attr]
    assert len(batch_ids) == 1 and results["final"].batch is None and results["final"].output == "A: doc 17"
    members = _members(tmp_path / "runs.db")
    assert sorted(task for _, task, _ in members) == sorted(instances)
    assert {state for _, _, state in members} == {"collected"}
    assert sorted(str(e.task_id) for e in events if e.kind is EventKind.TASK_BATCHED) == sorted(instances)
    statuses = [e.batch for e in events if e.kind is EventKind.BATCH_STATUS]
    assert statuses[0] is not None and statuses[0].state == "in_progress" and statuses[0].tasks == 300
    assert statuses[-1] is not None and statuses[-1].state == "ended"
    stored = RunStore(tmp_path / "runs.db").events(orchestrator.run_id)  # what watch and serve read
    assert [e.data["status"] for e in stored if e.kind == EventKind.TASK_BATCHED] == ["batched"] * 300
    last = event_json([e for e in stored if e.kind == EventKind.BATCH_STATUS][-1])["batch"]
    assert last["state"] == "ended" and last["tasks"] == 300 and last["counts"]["succeeded"] == 300


async def test_a_batched_task_holds_no_slot() -> None:
    """With one slot, every task still joins the same job: each gives its slot away while it waits."""
    results = await ProjectOrchestrator(_spec(5), max_concurrency=1).run()
    assert len({results[f"doc_{i}"].batch.id for i in range(5)}) == 1  # type: ignore[union-attr]


async def test_a_batched_task_holds_no_slot_of_its_agents_max_concurrent() -> None:
    """``limits.max_concurrent`` bounds the agent's real-time calls, not how many requests wait in its jobs."""
    agent = {**BULK, "limits": {"max_concurrent": 2}}
    results = await ProjectOrchestrator(_spec(50, agent=agent)).run()
    assert all(r.succeeded for r in results.values())
    assert len({results[f"doc_{i}"].batch.id for i in range(50)}) == 1  # type: ignore[union-attr]


async def test_max_size_splits_a_group_into_jobs() -> None:
    results = await ProjectOrchestrator(_spec(25, batch={"max_size": 10})).run()
    jobs = {results[f"doc_{i}"].batch.id for i in range(25)}  # type: ignore[union-attr]
    assert len(jobs) == 3


async def test_a_group_smaller_than_min_size_goes_in_real_time() -> None:
    events: list[RunEvent] = []
    orchestrator = ProjectOrchestrator(_spec(3, batch={"min_size": 4}))
    orchestrator.on_event(events.append)
    results = await orchestrator.run()
    assert all(
        r.succeeded and r.batch is None and r.output == f"A: doc {i}" for i, r in enumerate(list(results.values())[:3])
    )
    assert not any(e.kind is EventKind.BATCH_STATUS for e in events)


async def test_a_request_that_fails_inside_a_job_fails_its_task_typed_as_in_real_time() -> None:
    agent = {**BULK, "fail_if_contains": "doc 1"}
    results = await ProjectOrchestrator(_spec(3, agent=agent)).run()
    failed = results["doc_1"]
    assert failed.status is ExecutionStatus.FAILED and failed.error is not None
    assert failed.error.type == "invalid_request" and failed.attempts == 1
    assert results["doc_0"].succeeded and results["doc_2"].succeeded


async def test_cancelling_the_run_cancels_its_job_at_the_provider(tmp_path: Path) -> None:
    agent = {**BULK, "batch_latency_ms": 60_000}
    orchestrator = ProjectOrchestrator(_spec(3, agent=agent), store=RunStore(tmp_path / "runs.db"))
    submitted = anyio.Event()
    batch_ids: list[str] = []

    def on_event(event: RunEvent) -> None:
        if event.kind is EventKind.BATCH_STATUS and event.batch is not None and event.batch.batch_id:
            batch_ids.append(event.batch.batch_id)
            submitted.set()

    orchestrator.on_event(on_event)
    async with anyio.create_task_group() as group:
        group.start_soon(orchestrator.run)
        with anyio.fail_after(10):
            await submitted.wait()
        group.cancel_scope.cancel()
    assert OfflineLlm._jobs[batch_ids[0]].cancelled
    assert {state for _, _, state in _members(tmp_path / "runs.db")} == {"cancelled"}
    assert {r.status for r in orchestrator.results.values()} == {ExecutionStatus.CANCELLED}


def test_batch_settings_and_agents_without_a_batch_api_are_refused(tmp_path: Path) -> None:
    project = tmp_path / "p.yaml"
    project.write_text(
        "agents:\n"
        "  compat: {type: openai_compatible, model: m, base_url: 'http://127.0.0.1:9', api_key: k, batch: true}\n"
        "tasks:\n"
        "  - {id: a, agent: compat, description: hi}\n"
    )
    result = CliRunner().invoke(app, ["validate", str(project)])
    assert result.exit_code == 2
    assert "has no batch API" in result.output and "compat" in result.output and "a" in result.output
    project.write_text("defaults: {batch: {fallback: later, min_size: 0}}\ntasks:\n  - {id: a, description: hi}\n")
    result = CliRunner().invoke(app, ["validate", str(project)])
    assert result.exit_code == 2
    assert "defaults.batch.fallback" in result.output and "defaults.batch.min_size" in result.output
    project.write_text("defaults: {batch: {min_size: 50, max_size: 10}}\ntasks:\n  - {id: a, description: hi}\n")
    result = CliRunner().invoke(app, ["validate", str(project)])
    assert result.exit_code == 2 and "min_size (50) must not exceed max_size (10)" in result.output
    project.write_text("tasks:\n  - {id: step, type: python, call: 'json:dumps', batch: true}\n")
    result = CliRunner().invoke(app, ["validate", str(project)])
    assert result.exit_code == 2 and "a code step calls no model" in result.output


def test_the_offline_example_runs_by_batch_and_results_and_show_name_the_job(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "batch_project.yaml"
    results, store = tmp_path / "results.json", str(tmp_path / "runs.db")
    run = CliRunner().invoke(app, ["run", str(example), "--results", str(results), "--store", store])
    assert run.exit_code == 0, run.output
    assert "(bulk, 12 tasks): in_progress" in run.output and "(bulk, 12 tasks): ended" in run.output
    document = json.loads(results.read_text())["results"]
    jobs = {document[f"review[{i}]"]["batch"]["id"] for i in range(12)}
    assert len(jobs) == 1 and document["digest"]["batch"] is None
    assert document["review[2]"]["output"] == (
        "Summary: Summarise this review of a solar-powered e-bike: the panel charges slowly in winter."
    )
    assert document["review[2]"]["batch"]["submitted_at"] <= document["review[2]"]["batch"]["finished_at"]
    assert (
        document["digest"]["output"]
        .rstrip()
        .endswith("- Summary: Summarise this review of a solar-powered e-bike: the kickstand broke.")
    )
    shown = CliRunner().invoke(app, ["show", "latest", "review[2]", "--store", store])
    assert f"batch:          {jobs.pop()} (submitted" in shown.output


async def test_a_job_that_outlives_max_wait_s_is_cancelled_and_its_requests_go_in_real_time() -> None:
    agent = {**BULK, "batch_latency_ms": 60_000}
    events: list[RunEvent] = []
    orchestrator = ProjectOrchestrator(_spec(2, agent=agent, batch={"max_wait_s": 0.3}))
    orchestrator.on_event(events.append)
    results = await orchestrator.run()
    assert all(r.succeeded and r.batch is None for r in results.values())
    assert results["doc_1"].output == "A: doc 1"
    last = [e.batch for e in events if e.batch is not None][-1]
    assert last is not None and last.state == "cancelled" and OfflineLlm._jobs[str(last.batch_id)].cancelled


async def test_a_task_cancelled_while_its_request_waits_in_the_collector_is_not_submitted() -> None:
    """Cancelled before its job is committed (fail_fast, a cancelled run, its timeout): its request leaves the group,
    which fills up with the next ones."""
    llm = OfflineLlm(LlmConfig(name="bulk", provider="offline", model="m"))
    run_id = f"cancelled-{len(OfflineLlm._jobs)}"  # the simulated jobs of this process are shared by all tests
    batches = Batches(run_id, BatchDefaults(window_s=3600, max_size=3, poll_s=0.01), lambda agent: llm)
    answers: dict[str, str] = {}

    async def answer(task_id: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            outcome, _ = await batches.answer("bulk", task_id, [Message.user(task_id)], None)
            assert isinstance(outcome, LlmResponse)
            answers[task_id] = outcome.text

    with anyio.fail_after(10):
        async with batches.running(), anyio.create_task_group() as group:
            cancelled = anyio.CancelScope()
            group.start_soon(answer, "doc_0")
            group.start_soon(answer, "doc_1", cancelled)
            await anyio.wait_all_tasks_blocked()
            cancelled.cancel()
            await anyio.wait_all_tasks_blocked()
            group.start_soon(answer, "doc_2")
            group.start_soon(answer, "doc_3")
    (job,) = [job for job in OfflineLlm._jobs.values() if job.label.startswith(f"orchestrate-{run_id}-")]
    assert [line.custom_id for line in job.lines] == ["doc_0", "doc_2", "doc_3"]
    assert answers == {"doc_0": "doc_0", "doc_2": "doc_2", "doc_3": "doc_3"}


async def test_a_task_that_times_out_in_the_collector_is_left_out_of_the_job() -> None:
    spec = _spec(3, batch={"window_s": 1.0})
    data = spec.model_dump(exclude_unset=True, by_alias=True)
    data["tasks"][1]["timeout_s"] = 0.1  # doc_1: cancelled by its timeout long before the window closes
    orchestrator = ProjectOrchestrator(ProjectSpec.model_validate(data))
    jobs: list[str] = []
    orchestrator.on_event(lambda e: jobs.append(str(e.batch.batch_id)) if e.batch and e.batch.batch_id else None)
    results = await orchestrator.run()
    assert results["doc_1"].error is not None and results["doc_1"].error.type == "timeout"
    assert results["doc_0"].succeeded and results["doc_2"].succeeded
    assert [line.custom_id for line in OfflineLlm._jobs[jobs[0]].lines] == ["doc_0", "doc_2"]

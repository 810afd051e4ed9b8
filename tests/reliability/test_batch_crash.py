"""Batch jobs survive ``kill -9``: a real ``orchestrate`` process is killed after it submitted its job (or while the
provider's acknowledgement was on its way), the job ends while no process runs, and ``resume`` collects its answers
without submitting anything twice (the fake server counts jobs)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

from llm_abstractions.batch import custom_id_of
from orchestration.store import RunStatus, RunStore
from tests.fakes.agents import agent_yaml
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer
from tests.reliability.processes import kill_9, orchestrate, wait_until_the_lease_expired

__all__ = ["fake_server"]

TASKS = 20


def project_file(tmp_path: Path, server: FakeProviderServer, provider: str, *, mapped: bool = False) -> Path:
    """``TASKS`` tasks ``t0``... on a batch agent, or (``mapped``) one task ``t`` mapped over ``TASKS`` items."""
    agent = agent_yaml(provider, server)
    tasks = (
        [f"  - {{id: t, for_each: {[f'item {i}' for i in range(TASKS)]}, description: '{{{{ item }}}}'}}"]
        if mapped
        else [f"  - {{id: t{i}, description: 'item {i}'}}" for i in range(TASKS)]
    )
    lines = [
        "name: patient",
        f"agents:\n  bulk: {{{agent}, batch: true}}",
        f"defaults: {{agent: bulk, batch: {{window_s: 60, max_size: {TASKS}, poll_s: 0.05}}}}",  # one job, however slow
        "tasks:",
        *tasks,
    ]
    path = tmp_path / "patient.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_the_acknowledgement(store: Path, timeout: float = 30.0) -> None:
    """Until the store holds the provider's id of the run's job (the submission's last step)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists():
            with sqlite3.connect(store) as connection, contextlib.suppress(sqlite3.OperationalError):  # no table yet
                if connection.execute("SELECT 1 FROM batch_jobs WHERE batch_id IS NOT NULL").fetchone():
                    return
        time.sleep(0.02)
    raise AssertionError("the job's acknowledgement never reached the store")


def resume_and_check(server: FakeProviderServer, store: RunStore, jobs: int = 1, *, mapped: bool = False) -> None:
    wait_until_the_lease_expired(store, "b")
    server.batches.release()  # the job ends while no process runs
    assert orchestrate("resume", "b", "--store", str(store.path)).wait(timeout=60) == 0
    assert len(server.batches.jobs) == jobs
    ids = [f"t[{i}]" if mapped else f"t{i}" for i in range(TASKS)]
    assert sorted(server.batches.lines()) == sorted([custom_id_of(task_id) for task_id in ids] * jobs)
    assert server.requests == []  # nothing went in real time either
    record = store.get_run("b")
    assert record.status is RunStatus.SUCCESS and record.sessions == 2
    results = store.load_results("b")
    job = list(server.batches.jobs)[-1]
    for i, task_id in enumerate(ids):
        result = results[task_id]
        assert result.output == f"echo: item {i}" and result.batch is not None and result.batch.id == job


@pytest.mark.parametrize(("provider", "mapped"), [("gpt", False), ("claude", False), ("gemini", False), ("gpt", True)])
def test_kill_9_after_submission_then_resume_collects_the_job_it_submitted(
    fake_server: FakeProviderServer, tmp_path: Path, provider: str, mapped: bool
) -> None:
    """Also for the instances of a mapped task (``for_each``): each one waits for its answer in the same job."""
    fake_server.batches.hold = True
    store = RunStore(tmp_path / "runs.db")
    project = project_file(tmp_path, fake_server, provider, mapped=mapped)
    process = orchestrate("run", str(project), "--run-id", "b", "--store", str(store.path))
    wait_for_the_acknowledgement(store.path)
    kill_9(process)
    resume_and_check(fake_server, store, mapped=mapped)


@pytest.mark.parametrize(("provider", "jobs"), [("gpt", 1), ("claude", 2), ("gemini", 1)])
def test_kill_9_before_the_acknowledgement_then_resume_finds_the_job_by_its_label(
    fake_server: FakeProviderServer, tmp_path: Path, provider: str, jobs: int
) -> None:
    """OpenAI (metadata) and Gemini (display name) keep the job's label: the job is found again. Message Batches
    keep none: the requests are submitted again (the documented duplicate)."""
    fake_server.batches.hold = True
    fake_server.batches.ack_delay_s = 60.0
    store = RunStore(tmp_path / "runs.db")
    project = project_file(tmp_path, fake_server, provider)
    process = orchestrate("run", str(project), "--run-id", "b", "--store", str(store.path))
    fake_server.batches.wait_for_jobs(1, timeout=30)  # created at the provider; its id not yet told
    kill_9(process)
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("SELECT batch_id, state FROM batch_jobs").fetchall() == [(None, "submitting")]
    fake_server.batches.ack_delay_s = 0.0
    resume_and_check(fake_server, store, jobs)


def test_a_task_whose_request_changed_before_the_resume_sends_the_new_one(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    fake_server.batches.hold = True
    store = RunStore(tmp_path / "runs.db")
    project = project_file(tmp_path, fake_server, "gpt")
    process = orchestrate("run", str(project), "--run-id", "b", "--store", str(store.path))
    wait_for_the_acknowledgement(store.path)
    kill_9(process)
    changed = project.read_text().replace("'item 0'", "'item zero'")
    project.write_text(changed.replace("window_s: 60", "window_s: 0.2"))  # the resume's one new request goes at once
    wait_until_the_lease_expired(store, "b")
    fake_server.batches.release()
    assert orchestrate("resume", "b", "--store", str(store.path)).wait(timeout=60) == 0
    first, second = fake_server.batches.jobs.values()
    assert len(first.requests) == TASKS and [custom_id for custom_id, _ in second.requests] == ["t0"]
    results = store.load_results("b")
    assert results["t0"].output == "echo: item zero" and results["t0"].batch is not None
    assert (
        results["t0"].batch.id == second.id and results["t1"].batch is not None and results["t1"].batch.id == first.id
    )

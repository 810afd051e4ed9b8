"""A run keeps the objects that existed before it out of the collector's passes, and only while it runs."""

from __future__ import annotations

import gc

from orchestration import AgentTask, ProjectOrchestrator, ProjectSpec, RunEvent


def project() -> ProjectOrchestrator:
    tasks = [AgentTask(id=f"t{i}", description=f"t{i}", depends_on=[f"t{i - 1}"] if i else []) for i in range(5)]
    return ProjectOrchestrator(ProjectSpec(tasks=tasks))


def test_the_heap_is_frozen_during_a_run_and_given_back_after() -> None:
    assert gc.get_freeze_count() == 0
    during: list[int] = []
    orchestrator = project()
    orchestrator.on_event(lambda event: during.append(gc.get_freeze_count()))
    results = orchestrator.run_sync()
    assert all(r.succeeded for r in results.values())
    assert min(during[1:-1]) > 0  # every task event saw the objects from before the run frozen
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_itself_is_left_alone() -> None:
    seen: list[int] = []
    orchestrator = project()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        orchestrator.on_event(lambda event: seen.append(gc.get_freeze_count()))
        orchestrator.run_sync()
        # nothing more frozen during the run (counts only move as frozen objects die), nothing thawed after
        assert seen and max(seen) <= frozen
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()


def test_nested_runs_unfreeze_once_the_last_one_ends() -> None:
    inner_counts: list[int] = []

    def run_inner(event: RunEvent) -> None:
        if event.kind == "task_succeeded" and event.task_id == "t0" and not inner_counts:
            project().run_sync()  # a run inside a run (another thread, as in a notebook)
            inner_counts.append(gc.get_freeze_count())

    outer = project()
    outer.on_event(run_inner)
    outer.run_sync()
    assert inner_counts and inner_counts[0] > 0  # the outer run still held the freeze
    assert gc.get_freeze_count() == 0

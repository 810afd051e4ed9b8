"""``orchestrate watch``: follow a run that another process executes, from the run store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import ExitCode, StoreOpt

if TYPE_CHECKING:
    from orchestration.cli.progress import ProgressView
    from orchestration.models import ExecutionResult
    from orchestration.store import StoredEvent, StoredTask

__all__ = ["watch"]


def watch(
    run_ref: Annotated[
        str, typer.Argument(metavar="RUN", help="A run id, a unique prefix of one, or `latest` (the newest run).")
    ] = "latest",
    store: StoreOpt = None,
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="Seconds between looks at the store.")] = 0.5,
) -> None:
    """Follow a run as it executes (the same progress display as `run`), then print its summary.

    The run's new results are read from the run store every ``--interval`` seconds until the run
    ends; a run that has ended gets its summary at once. Exit 0 when every task succeeded, 1
    otherwise, 130 on Ctrl-C (the run itself goes on).
    """
    import time

    from orchestration.cli.common import open_run, stderr_console
    from orchestration.cli.progress import ProgressView, print_summary
    from orchestration.models import utc_now
    from orchestration.store import RunStatus

    run_store, run_id = open_run(store, run_ref)
    console = stderr_console()
    record, rows = run_store.poll(run_id)
    order = {task_id: i for i, task_id in enumerate(record.task_ids)}
    results: dict[str, ExecutionResult] = {}
    view = ProgressView(console, len(order))
    if record.status is RunStatus.RUNNING:
        view.started -= (utc_now() - record.started_at).total_seconds()
        console.print(f"watching run {run_id} ({record.project}): {len(order)} tasks", markup=False)
        last = seen = 0
        try:
            with view:
                while True:
                    for _, task in rows:
                        _feed(view, results, task, run_id, order)
                    last = rows[-1][0] if rows else last
                    seen = _feed_batches(view, run_store.events(run_id, seen), seen, results)
                    if record.status is not RunStatus.RUNNING:
                        break
                    time.sleep(interval)
                    record, rows = run_store.poll(run_id, last)
        except KeyboardInterrupt:
            console.print(f"stopped watching; run {run_id} goes on", markup=False)
            raise typer.Exit(ExitCode.INTERRUPTED) from None
    else:
        results = {task.result.task_id: task.result for _, task in rows if _task_of(task.result.task_id) in order}
    console.print(f"run {run_id} ({record.project}): {record.status.value}", markup=False)
    elapsed = ((record.finished_at or utc_now()) - record.started_at).total_seconds()
    ordered = dict(sorted(results.items(), key=lambda item: (order[_task_of(item[0])], _task_of(item[0]) != item[0])))
    print_summary(console, ordered, elapsed, failures_shown=view.failures_shown)
    if record.status is not RunStatus.SUCCESS:
        raise typer.Exit(ExitCode.TASKS_FAILED)


def _task_of(task_id: str) -> str:
    """The project task a result is of: an instance's mapped task (``classify`` for ``classify[17]``), else itself."""
    from orchestration.items import mapped_task_of

    return mapped_task_of(task_id) or task_id


def _feed_batches(view: ProgressView, events: list[StoredEvent], seen: int, results: dict[str, ExecutionResult]) -> int:
    """Show the stored events of batched tasks (not finished yet) and batch jobs; the last event's number (or
    ``seen``)."""
    from orchestration.events import EventKind

    for event in events:
        if event.kind == EventKind.TASK_BATCHED and event.task_id is not None and event.task_id not in results:
            view.running.pop(event.task_id, None)
            view.batched.add(event.task_id)
        elif event.kind == EventKind.BATCH_STATUS and isinstance(event.data.get("batch"), dict):
            view.batch_job(event.data["batch"])
    return events[-1].seq if events else seen


def _feed(
    view: ProgressView, results: dict[str, ExecutionResult], task: StoredTask, run_id: str, order: dict[str, int]
) -> None:
    """Show a stored result as the event the running process emitted for it (a task run again replaces
    its earlier result: that one is no longer counted)."""
    from orchestration.events import EventKind, RunEvent
    from orchestration.items import mapped_task_of
    from orchestration.models import ExecutionStatus

    result = task.result
    mapped = mapped_task_of(result.task_id)
    if (mapped or result.task_id) not in order:  # a task of an earlier session, no longer in the project
        return
    if (earlier := results.get(result.task_id)) is not None:
        view.counts[earlier.status] -= 1
    elif mapped is not None:  # an instance of a mapped task: one more task
        view.total += 1
    results[result.task_id] = result
    kind = {
        ExecutionStatus.SUCCESS: EventKind.TASK_SUCCEEDED,
        ExecutionStatus.FAILED: EventKind.TASK_FAILED,
        ExecutionStatus.SKIPPED: EventKind.TASK_SKIPPED,
        ExecutionStatus.CANCELLED: EventKind.TASK_CANCELLED,
    }[result.status]
    view(RunEvent(kind, run_id, result.task_id, result.agent, result))

"""``ProjectOrchestrator``: validate a project, then run its DAG of tasks.

With a :class:`~orchestration.store.RunStore` every task's result is committed right
after the loop turn in which it finished (a success before its dependents start), and
:meth:`ProjectOrchestrator.resume` continues a run that crashed or failed. Calls in flight
at a crash, and results not committed yet, run again on resume: at-least-once for them,
never again for a recorded success. The scheduler's priorities then start from how long
each task took in the project's last run with successes (see ``durations`` in
:class:`~orchestration.scheduler.DagScheduler`).
"""

from __future__ import annotations

import contextlib
import importlib
import secrets
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel

from agent_registry import AgentRegistry
from llm_abstractions import LlmResponse, Message, Usage
from orchestration.events import EventBus, EventCallback, EventKind, RunEvent
from orchestration.executor import TaskExecutor
from orchestration.gc_freeze import frozen_heap
from orchestration.issues import ProjectValidationError
from orchestration.loader import load_project_file, task_issues
from orchestration.models import (
    AgentTask,
    AttemptRecord,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    ProjectSpec,
    utc_now,
)
from orchestration.project import Project, compile_project
from orchestration.scheduler import DagScheduler

if TYPE_CHECKING:
    from orchestration.store import ResumePlan, RunStore

__all__ = ["ProjectOrchestrator", "new_run_id"]

_FINAL_EVENT = {
    ExecutionStatus.SUCCESS: EventKind.TASK_SUCCEEDED,
    ExecutionStatus.FAILED: EventKind.TASK_FAILED,
    ExecutionStatus.SKIPPED: EventKind.TASK_SKIPPED,
    ExecutionStatus.CANCELLED: EventKind.TASK_CANCELLED,
}


_RUN_RECORDS: tuple[type[BaseModel], ...] = (Message, LlmResponse, Usage, AttemptRecord, ErrorInfo, ExecutionResult)
"""The models every run validates: their validators are built when a project is validated."""


def _load_loop_backend() -> None:
    """Import anyio's event-loop backend now: anyio imports it on first use, about 30 ms inside the first run.

    The backend is trio's in a process that imported trio, asyncio's otherwise.
    """
    name = "trio" if "trio" in sys.modules else "asyncio"
    with contextlib.suppress(ImportError):  # a layout this anyio does not have: it loads the backend itself
        importlib.import_module(f"anyio._backends._{name}")


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus random suffix."""
    return f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


class ProjectOrchestrator:
    """Schedules a project's tasks onto a :class:`TaskExecutor`.

    Build it from a file (:meth:`from_file`) or from a :class:`ProjectSpec` and
    :meth:`add_task` calls, then ``await run()``. Results stay available in
    :attr:`results`, also when the run fails or is cancelled.
    """

    def __init__(
        self,
        spec: ProjectSpec | None = None,
        *,
        registry: AgentRegistry | None = None,
        inputs: Mapping[str, Any] | None = None,
        max_concurrency: int | None = None,
        fail_fast: bool | None = None,
        file: Path | None = None,
        store: RunStore | str | Path | None = None,
    ) -> None:
        self.spec = spec or ProjectSpec()
        self.registry = registry or AgentRegistry.default()
        self.inputs = dict(inputs or {})
        self.max_concurrency = max_concurrency
        self.fail_fast = fail_fast
        self.file = file
        self._source: Any = None
        self._project: Project | None = None
        self.events = EventBus()
        self.results: dict[str, ExecutionResult] = {}
        self.run_id: str | None = None
        self.store = _open_store(store)
        self._prints: tuple[Project, list[str]] | None = None
        self.resume_plan: ResumePlan | None = None
        """What the last :meth:`resume` kept and reran."""

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        registry: AgentRegistry | None = None,
        agents_file: Path | None = None,
        **kwargs: Any,
    ) -> ProjectOrchestrator:
        """Load a task file; raise :class:`ProjectValidationError` if it does not parse."""
        path = Path(path)
        spec, source = load_project_file(path)
        orchestrator = cls(spec, registry=registry or AgentRegistry.default(agents_file), file=path, **kwargs)
        orchestrator._source = source
        return orchestrator

    def add_task(self, task: AgentTask | Mapping[str, Any]) -> AgentTask:
        """Append a task (an ``AgentTask`` or its fields); validated with the rest by :meth:`validate`."""
        if not isinstance(task, AgentTask):
            from pydantic import ValidationError

            fields = task
            try:
                task = AgentTask.model_validate(fields)
            except ValidationError as exc:
                raise ProjectValidationError(task_issues(exc, str(fields.get("id", "?")))) from None
        self.spec = self.spec.model_copy(update={"tasks": [*self.spec.tasks, task]})
        self._project = None
        return task

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(event)`` for every lifecycle event (synchronously; keep it quick)."""
        self.events.add_callback(callback)

    def validate(self, *, check_agents: bool = True) -> Project:
        """Check everything that can be checked before running; raise :class:`ProjectValidationError`.

        ``check_agents=False`` skips the providers' own checks (API keys, runtimes), e.g. to draw the graph.
        """
        if self._project is not None:
            return self._project
        project = compile_project(
            self.spec, self.registry, inputs=self.inputs, source=self._source, check_agents=check_agents
        )
        if check_agents:
            self._project = project
            for record in _RUN_RECORDS:  # deferred at import (a fast import); built here, before the run
                record.model_rebuild()
            _load_loop_backend()
            if self.store is not None:  # stored results carry their task's fingerprint: hashed with the project
                self._fingerprints(project)
        return project

    def _fingerprints(self, project: Project) -> list[str]:
        """Each task's fingerprint (see :func:`orchestration.store.fingerprints`), computed once per project."""
        from orchestration.store import fingerprints

        if self._prints is None or self._prints[0] is not project:
            self._prints = (project, fingerprints(project))
        return self._prints[1]

    def _emit(
        self,
        kind: EventKind,
        task_id: str | None = None,
        agent: str | None = None,
        result: ExecutionResult | None = None,
    ) -> None:
        if self.events.active:
            assert self.run_id is not None
            self.events.emit(RunEvent(kind, self.run_id, task_id, agent, result))

    def _record(self, result: ExecutionResult) -> None:
        self.results[result.task_id] = result
        if self.events.active:
            self._announce(result)

    def _announce(self, result: ExecutionResult) -> None:
        self._emit(_FINAL_EVENT[result.status], result.task_id, result.agent, result)

    async def run(self, *, run_id: str | None = None) -> dict[str, ExecutionResult]:
        """Run every task; return results by task id, in the project's task order."""
        self.resume_plan = None
        return await self._run(self.validate(), run_id or new_run_id(), {})

    async def resume(self, run_id: str) -> dict[str, ExecutionResult]:
        """Continue a stored run: rerun only the tasks that did not succeed, under the same run id.

        Succeeded tasks are reloaded (their outputs feed downstream templates) unless the
        project changed their prompt or agent; those and their descendants rerun, as
        :attr:`resume_plan` reports. The returned results hold the whole run.
        """
        from orchestration.store import plan_resume

        if self.store is None:
            raise ValueError("resume needs a run store: ProjectOrchestrator(..., store=...)")
        stored = await anyio.to_thread.run_sync(self.store.load_run, run_id)
        if not self.inputs and stored.record.inputs:
            self.inputs = dict(stored.record.inputs)
            self._project = None
        project = self.validate()
        if stored.record.project != project.name:
            raise ValueError(f"run '{run_id}' belongs to project '{stored.record.project}', not '{project.name}'")
        self.resume_plan = plan_resume(project, stored, self._fingerprints(project))
        return await self._run(project, run_id, self.resume_plan.kept)

    async def _run(
        self, project: Project, run_id: str, kept: Mapping[str, ExecutionResult]
    ) -> dict[str, ExecutionResult]:
        """Run the tasks not in ``kept`` (succeeded already) under ``run_id``."""
        self.run_id = run_id
        self.results = dict(kept)
        store = self.store
        task_prints: list[str] = []
        durations: list[float | None] | None = None
        if store is not None:
            from orchestration.store import project_hash

            task_prints = self._fingerprints(project)
            # how long each task took in the project's last run: the scheduler's first estimates
            known = await anyio.to_thread.run_sync(store.task_durations, project.name)
            durations = [known.get(fingerprint) for fingerprint in task_prints] if known else None
            await store.begin_run(
                run_id,
                project=project.name,
                project_hash=project_hash(project, task_prints),
                file=project.file or self.file,
                inputs=project.inputs,
                task_ids=[t.id for t in project.tasks],
                agents_file=self.registry.agents_file,
            )
        executor = TaskExecutor(self.registry)
        defaults = project.spec.defaults
        fail_fast = defaults.fail_fast if self.fail_fast is None else self.fail_fast
        agent_names = sorted({t.agent for t in project.tasks})
        agent_index = {name: i for i, name in enumerate(agent_names)}
        scheduler = DagScheduler(
            [t.children for t in project.tasks],
            self.max_concurrency or defaults.max_concurrency,
            groups=[agent_index[t.agent] for t in project.tasks],
            group_limits=[self.registry.get(name).limits.max_concurrent for name in agent_names],
            durations=durations,
        )
        inputs = project.inputs
        results = self.results
        tasks = project.tasks

        events = self.events

        def committed(index: int, result: ExecutionResult, error: BaseException | None) -> None:
            if error is not None:
                scheduler.abort(error)
                return
            if events.active:
                self._announce(result)
            scheduler.finish(index, True)

        async def execute(index: int) -> bool | None:
            task = tasks[index]
            if events.active:
                self._emit(EventKind.TASK_STARTED, task.id, task.agent)
            started_at = utc_now()
            try:
                result = await executor.execute(task, inputs, results, started_at=started_at)
            except anyio.get_cancelled_exc_class():
                self._record(_cancelled(task.id, task.agent, started_at))
                raise
            succeeded = result.status is ExecutionStatus.SUCCESS
            if store is None or not succeeded:
                if store is not None:  # nothing waits for a failure to be durable
                    store.record_nowait(run_id, result, task_prints[index], task.task.output_format)
                self._record(result)
                return succeeded
            # A success is durable before its dependents start (and before its event);
            # the worker moves on to the next task while the commit happens.
            results[task.id] = result
            store.record_nowait(
                run_id, result, task_prints[index], task.task.output_format, partial(committed, index, result)
            )
            return None

        def on_skip(index: int, cause: int) -> None:
            self._record(
                ExecutionResult(
                    task_id=tasks[index].id,
                    status=ExecutionStatus.SKIPPED,
                    agent=tasks[index].agent,
                    completed_at=utc_now(),
                    error=ErrorInfo(type="upstream_failed", message=f"dependency '{tasks[cause].id}' did not succeed"),
                )
            )

        self._emit(EventKind.RUN_STARTED)
        try:
            with frozen_heap():
                await scheduler.run(
                    execute, on_skip=on_skip, completed=[project.index[t] for t in kept], fail_fast=fail_fast
                )
        finally:
            for task in tasks:
                if task.id not in results:
                    results[task.id] = _cancelled(task.id, task.agent, None)
            await executor.aclose()
            if store is not None:
                await _save_unstored(store, run_id, results, kept)
            self._emit(EventKind.RUN_FINISHED)
            self.events.close_streams()
        self.results = {t.id: results[t.id] for t in tasks}
        return self.results

    async def execute_task(self, task_id: str) -> ExecutionResult:
        """Run one task now, reading upstream outputs from :attr:`results`.

        Its dependencies must have succeeded already (in an earlier :meth:`run` or call).
        """
        project = self.validate()
        task = project.task(task_id)
        missing = [
            project.tasks[p].id
            for p in task.parents
            if not (r := self.results.get(project.tasks[p].id)) or not r.succeeded
        ]
        if missing:
            raise ValueError(f"task '{task_id}' depends on tasks that have not succeeded: {', '.join(missing)}")
        self.run_id = self.run_id or new_run_id()
        executor = TaskExecutor(self.registry)
        try:
            result = await executor.execute(task, project.inputs, self.results)
        finally:
            await executor.aclose()
        self._record(result)
        return result

    def run_sync(self, **kwargs: Any) -> dict[str, ExecutionResult]:
        """Blocking :meth:`run`; works even where an event loop is already running (a notebook)."""
        try:
            import asyncio

            asyncio.get_running_loop()
        except RuntimeError:
            return anyio.run(lambda: self.run(**kwargs))
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = anyio.run(lambda: self.run(**kwargs))
            except BaseException as exc:  # handed to the calling thread
                box["error"] = exc

        thread = threading.Thread(target=target, name="orchestrate-run")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        result: dict[str, ExecutionResult] = box["value"]
        return result


def _open_store(store: RunStore | str | Path | None) -> RunStore | None:
    if store is None or not isinstance(store, str | Path):
        return store
    from orchestration.store import RunStore

    return RunStore(store)


async def _save_unstored(
    store: RunStore, run_id: str, results: Mapping[str, ExecutionResult], kept: Mapping[str, ExecutionResult]
) -> None:
    """Commit the skipped and cancelled results (not written as they happened) and the run's status."""
    from orchestration.store import RunStatus

    for result in results.values():
        if result.status in (ExecutionStatus.SKIPPED, ExecutionStatus.CANCELLED) and result.task_id not in kept:
            store.record_nowait(run_id, result)
    await store.end_run(run_id, RunStatus.of(results))


def _cancelled(task_id: str, agent: str, started_at: datetime | None) -> ExecutionResult:
    return ExecutionResult(
        task_id=task_id,
        status=ExecutionStatus.CANCELLED,
        agent=agent,
        started_at=started_at,
        completed_at=utc_now(),
        error=ErrorInfo(type="cancelled", message="the run was cancelled before this task finished"),
    )

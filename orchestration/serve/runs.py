"""The runs an ``orchestrate serve`` process runs: started, cancelled and resumed over HTTP, each a
:class:`~orchestration.orchestrator.ProjectOrchestrator` in the server's event loop (a task of the task group the
app's lifespan holds), all sharing the server's :class:`~orchestration.store.RunStore` and its group commits.

Runs that other processes run are only read from the store. A run stops with the server (cancelled: resume it).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agent_registry import AgentConfigError, AgentRegistry
from llm_abstractions import redact
from orchestration.events import EventKind, RunEvent
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.log import get_logger
from orchestration.models import utc_now
from orchestration.orchestrator import ProjectOrchestrator, new_run_id
from orchestration.results import RunStatus
from orchestration.serve.projects import posted_spec, resolve_project, save_posted
from orchestration.store import RunOwnedError, RunStore, UnknownRunError

__all__ = ["POSTED_FOLDER", "RUN_ID_PATTERN", "RunConflictError", "RunManager"]

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""The run ids a client may choose."""

POSTED_FOLDER = "posted"
"""Where (beside the run store) projects posted as documents are kept, as the file their run records."""

CANCEL_WAIT_S = 10.0
"""How long a cancel waits for the run to end before it answers."""

_log = get_logger(__name__)


class RunConflictError(Exception):
    """The run cannot be started, cancelled or resumed as asked (HTTP 409); the message says why."""


@dataclass(eq=False)
class _Active:
    orchestrator: ProjectOrchestrator | None = None
    """``None`` while it is built."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class RunManager:
    """Starts, cancels and resumes runs in the event loop of :meth:`serving`."""

    def __init__(self, store: RunStore, projects: Path | None) -> None:
        self.store = store
        self.projects = projects
        """The ``--projects`` folder: where ``path`` requests are resolved (``None``: none given)."""
        self._group: TaskGroup | None = None
        self._active: dict[str, _Active] = {}

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Run started runs until the body ends (the app's lifespan); they are cancelled then."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                yield
            finally:
                self._group = None
                group.cancel_scope.cancel()

    def running_here(self, run_id: str) -> bool:
        return run_id in self._active

    async def start_posted(
        self,
        document: Mapping[str, Any],
        *,
        inputs: Mapping[str, Any],
        run_id: str | None,
        max_concurrency: int | None,
    ) -> str:
        """Validate a posted project and start it; return its run id once the run is recorded in the store."""
        run_id = self._new_id(run_id)

        def build() -> ProjectOrchestrator:
            self._check_new(run_id)
            orchestrator = ProjectOrchestrator(
                posted_spec(document),
                registry=_registry(None),
                inputs=inputs,
                max_concurrency=max_concurrency,
                store=self.store,
            )
            _validate(orchestrator)
            orchestrator.file = save_posted(self.store.path.parent / POSTED_FOLDER, run_id, document)
            return orchestrator

        return await self._start(run_id, build, resume=False)

    async def start_file(
        self, path: str, *, inputs: Mapping[str, Any], run_id: str | None, max_concurrency: int | None
    ) -> str:
        """Start the task file ``path`` names under the projects folder; return its run id once recorded."""
        run_id = self._new_id(run_id)

        def build() -> ProjectOrchestrator:
            self._check_new(run_id)
            file = resolve_project(self.projects, path)
            orchestrator = ProjectOrchestrator.from_file(
                file, registry=_registry(None), inputs=inputs, max_concurrency=max_concurrency, store=self.store
            )
            _validate(orchestrator)
            return orchestrator

        return await self._start(run_id, build, resume=False)

    async def resume(self, run_id: str) -> str:
        """Resume a stored run from the file it recorded (a posted project's kept copy included), with the agents
        file it ran with; raise :class:`RunConflictError` when it runs (here or in a live process), succeeded, or
        has no file, and :class:`UnknownRunError` when there is no such run."""
        if run_id in self._active:
            raise RunConflictError(f"run '{run_id}' is running in this server")
        record = await anyio.to_thread.run_sync(self.store.get_run, run_id)
        if record.status is RunStatus.SUCCESS:
            raise RunConflictError(f"run '{run_id}' finished: every task succeeded")
        lease = await anyio.to_thread.run_sync(self.store.lease, run_id)
        if lease is not None and not lease.expired(utc_now()):
            raise RunConflictError(str(RunOwnedError(lease)))
        file = record.file
        if file is None:
            raise RunConflictError(f"run '{run_id}' was not started from a project file: resume it with the Python API")

        def build() -> ProjectOrchestrator:
            orchestrator = ProjectOrchestrator.from_file(
                file, registry=_registry(record.agents_file), inputs=record.inputs, store=self.store
            )
            _validate(orchestrator)
            return orchestrator

        return await self._start(run_id, build, resume=True)

    async def cancel(self, run_id: str) -> RunStatus:
        """Cancel a run this server runs; wait (up to :data:`CANCEL_WAIT_S`) until it ended and return its status."""
        active = self._active.get(run_id)
        if active is None:
            raise RunConflictError(f"run '{run_id}' is not running in this server")
        if active.orchestrator is None:
            raise RunConflictError(f"run '{run_id}' is starting: cancel it once it started")
        active.scope.cancel()
        with anyio.move_on_after(CANCEL_WAIT_S):
            await active.done.wait()
        record = await anyio.to_thread.run_sync(self.store.get_run, run_id)
        return record.status

    @staticmethod
    def _new_id(run_id: str | None) -> str:
        if run_id is None:
            return new_run_id()
        if not re.match(RUN_ID_PATTERN, run_id):
            message = "a run id is 1 to 128 letters, digits, '.', '_' or '-', the first a letter or digit"
            raise ProjectValidationError([ValidationIssue(message, field="run_id")])
        return run_id

    def _check_new(self, run_id: str) -> None:
        """Refuse the id of a stored run: a new run never becomes a session of another."""
        try:
            self.store.get_run(run_id)
        except (UnknownRunError, FileNotFoundError):
            return
        raise RunConflictError(f"run '{run_id}' exists already: resume it, or choose another id")

    async def _start(self, run_id: str, build: Callable[[], ProjectOrchestrator], *, resume: bool) -> str:
        """Build the orchestrator (in a worker thread: it reads and validates files), then run it in the task group;
        return once the run is recorded in the store (its ``run_started``), raising what stopped it before."""
        if self._group is None:
            raise RunConflictError("the server is not running runs (it is starting or stopping)")
        if run_id in self._active:
            raise RunConflictError(f"run '{run_id}' is running in this server")
        active = self._active[run_id] = _Active()  # the id is reserved while the run is built
        try:
            active.orchestrator = await anyio.to_thread.run_sync(build)
            await self._group.start(self._execute, run_id, active, resume)
        except BaseException:
            self._active.pop(run_id, None)
            active.done.set()
            raise
        return run_id

    async def _execute(
        self, run_id: str, active: _Active, resume: bool, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        orchestrator = active.orchestrator
        assert orchestrator is not None
        begun = False

        def started(event: RunEvent) -> None:
            nonlocal begun
            if event.kind is EventKind.RUN_STARTED and not begun:
                begun = True
                task_status.started()

        orchestrator.on_event(started)
        try:
            with active.scope:
                await (orchestrator.resume(run_id) if resume else orchestrator.run(run_id=run_id))
            if not begun:
                raise RunConflictError(f"run '{run_id}' was cancelled before it started")
        except Exception as exc:  # a run's failure never stops the server (nor its other runs)
            if begun:
                _log.error("run_failed", run_id=run_id, error=redact(f"{type(exc).__name__}: {exc}"))
                return
            if isinstance(exc, RunOwnedError) or type(exc) is ValueError:  # another session, another project
                raise RunConflictError(str(exc)) from exc
            raise  # to the request that started it
        finally:
            if self._active.get(run_id) is active:
                del self._active[run_id]
            active.done.set()


def _registry(agents_file: Path | None) -> AgentRegistry:
    """The agents a run sees: the server's environment and agents file (``agents_file`` instead, when given)."""
    try:
        return AgentRegistry.default(agents_file)
    except AgentConfigError as exc:
        raise ProjectValidationError([_agent_issue(issue) for issue in exc.issues]) from None


def _validate(orchestrator: ProjectOrchestrator) -> None:
    try:
        orchestrator.validate()
    except AgentConfigError as exc:
        raise ProjectValidationError([_agent_issue(issue) for issue in exc.issues]) from None


def _agent_issue(issue: Any) -> ValidationIssue:
    return ValidationIssue(issue.message, issue.source, agent=issue.agent, field=issue.field, line=issue.line)

"""``ProjectOrchestrator``: validate a project, then run its DAG of tasks.

A run wires three parts together: the :class:`~orchestration.scheduler.DagScheduler` decides
which ready task runs next, the :class:`~orchestration.lifecycle.TaskLifecycle` runs it and
moves it through its states (recording results in the run store and announcing them as
events), and the :class:`~orchestration.executor.TaskExecutor` calls its model.

With a :class:`~orchestration.store.RunStore` a task's success is committed before its
dependents start, and :meth:`ProjectOrchestrator.resume` continues a run that crashed or
failed. Calls in flight at a crash run again on resume: at-least-once for them, never again
for a recorded success. The scheduler's priorities then start from how long each task took
in the project's last run with successes (see ``durations`` in
:class:`~orchestration.scheduler.DagScheduler`). A run (or resume) holds the run's lease in the
store while it runs: another session of the same run is refused
(:class:`~orchestration.store.RunOwnedError`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel

from agent_registry import AgentRegistry
from llm_abstractions import BaseLlm, LlmResponse, Message, Usage
from llm_abstractions.wrappers import PacingStatus
from orchestration.answer_cache import AnswerCache, CacheMode
from orchestration.code_steps import import_path
from orchestration.events import EventBus, EventCallback, EventKind, RunEvent
from orchestration.executor import TaskExecutor
from orchestration.expansion import FanOutLifecycle, scheduler_graph
from orchestration.gating import Request
from orchestration.issues import ProjectValidationError
from orchestration.items import mapped_task_of
from orchestration.lifecycle import TaskLifecycle
from orchestration.loader import load_project_file, task_issues
from orchestration.models import (
    AgentTask,
    AttemptRecord,
    ErrorInfo,
    ExecutionResult,
    Executor,
    ProjectSpec,
    StepFunction,
)
from orchestration.output_files import OutputFileError, OutputFiles, resolve_output_path
from orchestration.project import CompiledTask, Project, compile_project
from orchestration.reviewers import OnReview, ReviewHooks
from orchestration.scheduler import DagScheduler

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from orchestration.budget import BudgetLedger, BudgetStatus
    from orchestration.remote_steps import RemoteSteps
    from orchestration.store import Gate, ResumePlan, RunStore
    from orchestration.telemetry import Tracing

__all__ = ["ProjectOrchestrator", "new_run_id"]


_RUN_RECORDS: tuple[type[BaseModel], ...] = (Message, LlmResponse, Usage, AttemptRecord, ErrorInfo, ExecutionResult)
"""The models every run validates: their validators are built when a project is validated."""


_WAITING_CHECK_S = 0.05
"""How often a run that does not wait for reviews checks whether only waiting tasks are left."""


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
        llms: Mapping[str, BaseLlm] | None = None,
        on_review: OnReview | None = None,
        otel: bool | TracerProvider | None = None,
        attachment_dirs: Sequence[str | Path] = (),
        allow_outside: bool = False,
        executor: Literal["local", "ray"] | None = None,
        ray_address: str | None = None,
    ) -> None:
        """``llms``: model instances to use for agents by name (an agent not configured otherwise is made
        from its instance); the registry given (by default agents from the environment and the agents
        file) is not changed. ``on_review``: an in-process reviewer, called with each review gate the run
        opens (after the task's reviewer agent, if any): it returns a
        :class:`~orchestration.store.Decision`, or ``None`` to leave the gate to someone else
        (:meth:`decide`, ``orchestrate review``); a plain function runs in a worker thread. ``otel``: trace runs
        with OpenTelemetry (the ``otel`` extra; :mod:`orchestration.telemetry`) through this tracer provider, or
        the global one for ``True``; ``None``: as ``ORCHESTRATE_OTEL`` says. ``attachment_dirs``: folders task
        attachments may come from besides the project file's (by default only paths inside that folder, or inside
        the working directory for a project without a file, are read). ``allow_outside``: tasks' output files
        may be written outside the project's folder (the project file's, else the current one). ``executor``:
        ``"ray"`` runs the work on a Ray cluster (:mod:`orchestration.ray_cluster`; the ``ray`` extra), ``"local"``
        in this process; ``None``: as the project's ``defaults.executor`` says. ``ray_address``: the cluster
        (``"auto"``, ``"ray://host:port"``); ``None``: a local cluster started for each run (stopped after it).

        A project with code steps (``type: python``) imports their modules when validated, with the project's
        folder first on ``sys.path``; while it runs the folder stays there (taken off again afterwards)."""
        self.spec = spec or ProjectSpec()
        self.allow_outside = allow_outside
        self.registry = registry or AgentRegistry.default()
        self.llms = dict(llms or {})
        self.on_review = on_review
        self.otel = otel
        self.attachment_dirs = [Path(folder) for folder in attachment_dirs]
        self.inputs = dict(inputs or {})
        self.max_concurrency = max_concurrency
        self.fail_fast = fail_fast
        self.file = file
        self.executor = executor
        self.ray_address = ray_address
        self._source: Any = None
        self._project: Project | None = None
        self.events = EventBus()
        self.results: dict[str, ExecutionResult] = {}
        self.run_id: str | None = None
        self.store = _open_store(store)
        self._prints: tuple[Project, list[str]] | None = None
        self.resume_plan: ResumePlan | None = None
        """What the last :meth:`resume` kept and reran."""
        self.wait_for_reviews = True
        """``False``: stop the run as soon as nothing can progress without a review decision (its status is then
        ``waiting``; the waiting tasks are recorded as cancelled and a resume picks their gates up again)."""
        self.stopped_waiting = False
        """Whether the last run stopped because everything left waited for a review decision."""
        self.budget_usd: float | None = None
        """The run's cost cap in USD, over ``defaults.budget.max_cost_usd`` (the CLI's ``--budget-usd``)."""
        self.cache_override: CacheMode | None = None
        """The answer cache's mode for every task, over the task file's (the CLI's ``--no-cache``,
        ``--refresh-cache``); the cache needs a run store."""

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
                raise ProjectValidationError(task_issues(exc, str(fields.get("id", "?")), fields)) from None
        self.spec = self.spec.model_copy(update={"tasks": [*self.spec.tasks, task]})
        self._project = None
        return task

    def add_step(self, task_id: str, call: StepFunction | str, **fields: Any) -> AgentTask:
        """Append a code step: ``call`` (a function, sync or async, or ``"module:function"``) is called with a
        :class:`~orchestration.code_steps.StepContext`; ``fields``: any other task field (``depends_on``,
        ``params``, ``when``, ``output_format``, ``output_file``...)."""
        return self.add_task({**fields, "id": task_id, "type": "python", "call": call})

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
            self.spec,
            self.registry,
            inputs=self.inputs,
            source=self._source,
            check_agents=check_agents,
            llms=self.llms,
            attachment_dirs=self.attachment_dirs,
            folder=self.file.parent if self.file is not None else None,
            allow_outside=self.allow_outside,
            on_ray=self.on_ray,
        )
        if check_agents:
            self._project = project
            for record in _RUN_RECORDS:  # deferred at import (a fast import); built here, before the run
                record.model_rebuild()
            if self.store is not None:  # stored results carry their task's fingerprint: hashed with the project
                self._fingerprints(project)
        return project

    def _fingerprints(self, project: Project) -> list[str]:
        """Each task's fingerprint (see :func:`orchestration.store.fingerprints`), computed once per project."""
        from orchestration.store import fingerprints

        if self._prints is None or self._prints[0] is not project:
            self._prints = (project, fingerprints(project))
        return self._prints[1]

    async def _ledger(self, project: Project, executor: TaskExecutor, run_id: str) -> BudgetLedger | None:
        """The run's budget (``defaults.budget``, :attr:`budget_usd`, agents' ``budget``, the agents file's
        ``budgets.project_daily_usd`` with a store), starting from what the
        store says the run spent; ``None`` without caps. Raise :class:`ProjectValidationError` for a task whose
        calls would have no upper bound."""
        from orchestration.budget import BudgetLedger, budget_issues
        from orchestration.models import ProjectBudget

        caps = project.spec.defaults.budget
        if self.budget_usd is not None:
            caps = (caps or ProjectBudget()).model_copy(update={"max_cost_usd": self.budget_usd})
        agent_caps = {
            name: budget
            for name in sorted({t.agent for t in project.tasks})
            if (budget := project.registry.get(name).budget) is not None
        }
        store = self.store
        daily_usd = project.registry.budgets.project_daily_usd if store is not None else None
        if caps is None and not agent_caps and daily_usd is None:
            return None
        checked = (
            caps if daily_usd is None else (caps or ProjectBudget()).model_copy(update={"max_cost_usd": daily_usd})
        )
        issues = budget_issues(project, checked, priced=lambda agent: bool(executor.llm_for(agent).pricing_provider))
        if issues:
            raise ProjectValidationError(issues)
        spent = await anyio.to_thread.run_sync(store.spent, run_id) if store is not None else {}
        daily = (project.name, daily_usd) if daily_usd is not None else None
        return BudgetLedger(
            run_id, caps, agent_caps, store=store, spent=spent, on_event=self._budget_event, daily=daily
        )

    def _budget_event(self, kind: str, status: BudgetStatus) -> None:
        if self.events.active:
            assert self.run_id is not None
            self.events.emit(RunEvent(EventKind(kind), self.run_id, budget=status))

    def _tracing(self) -> Tracing | None:
        """The run's tracing, if ``otel`` (or ``ORCHESTRATE_OTEL``) asks for it."""
        from orchestration.telemetry import Tracing, wanted

        otel = self.otel
        if otel is False or (otel is None and not wanted()):
            return None
        return Tracing(None if otel is None or otel is True else otel)

    def reviews(self) -> list[Gate]:
        """The open review gates of the current (or last) run, oldest first; empty without a store or a run."""
        if self.store is None or self.run_id is None:
            return []
        return self.store.open_gates(self.run_id)

    async def decide(
        self,
        task_id: str,
        decision: Literal["approve", "reject", "edit"],
        *,
        message: str | None = None,
        actor: str = "python",
        output: str | None = None,
        prompt: str | None = None,
        system_prompt: str | None = None,
        options: Mapping[str, Any] | None = None,
        digest: str | None = None,
        decision_id: str | None = None,
        run_id: str | None = None,
    ) -> Gate:
        """Decide the current gate of ``task_id`` in ``run_id`` (default: the current or last run) and return it
        as decided; a running run picks the decision up within about a second, from any process.

        ``edit`` replaces the answer (``output``, checked against a json task's schema) or the request
        (``prompt``, ``system_prompt``, ``options``); ``reject`` needs a ``message``. The same ``decision_id``
        again returns the gate as decided; otherwise a refusal raises a
        :class:`~orchestration.store.GateError` (``ValueError``): unknown gate, decided already
        (:class:`~orchestration.store.GateConflictError`), ``digest`` no longer the gate's
        (:class:`~orchestration.store.StaleGateError`), or an invalid edit."""
        from uuid import uuid4

        from orchestration.store import Decision, DecisionKind

        run_id = run_id or self.run_id
        if self.store is None or run_id is None:
            raise ValueError("deciding a review needs a run store and a run: ProjectOrchestrator(..., store=...)")
        edits = {"output": output, "prompt": prompt, "system_prompt": system_prompt, "options": options}
        edit = {key: value for key, value in edits.items() if value is not None}
        named = decision_id or uuid4().hex
        chosen = Decision(DecisionKind(decision), actor, message, digest=digest, edit=edit or None, decision_id=named)
        store = self.store
        return await anyio.to_thread.run_sync(lambda: store.decide(run_id, task_id, chosen))

    def _emit(self, kind: EventKind) -> None:
        if self.events.active:
            assert self.run_id is not None
            self.events.emit(RunEvent(kind, self.run_id))

    def _paced(self, endpoint: str, pace: PacingStatus) -> None:
        """An endpoint's pace changed: announce it to the run's listeners."""
        if self.events.active:
            assert self.run_id is not None
            self.events.emit(RunEvent(EventKind.ENDPOINT_PACED, self.run_id, endpoint=endpoint, pace=pace))

    async def run(self, *, run_id: str | None = None) -> dict[str, ExecutionResult]:
        """Run every task; return results by task id, in the project's task order."""
        self.resume_plan = None
        return await self._run(self.validate(), run_id or new_run_id(), {})

    async def resume(self, run_id: str) -> dict[str, ExecutionResult]:
        """Continue a stored run: rerun only the tasks that did not succeed, under the same run id.

        Succeeded tasks are reloaded (their outputs feed downstream templates) unless the
        project changed their prompt or agent; those and their descendants rerun, as
        :attr:`resume_plan` reports. The returned results hold the whole run. Raises
        :class:`~orchestration.store.RunOwnedError` while another session runs it.
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
        await anyio.to_thread.run_sync(_restore_output_files, project, self.resume_plan.kept)
        return await self._run(project, run_id, self.resume_plan.kept)

    @property
    def on_ray(self) -> bool:
        """Whether runs use Ray (:attr:`executor`, else the project's ``defaults.executor``)."""
        return (self.executor or self.spec.defaults.executor) == Executor.RAY

    async def _run(
        self, project: Project, run_id: str, kept: Mapping[str, ExecutionResult]
    ) -> dict[str, ExecutionResult]:
        """:meth:`_run_tasks`, on the Ray cluster while it runs when the run uses Ray."""
        if not self.on_ray:
            return await self._run_tasks(project, run_id, kept, None)
        from orchestration.ray_cluster import RayCluster
        from orchestration.remote_steps import RemoteSteps

        async with RayCluster(self.ray_address):
            return await self._run_tasks(project, run_id, kept, RemoteSteps(project.folder))

    async def _run_tasks(
        self, project: Project, run_id: str, kept: Mapping[str, ExecutionResult], ray: RemoteSteps | None
    ) -> dict[str, ExecutionResult]:
        """Run the tasks not in ``kept`` (succeeded already) under ``run_id``, holding the run's lease in the store
        (taken by ``begin_run``, renewed by a heartbeat, released by ``end_run``); ``ray``: on Ray."""
        from orchestration.store import RunStatus

        self.run_id = run_id
        self.results = dict(kept)
        store = self.store
        task_prints: list[str] = []
        durations: list[float | None] | None = None
        tracing = self._tracing()
        executor = TaskExecutor(project.registry, on_pace=self._paced, tracing=tracing, ray=ray)
        try:
            executor.budget = await self._ledger(project, executor, run_id)
        except BaseException:
            await executor.aclose()
            raise
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
                agents_file=project.registry.agents_file,
                depends_on={t.id: [project.tasks[p].id for p in t.parents] for t in project.tasks},
            )
        executor.cache = AnswerCache(store, project, self.cache_override) if store is not None else None
        output_files = OutputFiles(project.folder, project.allow_outside)
        mapped = bool(project.mapped)
        make_lifecycle = partial(FanOutLifecycle, project) if mapped else TaskLifecycle
        lifecycle = make_lifecycle(
            run_id,
            project.tasks,
            partial(_execute, executor, project.inputs, self.results),
            results=self.results,
            events=self.events,
            store=store,
            fingerprints=task_prints,
            kept=kept,
            reviews=ReviewHooks(
                render=partial(_render, executor, project.inputs, self.results),
                estimate_cost=executor.estimated_cost,
                on_review=self.on_review,
            ),
            inputs=project.inputs,
            output_files=output_files,
        )
        defaults = project.spec.defaults
        agent_names = sorted({t.agent for t in project.tasks})
        agent_index = {name: i for i, name in enumerate(agent_names)}
        children: list[list[int]] = [t.children for t in project.tasks]
        groups = agent_groups = [agent_index[t.agent] for t in project.tasks]
        triggers = [t.trigger for t in project.tasks]
        untimed = None
        if mapped:  # mapped tasks (for_each): nodes that grow the DAG when their items are known
            children, groups, durations, triggers, untimed = scheduler_graph(project, groups, durations)
        scheduler = DagScheduler(
            children,
            self.max_concurrency or defaults.max_concurrency,
            groups=groups,
            group_limits=[project.registry.get(name).limits.max_concurrent for name in agent_names],
            durations=durations,
            triggers=triggers,
            untimed=untimed,
        )
        if isinstance(lifecycle, FanOutLifecycle):
            lifecycle.attach(scheduler, agent_groups)
        lifecycle.on_waiting = scheduler.lend  # a task waiting for a review or a batch job holds no slot
        batches = self._batches(project, executor, lifecycle, run_id)
        lifecycle.tracing = tracing
        fail_fast = defaults.fail_fast if self.fail_fast is None else self.fail_fast
        lease: AbstractAsyncContextManager[None] = store.heartbeat(run_id) if store is not None else nullcontext()
        self.stopped_waiting = False
        if store is not None:  # the run's events, kept in the store for processes that follow it
            self.events.add_callback(store.record_event)
        self._emit(EventKind.RUN_STARTED)
        span = tracing.run(project.name, run_id) if tracing is not None else nullcontext()
        steps = any(t.step is not None for t in project.tasks)
        with span as run_span, import_path(project.folder) if steps else nullcontext():
            try:
                async with lease, batches:  # a lease taken over stops the run (LeaseLostError)
                    if self.wait_for_reviews:
                        await scheduler.run(lifecycle, fail_fast=fail_fast)
                    else:
                        await self._run_until_waiting(scheduler, lifecycle, fail_fast=fail_fast)
            finally:
                lifecycle.cancel_unfinished()
                await executor.aclose()
                status = RunStatus.WAITING if self.stopped_waiting else RunStatus.of(self.results)
                if tracing is not None and run_span is not None:
                    tracing.run_ended(run_span, status)
                try:
                    if store is not None:  # releases the lease (refused if it was taken over)
                        await store.end_run(run_id, status)
                finally:
                    self._emit(EventKind.RUN_FINISHED)
                    self.events.close_streams()
                    if store is not None:
                        self.events.remove_callback(store.record_event)
        if isinstance(lifecycle, FanOutLifecycle):
            self.results = lifecycle.ordered(self.results)
        else:
            self.results = {t.id: self.results[t.id] for t in project.tasks}
        return self.results

    def _batches(
        self, project: Project, executor: TaskExecutor, lifecycle: TaskLifecycle, run_id: str
    ) -> AbstractAsyncContextManager[None]:
        """The run's batch jobs (:mod:`orchestration.batching`), when a task goes by batch: the context they run in."""
        if not any(task.batch for task in project.tasks):
            return nullcontext()
        from orchestration.batching import Batches, BatchProgress

        def progress(job: BatchProgress) -> None:
            if self.events.active:
                self.events.emit(RunEvent(EventKind.BATCH_STATUS, run_id, agent=job.agent, batch=job))

        executor.batches = Batches(
            run_id,
            project.spec.defaults.batch,
            executor.llm_for,
            store=self.store,
            on_batched=lifecycle.batched,
            on_unbatched=lifecycle.unbatched,
            on_progress=progress,
        )
        return executor.batches.running()

    async def _run_until_waiting(self, scheduler: DagScheduler, lifecycle: TaskLifecycle, *, fail_fast: bool) -> None:
        """``scheduler.run``, cancelled once every task that could progress waits for a review decision
        (:attr:`stopped_waiting` says so); raises what the scheduler raised."""
        error: Exception | None = None
        async with anyio.create_task_group() as group:

            async def schedule() -> None:
                nonlocal error
                try:
                    await scheduler.run(lifecycle, fail_fast=fail_fast)
                except Exception as exc:  # raised below, outside the task group (not in an exception group)
                    error = exc
                group.cancel_scope.cancel()

            group.start_soon(schedule)
            while True:  # polled: the states change in many places, and a check is a few set operations
                await anyio.sleep(_WAITING_CHECK_S)
                if lifecycle.waiting_only():
                    break
            self.stopped_waiting = True
            group.cancel_scope.cancel()
        if error is not None:
            raise error

    async def execute_task(self, task_id: str) -> ExecutionResult:
        """Run one task now, reading upstream outputs from :attr:`results`.

        Its dependencies must have succeeded already (in an earlier :meth:`run` or call).
        """
        project = self.validate()
        index = project.index[task_id]
        if project.tasks[index].fan_out is not None:
            raise ValueError(f"task '{task_id}' is mapped (for_each): its instances run in a whole run (run())")
        missing = [
            project.tasks[p].id
            for p in project.tasks[index].parents
            if not (r := self.results.get(project.tasks[p].id)) or not r.succeeded
        ]
        if missing:
            raise ValueError(f"task '{task_id}' depends on tasks that have not succeeded: {', '.join(missing)}")
        self.run_id = self.run_id or new_run_id()
        executor = TaskExecutor(project.registry)
        succeeded = {other: r for other, r in self.results.items() if r.succeeded and other != task_id}
        lifecycle = TaskLifecycle(
            self.run_id,
            project.tasks,
            partial(_execute, executor, project.inputs, self.results),
            results=self.results,
            events=self.events,
            kept=succeeded,
            inputs=project.inputs,
            output_files=OutputFiles(project.folder, project.allow_outside),
        )
        steps = project.tasks[index].step is not None
        try:
            with import_path(project.folder) if steps else nullcontext():
                if lifecycle.ready(index) is None:  # else its condition settled it
                    await lifecycle.run(index)
        finally:
            await executor.aclose()
        return self.results[task_id]

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


def _restore_output_files(project: Project, kept: dict[str, ExecutionResult]) -> None:
    """Write again the output files of kept successes that are missing (a crash between a success's commit and
    its file's write); a task whose file cannot be written is not kept: it runs again and reports why."""
    for task_id, result in list(kept.items()):
        task = project.task(mapped_task_of(task_id) or task_id)  # an instance's output file is its mapped task's
        if result.output_path is None or task.output_file is None:
            continue
        path = Path(result.output_path)
        if path.exists():
            continue
        try:
            resolve_output_path(str(path), project.folder, allow_outside=project.allow_outside)
            OutputFiles.write(path, result.output or "")
        except OutputFileError:
            del kept[task_id]


def _open_store(store: RunStore | str | Path | None) -> RunStore | None:
    if store is None or not isinstance(store, str | Path):
        return store
    from orchestration.store import RunStore

    return RunStore(store)


async def _execute(
    executor: TaskExecutor,
    inputs: dict[str, Any],
    upstream: Mapping[str, ExecutionResult],
    task: CompiledTask,
    started_at: datetime,
    request: Request | None = None,
) -> ExecutionResult:
    return await executor.execute(task, inputs, upstream, started_at=started_at, request=request)


def _render(
    executor: TaskExecutor, inputs: dict[str, Any], upstream: Mapping[str, ExecutionResult], task: CompiledTask
) -> list[Message]:
    return executor.messages_for(task, inputs, upstream)

"""The task lifecycle: the states a task goes through, and the one place that moves it along.

::

    BLOCKED ──ready──▶ READY ──start──▶ RUNNING ──answer──▶ COMMITTING ──durable──▶ SUCCESS
       │                                   ├──error───────────────────────────────▶ FAILED
       │                                   │          output file not written (COMMITTING) ─▶ FAILED
       │                                   ├──gated answer──▶ WAITING ──approve/edit──▶ COMMITTING
       │                                   │                     └──reject/timeout──────▶ FAILED
       │                                   └──request in a batch job──▶ BATCHED ──answered──▶ RUNNING
       ├──its condition (when) is false ───────────────────────────────────────────▶ SKIPPED
       ├──its condition cannot be evaluated ───────────────────────────────────────▶ FAILED
       ├──its dependencies did not end as its trigger rule needs ──────────────────▶ SKIPPED
       ├──its items are known (for_each)──▶ EXPANDED ──its instances ended──▶ SUCCESS | FAILED | SKIPPED
       ├──its items cannot be read (for_each)──────────────────────────────────────▶ FAILED
       └───────────────── the run is cancelled (any unfinished state) ─────────────▶ CANCELLED

:class:`TaskLifecycle` owns every task's state during a run. Its transitions are the only
code that changes one: each is checked against :data:`TRANSITIONS`, and a task that reaches
a final state gets its :class:`ExecutionResult` recorded in the run's results, in the run
store and in the event stream — in that one place, for every outcome alike.

Durability rule: a success is committed to the run store before :meth:`TaskLifecycle.run`
returns, so the scheduler releases a task's dependents only once its result survives a crash.
Results of one turn of the event loop share one commit (see :mod:`orchestration.store.writer`).
A task's ``output_file`` is written after that commit (atomically); when it cannot be written the
task fails (COMMITTING → FAILED) and its failed result, answer included, replaces the success.

A task's ``when`` (:mod:`orchestration.conditions`) is read when the scheduler finds it ready: false
settles it SKIPPED (``condition_false``) without taking a slot. A task skipped because of a
dependency carries ``upstream_failed`` when something upstream failed, ``upstream_skipped`` when
only false conditions stopped it (see :class:`~orchestration.models.TriggerRule`).

A task whose answer has a review gate (:mod:`orchestration.gating`) waits in WAITING for the gate's
decision, read from the run store; a resumed run reuses the answer the gate holds. A gate on the request
(``stage: before``) waits before the model is called: WAITING → RUNNING once approved or edited (the
request is sent as decided), → FAILED when rejected. The states the next
capabilities add (waiting for budget) go into :class:`TaskState` and
:data:`TRANSITIONS`, with a method here that moves a task into and out of them.

A mapped task (``for_each``) is EXPANDED into one instance per item once its items are known; each instance is
a task of its own (BLOCKED → ... → SUCCESS), and the mapped task ends with them
(:class:`orchestration.expansion.FanOutLifecycle` makes those moves).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from llm_abstractions import ErrorType, redact
from orchestration import gating
from orchestration.answer_cache import keeps
from orchestration.events import EventBus, EventKind, RunEvent
from orchestration.gating import Request
from orchestration.models import ErrorInfo, ExecutionResult, ExecutionStatus, utc_now
from orchestration.output_files import OutputFileError, OutputFiles
from orchestration.project import CompiledTask
from orchestration.reviewers import ReviewHooks, first_review
from orchestration.scheduler import Outcome
from orchestration.templates import TemplateError

if TYPE_CHECKING:
    from orchestration.store import RunStore
    from orchestration.store.gates import Gate, GateRequest
    from orchestration.telemetry import Tracing

__all__ = ["TRANSITIONS", "Execute", "IllegalTransitionError", "TaskLifecycle", "TaskState"]


class TaskState(StrEnum):
    """Where a task is in its run. The final states share their values with :class:`ExecutionStatus`."""

    BLOCKED = "blocked"
    """Waiting for its dependencies."""
    READY = "ready"
    """Its dependencies succeeded; waiting for a slot."""
    RUNNING = "running"
    """Holding a slot: its model is being called."""
    WAITING = "waiting"
    """Answered; its answer waits for a review decision (polled from the run store)."""
    BATCHED = "batched"
    """Its request waits in a batch job (collected, submitted or polled); it holds no concurrency slot."""
    COMMITTING = "committing"
    """Answered; its result is being made durable before its dependents may start."""
    EXPANDED = "expanded"
    """A mapped task (``for_each``) whose items are known: its instances run, and it ends once they all ended."""
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Its condition was false, or its dependencies did not end as its trigger rule needs."""
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED})

TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = {
    TaskState.BLOCKED: frozenset(
        {TaskState.READY, TaskState.EXPANDED, TaskState.SKIPPED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.READY: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.RUNNING: frozenset(
        {TaskState.COMMITTING, TaskState.WAITING, TaskState.BATCHED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.BATCHED: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.WAITING: frozenset({TaskState.RUNNING, TaskState.COMMITTING, TaskState.FAILED, TaskState.CANCELLED}),
    TaskState.COMMITTING: frozenset({TaskState.SUCCESS, TaskState.FAILED}),
    TaskState.EXPANDED: frozenset({TaskState.SUCCESS, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED}),
    TaskState.SUCCESS: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.SKIPPED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}
"""The moves a task may make: from each state, the states it may enter next."""

_EVENT_OF = {
    TaskState.RUNNING: EventKind.TASK_STARTED,
    TaskState.BATCHED: EventKind.TASK_BATCHED,
    TaskState.SUCCESS: EventKind.TASK_SUCCEEDED,
    TaskState.FAILED: EventKind.TASK_FAILED,
    TaskState.SKIPPED: EventKind.TASK_SKIPPED,
    TaskState.CANCELLED: EventKind.TASK_CANCELLED,
}


class Execute(Protocol):
    """Runs a task that took its slot at ``started_at`` to its result (success or failure); raises only when
    cancelled. ``request``: the messages and options to send instead of the task's own (a reviewed request)."""

    def __call__(
        self, task: CompiledTask, started_at: datetime, request: Request | None = None
    ) -> Awaitable[ExecutionResult]: ...


class IllegalTransitionError(RuntimeError):
    """A task was asked to make a move :data:`TRANSITIONS` does not allow (a bug in the caller)."""


class TaskLifecycle:
    """The states of one run's tasks, and the transitions that move them (see the module's diagram).

    ``results`` is filled as tasks reach a final state. Tasks in ``kept`` (successes of an earlier
    session of the run) start as ``SUCCESS``; every other task starts ``BLOCKED``.
    """

    def __init__(
        self,
        run_id: str,
        tasks: Sequence[CompiledTask],
        execute: Execute,
        *,
        results: dict[str, ExecutionResult],
        events: EventBus,
        store: RunStore | None = None,
        fingerprints: Sequence[str | None] = (),
        kept: Mapping[str, ExecutionResult] | None = None,
        reviews: ReviewHooks | None = None,
        inputs: Mapping[str, Any] | None = None,
        output_files: OutputFiles | None = None,
    ) -> None:
        """``reviews``: what reviewing a task needs besides the store (without it gates on the request are not
        opened, and only a human decides a gate); ``inputs``: what conditions and output paths read besides the
        results; ``output_files``: where output files go (default: the current folder, nothing outside it)."""
        self.run_id = run_id
        self._inputs = inputs or {}
        self._files = output_files
        self._reviews = reviews
        self.tasks = tasks
        self.results = results
        self._execute = execute
        self._events = events
        self._store = store
        self._fingerprints = fingerprints or [None] * len(tasks)
        kept = kept or {}
        self._index = {task.id: index for index, task in enumerate(tasks)}
        self._states = [TaskState.SUCCESS if task.id in kept else TaskState.BLOCKED for task in tasks]

    def state(self, index: int) -> TaskState:
        return self._states[index]

    def is_blocked(self, index: int) -> bool:
        return self._states[index] is TaskState.BLOCKED

    def ready(self, index: int) -> Outcome | None:
        """BLOCKED → READY: its dependencies ended as its trigger rule needs (``None``); or, when its condition is
        false, BLOCKED → SKIPPED (``condition_false``), when its condition cannot be read, BLOCKED → FAILED."""
        task = self.tasks[index]
        condition = task.condition
        if condition is not None:
            try:
                holds = condition.holds(self._inputs, task.upstream(self.results), task.variables)
            except TemplateError as exc:
                self._not_run(index, TaskState.FAILED, ErrorType.TEMPLATE_ERROR, redact(f"when: {exc}"))
                return Outcome.FAILED
            if not holds:
                message = f"its condition is false: {condition.source}"
                self._not_run(index, TaskState.SKIPPED, ErrorType.CONDITION_FALSE, message)
                return Outcome.SKIPPED
        self._move(index, TaskState.READY)
        return None

    def skip(self, index: int, cause: int) -> None:
        """BLOCKED → SKIPPED: ``cause``, an ancestor, did not succeed: ``upstream_skipped`` when its condition was
        false (nothing failed), else ``upstream_failed``."""
        cause_id = self.node_id(cause)
        if self._branch_skipped(cause):
            message = f"dependency '{cause_id}' was skipped (its condition is false)"
            self._not_run(index, TaskState.SKIPPED, ErrorType.UPSTREAM_SKIPPED, message)
        else:
            message = f"dependency '{cause_id}' did not succeed"
            self._not_run(index, TaskState.SKIPPED, ErrorType.UPSTREAM_FAILED, message)

    def node_id(self, index: int) -> str:
        """The id of the task ``index`` stands for."""
        return self.tasks[index].id

    def _branch_skipped(self, index: int) -> bool:
        """Whether ``index`` was skipped with nothing failed upstream (a false condition)."""
        if self._states[index] is not TaskState.SKIPPED:
            return False
        result = self.results.get(self.node_id(index))
        return result is not None and result.branch_skipped

    def _not_run(self, index: int, state: TaskState, error_type: ErrorType, message: str) -> None:
        """BLOCKED → ``state`` (skipped, or failed before it started), with an error saying why."""
        task = self.tasks[index]
        result = ExecutionResult(
            task_id=task.id,
            status=ExecutionStatus(state.value),
            agent=task.agent,
            completed_at=utc_now(),
            error=ErrorInfo(type=error_type, message=message),
            metadata=task.task.metadata,
        )
        self._settle(index, state, result)

    tracing: Tracing | None = None
    """Traces each task as a span (``otel``), its model calls inside it."""

    async def run(self, index: int) -> bool:
        """READY → RUNNING → a final state; whether the task succeeded (its success durable by then).

        Raises the store's error if a success could not be committed, and the cancellation if cancelled.
        """
        tracing = self.tracing
        if tracing is None:
            return await self._run(index)
        task = self.tasks[index]
        with tracing.task(task, self.run_id) as span:
            try:
                return await self._run(index)
            finally:
                tracing.task_ended(span, self.results.get(task.id))

    async def _run(self, index: int) -> bool:
        task = self.tasks[index]
        started_at = utc_now()
        self._move(index, TaskState.RUNNING)
        try:
            if gating.answer_gate(task):
                result = await self._reviewed(index, started_at)
            elif gating.request_gate(task) and self._reviews is not None:
                result = await self._reviewed_request(index, started_at)
            else:
                result = await self._execute(task, started_at)
        except anyio.get_cancelled_exc_class():
            waiting = self._states[index] is TaskState.WAITING
            self._settle(index, TaskState.CANCELLED, _cancelled(task, started_at, waiting=waiting))
            raise
        path = None
        if task.output_file is not None and result.succeeded:
            try:
                path = self._output_path(task)
            except OutputFileError as exc:
                error = ErrorInfo(type=ErrorType.OUTPUT_FILE_ERROR, message=redact(str(exc)))
                result = result.model_copy(update={"status": ExecutionStatus.FAILED, "error": error})
            else:
                result = result.model_copy(update={"output_path": str(path)})
        if not result.succeeded:
            self._settle(index, TaskState.FAILED, result)
            return False
        self._move(index, TaskState.COMMITTING)
        self.results[task.id] = result  # dependents read it once they start
        try:
            if self._store is not None:
                fingerprint, output_format = self._fingerprints[index], task.task.output_format
                await self._store.record(self.run_id, result, fingerprint, output_format, keep_answer=keeps(result))
        except BaseException:
            # The answer stands even if the store failed (its error then stops the run) or the run was
            # cancelled during the wait (the queued write commits all the same).
            self._settle(index, TaskState.SUCCESS, result, recorded=True)
            raise
        if path is not None:
            with anyio.CancelScope(shield=True):  # a quick write: a cancelled run still finds the file whole
                problem = await _write_output(path, result.output or "")
            if problem is not None:
                error = ErrorInfo(type=ErrorType.OUTPUT_FILE_ERROR, message=redact(problem))
                failed = result.model_copy(update={"status": ExecutionStatus.FAILED, "error": error})
                self._settle(index, TaskState.FAILED, failed)  # replaces the success in the store
                return False
        self._settle(index, TaskState.SUCCESS, result, recorded=True)
        return True

    def _output_path(self, task: CompiledTask) -> Path:
        """Where ``task``'s output file goes; raise :class:`OutputFileError`."""
        files = self._files or OutputFiles(Path.cwd())
        return files.path_for(task, self._inputs, self.results)

    async def _reviewed(self, index: int, started_at: datetime) -> ExecutionResult:
        """RUNNING → WAITING → the decided result of a task whose answer has a review gate.

        The answer is the one an earlier session of the run put in the task's gate, if there is one (the
        model is not called again), else the model's. The gate is opened (or found) in the store, and the
        task waits for its decision there; without a store the task fails."""
        task, store = self.tasks[index], self._store
        if store is None:
            message = "a review gate needs a run store (ProjectOrchestrator(..., store=...))"
            return gating.failed_result(task, started_at, ErrorInfo(type=ErrorType.INVALID_REQUEST, message=message))
        from orchestration.store.gates import GateRequest

        stored = await anyio.to_thread.run_sync(gating.stored_answer_gate, store, self.run_id, task.id)
        if stored is not None:
            answer, fired = gating.result_from_payload(task, stored.payload, started_at), stored.fired
        else:
            answer = await self._execute(task, started_at)
            if not answer.succeeded:
                return answer
            fired = gating.fired(task, answer)
            if not fired:  # auto_with_thresholds, none crossed: approved without a gate
                return answer
        review = task.review
        assert review is not None
        request = GateRequest(
            run_id=self.run_id,
            task_id=task.id,
            stage=review.stage,
            attempt=stored.attempt if stored is not None else 1,
            payload=stored.payload if stored is not None else gating.answer_payload(task, answer),
            policy=str(review.policy),
            fired=fired,
            timeout_s=review.timeout_s,
            on_timeout=review.on_timeout,
        )
        gate = await self._wait(index, store, request)
        return gating.decided_result(task, answer, gate)

    async def _reviewed_request(self, index: int, started_at: datetime) -> ExecutionResult:
        """RUNNING → WAITING → RUNNING → the result of a task whose rendered request has a review gate: the model
        is called with the request as approved or edited; a rejected (or timed out) request is never sent."""
        task, store = self.tasks[index], self._store
        hooks = self._reviews
        assert hooks is not None and task.review is not None
        if store is None:
            message = "a review gate needs a run store (ProjectOrchestrator(..., store=...))"
            return gating.failed_result(task, started_at, ErrorInfo(type=ErrorType.INVALID_REQUEST, message=message))
        from llm_abstractions.attachments import AttachmentError
        from orchestration.store.gates import GateRequest
        from orchestration.templates import TemplateError

        try:
            messages = hooks.render(task)
        except (TemplateError, AttachmentError):  # the executor reports it
            return await self._execute(task, started_at)
        payload = gating.request_payload(task, messages)
        fired = gating.fired_before(task, task.options, hooks.estimate_cost(task, messages, task.options))
        if not fired:
            return await self._execute(task, started_at)
        review = task.review
        request = GateRequest(
            run_id=self.run_id,
            task_id=task.id,
            stage=review.stage,
            attempt=1,
            payload=payload,
            policy=str(review.policy),
            fired=fired,
            timeout_s=review.timeout_s,
            on_timeout=review.on_timeout,
        )
        gate = await self._wait(index, store, request)
        outcome = gating.decided_request(task, messages, gate, started_at)
        self._move(index, TaskState.RUNNING)
        if isinstance(outcome, ExecutionResult):
            return outcome
        result = await self._execute(task, started_at, outcome)
        return gating.with_review(result, gating.review_record(gate, None))

    async def _wait(self, index: int, store: RunStore, request: GateRequest) -> Gate:
        """RUNNING → WAITING: open (or find) the gate, let the reviewer agent and ``on_review`` decide it if they
        will (the task holds its slot meanwhile), then wait for its decision."""
        gate = await anyio.to_thread.run_sync(store.request_gate, request)
        on_review = self._reviews.on_review if self._reviews is not None else None
        gate = await first_review(self.tasks[index], gate, store, self._execute, on_review)
        self._move(index, TaskState.WAITING)
        self._announce(EventKind.REVIEW_REQUESTED, index, gate)
        if gate.open and self.on_waiting is not None:
            self.on_waiting(index, False)
        gate = await gating.wait_for_decision(store, gate)
        self._announce(EventKind.REVIEW_DECIDED, index, gate)
        return gate

    on_waiting: Callable[[int, bool], None] | None = None
    """Told each time a task starts waiting for a review decision (``False``: it keeps its agent's slot) or a batch
    job (``True``: it gives its agent's ``max_concurrent`` slot away too); the scheduler gives its slot away."""

    def batched(self, task_id: str) -> None:
        """RUNNING → BATCHED: the task's request waits in a batch job (:mod:`orchestration.batching`); its slot and
        its agent's are given away (a real-time call it makes later still counts against ``max_concurrent``, at the
        agent's endpoint)."""
        index = self._index[task_id]
        self._move(index, TaskState.BATCHED)
        if self.on_waiting is not None:
            self.on_waiting(index, True)

    def unbatched(self, task_id: str) -> None:
        """BATCHED → RUNNING: the job answered (or the request goes in real time); no event."""
        index = self._index[task_id]
        if self._states[index] is TaskState.BATCHED:
            self._move(index, TaskState.RUNNING)

    def waiting_only(self) -> bool:
        """Whether every task that could progress waits for a review decision (none ready, running or
        committing, at least one waiting)."""
        states = set(self._states)
        progressing = {TaskState.READY, TaskState.RUNNING, TaskState.BATCHED, TaskState.COMMITTING}
        return TaskState.WAITING in states and not states & progressing

    def _announce(self, kind: EventKind, index: int, gate: Gate) -> None:
        if self._events.active:
            task = self.tasks[index]
            self._events.emit(RunEvent(kind, self.run_id, task.id, task.agent, gate=gate))

    def cancel_unfinished(self) -> None:
        """Every task not in a final state → CANCELLED (the run ended before it could finish)."""
        for index, state in enumerate(self._states):
            if not state.final:
                self._settle(index, TaskState.CANCELLED, _cancelled(self.tasks[index], None))

    def _settle(self, index: int, state: TaskState, result: ExecutionResult, *, recorded: bool = False) -> None:
        """Move to a final ``state`` with ``result``: kept in the results, queued for the store (unless
        ``recorded`` already), announced."""
        task = self.tasks[index]
        self.results[task.id] = result
        if self._store is not None and not recorded:
            self._store.record_nowait(self.run_id, result, self._fingerprints[index], task.task.output_format)
        self._move(index, state, result)

    def _move(self, index: int, state: TaskState, result: ExecutionResult | None = None) -> None:
        """The one assignment of a task's state; emits the transition's event, if it has one."""
        current = self._states[index]
        if state not in TRANSITIONS[current]:
            raise IllegalTransitionError(f"task '{self.tasks[index].id}' cannot go from {current} to {state}")
        self._states[index] = state
        back_to_work = state is TaskState.RUNNING and current in (TaskState.WAITING, TaskState.BATCHED)
        kind = None if back_to_work else _EVENT_OF.get(state)
        if kind is not None and self._events.active:
            task = self.tasks[index]
            agent = result.agent if result is not None else task.agent
            self._events.emit(RunEvent(kind, self.run_id, task.id, agent, result))


async def _write_output(path: Path, text: str) -> str | None:
    """Write an output file in a worker thread; why it could not be written, or ``None``."""
    try:
        await anyio.to_thread.run_sync(OutputFiles.write, path, text)
    except OutputFileError as exc:
        return str(exc)
    return None


def _cancelled(task: CompiledTask, started_at: datetime | None, *, waiting: bool = False) -> ExecutionResult:
    message = (
        "the run stopped while this task waited for a review decision: decide it, then resume the run"
        if waiting
        else "the run was cancelled before this task finished"
    )
    return ExecutionResult(
        task_id=task.id,
        status=ExecutionStatus.CANCELLED,
        agent=task.agent,
        started_at=started_at,
        completed_at=utc_now(),
        error=ErrorInfo(type=ErrorType.CANCELLED, message=message),
        metadata=task.task.metadata,
    )

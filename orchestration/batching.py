"""Batch agents: the requests of tasks that can wait go through their provider's batch API, at batch prices.

A task whose request goes by batch (its agent's ``batch: true``, unless the task says ``batch: false``) is called
through :class:`BatchedLlm`, the first link of its call chain. Its request joins its agent's collector (one per
agent: model and endpoint) and the task becomes ``batched``, giving its concurrency slots (the run's and its agent's
``max_concurrent``) away. A collector gathers ready requests for ``defaults.batch.window_s`` from the first one, or
until ``max_size`` (or the provider's limits on a job's requests and bytes:
:attr:`~llm_abstractions.batch.BatchLlm.batch_max_requests`, ``batch_max_bytes``); then the group is submitted as one
job, or, smaller than ``min_size``, goes in real time (``fallback: realtime``) or waits for more (``fallback: wait``,
up to ``max_wait_s``). A task cancelled while its request waits in the collector takes it out (it is not submitted).
Each request carries its task's id as its custom id
(:func:`~llm_abstractions.batch.custom_id_of`), and answers are matched back by it.

Durability: the job and its members (each request's custom id, task and digest) are committed to the run store
(:mod:`orchestration.store.batches`) before the job is submitted, labelled with the job's own id (the provider's
metadata where it keeps one). A resumed run re-attaches to the run's open jobs before its tasks start
(:meth:`Batches.running`): a job the provider acknowledged is polled (its results collected at once if it ended while
no process ran); a job whose acknowledgement never reached the store (a crash between the commit and the provider's
answer) is looked up by its label (:meth:`~llm_abstractions.batch.BatchLlm.find_batch`: OpenAI's metadata, Gemini's
display name, the offline provider); where the provider cannot find it (Anthropic), the job is abandoned and its
requests are submitted again, so a crash in that window may make the provider run those requests twice. Its tasks,
once they run again, wait for the job's answers instead of submitting their requests again (a task whose request
changed since sends the new one). A job collected just before a crash, whose answers did not all reach their tasks'
results, is read again on resume.

One poller per job reads its status at the provider's cadence (:attr:`~llm_abstractions.batch.BatchLlm.batch_poll_s`),
backing off by half each time up to ten times that, and hands each member its answer. A request that failed inside
the job is its task's attempt error (typed as a real-time one); the call chain retries a retryable one, in the next
batch (``fallback: wait``) or in real time (``realtime``). A job that expired, was cancelled or failed as a whole,
or outlived ``max_wait_s`` (it is then cancelled), sends its unfinished requests to the fallback. A run that stops
(cancelled, or ended with jobs nobody waits for) cancels its open jobs at the provider; a crash does not, and
``resume`` re-attaches.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from llm_abstractions import (
    BaseLlm,
    GenerationOptions,
    LlmError,
    LlmResponse,
    Message,
    ProviderUnavailableError,
    redact,
)
from llm_abstractions.batch import BatchLine, BatchLlm, BatchOutcome, BatchState, BatchStatus, custom_id_of
from llm_abstractions.wrappers.wrapper import WrapperLlm
from orchestration.log import get_logger
from orchestration.models import BatchDefaults, BatchFallback, BatchRecord, utc_now
from orchestration.store.batches import StoredJob

if TYPE_CHECKING:
    from orchestration.store import RunStore

__all__ = ["BatchProgress", "BatchedLlm", "Batches", "Ticket", "current_ticket"]

_log = get_logger(__name__)

_BACKOFF = 1.5
_FILL = 0.95
"""A job's input is filled up to this share of the provider's limit (the requests' sizes are estimates)."""
_MAX_POLL_FACTOR = 10.0


@dataclass
class Ticket:
    """The batch task whose call is under way: set by the executor around its call chain (:data:`current_ticket`)."""

    task_id: str
    sent_by_batch: bool = False
    """A job was tried for it already (a retry after a failure in a job goes by the fallback)."""
    record: BatchRecord | None = None
    """The job that answered, once one did."""


current_ticket: ContextVar[Ticket | None] = ContextVar("current_ticket", default=None)


@dataclass(frozen=True)
class BatchProgress:
    """Where a job is, as followers see it (the ``batch`` of a ``batch_status`` event)."""

    job_id: str
    agent: str
    provider: str
    state: str
    """A :class:`~llm_abstractions.batch.BatchState`: ``in_progress`` once submitted, then ``ended``, ``expired``,
    ``cancelled`` or ``failed``."""
    tasks: int
    batch_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "batch_id": self.batch_id,
            "agent": self.agent,
            "provider": self.provider,
            "state": self.state,
            "tasks": self.tasks,
            "counts": self.counts,
        }


class _Fallback:
    """The request was not answered by a job: it goes by the fallback."""


FALLBACK = _Fallback()


@dataclass
class _Waiter:
    """One task's wait for its answer from a job."""

    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: BatchOutcome | _Fallback = FALLBACK
    record: BatchRecord | None = None

    def deliver(self, outcome: BatchOutcome | _Fallback, record: BatchRecord | None = None) -> None:
        if not self.done.is_set():
            self.outcome, self.record = outcome, record
            self.done.set()


@dataclass(eq=False)
class _Member:
    task_id: str
    line: BatchLine
    waiter: _Waiter = field(default_factory=_Waiter)
    withdrawn: bool = False
    """Its task was cancelled before its job was committed: the request is not submitted."""
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = self.line.size


class _Collector:
    """The ready requests of one batch agent, waiting to be submitted together."""

    def __init__(self, batches: Batches, agent: str, llm: BatchLlm) -> None:
        self.batches, self.agent, self.llm = batches, agent, llm
        self.pending: dict[_Member, None] = {}
        """In the order they came (a dict: a cancelled task's request leaves in O(1))."""
        self.size = 0
        """The pending requests' bytes."""
        self.max_requests = min(batches.settings.max_size, llm.batch_max_requests or batches.settings.max_size)
        self.max_bytes = int(llm.batch_max_bytes * _FILL) if llm.batch_max_bytes is not None else None
        self.full = anyio.Event()
        self.collecting = False

    def add(self, member: _Member) -> None:
        self.pending[member] = None
        self.size += member.size
        self._check_full()
        if not self.collecting:
            self.collecting = True
            self.batches.start(self._collect)

    def withdraw(self, member: _Member) -> None:
        """``member``'s task was cancelled: its request leaves the group (or the job about to be committed)."""
        member.withdrawn = True
        if member in self.pending:
            self._remove([member])

    def _check_full(self) -> None:
        if len(self.pending) >= self.max_requests or (self.max_bytes is not None and self.size >= self.max_bytes):
            self.full.set()

    def _take(self) -> list[_Member]:
        """The oldest pending requests, as many as the next job holds: ``max_size`` and the provider's limits on a
        job's requests and bytes (a request larger than the limit alone goes alone, and the provider refuses it)."""
        group: list[_Member] = []
        size = 0
        for member in self.pending:
            if len(group) >= self.max_requests:
                break
            if self.max_bytes is not None and group and size + member.size > self.max_bytes:
                break
            group.append(member)
            size += member.size
        return group

    def _remove(self, group: Iterable[_Member]) -> None:
        for member in group:
            del self.pending[member]
            self.size -= member.size

    async def _collect(self) -> None:
        settings = self.batches.settings
        first = time.monotonic()
        try:
            while self.pending:
                with anyio.move_on_after(settings.window_s):
                    await self.full.wait()
                group = self._take()
                if len(group) < settings.min_size:
                    if settings.fallback is BatchFallback.REALTIME:
                        self._remove(group)
                        for member in group:
                            member.waiter.deliver(FALLBACK)
                        continue
                    if time.monotonic() - first < settings.max_wait_s:
                        continue  # wait for more requests
                self._remove(group)
                self.full = anyio.Event()
                self._check_full()
                first = time.monotonic()
                self.batches.start(self.batches.submit, self.agent, self.llm, group)
        finally:
            self.collecting = False


class Batches:
    """The batch jobs of one run (see the module's description)."""

    def __init__(
        self,
        run_id: str,
        settings: BatchDefaults,
        llm_for: Callable[[str], BaseLlm],
        *,
        store: RunStore | None = None,
        on_batched: Callable[[str], None] | None = None,
        on_unbatched: Callable[[str], None] | None = None,
        on_progress: Callable[[BatchProgress], None] | None = None,
    ) -> None:
        """``llm_for``: an agent's client (a :class:`BatchLlm`); ``on_batched`` and ``on_unbatched``: told when a
        task starts and stops waiting for a job; ``on_progress``: told where each job is."""
        self.run_id, self.settings, self.store = run_id, settings, store
        self._llm_for = llm_for
        self._on_batched, self._on_unbatched, self._on_progress = on_batched, on_unbatched, on_progress
        self._collectors: dict[str, _Collector] = {}
        self._attached: dict[str, tuple[_Waiter, str]] = {}
        """Waiters of tasks in jobs of an earlier session (re-attached), with their requests' digests, by task id."""
        self._live: dict[str, tuple[StoredJob, BatchLlm]] = {}
        """Open jobs, by job id."""
        self._group: anyio.abc.TaskGroup | None = None

    def start(self, work: Callable[..., Any], *args: Any) -> None:
        if self._group is None:
            raise RuntimeError("Batches.running() is not entered")
        self._group.start_soon(work, *args)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Re-attach to the run's open jobs, then let the run use batches; on the way out, cancel the jobs still
        open at the provider (nobody waits for them any more)."""
        async with anyio.create_task_group() as group:
            self._group = group
            try:
                await self._reattach()
                yield
            finally:
                group.cancel_scope.cancel()
                self._group = None
                with anyio.CancelScope(shield=True):
                    await self._cancel_open()

    async def answer(
        self, agent: str, task_id: str, messages: Sequence[Message], options: GenerationOptions | None
    ) -> tuple[BatchOutcome | _Fallback, BatchRecord | None]:
        """The answer of ``task_id``'s request from a job: this session's, or one it re-attached to."""
        llm = self._llm_for(agent)
        assert isinstance(llm, BatchLlm)
        line = llm.batch_line(custom_id_of(task_id), messages, options)
        attached = self._attached.pop(task_id, None)
        waiter = attached[0] if attached is not None and attached[1] == line.digest else None  # same request only
        member: _Member | None = None
        collector: _Collector | None = None
        if waiter is None:
            member = _Member(task_id, line)
            collector = self._collectors.get(agent)
            if collector is None:
                collector = self._collectors[agent] = _Collector(self, agent, llm)
            collector.add(member)
            waiter = member.waiter
        if self._on_batched is not None:
            self._on_batched(task_id)
        try:
            await waiter.done.wait()
        finally:
            if collector is not None and member is not None and not waiter.done.is_set():  # cancelled while waiting
                collector.withdraw(member)
            if self._on_unbatched is not None:
                self._on_unbatched(task_id)
        return waiter.outcome, waiter.record

    # -- jobs ------------------------------------------------------------------------------------

    async def submit(self, agent: str, llm: BatchLlm, group: Sequence[_Member]) -> None:
        """Commit the job with its members, submit it, then poll it to its end; what goes wrong unexpectedly (a
        provider's bug, the store refusing a write) fails the job's tasks, not the run."""
        try:
            await self._submit(agent, llm, group)
        except Exception as exc:
            self._failed([m.waiter for m in group], exc)

    def _failed(self, waiters: Iterable[_Waiter], exc: Exception) -> None:
        _log.warning("batch_job_failed", error=f"{type(exc).__name__}: {redact(str(exc))}")
        error = LlmError(redact(f"the batch job failed: {type(exc).__name__}: {exc}"))
        for waiter in waiters:
            waiter.deliver(error)

    async def _submit(self, agent: str, llm: BatchLlm, group: Sequence[_Member]) -> None:
        group = [m for m in group if not m.withdrawn]
        if not group:
            return
        job = StoredJob(
            job_id=f"orchestrate-{self.run_id}-{secrets.token_hex(4)}",
            run_id=self.run_id,
            agent=agent,
            provider=llm.provider,
            created_at=utc_now(),
            members={m.line.custom_id: m.task_id for m in group},
            digests={m.line.custom_id: m.line.digest for m in group},
        )
        waiters = {m.line.custom_id: m.waiter for m in group}
        if self.store is not None:
            await self.store.begin_batch(job)
        self._live[job.job_id] = (job, llm)
        try:
            job.batch_id = await llm.submit_batch([m.line for m in group], label=job.job_id)
        except LlmError as exc:
            self._end(job, "abandoned")
            for waiter in waiters.values():
                waiter.deliver(exc)
            return
        job.submitted_at, job.state = utc_now(), "submitted"
        if self.store is not None:
            await self.store.batch_acknowledged(job)
        await self._poll(job, llm, waiters)

    async def _reattach(self) -> None:
        """Pick up the run's open jobs of an earlier session."""
        if self.store is None:
            return
        for job in await anyio.to_thread.run_sync(self.store.open_batches, self.run_id):
            try:
                llm: BaseLlm | None = self._llm_for(job.agent)
            except Exception:  # the agent is gone from the project
                llm = None
            if not isinstance(llm, BatchLlm):  # the agent changed since
                self._end(job, "abandoned")
                continue
            if job.batch_id is None:
                try:
                    job.batch_id = await llm.find_batch(job.job_id)
                except LlmError:
                    job.batch_id = None
                if job.batch_id is None:  # never reached the provider (or it cannot tell): submitted again
                    self._end(job, "abandoned")
                    continue
                job.state = "submitted"
                await self.store.batch_acknowledged(job)
            waiters = {custom_id: _Waiter() for custom_id in job.members}
            for custom_id, task_id in job.members.items():
                self._attached[task_id] = waiters[custom_id], job.digests[custom_id]
            self._live[job.job_id] = (job, llm)
            self.start(self._watch, job, llm, waiters)

    async def _watch(self, job: StoredJob, llm: BatchLlm, waiters: dict[str, _Waiter]) -> None:
        """Poll a re-attached job; what goes wrong unexpectedly fails its tasks, not the run."""
        try:
            await self._poll(job, llm, waiters)
        except Exception as exc:
            self._failed(waiters.values(), exc)

    async def _poll(self, job: StoredJob, llm: BatchLlm, waiters: dict[str, _Waiter]) -> None:
        """Read the job's status until it is final, then hand each member its answer (or the fallback)."""
        assert job.batch_id is not None
        first = self.settings.poll_s or llm.batch_poll_s
        interval, deadline = first, job.created_at.timestamp() + self.settings.max_wait_s
        cancelled = False
        last: BatchStatus | None = None
        while True:
            try:
                status = await llm.batch_status(job.batch_id)
            except LlmError as exc:
                if not exc.retryable:
                    self._end(job, "abandoned")
                    for waiter in waiters.values():
                        waiter.deliver(exc)
                    return
                _log.warning("batch_status_failed", job=job.job_id, error=exc.type_name)
            else:
                if last is None or status != last:
                    self._progress(job, status)
                last = status
                if status.state.final:
                    break
            if not cancelled and time.time() > deadline:  # waited max_wait_s: its unfinished requests fall back
                cancelled = True
                try:
                    await llm.cancel_batch(job.batch_id)
                except LlmError as exc:
                    _log.warning("batch_cancel_failed", job=job.job_id, error=exc.type_name)
            await anyio.sleep(interval)
            interval = min(interval * _BACKOFF, first * _MAX_POLL_FACTOR)
        outcomes: dict[str, BatchOutcome] = {}
        if status.state is not BatchState.FAILED:
            try:
                outcomes = await llm.batch_results(job.batch_id)
            except LlmError as exc:
                _log.warning("batch_results_failed", job=job.job_id, error=exc.type_name)
        job.finished_at = utc_now()
        record = BatchRecord(id=job.batch_id, submitted_at=job.submitted_at, finished_at=job.finished_at)
        self._end(job, "collected")
        for custom_id, waiter in waiters.items():
            waiter.deliver(outcomes.get(custom_id, FALLBACK), record)

    def _progress(self, job: StoredJob, status: BatchStatus) -> None:
        if self._on_progress is not None:
            progress = BatchProgress(
                job.job_id,
                job.agent,
                job.provider,
                str(status.state),
                len(job.members),
                job.batch_id,
                dict(status.counts),
            )
            self._on_progress(progress)

    def _end(self, job: StoredJob, state: str) -> None:
        job.state = state
        job.finished_at = job.finished_at or utc_now()
        self._live.pop(job.job_id, None)
        if self.store is not None:
            self.store.batch_ended(job)

    async def _cancel_open(self) -> None:
        """Cancel at the provider the jobs still open (the run stopped), and record them cancelled."""
        for job, llm in list(self._live.values()):
            if job.batch_id is not None:
                try:
                    await llm.cancel_batch(job.batch_id)
                except LlmError as exc:
                    _log.warning("batch_cancel_failed", job=job.job_id, error=exc.type_name)
            self._end(job, "cancelled")


class BatchedLlm(WrapperLlm):
    """An agent's client whose calls for a batch task (:data:`current_ticket`) go through a job; calls with no
    ticket, retries after a job's failure with ``fallback: realtime``, and requests a job did not answer go to
    ``wrapped`` (the agent's real-time client). ``batch``: the batch path (a :class:`_BatchPath`, possibly behind
    the budget at batch prices)."""

    def __init__(self, wrapped: BaseLlm, batch: BaseLlm, fallback: BatchFallback) -> None:
        super().__init__(wrapped)
        self.batch = batch
        self.fallback = fallback

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        ticket = current_ticket.get()
        if ticket is None or (ticket.sent_by_batch and self.fallback is BatchFallback.REALTIME):
            return await self.wrapped.generate_content_async(messages, options, **overrides)
        try:
            return await self.batch.generate_content_async(messages, options, **overrides)
        except _Unanswered:
            return await self.wrapped.generate_content_async(messages, options, **overrides)


class _Unanswered(Exception):
    """No job answered the request and the fallback is real time."""


class BatchPath(BaseLlm):
    """A batch agent's calls through its jobs (:meth:`Batches.answer`); raises :class:`_Unanswered` for the real-time
    fallback, and the job's typed error for a request that failed inside it."""

    provider = "batch"

    def __init__(self, batches: Batches, agent: str, llm: BaseLlm) -> None:
        self.config, self.settings = llm.config, llm.settings  # the client's, checked already
        self.batches, self.agent, self.llm = batches, agent, llm

    @property
    def pricing_provider(self) -> str | None:
        return self.llm.pricing_provider

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        ticket = current_ticket.get()
        assert ticket is not None
        if overrides:
            extra = GenerationOptions.model_validate(overrides)
            options = extra if options is None else options.merged(extra)
        ticket.sent_by_batch = True
        outcome, record = await self.batches.answer(self.agent, ticket.task_id, messages, options)
        if isinstance(outcome, _Fallback):
            if self.batches.settings.fallback is BatchFallback.REALTIME:
                raise _Unanswered
            raise ProviderUnavailableError("the batch job ended before answering this request", provider=self.provider)
        if isinstance(outcome, LlmError):
            raise outcome
        ticket.record = record
        return outcome

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        return await self.generate_content_async(messages, options)  # as a wrapper's: the job is the call

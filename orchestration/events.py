"""Lifecycle events of a run: a callback hook and async streams."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

import anyio

from llm_abstractions.wrappers import PacingStatus
from orchestration.models import ExecutionResult

if TYPE_CHECKING:  # anyio imports its memory streams on first use: only runs with a subscriber pay for them
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from orchestration.batching import BatchProgress
    from orchestration.budget import BudgetStatus
    from orchestration.store.gates import Gate

__all__ = ["EventBus", "EventKind", "RunEvent"]


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    TASK_STARTED = "task_started"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_SKIPPED = "task_skipped"
    TASK_CANCELLED = "task_cancelled"
    TASK_EXPANDED = "task_expanded"
    """A mapped task's items are known (``for_each``): ``items`` instances of it are to run (ids ``<id>[<key>]``;
    instances kept from an earlier session of the run are not counted); each then has events of its own."""
    TASK_BATCHED = "task_batched"
    """A task's request joined a batch job (it waits without a slot)."""
    BATCH_STATUS = "batch_status"
    """A batch job was submitted, or its state or counts at the provider changed (``batch``)."""
    REVIEW_REQUESTED = "review_requested"
    """A task's review gate opened: the task waits for a decision (``gate``)."""
    REVIEW_DECIDED = "review_decided"
    """A task's review gate was decided (``gate``, with its decision)."""
    ENDPOINT_PACED = "endpoint_paced"
    """An endpoint's pace changed: its reason, or its rate by over 10% (``endpoint`` and ``pace`` say how)."""
    BUDGET_WARNING = "budget_warning"
    """A budget account crossed its ``warn_at`` share (``budget`` says which and how much is spent)."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """A call did not fit in a budget account (``budget``): tasks that need calls now fail."""
    RUN_FINISHED = "run_finished"


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something that happened in a run; ``result`` is set on a task's final event."""

    kind: EventKind
    run_id: str
    task_id: str | None = None
    agent: str | None = None
    result: ExecutionResult | None = None
    timestamp: float = field(default_factory=time.time)
    endpoint: str | None = None
    """The provider endpoint an ``endpoint_paced`` event is about (provider, host and path; never a key)."""
    pace: PacingStatus | None = None
    gate: Gate | None = None
    """The review gate a ``review_requested`` or ``review_decided`` event is about."""
    budget: BudgetStatus | None = None
    """The budget account a ``budget_warning`` or ``budget_exhausted`` event is about."""
    items: int | None = None
    """A ``task_expanded`` event: how many instances of the mapped task are to run."""
    batch: BatchProgress | None = None
    """The batch job a ``batch_status`` event is about."""


EventCallback = Callable[[RunEvent], None]


class EventBus:
    """Fans events out to callbacks and subscribed streams. Emitting with neither costs one check."""

    def __init__(self) -> None:
        self._callbacks: list[EventCallback] = []
        self._streams: list[MemoryObjectSendStream[RunEvent]] = []
        self._failed: list[EventCallback] = []
        """Callbacks that raised: logged once."""
        self.active = False
        """Whether anything listens (checked before every event is even built)."""

    def add_callback(self, callback: EventCallback) -> None:
        """Call ``callback`` synchronously for every event; it must not block."""
        self._callbacks.append(callback)
        self.active = True

    def remove_callback(self, callback: EventCallback) -> None:
        """Stop calling ``callback`` (added with :meth:`add_callback`; nothing happens if it was not)."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)
        self.active = bool(self._callbacks or self._streams)

    def subscribe(self) -> MemoryObjectReceiveStream[RunEvent]:
        """A stream of every event from now on; it ends when the run finishes."""
        send, receive = anyio.create_memory_object_stream[RunEvent](math.inf)
        self._streams.append(send)
        self.active = True
        return receive

    def emit(self, event: RunEvent) -> None:
        """Give ``event`` to every callback and stream. A callback that raises is logged (its first
        failure only) and keeps receiving events: a listener never stops the run."""
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception as exc:
                self._callback_failed(callback, event, exc)
        for stream in self._streams:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                stream.send_nowait(event)  # a subscriber that went away must not stop the run

    def _callback_failed(self, callback: EventCallback, event: RunEvent, exc: Exception) -> None:
        if callback in self._failed:
            return
        self._failed.append(callback)
        from orchestration.log import get_logger

        get_logger(__name__).error(
            "event_callback_failed",
            callback=getattr(callback, "__qualname__", None) or repr(callback),
            run_event=event.kind.value,
            task_id=event.task_id,
            error=f"{type(exc).__name__}: {exc}",
            note="later errors of this callback are not logged",
        )

    def close_streams(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        self.active = bool(self._callbacks)

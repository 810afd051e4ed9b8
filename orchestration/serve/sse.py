"""Event streams (SSE): a run's events, or every run's, read from the run store's ``events`` table.

Each connection polls the table for events after the last one it sent (:data:`POLL_S`), so it streams the runs of
every process alike, and a client that reconnects with ``Last-Event-ID`` (or ``?after=``) gets what followed that
event, with no gap and no repeat. A run's stream ends once the run stopped and everything it wrote was sent: the
run's row is read before its events, and a session's ``run_finished`` is written with the row's status, so the
events read after a stopped status complete the run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from orchestration.results import RunStatus
from orchestration.serve.views import event_json
from orchestration.store import RunStore, StoredEvent, UnknownRunError

__all__ = ["BATCH", "PING_S", "POLL_S", "all_events", "run_events", "stream"]

POLL_S = 0.25
"""How often a connection looks for new events while it has none to send."""
PING_S = 15.0
"""A comment (``: ping``) this often keeps an idle connection open through proxies."""
BATCH = 500
"""The most events read at once."""


def stream(events: AsyncIterator[ServerSentEvent], *, ping_s: float = PING_S) -> EventSourceResponse:
    """The SSE response of ``events``, with heartbeats; proxies are asked not to buffer it."""
    return EventSourceResponse(
        events,
        ping=ping_s,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def run_events(
    store: RunStore, run_id: str, after: int, *, poll_s: float = POLL_S
) -> AsyncIterator[ServerSentEvent]:
    """The run's events after ``after``; ends once the run is not running and every event it wrote was sent."""
    while True:
        try:
            record = await anyio.to_thread.run_sync(store.get_run, run_id)
        except UnknownRunError:  # deleted meanwhile
            return
        events = await anyio.to_thread.run_sync(store.events, run_id, after, BATCH)
        for event in events:
            yield _sse(event)
            after = event.seq
        if len(events) == BATCH:
            continue
        if record.status is not RunStatus.RUNNING:  # stopped before its events were read: they were its last
            return
        await anyio.sleep(poll_s)


async def all_events(store: RunStore, after: int, *, poll_s: float = POLL_S) -> AsyncIterator[ServerSentEvent]:
    """Every run's events after ``after``, for as long as the client listens."""
    while True:
        events = await anyio.to_thread.run_sync(store.events, None, after, BATCH)
        for event in events:
            yield _sse(event)
            after = event.seq
        if len(events) < BATCH:
            await anyio.sleep(poll_s)


def _sse(event: StoredEvent) -> ServerSentEvent:
    return ServerSentEvent(
        json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":")), id=str(event.seq), event=event.kind
    )

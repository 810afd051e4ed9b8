"""Event streams (SSE): a run's events, or every run's, read from the run store's ``events`` table.

The streams poll the table for events after the last one they sent (:data:`POLL_S`), so they stream the runs of
every process alike, and a client that reconnects with ``Last-Event-ID`` (or ``?after=``) gets what followed that
event, with no gap and no repeat. The streams of one run share its :class:`~.feeds.RunFeed`: the run is read (and
each event encoded) once, however many watch it. What one read found goes out in one write. A run's stream ends once
the run stopped and everything it wrote was sent: the run's status is read before its events, and a session's
``run_finished`` is written with the row's status, so the events read after a stopped status complete the run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from orchestration.serve.feeds import RunFeed, encode_event
from orchestration.store import RunStore

__all__ = ["BATCH", "PING_S", "POLL_S", "all_events", "run_events", "stream"]

POLL_S = 0.25
"""How often a stream looks for new events while it has none to send."""
PING_S = 15.0
"""A comment (``: ping``) this often keeps an idle connection open through proxies."""
BATCH = 500
"""The most events of every run read at once."""


def stream(events: AsyncIterator[bytes], *, ping_s: float = PING_S) -> EventSourceResponse:
    """The SSE response of ``events`` (encoded events, several at once), with heartbeats; proxies are asked not to
    buffer it."""
    return EventSourceResponse(
        events,
        ping=ping_s,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def run_events(feed: RunFeed, after: int) -> AsyncIterator[bytes]:
    """The run's events after ``after``; ends once the run is not running and every event it wrote was sent. The
    generator holds ``feed`` while it streams."""
    while (found := await feed.after(after)) is not None:
        chunk, after = found
        yield chunk


async def all_events(store: RunStore, after: int, *, poll_s: float = POLL_S) -> AsyncIterator[bytes]:
    """Every run's events after ``after``, for as long as the client listens."""
    while True:
        events = await anyio.to_thread.run_sync(store.events, None, after, BATCH)
        if events:
            yield b"".join(encode_event(event) for event in events)
            after = events[-1].seq
        if len(events) < BATCH:
            await anyio.sleep(poll_s)

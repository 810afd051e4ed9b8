"""One reader of a run's events for all its watchers: :class:`RunFeeds` hands every stream of a run the same
:class:`RunFeed`, which reads the run's events from the store once and encodes each once, however many watch.

A feed keeps the run's events from its first (encoded as the streams send them), so a watcher that joins late, or
reconnects with ``Last-Event-ID``, starts anywhere in them. It reads the store only when a watcher has sent
everything it holds: the first such watcher reads (again at once after a read that found events, else after a
pause: :data:`WRITING_SHARE` of :data:`~.sse.POLL_S` while the run was writing, all of it once it writes nothing),
the others wait for it and take what it read. A feed is dropped with its last watcher.
"""

from __future__ import annotations

import json
import math
import weakref
from bisect import bisect_right
from dataclasses import dataclass

import anyio
from sse_starlette import ServerSentEvent

from orchestration.results import RunStatus
from orchestration.serve.views import event_json
from orchestration.store import RunStore, StoredEvent, UnknownRunError

__all__ = ["READ_BATCH", "WRITING_SHARE", "RunFeed", "RunFeeds", "encode_event"]

READ_BATCH = 5000
"""The most events a feed reads at once."""
WRITING_SHARE = 0.2
"""After a read that found events, a read that finds none waits this share of the poll interval before the next
(the run writes: its next events are near); after two such reads, the whole interval."""


def encode_event(event: StoredEvent) -> bytes:
    """An event as its stream sends it: ``id`` its ``seq``, ``event`` its kind, ``data`` its JSON."""
    data = json.dumps(event_json(event), ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(data, id=str(event.seq), event=event.kind).encode()


@dataclass(frozen=True)
class _Read:
    seqs: list[int]
    chunks: list[bytes]
    stopped: bool
    """The run was not running when the read began: the events read complete it."""


class RunFeed:
    """The events of one run, read once for every watcher (get it from :class:`RunFeeds`)."""

    def __init__(self, store: RunStore, run_id: str, poll_s: float) -> None:
        self.store = store
        self.run_id = run_id
        self.poll_s = poll_s
        self.reads = 0
        """Reads of the store so far (each: the run's status, then its new events)."""
        self._seqs: list[int] = []
        self._chunks: list[bytes] = []
        self._ended = False
        self._idle_until = -math.inf
        """When the store may be read again (after a read that found nothing new)."""
        self._writing = False
        """Whether the last read found events: the run writes, and the next read that finds none waits less."""
        self._lock = anyio.Lock()

    async def after(self, seq: int) -> tuple[bytes, int] | None:
        """The encoded events after ``seq``, all at once, and the last one's seq; waits for the run to write some.
        ``None`` once the run stopped (or was deleted) and nothing after ``seq`` is left."""
        while True:
            start = bisect_right(self._seqs, seq)
            if start < len(self._seqs):
                return b"".join(self._chunks[start:]), self._seqs[-1]
            if self._ended:
                return None
            await self._refresh(len(self._seqs))

    async def _refresh(self, known: int) -> None:
        """Read what the run wrote since the last read, unless another watcher did while this one waited."""
        async with self._lock:
            if len(self._seqs) != known or self._ended:
                return
            if self._idle_until > anyio.current_time():
                await anyio.sleep_until(self._idle_until)
            try:
                read = await anyio.to_thread.run_sync(self._read, self._seqs[-1] if self._seqs else 0)
            except UnknownRunError:  # deleted meanwhile
                self._ended = True
                return
            self.reads += 1
            self._seqs += read.seqs
            self._chunks += read.chunks
            if len(read.seqs) < READ_BATCH:
                self._ended = read.stopped
                wait = 0.0 if read.seqs else self.poll_s * (WRITING_SHARE if self._writing else 1.0)
                self._idle_until = anyio.current_time() + wait
                self._writing = bool(read.seqs)

    def _read(self, after: int) -> _Read:
        """The run's status, then its events after ``after`` (a stopped status read first: those events are its
        last), encoded (in a worker thread)."""
        stopped = self.store.run_status(self.run_id) is not RunStatus.RUNNING
        events = self.store.events(self.run_id, after, READ_BATCH)
        return _Read([event.seq for event in events], [encode_event(event) for event in events], stopped)


class RunFeeds:
    """The feed of each run being watched (one per run, shared by its watchers; dropped with the last of them)."""

    def __init__(self, store: RunStore, poll_s: float) -> None:
        self.store = store
        self.poll_s = poll_s
        self._feeds: weakref.WeakValueDictionary[str, RunFeed] = weakref.WeakValueDictionary()

    def feed(self, run_id: str) -> RunFeed:
        """The run's feed (a new one unless a watcher holds one); hold it as long as the watcher watches."""
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = RunFeed(self.store, run_id, self.poll_s)
        return feed

"""Items from a worker thread to async readers, without ever blocking the worker.

A :class:`Reply` is one reader's stream. The worker :meth:`~Reply.post`\\ s items;
they collect in the :class:`Mailbox` of the reader's event loop, and one callback
scheduled in that loop (``AsyncBackend.run_sync_soon``) hands everything collected
so far to the readers. Text is handed over at most every :data:`TEXT_INTERVAL_S`
and while the loop is busy it piles up, so a reader gets several tokens in one
chunk; the worker never waits for the loop. (Per-token hand-over cost about a
tenth of the throughput of a small model on CPU: the loop's work competes with
the worker for the GIL.)
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import weakref

import anyio
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from llm_abstractions.errors import LlmError
from llm_abstractions.messages import LlmChunk

__all__ = ["Item", "Mailbox", "Reply"]

Item = str | LlmChunk | LlmError | bool
"""Text (joined when several wait), a last chunk, an error, or ``True`` to acknowledge a command."""

_END = None

TEXT_INTERVAL_S = 0.02
"""Text reaches a reader at most this often (50 times a second): fewer, larger chunks for the event loop."""


class Mailbox:
    """The items waiting for the readers of one event loop."""

    def __init__(self, token: EventLoopToken) -> None:
        self.token = token
        self.dead = False
        """The loop has finished: nobody will read what is posted here."""
        self._lock = threading.Lock()
        self._items: list[tuple[Reply, Item | None]] = []
        self._scheduled = False
        self._sent_at = -math.inf

    def post(self, reply: Reply, item: Item | None) -> None:
        """Queue ``item`` for ``reply`` (``None`` ends its stream); called from the worker thread.

        Text waits until :data:`TEXT_INTERVAL_S` has passed since the last hand-over
        (the next post after that sends it); anything else is handed over at once.
        """
        now = time.monotonic()
        with self._lock:
            self._items.append((reply, item))
            if self._scheduled or self.dead or (isinstance(item, str) and now - self._sent_at < TEXT_INTERVAL_S):
                return
            self._scheduled = True
            self._sent_at = now
        try:
            self.token.backend_class.run_sync_soon(self._flush, (), self.token.native_token)
        except anyio.RunFinishedError:
            self.dead = True

    def _flush(self) -> None:
        """Runs in the event loop: hand over everything collected, text joined per reader."""
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
        pending: dict[Reply, list[str]] = {}
        for reply, item in items:
            if isinstance(item, str):
                pending.setdefault(reply, []).append(item)
                continue
            text = "".join(pending.pop(reply, ()))
            if isinstance(item, LlmChunk) and text:
                item = item.model_copy(update={"text": text + item.text})
            elif text:
                reply.send(text)
            if item is _END:
                reply.close()
            else:
                reply.send(item)
        for reply, texts in pending.items():
            reply.send("".join(texts))


_mailboxes: weakref.WeakValueDictionary[int, Mailbox] = weakref.WeakValueDictionary()
_mailboxes_lock = threading.Lock()


def _mailbox(token: EventLoopToken) -> Mailbox:
    key = id(token.native_token)
    with _mailboxes_lock:
        mailbox = _mailboxes.get(key)
        if mailbox is None or mailbox.dead:
            mailbox = _mailboxes[key] = Mailbox(token)
        return mailbox


class Reply:
    """One reader's stream of :data:`Item`\\ s, written from a worker thread."""

    def __init__(self, mailbox: Mailbox, send: MemoryObjectSendStream[Item]) -> None:
        self.mailbox = mailbox
        self._send = send

    @classmethod
    def open(cls) -> tuple[Reply, MemoryObjectReceiveStream[Item]]:
        """A reply bound to the current event loop, and the stream to read it from."""
        send, receive = anyio.create_memory_object_stream[Item](math.inf)
        return cls(_mailbox(current_token()), send), receive

    @property
    def unreachable(self) -> bool:
        """The reader's event loop has finished."""
        return self.mailbox.dead

    def post(self, item: Item) -> None:
        """From the worker thread: queue one item."""
        self.mailbox.post(self, item)

    def finish(self, item: Item) -> None:
        """From the worker thread: queue a last item and end the stream."""
        self.mailbox.post(self, item)
        self.mailbox.post(self, _END)

    def send(self, item: Item) -> None:
        """In the event loop: hand ``item`` to the reader (dropped if it stopped reading)."""
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._send.send_nowait(item)

    def close(self) -> None:
        """In the event loop: end the stream."""
        self._send.close()

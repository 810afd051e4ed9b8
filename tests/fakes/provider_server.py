"""A wire-compatible fake LLM server on 127.0.0.1 for testing the real provider SDKs.

It speaks three APIs on one port, told apart by path:

- ``openai``: ``POST /v1/chat/completions`` (plain JSON, or SSE when ``"stream": true``;
  a usage chunk when ``stream_options.include_usage``), base URL ``server.openai_base_url``;
- ``anthropic``: ``POST /v1/messages`` (plain, or SSE events when ``"stream": true``;
  a forced tool call is answered with a ``tool_use`` block), base URL ``server.anthropic_base_url``;
- ``gemini``: ``POST /{version}/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse``, base URL ``server.gemini_base_url``;
- the batch APIs of OpenAI and Anthropic (:attr:`FakeProviderServer.batches`, :mod:`tests.fakes.batches`).

The free token-counting endpoints answer too: Anthropic's ``POST /v1/messages/count_tokens``
(``{"input_tokens": n}``) and Gemini's ``:countTokens`` (``{"totalTokens": n}``); ``n`` is the reply's
``input_tokens``, by default the words of the request's texts, as a call's usage counts them.

The server runs its own asyncio loop in a daemon thread, so any test (sync, asyncio or
trio) can start it; it handles HTTP/1.1 keep-alive and hundreds of concurrent requests.

What it answers is decided per request, in this order: the API's scripted queue
(:meth:`FakeProviderServer.script`), then the shared queue (``script(None, ...)``), then
:attr:`FakeProviderServer.handler` (a callable ``RecordedRequest -> Reply | Fault``),
then a default :class:`Reply` echoing ``"echo: <last user text>"``.

- :class:`Reply`: a success; text, served model name, finish reason, token usage (word
  counts by default; cache and reasoning counts, where the usage goes), stream pieces, delays,
  a mid-stream failure (``truncate_after`` text pieces, then ``truncate_mode`` ``"close"`` /
  ``"reset"`` / ``"clean"`` / ``"error"`` / ``"malformed"``), and each API's own extras
  (OpenAI refusals, Anthropic content blocks and ``stop_details``, Gemini blocked prompts).
- :class:`Fault`: an HTTP error with a provider-shaped body (``Fault.rate_limited``,
  ``server_error``, ``unavailable``, ``overloaded``, ``unauthorized``, ``forbidden``,
  ``bad_request``, ``context_length``), a connection reset (``Fault.reset()``), or a 200
  with a malformed JSON body / SSE event (``Fault.malformed_json()``); ``delay_s`` makes it slow.

With :attr:`FakeProviderServer.prompt_cache` set (a :class:`~tests.fakes.prompt_cache.PromptCache`), replies report
the cache reads and writes of each API's prompt caching, simulated over the requests so far.

Every request is recorded (:attr:`FakeProviderServer.requests`, a :class:`RecordedRequest`
with api, path, lowercase headers, parsed JSON body, model, stream flag, arrival time, and
``completed`` / ``client_closed`` events). ``requests_for(api)`` filters the log and
``wait_for_requests(n)`` blocks until ``n`` requests arrived.

Usage::

    with FakeProviderServer() as server:
        server.script("openai", Fault.rate_limited(retry_after="0.2"), Reply(text="hi"))
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)

The pytest fixture ``fake_server`` (``tests/fakes/fixtures.py``) starts one per test.
:class:`Reply`, :class:`Fault` and :class:`RecordedRequest` live in ``tests/fakes/scripted.py``
(re-exported here); the wire formats in ``tests/fakes/wire_formats.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Self
from urllib.parse import parse_qs, urlsplit

from tests.fakes.batches import FakeBatches
from tests.fakes.prompt_cache import PromptCache
from tests.fakes.scripted import Api, Fault, RecordedRequest, Reply, Response, TruncateMode, UsageStyle
from tests.fakes.wire_formats import (
    error_body,
    malformed_stream_event,
    render_complete,
    render_stream,
    stream_error_event,
)

__all__ = [
    "Api",
    "FakeProviderServer",
    "Fault",
    "PromptCache",
    "RecordedRequest",
    "Reply",
    "Response",
    "TruncateMode",
    "UsageStyle",
]


class _ClientGone(Exception):
    pass


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


class FakeProviderServer:
    """The fake server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, handler: Callable[[RecordedRequest], Response] | None = None) -> None:
        self.handler = handler
        """Decides the response of requests no queue answers."""
        self.prompt_cache: PromptCache | None = None
        """Simulates the providers' prompt caches in the usage of replies; ``None``: no cache counts."""
        self.requests: list[RecordedRequest] = []
        self.batches = FakeBatches()
        """The batch jobs (OpenAI ``/v1/batches``, Anthropic ``/v1/messages/batches``): :mod:`tests.fakes.batches`."""
        self._queues: dict[Api | None, deque[Response]] = {
            "openai": deque(),
            "anthropic": deque(),
            "gemini": deque(),
            None: deque(),
        }
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Start listening on a free port of 127.0.0.1; returns once it accepts connections."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-provider-server", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._on_connection, "127.0.0.1", 0, backlog=1024)

    def stop(self) -> None:
        """Close every connection and the listener, then stop the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What ``AsyncOpenAI(base_url=...)`` / ``OPENAI_BASE_URL`` take."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What ``AsyncAnthropic(base_url=...)`` / ``ANTHROPIC_BASE_URL`` take."""
        return self.url

    @property
    def gemini_base_url(self) -> str:
        """What google-genai's ``HttpOptions(base_url=...)`` / ``GOOGLE_GEMINI_BASE_URL`` take."""
        return self.url

    # -- scripting and the log -----------------------------------------------------

    def script(self, api: Api | None, *responses: Response) -> None:
        """Queue responses for the next requests to ``api`` (``None``: any API)."""
        with self._lock:
            self._queues[api].extend(responses)

    def pending(self, api: Api | None = None) -> int:
        """Scripted responses not used yet."""
        with self._lock:
            return len(self._queues[api])

    def requests_for(self, api: Api) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.api == api]

    def clear(self) -> None:
        """Forget the log and every scripted response."""
        with self._lock:
            self.requests.clear()
            for queue in self._queues.values():
                queue.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; ``TimeoutError`` otherwise."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} of {count} requests arrived within {timeout} s")
            return list(self.requests)

    def _record_and_choose(self, request: RecordedRequest) -> Response:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()
            for key in (request.api, None):
                queue = self._queues[key]
                if queue:
                    return queue.popleft()
        if self.handler is not None:
            return self.handler(request)
        return Reply()

    # -- HTTP --------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (_ClientGone, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # server shutdown; asyncio logs a re-raised cancel
            _reset(writer)
        finally:
            self._connections.discard(task)
            if not writer.is_closing():
                writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; ``False`` once the connection should end."""
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = await reader.readline()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raw = await _read_body(reader, headers)
        keep_alive = headers.get("connection", "").lower() != "close"
        batch = self.batches.handle(method, urlsplit(target).path, headers, raw)
        if batch is not None:
            status, body = batch
            await _pause(reader, self.batches.delay_of(method, urlsplit(target).path))
            await _write_head(writer, status, {"content-type": "application/json", "content-length": str(len(body))})
            writer.write(body)
            await writer.drain()
            return keep_alive
        request = _parse_request(method, target, headers, raw)
        response = self._record_and_choose(request)
        if isinstance(response, Reply) and self.prompt_cache is not None and not request.counts_tokens:
            response = self.prompt_cache.apply(request, response)
        try:
            if isinstance(response, Fault):
                return await self._send_fault(request, response, reader, writer) and keep_alive
            if request.stream:
                await self._send_stream(request, response, reader, writer)
                return False
            await self._send_reply(request, response, reader, writer)
            return keep_alive
        except (_ClientGone, ConnectionError):
            request.client_closed.set()
            raise

    async def _send_fault(
        self, request: RecordedRequest, fault: Fault, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        await _pause(reader, fault.delay_s)
        if fault.kind == "reset":
            _reset(writer)
            request.completed.set()
            return False
        if fault.kind == "malformed":
            if request.stream:
                await _write_head(writer, 200, {"content-type": "text/event-stream", "transfer-encoding": "chunked"})
                await _write_chunk(writer, malformed_stream_event(request.api))
                await _write_chunk(writer, b"")
                request.completed.set()
                return False
            body = b'{"id": "broken", "choices": [{"message": {"content": "x'
        else:
            body = (fault.body or json.dumps(error_body(request.api, fault))).encode()
        await _write_head(
            writer,
            fault.status,
            {"content-type": "application/json", "content-length": str(len(body)), **fault.headers},
        )
        writer.write(body)
        await writer.drain()
        request.completed.set()
        return True

    async def _send_reply(
        self, request: RecordedRequest, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _pause(reader, reply.delay_s)
        body = json.dumps(render_complete(request, reply)).encode()
        await _write_head(
            writer, 200, {"content-type": "application/json", "content-length": str(len(body)), **reply.headers}
        )
        writer.write(body)
        await writer.drain()
        request.completed.set()

    async def _send_stream(
        self, request: RecordedRequest, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _pause(reader, reply.delay_s)
        await _write_head(
            writer,
            200,
            {
                "content-type": "text/event-stream",
                "transfer-encoding": "chunked",
                "connection": "close",
                **reply.headers,
            },
        )
        events = render_stream(request, reply)
        for kind, payload in events:
            if kind == "piece":
                await _pause(reader, reply.chunk_delay_s)
            if kind == "truncate":
                if reply.truncate_mode == "reset":
                    _reset(writer)
                    return
                if reply.truncate_mode == "close":
                    writer.close()
                    return
                if reply.truncate_mode == "error":
                    await _write_chunk(writer, stream_error_event(request.api, reply.stream_error))
                if reply.truncate_mode == "malformed":
                    await _write_chunk(writer, malformed_stream_event(request.api))
                break
            await _write_chunk(writer, payload)
        await _write_chunk(writer, b"")
        request.completed.set()


# -- HTTP helpers ---------------------------------------------------------------------


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


def _api_of(path: str) -> Api | None:
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith(("/messages", "/messages/count_tokens")):
        return "anthropic"
    if ":generateContent" in path or ":streamGenerateContent" in path or ":countTokens" in path:
        return "gemini"
    return None


def _parse_request(method: str, target: str, headers: dict[str, str], raw: bytes) -> RecordedRequest:
    split = urlsplit(target)
    path = split.path
    api = _api_of(path)
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    model: str | None
    if api == "gemini":
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        stream = ":streamGenerateContent" in path
    else:
        model = str(body["model"]) if isinstance(body, dict) and "model" in body else None
        stream = bool(body.get("stream")) if isinstance(body, dict) else False
    return RecordedRequest(
        api=api,
        method=method,
        path=path,
        query=parse_qs(split.query),
        headers=headers,
        raw_body=raw,
        body=body,
        model=model,
        stream=stream,
        received_at=time.monotonic(),
    )


async def _pause(reader: asyncio.StreamReader, delay_s: float) -> None:
    """Wait ``delay_s``, noticing a client that hangs up meanwhile (raises ``_ClientGone``)."""
    if delay_s <= 0:
        return
    read = asyncio.ensure_future(reader.read(1))
    done, _ = await asyncio.wait({read}, timeout=delay_s)
    if done:
        if not read.result():
            raise _ClientGone
        return
    read.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await read


async def _write_head(writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()


async def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    if writer.is_closing():
        raise _ClientGone
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a graceful FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

"""A wire-compatible fake LLM server on 127.0.0.1 for testing the real provider SDKs.

It speaks three APIs on one port, told apart by path:

- ``openai``: ``POST /v1/chat/completions`` (plain JSON, or SSE when ``"stream": true``;
  a usage chunk when ``stream_options.include_usage``), base URL ``server.openai_base_url``;
- ``anthropic``: ``POST /v1/messages`` (plain, or SSE events when ``"stream": true``;
  a forced tool call is answered with a ``tool_use`` block), base URL ``server.anthropic_base_url``;
- ``gemini``: ``POST /{version}/models/{model}:generateContent`` and
  ``:streamGenerateContent?alt=sse``, base URL ``server.gemini_base_url``.

The server runs its own asyncio loop in a daemon thread, so any test (sync, asyncio or
trio) can start it; it handles HTTP/1.1 keep-alive and hundreds of concurrent requests.

What it answers is decided per request, in this order: the API's scripted queue
(:meth:`FakeProviderServer.script`), then the shared queue (``script(None, ...)``), then
:attr:`FakeProviderServer.handler` (a callable ``RecordedRequest -> Reply | Fault``),
then a default :class:`Reply` echoing ``"echo: <last user text>"``.

- :class:`Reply`: a success; text, served model name, finish reason, token usage (word
  counts by default), stream pieces, delays, and a mid-stream failure (``truncate_after``
  text pieces, then ``truncate_mode`` ``"close"`` / ``"reset"`` / ``"clean"`` / ``"error"``).
- :class:`Fault`: an HTTP error with a provider-shaped body (``Fault.rate_limited``,
  ``server_error``, ``unavailable``, ``overloaded``, ``unauthorized``, ``forbidden``,
  ``bad_request``, ``context_length``), a connection reset (``Fault.reset()``), or a 200
  with a malformed JSON body / SSE event (``Fault.malformed_json()``); ``delay_s`` makes it slow.

Every request is recorded (:attr:`FakeProviderServer.requests`, a :class:`RecordedRequest`
with api, path, lowercase headers, parsed JSON body, model, stream flag, arrival time, and
``completed`` / ``client_closed`` events). ``requests_for(api)`` filters the log and
``wait_for_requests(n)`` blocks until ``n`` requests arrived.

Usage::

    with FakeProviderServer() as server:
        server.script("openai", Fault.rate_limited(retry_after="0.2"), Reply(text="hi"))
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)

The pytest fixture ``fake_server`` (``tests/fakes/fixtures.py``) starts one per test.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Api",
    "FakeProviderServer",
    "Fault",
    "RecordedRequest",
    "Reply",
    "Response",
]

Api = Literal["openai", "anthropic", "gemini"]
TruncateMode = Literal["close", "reset", "clean", "error"]


@dataclass
class Reply:
    """A successful answer, rendered in the requesting API's wire format."""

    text: str | None = None
    """The answer; ``None`` echoes ``"echo: <last user text>"``. For a forced Anthropic
    tool call it must be a JSON object's text: it becomes the tool input."""
    model: str | None = None
    """Served model name; ``None`` reports the requested model."""
    finish_reason: str | None = None
    """Native finish reason; ``None`` means ``stop`` / ``end_turn`` (``tool_use``) / ``STOP``."""
    input_tokens: int | None = None
    """``None``: the word count of every text in the request."""
    output_tokens: int | None = None
    """``None``: the word count of the answer."""
    chunks: list[str] | None = None
    """Stream pieces; ``None`` splits the text into words (keeping the spaces)."""
    delay_s: float = 0.0
    """Wait before the response starts."""
    chunk_delay_s: float = 0.0
    """Wait before each stream piece."""
    truncate_after: int | None = None
    """Streams only: stop after this many pieces, ending as ``truncate_mode`` says."""
    truncate_mode: TruncateMode = "close"
    """``close``: drop the connection mid-body; ``reset``: send a TCP reset;
    ``clean``: finish the HTTP body properly but leave out the API's end events;
    ``error``: send the API's in-stream "overloaded" error event, then finish the body."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """A failed answer: an HTTP error, a connection reset, or a malformed body."""

    status: int = 500
    message: str = "internal error"
    kind: Literal["status", "reset", "malformed"] = "status"
    reason: str | None = None
    """Error flavour for the body: ``context_length`` selects each API's wording."""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    body: str | None = None
    """Raw body replacing the provider-shaped one."""

    @classmethod
    def rate_limited(
        cls, retry_after: str | float | None = None, retry_after_ms: str | float | None = None, status: int = 429
    ) -> Fault:
        """A 429 with optional ``Retry-After`` (seconds, fractional, or an HTTP date) and ``retry-after-ms``."""
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        return cls(status=status, message="rate limit exceeded", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        return cls(status=status, message="internal server error")

    @classmethod
    def unavailable(cls) -> Fault:
        return cls(status=503, message="service unavailable")

    @classmethod
    def overloaded(cls) -> Fault:
        """Anthropic's 529."""
        return cls(status=529, message="overloaded")

    @classmethod
    def unauthorized(cls) -> Fault:
        return cls(status=401, message="invalid api key")

    @classmethod
    def forbidden(cls) -> Fault:
        return cls(status=403, message="permission denied")

    @classmethod
    def bad_request(cls, message: str = "invalid request") -> Fault:
        return cls(status=400, message=message)

    @classmethod
    def context_length(cls) -> Fault:
        """A 400 worded the way each API reports a prompt over the context window."""
        return cls(status=400, message="context length exceeded", reason="context_length")

    @classmethod
    def reset(cls, delay_s: float = 0.0) -> Fault:
        """Reset the connection (TCP RST) after reading the request."""
        return cls(kind="reset", delay_s=delay_s)

    @classmethod
    def malformed_json(cls) -> Fault:
        """A 200 whose JSON body (or first SSE event) is cut off mid-object."""
        return cls(status=200, kind="malformed")


Response = Reply | Fault


@dataclass
class RecordedRequest:
    """One request the server received."""

    api: Api | None
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Lowercase header names."""
    raw_body: bytes
    body: Any
    """The JSON body, or ``None`` when it was not JSON."""
    model: str | None
    stream: bool
    received_at: float
    """``time.monotonic()`` at arrival."""
    completed: threading.Event = field(default_factory=threading.Event)
    """Set once the whole response was written."""
    client_closed: threading.Event = field(default_factory=threading.Event)
    """Set when the client went away before the response was complete."""

    @property
    def json(self) -> dict[str, Any]:
        """The body as a JSON object (fails the test otherwise)."""
        assert isinstance(self.body, dict), f"not a JSON object body: {self.raw_body[:200]!r}"
        return self.body


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

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    429: "rate_limit_exceeded",
}
_CONTEXT_MESSAGES = {
    "openai": "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "130000 tokens. Please reduce the length of the messages.",
    "anthropic": "prompt is too long: 210000 tokens > 200000 maximum",
    "gemini": "The input token count (1048600) exceeds the maximum number of tokens allowed (1048576).",
}


def _words(text: str) -> int:
    return len(text.split())


def _split_words(text: str) -> list[str]:
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces.append(word if i == 0 else " " + word)
    return [p for p in pieces if p] or [text]


def _texts(value: Any) -> Iterator[str]:
    """Every string under a ``text`` or ``content`` key (or bare strings in content lists)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("text", "content", "system", "system_instruction", "systemInstruction") and isinstance(
                item, str
            ):
                yield item
            elif isinstance(item, dict | list):
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


class FakeProviderServer:
    """The fake server; use as a context manager or call :meth:`start` / :meth:`stop`."""

    def __init__(self, handler: Callable[[RecordedRequest], Response] | None = None) -> None:
        self.handler = handler
        """Decides the response of requests no queue answers."""
        self.requests: list[RecordedRequest] = []
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
        request = _parse_request(method, target, headers, raw)
        response = self._record_and_choose(request)
        keep_alive = headers.get("connection", "").lower() != "close"
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
                event = b"event: message_start\n" if request.api == "anthropic" else b""
                await _write_chunk(writer, event + b'data: {"choices": [{"delta": {"content": "x"\n\n')
                await _write_chunk(writer, b"")
                request.completed.set()
                return False
            body = b'{"id": "broken", "choices": [{"message": {"content": "x'
        else:
            body = (fault.body or json.dumps(_error_body(request.api, fault))).encode()
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
        body = json.dumps(_render_complete(request, reply)).encode()
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
        events = _render_stream(request, reply)
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
                    await _write_chunk(writer, _stream_error_event(request.api))
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
    if path.endswith("/messages"):
        return "anthropic"
    if ":generateContent" in path or ":streamGenerateContent" in path:
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


# -- wire formats -----------------------------------------------------------------------


def _error_body(api: Api | None, fault: Fault) -> dict[str, Any]:
    message = _CONTEXT_MESSAGES.get(api or "", fault.message) if fault.reason == "context_length" else fault.message
    if api == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(fault.status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if api == "gemini":
        status = _GEMINI_STATUS.get(fault.status, "UNKNOWN")
        return {"error": {"code": fault.status, "message": message, "status": status}}
    code = "context_length_exceeded" if fault.reason == "context_length" else None
    kind = _OPENAI_ERROR_TYPES.get(fault.status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _last_user_text(request: RecordedRequest) -> str:
    body = request.body if isinstance(request.body, dict) else {}
    turns = body.get("contents") if request.api == "gemini" else body.get("messages")
    if not isinstance(turns, list) or not turns:
        return ""
    return " ".join(_texts(turns[-1] if isinstance(turns[-1], dict) else {}))


def _forced_tool(request: RecordedRequest) -> str | None:
    body = request.body if isinstance(request.body, dict) else {}
    choice = body.get("tool_choice")
    if request.api == "anthropic" and isinstance(choice, dict) and choice.get("type") == "tool":
        return str(choice.get("name"))
    return None


@dataclass
class _Answer:
    text: str
    model: str
    finish: str
    input_tokens: int
    output_tokens: int
    tool: str | None


def _answer(request: RecordedRequest, reply: Reply) -> _Answer:
    text = reply.text if reply.text is not None else f"echo: {_last_user_text(request)}"
    tool = _forced_tool(request)
    default_finish = {"openai": "stop", "anthropic": "tool_use" if tool else "end_turn", "gemini": "STOP"}
    return _Answer(
        text=text,
        model=reply.model or request.model or "fake-model",
        finish=reply.finish_reason or default_finish.get(request.api or "openai", "stop"),
        input_tokens=reply.input_tokens
        if reply.input_tokens is not None
        else sum(_words(t) for t in _texts(request.body)),
        output_tokens=reply.output_tokens if reply.output_tokens is not None else _words(text),
        tool=tool,
    )


def _render_complete(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    a = _answer(request, reply)
    if request.api == "anthropic":
        block: dict[str, Any] = (
            {"type": "tool_use", "id": "toolu_fake", "name": a.tool, "input": json.loads(a.text)}
            if a.tool
            else {"type": "text", "text": a.text}
        )
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": a.model,
            "content": [block],
            "stop_reason": a.finish,
            "stop_sequence": None,
            "usage": {"input_tokens": a.input_tokens, "output_tokens": a.output_tokens},
        }
    if request.api == "gemini":
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": a.text}]}, "finishReason": a.finish}],
            "usageMetadata": {
                "promptTokenCount": a.input_tokens,
                "candidatesTokenCount": a.output_tokens,
                "totalTokenCount": a.input_tokens + a.output_tokens,
            },
            "modelVersion": a.model,
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": a.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text}, "finish_reason": a.finish}],
        "usage": {
            "prompt_tokens": a.input_tokens,
            "completion_tokens": a.output_tokens,
            "total_tokens": a.input_tokens + a.output_tokens,
        },
    }


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _stream_error_event(api: Api | None) -> bytes:
    """The event each API sends when it fails after the stream started (here: overloaded)."""
    if api == "anthropic":
        return _sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
    if api == "gemini":
        return _sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    return _sse({"error": {"message": "The server is overloaded.", "type": "server_error", "code": None}})


def _render_stream(request: RecordedRequest, reply: Reply) -> list[tuple[str, bytes]]:
    """SSE events as (kind, bytes): kind ``piece`` carries text, ``truncate`` marks the cut."""
    a = _answer(request, reply)
    pieces = reply.chunks if reply.chunks is not None else _split_words(a.text)
    events: list[tuple[str, bytes]] = []
    render = {"anthropic": _anthropic_events, "gemini": _gemini_events}.get(request.api or "", _openai_events)
    head, piece_events, tail = render(request, a, pieces)
    events += [("meta", e) for e in head]
    for i, event in enumerate(piece_events):
        if reply.truncate_after is not None and i == reply.truncate_after:
            events.append(("truncate", b""))
            return events
        events.append(("piece", event))
    if reply.truncate_after is not None:
        events.append(("truncate", b""))
        return events
    events += [("meta", e) for e in tail]
    return events


Rendered = tuple[list[bytes], list[bytes], list[bytes]]


def _openai_events(request: RecordedRequest, a: _Answer, pieces: list[str]) -> Rendered:
    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": a.model}
        return _sse({**base, "choices": choices, **extra})

    head = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    body = [chunk([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in pieces]
    tail = [chunk([{"index": 0, "delta": {}, "finish_reason": a.finish}])]
    options = request.json.get("stream_options") or {}
    if options.get("include_usage"):
        usage = {
            "prompt_tokens": a.input_tokens,
            "completion_tokens": a.output_tokens,
            "total_tokens": a.input_tokens + a.output_tokens,
        }
        tail.append(chunk([], usage=usage))
    tail.append(b"data: [DONE]\n\n")
    return head, body, tail


def _anthropic_events(request: RecordedRequest, a: _Answer, pieces: list[str]) -> Rendered:
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": a.input_tokens, "output_tokens": 1},
    }
    if a.tool:
        block: dict[str, Any] = {"type": "tool_use", "id": "toolu_fake", "name": a.tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    head = [
        _sse({"type": "message_start", "message": message}, "message_start"),
        _sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    body = [_sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta") for d in deltas]
    tail = [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": a.finish, "stop_sequence": None},
                "usage": {"output_tokens": a.output_tokens},
            },
            "message_delta",
        ),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return head, body, tail


def _gemini_events(request: RecordedRequest, a: _Answer, pieces: list[str]) -> Rendered:
    def event(parts: list[dict[str, Any]], finish: str | None, with_usage: bool) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
        if finish:
            candidate["finishReason"] = finish
        data: dict[str, Any] = {"candidates": [candidate], "modelVersion": a.model}
        usage: dict[str, Any] = {"promptTokenCount": a.input_tokens}
        if with_usage:
            usage |= {"candidatesTokenCount": a.output_tokens, "totalTokenCount": a.input_tokens + a.output_tokens}
        data["usageMetadata"] = usage
        return _sse(data)

    body = [event([{"text": p}], None, False) for p in pieces]
    tail = [event([{"text": ""}], a.finish, True)]
    return [], body, tail

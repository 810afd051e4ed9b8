"""How the fake server renders replies and faults in each API's wire format.

OpenAI chat completions, Anthropic messages and Gemini generateContent: complete JSON
bodies, SSE stream events, provider-shaped error bodies and in-stream error events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.fakes.scripted import Api, Fault, RecordedRequest, Reply

__all__ = ["error_body", "malformed_stream_event", "render_complete", "render_stream", "stream_error_event"]

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


def error_body(api: Api | None, fault: Fault) -> dict[str, Any]:
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


def render_complete(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
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


def stream_error_event(api: Api | None) -> bytes:
    """The event each API sends when it fails after the stream started (here: overloaded)."""
    if api == "anthropic":
        return _sse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
    if api == "gemini":
        return _sse({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    return _sse({"error": {"message": "The server is overloaded.", "type": "server_error", "code": None}})


def malformed_stream_event(api: Api | None) -> bytes:
    """An SSE event of the kind each API sends for text, its JSON cut off mid-object."""
    event = b"event: content_block_delta\n" if api == "anthropic" else b""
    return event + b'data: {"choices": [{"delta": {"content": "x"\n\n'


def render_stream(request: RecordedRequest, reply: Reply) -> list[tuple[str, bytes]]:
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

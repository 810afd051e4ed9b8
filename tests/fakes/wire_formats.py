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

__all__ = [
    "error_body",
    "input_words",
    "malformed_stream_event",
    "render_complete",
    "render_stream",
    "stream_error_event",
    "word_count",
]

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


def word_count(text: str) -> int:
    """Tokens as the fake counts them: words."""
    return len(text.split())


def input_words(request: RecordedRequest) -> int:
    """The default input tokens: the words of every text in the request."""
    return sum(word_count(t) for t in _texts(request.body))


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
    reply: Reply


def _answer(request: RecordedRequest, reply: Reply) -> _Answer:
    text = reply.text if reply.text is not None else f"echo: {_last_user_text(request)}"
    tool = _forced_tool(request)
    default_finish = {"openai": "stop", "anthropic": "tool_use" if tool else "end_turn", "gemini": "STOP"}
    return _Answer(
        text=text,
        model=reply.model or request.model or "fake-model",
        finish=reply.finish_reason or default_finish.get(request.api or "openai", "stop"),
        input_tokens=reply.input_tokens if reply.input_tokens is not None else input_words(request),
        output_tokens=reply.output_tokens if reply.output_tokens is not None else word_count(text),
        tool=tool,
        reply=reply,
    )


def _openai_usage(a: _Answer) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": a.input_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens + a.output_tokens,
    }
    prompt = _present(cached_tokens=a.reply.cache_read_tokens, cache_write_tokens=a.reply.cache_write_tokens)
    if prompt:
        usage["prompt_tokens_details"] = prompt
    if a.reply.reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": a.reply.reasoning_tokens}
    return usage


def _anthropic_usage(a: _Answer, output_tokens: int) -> dict[str, Any]:
    """Anthropic's ``input_tokens`` leaves out the cache reads and writes."""
    r = a.reply
    uncached = a.input_tokens - (r.cache_read_tokens or 0) - (r.cache_write_tokens or 0)
    cache = _present(cache_read_input_tokens=r.cache_read_tokens, cache_creation_input_tokens=r.cache_write_tokens)
    return {"input_tokens": uncached, "output_tokens": output_tokens} | cache


def _anthropic_output_usage(a: _Answer) -> dict[str, Any]:
    usage: dict[str, Any] = {"output_tokens": a.output_tokens}
    if a.reply.reasoning_tokens is not None:
        usage["output_tokens_details"] = {"thinking_tokens": a.reply.reasoning_tokens}
    return usage


def _gemini_usage(a: _Answer, *, complete: bool) -> dict[str, Any]:
    """Gemini's ``candidatesTokenCount`` leaves out the thoughts; stream events but the last count the prompt only."""
    r = a.reply
    usage: dict[str, Any] = {"promptTokenCount": a.input_tokens} | _present(cachedContentTokenCount=r.cache_read_tokens)
    if complete and r.block_reason is None:
        usage |= {
            "candidatesTokenCount": a.output_tokens - (r.reasoning_tokens or 0),
            "totalTokenCount": a.input_tokens + a.output_tokens,
        } | _present(thoughtsTokenCount=r.reasoning_tokens)
    return usage


def _present(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _anthropic_content(a: _Answer) -> list[dict[str, Any]]:
    if a.reply.blocks is not None:
        return a.reply.blocks
    if a.tool:
        return [{"type": "tool_use", "id": "toolu_fake", "name": a.tool, "input": json.loads(a.text)}]
    return [{"type": "text", "text": a.text}]


def _gemini_candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish:
        candidate["finishReason"] = finish
    return candidate


def _gemini_body(a: _Answer, candidates: list[dict[str, Any]], *, complete: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"usageMetadata": _gemini_usage(a, complete=complete), "modelVersion": a.model}
    if a.reply.block_reason is None:
        return body | {"candidates": candidates}
    feedback = {"blockReason": a.reply.block_reason} | _present(blockReasonMessage=a.reply.block_message)
    return body | {"promptFeedback": feedback}


def render_complete(request: RecordedRequest, reply: Reply) -> dict[str, Any]:
    a = _answer(request, reply)
    if request.counts_tokens:
        return {"totalTokens": a.input_tokens} if request.api == "gemini" else {"input_tokens": a.input_tokens}
    if request.api == "anthropic":
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": a.model,
            "content": _anthropic_content(a),
            "stop_reason": a.finish,
            "stop_sequence": None,
            "usage": _anthropic_usage(a, a.output_tokens) | _anthropic_output_usage(a),
        } | _present(stop_details=reply.stop_details)
    if request.api == "gemini":
        return _gemini_body(a, [_gemini_candidate([{"text": a.text}], a.finish)], complete=True)
    message = {"role": "assistant", "content": None, "refusal": reply.refusal} if reply.refusal else None
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": a.model,
        "choices": [
            {
                "index": 0,
                "message": message or {"role": "assistant", "content": a.text},
                "finish_reason": a.finish,
            }
        ],
    }
    if reply.usage_style != "none":
        body["usage"] = _openai_usage(a)
    return body


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def stream_error_event(api: Api | None, fault: Fault | None = None) -> bytes:
    """The event each API sends when it fails after the stream started: ``fault``'s error, else "overloaded"."""
    if fault is not None:
        return _sse(error_body(api, fault), "error" if api == "anthropic" else None)
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

    style = a.reply.usage_style
    head = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    field = "content"
    if a.reply.refusal is not None:
        field, pieces = "refusal", _split_words(a.reply.refusal)
    body = [chunk([{"index": 0, "delta": {field: p}, "finish_reason": None}]) for p in pieces]
    finish = [{"index": 0, "delta": {}, "finish_reason": a.finish}]
    if style == "last_chunk":
        tail = [chunk(finish, usage=_openai_usage(a))]
    elif style == "x_groq":
        tail = [chunk(finish, x_groq={"id": "req_fake", "usage": {"queue_time": 0.01, **_openai_usage(a)}})]
    else:
        tail = [chunk(finish)]
    options = request.json.get("stream_options") or {}
    if style == "standard" and options.get("include_usage"):
        tail.append(chunk([], usage=_openai_usage(a)))
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
        "usage": _anthropic_usage(a, 1),
    }
    delta = {"stop_reason": a.finish, "stop_sequence": None} | _present(stop_details=a.reply.stop_details)
    tail = [
        _sse({"type": "message_delta", "delta": delta, "usage": _anthropic_output_usage(a)}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    head = [_sse({"type": "message_start", "message": message}, "message_start")]
    if a.reply.blocks is not None:
        head += [event for index, block in enumerate(a.reply.blocks) for event in _anthropic_block_events(index, block)]
        return head, [], tail
    if a.tool:
        block: dict[str, Any] = {"type": "tool_use", "id": "toolu_fake", "name": a.tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces]
    head += [
        _sse({"type": "content_block_start", "index": 0, "content_block": block}, "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    body = [_sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta") for d in deltas]
    return head, body, [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"), *tail]


def _anthropic_block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    """One content block as the stream sends it: its start (empty where deltas fill it), deltas, stop."""
    kind = block["type"]
    deltas: list[dict[str, Any]] = []
    start = block
    if kind == "text":
        start = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _split_words(block["text"])]
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
        deltas.append({"type": "signature_delta", "signature": block.get("signature", "sig")})
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        encoded = json.dumps(block["input"])
        half = len(encoded) // 2
        deltas = [{"type": "input_json_delta", "partial_json": part} for part in (encoded[:half], encoded[half:])]
    events = [_sse({"type": "content_block_start", "index": index, "content_block": start}, "content_block_start")]
    events += [_sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta") for d in deltas]
    return [*events, _sse({"type": "content_block_stop", "index": index}, "content_block_stop")]


def _gemini_events(request: RecordedRequest, a: _Answer, pieces: list[str]) -> Rendered:
    if a.reply.block_reason is not None:
        return [], [], [_sse(_gemini_body(a, [], complete=True))]
    body = [_sse(_gemini_body(a, [_gemini_candidate([{"text": p}], None)], complete=False)) for p in pieces]
    tail = [_sse(_gemini_body(a, [_gemini_candidate([{"text": ""}], a.finish)], complete=True))]
    return [], body, tail

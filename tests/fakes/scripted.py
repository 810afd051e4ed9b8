"""What a test scripts the fake provider server to answer, and what it records.

:class:`Reply` is a success, :class:`Fault` a failure; :class:`RecordedRequest` is one
entry of the server's request log. See :mod:`tests.fakes.provider_server`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Api", "Fault", "RecordedRequest", "Reply", "Response", "TruncateMode", "UsageStyle"]

Api = Literal["openai", "anthropic", "gemini"]
TruncateMode = Literal["close", "reset", "clean", "error", "malformed"]
UsageStyle = Literal["standard", "last_chunk", "x_groq", "none"]


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
    ``error``: send the API's in-stream error event (:attr:`stream_error`), then finish the body;
    ``malformed``: send an event whose JSON is cut off mid-object, then finish the body."""
    headers: dict[str, str] = field(default_factory=dict)
    stream_error: Fault | None = None
    """The error event of ``truncate_mode`` ``"error"``, in the API's shape; ``None``: each API's "overloaded"."""
    cache_read_tokens: int | None = None
    """Prompt tokens read from the cache, part of ``input_tokens``: OpenAI ``prompt_tokens_details.cached_tokens``,
    Anthropic ``cache_read_input_tokens``, Gemini ``cachedContentTokenCount``."""
    cache_write_tokens: int | None = None
    """Prompt tokens written to the cache, part of ``input_tokens``: Anthropic ``cache_creation_input_tokens``,
    OpenAI-compatible ``prompt_tokens_details.cache_write_tokens``."""
    reasoning_tokens: int | None = None
    """Output tokens spent thinking, part of ``output_tokens``: OpenAI ``completion_tokens_details.reasoning_tokens``,
    Anthropic ``output_tokens_details.thinking_tokens``, Gemini ``thoughtsTokenCount``.

    ``input_tokens`` and ``output_tokens`` are totals; each API gets them in its own terms (Anthropic's
    ``input_tokens`` without the cache counts, Gemini's ``candidatesTokenCount`` without the thoughts)."""
    usage_style: UsageStyle = "standard"
    """OpenAI: where usage goes. ``standard``: ``usage`` of the body, in streams a last chunk when asked for with
    ``include_usage``; ``last_chunk``: streams put it on the finish chunk, asked or not; ``x_groq``: streams put it
    in the finish chunk's ``x_groq.usage`` (Groq); ``none``: no usage at all."""
    refusal: str | None = None
    """OpenAI: the model's refusal (``message.refusal`` / ``delta.refusal``) instead of content."""
    blocks: list[dict[str, Any]] | None = None
    """Anthropic: the content blocks, as the API sends them (``text``, ``thinking``, ``tool_use``,
    ``server_tool_use``, ``*_tool_result``...), instead of one text block. Streamed: each block's start, its
    deltas (text, thinking, or the tool input as JSON), its stop; ``chunks`` and truncation do not apply."""
    stop_details: dict[str, Any] | None = None
    """Anthropic: ``stop_details`` (a refusal's ``category`` and ``explanation``)."""
    block_reason: str | None = None
    """Gemini: the prompt was blocked (``promptFeedback.blockReason``): no candidates at all."""
    block_message: str | None = None
    """Gemini: ``promptFeedback.blockReasonMessage``."""


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

    @property
    def counts_tokens(self) -> bool:
        """A request to a token-counting endpoint (Anthropic ``count_tokens``, Gemini ``countTokens``)."""
        return self.path.endswith(("/count_tokens", ":countTokens"))

"""HTTP-level error mapping shared by the SDK providers.

Status codes, error events inside a 200 stream and transport failures become the typed
errors of :mod:`llm_abstractions.errors`; ``retry-after-ms`` and ``retry-after`` (seconds,
fractional or not, or an HTTP date) become ``retry_after``, and the rate-limit headers ``rate_limits``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any

from llm_abstractions.errors import (
    AuthenticationError,
    ContextLengthExceededError,
    InvalidRequestError,
    LlmConnectionError,
    LlmError,
    LlmTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_abstractions.rate_limits import rate_limits_from_headers
from llm_abstractions.redaction import redact

__all__ = [
    "STATUS_OF_ERROR_TYPE",
    "error_for_status",
    "is_context_length_message",
    "parse_retry_after",
    "stainless_error",
    "stream_error",
    "transport_error",
]

_CONTEXT_PHRASES = (
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "prompt is too long",
    "input token count",
    "too many tokens",
    "exceeds the maximum number of tokens",
)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_context_length_message(message: str) -> bool:
    """Whether an error message says the prompt does not fit the model's context window."""
    lowered = message.lower()
    return any(phrase in lowered for phrase in _CONTEXT_PHRASES)


def _error_class(status: int, message: str) -> type[LlmError]:
    """The typed error an HTTP status (and its message) stands for."""
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitedError
    if status == 408:
        return LlmTimeoutError
    if status == 409 or status >= 500:
        return ProviderUnavailableError
    if is_context_length_message(message):
        return ContextLengthExceededError
    return InvalidRequestError


def error_for_status(status: int, message: str, *, provider: str, headers: Mapping[str, str] | None = None) -> LlmError:
    """The typed error of an HTTP error response."""
    text, retry_after = redact(f"HTTP {status}: {message}"), parse_retry_after(headers)
    return _error_class(status, message)(
        text,
        provider=provider,
        status_code=status,
        retry_after=retry_after,
        rate_limits=rate_limits_from_headers(headers),
    )


def stream_error(status: int, message: str, *, provider: str) -> LlmError:
    """The typed error of an error event inside a 200 stream, in the provider's words.

    ``status`` is the one the provider's error type stands for (overloaded: 529); it picks the
    error's type but is not reported as the response's status, which was 200.
    """
    return _error_class(status, message)(redact(f"the provider failed mid-stream: {message}"), provider=provider)


def transport_error(exc: BaseException, *, provider: str) -> LlmError | None:
    """The typed error of a transport failure (httpx / httpx2 / socket / malformed body), else ``None``."""
    httpx_bases = {c.__name__ for c in type(exc).__mro__ if c.__module__.split(".")[0] in ("httpx", "httpx2")}
    detail = redact(f"{type(exc).__name__}: {exc}".rstrip(": "))
    if "TimeoutException" in httpx_bases or isinstance(exc, TimeoutError):
        return LlmTimeoutError(f"request timed out ({detail})", provider=provider)
    if "TransportError" in httpx_bases or isinstance(exc, OSError):
        return LlmConnectionError(f"connection failed ({detail})", provider=provider)
    if isinstance(exc, json.JSONDecodeError):
        return ProviderUnavailableError(f"malformed response from the provider ({detail})", provider=provider)
    return None


def _body_message(body: Any, fallback: str) -> str:
    """The ``error.message`` (with its code or type) of a JSON error body."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            code = inner.get("code") or inner.get("type")
            return f"{inner['message']} ({code})" if code else str(inner["message"])
    return fallback


STATUS_OF_ERROR_TYPE = {  # the HTTP status an error body's type stands for (OpenAI, Anthropic, vLLM)
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "api_error": 500,
    "server_error": 500,
    "overloaded_error": 529,
}


def _status_of_stream_error(body: Any) -> int:
    """The HTTP status an error event sent inside a 200 stream stands for (server-side unless it says otherwise).

    Its ``type`` (``overloaded_error``), else its ``code`` (a type, or a status as vLLM sends).
    """
    inner = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        return 500
    for kind in (inner.get("type"), inner.get("code")):
        if isinstance(kind, str) and kind in STATUS_OF_ERROR_TYPE:
            return STATUS_OF_ERROR_TYPE[kind]
        if isinstance(kind, int) and 400 <= kind < 600:
            return kind
    return 500


def stainless_error(sdk: ModuleType, exc: Exception, *, provider: str) -> LlmError | None:
    """Map the exceptions of the ``openai`` and ``anthropic`` SDKs (both share one exception design)."""
    if isinstance(exc, sdk.APIStatusError) and exc.status_code >= 400:
        message = _body_message(exc.body, exc.message)
        return error_for_status(exc.status_code, message, provider=provider, headers=exc.response.headers)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        error = transport_error(cause, provider=provider)
        if error is None or isinstance(exc, sdk.APITimeoutError) != isinstance(error, LlmTimeoutError):
            kind = LlmTimeoutError if isinstance(exc, sdk.APITimeoutError) else LlmConnectionError
            error = kind(redact(f"{type(exc).__name__}: {exc}"), provider=provider)
        return error
    if isinstance(exc, sdk.APIResponseValidationError):
        return ProviderUnavailableError(f"malformed response from the provider: {redact(str(exc))}", provider=provider)
    if isinstance(exc, sdk.APIError):  # an error event inside a 200 stream (anthropic: a status error with 200)
        message = _body_message(exc.body, exc.message)
        return stream_error(_status_of_stream_error(exc.body), message, provider=provider)
    return None

"""Typed errors every provider maps its SDK's exceptions onto.

Each error has a stable snake_case ``type_name`` that results and events use, a
``retryable`` flag and an optional ``retry_after`` hint in seconds.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AuthenticationError",
    "ContentFilteredError",
    "ContextLengthExceededError",
    "InvalidRequestError",
    "LlmConnectionError",
    "LlmError",
    "LlmTimeoutError",
    "ProviderUnavailableError",
    "RateLimitedError",
]


class LlmError(Exception):
    """Base class of every model-call error."""

    type_name: ClassVar[str] = "internal"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        retryable: bool | None = None,
        provider: str | None = None,
        status_code: int | None = None,
        partial_text: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        """Seconds the provider asked us to wait before trying again."""
        self.retryable = self.default_retryable if retryable is None else retryable
        self.provider = provider
        self.status_code = status_code
        self.partial_text = partial_text
        """Text received before the error, for streams that broke mid-way."""


class RateLimitedError(LlmError):
    type_name = "rate_limited"
    default_retryable = True


class ProviderUnavailableError(LlmError):
    type_name = "provider_unavailable"
    default_retryable = True


class LlmTimeoutError(LlmError):
    type_name = "timeout"
    default_retryable = True


class LlmConnectionError(LlmError):
    type_name = "connection"
    default_retryable = True


class AuthenticationError(LlmError):
    type_name = "authentication"


class InvalidRequestError(LlmError):
    type_name = "invalid_request"


class ContextLengthExceededError(LlmError):
    type_name = "context_length_exceeded"


class ContentFilteredError(LlmError):
    type_name = "content_filtered"

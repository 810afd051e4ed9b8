"""The task error vocabulary, and the typed errors every provider maps its SDK's exceptions onto.

:class:`ErrorType` lists every error type a task result can carry. Each :class:`LlmError`
has one as its ``type_name``, a ``retryable`` flag, an optional ``retry_after`` hint
in seconds and, where the provider reported it, the ``usage`` of the failed call.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from llm_abstractions.messages import LlmResponse, Usage
    from llm_abstractions.rate_limits import RateLimits

__all__ = [
    "REFUSED_BEFORE_SENDING",
    "AuthenticationError",
    "BudgetExhaustedError",
    "CircuitOpenError",
    "ContentFilteredError",
    "ContextLengthExceededError",
    "ErrorType",
    "InvalidOutputError",
    "InvalidRequestError",
    "LlmConnectionError",
    "LlmError",
    "LlmTimeoutError",
    "OutputTruncatedError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "ReplicaLostError",
]


class ErrorType(StrEnum):
    """Why a task did not succeed; the values are part of the results format."""

    RATE_LIMITED = "rate_limited"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    TIMEOUT = "timeout"
    """A model call or the whole task ran out of time."""
    CONNECTION = "connection"
    AUTHENTICATION = "authentication"
    INVALID_REQUEST = "invalid_request"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    CONTENT_FILTERED = "content_filtered"
    CIRCUIT_OPEN = "circuit_open"
    """The endpoint's circuit breaker refused the call."""
    INVALID_OUTPUT = "invalid_output"
    """The answer did not match the output schema, even after a repair call."""
    OUTPUT_TRUNCATED = "output_truncated"
    """The answer was cut off by ``max_tokens`` (empty, or the task does not accept a cut-off answer)."""
    TEMPLATE_ERROR = "template_error"
    """A prompt template failed to render."""
    UPSTREAM_FAILED = "upstream_failed"
    """A dependency of the task did not succeed."""
    UPSTREAM_SKIPPED = "upstream_skipped"
    """A dependency was skipped, with nothing failed upstream (a ``when`` was false), and the task's trigger rule
    needed it to succeed."""
    CONDITION_FALSE = "condition_false"
    """The task's ``when`` condition was false: it was skipped (a branch not taken, not a failure)."""
    CODE_ERROR = "code_error"
    """A code step (``type: python``) raised, or returned a value it cannot output."""
    OUTPUT_FILE_ERROR = "output_file_error"
    """The task's ``output_file`` could not be written (or its path is outside the project's folder)."""
    INVALID_ITEMS = "invalid_items"
    """A mapped task's items (``for_each``) could not be read: not a list, or keys missing or repeated."""
    ITEMS_FAILED = "items_failed"
    """Instances of a mapped task (``for_each``) did not succeed."""
    CANCELLED = "cancelled"
    """The run was cancelled before the task finished."""
    REVIEW_REJECTED = "review_rejected"
    """A reviewer rejected the task's answer (the message says why)."""
    REVIEW_TIMEOUT = "review_timeout"
    """The task's review gate timed out with ``on_timeout: fail``."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """The run's (or the agent's) budget had no room left for the call's worst case."""
    INTERNAL = "internal"
    """Any other exception."""


REFUSED_BEFORE_SENDING = frozenset({ErrorType.CIRCUIT_OPEN, ErrorType.BUDGET_EXHAUSTED})
"""Errors of attempts that sent no request (an open circuit, no budget left): they are not calls."""


class LlmError(Exception):
    """Base class of every model-call error."""

    type_name: ClassVar[ErrorType] = ErrorType.INTERNAL
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
        usage: Usage | None = None,
        rate_limits: RateLimits | None = None,
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
        self.usage = usage
        """Tokens the provider reported (and bills) for the failed call, if it said."""
        self.rate_limits = rate_limits
        """What the error response's headers said of the provider's rate limits."""


class OutputTruncatedError(LlmError):
    """The answer was cut off by ``max_tokens``; not retried (the same request would be cut off again)."""

    type_name = ErrorType.OUTPUT_TRUNCATED


class RateLimitedError(LlmError):
    type_name = ErrorType.RATE_LIMITED
    default_retryable = True


class ProviderUnavailableError(LlmError):
    type_name = ErrorType.PROVIDER_UNAVAILABLE
    default_retryable = True


class ReplicaLostError(ProviderUnavailableError):
    """One replica of a model served by several died with the call in flight; the others still serve, so a retry
    goes to one of them. It says nothing of the endpoint's health: it does not count towards its circuit breaker."""


class LlmTimeoutError(LlmError):
    type_name = ErrorType.TIMEOUT
    default_retryable = True


class LlmConnectionError(LlmError):
    type_name = ErrorType.CONNECTION
    default_retryable = True


class AuthenticationError(LlmError):
    type_name = ErrorType.AUTHENTICATION


class InvalidRequestError(LlmError):
    type_name = ErrorType.INVALID_REQUEST


class ContextLengthExceededError(LlmError):
    type_name = ErrorType.CONTEXT_LENGTH_EXCEEDED


class ContentFilteredError(LlmError):
    """The provider filtered or refused the answer, or blocked the prompt; the message says why."""

    type_name = ErrorType.CONTENT_FILTERED


class CircuitOpenError(LlmError):
    """The endpoint's circuit is open: no request was sent.

    Retryable, with ``retry_after`` set to the rest of the cool-down, so a task with no
    fallback waits for the trial call instead of failing; a fallback chain moves on.
    """

    type_name = ErrorType.CIRCUIT_OPEN
    default_retryable = True


class BudgetExhaustedError(LlmError):
    """The budget had no room for the call (its worst case); nothing was sent. Not retried."""

    type_name = ErrorType.BUDGET_EXHAUSTED


class InvalidOutputError(LlmError):
    """The answer is not JSON matching the output schema, even after one repair."""

    type_name = ErrorType.INVALID_OUTPUT

    def __init__(self, message: str, *, response: LlmResponse) -> None:
        super().__init__(message, provider=response.provider, partial_text=response.text)
        self.response = response
        """The last answer, with the usage of every call."""

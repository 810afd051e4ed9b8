"""Batch APIs: many requests answered later (minutes to 24 hours) at about half the price.

A provider that has one implements :class:`BatchLlm` beside its real-time calls: :meth:`BatchLlm.batch_line`
builds one request from the same messages and options a real-time call sends (checked and resolved the same way),
:meth:`BatchLlm.submit_batch` sends a group of them as one job, :meth:`BatchLlm.batch_status` says where the job
is (with the provider's counts), :meth:`BatchLlm.batch_results` reads the answers back matched by each request's
custom id (never by position), each one an :class:`~llm_abstractions.messages.LlmResponse` or the typed
:class:`~llm_abstractions.errors.LlmError` a real-time call would have raised, and :meth:`BatchLlm.cancel_batch`
stops it. :meth:`BatchLlm.find_batch` finds a job by the label it was submitted with (the provider's metadata),
so that a caller that crashed before it heard the job's id does not submit it twice; ``None`` where the provider
keeps no label it can be found by.

Requests a job did not finish (it expired or was cancelled first) are absent from its results.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from hashlib import sha256
from typing import Any, ClassVar, TypeVar

from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmResponse, Message

__all__ = [
    "BatchLine",
    "BatchLlm",
    "BatchOutcome",
    "BatchState",
    "BatchStatus",
    "custom_id_of",
    "find_labelled",
    "supports_batch",
]

BatchOutcome = LlmResponse | LlmError
"""One request's answer in a finished job: the response, or the error a real-time call would have raised."""

_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


_Job = TypeVar("_Job")

SEARCHED_JOBS = 1000
"""How many of a provider's latest jobs :func:`find_labelled` looks through."""


async def find_labelled(
    jobs: AsyncIterable[_Job], label: str, label_of: Callable[[_Job], str | None], id_of: Callable[[_Job], str | None]
) -> str | None:
    """The id of the job of ``jobs`` (a provider's listing, newest first) labelled ``label``; ``None`` when none of
    the latest :data:`SEARCHED_JOBS` is (one submitted by a run that crashed is among the latest)."""
    seen = 0
    async for job in jobs:
        if label_of(job) == label:
            return id_of(job)
        seen += 1
        if seen >= SEARCHED_JOBS:
            break
    return None


def custom_id_of(name: str) -> str:
    """A custom id every provider takes (``[A-Za-z0-9_-]``, at most 64 characters) for ``name``: the name itself
    when it is one, else its allowed characters and a digest of the whole."""
    if _CUSTOM_ID.match(name):
        return name
    digest = sha256(name.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', name)[:50]}-{digest}"


class BatchState(StrEnum):
    """Where a job is."""

    IN_PROGRESS = "in_progress"
    """Accepted; requests are being answered (or wait to be)."""
    ENDED = "ended"
    """Every request was answered (some may have failed)."""
    EXPIRED = "expired"
    """The provider's window (24 h) ended first: the unfinished requests have no answer."""
    CANCELLED = "cancelled"
    """Cancelled first: the unfinished requests have no answer."""
    FAILED = "failed"
    """The job as a whole was refused (its input did not validate): no request has an answer."""

    @property
    def final(self) -> bool:
        return self is not BatchState.IN_PROGRESS


@dataclass(frozen=True)
class BatchStatus:
    """A job's state and the provider's counts of its requests (``total``, ``succeeded``, ``failed``...)."""

    state: BatchState
    counts: Mapping[str, int] = field(default_factory=dict)
    message: str | None = None
    """Why a failed job failed, in the provider's words (redacted)."""


@dataclass(frozen=True)
class BatchLine:
    """One request of a job: its custom id and the provider's request body."""

    custom_id: str
    body: dict[str, Any]

    @property
    def digest(self) -> str:
        """A digest of the request body: the same request, the same digest."""
        return sha256(json.dumps(self.body, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def size(self) -> int:
        """About how many bytes the line adds to a job's input (its custom id and body as JSON, ASCII-escaped, and
        an allowance for the provider's envelope): at least what the providers' SDKs send."""
        return len(json.dumps([self.custom_id, self.body], default=_json_value)) + _ENVELOPE_BYTES


_ENVELOPE_BYTES = 256
"""What a provider's wrapping of one line adds at most (``"method": "POST", "url": ...``, ``"metadata": ...``)."""


def _json_value(value: Any) -> Any:
    """A request body's SDK object (google-genai's ``types``) as the JSON its SDK sends."""
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else str(value)


class BatchLlm(BaseLlm):
    """A provider with a batch API (see the module's description)."""

    has_batch_api: ClassVar[bool] = True
    """``False`` in a subclass whose endpoint has none (OpenAI-compatible servers)."""
    batch_poll_s: ClassVar[float] = 60.0
    """How often the provider suggests polling a job's status (the first interval; callers back off from it)."""
    batch_window_s: ClassVar[float] = 24 * 3600.0
    """How long the provider takes at most before a job expires."""
    batch_max_requests: ClassVar[int | None] = None
    """The most requests the provider takes in one job (``None``: no limit)."""
    batch_max_bytes: ClassVar[int | None] = None
    """The largest input the provider takes for one job, in bytes (``None``: no limit); callers fill a job up to
    a margin below it (see :attr:`BatchLine.size`)."""

    def batch_line(
        self, custom_id: str, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> BatchLine:
        """The request a real-time call with ``messages`` and ``options`` would send, as a line of a job (its
        attachments checked first: ``InvalidRequestError``)."""
        return BatchLine(custom_id, self._batch_body(self._attached(messages), self.resolve_options(options)))

    @abstractmethod
    def _batch_body(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        """The provider's request body for one line."""

    @abstractmethod
    async def submit_batch(self, lines: Sequence[BatchLine], *, label: str) -> str:
        """Submit ``lines`` as one job labelled ``label``; its id at the provider."""

    async def find_batch(self, label: str) -> str | None:
        """The id of a job submitted with ``label``, if the provider knows one; ``None``: none, or it cannot tell."""
        return None

    @abstractmethod
    async def batch_status(self, batch_id: str) -> BatchStatus:
        """Where the job is."""

    @abstractmethod
    async def batch_results(self, batch_id: str) -> dict[str, BatchOutcome]:
        """The answers of a final job by custom id; requests it did not finish are absent."""

    @abstractmethod
    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to cancel the job (its finished requests stay billed and readable)."""


def supports_batch(llm: BaseLlm | type[BaseLlm]) -> bool:
    """Whether ``llm`` (a client or its class) has a batch API."""
    cls = llm if isinstance(llm, type) else type(llm)
    return issubclass(cls, BatchLlm) and cls.has_batch_api

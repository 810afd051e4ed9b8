"""``OfflineLlm``: a deterministic, network-free provider for trying, testing and benchmarking.

It is not a model. By default it answers with the prompt it received, so data flow
through a DAG is visible; ``response`` sets a fixed text or a template over
``prompt``, ``system`` and ``model``. ``latency_ms`` simulates latency: a number is
fixed, a ``[low, high]`` pair is a uniform range seeded by ``seed`` and the prompt;
``latency_by_prompt_ms`` gives single prompts their own latency (replaying recorded durations).
Token usage is a word count.

It simulates a batch API too (:class:`~llm_abstractions.batch.BatchLlm`): a job ends ``batch_latency_ms`` after
it is submitted, and answers each of its requests as a real-time call would (without ``latency_ms``). Jobs live
in this process only: a job of a process that ended is unknown to the next (it reads as expired).

It takes every attachment, with no size limit. Text files arrive inlined in the prompt (between lines
naming them); the echo ends with a line naming each image and PDF (``[attachments: photo.png (image/png,
68 bytes, sha256 ...)]``), and a ``response`` template reads them as ``attachments`` (their labels).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count
from typing import Annotated, Any, ClassVar

import anyio
import anyio.lowlevel
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm_abstractions.attachments import ANY_ATTACHMENT
from llm_abstractions.batch import BatchLine, BatchLlm, BatchOutcome, BatchState, BatchStatus
from llm_abstractions.errors import InvalidRequestError, LlmError
from llm_abstractions.messages import GenerationOptions, LlmResponse, Message

__all__ = ["OfflineLlm", "OfflineSettings"]

NonNegative = Annotated[float, Field(ge=0)]


class OfflineSettings(BaseModel):
    """Keys an ``offline`` agent accepts besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency_ms: NonNegative | tuple[NonNegative, NonNegative] = 0.0
    """Simulated latency: a fixed number of milliseconds or a ``[low, high]`` range."""
    latency_by_prompt_ms: dict[str, NonNegative] = {}
    """Latency of an exact prompt, overriding ``latency_ms``: replays a trace of task durations."""
    seed: int = 0
    """Seed of the latency range."""
    response: str | None = None
    """Fixed answer, or a template over ``prompt``, ``system``, ``model`` and ``attachments`` (each one's name,
    media type, size and digest)."""
    fail_if_contains: str | None = None
    """Fail (``invalid_request``) when the prompt contains this text: for trying failure paths."""
    batch_latency_ms: NonNegative = 0.0
    """How long a simulated batch job takes, from its submission to its end."""

    @model_validator(mode="after")
    def _ordered_range(self) -> OfflineSettings:
        if isinstance(self.latency_ms, tuple) and self.latency_ms[0] > self.latency_ms[1]:
            raise ValueError("latency_ms range must be [low, high] with low <= high")
        return self


@dataclass
class _Job:
    lines: Sequence[BatchLine]
    label: str
    ends_at: float
    """``time.monotonic()`` when it ends."""
    cancelled: bool = False


class OfflineLlm(BatchLlm):
    """Deterministic stand-in model: echoes (or templates) its prompt after a simulated latency."""

    _jobs: ClassVar[dict[str, _Job]] = {}
    """Simulated batch jobs of this process, by id."""
    _job_ids: ClassVar[count[int]] = count(1)
    batch_poll_s = 0.05
    provider = "offline"
    in_process = True
    cacheable = False
    attachment_limits = ANY_ATTACHMENT
    settings_model = OfflineSettings
    settings: OfflineSettings

    def _latency_s(self, prompt: str) -> float:
        by_prompt = self.settings.latency_by_prompt_ms
        if by_prompt and (ms := by_prompt.get(prompt)) is not None:
            return ms / 1000.0
        latency = self.settings.latency_ms
        if isinstance(latency, tuple):
            low, high = latency
            return random.Random(f"{self.settings.seed}:{prompt}").uniform(low, high) / 1000.0
        return latency / 1000.0

    def _answer(self, prompt: str, system: str, attachments: list[str]) -> str:
        template = self.settings.response
        if template is None:
            return prompt
        if "{" not in template:
            return template
        from jinja2.sandbox import SandboxedEnvironment

        return (
            SandboxedEnvironment()
            .from_string(template)
            .render(prompt=prompt, system=system, model=self.model_name, attachments=attachments)
        )

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        prompt, system = _prompt_and_system(messages)
        self._refuse(prompt)
        delay = self._latency_s(prompt)
        if delay > 0:
            await anyio.sleep(delay)
        else:
            await anyio.lowlevel.checkpoint()
        return self._respond(messages, options, prompt, system, delay)

    def _refuse(self, prompt: str) -> None:
        marker = self.settings.fail_if_contains
        if marker is not None and marker in prompt:
            raise InvalidRequestError(f"offline agent refuses prompts containing {marker!r}", provider="offline")

    def _respond(
        self, messages: Sequence[Message], options: GenerationOptions, prompt: str, system: str, delay: float
    ) -> LlmResponse:
        settings = self.settings
        attachments = [a.label for m in messages for a in m.attachments]
        if settings.response is not None:
            text = self._answer(prompt, system, attachments)
        elif attachments:
            text = f"{prompt}\n\n[attachments: {', '.join(attachments)}]"
        else:
            text = prompt
        if options.max_tokens is not None:
            words = text.split(" ")
            if len(words) > options.max_tokens:
                text = " ".join(words[: options.max_tokens])
        prompt_tokens = len(prompt.split())  # a token is a word here
        usage = {
            "input_tokens": prompt_tokens + (len(system.split()) if system else 0),
            "output_tokens": prompt_tokens if text is prompt else len(text.split()),
        }
        return LlmResponse(  # usage as a dict: validated in one pass, about 2 µs less than a Usage instance
            text=text,
            provider="offline",
            model=self.model_name or "offline",
            finish_reason="stop",
            usage=usage,
            latency_s=delay,
        )

    # -- the simulated batch API ---------------------------------------------------------------

    def _batch_body(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        return {
            "messages": [m.model_dump(mode="json") for m in messages],
            "options": options.model_dump(mode="json", exclude_none=True),
        }

    async def submit_batch(self, lines: Sequence[BatchLine], *, label: str) -> str:
        await anyio.lowlevel.checkpoint()
        batch_id = f"offline-batch-{next(self._job_ids)}"
        ends_at = time.monotonic() + self.settings.batch_latency_ms / 1000.0
        self._jobs[batch_id] = _Job(list(lines), label, ends_at)
        return batch_id

    async def find_batch(self, label: str) -> str | None:
        await anyio.lowlevel.checkpoint()
        return next((batch_id for batch_id, job in self._jobs.items() if job.label == label), None)

    async def batch_status(self, batch_id: str) -> BatchStatus:
        await anyio.lowlevel.checkpoint()
        job = self._jobs.get(batch_id)
        if job is None:
            return BatchStatus(BatchState.EXPIRED, message="this process has no such offline batch job")
        total = len(job.lines)
        if job.cancelled:
            return BatchStatus(BatchState.CANCELLED, {"total": total})
        if time.monotonic() < job.ends_at:
            return BatchStatus(BatchState.IN_PROGRESS, {"total": total, "processing": total})
        marker = self.settings.fail_if_contains
        prompts = [
            _prompt_and_system([Message.model_validate(m) for m in line.body["messages"]])[0] for line in job.lines
        ]
        failed = sum(marker in prompt for prompt in prompts) if marker is not None else 0
        return BatchStatus(BatchState.ENDED, {"total": total, "succeeded": total - failed, "failed": failed})

    async def batch_results(self, batch_id: str) -> dict[str, BatchOutcome]:
        await anyio.lowlevel.checkpoint()
        job = self._jobs.get(batch_id)
        if job is None or job.cancelled:
            return {}
        outcomes: dict[str, BatchOutcome] = {}
        for line in job.lines:
            messages = [Message.model_validate(m) for m in line.body["messages"]]
            options = GenerationOptions.model_validate(line.body["options"])
            prompt, system = _prompt_and_system(messages)
            try:
                self._refuse(prompt)
                outcomes[line.custom_id] = self._respond(messages, options, prompt, system, 0.0)
            except LlmError as exc:
                outcomes[line.custom_id] = exc
        return outcomes

    async def cancel_batch(self, batch_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        job = self._jobs.get(batch_id)
        if job is not None and time.monotonic() < job.ends_at:
            job.cancelled = True


def _prompt_and_system(messages: Sequence[Message]) -> tuple[str, str]:
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content, ""
    prompt = "\n\n".join([m.content for m in messages if m.role != "system"])
    system = "\n\n".join([m.content for m in messages if m.role == "system"])
    return prompt, system

"""``GptLlm``: OpenAI chat completions through ``openai.AsyncOpenAI``.

Key and endpoint come from the agent (``api_key``, ``base_url``), else the SDK's own
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. SDK retries are off (``max_retries=0``): the
engine's retry policy is the only one. Options map to ``temperature``,
``max_completion_tokens``, ``top_p``, ``stop`` and ``seed``; the chat completions API
has no ``top_k``. A JSON schema becomes ``response_format`` ``json_schema``. A refusal
(``message.refusal``) is a filtered answer. Usage is read from the standard ``usage``
(streams: whichever event has it, asked for with ``include_usage``), else Groq's ``x_groq.usage``.

Batch jobs (:class:`~llm_abstractions.batch.BatchLlm`) go through the Batch API: the lines are uploaded as a
JSONL file (``purpose: batch``), the job created on ``/v1/chat/completions`` with a 24 h window and the caller's
label in its metadata (``orchestrate_job``: how :meth:`GptLlm.find_batch` finds it again); results are read from
its output and error files, by ``custom_id``.

Attachments (:data:`OPENAI_ATTACHMENT_LIMITS`) go before the text of their message: an image as an
``image_url`` part (a ``data:`` URL of its bytes, or its own URL), a PDF as a ``file`` part
(``filename`` and ``file_data``, a ``data:`` URL: chat completions takes no file URLs).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from llm_abstractions.attachments import IMAGE_TYPES, MB, PDF, Attachment, AttachmentLimits
from llm_abstractions.batch import BatchLine, BatchLlm, BatchOutcome, BatchState, BatchStatus, find_labelled
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, Message, Usage
from llm_abstractions.providers._base import SdkLlm, closing_shielded
from llm_abstractions.providers._http_errors import error_for_status, stainless_error
from llm_abstractions.providers._sdk import import_sdk
from llm_abstractions.rate_limits import rate_limits_from_headers

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types import Batch, CompletionUsage
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["OPENAI_ATTACHMENT_LIMITS", "GptLlm", "openai_finish_reason"]

OPENAI_ATTACHMENT_LIMITS = AttachmentLimits(
    media_types=IMAGE_TYPES | {PDF},
    url_media_types=IMAGE_TYPES,
    max_image_bytes=20 * MB,
    max_pdf_bytes=50 * MB,
    max_images=500,
    max_request_bytes=50 * MB,
)
"""What chat completions takes (OpenAI's vision and file-input guides): PNG, JPEG, WebP and non-animated GIF
images up to 20 MB each, 500 in a request, by bytes or URL; PDFs by bytes only (no file URLs in chat
completions), up to 50 MB each; 50 MB for the whole request as sent (base64 included). OpenAI-compatible
servers are held to the same limits."""

_FINISH = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def openai_finish_reason(reason: str | None) -> str | None:
    """Our finish reason for an OpenAI one."""
    return None if reason is None else _FINISH.get(reason, reason.lower())


def _usage(usage: CompletionUsage | None) -> Usage | None:
    """Our usage: ``prompt_tokens`` counts cached tokens, ``completion_tokens`` reasoning; ``None`` if none came."""
    if usage is None or (usage.prompt_tokens is None and usage.completion_tokens is None):
        return None
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cache_read_tokens=prompt.cached_tokens if prompt else None,
        cache_write_tokens=prompt.cache_write_tokens if prompt else None,
        reasoning_tokens=completion.reasoning_tokens if completion else None,
    )


def _chunk_usage(event: ChatCompletionChunk) -> Usage | None:
    """A stream event's usage: the standard field, else Groq's ``x_groq.usage``."""
    if event.usage is not None:
        return _usage(event.usage)
    groq = (event.model_extra or {}).get("x_groq")
    if isinstance(groq, dict) and isinstance(groq.get("usage"), dict):
        from openai.types import CompletionUsage

        return _usage(CompletionUsage.model_validate(groq["usage"]))
    return None


def _message(message: Message) -> dict[str, Any]:
    """A chat message; with attachments its content is a list of parts, theirs first, then its text."""
    if not message.attachments:
        return {"role": message.role, "content": message.content}
    parts = [_part(a) for a in message.attachments]
    if message.content:
        parts.append({"type": "text", "text": message.content})
    return {"role": message.role, "content": parts}


def _part(attachment: Attachment) -> dict[str, Any]:
    if attachment.kind == "image":
        return {"type": "image_url", "image_url": {"url": attachment.url or attachment.data_url()}}
    return {"type": "file", "file": {"filename": attachment.name, "file_data": attachment.data_url()}}


def _finish(reason: str | None, refusal: str) -> tuple[str | None, str | None]:
    """The finish reason and its detail; a refusal (the model declined to answer) is a filtered answer."""
    if refusal and reason is not None:
        return "content_filter", f"refusal: {refusal}"
    finish = openai_finish_reason(reason)
    return finish, reason if finish == "content_filter" else None


_BATCH_STATES = {
    "completed": BatchState.ENDED,
    "expired": BatchState.EXPIRED,
    "cancelled": BatchState.CANCELLED,
    "failed": BatchState.FAILED,
}
"""Final job states; the others (``validating``, ``in_progress``, ``finalizing``, ``cancelling``) are in progress."""
_UNFINISHED = frozenset({"batch_expired", "batch_cancelled"})
"""Error codes of the lines a job did not get to before it expired or was cancelled."""
LABEL_KEY = "orchestrate_job"
"""The metadata key of a job's label."""


class GptLlm(SdkLlm["AsyncOpenAI", "ChatCompletion"], BatchLlm):
    """OpenAI GPT models over the chat completions API."""

    provider = "gpt"
    sdk_module = "openai"
    sdk_package = "openai"
    sdk_extra = "openai"
    key_variables = ("OPENAI_API_KEY",)
    attachment_limits = OPENAI_ATTACHMENT_LIMITS
    max_tokens_parameter: ClassVar[str] = "max_completion_tokens"
    """Request field of ``max_tokens`` (OpenAI deprecated ``max_tokens`` for newer models)."""

    @property
    def pricing_provider(self) -> str | None:
        return "openai"

    def _client_arguments(self) -> dict[str, Any]:
        """Key and base URL; ``None`` lets the SDK read its environment variables."""
        return {"api_key": self.api_key, "base_url": self.config.base_url}

    def _create_client(self) -> AsyncOpenAI:
        openai = import_sdk("openai", package="openai", extra="openai", provider=self.provider)
        client: AsyncOpenAI = openai.AsyncOpenAI(
            **self._client_arguments(), max_retries=0, timeout=self.config.timeout_s or openai.DEFAULT_TIMEOUT
        )
        return client

    async def _close_client(self, client: AsyncOpenAI) -> None:
        await client.close()

    def _extra_body(self, options: GenerationOptions) -> dict[str, Any]:
        """Request fields the official API lacks; OpenAI-compatible servers add theirs."""
        return {}

    def _request(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": [_message(m) for m in messages],
        }
        for name, value in (
            ("temperature", options.temperature),
            (self.max_tokens_parameter, options.max_tokens),
            ("top_p", options.top_p),
            ("stop", options.stop),
            ("seed", options.seed),
        ):
            if value is not None:
                request[name] = value
        if options.json_schema is not None:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": options.json_schema, "strict": False},
            }
        extra = self._extra_body(options)
        if extra:
            request["extra_body"] = extra
        return request

    async def _complete(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> tuple[ChatCompletion, Mapping[str, str]]:
        raw = await self.client.chat.completions.with_raw_response.create(**self._request(messages, options))
        response: ChatCompletion = raw.parse()
        return response, raw.headers

    def _chunk_of(self, response: ChatCompletion) -> LlmChunk:
        choice = response.choices[0] if response.choices else None
        finish, detail = _finish(choice.finish_reason, choice.message.refusal or "") if choice else (None, None)
        return LlmChunk(
            text=(choice.message.content or "") if choice else "",
            finish_reason=finish,
            finish_detail=detail,
            usage=_usage(response.usage),
            model=response.model or None,
        )

    async def _sdk_stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncGenerator[LlmChunk]:
        stream = await self.client.chat.completions.create(
            **self._request(messages, options), stream=True, stream_options={"include_usage": True}
        )
        refusal: list[str] = []
        rate_limits = rate_limits_from_headers(stream.response.headers)
        async with closing_shielded(stream.close):
            with self._reading():
                async for event in stream:
                    text, finish, detail = "", None, None
                    for choice in event.choices[:1]:
                        if choice.delta:
                            text = choice.delta.content or ""
                            refusal += [choice.delta.refusal] if choice.delta.refusal else []
                        finish, detail = _finish(choice.finish_reason, "".join(refusal))
                    yield LlmChunk(
                        text=text,
                        finish_reason=finish,
                        finish_detail=detail,
                        usage=_chunk_usage(event),
                        model=event.model or None,
                        rate_limits=rate_limits,
                    )
                    rate_limits = None

    def _map_error(self, exc: Exception) -> LlmError | None:
        import openai

        return stainless_error(openai, exc, provider=self.provider)

    # -- the Batch API --------------------------------------------------------------------------

    batch_poll_s = 30.0
    batch_max_requests = 50_000
    batch_max_bytes = 200 * 1000 * 1000  # the input file (200 MB)

    def _batch_body(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        body = self._request(messages, options)
        body.update(body.pop("extra_body", {}))
        return body

    async def submit_batch(self, lines: Sequence[BatchLine], *, label: str) -> str:
        jsonl = "".join(
            json.dumps(
                {"custom_id": line.custom_id, "method": "POST", "url": "/v1/chat/completions", "body": line.body}
            )
            + "\n"
            for line in lines
        )
        client = self.client
        uploaded = await self._sdk_call(client.files.create(file=(f"{label}.jsonl", jsonl.encode()), purpose="batch"))
        batch = await self._sdk_call(
            client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={LABEL_KEY: label},
            )
        )
        return batch.id

    async def find_batch(self, label: str) -> str | None:
        jobs = self.client.batches.list(limit=100)
        found = find_labelled(jobs, label, lambda job: (job.metadata or {}).get(LABEL_KEY), lambda job: job.id)
        return await self._sdk_call(found)

    async def batch_status(self, batch_id: str) -> BatchStatus:
        batch = await self._sdk_call(self.client.batches.retrieve(batch_id))
        return _status(batch)

    async def batch_results(self, batch_id: str) -> dict[str, BatchOutcome]:
        from openai.types.chat import ChatCompletion

        client = self.client
        batch = await self._sdk_call(client.batches.retrieve(batch_id))
        outcomes: dict[str, BatchOutcome] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._sdk_call(client.files.content(file_id))
            for text in content.text.splitlines():
                if not text.strip():
                    continue
                line = json.loads(text)
                error, response = line.get("error"), line.get("response") or {}
                status, body = int(response.get("status_code") or 0), response.get("body") or {}
                if error and error.get("code") in _UNFINISHED:
                    continue
                if error or status >= 400:
                    detail = (body.get("error") or error or {}).get("message") or "the request failed"
                    outcomes[line["custom_id"]] = error_for_status(status or 400, detail, provider=self.provider)
                    continue
                try:
                    outcomes[line["custom_id"]] = await self._answer_of(partial(ChatCompletion.model_validate, body))
                except LlmError as exc:
                    outcomes[line["custom_id"]] = exc
        return outcomes

    async def cancel_batch(self, batch_id: str) -> None:
        await self._sdk_call(self.client.batches.cancel(batch_id))


def _status(batch: Batch) -> BatchStatus:
    counts = batch.request_counts
    numbers = {"total": counts.total, "succeeded": counts.completed, "failed": counts.failed} if counts else {}
    errors = batch.errors.data if batch.errors is not None and batch.errors.data else []
    message = "; ".join(e.message or e.code or "" for e in errors) or None
    return BatchStatus(_BATCH_STATES.get(batch.status, BatchState.IN_PROGRESS), numbers, message)

"""``GeminiLlm``: Gemini through google-genai's ``client.aio.models``.

The key comes from the agent, else ``GOOGLE_API_KEY`` or ``GEMINI_API_KEY`` (the SDK's
own precedence), the endpoint from ``base_url`` else ``GOOGLE_GEMINI_BASE_URL``.
The SDK gets an ``httpx2.AsyncClient`` of ours: that keeps it on httpx, with no
retries, even when aiohttp is installed (it would otherwise switch to aiohttp and
retry connection errors by itself). System messages become ``system_instruction``;
options map to ``temperature``, ``max_output_tokens``, ``top_p``, ``top_k``,
``stop_sequences`` and ``seed``; a JSON schema becomes ``response_json_schema``.

Batch jobs (:class:`~llm_abstractions.batch.BatchLlm`) go through batch mode (``client.aio.batches``) with inline
requests: each is the real-time request with its custom id in its ``metadata`` (which the answers echo: they are
matched by it), the job's label is its ``display_name`` (how :meth:`GeminiLlm.find_batch` finds it again).

Attachments (:data:`GEMINI_ATTACHMENT_LIMITS`) go before the text of their message: bytes as ``inline_data``
parts (``Part.from_bytes``), URLs as ``file_data`` parts (``Part.from_uri``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from llm_abstractions.attachments import MB, PDF, Attachment, AttachmentLimits
from llm_abstractions.batch import BatchLine, BatchLlm, BatchOutcome, BatchState, BatchStatus, find_labelled
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, Message, Usage
from llm_abstractions.providers._base import SdkLlm, closing_shielded
from llm_abstractions.providers._http_errors import error_for_status, stream_error
from llm_abstractions.providers._sdk import import_sdk
from llm_abstractions.rate_limits import rate_limits_from_headers

if TYPE_CHECKING:
    import httpx2
    from google.genai import Client
    from google.genai.types import (
        GenerateContentConfig,
        GenerateContentResponse,
        GenerateContentResponseUsageMetadata,
        Part,
    )

__all__ = ["GEMINI_ATTACHMENT_LIMITS", "GeminiLlm", "gemini_finish_reason"]

_GEMINI_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", PDF})
GEMINI_ATTACHMENT_LIMITS = AttachmentLimits(
    media_types=_GEMINI_TYPES,
    url_media_types=_GEMINI_TYPES,
    max_pdf_bytes=50 * MB,
    max_pdf_pages=1000,
    max_request_bytes=100 * MB,
)
"""What the Gemini API takes (its image-understanding, document-processing and file-input-methods guides):
PNG, JPEG and WebP images (no GIF), PDFs up to 50 MB and 1,000 pages, by bytes or by URL; 100 MB for the whole
request with its inline data (20 MB before January 2026: an older endpoint refuses more with a 400)."""

_opened_responses: ContextVar[list[httpx2.Response] | None] = ContextVar("gemini_opened_responses", default=None)
"""Where the HTTP client's response hook puts the responses a stream opens."""


async def _track_response(response: httpx2.Response) -> None:
    opened = _opened_responses.get()
    if opened is not None:
        opened.append(response)


_FILTERED = {
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
}
"""Finish reasons of an answer that was filtered, not finished."""


def gemini_finish_reason(reason: str | None) -> str | None:
    """Our finish reason for a Gemini ``finishReason``."""
    if reason is None:
        return None
    if reason == "STOP":
        return "stop"
    if reason == "MAX_TOKENS":
        return "length"
    return "content_filter" if reason in _FILTERED else reason.lower()


def _usage(metadata: GenerateContentResponseUsageMetadata | None) -> Usage | None:
    """Our usage: thoughts count as output (``candidatesTokenCount`` leaves them out); ``None`` if none was reported."""
    if metadata is None:
        return None
    counts = (metadata.prompt_token_count, metadata.candidates_token_count, metadata.thoughts_token_count)
    if all(count is None for count in counts):
        return None
    return Usage(
        input_tokens=metadata.prompt_token_count or 0,
        output_tokens=(metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0),
        cache_read_tokens=metadata.cached_content_token_count,
        reasoning_tokens=metadata.thoughts_token_count,
    )


def _parts(message: Message) -> list[dict[str, Any] | Part]:
    """A message's parts: its attachments' (inline data, or file data for a URL), then its text."""
    if not message.attachments:
        return [{"text": message.content}]
    parts: list[dict[str, Any] | Part] = [_part(a) for a in message.attachments]
    if message.content:
        parts.append({"text": message.content})
    return parts


def _part(attachment: Attachment) -> Part:
    from google.genai import types

    if attachment.url is not None:
        return types.Part.from_uri(file_uri=attachment.url, mime_type=attachment.media_type)
    return types.Part.from_bytes(data=attachment.raw(), mime_type=attachment.media_type)


def _chunk(response: GenerateContentResponse) -> LlmChunk:
    text, finish, detail = "", None, None
    feedback = response.prompt_feedback
    if response.candidates:
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        if candidate.finish_reason is not None:
            reason = str(candidate.finish_reason.value)
            finish, detail = gemini_finish_reason(reason), reason
    elif feedback is not None and feedback.block_reason is not None:
        finish = "content_filter"
        message = feedback.block_reason_message
        detail = f"prompt blocked: {feedback.block_reason.value}" + (f": {message}" if message else "")
    return LlmChunk(
        text=text,
        finish_reason=finish,
        finish_detail=detail if finish == "content_filter" else None,
        usage=_usage(response.usage_metadata),
        model=response.model_version or None,
    )


@dataclass
class _Clients:
    genai: Client
    http: httpx2.AsyncClient


_BATCH_STATES = {
    "JOB_STATE_SUCCEEDED": BatchState.ENDED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": BatchState.ENDED,
    "JOB_STATE_FAILED": BatchState.FAILED,
    "JOB_STATE_CANCELLED": BatchState.CANCELLED,
    "JOB_STATE_EXPIRED": BatchState.EXPIRED,
}
"""Final job states; the others (pending, running, cancelling...) are in progress."""
_HTTP_OF_RPC = {3: 400, 4: 504, 5: 404, 7: 403, 8: 429, 9: 400, 11: 400, 13: 500, 14: 503, 16: 401}
"""The HTTP status of a ``google.rpc.Code`` (a batch request's error carries that code)."""
CUSTOM_ID_KEY = "custom_id"
"""The metadata key of a batch request's custom id."""


class GeminiLlm(SdkLlm[_Clients, "GenerateContentResponse"], BatchLlm):
    """Google Gemini models over the Gemini API."""

    provider = "gemini"
    sdk_module = "google.genai"
    sdk_package = "google-genai"
    sdk_extra = "gemini"
    key_variables = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
    attachment_limits = GEMINI_ATTACHMENT_LIMITS

    @property
    def pricing_provider(self) -> str | None:
        return "google"

    def _create_client(self) -> _Clients:
        genai = import_sdk("google.genai", package="google-genai", extra="gemini", provider=self.provider)
        httpx2 = import_sdk("httpx2", package="google-genai", extra="gemini", provider=self.provider)
        timeout = self.config.timeout_s
        http = httpx2.AsyncClient(timeout=timeout, event_hooks={"response": [_track_response]})
        options = genai.types.HttpOptions(
            base_url=self.config.base_url,
            timeout=int(timeout * 1000) if timeout else None,
            httpx_async_client=http,
        )
        return _Clients(genai.Client(api_key=self.api_key, http_options=options), http)

    async def _close_client(self, client: _Clients) -> None:
        await client.genai.aio.aclose()
        await client.http.aclose()

    def _request(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        from google.genai import types

        system = "\n\n".join(m.content for m in messages if m.role == "system")
        config: GenerateContentConfig = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=options.temperature,
            max_output_tokens=options.max_tokens,
            top_p=options.top_p,
            top_k=options.top_k,
            stop_sequences=options.stop,
            seed=options.seed,
            response_mime_type="application/json" if options.json_schema is not None else None,
            response_json_schema=options.json_schema,
        )
        contents = [
            {"role": "model" if m.role == "assistant" else "user", "parts": _parts(m)}
            for m in messages
            if m.role != "system"
        ]
        return {"model": self.model_name, "contents": contents, "config": config}

    async def _complete(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> tuple[GenerateContentResponse, Mapping[str, str] | None]:
        # The SDK reads the response inside the call: what it raises once the response arrived is about the response.
        request = self._request(messages, options)
        opened: list[httpx2.Response] = []
        token = _opened_responses.set(opened)
        try:
            with self._reading(arrived=lambda: bool(opened)):
                response = await self.client.genai.aio.models.generate_content(**request)
        finally:
            _opened_responses.reset(token)
        return response, opened[0].headers if opened else None

    async def _count(self, messages: Sequence[Message], options: GenerationOptions) -> int | None:
        """``models.count_tokens`` of the request's contents; the Gemini API counts no system instruction, so it is
        counted as a first turn (a few tokens off at most)."""
        request = self._request(messages, options)
        contents = request["contents"]
        system = request["config"].system_instruction
        if system:
            contents = [{"role": "user", "parts": [{"text": system}]}, *contents]
        counted = await self.client.genai.aio.models.count_tokens(model=request["model"], contents=contents)
        return counted.total_tokens

    def _chunk_of(self, response: GenerateContentResponse) -> LlmChunk:
        return _chunk(response)

    async def _sdk_stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncGenerator[LlmChunk]:
        # google-genai nests async generators, and closing the outer one leaves the HTTP
        # response open until garbage collection: keep the response and close it ourselves.
        stream = await self.client.genai.aio.models.generate_content_stream(**self._request(messages, options))
        opened: list[httpx2.Response] = []

        async def close() -> None:
            await stream.aclose()  # type: ignore[attr-defined]
            for response in opened:
                await response.aclose()

        async with closing_shielded(close):
            with self._reading(arrived=lambda: bool(opened)):
                token = _opened_responses.set(opened)
                try:
                    first = await anext(aiter(stream), None)  # sends the request
                finally:
                    _opened_responses.reset(token)
                if first is None:
                    return
                chunk = _chunk(first)
                chunk.rate_limits = rate_limits_from_headers(opened[0].headers) if opened else None
                yield chunk
                async for response in stream:
                    yield _chunk(response)

    def _map_error(self, exc: Exception) -> LlmError | None:
        from google.genai import errors

        if isinstance(exc, errors.APIError):
            headers = getattr(exc.response, "headers", None)
            message = exc.message or "error"
            if exc.status:
                message += f" ({exc.status})"  # the provider's own error type, as the other SDKs report theirs
            status = exc.code if isinstance(exc.code, int) and exc.code >= 400 else 500
            if getattr(exc.response, "status_code", None) == 200:  # an error object inside the 200 stream
                return stream_error(status, message, provider=self.provider)
            # The Gemini API answers a wrong key with 400 INVALID_ARGUMENT, reason API_KEY_INVALID.
            if status == 400 and "API_KEY_INVALID" in str(exc.details):
                status = 401
            return error_for_status(status, message, provider=self.provider, headers=headers)
        return None

    # -- batch mode ---------------------------------------------------------------------------------

    batch_poll_s = 30.0
    batch_max_bytes = 20 * 1000 * 1000  # inline requests: the whole request under 20 MB (larger ones: a file)

    def _batch_body(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        request = self._request(messages, options)
        return {"contents": request["contents"], "config": request["config"]}

    async def submit_batch(self, lines: Sequence[BatchLine], *, label: str) -> str:
        from google.genai import types

        requests = [types.InlinedRequest(**line.body, metadata={CUSTOM_ID_KEY: line.custom_id}) for line in lines]
        batches = self.client.genai.aio.batches
        job = await self._sdk_call(
            batches.create(model=self.model_name or "", src=requests, config={"display_name": label})
        )
        if not job.name:
            raise self._malformed("the batch job has no name")
        return job.name

    async def find_batch(self, label: str) -> str | None:
        async def find() -> str | None:
            jobs = await self.client.genai.aio.batches.list(config={"page_size": 100})
            return await find_labelled(jobs, label, lambda job: job.display_name, lambda job: job.name)

        return await self._sdk_call(find())

    async def batch_status(self, batch_id: str) -> BatchStatus:
        job = await self._sdk_call(self.client.genai.aio.batches.get(name=batch_id))
        state = _BATCH_STATES.get(str(job.state.value) if job.state else "", BatchState.IN_PROGRESS)
        counts: dict[str, int] = {}
        responses = job.dest.inlined_responses if job.dest is not None else None
        if responses:
            failed = sum(1 for r in responses if r.error is not None)
            counts = {"succeeded": len(responses) - failed, "failed": failed}
        message = job.error.message if job.error is not None else None
        return BatchStatus(state, counts, message)

    async def batch_results(self, batch_id: str) -> dict[str, BatchOutcome]:
        job = await self._sdk_call(self.client.genai.aio.batches.get(name=batch_id))
        outcomes: dict[str, BatchOutcome] = {}
        for answer in (job.dest.inlined_responses if job.dest is not None else None) or []:
            custom_id = (answer.metadata or {}).get(CUSTOM_ID_KEY)
            if custom_id is None:  # never matched by position
                continue
            if answer.error is not None:
                status = _HTTP_OF_RPC.get(answer.error.code or 13, 500)
                message = answer.error.message or "the request failed"
                outcomes[custom_id] = error_for_status(status, message, provider=self.provider)
            elif answer.response is not None:
                try:
                    outcomes[custom_id] = await self._answer_of(partial(_itself, answer.response))
                except LlmError as exc:
                    outcomes[custom_id] = exc
        return outcomes

    async def cancel_batch(self, batch_id: str) -> None:
        await self._sdk_call(self.client.genai.aio.batches.cancel(name=batch_id))


def _itself(response: GenerateContentResponse) -> GenerateContentResponse:
    return response

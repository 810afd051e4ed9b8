"""``ClaudeLlm``: Anthropic messages through ``anthropic.AsyncAnthropic``.

Key and endpoint come from the agent, else the SDK's ``ANTHROPIC_API_KEY`` /
``ANTHROPIC_BASE_URL``; SDK retries are off. System messages become ``system``;
options map to ``max_tokens`` (the API requires one: :data:`DEFAULT_MAX_TOKENS` when
unset), ``stop_sequences``, and ``temperature``, ``top_p``, ``top_k``, which the
current SDK no longer declares and which are therefore sent as extra body fields; the
models of :data:`SAMPLING_LIMITS` reject some of them, which :meth:`ClaudeLlm.option_problems`
reports before any call. The API has no seed, and this provider does not turn on extended
thinking. An object JSON schema becomes a forced call of the tool :data:`OUTPUT_TOOL`, whose
input is the answer; other schemas are asked for in the system prompt.

The answer is made of text blocks and the output tool's input only, streamed or not: blocks of
server tools (``server_tool_use``, ``web_search_tool_result``...) and thinking never leak into it.
A refusal is a filtered answer, reported with Anthropic's ``stop_details``.

Batch jobs (:class:`~llm_abstractions.batch.BatchLlm`) go through Message Batches (``messages.batches``): each
request's ``params`` are the real-time request; results are read by ``custom_id``. Message Batches keep no metadata,
so a job whose id never reached the caller cannot be found again (:meth:`ClaudeLlm.find_batch` finds nothing).

Attachments (:data:`ANTHROPIC_ATTACHMENT_LIMITS`) go before the text of their message: an image as an ``image``
block, a PDF as a ``document`` block titled with its name, each with a ``base64`` or ``url`` source, text files
inlined as for every provider.

Prompt caching (the agent's ``prompt_cache``, on by default): the system prompt, and a user message's attachments,
are marked ``cache_control`` (ephemeral) when the prompt up to them is estimated at least the model's minimum
cacheable length (:data:`PROMPT_CACHE_MINIMUMS`); Anthropic then bills that prefix's later reads at a tenth of the
input price (its first write at 1.25 times). A message's text files then go as text blocks of their own, so the
prompt that follows them stays out of the cached prefix.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from pydantic import BaseModel, ConfigDict

from llm_abstractions.attachments import (
    IMAGE_TYPES,
    MB,
    PDF,
    Attachment,
    AttachmentLimits,
    estimated_tokens,
    inline_text_attachments,
    inlined_text,
)
from llm_abstractions.batch import BatchLine, BatchLlm, BatchOutcome, BatchState, BatchStatus
from llm_abstractions.config import LlmConfig
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, Message, Usage
from llm_abstractions.providers._base import SdkLlm, closing_shielded
from llm_abstractions.providers._http_errors import STATUS_OF_ERROR_TYPE, error_for_status, stainless_error
from llm_abstractions.providers._sdk import import_sdk
from llm_abstractions.rate_limits import rate_limits_from_headers

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import ContentBlock, MessageDeltaUsage, RefusalStopDetails, TextBlock, ToolUseBlock
    from anthropic.types import Message as AnthropicMessage
    from anthropic.types import Usage as AnthropicUsage

__all__ = [
    "ANTHROPIC_ATTACHMENT_LIMITS",
    "DEFAULT_MAX_TOKENS",
    "OUTPUT_TOOL",
    "PROMPT_CACHE_MINIMUMS",
    "SAMPLING_LIMITS",
    "ClaudeLlm",
    "ClaudeSettings",
    "claude_finish_reason",
]

ANTHROPIC_ATTACHMENT_LIMITS = AttachmentLimits(
    media_types=IMAGE_TYPES | {PDF},
    url_media_types=IMAGE_TYPES | {PDF},
    max_image_bytes=5 * MB,
    image_limit_encoded=True,
    max_images=100,
    max_pdf_pages=100,
    max_request_bytes=32 * MB,
)
"""What the messages API takes (Anthropic's vision and PDF-support guides): JPEG, PNG, GIF and WebP images up
to 5 MB each (the API measures the base64 text), 100 in a request; PDFs of at most 100 pages in a request; both
by bytes or URL; 32 MB for the whole request."""

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when neither the agent nor the task sets one."""
OUTPUT_TOOL = "json_output"
"""Name of the tool that carries structured output."""

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",  # the forced output tool is the only tool we send
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}

_ONE_OF_TEMPERATURE_TOP_P = "one of temperature and top_p"
_NO_SAMPLING = "no sampling options"
SAMPLING_LIMITS: dict[str, str] = {
    "claude-opus-4-1": _ONE_OF_TEMPERATURE_TOP_P,
    "claude-opus-4-5": _ONE_OF_TEMPERATURE_TOP_P,
    "claude-opus-4-6": _ONE_OF_TEMPERATURE_TOP_P,
    "claude-sonnet-4-5": _ONE_OF_TEMPERATURE_TOP_P,
    "claude-sonnet-4-6": _ONE_OF_TEMPERATURE_TOP_P,
    "claude-haiku-4-5": _ONE_OF_TEMPERATURE_TOP_P,
    "claude-opus-4-7": _NO_SAMPLING,
    "claude-opus-4-8": _NO_SAMPLING,
}
"""Sampling options a model rejects with a 400, by model name (a dated snapshot such as
``claude-sonnet-4-5-20250929`` follows its name): ``temperature`` together with ``top_p``
from Opus 4.1 and the 4.5 models on, any of ``temperature``, ``top_p`` and ``top_k`` from
Opus 4.7 on (Anthropic's migration guides). Only models known to reject are listed; extend
the table as Anthropic documents new ones."""


PROMPT_CACHE_MINIMUMS: dict[str, int] = {
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-haiku-4-5": 4096,
    "claude-opus-4-7": 2048,
    "claude-sonnet-4-6": 2048,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
}
"""The shortest prefix (tokens) Anthropic caches, by model name (a dated snapshot follows its name); other models:
:data:`DEFAULT_PROMPT_CACHE_MINIMUM`. A shorter prefix marked for caching is not cached, and costs nothing more."""
DEFAULT_PROMPT_CACHE_MINIMUM = 1024
_EPHEMERAL = {"type": "ephemeral"}


class ClaudeSettings(BaseModel):
    """Keys a ``claude`` agent accepts besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_cache: bool = True
    """Mark long system prompts and attachments for Anthropic's prompt cache; ``False``: never."""


def _listed(table: Mapping[str, Any], model: str) -> list[Any]:
    """The entries of ``table`` for ``model``: its name's, or those of the name its dated snapshot follows."""
    return [value for name, value in table.items() if model == name or model.startswith(f"{name}-")]


def claude_finish_reason(reason: str | None) -> str | None:
    """Our finish reason for an Anthropic ``stop_reason``."""
    return None if reason is None else _FINISH.get(reason, reason)


def _finish(reason: str | None, details: RefusalStopDetails | None) -> tuple[str | None, str | None]:
    """The finish reason, and for a refusal what Anthropic said about it (category, explanation)."""
    finish = claude_finish_reason(reason)
    if finish != "content_filter":
        return finish, None
    detail = str(reason)
    if details is not None and details.category:
        detail += f" ({details.category})"
    if details is not None and details.explanation:
        detail += f": {details.explanation}"
    return finish, detail


def _content(message: Message, *, cached: bool = False) -> str | list[dict[str, Any]]:
    """A message's content: its text, or with attachments a list of blocks, images and PDFs first, then its text
    (text files inlined); ``cached``: text files as blocks of their own, the last attachment marked for the cache."""
    if not cached:
        message = inline_text_attachments([message])[0]
    if not message.attachments:
        return message.content
    blocks = [_block(a) for a in message.attachments if a.kind != "text"]
    blocks += [{"type": "text", "text": inlined_text(a)} for a in message.attachments if a.kind == "text"]
    if cached:
        blocks[-1] = blocks[-1] | {"cache_control": _EPHEMERAL}
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    return blocks


def _block(attachment: Attachment) -> dict[str, Any]:
    source: dict[str, Any] = (
        {"type": "url", "url": attachment.url}
        if attachment.url is not None
        else {"type": "base64", "media_type": attachment.media_type, "data": attachment.base64()}
    )
    if attachment.kind == "image":
        return {"type": "image", "source": source}
    return {"type": "document", "source": source, "title": attachment.name}


def _counts(usage: AnthropicUsage | MessageDeltaUsage) -> dict[str, int]:
    """The counts a usage object reports; those of a ``message_delta`` update those of ``message_start``."""
    counts = {
        "input": usage.input_tokens,
        "cache_read": usage.cache_read_input_tokens,
        "cache_write": usage.cache_creation_input_tokens,
        "output": usage.output_tokens,
        "thinking": usage.output_tokens_details.thinking_tokens if usage.output_tokens_details else None,
    }
    return {name: count for name, count in counts.items() if count is not None}


def _usage(counts: dict[str, int]) -> Usage:
    """Our usage: Anthropic's ``input_tokens`` leaves out cache reads and writes, ours counts them."""
    read, write = counts.get("cache_read"), counts.get("cache_write")
    return Usage(
        input_tokens=counts.get("input", 0) + (read or 0) + (write or 0),
        output_tokens=counts.get("output", 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=counts.get("thinking"),
    )


def _answers(block: ContentBlock) -> TypeGuard[TextBlock | ToolUseBlock]:
    """Whether a content block makes the answer: text, or our output tool's input (never server tools' blocks)."""
    return block.type == "text" or (block.type == "tool_use" and block.name == OUTPUT_TOOL)


def _text(message: AnthropicMessage) -> str:
    return "".join(
        block.text if block.type == "text" else json.dumps(block.input) for block in message.content if _answers(block)
    )


class ClaudeLlm(SdkLlm["AsyncAnthropic", "AnthropicMessage"], BatchLlm):
    """Anthropic Claude models over the messages API."""

    provider = "claude"
    sdk_module = "anthropic"
    sdk_package = "anthropic"
    sdk_extra = "claude"
    key_variables = ("ANTHROPIC_API_KEY",)
    attachment_limits = ANTHROPIC_ATTACHMENT_LIMITS
    inlines_text = False  # ``_content`` inlines them, or marks them for the prompt cache
    settings_model = ClaudeSettings
    settings: ClaudeSettings

    @property
    def pricing_provider(self) -> str | None:
        return "anthropic"

    def _create_client(self) -> AsyncAnthropic:
        anthropic = import_sdk("anthropic", package="anthropic", extra="claude", provider=self.provider)
        client: AsyncAnthropic = anthropic.AsyncAnthropic(
            api_key=self.api_key,
            base_url=self.config.base_url,
            max_retries=0,
            timeout=self.config.timeout_s or anthropic.DEFAULT_TIMEOUT,
        )
        return client

    async def _close_client(self, client: AsyncAnthropic) -> None:
        await client.close()

    def _request(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        system = [m.content for m in messages if m.role == "system"]
        request: dict[str, Any] = {"model": self.model_name, "max_tokens": options.max_tokens or DEFAULT_MAX_TOKENS}
        if options.stop is not None:
            request["stop_sequences"] = options.stop
        sampling = {"temperature": options.temperature, "top_p": options.top_p, "top_k": options.top_k}
        sampling = {name: value for name, value in sampling.items() if value is not None}
        if sampling:
            request["extra_body"] = sampling
        schema = options.json_schema
        if schema is not None and schema.get("type") == "object":
            request["tools"] = [
                {"name": OUTPUT_TOOL, "description": "Give the answer as this tool's input.", "input_schema": schema}
            ]
            request["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL}
        elif schema is not None:
            system.append(f"Reply with only JSON matching this JSON Schema:\n{json.dumps(schema)}")
        if system:
            request["system"] = "\n\n".join(system)
        turns = [m for m in messages if m.role != "system"]
        cached = self._cached_turn(request, turns)
        request["messages"] = [
            {"role": m.role, "content": _content(m, cached=i == cached)} for i, m in enumerate(turns)
        ]
        return request

    def _cached_turn(self, request: dict[str, Any], turns: Sequence[Message]) -> int | None:
        """Mark ``request``'s system prompt for the prompt cache when it is long enough, and say which turn's
        attachments to mark: the last turn with attachments, when the prompt up to them is long enough."""
        if not self.settings.prompt_cache:
            return None
        minimum = min(_listed(PROMPT_CACHE_MINIMUMS, self.model_name or ""), default=DEFAULT_PROMPT_CACHE_MINIMUM)
        prefix = (len(json.dumps(request.get("tools", ""))) + len(request.get("system", ""))) // 4
        if "system" in request and prefix >= minimum:
            request["system"] = [{"type": "text", "text": request["system"], "cache_control": _EPHEMERAL}]
        last = max((i for i, m in enumerate(turns) if m.attachments), default=None)
        if last is None:
            return None
        prefix += sum(len(m.content) // 4 for m in turns[:last])
        prefix += sum(estimated_tokens(a) for m in turns[: last + 1] for a in m.attachments)
        return last if prefix >= minimum else None

    async def _complete(
        self, messages: Sequence[Message], options: GenerationOptions
    ) -> tuple[AnthropicMessage, Mapping[str, str]]:
        raw = await self.client.messages.with_raw_response.create(**self._request(messages, options))
        message: AnthropicMessage = await raw.parse()
        return message, raw.headers

    async def _count(self, messages: Sequence[Message], options: GenerationOptions) -> int | None:
        """``messages.count_tokens`` of the request as it would be sent (without what only generation takes)."""
        request = self._request(messages, options)
        for name in ("max_tokens", "stop_sequences", "extra_body"):
            request.pop(name, None)
        counted = await self.client.messages.count_tokens(**request)
        return counted.input_tokens

    def _chunk_of(self, message: AnthropicMessage) -> LlmChunk:
        finish, detail = _finish(message.stop_reason, message.stop_details)
        return LlmChunk(
            text=_text(message),
            finish_reason=finish,
            finish_detail=detail,
            usage=_usage(_counts(message.usage)),
            model=message.model or None,
        )

    async def _sdk_stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncGenerator[LlmChunk]:
        stream = await self.client.messages.create(**self._request(messages, options), stream=True)
        counts: dict[str, int] = {}
        answer_blocks: set[int] = set()
        async with closing_shielded(stream.close):
            with self._reading():
                async for event in stream:
                    if event.type == "message_start":
                        counts = _counts(event.message.usage)
                        yield LlmChunk(
                            model=event.message.model or None,
                            rate_limits=rate_limits_from_headers(stream.response.headers),
                        )
                    elif event.type == "content_block_start" and _answers(event.content_block):
                        answer_blocks.add(event.index)
                        if event.content_block.type == "text" and event.content_block.text:
                            yield LlmChunk(text=event.content_block.text)
                    elif event.type == "content_block_delta":
                        answers = event.index in answer_blocks
                        if event.delta.type == "text_delta" and answers:
                            yield LlmChunk(text=event.delta.text)
                        elif event.delta.type == "input_json_delta" and answers:
                            yield LlmChunk(text=event.delta.partial_json)
                    elif event.type == "message_delta":
                        counts |= _counts(event.usage)
                        finish, detail = _finish(event.delta.stop_reason, event.delta.stop_details)
                        yield LlmChunk(finish_reason=finish, finish_detail=detail, usage=_usage(counts))

    @classmethod
    def option_problems(cls, config: LlmConfig, options: GenerationOptions) -> list[str]:
        model = config.model or ""
        limits = set(_listed(SAMPLING_LIMITS, model))
        sampling = [name for name in ("temperature", "top_p", "top_k") if getattr(options, name) is not None]
        if _NO_SAMPLING in limits and sampling:
            unset = " and ".join(sampling)
            return [f"{model} accepts no sampling options (Anthropic removed them): leave {unset} unset"]
        if _ONE_OF_TEMPERATURE_TOP_P in limits and {"temperature", "top_p"} <= set(sampling):
            return [f"{model} accepts temperature or top_p, not both: leave one of them unset"]
        return []

    def _map_error(self, exc: Exception) -> LlmError | None:
        import anthropic

        return stainless_error(anthropic, exc, provider=self.provider)

    # -- Message Batches --------------------------------------------------------------------------

    batch_poll_s = 60.0
    batch_max_requests = 100_000
    batch_max_bytes = 256 * 1000 * 1000  # the request (256 MB)

    def _batch_body(self, messages: Sequence[Message], options: GenerationOptions) -> dict[str, Any]:
        body = self._request(messages, options)
        body.update(body.pop("extra_body", {}))
        return body

    async def submit_batch(self, lines: Sequence[BatchLine], *, label: str) -> str:
        """Message Batches keep no metadata: ``label`` is not sent (:meth:`find_batch` cannot find a job)."""
        requests = [{"custom_id": line.custom_id, "params": line.body} for line in lines]
        batch = await self._sdk_call(self.client.messages.batches.create(requests=requests))  # type: ignore[arg-type]
        return batch.id

    async def batch_status(self, batch_id: str) -> BatchStatus:
        batch = await self._sdk_call(self.client.messages.batches.retrieve(batch_id))
        counts = batch.request_counts
        numbers = {
            "total": counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired,
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "failed": counts.errored,
            "cancelled": counts.canceled,
            "expired": counts.expired,
        }
        if batch.processing_status != "ended":
            state = BatchState.IN_PROGRESS
        elif batch.cancel_initiated_at is not None:
            state = BatchState.CANCELLED
        else:
            state = BatchState.EXPIRED if counts.expired else BatchState.ENDED
        return BatchStatus(state, numbers)

    async def batch_results(self, batch_id: str) -> dict[str, BatchOutcome]:
        async def read() -> dict[str, BatchOutcome]:
            outcomes: dict[str, BatchOutcome] = {}
            async for line in await self.client.messages.batches.results(batch_id):
                result = line.result
                if result.type == "succeeded":
                    try:
                        outcomes[line.custom_id] = await self._answer_of(lambda: result.message)  # noqa: B023
                    except LlmError as exc:
                        outcomes[line.custom_id] = exc
                elif result.type == "errored":
                    error = result.error.error
                    status = STATUS_OF_ERROR_TYPE.get(error.type, 500)
                    outcomes[line.custom_id] = error_for_status(status, error.message, provider=self.provider)
            return outcomes

        return await self._sdk_call(read())

    async def cancel_batch(self, batch_id: str) -> None:
        await self._sdk_call(self.client.messages.batches.cancel(batch_id))

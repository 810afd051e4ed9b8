"""``GptLlm``: OpenAI chat completions through ``openai.AsyncOpenAI``.

Key and endpoint come from the agent (``api_key``, ``base_url``), else the SDK's own
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``. SDK retries are off (``max_retries=0``): the
engine's retry policy is the only one. Options map to ``temperature``,
``max_completion_tokens``, ``top_p``, ``stop`` and ``seed``; the chat completions API
has no ``top_k``. A JSON schema becomes ``response_format`` ``json_schema``. A refusal
(``message.refusal``) is a filtered answer. Usage is read from the standard ``usage``
(streams: whichever event has it, asked for with ``include_usage``), else Groq's ``x_groq.usage``.

Attachments (:data:`OPENAI_ATTACHMENT_LIMITS`) go before the text of their message: an image as an
``image_url`` part (a ``data:`` URL of its bytes, or its own URL), a PDF as a ``file`` part
(``filename`` and ``file_data``, a ``data:`` URL: chat completions takes no file URLs).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from llm_abstractions.attachments import IMAGE_TYPES, MB, PDF, Attachment, AttachmentLimits
from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, Message, Usage
from llm_abstractions.providers._base import SdkLlm, closing_shielded
from llm_abstractions.providers._http_errors import stainless_error
from llm_abstractions.providers._sdk import import_sdk
from llm_abstractions.rate_limits import rate_limits_from_headers

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types import CompletionUsage
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


class GptLlm(SdkLlm["AsyncOpenAI", "ChatCompletion"]):
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

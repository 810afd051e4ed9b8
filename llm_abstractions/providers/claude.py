"""``ClaudeLlm``: Anthropic messages through ``anthropic.AsyncAnthropic``.

Key and endpoint come from the agent, else the SDK's ``ANTHROPIC_API_KEY`` /
``ANTHROPIC_BASE_URL``; SDK retries are off. System messages become ``system``;
options map to ``max_tokens`` (the API requires one: :data:`DEFAULT_MAX_TOKENS` when
unset), ``stop_sequences``, and ``temperature``, ``top_p``, ``top_k``, which the
current SDK no longer declares and which are therefore sent as extra body fields
(recent models reject them: leave them unset there). The API has no seed. An object JSON schema becomes a forced
call of the tool :data:`OUTPUT_TOOL`, whose input is the answer; other schemas are
asked for in the system prompt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

from llm_abstractions.errors import LlmError
from llm_abstractions.messages import GenerationOptions, LlmChunk, Message, Usage
from llm_abstractions.providers._base import SdkLlm, closing_shielded
from llm_abstractions.providers._http_errors import stainless_error
from llm_abstractions.providers._sdk import import_sdk

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import Message as AnthropicMessage
    from anthropic.types import MessageDeltaUsage
    from anthropic.types import Usage as AnthropicUsage

__all__ = ["DEFAULT_MAX_TOKENS", "OUTPUT_TOOL", "ClaudeLlm", "claude_finish_reason"]

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when neither the agent nor the task sets one."""
OUTPUT_TOOL = "json_output"
"""Name of the tool that carries structured output."""

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",  # the forced output tool is the only tool we send
    "max_tokens": "length",
    "refusal": "content_filter",
}


def claude_finish_reason(reason: str | None) -> str | None:
    """Our finish reason for an Anthropic ``stop_reason``."""
    return None if reason is None else _FINISH.get(reason, reason)


def _input_tokens(usage: AnthropicUsage | MessageDeltaUsage) -> int | None:
    """Every input token: plain, cache writes and cache reads."""
    if usage.input_tokens is None:
        return None
    return usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)


def _text(message: AnthropicMessage) -> str:
    parts = []
    for block in message.content:
        if block.type == "text":
            parts.append(block.text)
        elif block.type == "tool_use" and block.name == OUTPUT_TOOL:
            parts.append(json.dumps(block.input))
    return "".join(parts)


class ClaudeLlm(SdkLlm["AsyncAnthropic", "AnthropicMessage"]):
    """Anthropic Claude models over the messages API."""

    provider = "claude"
    sdk_module = "anthropic"
    sdk_package = "anthropic"
    sdk_extra = "claude"
    key_variables = ("ANTHROPIC_API_KEY",)

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
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": [{"role": m.role, "content": m.content} for m in messages if m.role != "system"],
            "max_tokens": options.max_tokens or DEFAULT_MAX_TOKENS,
        }
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
        return request

    async def _complete(self, messages: Sequence[Message], options: GenerationOptions) -> AnthropicMessage:
        message: AnthropicMessage = await self.client.messages.create(**self._request(messages, options))
        return message

    def _chunk_of(self, message: AnthropicMessage) -> LlmChunk:
        return LlmChunk(
            text=_text(message),
            finish_reason=claude_finish_reason(message.stop_reason),
            usage=Usage(input_tokens=_input_tokens(message.usage) or 0, output_tokens=message.usage.output_tokens),
            model=message.model or None,
        )

    async def _sdk_stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncGenerator[LlmChunk]:
        stream = await self.client.messages.create(**self._request(messages, options), stream=True)
        input_tokens = 0
        async with closing_shielded(stream.close):
            with self._reading():
                async for event in stream:
                    if event.type == "message_start":
                        input_tokens = _input_tokens(event.message.usage) or 0
                        yield LlmChunk(model=event.message.model or None)
                    elif event.type == "content_block_delta":
                        if event.delta.type == "text_delta":
                            yield LlmChunk(text=event.delta.text)
                        elif event.delta.type == "input_json_delta":
                            yield LlmChunk(text=event.delta.partial_json)
                    elif event.type == "message_delta":
                        input_tokens = _input_tokens(event.usage) or input_tokens
                        yield LlmChunk(
                            finish_reason=claude_finish_reason(event.delta.stop_reason),
                            usage=Usage(input_tokens=input_tokens, output_tokens=event.usage.output_tokens),
                        )

    def _map_error(self, exc: Exception) -> LlmError | None:
        import anthropic

        return stainless_error(anthropic, exc, provider=self.provider)

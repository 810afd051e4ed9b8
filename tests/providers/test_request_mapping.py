"""What each provider puts on the wire: messages, options, structured output and credentials."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_abstractions import (
    AuthenticationError,
    ContentFilteredError,
    InvalidRequestError,
    LlmConfig,
    Message,
    ProviderUnavailableError,
    collect_stream,
    create_llm,
)
from llm_abstractions.providers.claude import DEFAULT_MAX_TOKENS, OUTPUT_TOOL
from tests.fakes.agents import llm_config
from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply

CONVERSATION = [
    Message.system("You are terse."),
    Message.user("Name a colour."),
    Message.assistant("Blue."),
    Message.user("Another one."),
]
OPTIONS: dict[str, Any] = {"temperature": 0.3, "max_tokens": 99, "top_p": 0.9, "top_k": 7, "stop": ["END"], "seed": 42}
SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}


async def _one_request(config: LlmConfig, server: FakeProviderServer, **options: Any) -> RecordedRequest:
    async with create_llm(config) as llm:
        await llm.generate_content_async(CONVERSATION, **options)
    [request] = server.requests
    return request


async def test_gpt_request(fake_server: FakeProviderServer) -> None:
    request = await _one_request(llm_config("gpt", fake_server), fake_server, **OPTIONS)
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test-gpt-key"
    assert request.json == {
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one."},
        ],
        "temperature": 0.3,
        "max_completion_tokens": 99,
        "top_p": 0.9,
        "stop": ["END"],
        "seed": 42,
    }


async def test_gpt_structured_output_uses_response_format(fake_server: FakeProviderServer) -> None:
    request = await _one_request(llm_config("gpt", fake_server), fake_server, json_schema=SCHEMA)
    assert request.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": SCHEMA, "strict": False},
    }


async def test_gpt_stream_asks_for_usage(fake_server: FakeProviderServer) -> None:
    async with create_llm(llm_config("gpt", fake_server)) as llm:
        chunks = [c async for c in llm.stream_content_async(CONVERSATION)]
    assert chunks[-1].usage is not None
    [request] = fake_server.requests
    assert request.json["stream"] is True
    assert request.json["stream_options"] == {"include_usage": True}


async def test_openai_compatible_request_sends_max_tokens_and_sampling_extras(fake_server: FakeProviderServer) -> None:
    config = llm_config("openai_compatible", fake_server)
    request = await _one_request(config, fake_server, **OPTIONS, min_p=0.05, repetition_penalty=1.1)
    body = request.json
    assert body["max_tokens"] == 99
    assert "max_completion_tokens" not in body
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (7, 0.05, 1.1)
    assert request.headers["authorization"] == "Bearer test-openai_compatible-key"


async def test_claude_request(fake_server: FakeProviderServer) -> None:
    request = await _one_request(llm_config("claude", fake_server), fake_server, **OPTIONS)
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == "Bearer test-claude-key"
    assert "anthropic-version" in request.headers
    assert request.json == {
        "model": "claude-sonnet-4-6",
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Another one."},
        ],
        "max_tokens": 99,
        "stop_sequences": ["END"],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 7,
    }


async def test_claude_sends_the_default_max_tokens(fake_server: FakeProviderServer) -> None:
    request = await _one_request(llm_config("claude", fake_server), fake_server)
    assert request.json["max_tokens"] == DEFAULT_MAX_TOKENS
    assert not {"temperature", "top_p", "top_k", "seed"} & request.json.keys()


async def test_claude_structured_output_is_a_forced_tool_call(fake_server: FakeProviderServer) -> None:
    fake_server.script("anthropic", Reply(text='{"colour": "red"}'))
    async with create_llm(llm_config("claude", fake_server)) as llm:
        response = await llm.generate_content_async(CONVERSATION, json_schema=SCHEMA)
    assert json.loads(response.text) == {"colour": "red"}
    assert response.finish_reason == "stop"
    [request] = fake_server.requests
    assert request.json["tools"] == [
        {"name": OUTPUT_TOOL, "description": "Give the answer as this tool's input.", "input_schema": SCHEMA}
    ]
    assert request.json["tool_choice"] == {"type": "tool", "name": OUTPUT_TOOL}


async def test_claude_streams_structured_output_from_tool_input_deltas(fake_server: FakeProviderServer) -> None:
    fake_server.script("anthropic", Reply(text='{"colour": "red"}', chunks=['{"col', 'our": ', '"red"}']))
    async with create_llm(llm_config("claude", fake_server)) as llm:
        pieces = [c.text async for c in llm.stream_content_async(CONVERSATION, json_schema=SCHEMA) if c.text]
    assert pieces == ['{"col', 'our": ', '"red"}']


async def test_claude_asks_for_non_object_schemas_in_the_system_prompt(fake_server: FakeProviderServer) -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    request = await _one_request(llm_config("claude", fake_server), fake_server, json_schema=schema)
    assert "tools" not in request.json
    assert request.json["system"].startswith("You are terse.\n\nReply with only JSON")
    assert json.dumps(schema) in request.json["system"]


async def test_gemini_request(fake_server: FakeProviderServer) -> None:
    request = await _one_request(llm_config("gemini", fake_server), fake_server, **OPTIONS, json_schema=SCHEMA)
    assert request.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert request.headers["x-goog-api-key"] == "test-gemini-key"
    body = request.json
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Name a colour."}]},
        {"role": "model", "parts": [{"text": "Blue."}]},
        {"role": "user", "parts": [{"text": "Another one."}]},
    ]
    assert body["systemInstruction"]["parts"] == [{"text": "You are terse."}]
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "maxOutputTokens": 99,
        "topP": 0.9,
        "topK": 7,
        "stopSequences": ["END"],
        "seed": 42,
        "responseMimeType": "application/json",
        "responseJsonSchema": SCHEMA,
    }


async def test_gemini_stream_uses_sse(fake_server: FakeProviderServer) -> None:
    async with create_llm(llm_config("gemini", fake_server)) as llm:
        texts = [c.text async for c in llm.stream_content_async([Message.user("a b")]) if c.text]
    assert "".join(texts) == "echo: a b"
    [request] = fake_server.requests
    assert request.path.endswith(":streamGenerateContent")
    assert request.query == {"alt": ["sse"]}


@pytest.mark.parametrize(
    ("provider", "finish"),
    [("gpt", "content_filter"), ("claude", "refusal"), ("gemini", "SAFETY")],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_filtered_answers_raise_content_filtered_with_the_partial_text(
    fake_server: FakeProviderServer, provider: str, finish: str, streamed: bool
) -> None:
    fake_server.script(None, Reply(text="Some", finish_reason=finish))
    async with create_llm(llm_config(provider, fake_server)) as llm:
        with pytest.raises(ContentFilteredError) as caught:
            if streamed:
                await collect_stream(llm.stream_content_async([Message.user("x")]), provider=provider)
            else:
                await llm.generate_content_async([Message.user("x")])
    assert caught.value.partial_text == "Some"
    assert not caught.value.retryable


async def test_gemini_invalid_key_400_is_an_authentication_error(fake_server: FakeProviderServer) -> None:
    body = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    fake_server.script("gemini", Fault(status=400, body=json.dumps(body)), Fault.bad_request("bad field"))
    async with create_llm(llm_config("gemini", fake_server)) as llm:
        with pytest.raises(AuthenticationError):
            await llm.generate_content_async([Message.user("x")])
        with pytest.raises(InvalidRequestError):
            await llm.generate_content_async([Message.user("x")])


async def test_a_gemini_stream_error_without_an_error_code_is_a_server_fault(fake_server: FakeProviderServer) -> None:
    # An error object inside a 200 stream reports code 200: it is the server's fault, not the request's.
    fake_server.script("gemini", Fault(status=200, body=json.dumps({"error": {"code": 200, "message": "boom"}})))
    async with create_llm(llm_config("gemini", fake_server)) as llm:
        with pytest.raises(ProviderUnavailableError) as caught:
            await collect_stream(llm.stream_content_async([Message.user("x")]), provider="gemini")
    assert caught.value.retryable

"""Answers read as the providers send them, through the real SDKs against the fake server.

Cut-off answers report ``finish_reason`` ``length``; filtered answers keep the provider's reason and
usage; Claude's server-tool blocks never make the answer; usage outside the standard field is read
and missing usage stays ``None``; error events inside a 200 stream keep the provider's error type
and words; cache and reasoning tokens are told apart; options a Claude model rejects are named.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_abstractions import (
    BaseLlm,
    ContentFilteredError,
    GenerationOptions,
    LlmConfig,
    LlmError,
    LlmResponse,
    Message,
    Usage,
    collect_stream,
    create_llm,
)
from llm_abstractions.providers.claude import OUTPUT_TOOL, ClaudeLlm
from llm_abstractions.providers.gpt import GptLlm
from tests.fakes.agents import API_OF, PROVIDERS, llm_config
from tests.fakes.provider_server import FakeProviderServer, Fault, Reply, UsageStyle

MESSAGES = [Message.user("What is the capital of France?")]
NATIVE_LENGTH = {"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}
SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}

each_provider = pytest.mark.parametrize("provider", PROVIDERS)
plain_and_streamed = pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])


async def _ask(server: FakeProviderServer, provider: str, streamed: bool, **options: Any) -> LlmResponse:
    async with create_llm(llm_config(provider, server)) as llm:
        return await _answer(llm, streamed, **options)


async def _answer(llm: BaseLlm, streamed: bool, **options: Any) -> LlmResponse:
    if streamed:
        chunks = llm.stream_content_async(MESSAGES, **options)
        return await collect_stream(chunks, provider=llm.provider, model=llm.model_name)
    return await llm.generate_content_async(MESSAGES, **options)


async def _error(server: FakeProviderServer, provider: str, streamed: bool) -> LlmError:
    with pytest.raises(LlmError) as caught:
        await _ask(server, provider, streamed)
    return caught.value


# -- finish reasons ------------------------------------------------------------------------------------


@each_provider
@plain_and_streamed
async def test_an_empty_answer_cut_off_by_max_tokens_is_a_length_finish_not_a_stop(
    fake_server: FakeProviderServer, provider: str, streamed: bool
) -> None:
    # A thinking model spent its whole budget thinking: no text, every output token a reasoning one.
    api = API_OF[provider]
    fake_server.script(
        api, Reply(text="", finish_reason=NATIVE_LENGTH[api], input_tokens=12, output_tokens=64, reasoning_tokens=64)
    )
    response = await _ask(fake_server, provider, streamed, max_tokens=64)
    assert (response.text, response.finish_reason) == ("", "length")
    assert response.usage == Usage(input_tokens=12, output_tokens=64, reasoning_tokens=64)


@pytest.mark.parametrize(
    ("provider", "native", "expected"),
    [
        ("gpt", "tool_calls", "tool_calls"),
        ("gpt", "function_call", "tool_calls"),
        ("claude", "stop_sequence", "stop"),
        ("claude", "model_context_window_exceeded", "length"),
        ("claude", "pause_turn", "pause_turn"),
        ("gemini", "OTHER", "other"),
    ],
)
@plain_and_streamed
async def test_finish_reasons_are_normalised(
    fake_server: FakeProviderServer, provider: str, native: str, expected: str, streamed: bool
) -> None:
    fake_server.script(API_OF[provider], Reply(text="Paris", finish_reason=native))
    assert (await _ask(fake_server, provider, streamed)).finish_reason == expected


# -- filtered and blocked answers ----------------------------------------------------------------------

FILTERED = [
    pytest.param("gpt", Reply(text="Some", finish_reason="content_filter"), "content_filter", id="openai-filter"),
    pytest.param(
        "gpt", Reply(refusal="I can't help with that."), "refusal: I can't help with that.", id="openai-refusal"
    ),
    pytest.param(
        "claude",
        Reply(
            text="Some",
            finish_reason="refusal",
            stop_details={"type": "refusal", "category": "cyber", "explanation": "This could enable malware."},
        ),
        "refusal (cyber): This could enable malware.",
        id="anthropic-refusal",
    ),
    pytest.param(
        "gemini",
        Reply(text="Some", finish_reason="SAFETY"),
        "SAFETY",
        id="gemini-safety",
    ),
    pytest.param("gemini", Reply(text="", finish_reason="MODEL_ARMOR"), "MODEL_ARMOR", id="gemini-model-armor"),
    pytest.param(
        "gemini",
        Reply(block_reason="PROHIBITED_CONTENT", block_message="The prompt breaks the policy."),
        "prompt blocked: PROHIBITED_CONTENT: The prompt breaks the policy.",
        id="gemini-prompt-blocked",
    ),
]


@pytest.mark.parametrize(("provider", "reply", "reason"), FILTERED)
@plain_and_streamed
async def test_a_filtered_answer_keeps_the_providers_reason_and_the_usage_it_billed(
    fake_server: FakeProviderServer, provider: str, reply: Reply, reason: str, streamed: bool
) -> None:
    reply.input_tokens, reply.output_tokens = 17, 3
    fake_server.script(API_OF[provider], reply)
    error = await _error(fake_server, provider, streamed)
    assert isinstance(error, ContentFilteredError)
    assert not error.retryable
    assert error.message == f"the provider filtered the answer ({reason})"
    assert error.usage is not None
    assert error.usage.input_tokens == 17
    assert error.usage.output_tokens == (0 if reply.block_reason else 3)


# -- Claude: only text and our output tool make the answer ---------------------------------------------

WEB_SEARCH: list[dict[str, Any]] = [
    {"type": "thinking", "thinking": "The user wants a capital.", "signature": "sig-1"},
    {"type": "text", "text": "Let me look that up."},
    {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "capital of France"}},
    {
        "type": "web_search_tool_result",
        "tool_use_id": "srvtoolu_1",
        "content": [
            {"type": "web_search_result", "url": "https://example.org/fr", "title": "France", "encrypted_content": "e1"}
        ],
    },
    {"type": "text", "text": " Paris is the capital."},
]
CODE_EXECUTION: list[dict[str, Any]] = [
    {"type": "server_tool_use", "id": "srvtoolu_2", "name": "code_execution", "input": {"code": "print('red')"}},
    {
        "type": "code_execution_tool_result",
        "tool_use_id": "srvtoolu_2",
        "content": {"type": "code_execution_result", "stdout": "red\n", "stderr": "", "return_code": 0, "content": []},
    },
    {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"colour": "blue"}},
    {"type": "tool_use", "id": "toolu_1", "name": OUTPUT_TOOL, "input": {"colour": "red"}},
]


async def test_claude_server_tool_blocks_never_leak_into_the_answer_streamed_or_not(
    fake_server: FakeProviderServer,
) -> None:
    fake_server.script("anthropic", Reply(blocks=WEB_SEARCH), Reply(blocks=WEB_SEARCH))
    async with create_llm(llm_config("claude", fake_server)) as llm:
        plain = await _answer(llm, streamed=False)
        streamed = await _answer(llm, streamed=True)
    assert plain.text == streamed.text == "Let me look that up. Paris is the capital."


async def test_claude_structured_output_is_only_the_output_tools_input_streamed_or_not(
    fake_server: FakeProviderServer,
) -> None:
    fake_server.script("anthropic", Reply(blocks=CODE_EXECUTION), Reply(blocks=CODE_EXECUTION))
    async with create_llm(llm_config("claude", fake_server)) as llm:
        plain = await _answer(llm, streamed=False, json_schema=SCHEMA)
        streamed = await _answer(llm, streamed=True, json_schema=SCHEMA)
    assert json.loads(plain.text) == json.loads(streamed.text) == {"colour": "red"}
    assert plain.finish_reason == streamed.finish_reason == "stop"


# -- usage -------------------------------------------------------------------------------------------


@each_provider
@plain_and_streamed
async def test_usage_tells_cache_reads_cache_writes_and_reasoning_apart(
    fake_server: FakeProviderServer, provider: str, streamed: bool
) -> None:
    fake_server.script(
        API_OF[provider],
        Reply(
            text="Paris.",
            input_tokens=100,
            output_tokens=40,
            cache_read_tokens=60,
            cache_write_tokens=10,
            reasoning_tokens=25,
        ),
    )
    usage = (await _ask(fake_server, provider, streamed)).usage
    # Gemini reports no cache writes: its caches are made ahead of the call.
    writes = None if provider == "gemini" else 10
    assert usage == Usage(
        input_tokens=100, output_tokens=40, cache_read_tokens=60, cache_write_tokens=writes, reasoning_tokens=25
    )


@pytest.mark.parametrize("style", ["last_chunk", "x_groq"])
async def test_openai_compatible_usage_outside_the_usage_chunk_is_read(
    fake_server: FakeProviderServer, style: UsageStyle
) -> None:
    fake_server.script("openai", Reply(text="Paris is big", input_tokens=9, output_tokens=3, usage_style=style))
    response = await _ask(fake_server, "openai_compatible", streamed=True)
    assert response.usage == Usage(input_tokens=9, output_tokens=3)


@pytest.mark.parametrize("provider", ["gpt", "openai_compatible"])
@plain_and_streamed
async def test_a_server_that_reports_no_usage_gives_none_not_zeros(
    fake_server: FakeProviderServer, provider: str, streamed: bool
) -> None:
    fake_server.script("openai", Reply(text="Paris", usage_style="none"))
    response = await _ask(fake_server, provider, streamed)
    assert response.text == "Paris"
    assert response.usage is None


def test_usage_adds_up_and_counts_not_reported_stay_none() -> None:
    total = Usage(input_tokens=10, output_tokens=2, cache_read_tokens=4) + Usage(
        input_tokens=5, output_tokens=1, reasoning_tokens=1
    )
    assert total == Usage(input_tokens=15, output_tokens=3, cache_read_tokens=4, reasoning_tokens=1)
    assert total.cache_write_tokens is None


# -- error events inside a 200 stream ------------------------------------------------------------------

OVERLOADED_WORDS = {
    "openai": "The server is overloaded.",
    "anthropic": "Overloaded",
    "gemini": "The model is overloaded.",
}


@each_provider
@pytest.mark.parametrize(
    ("stream_error", "type_name", "retryable"),
    [
        (None, "provider_unavailable", True),
        (Fault.rate_limited(), "rate_limited", True),
        (Fault.bad_request("messages: unexpected role"), "invalid_request", False),
    ],
    ids=["overloaded", "rate_limited", "invalid_request"],
)
async def test_an_error_event_in_a_stream_keeps_the_providers_type_and_words(
    fake_server: FakeProviderServer, provider: str, stream_error: Fault | None, type_name: str, retryable: bool
) -> None:
    api = API_OF[provider]
    reply = Reply(chunks=["one ", "two ", "three"], truncate_after=2, truncate_mode="error", stream_error=stream_error)
    fake_server.script(api, reply)
    error = await _error(fake_server, provider, streamed=True)
    assert (error.type_name, error.retryable, error.status_code) == (type_name, retryable, None)
    words = stream_error.message if stream_error else OVERLOADED_WORDS[api]
    assert error.message.startswith(f"the provider failed mid-stream: {words}")
    assert "HTTP" not in error.message
    assert error.partial_text == "one two "


# -- options a model rejects ---------------------------------------------------------------------------

BOTH = {"temperature": 0.2, "top_p": 0.9}


@pytest.mark.parametrize(
    ("model", "options", "problems"),
    [
        (
            "claude-sonnet-4-5",
            BOTH,
            ["claude-sonnet-4-5 accepts temperature or top_p, not both: leave one of them unset"],
        ),
        (
            "claude-haiku-4-5-20251001",
            BOTH,
            ["claude-haiku-4-5-20251001 accepts temperature or top_p, not both: leave one of them unset"],
        ),
        ("claude-opus-4-1", BOTH, ["claude-opus-4-1 accepts temperature or top_p, not both: leave one of them unset"]),
        ("claude-sonnet-4-6", {"temperature": 0.2, "top_k": 5}, []),
        ("claude-sonnet-4-20250514", BOTH, []),
        ("claude-opus-4-20250514", BOTH, []),
        ("claude-3-5-haiku-latest", BOTH, []),
        (
            "claude-opus-4-7",
            {"temperature": 0.2, "top_k": 5},
            ["claude-opus-4-7 accepts no sampling options (Anthropic removed them): leave temperature and top_k unset"],
        ),
        ("claude-opus-4-7", {"max_tokens": 100, "stop": ["END"]}, []),
    ],
)
def test_claude_names_the_options_a_model_rejects(model: str, options: dict[str, Any], problems: list[str]) -> None:
    config = LlmConfig(name="writer", provider="claude", model=model)
    assert ClaudeLlm.option_problems(config, GenerationOptions(**options)) == problems


def test_providers_without_option_limits_report_no_problems() -> None:
    config = LlmConfig(name="writer", provider="gpt", model="gpt-4.1-mini")
    assert GptLlm.option_problems(config, GenerationOptions(**BOTH, top_k=3)) == []

"""Every SDK provider, through its real SDK client, against the fake server: the shared contract.

Response and usage mapping, streaming, error mapping with ``retry_after``, exactly one HTTP
request per call (SDK retries off), partial text on broken streams, and closing the HTTP
stream when the consumer stops or the call is cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
import pytest

from llm_abstractions import BaseLlm, LlmChunk, LlmError, Message, collect_stream, create_llm
from tests.fakes.agents import API_OF, PROVIDERS, llm_config
from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply

pytestmark = pytest.mark.parametrize("provider", PROVIDERS)

MESSAGES = [Message.system("Be brief."), Message.user("What is the capital of France?")]
NATIVE_LENGTH = {"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}


@pytest.fixture
async def llm(provider: str, fake_server: FakeProviderServer) -> AsyncIterator[BaseLlm]:
    async with create_llm(llm_config(provider, fake_server)) as client:
        yield client


async def _streamed(llm: BaseLlm) -> tuple[list[LlmChunk], LlmError | None]:
    chunks: list[LlmChunk] = []
    try:
        async for chunk in llm.stream_content_async(MESSAGES):
            chunks.append(chunk)
    except LlmError as exc:
        return chunks, exc
    return chunks, None


async def _closed_by_client(request: RecordedRequest) -> bool:
    return await anyio.to_thread.run_sync(request.client_closed.wait, 5.0)


async def test_response_maps_text_finish_usage_and_served_model(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    api = API_OF[provider]
    fake_server.script(
        api,
        Reply(
            text="Paris.", model="served-2026-01", input_tokens=11, output_tokens=7, finish_reason=NATIVE_LENGTH[api]
        ),
    )
    response = await llm.generate_content_async(MESSAGES)
    assert response.text == "Paris."
    assert response.model == "served-2026-01"
    assert response.finish_reason == "length"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert response.provider == provider
    [request] = fake_server.requests
    assert (request.api, request.stream) == (api, False)


async def test_stream_yields_the_pieces_the_server_sent(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    fake_server.script(API_OF[provider], Reply(chunks=["Par", "is", " is", " big."], input_tokens=9, output_tokens=4))
    chunks, error = await _streamed(llm)
    assert error is None
    assert [c.text for c in chunks if c.text] == ["Par", "is", " is", " big."]
    usages = [c.usage for c in chunks if c.usage is not None]
    assert usages[-1] is not None
    assert (usages[-1].input_tokens, usages[-1].output_tokens) == (9, 4)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    [request] = fake_server.requests
    assert request.stream


async def test_streamed_and_plain_calls_account_alike(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    fake_server.script(
        API_OF[provider], Reply(text="one two three", model="m-1"), Reply(text="one two three", model="m-1")
    )
    plain = await llm.generate_content_async(MESSAGES)
    streamed = await collect_stream(llm.stream_content_async(MESSAGES), provider=provider, model=llm.model_name)
    assert (streamed.text, streamed.model, streamed.finish_reason, streamed.usage) == (
        plain.text,
        plain.model,
        plain.finish_reason,
        plain.usage,
    )
    assert streamed.time_to_first_token_s is not None
    assert streamed.time_to_first_token_s <= streamed.latency_s


@pytest.mark.parametrize(
    ("fault", "type_name", "retryable"),
    [
        (Fault.unauthorized(), "authentication", False),
        (Fault.forbidden(), "authentication", False),
        (Fault.rate_limited(), "rate_limited", True),
        (Fault.server_error(), "provider_unavailable", True),
        (Fault.unavailable(), "provider_unavailable", True),
        (Fault.overloaded(), "provider_unavailable", True),
        (Fault.bad_request("unknown field 'frobnicate'"), "invalid_request", False),
        (Fault.context_length(), "context_length_exceeded", False),
        (Fault.reset(), "connection", True),
        (Fault.malformed_json(), "provider_unavailable", True),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_errors_map_to_typed_errors_with_one_request(
    provider: str,
    llm: BaseLlm,
    fake_server: FakeProviderServer,
    fault: Fault,
    type_name: str,
    retryable: bool,
    streamed: bool,
) -> None:
    fake_server.script(API_OF[provider], fault)
    with pytest.raises(LlmError) as caught:
        if streamed:
            await collect_stream(llm.stream_content_async(MESSAGES), provider=provider)
        else:
            await llm.generate_content_async(MESSAGES)
    error = caught.value
    assert (error.type_name, error.retryable, error.provider) == (type_name, retryable, provider)
    if fault.kind == "status":
        assert error.status_code == fault.status
    assert len(fake_server.requests) == 1, "the SDK retried on its own"
    assert "test-" not in str(error)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "150"}, 0.15),
        ({"retry-after-ms": "150", "retry-after": "9"}, 0.15),
    ],
)
async def test_retry_after_headers_become_retry_after(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer, headers: dict[str, str], expected: float
) -> None:
    fake_server.script(API_OF[provider], Fault(status=429, message="slow down", headers=headers))
    with pytest.raises(LlmError) as caught:
        await llm.generate_content_async(MESSAGES)
    assert caught.value.type_name == "rate_limited"
    assert caught.value.retry_after == pytest.approx(expected)
    assert len(fake_server.requests) == 1


async def test_retry_after_http_date(provider: str, llm: BaseLlm, fake_server: FakeProviderServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake_server.script(API_OF[provider], Fault.rate_limited(retry_after=format_datetime(when, usegmt=True)))
    with pytest.raises(LlmError) as caught:
        await llm.generate_content_async(MESSAGES)
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


@pytest.mark.parametrize("mode", ["close", "reset", "clean"])
async def test_broken_stream_keeps_the_partial_text(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer, mode: str
) -> None:
    fake_server.script(API_OF[provider], Reply(chunks=["one ", "two ", "three"], truncate_after=2, truncate_mode=mode))  # type: ignore[arg-type]
    with pytest.raises(LlmError) as caught:
        await collect_stream(llm.stream_content_async(MESSAGES), provider=provider)
    assert caught.value.type_name == "connection"
    assert caught.value.retryable
    assert caught.value.partial_text == "one two "
    assert len(fake_server.requests) == 1


async def test_a_raising_consumer_stops_the_stream_and_closes_the_connection(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    fake_server.script(API_OF[provider], Reply(chunks=[f"w{i} " for i in range(20)], chunk_delay_s=0.25))
    seen: list[str] = []

    def consumer(chunk: LlmChunk) -> None:
        if chunk.text:
            seen.append(chunk.text)
            raise RuntimeError("consumer gave up")

    with pytest.raises(RuntimeError, match="consumer gave up"):
        await collect_stream(llm.stream_content_async(MESSAGES), provider=provider, on_chunk=consumer)
    assert seen == ["w0 "]
    [request] = fake_server.requests
    assert await _closed_by_client(request)
    assert not request.completed.is_set()


async def test_cancellation_closes_the_http_stream(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    fake_server.script(API_OF[provider], Reply(chunks=[f"w{i} " for i in range(20)], chunk_delay_s=0.25))
    first = anyio.Event()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def consume() -> None:
                async for chunk in llm.stream_content_async(MESSAGES):
                    if chunk.text:
                        first.set()

            tg.start_soon(consume)
            await first.wait()
            scope.cancel()
    [request] = fake_server.requests
    assert await _closed_by_client(request)
    assert not request.completed.is_set()


async def test_a_slow_answer_times_out_on_the_configured_timeout(
    provider: str, fake_server: FakeProviderServer
) -> None:
    fake_server.script(API_OF[provider], Reply(delay_s=10))
    async with create_llm(llm_config(provider, fake_server, timeout_s=0.3)) as llm:
        with anyio.fail_after(5), pytest.raises(LlmError) as caught:
            await llm.generate_content_async(MESSAGES)
    assert (caught.value.type_name, caught.value.retryable) == ("timeout", True)
    [request] = fake_server.requests
    assert await _closed_by_client(request)


async def test_many_concurrent_calls_share_one_client(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    results: list[str] = []

    async def one(i: int) -> None:
        response = await llm.generate_content_async([Message.user(f"question {i}")])
        results.append(response.text)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert sorted(results) == sorted(f"echo: question {i}" for i in range(50))
    assert len(fake_server.requests) == 50


@pytest.mark.parametrize("mode", ["error", "malformed"])
async def test_an_error_or_malformed_event_mid_stream_is_retryable_and_keeps_the_partial_text(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer, mode: str
) -> None:
    fake_server.script(API_OF[provider], Reply(chunks=["one ", "two ", "three"], truncate_after=2, truncate_mode=mode))  # type: ignore[arg-type]
    with pytest.raises(LlmError) as caught:
        await collect_stream(llm.stream_content_async(MESSAGES), provider=provider)
    assert (caught.value.type_name, caught.value.retryable) == ("provider_unavailable", True)
    assert caught.value.partial_text == "one two "


@pytest.mark.parametrize(
    "body",
    [
        "{}",
        "[]",
        '{"id": "x", "object": "list", "data": []}',
        '{"error": {"message": "try again"}}',
        '{"choices": 7, "candidates": 5, "content": 3}',
    ],
)
async def test_a_200_body_that_is_not_an_answer_is_a_retryable_malformed_response(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer, body: str
) -> None:
    fake_server.script(API_OF[provider], Fault(status=200, body=body))
    with pytest.raises(LlmError) as caught:
        await llm.generate_content_async(MESSAGES)
    error = caught.value
    assert (error.type_name, error.retryable, error.provider) == ("provider_unavailable", True, provider)
    assert "malformed response" in error.message
    assert len(fake_server.requests) == 1


MISTYPED_EVENT = {
    "openai": 'data: {"choices": 7}\n\n',
    "anthropic": 'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": 5}\n\n',
    "gemini": 'data: {"candidates": 5}\n\n',
}


async def test_a_stream_event_with_mistyped_fields_is_a_retryable_malformed_response(
    provider: str, llm: BaseLlm, fake_server: FakeProviderServer
) -> None:
    api = API_OF[provider]
    fake_server.script(api, Fault(status=200, body=MISTYPED_EVENT[api]))
    with pytest.raises(LlmError) as caught:
        await collect_stream(llm.stream_content_async(MESSAGES), provider=provider)
    error = caught.value
    assert (error.type_name, error.retryable, error.provider) == ("provider_unavailable", True, provider)
    assert "malformed response" in error.message
    assert len(fake_server.requests) == 1

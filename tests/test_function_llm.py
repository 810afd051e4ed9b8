"""``FunctionLlm``: answers, streams and errors come from a Python function."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import cast

import pytest

from llm_abstractions import (
    FunctionLlm,
    GenerationOptions,
    LlmChunk,
    LlmConfig,
    LlmResponse,
    Message,
    RateLimitedError,
    Usage,
)
from llm_abstractions.function import LlmFunction, StreamFunction

HELLO = [Message.system("be brief"), Message.user("hello")]


def shout(messages: Sequence[Message], options: GenerationOptions) -> str:
    return messages[-1].content.upper()


async def shout_async(messages: Sequence[Message], options: GenerationOptions) -> str:
    return messages[-1].content.upper()


def words(messages: Sequence[Message], options: GenerationOptions) -> Iterator[str]:
    yield from ["one ", "two ", "three"]


async def words_async(messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[str]:
    for word in ["one ", "two ", "three"]:
        yield word


@pytest.mark.parametrize("function", [shout, shout_async])
async def test_function_answer_becomes_a_response(function: LlmFunction) -> None:
    response = await FunctionLlm(function, model="echo-1").generate_content_async(HELLO)
    assert (response.text, response.provider, response.model, response.finish_reason) == (
        "HELLO",
        "function",
        "echo-1",
        "stop",
    )


async def test_function_receives_messages_and_resolved_options() -> None:
    seen: list[tuple[Sequence[Message], GenerationOptions]] = []

    def record(messages: Sequence[Message], options: GenerationOptions) -> str:
        seen.append((messages, options))
        return "ok"

    llm = FunctionLlm(record, config=LlmConfig(name="a", provider="function", options=GenerationOptions(seed=7)))
    await llm.generate_content_async(HELLO, max_tokens=5, temperature=0.2)
    [(messages, options)] = seen
    assert list(messages) == HELLO
    assert (options.max_tokens, options.temperature, options.seed) == (5, 0.2, 7)


async def test_a_returned_response_is_kept_as_is() -> None:
    answer = LlmResponse(text="{}", provider="mine", model="m", finish_reason="length", usage=Usage(input_tokens=3))
    assert await FunctionLlm(lambda messages, options: answer).generate_content_async(HELLO) is answer


@pytest.mark.parametrize("stream_function", [words, words_async])
async def test_stream_yields_the_pieces_in_order(stream_function: StreamFunction) -> None:
    llm = FunctionLlm(stream_function=stream_function)
    chunks = [chunk async for chunk in llm.stream_content_async(HELLO)]
    assert [chunk.text for chunk in chunks] == ["one ", "two ", "three", ""]
    assert chunks[-1].finish_reason == "stop"
    response = await llm.generate_content_async(HELLO)
    assert (response.text, response.finish_reason, response.provider) == ("one two three", "stop", "function")
    assert response.time_to_first_token_s is not None


async def test_stream_chunks_pass_through_with_their_finish_reason() -> None:
    def chunks(messages: Sequence[Message], options: GenerationOptions) -> Iterator[LlmChunk]:
        yield LlmChunk(text="cut")
        yield LlmChunk(finish_reason="length", usage=Usage(output_tokens=1))

    streamed = [chunk async for chunk in FunctionLlm(stream_function=chunks).stream_content_async(HELLO)]
    assert [(chunk.text, chunk.finish_reason) for chunk in streamed] == [("cut", None), ("", "length")]


async def test_function_answers_complete_calls_and_stream_function_streams() -> None:
    llm = FunctionLlm(shout, stream_function=words)
    assert (await llm.generate_content_async(HELLO)).text == "HELLO"
    assert [chunk.text async for chunk in llm.stream_content_async(HELLO)] == ["one ", "two ", "three", ""]


async def test_without_stream_function_the_stream_is_one_chunk() -> None:
    llm = FunctionLlm(shout)
    assert not llm.streams and FunctionLlm(stream_function=words).streams
    chunks = [chunk async for chunk in llm.stream_content_async(HELLO)]
    assert [(chunk.text, chunk.finish_reason) for chunk in chunks] == [("HELLO", "stop")]


@pytest.mark.parametrize("sync", [True, False])
async def test_closing_the_stream_closes_the_generator(sync: bool) -> None:
    closed: list[str] = []

    def endless(messages: Sequence[Message], options: GenerationOptions) -> Iterator[str]:
        try:
            while True:
                yield "x"
        finally:
            closed.append("sync")

    async def endless_async(messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
        finally:
            closed.append("async")

    llm = FunctionLlm(stream_function=endless if sync else endless_async)
    stream = cast(AsyncGenerator[LlmChunk, None], llm.stream_content_async(HELLO))
    assert (await anext(stream)).text == "x"
    await stream.aclose()
    assert closed == ["sync" if sync else "async"]


async def test_typed_errors_propagate_unchanged() -> None:
    error = RateLimitedError("slow down", retry_after=2.0, provider="function")

    def limited(messages: Sequence[Message], options: GenerationOptions) -> str:
        raise error

    async def limited_stream(messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[str]:
        yield "partial"
        raise error

    with pytest.raises(RateLimitedError) as caught:
        await FunctionLlm(limited).generate_content_async(HELLO)
    assert caught.value is error and caught.value.retryable
    with pytest.raises(RateLimitedError) as caught:
        await FunctionLlm(stream_function=limited_stream).generate_content_async(HELLO)
    assert caught.value is error and caught.value.partial_text == "partial"


def test_config_is_built_or_given() -> None:
    assert FunctionLlm(shout).config == LlmConfig(name="function", provider="function")
    assert FunctionLlm(shout, name="writer", model="m").config == LlmConfig(
        name="writer", provider="function", model="m"
    )
    config = LlmConfig(name="writer", provider="function", timeout_s=3)
    assert FunctionLlm(shout, config=config).config is config
    with pytest.raises(TypeError, match="inside config"):
        FunctionLlm(shout, model="m", config=config)
    with pytest.raises(TypeError, match="needs a function"):
        FunctionLlm()

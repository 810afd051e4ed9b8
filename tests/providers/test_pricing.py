"""Cost from genai-prices: known models priced, unknown ones and local servers not; cache reads and
writes at their own rates."""

from __future__ import annotations

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from llm_abstractions import Message, Usage, create_llm
from llm_abstractions.pricing import cost_usd
from tests.fakes.agents import MODEL_OF, llm_config
from tests.fakes.provider_server import FakeProviderServer, Reply

USAGE = Usage(input_tokens=1200, output_tokens=345)


@pytest.mark.parametrize(
    ("provider_id", "model"),
    [
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4o-2024-08-06"),
        ("anthropic", "claude-sonnet-4-6"),
        ("google", "gemini-2.5-flash"),
        ("groq", "llama-3.3-70b-versatile"),
    ],
)
def test_known_models_are_priced_from_genai_prices(provider_id: str, model: str) -> None:
    expected = calc_price(PriceUsage(input_tokens=1200, output_tokens=345), model, provider_id=provider_id)
    cost = cost_usd(provider_id, model, USAGE)
    assert cost is not None
    assert cost > 0
    assert cost == pytest.approx(float(expected.total_price))


@pytest.mark.parametrize(
    ("provider_id", "model", "usage"),
    [
        ("openai", "no-such-model-2099", USAGE),
        (None, "gpt-4.1-mini", USAGE),
        ("openai", None, USAGE),
        ("openai", "gpt-4.1-mini", None),
    ],
)
def test_unknown_gives_no_cost(provider_id: str | None, model: str | None, usage: Usage | None) -> None:
    assert cost_usd(provider_id, model, usage) is None


def test_usage_that_contradicts_itself_gives_no_cost() -> None:
    assert cost_usd("anthropic", "claude-sonnet-4-6", Usage(input_tokens=10, cache_read_tokens=500)) is None


async def test_a_claude_call_with_cache_reads_costs_less_than_the_same_tokens_uncached(
    fake_server: FakeProviderServer,
) -> None:
    def reply(cache_read: int | None = None, cache_write: int | None = None) -> Reply:
        return Reply(
            text="Paris.",
            input_tokens=10_000,
            output_tokens=50,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )

    fake_server.script("anthropic", reply(cache_read=9_000), reply(), reply(cache_write=9_000))
    async with create_llm(llm_config("claude", fake_server)) as llm:
        responses = [await llm.generate_content_async([Message.user("Capital of France?")]) for _ in range(3)]
    read, plain, written = (cost_usd(llm.pricing_provider, llm.model_name, r.usage) for r in responses)
    assert read is not None and plain is not None and written is not None
    assert read < plain < written  # cache reads are cheaper than input, cache writes dearer
    expected = calc_price(
        PriceUsage(input_tokens=10_000, cache_read_tokens=9_000, output_tokens=50),
        MODEL_OF["claude"],
        provider_id="anthropic",
    )
    assert read == pytest.approx(float(expected.total_price))

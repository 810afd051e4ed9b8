"""Cost from genai-prices: known models priced, unknown ones and local servers not."""

from __future__ import annotations

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from llm_abstractions import Usage
from llm_abstractions.pricing import cost_usd

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

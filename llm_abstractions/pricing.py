"""The cost of a call, from its token usage and genai-prices' maintained price data.

An unknown model, an unpriced provider (local servers) or a missing ``genai-prices``
gives ``None``: no cost is recorded rather than a guess.
"""

from __future__ import annotations

from llm_abstractions.messages import Usage

__all__ = ["cost_usd"]


def cost_usd(provider_id: str | None, model: str | None, usage: Usage | None) -> float | None:
    """What ``usage`` of ``model`` costs at ``provider_id`` (a genai-prices provider id), in USD."""
    if not provider_id or not model or usage is None:
        return None
    try:
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price
    except ImportError:
        return None
    try:
        calculation = calc_price(
            PriceUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
            model,
            provider_id=provider_id,
        )
    except LookupError:
        return None
    return float(calculation.total_price)

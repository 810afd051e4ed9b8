"""The cost of a call, from its token usage and genai-prices' maintained price data.

Cache reads and cache writes are priced at their own rates (genai-prices counts them inside
``input_tokens``, as :class:`~llm_abstractions.messages.Usage` does); reasoning tokens are
output tokens. An unknown model, an unpriced provider (local servers), usage that contradicts
itself or a missing ``genai-prices`` gives ``None``: no cost is recorded rather than a guess.
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
    counts = PriceUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )
    try:
        calculation = calc_price(counts, model, provider_id=provider_id)
    except (LookupError, ValueError):  # ValueError: counts that contradict each other
        return None
    return float(calculation.total_price)

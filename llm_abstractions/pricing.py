"""The cost of a call, from its token usage and genai-prices' maintained price data.

Cache reads and cache writes are priced at their own rates (genai-prices counts them inside
``input_tokens``, as :class:`~llm_abstractions.messages.Usage` does); reasoning tokens are
output tokens. An unknown model, an unpriced provider (local servers), usage that contradicts
itself or a missing ``genai-prices`` gives ``None``: no cost is recorded rather than a guess.

A call answered through a batch API (``batch=True``) is priced at the model's batch prices where genai-prices has
them (its ``processing: batch`` price variant), else at :data:`BATCH_DISCOUNT` of the standard prices: the 50% that
OpenAI, Anthropic and Google document for their batch APIs.
"""

from __future__ import annotations

from llm_abstractions.messages import Usage

__all__ = ["BATCH_DISCOUNT", "cost_usd"]

BATCH_DISCOUNT = 0.5
"""The share of the standard price a batch request costs where genai-prices has no batch price."""
_BATCH = {"processing": "batch"}


def cost_usd(provider_id: str | None, model: str | None, usage: Usage | None, *, batch: bool = False) -> float | None:
    """What ``usage`` of ``model`` costs at ``provider_id`` (a genai-prices provider id), in USD; ``batch``: answered
    through the provider's batch API."""
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
        if not batch:
            return float(calculation.total_price)
        discounted = calc_price(counts, model, provider_id=provider_id, price_context=_BATCH)
    except (LookupError, ValueError):  # ValueError: counts that contradict each other
        return None
    if discounted.total_price < calculation.total_price:
        return float(discounted.total_price)
    return float(calculation.total_price) * BATCH_DISCOUNT  # no batch price variant for this model

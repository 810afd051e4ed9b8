"""``GenerationOptions`` -> mlx-lm sampler and logits processors (imported in the MLX worker thread only)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, greedy_sampler, make_logits_processors

from llm_abstractions.messages import GenerationOptions

__all__ = ["Sampler", "SamplerCache", "logits_processors_for"]

Sampler = Callable[[mx.array], mx.array]


def _filters(options: GenerationOptions) -> list[Callable[[mx.array], mx.array]]:
    filters: list[Callable[[mx.array], mx.array]] = []
    if options.top_p is not None and options.top_p < 1.0:
        filters.append(partial(apply_top_p, top_p=options.top_p))
    if options.min_p:
        filters.append(partial(apply_min_p, min_p=options.min_p))
    if options.top_k:
        filters.append(partial(apply_top_k, top_k=options.top_k))
    return filters


def _sampler(options: GenerationOptions) -> Sampler:
    """Temperature sampling after top-p, min-p and top-k; a seed gives the request its own key sequence."""
    temperature = options.temperature or 0.0
    filters = _filters(options)
    key = None if options.seed is None else mx.random.key(options.seed)

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        for keep in filters:
            logprobs = keep(logprobs)
        step_key = None
        if key is not None:
            key, step_key = mx.random.split(key)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=step_key)

    return sample


class SamplerCache:
    """Samplers by options: unseeded requests with equal options share one sampler, so the
    batch generator samples their rows in one call; seeded requests get their own."""

    def __init__(self) -> None:
        self._shared: dict[tuple[Any, ...], Sampler] = {}

    def sampler(self, options: GenerationOptions) -> Sampler:
        if not options.temperature:
            return greedy_sampler
        if options.seed is not None:
            return _sampler(options)
        key = (options.temperature, options.top_p, options.min_p, options.top_k)
        sampler = self._shared.get(key)
        if sampler is None:
            sampler = self._shared[key] = _sampler(options)
        return sampler


def logits_processors_for(options: GenerationOptions) -> list[Callable[[mx.array, mx.array], mx.array]]:
    """The repetition penalty, as an mlx-lm logits processor."""
    if options.repetition_penalty is None or options.repetition_penalty == 1.0:
        return []
    return make_logits_processors(repetition_penalty=options.repetition_penalty)

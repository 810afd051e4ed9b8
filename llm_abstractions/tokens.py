"""Input tokens of a request, counted offline where a tokenizer can be had, else estimated.

OpenAI's models are counted with their own encodings (o200k, cl100k), which the ``bpe-openai`` package ships
inside its wheel (``tiktoken`` would download them at first use, which fails without a network), with the chat
format's overhead: 3 tokens per message and 3 to prime the answer. A ``gpt`` model the package does not list yet
is counted with o200k (every OpenAI model since gpt-4o uses it). Every other model is estimated at four
characters a token, and said to be (``exact`` is ``False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from llm_abstractions.messages import Message

__all__ = ["TokenCount", "count_input_tokens"]

_PER_MESSAGE = 3
_REPLY_PRIMING = 3
_OPENAI_PROVIDERS = frozenset({"gpt", "openai_compatible"})


@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool
    """Counted with the model's tokenizer; ``False``: estimated (four characters a token)."""


def count_input_tokens(provider: str, model: str | None, messages: Sequence[Message]) -> TokenCount:
    """The input tokens ``messages`` make for ``model`` at ``provider``."""
    encoding = _openai_encoding(model, provider == "gpt") if provider in _OPENAI_PROVIDERS and model else None
    if encoding is None:
        return TokenCount(sum(len(m.content) for m in messages) // 4 + 1, exact=False)
    tokens = _REPLY_PRIMING
    for message in messages:
        tokens += _PER_MESSAGE + len(encoding.encode(message.role)) + len(encoding.encode(message.content))
    return TokenCount(tokens, exact=True)


@cache
def _openai_encoding(model: str, openai: bool) -> Any:
    """The encoding of an OpenAI model (o200k for an ``openai`` one it does not list), or ``None`` (not an OpenAI
    model, or ``bpe-openai`` not installed)."""
    try:
        import bpe_openai  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        return bpe_openai.encoding_for_model(model)
    except LookupError:  # UnsupportedModelError
        return bpe_openai.get_encoding("o200k_base") if openai else None

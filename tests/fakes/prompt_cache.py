"""The providers' prompt caches, simulated by the fake server (:attr:`FakeProviderServer.prompt_cache`).

Tokens are the fake's: the words of the request's texts, in the order the provider reads the prompt (Anthropic:
tools, system, messages; OpenAI: messages; Gemini: system instruction, contents). Other parts (tool schemas,
images, PDFs) count no tokens but are part of the prefix: a different image makes a different prefix.

- Anthropic caches only what is marked: the prefix up to each block with ``cache_control``, when it is at least
  :attr:`PromptCache.minimum` tokens. A request reads the longest marked prefix seen before and writes the rest up
  to its last mark (``cache_read_input_tokens``, ``cache_creation_input_tokens``).
- OpenAI and Gemini cache every prompt by itself: a request reads the longest prefix it shares with an earlier
  request of the same model, from :attr:`PromptCache.minimum` tokens on, in steps of :attr:`PromptCache.step`
  (``prompt_tokens_details.cached_tokens``, ``cachedContentTokenCount``); nothing is billed for writing.

A prefix is cached from its request's arrival on (the real caches from when the answer starts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.scripted import RecordedRequest, Reply

__all__ = ["PromptCache"]

_Unit = tuple[list[str], str, bool]
"""A piece of the prompt: a text's words (each a token, as the fake's usage counts them), or another part's JSON
(no tokens), and whether a ``cache_control`` mark ends it."""


@dataclass
class PromptCache:
    """The prefixes seen so far, per API and model."""

    minimum: int = 1024
    """The shortest prefix cached, in tokens."""
    step: int = 128
    """OpenAI and Gemini: cached lengths are multiples of this past :attr:`minimum`."""
    _seen: set[str] = field(default_factory=set)

    def apply(self, request: RecordedRequest, reply: Reply) -> Reply:
        """``reply`` with the cache counts of ``request`` (a reply that sets its own is kept as it is)."""
        if reply.cache_read_tokens is not None or reply.cache_write_tokens is not None:
            return reply
        body = request.body if isinstance(request.body, dict) else {}
        namespace = f"{request.api}:{request.model}"
        if request.api == "anthropic":
            read, write = self._marked(namespace, _anthropic_units(body))
            return dataclasses.replace(reply, cache_read_tokens=read, cache_write_tokens=write)
        units = _gemini_units(body) if request.api == "gemini" else _openai_units(body)
        return dataclasses.replace(reply, cache_read_tokens=self._automatic(namespace, units))

    def _marked(self, namespace: str, units: list[_Unit]) -> tuple[int, int]:
        marks = [(tokens, key) for tokens, key, marked in _prefixes(namespace, units) if marked]
        marks = [(tokens, key) for tokens, key in marks if tokens >= self.minimum]
        read = max((tokens for tokens, key in marks if key in self._seen), default=0)
        write = max(0, marks[-1][0] - read) if marks else 0
        self._seen.update(key for _, key in marks)
        return read, write

    def _automatic(self, namespace: str, units: list[_Unit]) -> int:
        cached = 0
        for tokens, key, _ in _prefixes(namespace, units, every_word=True):
            if tokens < self.minimum or (tokens - self.minimum) % self.step:
                continue
            if key in self._seen:
                cached = tokens
            self._seen.add(key)
        return cached


def _prefixes(namespace: str, units: list[_Unit], *, every_word: bool = False) -> Iterator[tuple[int, str, bool]]:
    """(tokens, digest, marked) of the prompt's prefixes: after each unit, or also after each word."""
    digest = hashlib.sha256(namespace.encode())
    tokens = 0
    for words, part, marked in units:
        digest.update(part.encode())
        for word in words:
            digest.update(b" " + word.encode())
            tokens += 1
            if every_word:
                yield tokens, digest.copy().hexdigest(), False
        yield tokens, digest.copy().hexdigest(), marked


def _text(text: str, marked: bool = False) -> _Unit:
    return text.split(), "", marked


def _part(value: Any, marked: bool = False) -> _Unit:
    return [], json.dumps(value, sort_keys=True), marked


def _blocks(content: Any) -> Iterator[_Unit]:
    """A content (a string, or a list of blocks / parts) as units."""
    if isinstance(content, str):
        yield _text(content)
        return
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        marked = "cache_control" in block
        if isinstance(block.get("text"), str):
            yield _text(block["text"], marked)
        else:
            yield _part({k: v for k, v in block.items() if k != "cache_control"}, marked)


def _anthropic_units(body: dict[str, Any]) -> list[_Unit]:
    units = [_part(body["tools"])] if "tools" in body else []
    units += _blocks(body.get("system", ""))
    for message in body.get("messages", []):
        units += _blocks(message.get("content", ""))
    return units


def _openai_units(body: dict[str, Any]) -> list[_Unit]:
    return [unit for message in body.get("messages", []) for unit in _blocks(message.get("content", ""))]


def _gemini_units(body: dict[str, Any]) -> list[_Unit]:
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    units = list(_blocks(system.get("parts", [])))
    for content in body.get("contents", []):
        units += _blocks(content.get("parts", []))
    return units

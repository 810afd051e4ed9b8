"""What a provider's response headers say about its rate limits, read the same way for every provider.

- OpenAI (and OpenAI-compatible servers that copy it): ``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the ``-tokens``
  variants; resets are durations such as ``1s``, ``6m0s`` or ``20ms``.
- Anthropic: ``anthropic-ratelimit-requests-limit``, ``-remaining``, ``-reset`` and the
  ``tokens``, ``input-tokens`` and ``output-tokens`` variants; resets are RFC 3339 times.

A provider attaches :class:`RateLimits` to its answers (``LlmResponse.rate_limits``, the first
stream chunk's) and to its errors (``LlmError.rate_limits``); the endpoint's pacer follows them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Allowance", "RateLimits", "rate_limits_from_headers"]


@dataclass(frozen=True, slots=True)
class Allowance:
    """What is left of one limit when the provider answered."""

    remaining: float
    """Requests (or tokens) that may still be sent now."""
    reset_s: float
    """Seconds until the allowance is whole again (a token bucket full, or a window over)."""
    limit: float | None = None
    """The limit itself, as the provider states it (per minute for OpenAI and Anthropic)."""

    @property
    def rate_per_s(self) -> float:
        """The remaining allowance spread over the time to its reset."""
        return self.remaining / max(self.reset_s, 1e-3)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The request and token allowances a response stated; ``None`` where it stated none."""

    requests: Allowance | None = None
    tokens: Allowance | None = None
    """Input tokens where the provider counts them apart (Anthropic), else all tokens."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|us|µs|ns|h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _duration_s(text: str) -> float | None:
    """Seconds of a Go-style duration (``1m30.5s``, ``20ms``) or a plain number of seconds."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def _until_s(text: str, now: datetime) -> float | None:
    """Seconds from ``now`` to an RFC 3339 time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and math.isfinite(value) else None


def _openai(headers: Mapping[str, str], kind: str) -> Allowance | None:
    remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
    reset = headers.get(f"x-ratelimit-reset-{kind}")
    reset_s = _duration_s(reset) if reset is not None else None
    if remaining is None or reset_s is None:
        return None
    return Allowance(remaining, reset_s, _number(headers.get(f"x-ratelimit-limit-{kind}")))


def _anthropic(headers: Mapping[str, str], kind: str, now: datetime) -> Allowance | None:
    prefix = f"anthropic-ratelimit-{kind}"
    remaining = _number(headers.get(f"{prefix}-remaining"))
    reset = headers.get(f"{prefix}-reset")
    reset_s = _until_s(reset, now) if reset is not None else None
    if remaining is None or reset_s is None:
        return None
    return Allowance(remaining, reset_s, _number(headers.get(f"{prefix}-limit")))


def _tightest(*allowances: Allowance | None) -> Allowance | None:
    """The allowance that permits the lowest rate."""
    stated = [a for a in allowances if a is not None]
    return min(stated, key=lambda a: a.rate_per_s) if stated else None


def rate_limits_from_headers(headers: Mapping[str, str] | None, *, now: datetime | None = None) -> RateLimits | None:
    """The allowances ``headers`` state (header names lower-case, or a case-insensitive mapping); ``None`` if none."""
    if not headers:
        return None
    if "x-ratelimit-remaining-requests" in headers or "x-ratelimit-remaining-tokens" in headers:
        requests, tokens = _openai(headers, "requests"), _openai(headers, "tokens")
    elif any(f"anthropic-ratelimit-{kind}-remaining" in headers for kind in ("requests", "tokens", "input-tokens")):
        now = now or datetime.now(UTC)
        requests = _anthropic(headers, "requests", now)
        tokens = _tightest(_anthropic(headers, "tokens", now), _anthropic(headers, "input-tokens", now))
    else:
        return None
    if requests is None and tokens is None:
        return None
    return RateLimits(requests, tokens)

"""A fake provider that enforces requests- and tokens-per-minute limits, for pacing tests and benchmarks.

``FakeProviderServer(RateLimitedProvider(requests_per_minute=600))`` answers ``text`` while the
limits allow a request and a 429 with ``Retry-After`` otherwise. Each limit is a token bucket
holding ``burst_s`` seconds of its rate (at least one request), full at the start and refilled
continuously. A request costs one request and its tokens: the words of its texts plus those of
``text``, as the fake server counts usage; a charge larger than the token bucket is admitted
when the bucket is full and leaves it in debt. Like the real APIs, answers state what is left in
rate-limit headers: OpenAI's ``x-ratelimit-*``, Anthropic's ``anthropic-ratelimit-*``, none for
Gemini (which sends none).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tests.fakes.scripted import Api, Fault, RecordedRequest, Reply, Response
from tests.fakes.wire_formats import input_words, word_count

__all__ = ["RateLimitedProvider", "go_duration"]


def go_duration(seconds: float) -> str:
    """``seconds`` as Go prints a duration, to the millisecond, as OpenAI's resets: ``120ms``, ``1.5s``, ``1m2.5s``."""
    ms = max(0, round(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    minutes, ms = divmod(ms, 60_000)
    hours, minutes = divmod(minutes, 60)
    text = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    return f"{hours}h{text}" if hours else text


def _rfc3339(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class _Bucket:
    """A token bucket: ``level`` of ``capacity``, refilled at ``rate_per_s`` since ``updated``."""

    per_minute: float
    capacity: float
    level: float
    updated: float

    @property
    def rate_per_s(self) -> float:
        return self.per_minute / 60

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now

    def wait_s(self, charge: float) -> float:
        """Seconds until ``charge`` fits; a charge above the capacity fits a full bucket."""
        return max(0.0, (min(charge, self.capacity) - self.level) / self.rate_per_s)

    def full_in_s(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate_per_s)


class RateLimitedProvider:
    """A handler for :class:`~tests.fakes.provider_server.FakeProviderServer` that rate-limits its answers."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        *,
        burst_s: float = 1.0,
        headers: bool = True,
        latency_s: float = 0.0,
        text: str = "ok",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst_s = burst_s
        self.headers = headers
        """Whether answers state the limits in headers (never for Gemini)."""
        self.latency_s = latency_s
        """Wait before each admitted answer starts."""
        self.text = text
        self._clock = clock
        self.accepted: list[float] = []
        """Clock times of the admitted requests."""
        self.limited = 0
        """429s sent."""
        self.arrivals: list[float] = []
        """Clock times of every request."""
        self._lock = threading.Lock()
        self._requests: _Bucket | None = None
        self._tokens: _Bucket | None = None
        self.set_limits(requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute)

    def set_limits(self, *, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        """Change both limits now (``None``: none); each bucket keeps its level, capped at its new capacity."""
        for limit in (requests_per_minute, tokens_per_minute):
            if limit is not None and limit <= 0:
                raise ValueError(f"a rate limit must be positive, not {limit}")
        with self._lock:
            now = self._clock()
            self._requests = self._rebucket(self._requests, requests_per_minute, now)
            self._tokens = self._rebucket(self._tokens, tokens_per_minute, now)

    def _rebucket(self, old: _Bucket | None, per_minute: float | None, now: float) -> _Bucket | None:
        if per_minute is None:
            return None
        capacity = max(1.0, per_minute / 60 * self._burst_s)
        level = capacity
        if old is not None:
            old.refill(now)
            level = min(old.level, capacity)
        return _Bucket(per_minute, capacity, level, now)

    def charge(self, request: RecordedRequest) -> int:
        """The tokens ``request`` costs: its input words plus the answer's."""
        return input_words(request) + word_count(self.text)

    def __call__(self, request: RecordedRequest) -> Response:
        """``text`` if both limits allow ``request`` (taking from both), else a 429 whose ``Retry-After``
        is the seconds until it fits, rounded up to the millisecond."""
        with self._lock:
            now = self._clock()
            self.arrivals.append(now)
            costs = [(self._requests, 1), (self._tokens, self.charge(request))]
            stated = [(bucket, cost) for bucket, cost in costs if bucket is not None]
            for bucket, _ in stated:
                bucket.refill(now)
            wait_s = max((bucket.wait_s(cost) for bucket, cost in stated), default=0.0)
            if wait_s > 1e-9:
                self.limited += 1
                fault = Fault.rate_limited(retry_after=f"{math.ceil(wait_s * 1000 - 1e-6) / 1000:.3f}")
                fault.headers |= self._headers(request.api)
                return fault
            for bucket, cost in stated:
                bucket.level -= cost
            self.accepted.append(now)
            return Reply(text=self.text, delay_s=self.latency_s, headers=self._headers(request.api))

    def _headers(self, api: Api | None) -> dict[str, str]:
        """The rate-limit headers ``api`` sends for the buckets as they are now."""
        headers: dict[str, str] = {}
        if not self.headers or api not in ("openai", "anthropic"):
            return headers
        for kind, bucket in (("requests", self._requests), ("tokens", self._tokens)):
            if bucket is None:
                continue
            limit, remaining = str(round(bucket.per_minute)), str(max(0, math.floor(bucket.level)))
            if api == "openai":
                headers[f"x-ratelimit-limit-{kind}"] = limit
                headers[f"x-ratelimit-remaining-{kind}"] = remaining
                headers[f"x-ratelimit-reset-{kind}"] = go_duration(bucket.full_in_s())
                continue
            reset = _rfc3339(datetime.now(UTC) + timedelta(seconds=bucket.full_in_s()))
            for name in ("requests",) if kind == "requests" else ("input-tokens", "tokens"):
                headers[f"anthropic-ratelimit-{name}-limit"] = limit
                headers[f"anthropic-ratelimit-{name}-remaining"] = remaining
                headers[f"anthropic-ratelimit-{name}-reset"] = reset
        return headers

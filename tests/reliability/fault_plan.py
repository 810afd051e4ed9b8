"""A fault plan for the fake provider server: seeded transient faults and bursts of 429s.

Used by the SDK fault tests, the crash tests and the benchmark. Each request is answered
with a success (recorded per task key) or a transient fault; every ``burst_every``-th
request starts a burst: for ``burst_window_s`` (and for at least ``burst_min`` requests)
every request gets a 429 with ``Retry-After: retry_after_s``. The plan records when each burst started.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.provider_server import Fault, RecordedRequest, Reply, Response

__all__ = ["FaultPlan", "last_user_text"]


def last_user_text(request: RecordedRequest) -> str:
    """The text of the last message of an OpenAI, Anthropic or Gemini request body."""
    body: Any = request.body or {}
    if request.api == "gemini":
        return str(body["contents"][-1]["parts"][0]["text"])
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return str(content[0]["text"])
    return str(content)


@dataclass
class FaultPlan:
    """Decides every answer of the fake server (install it as ``server.handler``)."""

    seed: int = 0
    fault_rate: float = 0.15
    """Share of requests answered with a 503, a connection reset or a hang past the call timeout."""
    burst_every: int = 0
    """Start a burst of 429s at every n-th request (0: never)."""
    burst_window_s: float = 0.03
    burst_min: int = 3
    """A burst answers every request of its window with a 429, and at least this many (however slow the client)."""
    retry_after_s: float = 0.5
    hang_s: float = 2.0
    reply_delay_s: float = 0.0
    """How long each success takes."""
    key: Any = None
    """Maps the request's last user text to the task key successes are counted by."""
    successes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    bursts: list[float] = field(default_factory=list)
    """``time.monotonic()`` of the first 429 of each burst."""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._count = 0
        self._burst_until = -1.0
        self._burst_left = 0
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Response:
        text = last_user_text(request)
        key = self.key(text) if self.key else text
        with self._lock:
            self._count += 1
            now = time.monotonic()
            if self.burst_every and self._count % self.burst_every == 0 and now >= self._burst_until:
                self._burst_until = now + self.burst_window_s
                self._burst_left = self.burst_min
                self.bursts.append(now)
            if now < self._burst_until or self._burst_left > 0:
                self._burst_left -= 1
                self.faults["429"] += 1
                return Fault.rate_limited(retry_after=self.retry_after_s)
            roll = self._rng.random()
            if roll < self.fault_rate:
                kind = ("503", "reset", "hang")[int(roll / self.fault_rate * 3)]
                self.faults[kind] += 1
                if kind == "503":
                    return Fault.unavailable()
                if kind == "reset":
                    return Fault.reset()
                return Fault(status=500, message="too late", delay_s=self.hang_s)
            self.successes[key] += 1
        return Reply(text=f"done: {key}", delay_s=self.reply_delay_s)

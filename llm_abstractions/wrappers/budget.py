"""Leaky-bucket budgets (requests or tokens per minute) on whichever event loop runs.

On asyncio a budget is an ``aiolimiter.AsyncLimiter``; aiolimiter runs on asyncio
only, so on any other anyio backend (trio) it is a :class:`LeakyBucket` of the same
behaviour. :func:`budget` picks one for the running loop.
"""

from __future__ import annotations

from typing import Protocol

import anyio
import sniffio

__all__ = ["Budget", "LeakyBucket", "budget"]

_TOLERANCE = 1e-9
"""Rounding slack, so that a wait of exactly the computed time always suffices."""


class Budget(Protocol):
    """What a budget offers: its capacity and a wait for some of it."""

    max_rate: float
    """Capacity of the bucket: the largest amount one :meth:`acquire` may take."""

    async def acquire(self, amount: float = 1) -> None:
        """Wait until ``amount`` fits in the bucket, then add it."""


class LeakyBucket:
    """A leaky bucket over anyio: ``max_rate`` units per ``time_period`` seconds, bursts up to ``max_rate``.

    Waiters are served first come, first served (one waits for capacity while the others
    queue on a lock). Create it inside the event loop that uses it.
    """

    def __init__(self, max_rate: float, time_period: float = 60.0) -> None:
        self.max_rate = max_rate
        self.time_period = time_period
        self._rate_per_s = max_rate / time_period
        self._level = 0.0
        self._last_check = anyio.current_time()
        self._turn = anyio.Lock()

    def _leak(self) -> None:
        now = anyio.current_time()
        self._level = max(0.0, self._level - (now - self._last_check) * self._rate_per_s)
        self._last_check = now

    async def acquire(self, amount: float = 1) -> None:
        if not 0 <= amount <= self.max_rate:
            raise ValueError("amount must be between 0 and the bucket's max_rate")
        async with self._turn:
            self._leak()
            while self._level + amount > self.max_rate + _TOLERANCE:
                await anyio.sleep((self._level + amount - self.max_rate) / self._rate_per_s)
                self._leak()
            self._level += amount


def budget(max_rate: float, time_period: float) -> Budget:
    """A bucket for the running event loop: aiolimiter's on asyncio, else a :class:`LeakyBucket`."""
    if sniffio.current_async_library() == "asyncio":
        from aiolimiter import AsyncLimiter  # imports asyncio: only where a budget is configured

        return AsyncLimiter(max_rate, time_period)
    return LeakyBucket(max_rate, time_period)

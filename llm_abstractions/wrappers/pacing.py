"""Pacing: how fast one endpoint is sent requests and tokens, learned from the provider while a run goes.

A :class:`Pacer` spaces the calls to one endpoint (provider, base URL and key) at a request rate
and a token rate, each the lowest of:

- the configured ``requests_per_minute`` / ``tokens_per_minute`` (an upper bound never exceeded);
- what the provider's rate-limit headers say (:mod:`llm_abstractions.rate_limits`): the remaining
  allowance spread over the time until it is whole again, so a run uses its whole allowance
  without reaching the wall (against a token bucket this settles at the refill rate with the
  bucket half full). It never drops much below what went through in the last ``window_s``: an
  allowance that ran low refills before the next answer can say so;
- after a 429 without such headers, a rate learned by AIMD: it drops to ``decrease`` times the
  rate of successes seen over the last ``window_s`` seconds, then grows by ``recovery_per_s`` of
  that rate each second while calls succeed.

The first 429 answering a request sent after the last backoff also pauses the endpoint for its
``Retry-After``; 429s to requests sent before it change nothing. Until the endpoint has answered
once, one call at a time goes to it (for at most ``probe_s``): the first answer says whether the
provider sends rate-limit headers, before a burst is sent.

Everything here is arithmetic on an injectable clock, behind a thread lock (a pacer is shared by
every run of the process that uses its endpoint, whatever its event loop); waiting is the
caller's (:class:`~llm_abstractions.wrappers.limits.EndpointLimits`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from llm_abstractions.rate_limits import Allowance, RateLimits

__all__ = ["PaceReason", "Pacer", "PacingSettings", "PacingStatus", "Ticket", "Wait", "key_digest", "shared_pacer"]


class PaceReason(StrEnum):
    """What sets an endpoint's current rate."""

    UNLIMITED = "unlimited"
    CONFIGURED = "configured"
    HEADERS = "headers"
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class PacingStatus:
    """An endpoint's current pace: rates per minute (``None``: not limited) and why."""

    requests_per_minute: float | None
    tokens_per_minute: float | None
    reason: PaceReason
    paused_s: float = 0.0
    """Seconds left of a ``Retry-After`` pause."""


@dataclass(frozen=True, slots=True)
class PacingSettings:
    """How a pacer adapts; the defaults suit every provider."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    default_backoff_s: float = 1.0
    """Pause after a 429 that names no ``Retry-After``."""
    max_backoff_s: float = 120.0
    """Cap on an honoured ``Retry-After``."""
    decrease: float = 0.9
    """After a 429 the rate drops to this share of the rate of successes just seen."""
    recovery_per_s: float = 0.05
    """Then it grows, each second calls succeed, by this share of the rate it dropped to."""
    window_s: float = 2.0
    """Successes of this many recent seconds make the observed rate."""
    probe_s: float = 1.0
    """Longest wait for the first answer of an endpoint before others are sent."""
    learns: bool = True
    """Probe first and follow headers and 429s; off for in-process models (never rate-limited)."""


@dataclass(frozen=True, slots=True)
class Ticket:
    """One admitted call: when it was sent and what it was charged."""

    sent_at: float
    tokens: int


@dataclass(frozen=True, slots=True)
class Wait:
    """Not now: look again after ``seconds`` (sooner once the endpoint answers, when ``probing``)."""

    seconds: float
    probing: bool = False


@dataclass(slots=True)
class _Spacing:
    """One rate's schedule: the earliest time the next unit may go (strict spacing, no burst)."""

    next_at: float = -math.inf

    def delay(self, now: float, rate: float) -> float:
        return 0.0 if rate == math.inf else max(0.0, self.next_at - now)

    def take(self, now: float, rate: float, amount: float) -> None:
        if rate != math.inf:
            self.next_at = max(self.next_at, now) + amount / rate


@dataclass(frozen=True, slots=True)
class _Stated:
    """What the provider's headers stated of one allowance, valid until it is whole again."""

    remaining: float
    reset_s: float
    until: float

    def rate(self, amount: float) -> float:
        """What remains spread over the time to the reset; a call larger than what remains waits for the reset."""
        return max(self.remaining, amount, 1.0) / self.reset_s


class Pacer:
    """The pace of one endpoint; see the module docstring. Thread-safe."""

    def __init__(self, settings: PacingSettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._request_cap = _per_s(settings.requests_per_minute)
        self._token_cap = _per_s(settings.tokens_per_minute)
        self._requests = _Spacing()
        self._tokens = _Spacing()
        self._stated_requests: _Stated | None = None
        self._stated_tokens: _Stated | None = None
        self._learned = math.inf
        """The AIMD request rate (per second); infinite until a 429."""
        self._learned_base = math.inf
        self._last_growth = -math.inf
        self._successes: deque[tuple[float, float]] = deque()
        """Time and tokens of each success of the last ``window_s``."""
        self._success_tokens = 0.0
        self._started: float | None = None
        self._answered = not settings.learns
        self._probe_until = -math.inf
        self._paused_until = -math.inf
        self._last_backoff = -math.inf
        self._token_debt = 0.0
        self._last_tokens = 0
        """The charge of the last call admitted (what the token rate is shown for)."""
        self.backoffs = 0
        """How many 429 bursts paused the endpoint."""

    def tighten(self, settings: PacingSettings) -> None:
        """Apply ``settings``' configured limits where they are stricter than this pacer's."""
        with self._lock:
            self._request_cap = min(self._request_cap, _per_s(settings.requests_per_minute))
            self._token_cap = min(self._token_cap, _per_s(settings.tokens_per_minute))

    # -- the rates ---------------------------------------------------------------------

    def _request_rate(self, now: float) -> tuple[float, PaceReason]:
        rate, reason = self._request_cap, PaceReason.CONFIGURED
        stated = self._stated_requests
        if stated is not None and stated.until > now:
            # Never much below what went through lately: an allowance that ran low refills while we
            # wait for the next answer to say so, and stalling until its reset would waste the refill.
            floor = self.settings.decrease * self._observed_rate(now, settled=True)
            if (stated_rate := max(stated.rate(1.0), floor)) < rate:
                rate, reason = stated_rate, PaceReason.HEADERS
        if self._learned < rate:
            rate, reason = self._learned, PaceReason.RATE_LIMITED
        return rate, (reason if rate != math.inf else PaceReason.UNLIMITED)

    def _token_rate(self, now: float, tokens: float) -> tuple[float, PaceReason]:
        """The token rate for a call charged ``tokens``."""
        rate, reason = self._token_cap, PaceReason.CONFIGURED
        stated = self._stated_tokens
        if stated is not None and stated.until > now:
            floor = self.settings.decrease * self._observed_rate(now, settled=True, tokens=True)
            if (stated_rate := max(stated.rate(tokens), floor)) < rate:
                rate, reason = stated_rate, PaceReason.HEADERS
        return rate, (reason if rate != math.inf else PaceReason.UNLIMITED)

    def status(self) -> PacingStatus:
        """The current pace, for progress displays and events."""
        with self._lock:
            now = self._clock()
            requests, request_reason = self._request_rate(now)
            tokens, token_reason = self._token_rate(now, self._last_tokens)
            paused = max(0.0, self._paused_until - now)
        reason = request_reason if request_reason is not PaceReason.UNLIMITED else token_reason
        if paused > 0:
            reason = PaceReason.RATE_LIMITED
        return PacingStatus(_per_minute(requests), _per_minute(tokens), reason, paused)

    # -- admission ---------------------------------------------------------------------

    def try_send(self, tokens: int = 0) -> Ticket | Wait:
        """Admit one call charged ``tokens`` now, or say how long to wait before asking again."""
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return Wait(self._paused_until - now)
            if not self._answered and now < self._probe_until:
                return Wait(self._probe_until - now, probing=True)
            request_rate = self._request_rate(now)[0]
            charge = max(0.0, tokens + self._token_debt)
            token_rate = self._token_rate(now, charge)[0]
            delay = self._requests.delay(now, request_rate)
            if tokens or self._token_debt:
                delay = max(delay, self._tokens.delay(now, token_rate))
            if delay > 0:
                return Wait(delay)
            self._requests.take(now, request_rate, 1.0)
            self._tokens.take(now, token_rate, charge)
            self._token_debt = 0.0
            self._last_tokens = tokens
            if self._probe_until == -math.inf:
                self._probe_until = now + self.settings.probe_s
            return Ticket(now, tokens)

    # -- feedback ----------------------------------------------------------------------

    def on_answer(self, ticket: Ticket, rate_limits: RateLimits | None, used_tokens: int | None = None) -> None:
        """A call admitted with ``ticket`` succeeded: follow its headers, settle its tokens, recover."""
        with self._lock:
            now = self._clock()
            self._answered = True
            if self._started is None:
                self._started = now
            self._observe(rate_limits, now)
            if used_tokens is not None and self._token_rate(now, ticket.tokens)[0] != math.inf:
                self._token_debt += used_tokens - ticket.tokens
            self._successes.append((now, ticket.tokens if used_tokens is None else used_tokens))
            self._success_tokens += self._successes[-1][1]
            self._forget_before(now - self.settings.window_s)
            if self._learned != math.inf:
                grown = self._learned_base * self.settings.recovery_per_s * min(1.0, now - self._last_growth)
                self._learned += grown
                self._last_growth = now

    def on_rate_limited(self, ticket: Ticket, retry_after: float | None, rate_limits: RateLimits | None) -> None:
        """A call admitted with ``ticket`` was answered 429: back off once per burst."""
        with self._lock:
            now = self._clock()
            self._answered = True
            self._observe(rate_limits, now)
            if self._token_rate(now, ticket.tokens)[0] != math.inf:
                self._token_debt -= ticket.tokens  # a refused call used none of its allowance
            if ticket.sent_at < self._last_backoff:
                return
            self._last_backoff = now
            pause = self.settings.default_backoff_s if retry_after is None else retry_after
            self._paused_until = max(self._paused_until, now + min(self.settings.max_backoff_s, pause))
            self.backoffs += 1
            stated = self._stated_requests
            if stated is not None and stated.until > now:
                return  # the headers set the rate: this 429 answered what was sent before they said so
            current = self._observed_rate(now)
            if current == 0:  # nothing succeeded lately: a call per pause
                current = 1.0 / max(pause, 1e-3)
            self._learned = self._learned_base = self.settings.decrease * current
            self._last_growth = now

    def on_failure(self, ticket: Ticket, rate_limits: RateLimits | None) -> None:
        """A call admitted with ``ticket`` failed otherwise: the endpoint answered; follow its headers."""
        with self._lock:
            self._answered = True
            self._observe(rate_limits, self._clock())

    def _observe(self, rate_limits: RateLimits | None, now: float) -> None:
        if rate_limits is None:
            return
        if rate_limits.requests is not None:
            self._stated_requests = _stated(rate_limits.requests, now)
        if rate_limits.tokens is not None:
            self._stated_tokens = _stated(rate_limits.tokens, now)

    def _observed_rate(self, now: float, *, settled: bool = False, tokens: bool = False) -> float:
        """Successes (``tokens``: their tokens) per second over the last ``window_s``, or since the first
        success if that is sooner (``settled``: over the whole window even then, never overstating a burst)."""
        if self._started is None:
            return 0.0
        window_s = self.settings.window_s
        self._forget_before(now - window_s)
        span = window_s if settled else min(window_s, now - self._started)
        return (self._success_tokens if tokens else len(self._successes)) / max(span, 1e-3)

    def _forget_before(self, start: float) -> None:
        """Drop the successes older than ``start`` (the window never holds more than ``window_s`` of them)."""
        successes = self._successes
        while successes and successes[0][0] < start:
            self._success_tokens -= successes.popleft()[1]


def _stated(allowance: Allowance, now: float) -> _Stated:
    reset_s = max(allowance.reset_s, 1e-3)
    return _Stated(allowance.remaining, reset_s, now + reset_s)


def _per_s(per_minute: float | None) -> float:
    return math.inf if per_minute is None else per_minute / 60.0


def _per_minute(per_s: float) -> float | None:
    return None if per_s == math.inf else per_s * 60.0


PacerKey = tuple[str, str, str]

_shared: weakref.WeakValueDictionary[PacerKey, Pacer] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def key_digest(api_key: str | None) -> str:
    """How an API key is told apart from others without keeping it: a sha256 digest (``""``: no key)."""
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""


def shared_pacer(provider: str, base_url: str, digest: str, settings: PacingSettings) -> Pacer:
    """The pacer every run of this process shares for one endpoint (its key's :func:`key_digest`) while
    any run uses it. A configured limit stricter than the pacer's applies to every run that shares it
    (one key, one allowance)."""
    key = (provider, base_url, digest)
    with _shared_lock:
        pacer = _shared.get(key)
        if pacer is None:
            pacer = _shared[key] = Pacer(settings)
        else:
            pacer.tighten(settings)
        return pacer

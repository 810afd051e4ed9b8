"""Rate limits read from the providers' response headers, through the real SDKs against the fake server.

Answers carry them (``LlmResponse.rate_limits``, a stream's first chunk), 429s carry them with
``retry_after`` (``LlmError.rate_limits``); answers without such headers, and Gemini's, carry ``None``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from llm_abstractions import LlmError, Message, RateLimitedError, create_llm
from llm_abstractions.rate_limits import Allowance, RateLimits
from llm_abstractions.wrappers import StreamedLlm
from tests.fakes.agents import API_OF, llm_config
from tests.fakes.provider_server import FakeProviderServer, Fault, Reply
from tests.fakes.rate_limited import RateLimitedProvider

MESSAGES = [Message.user("What is the capital of France?")]

OPENAI_HEADERS = {
    "x-ratelimit-limit-requests": "500",
    "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-requests": "120ms",
    "x-ratelimit-limit-tokens": "30000",
    "x-ratelimit-remaining-tokens": "29000",
    "x-ratelimit-reset-tokens": "2s",
}
OPENAI_LIMITS = RateLimits(requests=Allowance(499, 0.12, 500), tokens=Allowance(29000, 2.0, 30000))


def anthropic_headers(reset_in_s: float = 30.0) -> dict[str, str]:
    """Anthropic's headers, each limit resetting ``reset_in_s`` from now; ``tokens`` tighter than ``input-tokens``."""
    reset = (datetime.now(UTC) + timedelta(seconds=reset_in_s)).isoformat().replace("+00:00", "Z")
    headers: dict[str, str] = {}
    for kind, limit, remaining in (("requests", 50, 49), ("input-tokens", 40000, 39000), ("tokens", 48000, 10000)):
        headers |= {
            f"anthropic-ratelimit-{kind}-limit": str(limit),
            f"anthropic-ratelimit-{kind}-remaining": str(remaining),
            f"anthropic-ratelimit-{kind}-reset": reset,
        }
    return headers


ANTHROPIC_LIMITS = RateLimits(requests=Allowance(49, 30.0, 50), tokens=Allowance(10000, 30.0, 48000))

HEADERS_OF = {"gpt": lambda: OPENAI_HEADERS, "claude": anthropic_headers}
LIMITS_OF = {"gpt": OPENAI_LIMITS, "claude": ANTHROPIC_LIMITS}


with_headers = pytest.mark.parametrize("provider", ["gpt", "claude"])
every_mode = pytest.mark.parametrize("mode", ["plain", "stream", "collected"])


async def rate_limits_of(server: FakeProviderServer, provider: str, mode: str) -> RateLimits | None:
    """The rate limits of an answer: plain, on a stream's first chunk (none after), or collected by ``StreamedLlm``."""
    async with create_llm(llm_config(provider, server)) as llm:
        if mode == "stream":
            first, *rest = [chunk async for chunk in llm.stream_content_async(MESSAGES)]
            assert [chunk.rate_limits for chunk in rest] == [None] * len(rest)
            return first.rate_limits
        model = StreamedLlm(llm) if mode == "collected" else llm
        return (await model.generate_content_async(MESSAGES)).rate_limits


async def error_of(server: FakeProviderServer, provider: str, mode: str) -> LlmError:
    with pytest.raises(LlmError) as caught:
        await rate_limits_of(server, provider, mode)
    return caught.value


def assert_limits(actual: RateLimits | None, provider: str, elapsed_s: float) -> None:
    """``actual`` is what the headers of ``provider`` state, read ``elapsed_s`` after they were made.

    OpenAI's resets are durations, read exactly; Anthropic's are times, nearer by the time elapsed.
    """
    expected = LIMITS_OF[provider]
    early_s = elapsed_s + 0.01 if provider == "claude" else 0.0
    assert actual is not None
    for got, want in ((actual.requests, expected.requests), (actual.tokens, expected.tokens)):
        assert got is not None and want is not None
        assert (got.remaining, got.limit) == (want.remaining, want.limit)
        assert want.reset_s - early_s <= got.reset_s <= want.reset_s


@with_headers
@every_mode
async def test_an_answer_carries_the_rate_limits_its_headers_state(
    fake_server: FakeProviderServer, provider: str, mode: str
) -> None:
    started = time.monotonic()
    fake_server.script(API_OF[provider], Reply(text="Paris", headers=HEADERS_OF[provider]()))
    limits = await rate_limits_of(fake_server, provider, mode)
    assert_limits(limits, provider, time.monotonic() - started)


@with_headers
@every_mode
async def test_a_429_carries_the_rate_limits_and_retry_after(
    fake_server: FakeProviderServer, provider: str, mode: str
) -> None:
    started = time.monotonic()
    fault = Fault.rate_limited(retry_after="1.5")
    fault.headers |= HEADERS_OF[provider]()
    fake_server.script(API_OF[provider], fault)
    error = await error_of(fake_server, provider, mode)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 1.5
    assert_limits(error.rate_limits, provider, time.monotonic() - started)


@pytest.mark.parametrize("provider", ["gpt", "claude", "gemini"])
@every_mode
async def test_an_answer_without_rate_limit_headers_carries_none(
    fake_server: FakeProviderServer, provider: str, mode: str
) -> None:
    fake_server.script(API_OF[provider], Reply(text="Paris"))
    assert await rate_limits_of(fake_server, provider, mode) is None


@pytest.mark.parametrize("provider", ["gpt", "claude", "gemini"])
async def test_a_429_without_rate_limit_headers_carries_none(fake_server: FakeProviderServer, provider: str) -> None:
    fake_server.script(API_OF[provider], Fault.rate_limited(retry_after="2"))
    error = await error_of(fake_server, provider, "plain")
    assert isinstance(error, RateLimitedError)
    assert (error.retry_after, error.rate_limits) == (2.0, None)


# -- the rate-limited fake provider, end to end ----------------------------------------------------------


@with_headers
@every_mode
async def test_the_rate_limited_fake_states_its_buckets(
    fake_server: FakeProviderServer, provider: str, mode: str
) -> None:
    fake = RateLimitedProvider(requests_per_minute=60, tokens_per_minute=6000, burst_s=10, clock=lambda: 0.0)
    fake_server.handler = fake
    limits = await rate_limits_of(fake_server, provider, mode)
    assert limits is not None and limits.requests is not None and limits.tokens is not None
    assert (limits.requests.remaining, limits.requests.limit) == (9, 60)
    assert limits.requests.reset_s == pytest.approx(1.0, abs=0.05)
    charge = fake.charge(fake_server.requests[0])
    assert (limits.tokens.remaining, limits.tokens.limit) == (1000 - charge, 6000)
    assert limits.tokens.reset_s == pytest.approx(charge / 100, abs=0.05)


@with_headers
async def test_the_rate_limited_fake_answers_429s_that_say_when_to_retry(
    fake_server: FakeProviderServer, provider: str
) -> None:
    fake_server.handler = fake = RateLimitedProvider(requests_per_minute=60, clock=lambda: 0.0)
    assert await rate_limits_of(fake_server, provider, "plain") is not None
    error = await error_of(fake_server, provider, "plain")
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 1.0
    assert error.rate_limits is not None and error.rate_limits.requests is not None
    assert error.rate_limits.requests.remaining == 0
    assert (len(fake.accepted), fake.limited) == (1, 1)


@every_mode
async def test_gemini_states_no_rate_limits_even_when_rate_limited(fake_server: FakeProviderServer, mode: str) -> None:
    fake_server.handler = RateLimitedProvider(requests_per_minute=60, tokens_per_minute=6000, clock=lambda: 0.0)
    assert await rate_limits_of(fake_server, "gemini", mode) is None
    error = await error_of(fake_server, "gemini", mode)
    assert isinstance(error, RateLimitedError)
    assert (error.retry_after, error.rate_limits) == (1.0, None)

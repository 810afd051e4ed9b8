"""The rate-limited fake provider, called directly with a fake clock: its buckets, 429s and headers."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from llm_abstractions.rate_limits import rate_limits_from_headers
from tests.fakes.rate_limited import RateLimitedProvider, go_duration
from tests.fakes.scripted import Api, Fault, RecordedRequest, Reply, Response

PATHS: dict[Api, str] = {
    "openai": "/v1/chat/completions",
    "anthropic": "/v1/messages",
    "gemini": "/v1beta/models/m:generateContent",
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def request(api: Api = "openai", words: int = 3) -> RecordedRequest:
    """A request whose texts hold ``words`` words: with the default answer ``ok`` it costs ``words + 1`` tokens."""
    text = " ".join(["word"] * words)
    body: dict[str, Any]
    if api == "gemini":
        body = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    else:
        body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return RecordedRequest(
        api=api,
        method="POST",
        path=PATHS[api],
        query={},
        headers={},
        raw_body=json.dumps(body).encode(),
        body=body,
        model="m",
        stream=False,
        received_at=0.0,
    )


def admitted(response: Response) -> bool:
    return isinstance(response, Reply)


def retry_after(response: Response) -> str:
    assert isinstance(response, Fault)
    assert response.status == 429
    return response.headers["retry-after"]


def test_the_request_bucket_holds_the_burst_and_refills_at_the_rate(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, burst_s=2, clock=clock)  # 1 per second, 2 at once
    assert [admitted(provider(request())) for _ in range(3)] == [True, True, False]
    clock.advance(0.5)
    assert retry_after(provider(request())) == "0.500"
    clock.advance(0.5)
    assert admitted(provider(request()))
    assert not admitted(provider(request()))
    assert provider.accepted == [100.0, 100.0, 101.0]
    assert provider.arrivals == [100.0, 100.0, 100.0, 100.5, 101.0, 101.0]
    assert provider.limited == 3


def test_a_full_bucket_holds_no_more_than_its_capacity(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=120, burst_s=1.5, clock=clock)  # capacity 3
    clock.advance(3600)
    assert [admitted(provider(request())) for _ in range(4)] == [True, True, True, False]


def test_the_capacity_is_at_least_one_request(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=6, burst_s=1, clock=clock)  # 0.1 per second
    assert admitted(provider(request()))
    assert retry_after(provider(request())) == "10.000"


def test_the_token_bucket_charges_input_and_output_words(clock: FakeClock) -> None:
    provider = RateLimitedProvider(tokens_per_minute=600, clock=clock)  # 10 per second, capacity 10
    assert provider.charge(request(words=3)) == 4
    assert [admitted(provider(request(words=3))) for _ in range(3)] == [True, True, False]
    assert retry_after(provider(request(words=3))) == "0.200"  # 2 left, 4 needed
    assert admitted(provider(request(words=1)))  # 2 fit
    clock.advance(0.4)
    assert admitted(provider(request(words=3)))


def test_a_charge_above_the_capacity_fits_a_full_bucket_and_leaves_a_debt(clock: FakeClock) -> None:
    provider = RateLimitedProvider(tokens_per_minute=60, clock=clock)  # 1 per second, capacity 1
    assert admitted(provider(request(words=3)))  # costs 4
    assert retry_after(provider(request(words=3))) == "4.000"  # back to full from -3
    clock.advance(4)
    assert admitted(provider(request(words=3)))


def test_both_limits_must_allow_a_request(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=600, tokens_per_minute=60, burst_s=4, clock=clock)
    assert admitted(provider(request(words=3)))  # tokens 4 -> 0
    assert retry_after(provider(request(words=3))) == "4.000"
    clock.advance(4)
    assert admitted(provider(request(words=3)))
    provider.set_limits(requests_per_minute=6, tokens_per_minute=None)  # 0.1 per second, 1 at once
    assert admitted(provider(request(words=3)))
    assert retry_after(provider(request(words=3))) == "10.000"


def test_retry_after_is_rounded_up_to_the_millisecond(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=180, burst_s=0.1, clock=clock)  # 3 per second, capacity 1
    provider(request())
    assert retry_after(provider(request())) == "0.334"
    clock.advance(0.334)
    assert admitted(provider(request()))


def test_the_answer_is_text_after_the_latency(clock: FakeClock) -> None:
    reply = RateLimitedProvider(requests_per_minute=60, latency_s=0.25, text="fine thanks", clock=clock)(request())
    assert isinstance(reply, Reply)
    assert (reply.text, reply.delay_s) == ("fine thanks", 0.25)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.02, "20ms"),
        (0.12, "120ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (62.5, "1m2.5s"),
        (360, "6m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_go_durations(seconds: float, expected: str) -> None:
    assert go_duration(seconds) == expected


def test_openai_headers_state_each_configured_limit(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=120, tokens_per_minute=6000, burst_s=10, clock=clock)
    reply = provider(request(words=3))  # requests: 2/s, 20 at once; tokens: 100/s, 1000 at once
    assert reply.headers == {
        "x-ratelimit-limit-requests": "120",
        "x-ratelimit-remaining-requests": "19",
        "x-ratelimit-reset-requests": "500ms",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "996",
        "x-ratelimit-reset-tokens": "40ms",
    }
    limits = rate_limits_from_headers(reply.headers)
    assert limits is not None and limits.requests is not None and limits.tokens is not None
    assert (limits.requests.remaining, limits.requests.reset_s, limits.requests.limit) == (19, 0.5, 120)
    assert (limits.tokens.remaining, limits.tokens.reset_s, limits.tokens.limit) == (996, 0.04, 6000)


def test_openai_headers_leave_out_limits_not_configured(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, burst_s=120, clock=clock)
    for _ in range(60):
        provider(request())
    headers = provider(request()).headers
    assert set(headers) == {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    }
    assert (headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-reset-requests"]) == ("59", "1m1s")


def test_a_429_states_the_limits_and_when_to_retry(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, clock=clock)
    provider(request())
    fault = provider(request())
    assert retry_after(fault) == "1.000"
    assert fault.headers["x-ratelimit-remaining-requests"] == "0"
    assert fault.headers["x-ratelimit-reset-requests"] == "1s"


def test_anthropic_headers_state_requests_input_tokens_and_tokens(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=120, tokens_per_minute=6000, burst_s=10, clock=clock)
    before = datetime.now(UTC)
    headers = provider(request("anthropic", words=3)).headers
    after = datetime.now(UTC)
    assert {name: value for name, value in headers.items() if not name.endswith("-reset")} == {
        "anthropic-ratelimit-requests-limit": "120",
        "anthropic-ratelimit-requests-remaining": "19",
        "anthropic-ratelimit-input-tokens-limit": "6000",
        "anthropic-ratelimit-input-tokens-remaining": "996",
        "anthropic-ratelimit-tokens-limit": "6000",
        "anthropic-ratelimit-tokens-remaining": "996",
    }
    reset = headers["anthropic-ratelimit-requests-reset"]
    assert reset.endswith("Z") and "." in reset
    assert headers["anthropic-ratelimit-tokens-reset"] == headers["anthropic-ratelimit-input-tokens-reset"]
    until = (datetime.fromisoformat(reset) - before).total_seconds()
    assert 0.499 <= until <= 0.5 + (after - before).total_seconds()

    limits = rate_limits_from_headers(headers, now=before)
    assert limits is not None and limits.requests is not None and limits.tokens is not None
    assert limits.requests.remaining == 19 and limits.requests.reset_s == pytest.approx(0.5, abs=0.01)
    assert limits.tokens.remaining == 996 and limits.tokens.reset_s == pytest.approx(0.04, abs=0.01)


def test_gemini_gets_no_rate_limit_headers_only_retry_after(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, tokens_per_minute=6000, clock=clock)
    assert provider(request("gemini")).headers == {}
    fault = provider(request("gemini"))
    assert fault.headers == {"retry-after": "1.000"}


def test_headers_can_be_left_out(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, headers=False, clock=clock)
    assert provider(request()).headers == {}
    assert provider(request()).headers == {"retry-after": "1.000"}


def test_set_limits_keeps_the_level_capped_at_the_new_capacity(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=600, burst_s=1, clock=clock)  # 10 per second, capacity 10
    for _ in range(4):
        provider(request())
    provider.set_limits(requests_per_minute=120, tokens_per_minute=None)  # 2 per second, capacity 2
    assert provider(request()).headers["x-ratelimit-remaining-requests"] == "1"
    assert admitted(provider(request()))
    assert retry_after(provider(request())) == "0.500"

    provider.set_limits(requests_per_minute=6000, tokens_per_minute=None)  # level kept, not refilled
    assert not admitted(provider(request()))
    clock.advance(0.01)
    assert admitted(provider(request()))


def test_set_limits_adds_and_removes_a_limit(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, clock=clock)
    provider(request())
    provider.set_limits(requests_per_minute=None, tokens_per_minute=240)  # a new bucket starts full: 4 tokens
    headers = provider(request(words=3)).headers
    assert set(headers) == {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}
    assert retry_after(provider(request(words=3))) == "1.000"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimitedProvider(requests_per_minute=0)


def test_concurrent_calls_never_admit_more_than_the_bucket_holds(clock: FakeClock) -> None:
    provider = RateLimitedProvider(requests_per_minute=60, burst_s=25, clock=clock)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: provider(request()), range(200)))
    assert sum(admitted(a) for a in answers) == len(provider.accepted) == 25
    assert provider.limited == 175
    assert len(provider.arrivals) == 200

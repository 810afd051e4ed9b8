"""Rate limits read from response headers, on their own: OpenAI durations, Anthropic times, the tighter limit."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx2
import pytest

from llm_abstractions.rate_limits import Allowance, RateLimits, rate_limits_from_headers

NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def openai_requests(reset: str, remaining: str = "10") -> dict[str, str]:
    return {"x-ratelimit-remaining-requests": remaining, "x-ratelimit-reset-requests": reset}


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1m30.5s", 90.5),
        ("1h2m3.5s", 3723.5),
        ("250us", 250e-6),
        ("0.5", 0.5),
        ("0s", 0.0),
        (" 2s ", 2.0),
    ],
)
def test_openai_resets_are_go_durations_or_seconds(reset: str, seconds: float) -> None:
    limits = rate_limits_from_headers(openai_requests(reset))
    assert limits is not None and limits.requests is not None
    assert limits.requests.reset_s == pytest.approx(seconds)


@pytest.mark.parametrize("reset", ["garbage", "", "1s garbage", "2 s", "-1s", "1.5.5s", "nan", "inf"])
def test_an_openai_reset_that_is_no_duration_states_nothing(reset: str) -> None:
    assert rate_limits_from_headers(openai_requests(reset)) is None


def test_openai_requests_and_tokens() -> None:
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "2s",
    }
    assert rate_limits_from_headers(headers) == RateLimits(
        requests=Allowance(499, 0.12, 500), tokens=Allowance(29000, 2.0, 30000)
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-reset-tokens": "2s"},
        {"x-ratelimit-remaining-tokens": "29000"},
        {"x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "2s"},
        {"x-ratelimit-remaining-tokens": "many", "x-ratelimit-reset-tokens": "2s"},
    ],
)
def test_an_allowance_missing_its_remaining_or_reset_is_none(headers: dict[str, str]) -> None:
    assert rate_limits_from_headers(openai_requests("1s") | headers) == RateLimits(requests=Allowance(10, 1.0))


def test_a_limit_it_cannot_read_is_left_out() -> None:
    limits = rate_limits_from_headers(openai_requests("1s") | {"x-ratelimit-limit-requests": "lots"})
    assert limits == RateLimits(requests=Allowance(10, 1.0, None))


@pytest.mark.parametrize("headers", [None, {}, {"content-type": "application/json"}, {"retry-after": "1"}])
def test_headers_without_rate_limits_state_none(headers: dict[str, str] | None) -> None:
    assert rate_limits_from_headers(headers) is None


def test_header_names_are_matched_case_insensitively_through_the_response_headers() -> None:
    # what the SDKs hand over
    headers = httpx2.Headers({"X-RateLimit-Remaining-Requests": "3", "X-RateLimit-Reset-Requests": "1s"})
    assert rate_limits_from_headers(headers) == RateLimits(requests=Allowance(3, 1.0))


def anthropic(kind: str, remaining: str, reset: str, limit: str = "1000") -> dict[str, str]:
    prefix = f"anthropic-ratelimit-{kind}"
    return {f"{prefix}-limit": limit, f"{prefix}-remaining": remaining, f"{prefix}-reset": reset}


@pytest.mark.parametrize(
    ("reset", "seconds"),
    [
        ("2026-11-21T10:00:30Z", 30.0),
        ("2026-11-21T10:00:00.250Z", 0.25),
        ("2026-11-21T11:01:00+01:00", 60.0),
        ("2026-11-21T10:00:05", 5.0),  # no offset: UTC
        ("2026-11-21T09:59:00Z", 0.0),  # past
    ],
)
def test_anthropic_resets_are_times_read_against_now(reset: str, seconds: float) -> None:
    limits = rate_limits_from_headers(anthropic("requests", "49", reset, "50"), now=NOW)
    assert limits == RateLimits(requests=Allowance(49, seconds, 50))


def test_an_anthropic_reset_that_is_no_time_states_nothing() -> None:
    assert rate_limits_from_headers(anthropic("requests", "49", "soon"), now=NOW) is None


def test_anthropic_tokens_are_the_tighter_of_tokens_and_input_tokens() -> None:
    reset = "2026-11-21T10:00:10Z"
    tokens, input_tokens = anthropic("tokens", "1000", reset, "48000"), anthropic("input-tokens", "39000", reset)
    limits = rate_limits_from_headers(tokens | input_tokens, now=NOW)
    assert limits == RateLimits(tokens=Allowance(1000, 10.0, 48000))

    sooner = anthropic("input-tokens", "39000", "2026-11-21T10:00:01Z", "40000")  # 39000 per s beats 100 per s
    tokens = anthropic("tokens", "1000", reset, "48000")
    limits = rate_limits_from_headers(tokens | sooner, now=NOW)
    assert limits == RateLimits(tokens=Allowance(1000, 10.0, 48000))

    slower = anthropic("input-tokens", "50", "2026-11-21T10:00:10Z", "40000")  # 5 per s beats 100 per s
    limits = rate_limits_from_headers(tokens | slower, now=NOW)
    assert limits == RateLimits(tokens=Allowance(50, 10.0, 40000))


@pytest.mark.parametrize("kind", ["tokens", "input-tokens"])
def test_anthropic_tokens_from_either_header_alone(kind: str) -> None:
    limits = rate_limits_from_headers(anthropic(kind, "700", "2026-11-21T10:00:07Z"), now=NOW)
    assert limits == RateLimits(tokens=Allowance(700, 7.0, 1000))


def test_anthropic_requests_and_tokens_together() -> None:
    headers = anthropic("requests", "49", "2026-11-21T10:00:01.2Z", "50") | anthropic(
        "input-tokens", "39000", "2026-11-21T10:00:02Z", "40000"
    )
    assert rate_limits_from_headers(headers, now=NOW) == RateLimits(
        requests=Allowance(49, 1.2, 50), tokens=Allowance(39000, 2.0, 40000)
    )


def test_anthropic_without_now_reads_against_the_clock() -> None:
    limits = rate_limits_from_headers(anthropic("requests", "1", "2000-01-01T00:00:00Z"))
    assert limits == RateLimits(requests=Allowance(1, 0.0, 1000))


def test_rate_per_s_spreads_the_remaining_over_the_time_to_reset() -> None:
    assert Allowance(10, 2.0).rate_per_s == 5.0
    assert Allowance(10, 0.0).rate_per_s == pytest.approx(10_000.0)  # a reset now: at most 1 ms
    assert Allowance(0, 3.0).rate_per_s == 0.0

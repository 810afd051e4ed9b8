"""The pacer's arithmetic on a fake clock: headers followed, AIMD after 429s, configured caps, the probe."""

from __future__ import annotations

import gc

import pytest

from llm_abstractions.rate_limits import Allowance, RateLimits
from llm_abstractions.wrappers import Pacer, PaceReason, PacingSettings, key_digest, shared_pacer
from llm_abstractions.wrappers.pacing import Ticket, Wait


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pacer(clock: FakeClock, **settings: object) -> Pacer:
    return Pacer(PacingSettings(**settings), clock=clock)  # type: ignore[arg-type]


def admit(p: Pacer, tokens: int = 0) -> Ticket:
    admitted = p.try_send(tokens)
    assert isinstance(admitted, Ticket), admitted
    return admitted


def answered(clock: FakeClock, **settings: object) -> Pacer:
    """A pacer whose endpoint has answered once (so it is no longer probed)."""
    p = pacer(clock, **settings)
    p.on_answer(admit(p), None)
    return p


def send_for(p: Pacer, clock: FakeClock, seconds: float, step: float) -> int:
    """Send a call every ``step`` seconds, as the pacer allows, each answered at once; return how many went."""
    sent, end = 0, clock.now + seconds
    while clock.now < end:
        admitted = p.try_send()
        if isinstance(admitted, Wait):
            clock.now += max(step, admitted.seconds)
            continue
        p.on_answer(admitted, None)
        sent += 1
        clock.now += step
    return sent


def test_an_endpoint_is_unlimited_until_it_says_otherwise() -> None:
    clock = FakeClock()
    p = answered(clock)
    for _ in range(100):
        admit(p)
    status = p.status()
    assert status.reason is PaceReason.UNLIMITED and status.requests_per_minute is None


def test_the_first_call_is_sent_alone_until_answered_or_the_probe_time_passes() -> None:
    clock = FakeClock()
    p = pacer(clock, probe_s=1.0)
    first = admit(p)
    waiting = p.try_send()
    assert waiting == Wait(1.0, probing=True)
    clock.now += 0.25
    assert p.try_send() == Wait(0.75, probing=True)
    p.on_answer(first, None)
    admit(p)
    admit(p)

    slow = pacer(clock, probe_s=1.0)
    admit(slow)
    clock.now += 1.0  # no answer within the probe time: the others go
    admit(slow)


def test_in_process_models_are_not_probed() -> None:
    p = pacer(FakeClock(), learns=False)
    admit(p)
    admit(p)


def test_stated_headers_spread_what_remains_over_the_time_to_reset() -> None:
    clock = FakeClock()
    p = answered(clock)
    p.on_answer(admit(p), RateLimits(requests=Allowance(remaining=10, reset_s=2.0, limit=600)))
    status = p.status()
    assert status.reason is PaceReason.HEADERS
    assert status.requests_per_minute == pytest.approx(300.0)  # 10 calls over 2 s
    admit(p)
    assert p.try_send() == Wait(pytest.approx(0.2))  # type: ignore[arg-type]
    clock.now += 0.2
    admit(p)


def test_nothing_remaining_waits_for_the_reset() -> None:
    clock = FakeClock()
    p = answered(clock)
    p.on_answer(admit(p), RateLimits(requests=Allowance(remaining=0, reset_s=1.0)))
    admit(p)
    assert p.try_send() == Wait(pytest.approx(1.0))  # type: ignore[arg-type]


def test_an_allowance_that_ran_low_is_not_paced_much_below_what_went_through_lately() -> None:
    clock = FakeClock()
    p = answered(clock, decrease=0.9, window_s=2.0)
    send_for(p, clock, seconds=3.0, step=0.1)  # 10 successes a second
    p.on_answer(admit(p), RateLimits(requests=Allowance(remaining=0, reset_s=5.0)))
    admit(p)
    # not one call per 5 s: the allowance refills meanwhile, at about the rate that went through
    assert p.try_send() == Wait(pytest.approx(1 / (0.9 * 10), rel=0.06))  # type: ignore[arg-type]


def test_stated_rates_lapse_once_the_allowance_is_whole_again() -> None:
    clock = FakeClock()
    p = answered(clock)
    p.on_answer(admit(p), RateLimits(requests=Allowance(remaining=1, reset_s=1.0)))
    assert p.status().reason is PaceReason.HEADERS
    clock.now += 1.5
    assert p.status().reason is PaceReason.UNLIMITED


def test_a_configured_limit_is_never_exceeded_whatever_the_headers_say() -> None:
    clock = FakeClock()
    p = answered(clock, requests_per_minute=60)
    clock.now += 1.0
    p.on_answer(admit(p), RateLimits(requests=Allowance(remaining=1000, reset_s=1.0)))
    status = p.status()
    assert (status.reason, status.requests_per_minute) == (PaceReason.CONFIGURED, 60.0)
    assert p.try_send() == Wait(pytest.approx(1.0))  # type: ignore[arg-type]
    assert send_for(p, clock, seconds=10.5, step=0.01) == 10  # one a second


def test_a_429_drops_the_rate_to_a_share_of_the_observed_rate_and_pauses_once() -> None:
    clock = FakeClock()
    p = answered(clock, decrease=0.9, window_s=2.0)
    assert send_for(p, clock, seconds=4.0, step=0.1) == 40  # 10 successes a second
    late = admit(p)
    refused = admit(p)
    clock.now += 0.02  # the answers come back
    p.on_rate_limited(refused, retry_after=0.5, rate_limits=None)
    status = p.status()
    assert status.reason is PaceReason.RATE_LIMITED and status.paused_s == pytest.approx(0.5)
    clock.now += 0.5
    assert p.status().requests_per_minute == pytest.approx(0.9 * 10 * 60, rel=0.06)
    p.on_rate_limited(late, retry_after=5.0, rate_limits=None)  # sent before the backoff: the same burst
    assert p.backoffs == 1 and p.status().paused_s == 0.0


def test_after_a_429_the_rate_recovers_additively_while_calls_succeed() -> None:
    clock = FakeClock()
    p = answered(clock, decrease=0.5, recovery_per_s=0.1, window_s=2.0)
    send_for(p, clock, seconds=4.0, step=0.1)
    p.on_rate_limited(admit(p), retry_after=0.0, rate_limits=None)
    dropped = p.status().requests_per_minute
    assert dropped == pytest.approx(300.0, rel=0.06)  # half of 10 a second
    send_for(p, clock, seconds=5.0, step=0.01)  # calls as fast as the pacer allows
    grown = p.status().requests_per_minute
    assert grown == pytest.approx(dropped * 1.5, rel=0.05)  # 10% of the dropped rate a second, for 5 s


def test_a_429_with_nothing_succeeding_lately_allows_a_call_per_pause() -> None:
    clock = FakeClock()
    p = answered(clock)
    clock.now += 10.0
    p.on_rate_limited(admit(p), retry_after=2.0, rate_limits=None)
    assert p.status().requests_per_minute == pytest.approx(0.9 * 30.0)


def test_tokens_are_paced_by_their_stated_rate_and_settled_with_the_reported_usage() -> None:
    clock = FakeClock()
    p = answered(clock)
    p.on_answer(admit(p), RateLimits(tokens=Allowance(remaining=1000, reset_s=1.0)))  # 1,000 tokens a second
    assert p.status().tokens_per_minute == pytest.approx(60_000)
    ticket = admit(p, tokens=100)
    assert p.try_send(100) == Wait(pytest.approx(0.1))  # type: ignore[arg-type]
    p.on_answer(ticket, None, used_tokens=600)  # 500 more than estimated, charged to the next call
    clock.now += 0.1
    admit(p, tokens=100)
    assert p.try_send(100) == Wait(pytest.approx(0.6))  # type: ignore[arg-type]


def test_a_stricter_configured_limit_tightens_a_shared_pacer() -> None:
    one, two = key_digest("sk-one"), key_digest("sk-two")
    assert "sk-one" not in one and one != two and key_digest(None) == ""
    shared = shared_pacer("gpt", "http://127.0.0.1:1/v1", one, PacingSettings(requests_per_minute=600))
    same = shared_pacer("gpt", "http://127.0.0.1:1/v1", one, PacingSettings(requests_per_minute=60))
    other_key = shared_pacer("gpt", "http://127.0.0.1:1/v1", two, PacingSettings())
    assert same is shared and other_key is not shared
    assert shared.status().requests_per_minute == 60.0
    del shared, same, other_key
    gc.collect()  # no run uses it any more: the next run starts afresh
    fresh = shared_pacer("gpt", "http://127.0.0.1:1/v1", one, PacingSettings())
    assert fresh.status().requests_per_minute is None


def test_an_endpoint_is_named_by_provider_host_and_path_never_by_its_credentials() -> None:
    from orchestration.endpoints import endpoint_label

    key = key_digest("sk-secret")
    assert endpoint_label(("gpt", "https://user:secret@llm.example.com:8443/v1", key)) == "gpt llm.example.com:8443/v1"
    assert endpoint_label(("openai_compatible", "groq", "")) == "openai_compatible groq"
    assert endpoint_label(("claude", "", key)) == "claude"


def test_agents_with_different_keys_on_one_url_are_different_endpoints() -> None:
    from agent_registry import AgentConfig, AgentRegistry
    from orchestration.endpoints import Endpoints

    agents = {
        name: AgentConfig.model_validate({"name": name, "type": "gpt", "model": "m", "api_key": key})
        for name, key in (("a", "sk-a"), ("b", "sk-b"), ("c", "sk-a"))
    }
    endpoints = Endpoints(AgentRegistry(agents.values()))
    a, b, c = (endpoints.for_agent(agent) for agent in agents.values())
    assert a is c and a is not b and a.limits.pacer is not b.limits.pacer


def test_only_the_successes_of_the_window_are_kept() -> None:
    clock = FakeClock()
    p = answered(clock, window_s=2.0)
    send_for(p, clock, seconds=60.0, step=0.01)  # 6,000 successes, never asked for a rate
    assert len(p._successes) <= 201

"""The providers' batch APIs through their real SDKs against the fake server: submit, poll (in progress, then
ended), results matched by custom id with per-request errors typed as real-time ones, expiry, cancellation, finding
a job by its label."""

from __future__ import annotations

import anyio
import pytest

from llm_abstractions import InvalidRequestError, LlmResponse, Message, RateLimitedError, create_llm
from llm_abstractions.batch import BatchLlm, BatchState, custom_id_of, supports_batch
from llm_abstractions.config import LlmConfig
from tests.fakes.agents import base_url_for
from tests.fakes.provider_server import FakeProviderServer, Fault

pytestmark = pytest.mark.anyio

BATCH_PROVIDERS = [("gpt", "gpt-4.1-mini"), ("claude", "claude-sonnet-4-6"), ("gemini", "gemini-2.5-flash")]


def _client(provider: str, model: str, server: FakeProviderServer) -> BatchLlm:
    llm = create_llm(
        LlmConfig(name="b", provider=provider, model=model, api_key="k", base_url=base_url_for(provider, server))
    )
    assert isinstance(llm, BatchLlm)
    return llm


def _lines(llm: BatchLlm, names: list[str]) -> list:  # type: ignore[type-arg]
    return [llm.batch_line(custom_id_of(n), [Message(role="user", content=f"about {n}")]) for n in names]


@pytest.mark.parametrize(("provider", "model"), BATCH_PROVIDERS)
async def test_a_job_is_in_progress_then_ends_with_answers_and_typed_errors_by_custom_id(
    provider: str, model: str, fake_server: FakeProviderServer
) -> None:
    fake_server.batches.faults["b2"] = Fault.bad_request("no such option")
    fake_server.batches.faults["b3"] = Fault.rate_limited()
    async with _client(provider, model, fake_server) as llm:
        batch_id = await llm.submit_batch(_lines(llm, ["b1", "b2", "b3"]), label="job-1")
        first = await llm.batch_status(batch_id)
        assert first.state is BatchState.IN_PROGRESS
        if provider != "gemini":  # google-genai reads no counts of a Gemini API job (its batchStats)
            assert first.counts["total"] == 3
        done = await llm.batch_status(batch_id)
        assert done.state is BatchState.ENDED
        results = await llm.batch_results(batch_id)
    assert set(results) == {"b1", "b2", "b3"}
    answer = results["b1"]
    assert isinstance(answer, LlmResponse) and answer.text == "echo: about b1" and answer.usage is not None
    assert isinstance(results["b2"], InvalidRequestError) and "no such option" in results["b2"].message
    assert isinstance(results["b3"], RateLimitedError) and results["b3"].retryable
    assert len(fake_server.batches.jobs) == 1 and fake_server.requests == []  # nothing went in real time


@pytest.mark.parametrize(("provider", "model"), BATCH_PROVIDERS)
async def test_an_expired_job_answers_only_what_it_finished(
    provider: str, model: str, fake_server: FakeProviderServer
) -> None:
    fake_server.batches.expire_after = 1
    fake_server.batches.polls_before_done = 0
    async with _client(provider, model, fake_server) as llm:
        batch_id = await llm.submit_batch(_lines(llm, ["e1", "e2", "e3"]), label="job-2")
        assert (await llm.batch_status(batch_id)).state is BatchState.EXPIRED
        results = await llm.batch_results(batch_id)
    assert list(results) == ["e1"]


@pytest.mark.parametrize(("provider", "model"), BATCH_PROVIDERS)
async def test_a_cancelled_job_answers_nothing_and_a_label_finds_its_job(
    provider: str, model: str, fake_server: FakeProviderServer
) -> None:
    fake_server.batches.hold = True
    async with _client(provider, model, fake_server) as llm:
        batch_id = await llm.submit_batch(_lines(llm, ["c1"]), label="job-3")
        if provider != "claude":  # Message Batches keep no label
            assert await llm.find_batch("job-3") == batch_id
            assert await llm.find_batch("job-4") is None
        await llm.cancel_batch(batch_id)
        assert (await llm.batch_status(batch_id)).state is BatchState.CANCELLED
        assert await llm.batch_results(batch_id) == {}


async def test_the_request_line_is_the_real_time_request(fake_server: FakeProviderServer) -> None:
    async with _client("gpt", "gpt-4.1-mini", fake_server) as llm:
        line = llm.batch_line("x", [Message(role="user", content="hi")], None)
        await llm.generate_content_async([Message(role="user", content="hi")])
    sent = fake_server.requests[0].json
    assert line.body == {k: v for k, v in sent.items() if k in line.body} and line.body["messages"] == sent["messages"]


async def test_offline_simulates_a_batch_job() -> None:
    llm = create_llm(
        LlmConfig(name="o", provider="offline", settings={"batch_latency_ms": 30, "fail_if_contains": "!"})
    )
    assert isinstance(llm, BatchLlm)
    batch_id = await llm.submit_batch(_lines(llm, ["o1", "o2!"]), label="offline-job")
    assert (await llm.batch_status(batch_id)).state is BatchState.IN_PROGRESS
    await anyio.sleep(0.03)  # the job's whole latency: it has ended by then
    assert (await llm.batch_status(batch_id)).state is BatchState.ENDED
    results = await llm.batch_results(batch_id)
    assert isinstance(results["o1"], LlmResponse) and results["o1"].text == "about o1"
    assert isinstance(results[custom_id_of("o2!")], InvalidRequestError)


def test_custom_ids_are_the_task_ids_when_every_provider_takes_them() -> None:
    assert custom_id_of("summarise_3") == "summarise_3"
    odd = custom_id_of("summarise[3].x")
    assert odd != custom_id_of("summarise[3]_x") and len(odd) <= 64 and odd.startswith("summarise_3__x-")


def test_which_providers_have_a_batch_api() -> None:
    from llm_abstractions.providers.gpt import GptLlm
    from llm_abstractions.providers.openai_compatible import OpenAICompatibleLlm

    assert supports_batch(GptLlm) and not supports_batch(OpenAICompatibleLlm)

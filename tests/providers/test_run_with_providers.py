"""Projects run on the real providers against the fake server: usage, cost, time to first token,
structured output with one repair, engine retries (one HTTP request per attempt), partial output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_registry import AgentRegistry
from llm_abstractions import Usage
from llm_abstractions.pricing import cost_usd
from orchestration import ProjectOrchestrator
from orchestration.models import ExecutionResult, ExecutionStatus, ProjectSpec
from tests.fakes.agents import API_OF, MODEL_OF, PROVIDERS, agent_settings
from tests.fakes.provider_server import FakeProviderServer, Fault, Reply

PRICING = {"gpt": "openai", "claude": "anthropic", "gemini": "google", "openai_compatible": "groq"}
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
}


def _agent(provider: str, server: FakeProviderServer, **extra: Any) -> dict[str, Any]:
    settings = agent_settings(provider, server, retry={"initial_backoff_s": 0, "max_backoff_s": 0}, **extra)
    if provider == "openai_compatible":
        settings["preset"] = "groq"
    return settings


async def _run(
    server: FakeProviderServer, provider: str, tasks: list[dict[str, Any]], retries: int = 0
) -> dict[str, ExecutionResult]:
    spec = ProjectSpec.model_validate(
        {
            "agents": {"main": _agent(provider, server)},
            "defaults": {"agent": "main", "retries": retries},
            "tasks": tasks,
        }
    )
    return await ProjectOrchestrator(spec, registry=AgentRegistry()).run()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_result_records_usage_cost_served_model_and_time_to_first_token(
    fake_server: FakeProviderServer, provider: str
) -> None:
    served = MODEL_OF[provider]
    fake_server.script(API_OF[provider], Reply(text="Paris", model=served, input_tokens=1000, output_tokens=500))
    results = await _run(fake_server, provider, [{"id": "q", "description": "Capital of France?"}])
    result = results["q"]
    assert result.status is ExecutionStatus.SUCCESS
    assert (result.output, result.model, result.provider, result.attempts) == ("Paris", served, provider, 1)
    assert result.usage == Usage(input_tokens=1000, output_tokens=500)
    assert result.cost_usd is not None
    assert result.cost_usd == pytest.approx(cost_usd(PRICING[provider], served, result.usage))
    assert result.time_to_first_token_s is not None
    assert 0 < result.time_to_first_token_s <= result.duration_s  # type: ignore[operator]
    assert fake_server.requests[0].stream, "the executor streams to measure time to first token"


async def test_an_unknown_model_records_no_cost(fake_server: FakeProviderServer) -> None:
    fake_server.script("openai", Reply(text="hi", model="my-finetune-xyz"))
    results = await _run(fake_server, "gpt", [{"id": "q", "description": "hi"}])
    assert results["q"].usage is not None
    assert results["q"].model == "my-finetune-xyz"
    assert results["q"].cost_usd is None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_structured_output_is_repaired_once(fake_server: FakeProviderServer, provider: str) -> None:
    api = API_OF[provider]
    fake_server.script(
        api,
        Reply(text='{"city": "Paris", "population": "big"}', input_tokens=10, output_tokens=5),
        Reply(text='{"city": "Paris", "population": 2100000}', input_tokens=30, output_tokens=6),
    )
    tasks: list[dict[str, Any]] = [
        {"id": "facts", "description": "Facts about Paris", "output_format": "json", "output_schema": SCHEMA},
        {"id": "use", "description": "Population: {{ tasks.facts.parsed.population }}", "depends_on": ["facts"]},
    ]
    results = await _run(fake_server, provider, tasks)
    facts = results["facts"]
    assert facts.status is ExecutionStatus.SUCCESS, facts.error
    assert facts.parsed == {"city": "Paris", "population": 2100000}
    assert json.loads(facts.output or "") == facts.parsed
    assert facts.attempts == 2
    assert facts.usage == Usage(input_tokens=40, output_tokens=11)
    assert results["use"].output == "echo: Population: 2100000"
    first, repair, _ = fake_server.requests
    repair_text = json.dumps(repair.json)
    assert "'big' is not of type 'integer'" in repair_text
    assert "population" in repair_text
    assert "Paris" in json.dumps(first.json)


@pytest.mark.parametrize("provider", ["gpt", "gemini"])
async def test_invalid_json_syntax_is_repaired_too(fake_server: FakeProviderServer, provider: str) -> None:
    fake_server.script(
        API_OF[provider], Reply(text='{"city": "Paris", '), Reply(text='{"city": "Paris", "population": 1}')
    )
    tasks = [{"id": "facts", "description": "Facts", "output_format": "json", "output_schema": SCHEMA}]
    result = (await _run(fake_server, provider, tasks))["facts"]
    assert result.status is ExecutionStatus.SUCCESS
    assert result.parsed == {"city": "Paris", "population": 1}
    assert "not valid JSON" in json.dumps(fake_server.requests[1].json)


async def test_structured_output_fails_after_one_repair(fake_server: FakeProviderServer) -> None:
    fake_server.script(
        "anthropic",
        Reply(text='{"city": 1}', input_tokens=10, output_tokens=2),
        Reply(text='{"city": 2}', input_tokens=20, output_tokens=2),
    )
    tasks = [{"id": "facts", "description": "Facts", "output_format": "json", "output_schema": SCHEMA}]
    result = (await _run(fake_server, "claude", tasks, retries=3))["facts"]
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.type == "invalid_output"
    assert json.loads(result.output or "") == {"city": 2}
    assert result.attempts == 2
    assert result.usage == Usage(input_tokens=30, output_tokens=4)
    assert result.cost_usd is not None
    assert len(fake_server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_engine_retries_make_exactly_one_request_per_attempt(
    fake_server: FakeProviderServer, provider: str
) -> None:
    fake_server.script(
        API_OF[provider],
        Fault.server_error(),
        Fault.rate_limited(retry_after="0.01"),
        Fault.reset(),
        Reply(truncate_after=1),
        Reply(text="finally"),
    )
    results = await _run(fake_server, provider, [{"id": "q", "description": "hi"}], retries=4)
    assert results["q"].status is ExecutionStatus.SUCCESS
    assert results["q"].output == "finally"
    assert results["q"].attempts == 5
    assert len(fake_server.requests) == 5


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_non_retryable_error_is_not_retried(fake_server: FakeProviderServer, provider: str) -> None:
    fake_server.script(API_OF[provider], Fault.unauthorized())
    result = (await _run(fake_server, provider, [{"id": "q", "description": "hi"}], retries=4))["q"]
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.type == "authentication"
    assert "test-" not in result.error.message
    assert len(fake_server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_broken_stream_keeps_its_partial_output(fake_server: FakeProviderServer, provider: str) -> None:
    fake_server.script(
        API_OF[provider], Reply(chunks=["The ", "answer ", "is"], truncate_after=2, truncate_mode="reset")
    )
    result = (await _run(fake_server, provider, [{"id": "q", "description": "hi"}]))["q"]
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.type == "connection"
    assert result.output == "The answer "


async def test_a_dag_across_three_providers(fake_server: FakeProviderServer) -> None:
    fake_server.script("openai", Reply(text="an outline"))
    fake_server.script("anthropic", Reply(text="a draft"))
    spec = ProjectSpec.model_validate(
        {
            "agents": {
                "planner": _agent("gpt", fake_server),
                "writer": _agent("claude", fake_server),
                "editor": _agent("gemini", fake_server),
            },
            "tasks": [
                {"id": "plan", "description": "Plan", "agent": "planner"},
                {
                    "id": "draft",
                    "description": "Write {{ tasks.plan.output }}",
                    "agent": "writer",
                    "depends_on": ["plan"],
                },
                {
                    "id": "edit",
                    "description": "Edit {{ tasks.draft.output }}",
                    "agent": "editor",
                    "depends_on": ["draft"],
                },
            ],
        }
    )
    results = await ProjectOrchestrator(spec, registry=AgentRegistry()).run()
    assert [r.status for r in results.values()] == [ExecutionStatus.SUCCESS] * 3
    assert [r.provider for r in results.values()] == ["gpt", "claude", "gemini"]
    assert results["edit"].output == "echo: Edit a draft"
    assert [r.api for r in fake_server.requests] == ["openai", "anthropic", "gemini"]
    assert "Write an outline" in json.dumps(fake_server.requests[1].json)
    assert all(r.cost_usd is not None for r in results.values())


NATIVE_LENGTH = {"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_an_empty_answer_cut_off_by_max_tokens_fails_as_output_truncated(
    fake_server: FakeProviderServer, provider: str
) -> None:
    api = API_OF[provider]
    fake_server.script(
        api, Reply(text="", finish_reason=NATIVE_LENGTH[api], input_tokens=8, output_tokens=32, reasoning_tokens=32)
    )
    result = (await _run(fake_server, provider, [{"id": "q", "description": "Think hard"}], retries=2))["q"]
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.type == "output_truncated"
    assert result.usage == Usage(input_tokens=8, output_tokens=32, reasoning_tokens=32)
    assert len(fake_server.requests) == 1, "a cut-off answer is not retried"


@pytest.mark.parametrize(
    ("provider", "reply"),
    [
        ("claude", Reply(text="", finish_reason="refusal", input_tokens=20, output_tokens=1)),
        ("gemini", Reply(block_reason="SAFETY", input_tokens=20)),
    ],
)
async def test_a_filtered_answer_records_the_providers_reason_and_the_billed_usage(
    fake_server: FakeProviderServer, provider: str, reply: Reply
) -> None:
    fake_server.script(API_OF[provider], reply)
    result = (await _run(fake_server, provider, [{"id": "q", "description": "hi"}]))["q"]
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert result.error.type == "content_filtered"
    assert ("refusal" if provider == "claude" else "prompt blocked: SAFETY") in result.error.message
    assert result.usage is not None
    assert result.usage.input_tokens == 20
    assert result.cost_usd is not None and result.cost_usd > 0


async def test_a_server_that_reports_no_usage_records_null_usage(fake_server: FakeProviderServer) -> None:
    fake_server.script("openai", Reply(text="hi", usage_style="none"))
    result = (await _run(fake_server, "openai_compatible", [{"id": "q", "description": "hi"}]))["q"]
    assert result.status is ExecutionStatus.SUCCESS
    record = result.model_dump(mode="json")
    assert "usage" in record
    assert record["usage"] is None
    assert record["cost_usd"] is None

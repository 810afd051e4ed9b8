"""Provider prompt caching through the real SDKs against the fake server, which simulates each provider's cache:
a 20-task fan-out over one long document reads the document from the cache, and costs less than without it.

Claude caches what is marked (``cache_control`` on the long system prompt and on the attachments); OpenAI and
Gemini cache every prompt's prefix by themselves, so the shared part (system prompt, then attachments) must come
first in the request, before the task's own text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_registry import AgentRegistry
from llm_abstractions import Message, create_llm
from orchestration import ProjectOrchestrator, ProjectSpec
from orchestration.models import ExecutionResult
from tests.fakes.agents import agent_settings, llm_config
from tests.fakes.provider_server import FakeProviderServer, PromptCache, Reply

TASKS = 20
DOCUMENT = " ".join(f"fact{i} is about topic{i % 17}." for i in range(1500))  # 3,000 words (the fake's tokens)
PROVIDERS = ("claude", "gpt", "gemini")


def fan_out(
    tmp_path: Path, server: FakeProviderServer, provider: str, system: str | None = None, **agent: Any
) -> ProjectSpec:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "report.md").write_text(DOCUMENT)
    task = {"system_prompt": system} if system else {}
    tasks = [
        {"id": f"q{i:02d}", "description": f"Question {i}: what is fact{i * 7} about?", "attachments": ["report.md"]}
        | task
        for i in range(TASKS)
    ]
    settings = agent_settings(provider, server, **agent)
    return ProjectSpec.model_validate(
        {"agents": {"reader": settings}, "defaults": {"agent": "reader", "cache": False}, "tasks": tasks}
    )


async def run_fan_out(tmp_path: Path, server: FakeProviderServer, provider: str, **agent: Any) -> list[ExecutionResult]:
    spec = fan_out(tmp_path, server, provider, **agent)
    orchestrator = ProjectOrchestrator(spec, registry=AgentRegistry(), file=tmp_path / "project.yaml")
    results = await orchestrator.run()
    assert all(r.succeeded for r in results.values()), [r.error for r in results.values()]
    return list(results.values())


def total_cost(results: list[ExecutionResult]) -> float:
    costs = [r.cost_usd for r in results]
    assert all(cost is not None for cost in costs)
    return sum(cost or 0.0 for cost in costs)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_fan_out_over_one_document_reads_it_from_the_cache_and_costs_less(
    fake_server: FakeProviderServer, tmp_path: Path, provider: str
) -> None:
    fake_server.handler = lambda request: Reply(text="A short answer.")
    fake_server.prompt_cache = PromptCache()
    cached = await run_fan_out(tmp_path / "cached", fake_server, provider)
    reads = [r.usage.cache_read_tokens or 0 for r in cached if r.usage is not None]
    assert len(reads) == TASKS
    assert sum(1 for tokens in reads if tokens >= 3000) == TASKS - 1, reads  # all but the first read the document

    if provider == "claude":
        fake_server.prompt_cache = PromptCache()  # cold; the agent opts out
        uncached = await run_fan_out(tmp_path / "uncached", fake_server, provider, prompt_cache=False)
    else:  # OpenAI and Gemini cache by themselves: compared with no cache at all
        fake_server.prompt_cache = None
        uncached = await run_fan_out(tmp_path / "uncached", fake_server, provider)
    assert all(not (r.usage and r.usage.cache_read_tokens) for r in uncached)
    assert total_cost(cached) < 0.5 * total_cost(uncached)


async def test_claude_marks_the_long_system_prompt_and_the_attachments_and_pays_the_cache_write(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    fake_server.handler = lambda request: Reply(text="A short answer.")
    fake_server.prompt_cache = PromptCache()
    system = "You answer questions about the report. " + DOCUMENT
    spec = fan_out(tmp_path, fake_server, "claude", system)
    results = await ProjectOrchestrator(spec, registry=AgentRegistry(), file=tmp_path / "p.yaml").run()
    body = fake_server.requests_for("anthropic")[0].body
    assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    content = body["messages"][0]["content"]
    assert content[0]["text"].startswith('<attachment name="report.md"')
    assert content[0]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in content[-1] and content[-1]["text"].startswith("Question")
    writes = sorted(r.usage.cache_write_tokens or 0 for r in results.values() if r.usage)
    assert writes[-1] > 6000 and writes[:-1] == [0] * (TASKS - 1)  # one write of system and document, then reads


async def test_claude_marks_nothing_when_the_prompt_is_short_or_caching_is_off(fake_server: FakeProviderServer) -> None:
    long_system = Message.system("Rules. " * 3000)
    for config, messages in (
        (llm_config("claude", fake_server), [Message.system("Be brief."), Message.user("Hi")]),
        (llm_config("claude", fake_server, prompt_cache=False), [long_system, Message.user("Hi")]),
    ):
        async with create_llm(config) as llm:
            await llm.generate_content_async(messages)
    short, off = (r.body for r in fake_server.requests_for("anthropic"))
    assert short["system"] == "Be brief." and off["system"] == long_system.content


async def test_turning_the_prompt_cache_off_does_not_change_the_answer_cache_key(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    for agent in ({}, {"prompt_cache": False}):
        settings = agent_settings("claude", fake_server, **agent)
        spec = ProjectSpec.model_validate(
            {"agents": {"a": settings}, "defaults": {"agent": "a"}, "tasks": [{"id": "t", "description": "Hi"}]}
        )
        await ProjectOrchestrator(spec, registry=AgentRegistry(), store=tmp_path / "runs.db").run()
    assert len(fake_server.requests) == 1, "the second run called the model again"


async def test_a_budget_reserves_the_input_at_the_cache_write_price(fake_server: FakeProviderServer) -> None:
    from llm_abstractions import GenerationOptions, Usage
    from llm_abstractions.pricing import cost_usd
    from orchestration.budget import BudgetedLlm, BudgetLedger

    async with create_llm(llm_config("claude", fake_server)) as llm:
        budgeted = BudgetedLlm(llm, BudgetLedger("r", None, {}), "a", "claude", "anthropic")
        usd, tokens = budgeted.worst_case([Message.user("word " * 1000)], GenerationOptions(max_tokens=10))
    written = Usage(input_tokens=tokens - 10, cache_write_tokens=tokens - 10, output_tokens=10)
    assert usd == cost_usd("anthropic", llm.model_name, written)
    assert usd > (cost_usd("anthropic", llm.model_name, Usage(input_tokens=tokens - 10, output_tokens=10)) or 0)

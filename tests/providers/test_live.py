"""Live calls to the real APIs (``pytest -m live``); each test runs only when its key is set."""

from __future__ import annotations

import os

import pytest

from agent_registry import AgentRegistry
from llm_abstractions import LlmConfig, Message, collect_stream, create_llm
from orchestration.agent_check import check_agents

pytestmark = pytest.mark.live

LIVE = [
    ("gpt", "gpt-4.1-mini", ("OPENAI_API_KEY",), {}),
    ("claude", "claude-haiku-4-5", ("ANTHROPIC_API_KEY",), {}),
    ("gemini", "gemini-2.5-flash", ("GOOGLE_API_KEY", "GEMINI_API_KEY"), {}),
    ("openai_compatible", "llama-3.3-70b-versatile", ("GROQ_API_KEY",), {"preset": "groq"}),
    ("openai_compatible", "grok-4", ("XAI_API_KEY",), {"preset": "xai"}),
]
SCHEMA = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}


def _config(provider: str, model: str, variables: tuple[str, ...], settings: dict[str, str]) -> LlmConfig:
    if not any(os.environ.get(v) for v in variables):
        pytest.skip(f"set {' or '.join(variables)} to run this live test")
    return LlmConfig(name="live", provider=provider, model=model, settings=settings)


@pytest.mark.parametrize(("provider", "model", "variables", "settings"), LIVE)
async def test_live_answer_usage_and_stream(
    provider: str, model: str, variables: tuple[str, ...], settings: dict[str, str]
) -> None:
    async with create_llm(_config(provider, model, variables, settings)) as llm:
        messages = [Message.system("Answer in one word."), Message.user("What is the capital of France?")]
        response = await llm.generate_content_async(messages, max_tokens=256)
        streamed = await collect_stream(llm.stream_content_async(messages, max_tokens=256), provider=provider)
        structured = await llm.generate_content_async(
            [Message.user("Give the capital of France as JSON.")], json_schema=SCHEMA, max_tokens=256
        )
    assert "paris" in response.text.lower()
    assert "paris" in streamed.text.lower()
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert streamed.time_to_first_token_s is not None
    assert "paris" in structured.text.lower()


async def test_live_agents_check() -> None:
    registry = AgentRegistry()
    registry.load_environment()
    if not registry.names():
        pytest.skip("no provider key set")
    results = await check_agents(registry, timeout_s=60)
    assert all(r.ok for r in results), [(r.agent, r.verdict, r.detail) for r in results]

"""``examples/mixed_providers.yaml`` validates with the documented keys and runs on three providers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_registry import AgentRegistry
from orchestration import ProjectOrchestrator
from orchestration.issues import ProjectValidationError
from orchestration.models import ExecutionStatus
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply, Response

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mixed_providers.yaml"
SUMMARY = {"title": "Heat pumps in the cold", "key_points": ["they still work"], "reading_level": "beginner"}


def _answer(request: RecordedRequest) -> Response:
    """The structured summary for the request that asks for JSON (GPT's ``response_format``), else an echo."""
    return Reply(text=json.dumps(SUMMARY)) if "response_format" in request.json else Reply()


def test_it_names_every_missing_key(monkeypatch: pytest.MonkeyPatch, provider_env: FakeProviderServer) -> None:
    for name in ("GOOGLE_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(ProjectValidationError) as caught:
        ProjectOrchestrator.from_file(EXAMPLE, registry=AgentRegistry()).validate()
    message = str(caught.value)
    for agent, variable in [
        ("researcher", "GOOGLE_API_KEY or GEMINI_API_KEY"),
        ("writer", "ANTHROPIC_API_KEY"),
        ("writer_backup", "GROQ_API_KEY"),
        ("extractor", "OPENAI_API_KEY"),
    ]:
        assert f"agent '{agent}': no API key: set {variable}" in message


async def test_it_runs_on_three_providers(monkeypatch: pytest.MonkeyPatch, provider_env: FakeProviderServer) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "test-groq-key")
    provider_env.handler = _answer
    orchestrator = ProjectOrchestrator.from_file(EXAMPLE, registry=AgentRegistry())
    results = await orchestrator.run()
    assert {r.task_id: r.status for r in results.values()} == dict.fromkeys(
        ["research", "draft", "summary", "headline"], ExecutionStatus.SUCCESS
    )
    assert [r.api for r in provider_env.requests] == ["gemini", "anthropic", "openai", "gemini"]
    assert results["summary"].parsed == SUMMARY
    assert "beginner article titled 'Heat pumps in the cold'" in (results["headline"].output or "")
    assert all(r.cost_usd is not None and r.cost_usd > 0 for r in results.values())

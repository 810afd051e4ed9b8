"""``orchestrate agents check``: one short real call per agent, a verdict each."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agent_registry import AgentRegistry
from orchestration.agent_check import CHECK_PROMPT, check_agents
from orchestration.cli.app import app
from tests.fakes.agents import agent_settings
from tests.fakes.fixtures import PROVIDER_ENV_VARS
from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply, Response


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROVIDER_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def _agents(server: FakeProviderServer) -> dict[str, dict[str, object]]:
    return {
        "good": agent_settings("gpt", server, model="gpt-4.1-mini"),
        "revoked": agent_settings("claude", server, model="claude-sonnet-4-6"),
        "typo": agent_settings("gemini", server, model="gemini-9-imaginary"),
        "keyless": {"type": "gpt", "model": "gpt-4.1-mini", "base_url": server.openai_base_url},
        "slow": agent_settings("openai_compatible", server, model="slow-model"),
    }


def _by_model(request: RecordedRequest) -> Response:
    answers: dict[str, Response] = {
        "gpt-4.1-mini": Reply(text="ok", model="gpt-4.1-mini-2025-04-14"),
        "claude-sonnet-4-6": Fault.unauthorized(),
        "gemini-9-imaginary": Fault(status=404, message="models/gemini-9-imaginary is not found"),
        "slow-model": Reply(delay_s=60),
    }
    return answers[request.model or ""]


async def test_each_agent_gets_a_verdict(fake_server: FakeProviderServer) -> None:
    fake_server.handler = _by_model
    registry = AgentRegistry()
    registry.load_mapping(_agents(fake_server))
    results = await check_agents(registry, timeout_s=5.0)  # room for the SDKs' first import on a loaded machine
    verdicts = {r.agent: (r.verdict, r.ok) for r in results}
    assert verdicts == {
        "good": ("ok", True),
        "revoked": ("authentication", False),
        "typo": ("invalid_request", False),
        "keyless": ("config", False),
        "slow": ("timeout", False),
    }
    by_name = {r.agent: r for r in results}
    assert by_name["good"].served_model == "gpt-4.1-mini-2025-04-14"
    assert "OPENAI_API_KEY" in by_name["keyless"].detail
    assert "not found" in by_name["typo"].detail
    assert [r.agent for r in results] == list(_agents(fake_server))
    assert sorted(r.model or "" for r in fake_server.requests) == [
        "claude-sonnet-4-6",
        "gemini-9-imaginary",
        "gpt-4.1-mini",
        "slow-model",
    ]
    good = next(r for r in fake_server.requests if r.model == "gpt-4.1-mini")
    assert good.json["messages"] == [{"role": "user", "content": CHECK_PROMPT}]
    assert good.json["max_completion_tokens"] == 16


def test_cli_prints_verdicts_and_fails_when_one_fails(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    fake_server.handler = _by_model
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(yaml.safe_dump({"agents": _agents(fake_server)}))
    runner = CliRunner()

    ok = runner.invoke(app, ["agents", "check", "--agents", str(agents_file), "--agent", "good"])
    assert ok.exit_code == 0, ok.output
    assert "answered as gpt-4.1-mini-2025-04-14" in ok.output

    failed = runner.invoke(
        app, ["agents", "check", "--agents", str(agents_file), "-a", "good", "-a", "revoked", "-a", "keyless"]
    )
    assert failed.exit_code == 1
    assert "authentication" in failed.output
    assert "config" in failed.output
    assert "test-claude-key" not in failed.output

    unknown = runner.invoke(app, ["agents", "check", "--agents", str(agents_file), "-a", "nobody"])
    assert unknown.exit_code == 2

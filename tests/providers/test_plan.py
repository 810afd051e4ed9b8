"""``orchestrate plan``: no request reaches the provider; tokens as the run then sends them; history; cache; kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bpe_openai  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

from orchestration.cli.app import app
from orchestration.store import RunStore
from tests.fakes.agents import agent_yaml
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply

O200K = bpe_openai.get_encoding("o200k_base")


def server_count(request: RecordedRequest) -> Reply:
    """Answer with usage counted with o200k over the messages as the SDK sent them (3 per message, 3 to prime)."""
    messages = request.body["messages"]
    tokens = 3 + sum(3 + len(O200K.encode(m["role"])) + len(O200K.encode(m["content"])) for m in messages)
    return Reply(text="an answer of six words here", input_tokens=tokens, output_tokens=40)


def project_file(tmp_path: Path, server: FakeProviderServer) -> Path:
    agent = agent_yaml("gpt", server)  # gpt-4.1-mini: priced, and counted with o200k
    path = tmp_path / "plan.yaml"
    path.write_text(
        "name: planned\n"
        f"agents:\n  writer: {{{agent}}}\n"
        "defaults: {agent: writer}\n"
        "tasks:\n"
        "  - {id: facts, description: 'Facts about otters, their habitat and their diet', "
        "system_prompt: 'You are a careful zoologist.', options: {max_tokens: 300}}\n"
        "  - {id: summary, description: 'Summarise: {{ tasks.facts.output }}', depends_on: [facts], "
        "options: {max_tokens: 100}}\n"
    )
    return path


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def plan_json(path: Path, store: Path, *extra: str) -> dict[str, Any]:
    output = invoke("plan", str(path), "--store", str(store), "--json", *extra)
    parsed: dict[str, Any] = json.loads(output)
    return parsed


def test_a_plan_calls_nothing_and_counts_what_the_run_then_sends(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    path, store = project_file(tmp_path, fake_server), tmp_path / "runs.db"
    planned = plan_json(path, store)
    assert fake_server.requests == []
    facts, summary = planned["tasks"]["facts"], planned["tasks"]["summary"]
    assert facts["action"] == "call" and not facts["estimated"]
    assert facts["output_tokens"] == [300, 300]  # no history: max_tokens
    low, high = facts["cost_usd"]
    assert 0 < low == high
    assert summary["estimated"] and summary["output_tokens"] == [100, 100]  # its upstream answer is not known yet
    assert planned["total"]["calls"] == 2 and planned["total"]["output_tokens"] == [400, 400]

    fake_server.handler = server_count
    invoke("run", str(path), "--store", str(store), "-q")
    sent = {r.body["messages"][-1]["content"].split(":")[0]: r for r in fake_server.requests}
    counted = server_count(sent["Facts about otters, their habitat and their diet"]).input_tokens
    assert counted is not None and abs(facts["input_tokens"] - counted) <= 0.02 * counted


def test_after_a_run_the_plan_uses_history_and_the_cache(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    path, store = project_file(tmp_path, fake_server), tmp_path / "runs.db"
    fake_server.handler = server_count
    invoke("run", str(path), "--store", str(store), "-q", "--no-cache")
    requests = len(fake_server.requests)
    fresh = plan_json(path, store, "--no-cache")
    assert fresh["tasks"]["facts"]["output_tokens"] == [40, 40]  # what it answered last time
    assert fresh["tasks"]["summary"]["output_tokens"] == [40, 40]
    invoke("run", str(path), "--store", str(store), "-q")  # keeps the answers
    cached = plan_json(path, store)
    assert [t["action"] for t in cached["tasks"].values()] == ["cache", "cache"]
    assert cached["total"]["calls"] == 0 and cached["total"]["cost_usd"] == [0.0, 0.0]
    assert len(fake_server.requests) == requests + 2  # planning called nothing
    table = invoke("plan", str(path), "--store", str(store))
    assert "total: 0 calls" in table and "no model was called" in table


def test_a_planned_resume_keeps_the_successes(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    path, store = project_file(tmp_path, fake_server), tmp_path / "runs.db"
    fake_server.script("openai", Reply(text="facts"), Reply(text="", finish_reason="length"))  # summary fails
    result = CliRunner().invoke(app, ["run", str(path), "--store", str(store), "-q", "--no-cache"])
    assert result.exit_code == 1
    planned = plan_json(path, store, "--resume", "--no-cache")
    assert planned["tasks"]["facts"]["action"] == "kept" and planned["tasks"]["summary"]["action"] == "call"
    assert not planned["tasks"]["summary"]["estimated"]  # the kept answer renders the request exactly


def provider_project(tmp_path: Path, server: FakeProviderServer, provider: str) -> Path:
    agent = agent_yaml(provider, server)
    path = tmp_path / f"{provider}.yaml"
    path.write_text(
        f"name: counted\nagents:\n  writer: {{{agent}, options: {{max_tokens: 200}}}}\ndefaults: {{agent: writer}}\n"
        "tasks:\n"
        "  - {id: facts, description: 'Facts about otters and their diet', system_prompt: 'You are a zoologist.'}\n"
        "  - {id: poem, description: 'A poem on: {{ tasks.facts.output }}', depends_on: [facts]}\n"
    )
    return path


@pytest.mark.parametrize("provider", ["claude", "gemini"])
def test_count_tokens_asks_the_providers_counting_endpoint_and_says_so(
    fake_server: FakeProviderServer, tmp_path: Path, provider: str
) -> None:
    path, store = provider_project(tmp_path, fake_server, provider), tmp_path / "runs.db"
    offline = plan_json(path, store)
    assert fake_server.requests == [] and offline["providers_contacted"] is False
    assert offline["tasks"]["facts"]["input_counted_by"] == "estimate" and offline["tasks"]["facts"]["estimated"]

    counted = plan_json(path, store, "--count-tokens")
    assert counted["providers_contacted"] is True
    assert len(fake_server.requests) == 2 and all(r.counts_tokens for r in fake_server.requests)
    facts = counted["tasks"]["facts"]
    assert facts["input_counted_by"] == "provider" and not facts["estimated"]
    assert counted["tasks"]["poem"]["estimated"]  # counted exactly, but over a stand-in of the upstream answer
    table = invoke("plan", str(path), "--store", str(store), "--count-tokens")
    assert "input tokens of 2 tasks counted by the providers' token-counting endpoints" in table

    fake_server.clear()
    invoke("run", str(path), "--store", str(store), "-q")
    results = RunStore(store).load_results(RunStore(store).list_runs()[0].run_id)
    usage = results["facts"].usage
    assert usage is not None and usage.input_tokens == facts["input_tokens"]  # what the run was then billed


def test_count_tokens_counts_openai_offline(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    planned = plan_json(provider_project(tmp_path, fake_server, "gpt"), tmp_path / "runs.db", "--count-tokens")
    assert fake_server.requests == [] and planned["providers_contacted"] is False
    assert planned["tasks"]["facts"]["input_counted_by"] == "tokenizer" and not planned["tasks"]["facts"]["estimated"]

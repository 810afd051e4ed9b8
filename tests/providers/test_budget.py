"""Budgets through the real OpenAI SDK against the fake server: the actual spend never goes above the cap, however
many calls are in flight; what could not run ends ``budget_exhausted``; a resume with a larger budget finishes
without paying twice; the spend survives the process."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import bpe_openai  # type: ignore[import-untyped]
from typer.testing import CliRunner

from llm_abstractions import Usage
from llm_abstractions.pricing import cost_usd
from orchestration import ProjectOrchestrator, ProjectSpec, RunEvent
from orchestration.cli.app import app
from orchestration.store import LEASE_ENV, RunStore
from tests.fakes.agents import MODEL_OF, agent_settings
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply
from tests.reliability.processes import REPO, wait_until_the_lease_expired

O200K = bpe_openai.get_encoding("o200k_base")
OUTPUT_TOKENS = 40


def counted(request: RecordedRequest) -> Reply:
    """Usage as OpenAI would count it: o200k over the messages (3 per message, 3 to prime), 40 tokens out."""
    messages = request.body["messages"]
    tokens = 3 + sum(3 + len(O200K.encode(m["role"])) + len(O200K.encode(m["content"])) for m in messages)
    return Reply(text="word " * OUTPUT_TOKENS, input_tokens=tokens, output_tokens=OUTPUT_TOKENS, delay_s=0.01)


def server_cost(server: FakeProviderServer) -> float:
    total = 0.0
    for request in server.requests:
        reply = counted(request)
        usage = Usage(input_tokens=reply.input_tokens or 0, output_tokens=OUTPUT_TOKENS)
        total += cost_usd("openai", MODEL_OF["gpt"], usage) or 0.0
    return total


def project_file(tmp_path: Path, server: FakeProviderServer, tasks: int = 40, budget: str = "") -> Path:
    writer = agent_settings("gpt", server, options={"max_tokens": 50})
    agent = ", ".join(f"{k}: {json.dumps(v)}" for k, v in writer.items())
    lines = [f"  - {{id: t{i:02d}, description: 'Write a line about topic number {i}'}}" for i in range(tasks)]
    path = tmp_path / "budget.yaml"
    path.write_text(
        f"name: budgeted\nagents:\n  writer: {{{agent}}}\ndefaults: {{agent: writer, cache: false{budget}}}\n"
        "tasks:\n" + "\n".join(lines) + "\n"
    )
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_a_cap_of_half_the_cost_is_never_exceeded_and_a_resume_finishes_without_paying_twice(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    fake_server.handler = counted
    path, store = project_file(tmp_path, fake_server), str(tmp_path / "runs.db")
    code, _ = invoke("run", str(path), "--store", str(tmp_path / "full.db"), "-q")
    assert code == 0
    full = server_cost(fake_server)
    fake_server.clear()
    fake_server.handler = counted

    cap = full / 2
    code, output = invoke("run", str(path), "--store", store, "--max-concurrency", "32", "--budget-usd", f"{cap!r}")
    assert code == 1, output
    assert server_cost(fake_server) <= cap, "the provider was paid more than the budget"
    run = RunStore(store).list_runs()[0]
    assert run.status == "budget_exhausted"
    results = RunStore(store).load_results(run.run_id)
    done = [r for r in results.values() if r.succeeded]
    refused = [r for r in results.values() if not r.succeeded]
    assert done and refused and all(r.error is not None and r.error.type == "budget_exhausted" for r in refused)
    assert sum(r.cost_usd or 0.0 for r in done) <= cap
    assert all(r.attempts == 0 for r in refused)  # nothing was sent for them
    assert "budget (run) exhausted" in output

    paid = {request.body["messages"][-1]["content"] for request in fake_server.requests}
    code, _ = invoke("resume", run.run_id, "--store", store, "-q", "--budget-usd", f"{full * 2!r}")
    assert code == 0
    prompts = [request.body["messages"][-1]["content"] for request in fake_server.requests]
    assert len(prompts) == len(set(prompts)) == 40, "a task was paid twice"
    assert set(prompts) > paid
    assert RunStore(store).list_runs()[0].status == "success"
    spent_usd, _ = RunStore(store).spent(run.run_id)[""]
    assert abs(spent_usd - server_cost(fake_server)) < 1e-9


def test_a_token_cap_per_agent_and_the_warning(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    fake_server.handler = counted
    spec = ProjectSpec.model_validate(
        {
            "agents": {"writer": {**agent_settings("gpt", fake_server), "budget": {"max_tokens": 300}}},
            "defaults": {"agent": "writer", "cache": False, "budget": {"max_cost_usd": 10, "warn_at": 0.5}},
            "tasks": [{"id": f"t{i}", "description": f"topic {i}", "options": {"max_tokens": 50}} for i in range(10)],
        }
    )
    events: list[RunEvent] = []
    orch = ProjectOrchestrator(spec, store=tmp_path / "runs.db", max_concurrency=1)
    orch.on_event(events.append)
    results = anyio.run(orch.run)
    used = sum((r.usage.input_tokens + r.usage.output_tokens) for r in results.values() if r.usage is not None)
    assert used <= 300
    assert sum(r.succeeded for r in results.values()) >= 3
    warnings = [e for e in events if e.kind == "budget_warning"]
    assert [w.budget.account for w in warnings if w.budget is not None] == ["writer"]
    exhausted = [e for e in events if e.kind == "budget_exhausted"]
    assert len(exhausted) == 1 and exhausted[0].budget is not None and exhausted[0].budget.account == "writer"
    assert orch.run_id is not None  # the store keeps them for followers (orchestrate serve)
    stored = [e for e in RunStore(tmp_path / "runs.db").events(orch.run_id) if e.kind.startswith("budget")]
    assert [(e.kind, e.data["budget"]["account"]) for e in stored] == [
        ("budget_warning", "writer"),
        ("budget_exhausted", "writer"),
    ]


def test_a_budget_caps_the_instances_of_a_map(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    """Each instance of a ``for_each`` spends from the agent's budget: those beyond it end ``budget_exhausted``,
    the mapped task fails with them, and the tokens spent stay under the cap."""
    fake_server.handler = counted
    spec = ProjectSpec.model_validate(
        {
            "agents": {"writer": {**agent_settings("gpt", fake_server), "budget": {"max_tokens": 300}}},
            "defaults": {"agent": "writer", "cache": False},
            "tasks": [
                {
                    "id": "each",
                    "for_each": list(range(10)),
                    "description": "topic {{ item }}",
                    "options": {"max_tokens": 50},
                }
            ],
        }
    )
    orch = ProjectOrchestrator(spec, store=tmp_path / "runs.db", max_concurrency=1)
    results = anyio.run(orch.run)
    instances = [results[f"each[{i}]"] for i in range(10)]
    used = sum(r.usage.input_tokens + r.usage.output_tokens for r in instances if r.usage is not None)
    assert used <= 300 and len(fake_server.requests) == sum(r.succeeded for r in instances) >= 3
    refused = [r for r in instances if not r.succeeded]
    assert refused and all(r.error is not None and r.error.type == "budget_exhausted" for r in refused)
    assert results["each"].error is not None and results["each"].error.type == "items_failed"


def test_a_budgeted_call_without_max_tokens_is_refused_before_the_run(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    writer = agent_settings("gpt", fake_server)
    agent = ", ".join(f"{k}: {json.dumps(v)}" for k, v in writer.items())
    path = tmp_path / "p.yaml"
    path.write_text(
        f"agents:\n  writer: {{{agent}}}\ndefaults: {{agent: writer}}\ntasks:\n  - {{id: t, description: x}}\n"
    )
    code, output = invoke("run", str(path), "--store", str(tmp_path / "runs.db"), "--budget-usd", "1")
    assert code == 2
    assert "task 't', field 'options.max_tokens': a budgeted call needs an upper bound of its output" in output
    assert fake_server.requests == [] and RunStore(tmp_path / "runs.db").list_runs() == []


def test_cache_hits_spend_nothing(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    fake_server.handler = counted
    tasks: list[dict[str, Any]] = [{"id": "t", "description": "x", "options": {"max_tokens": 50}}]
    spec = ProjectSpec.model_validate(
        {"agents": {"writer": agent_settings("gpt", fake_server)}, "defaults": {"agent": "writer"}, "tasks": tasks}
    )
    anyio.run(ProjectOrchestrator(spec, store=tmp_path / "runs.db").run)
    data = spec.model_dump()
    data["defaults"]["budget"] = {"max_cost_usd": 0.0}
    tight = ProjectSpec.model_validate(data)
    orch = ProjectOrchestrator(tight, store=tmp_path / "runs.db")
    results = anyio.run(orch.run)
    assert results["t"].succeeded and results["t"].cache is not None and results["t"].cache.hit
    assert len(fake_server.requests) == 1


def test_a_resumed_run_counts_what_its_dead_session_reserved(tmp_path: Path) -> None:
    from orchestration.budget import BudgetLedger
    from orchestration.models import ProjectBudget

    store = RunStore(tmp_path / "runs.db")

    async def earlier_session() -> None:
        ledger = BudgetLedger("r", ProjectBudget(max_cost_usd=1.0), {}, store=store)
        settled = await ledger.reserve("writer", 0.25, 100)
        ledger.settle(settled, 0.125, 60)
        await ledger.reserve("writer", 0.5, 200)  # in flight when the process died: never settled
        await store.writer.flush()

    anyio.run(earlier_session)
    assert store.spent("r")[""] == (0.625, 260)
    assert store.spent("r")["writer"] == (0.625, 260)


def test_a_kill_9_in_the_middle_of_a_budgeted_run_loses_none_of_its_spend(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    fake_server.handler = counted
    path = project_file(tmp_path, fake_server)
    code, _ = invoke("run", str(path), "--store", str(tmp_path / "full.db"), "-q")
    assert code == 0
    cap = server_cost(fake_server) * 0.6
    fake_server.clear()
    fake_server.handler = lambda request: dataclasses.replace(counted(request), delay_s=0.3)
    store = RunStore(tmp_path / "runs.db")
    command = ["run", str(path), "--run-id", "capped", "--store", str(store.path), "--budget-usd", f"{cap!r}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration", *command, "--max-concurrency", "4", "-q"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, LEASE_ENV: "0.5", "PYTHONPATH": str(REPO)},
    )
    try:
        fake_server.wait_for_requests(10, timeout=60)
    finally:
        process.kill()  # SIGKILL: calls in flight, their reservations unsettled
        process.wait(timeout=30)
    sent = len(fake_server.requests)
    spent_usd, _ = store.spent("capped")[""]
    assert spent_usd >= server_cost(fake_server) - 1e-12, "the store lost spend of the killed process"

    wait_until_the_lease_expired(store, "capped")
    fake_server.handler = counted
    code, output = invoke("resume", "capped", "--store", str(store.path), "-q", "--budget-usd", f"{cap!r}")
    assert code == 1, output  # the cap still binds: the killed process's spend was counted
    assert len(fake_server.requests) > sent
    assert server_cost(fake_server) <= cap, "the provider was paid more than the budget across the crash"

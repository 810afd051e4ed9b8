"""Batch agents on the real SDKs against the fake server's batch endpoints: answers and per-request errors matched
to their tasks, retries and expired jobs falling back to real time, batch prices in results and in ``plan``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from agent_registry import AgentRegistry
from llm_abstractions import Usage
from llm_abstractions.batch import custom_id_of
from llm_abstractions.factory import get_llm_class
from llm_abstractions.pricing import cost_usd
from orchestration import ProjectOrchestrator
from orchestration.cli.app import app
from orchestration.models import ExecutionResult, ExecutionStatus, ProjectSpec
from tests.fakes.agents import MODEL_OF, agent_settings, agent_yaml
from tests.fakes.provider_server import FakeProviderServer, Fault
from tests.reliability.fault_plan import last_user_text

pytestmark = pytest.mark.anyio

BATCH_PROVIDERS = ("gpt", "claude", "gemini")
PRICING = {"gpt": "openai", "claude": "anthropic", "gemini": "google"}


def _spec(server: FakeProviderServer, provider: str, count: int, **batch: Any) -> ProjectSpec:
    agent = agent_settings(provider, server, batch=True, retry={"initial_backoff_s": 0, "max_backoff_s": 0})
    return ProjectSpec.model_validate(
        {
            "agents": {"bulk": agent},
            "defaults": {"agent": "bulk", "retries": 1, "batch": {"window_s": 0.1, "poll_s": 0.01, **batch}},
            "tasks": [{"id": f"t{i}", "description": f"item {i}"} for i in range(count)],
        }
    )


async def _run(spec: ProjectSpec) -> dict[str, ExecutionResult]:
    return await ProjectOrchestrator(spec, registry=AgentRegistry()).run()


@pytest.mark.parametrize("provider", BATCH_PROVIDERS)
async def test_answers_and_per_request_errors_reach_their_tasks_at_batch_prices(
    fake_server: FakeProviderServer, provider: str
) -> None:
    fake_server.batches.faults["t1"] = Fault.bad_request("bad item")
    fake_server.batches.faults["t2"] = Fault.rate_limited()
    results = await _run(_spec(fake_server, provider, 4, window_s=60, max_size=4))
    assert len(fake_server.batches.jobs) == 1 and sorted(fake_server.batches.lines()) == ["t0", "t1", "t2", "t3"]
    for task_id in ("t0", "t3"):
        result = results[task_id]
        assert result.output == f"echo: item {task_id[1:]}" and result.batch is not None
        assert result.batch.submitted_at is not None and result.batch.finished_at is not None
        standard = cost_usd(PRICING[provider], MODEL_OF[provider], result.usage)
        assert standard is not None and result.cost_usd == pytest.approx(standard / 2)
    refused = results["t1"]
    assert refused.status is ExecutionStatus.FAILED and refused.error is not None
    assert refused.error.type == "invalid_request" and "bad item" in refused.error.message
    retried = results["t2"]  # rate limited inside the job: retried in real time (fallback: realtime)
    assert retried.succeeded and retried.batch is None and retried.attempts == 2
    assert [last_user_text(r) for r in fake_server.requests] == ["item 2"]


@pytest.mark.parametrize("provider", BATCH_PROVIDERS)
async def test_an_expired_job_sends_its_unfinished_requests_in_real_time(
    fake_server: FakeProviderServer, provider: str
) -> None:
    fake_server.batches.expire_after = 1
    results = await _run(_spec(fake_server, provider, 3))
    assert all(r.succeeded for r in results.values())
    assert results["t0"].batch is not None and results["t1"].batch is None and results["t2"].batch is None
    assert sorted(last_user_text(r) for r in fake_server.requests) == ["item 1", "item 2"]


@pytest.mark.parametrize("provider", BATCH_PROVIDERS)
async def test_a_small_group_goes_in_real_time(fake_server: FakeProviderServer, provider: str) -> None:
    results = await _run(_spec(fake_server, provider, 2, min_size=3))
    assert all(r.succeeded and r.batch is None for r in results.values())
    assert fake_server.batches.jobs == {} and len(fake_server.requests) == 2


@pytest.mark.parametrize("provider", BATCH_PROVIDERS)
async def test_with_fallback_wait_an_expired_request_goes_in_the_next_job(
    fake_server: FakeProviderServer, provider: str
) -> None:
    fake_server.batches.expire_after = 1
    spec = _spec(fake_server, provider, 2, fallback="wait")
    results = await _run(spec)
    assert results["t0"].succeeded and results["t0"].batch is not None
    # t1 expired in the first job (it answers only its first request), then was retried in a second job alone
    assert len(fake_server.batches.jobs) == 2 and fake_server.requests == []
    assert results["t1"].succeeded and results["t1"].batch is not None


def test_plan_prices_batch_tasks_at_batch_prices_and_says_how_long_they_may_take(
    fake_server: FakeProviderServer, tmp_path: Any
) -> None:
    agent = agent_yaml("gpt", fake_server)
    path = tmp_path / "p.yaml"
    path.write_text(
        f"agents:\n  bulk: {{{agent}, batch: true}}\n  now: {{{agent}}}\n"
        "defaults: {batch: {window_s: 60}}\n"
        "tasks:\n"
        "  - {id: slow, agent: bulk, description: 'Facts about otters', options: {max_tokens: 300}}\n"
        "  - {id: fast, agent: now, description: 'Facts about otters', options: {max_tokens: 300}}\n"
    )
    result = CliRunner().invoke(app, ["plan", str(path), "--store", str(tmp_path / "runs.db"), "--json"])
    assert result.exit_code == 0, result.output
    tasks = json.loads(result.output)["tasks"]
    assert tasks["slow"]["batch"] == {"wait_s": [60.0, 86400.0]}  # max_wait_s and tasks["fast"]["batch"] is None
    assert tasks["slow"]["cost_usd"][0] == pytest.approx(tasks["fast"]["cost_usd"][0] / 2)
    text = CliRunner().invoke(app, ["plan", str(path), "--store", str(tmp_path / "runs.db")]).output
    assert "call (batch)" in text and "batch: 1 calls at batch prices" in text
    assert fake_server.requests == [] and fake_server.batches.jobs == {}


async def test_budgets_reserve_batch_requests_at_batch_prices(fake_server: FakeProviderServer) -> None:
    """Three worst cases at batch prices fit a cap of 1.8 standard ones: the three requests are reserved at once and
    go in one job (at standard prices each would wait for the one before to settle: three jobs)."""
    spec = _spec(fake_server, "gpt", 3, window_s=60, max_size=3)
    worst = cost_usd("openai", MODEL_OF["gpt"], Usage(input_tokens=0, output_tokens=10_000))
    assert worst is not None
    data = spec.model_dump(exclude_unset=True, by_alias=True)
    data["defaults"]["budget"] = {"max_cost_usd": worst * 1.8}
    for task in data["tasks"]:
        task["options"] = {"max_tokens": 10_000}
    results = await _run(ProjectSpec.model_validate(data))
    assert all(r.succeeded and r.batch is not None for r in results.values())
    assert len(fake_server.batches.jobs) == 1 and len(fake_server.batches.lines()) == 3


async def test_the_answer_cache_answers_batch_tasks_without_a_job(
    fake_server: FakeProviderServer, tmp_path: Any
) -> None:
    from orchestration.store import RunStore

    spec = _spec(fake_server, "gpt", 3, window_s=60, max_size=3)
    first = await ProjectOrchestrator(spec, registry=AgentRegistry(), store=RunStore(tmp_path / "r.db")).run()
    again = await ProjectOrchestrator(spec, registry=AgentRegistry(), store=RunStore(tmp_path / "r.db")).run()
    assert len(fake_server.batches.jobs) == 1 and fake_server.requests == []
    assert all(r.cache is not None and r.cache.hit for r in again.values())
    assert [r.output for r in again.values()] == [r.output for r in first.values()]


async def test_a_300_item_mapped_task_goes_in_one_job_with_one_request_per_instance(
    fake_server: FakeProviderServer,
) -> None:
    """``for_each`` over 300 documents on a batch agent, through the OpenAI SDK: one job holding exactly one request
    per instance (its id as the custom id), each instance's own answer, the downstream task reading them all."""
    agent = agent_settings("gpt", fake_server, batch=True)
    spec = ProjectSpec.model_validate(
        {
            "inputs": {"docs": [f"doc {i}" for i in range(300)]},
            "agents": {"bulk": agent, "now": agent_settings("gpt", fake_server)},
            "defaults": {"batch": {"window_s": 60, "max_size": 300, "poll_s": 0.01}},  # one job, however slow
            "tasks": [
                {"id": "classify", "agent": "bulk", "for_each": "{{ inputs.docs }}", "description": "{{ item }}"},
                {
                    "id": "final",
                    "agent": "now",
                    "depends_on": ["classify"],
                    "description": "{{ tasks.classify.outputs | join('|') }}",
                },
            ],
        }
    )
    results = await _run(spec)
    instances = [f"classify[{i}]" for i in range(300)]
    assert len(fake_server.batches.jobs) == 1
    assert sorted(fake_server.batches.lines()) == sorted(custom_id_of(i) for i in instances)  # once each
    (job,) = fake_server.batches.jobs
    for i, instance in enumerate(instances):
        result = results[instance]
        assert result.succeeded and result.output == f"echo: doc {i}"
        assert result.batch is not None and result.batch.id == job
    assert results["classify"].succeeded and results["final"].batch is None
    assert [last_user_text(r) for r in fake_server.requests] == ["|".join(f"echo: doc {i}" for i in range(300))]


@pytest.mark.parametrize(("provider", "limit"), [("gpt", "bytes"), ("claude", "requests"), ("gemini", "bytes")])
async def test_jobs_are_split_to_fit_the_providers_limits(
    fake_server: FakeProviderServer, provider: str, limit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider refuses a job over its limits (the fake server with the same, small ones): a group larger than
    them goes in several jobs, each within them, every request once."""
    llm_class = get_llm_class(provider)
    if limit == "bytes":
        monkeypatch.setattr(llm_class, "batch_max_bytes", 2000)
        fake_server.batches.max_bytes = 2000
    else:
        monkeypatch.setattr(llm_class, "batch_max_requests", 4)
        fake_server.batches.max_requests = 4
    results = await _run(_spec(fake_server, provider, 20))
    assert all(r.succeeded and r.batch is not None for r in results.values())
    assert fake_server.batches.refused == 0 and len(fake_server.batches.jobs) >= 3
    assert sorted(fake_server.batches.lines()) == sorted(f"t{i}" for i in range(20))

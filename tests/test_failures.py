"""Failures: skipped descendants, fail-fast, cancellation, retries and timeouts keep finished work."""

from __future__ import annotations

import anyio
import pytest

from llm_abstractions import AuthenticationError, LlmConnectionError, RateLimitedError
from orchestration import ExecutionStatus
from tests.conftest import Probe, probe_project

DIAMOND = [
    {"id": "root"},
    {"id": "bad", "depends_on": ["root"]},
    {"id": "child", "depends_on": ["bad"]},
    {"id": "grandchild", "depends_on": ["child", "other"]},
    {"id": "other", "depends_on": ["root"]},
    {"id": "independent"},
]


async def test_failure_skips_descendants_and_independent_branches_run(probe: Probe) -> None:
    probe.errors["bad"] = [AuthenticationError("bad key")]
    results = await probe_project(DIAMOND).run()

    status = {task: r.status for task, r in results.items()}
    assert status == {
        "root": ExecutionStatus.SUCCESS,
        "bad": ExecutionStatus.FAILED,
        "child": ExecutionStatus.SKIPPED,
        "grandchild": ExecutionStatus.SKIPPED,
        "other": ExecutionStatus.SUCCESS,
        "independent": ExecutionStatus.SUCCESS,
    }
    assert results["bad"].error is not None and results["bad"].error.type == "authentication"
    assert results["bad"].attempts == 1  # not retryable: failed at once
    assert results["child"].error is not None and "bad" in results["child"].error.message
    assert "child" not in probe.calls and "grandchild" not in probe.calls
    assert results["root"].output == "out:root"


async def test_fail_fast_cancels_running_tasks(probe: Probe) -> None:
    probe.gate("slow")  # never released: only cancellation can end it
    probe.errors["bad"] = [AuthenticationError("no")]
    orchestrator = probe_project(
        [{"id": "done"}, {"id": "slow"}, {"id": "bad", "depends_on": ["done"]}, {"id": "later", "depends_on": ["bad"]}],
        max_concurrency=4,
        fail_fast=True,
    )
    with anyio.fail_after(5):
        results = await orchestrator.run()
    assert results["done"].status is ExecutionStatus.SUCCESS
    assert results["bad"].status is ExecutionStatus.FAILED
    assert results["slow"].status is ExecutionStatus.CANCELLED
    assert results["slow"].started_at is not None
    assert results["later"].status is ExecutionStatus.SKIPPED


async def test_cancelling_the_run_keeps_finished_results(probe: Probe) -> None:
    probe.gate("stuck")
    orchestrator = probe_project([{"id": "quick"}, {"id": "stuck"}, {"id": "after", "depends_on": ["stuck"]}])
    with anyio.move_on_after(5) as scope:
        async with anyio.create_task_group() as group:

            async def cancel_when_stuck() -> None:
                await probe.started["stuck"].wait()
                while "quick" not in orchestrator.results:
                    await anyio.lowlevel.checkpoint()
                group.cancel_scope.cancel()

            group.start_soon(cancel_when_stuck)
            await orchestrator.run()
    assert not scope.cancelled_caught
    results = orchestrator.results
    assert results["quick"].status is ExecutionStatus.SUCCESS
    assert results["quick"].output == "out:quick"
    assert results["stuck"].status is ExecutionStatus.CANCELLED
    assert results["after"].status is ExecutionStatus.CANCELLED


async def test_retryable_errors_are_retried_with_retry_after(probe: Probe) -> None:
    probe.errors["flaky"] = [RateLimitedError("slow down", retry_after=0.01), LlmConnectionError("reset")]
    orchestrator = probe_project([{"id": "flaky", "retries": 2}])
    orchestrator.spec.agents["p"] = {"type": "probe", "retry": {"initial_backoff_s": 0.001, "max_backoff_s": 0.01}}
    results = await orchestrator.run()
    assert results["flaky"].status is ExecutionStatus.SUCCESS
    assert results["flaky"].attempts == 3
    assert probe.calls["flaky"] == 3


async def test_retries_exhausted(probe: Probe) -> None:
    probe.errors["flaky"] = [LlmConnectionError("reset") for _ in range(5)]
    orchestrator = probe_project([{"id": "flaky"}], retries=1)
    orchestrator.spec.agents["p"] = {"type": "probe", "retry": {"initial_backoff_s": 0.001}}
    results = await orchestrator.run()
    assert results["flaky"].status is ExecutionStatus.FAILED
    assert results["flaky"].error is not None and results["flaky"].error.type == "connection"
    assert results["flaky"].attempts == 2


@pytest.mark.parametrize("level", ["task", "agent"])
async def test_timeouts(probe: Probe, level: str) -> None:
    probe.gate("hang")
    orchestrator = probe_project([{"id": "hang", "retries": 0, **({"timeout_s": 0.05} if level == "task" else {})}])
    if level == "agent":
        orchestrator.spec.agents["p"] = {"type": "probe", "timeout_s": 0.05}
    with anyio.fail_after(5):
        results = await orchestrator.run()
    assert results["hang"].status is ExecutionStatus.FAILED
    assert results["hang"].error is not None and results["hang"].error.type == "timeout"


async def test_template_error_at_render_time_fails_only_that_task(probe: Probe) -> None:
    orchestrator = probe_project(
        [{"id": "a"}, {"id": "b", "depends_on": ["a"], "description": "b {{ tasks.a.output.missing }}"}]
    )
    results = await orchestrator.run()
    assert results["a"].status is ExecutionStatus.SUCCESS
    assert results["b"].status is ExecutionStatus.FAILED
    assert results["b"].error is not None and results["b"].error.type == "template_error"
    assert "b" not in probe.calls

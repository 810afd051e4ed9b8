"""The task lifecycle, the retry policy over every attempt, and models passed in as instances."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import (
    AuthenticationError,
    FunctionLlm,
    GenerationOptions,
    Message,
    ProviderUnavailableError,
)
from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec, RunEvent
from orchestration.lifecycle import TRANSITIONS, IllegalTransitionError, TaskLifecycle, TaskState
from orchestration.store import RunStore

FAST_RETRY = {"initial_backoff_s": 0.001, "max_backoff_s": 0.001}


def spec(tasks: list[dict[str, Any]], agents: dict[str, dict[str, Any]] | None = None) -> ProjectSpec:
    return ProjectSpec.model_validate({"name": "lifecycle", "agents": agents or {}, "tasks": tasks})


def shared_registry() -> AgentRegistry:
    return AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])


class Flaky:
    """A model function that fails with a retryable error after ``seconds``, every time; counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        self.calls += 1
        await anyio.sleep(self.seconds)
        raise ProviderUnavailableError("503 overloaded")


async def test_the_retry_deadline_counts_the_first_attempt() -> None:
    flaky = Flaky(0.3)
    agents = {"slow": {"type": "offline", "retry": {"deadline_s": 0.2, **FAST_RETRY}}}
    orchestrator = ProjectOrchestrator(
        spec([{"id": "t", "description": "x", "agent": "slow", "retries": 3}], agents),
        registry=shared_registry(),
        llms={"slow": FunctionLlm(flaky)},
    )
    result = (await orchestrator.run())["t"]
    assert flaky.calls == 1 and result.attempts == 1
    assert result.error is not None and result.error.type == "provider_unavailable"


async def test_without_a_deadline_every_retry_is_made() -> None:
    flaky = Flaky(0.0)
    agents = {"quick": {"type": "offline", "retry": FAST_RETRY}}
    orchestrator = ProjectOrchestrator(
        spec([{"id": "t", "description": "x", "agent": "quick", "retries": 3}], agents),
        registry=shared_registry(),
        llms={"quick": FunctionLlm(flaky)},
    )
    result = (await orchestrator.run())["t"]
    assert flaky.calls == 4 and result.attempts == 4
    assert [a.error_type for a in result.attempt_log] == ["provider_unavailable"] * 4


class Recorded(FunctionLlm):
    """A function model that remembers whether it was closed."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True


async def test_a_passed_in_instance_answers_and_stays_open_and_the_shared_registry_is_unchanged() -> None:
    seen: list[tuple[str, int | None]] = []

    def shout(messages: Sequence[Message], options: GenerationOptions) -> str:
        seen.append((messages[-1].content, options.max_tokens))
        return messages[-1].content.upper()

    llm = Recorded(shout, model="shout-1")
    registry = shared_registry()
    orchestrator = ProjectOrchestrator(
        spec([{"id": "t", "description": "hello", "agent": "writer", "options": {"max_tokens": 7}}]),
        registry=registry,
        llms={"writer": llm},
    )
    result = (await orchestrator.run())["t"]
    assert result.status is ExecutionStatus.SUCCESS and result.output == "HELLO"
    assert result.agent == "writer" and result.model == "shout-1" and result.provider == "function"
    assert seen == [("hello", 7)]
    assert not llm.closed  # the caller owns it
    assert "writer" not in registry and registry.names() == ["offline"]


async def test_function_models_sync_async_streaming_and_typed_errors() -> None:
    async def echo(messages: Sequence[Message], options: GenerationOptions) -> str:
        await anyio.lowlevel.checkpoint()
        return f"async {messages[-1].content}"

    async def pieces(messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[str]:
        for piece in ("str", "eam", "ed"):
            yield piece

    def refuse(messages: Sequence[Message], options: GenerationOptions) -> str:
        raise AuthenticationError("bad key")

    llms = {
        "sync": FunctionLlm(lambda messages, options: "sync"),
        "async": FunctionLlm(echo),
        "stream": FunctionLlm(stream_function=pieces),
        "refuse": FunctionLlm(refuse),
    }
    tasks = [{"id": name, "description": "go", "agent": name} for name in llms]
    results = await ProjectOrchestrator(spec(tasks), registry=shared_registry(), llms=llms).run()
    assert results["sync"].output == "sync" and results["async"].output == "async go"
    assert results["stream"].output == "streamed" and results["stream"].time_to_first_token_s is not None
    refused = results["refuse"]
    assert refused.status is ExecutionStatus.FAILED and refused.attempts == 1  # not retryable
    assert refused.error is not None and refused.error.type == "authentication"


async def test_every_outcome_is_announced_and_stored_the_same_way(tmp_path: Path) -> None:
    tasks = [
        {"id": "bad", "description": "please fail", "agent": "picky"},
        {"id": "after_bad", "description": "never", "depends_on": ["bad"]},
        {"id": "good", "description": "fine"},
    ]
    agents = {"picky": {"type": "offline", "fail_if_contains": "fail"}}
    store = RunStore(tmp_path / "runs.db")
    orchestrator = ProjectOrchestrator(spec(tasks, agents), registry=shared_registry(), store=store)
    events: list[RunEvent] = []
    orchestrator.on_event(events.append)
    results = await orchestrator.run(run_id="r1")

    finals = {e.task_id: e for e in events if e.result is not None}
    assert {task_id: e.kind.value for task_id, e in finals.items()} == {
        "bad": "task_failed",
        "after_bad": "task_skipped",
        "good": "task_succeeded",
    }
    assert all(finals[t].result is results[t] for t in finals)
    started = [e.task_id for e in events if e.kind == "task_started"]
    assert sorted(started) == ["bad", "good"]  # a skipped task never started
    stored = store.load_run("r1").results()
    assert {t: r.status.value for t, r in stored.items()} == {
        "bad": "failed",
        "after_bad": "skipped",
        "good": "success",
    }
    store.close()


async def test_only_the_allowed_moves_can_be_made() -> None:
    orchestrator = ProjectOrchestrator(spec([{"id": "a", "description": "x"}]), registry=shared_registry())
    project = orchestrator.validate()
    ran: list[str] = []

    async def execute(task: Any, started_at: Any) -> Any:
        ran.append(task.id)
        raise AssertionError("not reached")

    lifecycle = TaskLifecycle("r", project.tasks, execute, results={}, events=orchestrator.events)
    assert lifecycle.state(0) is TaskState.BLOCKED
    with pytest.raises(IllegalTransitionError, match="blocked to running"):
        await lifecycle.run(0)  # not ready yet
    assert ran == [] and lifecycle.state(0) is TaskState.BLOCKED
    lifecycle.cancel_unfinished()
    assert lifecycle.state(0) is TaskState.CANCELLED
    with pytest.raises(IllegalTransitionError):
        lifecycle.ready(0)
    assert all(not TRANSITIONS[state] for state in TaskState if state.final)

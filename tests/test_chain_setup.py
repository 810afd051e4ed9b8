"""A client that cannot be set up (missing SDK, failing ``prepare``) fails its tasks, not the run."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from llm_abstractions import (
    AuthenticationError,
    BaseLlm,
    GenerationOptions,
    LlmConfig,
    LlmResponse,
    Message,
    register_llm,
)
from llm_abstractions.factory import unregister_llm
from llm_abstractions.providers._sdk import import_sdk
from orchestration import AgentTask, ExecutionStatus, ProjectOrchestrator, ProjectSpec


class BrokenSetupLlm(BaseLlm):
    """A test double whose ``prepare`` raises ``failure``; counts ``prepare`` and call attempts."""

    provider = "broken_setup"
    failure: BaseException = RuntimeError("no runtime")
    prepared = 0
    called = 0

    async def prepare(self) -> None:
        type(self).prepared += 1
        raise type(self).failure

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        type(self).called += 1
        return LlmResponse(text="unreachable", provider=self.provider)


@pytest.fixture
def broken() -> Iterator[type[BrokenSetupLlm]]:
    cls = type("BoundBrokenSetupLlm", (BrokenSetupLlm,), {"prepared": 0, "called": 0})
    register_llm("broken_setup", cls)
    yield cls
    unregister_llm("broken_setup")


def _project(tasks: list[dict[str, object]]) -> ProjectOrchestrator:
    spec = ProjectSpec(
        name="setup",
        agents={"b": {"type": "broken_setup"}, "ok": {"type": "offline"}},
        defaults={"agent": "b", "retries": 2},
        tasks=[AgentTask.model_validate({"description": t["id"], **t}) for t in tasks],
    )
    return ProjectOrchestrator(spec, max_concurrency=1)


async def test_a_failing_prepare_fails_each_task_with_the_same_error_and_the_run_goes_on(
    broken: type[BrokenSetupLlm],
) -> None:
    broken.failure = ValueError("model weights not found at /models/x")
    results = await _project([{"id": "one"}, {"id": "two"}, {"id": "other", "agent": "ok"}]).run()

    assert results["other"].status is ExecutionStatus.SUCCESS
    for task in ("one", "two"):
        result = results[task]
        assert result.status is ExecutionStatus.FAILED
        assert result.error is not None
        assert result.error.type == "internal"
        assert result.error.message == "ValueError: model weights not found at /models/x"
        assert result.agent == "b"
    assert broken.prepared == 2, "the failed chain was cached: the second task did not try again"
    assert broken.called == 0


async def test_an_llm_error_from_prepare_keeps_its_type(broken: type[BrokenSetupLlm]) -> None:
    broken.failure = AuthenticationError("no key for agent b: set B_API_KEY")
    results = await _project([{"id": "one"}, {"id": "child", "depends_on": ["one"], "agent": "ok"}]).run()

    error = results["one"].error
    assert error is not None
    assert (error.type, error.message) == ("authentication", "no key for agent b: set B_API_KEY")
    assert results["child"].status is ExecutionStatus.SKIPPED


class MissingSdkLlm(BrokenSetupLlm):
    """A provider whose SDK is not installed: creating it fails."""

    def __init__(self, config: LlmConfig) -> None:
        import_sdk("no_such_sdk_module", package="no-such-sdk", extra="nosdk", provider=self.provider)
        super().__init__(config)


async def test_a_missing_sdk_fails_each_task_with_the_install_hint(broken: type[BrokenSetupLlm]) -> None:
    register_llm("broken_setup", MissingSdkLlm)
    results = await _project([{"id": "one"}, {"id": "two"}, {"id": "other", "agent": "ok"}]).run()

    assert results["other"].status is ExecutionStatus.SUCCESS
    for task in ("one", "two"):
        error = results[task].error
        assert error is not None
        assert error.type == "internal"
        assert "pip install 'orchestrate-llm[nosdk]'" in error.message

"""Answers cut off by ``max_tokens``, and what a result carries besides its output (finish reason, metadata,
the request as sent)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, LlmResponse, Message, Usage
from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec


def cut_off(text: str) -> FunctionLlm:
    def answer(messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        usage = Usage(input_tokens=5, output_tokens=options.max_tokens or 0)
        return LlmResponse(text=text, provider="function", model="thinker", finish_reason="length", usage=usage)

    return FunctionLlm(answer)


async def run(llm: FunctionLlm, **task: Any) -> Any:
    spec = ProjectSpec.model_validate(
        {"tasks": [{"id": "t", "description": "think", "agent": "m", "options": {"max_tokens": 9}, **task}]}
    )
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    return (await ProjectOrchestrator(spec, registry=registry, llms={"m": llm}).run())["t"]


async def test_an_empty_answer_cut_off_fails_and_keeps_its_usage() -> None:
    result = await run(cut_off(""))
    assert result.status is ExecutionStatus.FAILED and result.attempts == 1  # not retried
    assert result.error.type == "output_truncated" and "max_tokens" in result.error.message
    assert result.usage is not None and result.usage.output_tokens == 9


async def test_a_text_answer_cut_off_is_accepted_with_its_finish_reason() -> None:
    result = await run(cut_off("half an ans"))
    assert result.status is ExecutionStatus.SUCCESS and result.output == "half an ans"
    assert result.finish_reason == "length" and result.model_dump(mode="json")["finish_reason"] == "length"


async def test_a_text_task_may_refuse_a_cut_off_answer() -> None:
    result = await run(cut_off("half an ans"), on_truncated="fail")
    assert result.status is ExecutionStatus.FAILED and result.error.type == "output_truncated"
    assert result.output == "half an ans"  # what came is kept


async def test_a_json_answer_cut_off_fails_without_a_repair_call_unless_accepted() -> None:
    calls: list[int] = []

    def half_json(messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        calls.append(1)
        return LlmResponse(text='{"a": 1}', provider="function", finish_reason="length")

    failed = await run(FunctionLlm(half_json), output_format="json")
    assert failed.status is ExecutionStatus.FAILED and failed.error.type == "output_truncated" and len(calls) == 1
    accepted = await run(FunctionLlm(half_json), output_format="json", on_truncated="accept")
    assert accepted.status is ExecutionStatus.SUCCESS and accepted.parsed == {"a": 1}


async def test_a_result_carries_the_task_metadata_and_the_request_as_sent() -> None:
    echo = FunctionLlm(lambda messages, options: "ok")
    result = await run(echo, metadata={"owner": "ana"}, system_prompt="be brief")
    assert result.metadata == {"owner": "ana"} and result.finish_reason == "stop"
    assert [(m.role, m.content) for m in result.request] == [("system", "be brief"), ("user", "think")]
    assert "request" not in result.model_dump(mode="json")  # in the store, not in the results file

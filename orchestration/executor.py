"""``TaskExecutor``: one task, one agent, one result.

It resolves the task's agent to a ``BaseLlm`` (one instance per agent, reused by
every task and closed at the end), renders the prompts, calls the model in-process
with retries and timeouts, and turns whatever happens into an ``ExecutionResult``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import anyio

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import (
    BaseLlm,
    LlmError,
    LlmResponse,
    LlmTimeoutError,
    Message,
    collect_stream,
    create_llm,
    redact,
)
from llm_abstractions.pricing import cost_usd
from llm_abstractions.structured import InvalidOutputError, generate_json
from orchestration.models import ErrorInfo, ExecutionResult, ExecutionStatus, OutputFormat, utc_now
from orchestration.project import CompiledTask
from orchestration.retry import call_with_retries
from orchestration.templates import TemplateError

__all__ = ["TaskExecutor"]


class TaskExecutor:
    """Executes compiled tasks against the agents of a registry."""

    def __init__(self, registry: AgentRegistry) -> None:
        self.registry = registry
        self._llms: dict[str, BaseLlm] = {}

    def llm_for(self, agent: str) -> BaseLlm:
        """The shared client of ``agent``, created on first use."""
        llm = self._llms.get(agent)
        if llm is None:
            llm = self._llms[agent] = create_llm(self.registry.get(agent).llm_config())
        return llm

    async def aclose(self) -> None:
        """Close every client created by this executor."""
        llms, self._llms = list(self._llms.values()), {}
        with anyio.CancelScope(shield=True):
            for llm in llms:
                await llm.aclose()

    @staticmethod
    def messages_for(task: CompiledTask, inputs: dict[str, Any], upstream: Mapping[str, Any]) -> list[Message]:
        """Render the task's prompts; raise ``TemplateError``."""
        messages = []
        if task.system is not None:
            messages.append(Message(role="system", content=task.system.render(inputs, upstream)))  # type: ignore[arg-type]
        messages.append(Message(role="user", content=task.prompt.render(inputs, upstream)))  # type: ignore[arg-type]
        return messages

    async def execute(
        self, task: CompiledTask, inputs: dict[str, Any], upstream: Mapping[str, ExecutionResult]
    ) -> ExecutionResult:
        """Run ``task`` to a final result; never raises except on cancellation."""
        started_at = utc_now()
        start = time.perf_counter()
        agent = self.registry.get(task.agent)
        attempts = 0

        def finish(status: ExecutionStatus, **fields: Any) -> ExecutionResult:
            values: dict[str, Any] = {
                "task_id": task.id,
                "status": status,
                "agent": agent.name,
                "provider": agent.agent_type,
                "model": agent.model,
                "attempts": attempts,
                "started_at": started_at,
                "completed_at": utc_now(),
                "duration_s": time.perf_counter() - start,
            }
            values.update(fields)
            return ExecutionResult(**values)

        try:
            messages = self.messages_for(task, inputs, upstream)
        except TemplateError as exc:
            return finish(ExecutionStatus.FAILED, error=ErrorInfo(type="template_error", message=redact(str(exc))))

        llm = self.llm_for(agent.name)

        async def call(conversation: Sequence[Message]) -> LlmResponse:
            async def attempt() -> LlmResponse:
                nonlocal attempts
                attempts += 1
                return await _call(llm, agent, conversation, task.options)

            return await call_with_retries(attempt, task.retries, agent.retry)

        parsed = None
        try:
            with anyio.fail_after(task.timeout_s) if task.timeout_s else _no_scope():
                if task.task.output_format is OutputFormat.JSON:
                    answer = await generate_json(call, messages, task.task.output_schema)
                    response, parsed = answer.response, answer.value
                else:
                    response = await call(messages)
        except TimeoutError:
            return finish(
                ExecutionStatus.FAILED,
                error=ErrorInfo(type="timeout", message=f"task timed out after {task.timeout_s} s"),
            )
        except InvalidOutputError as exc:
            return finish(
                ExecutionStatus.FAILED,
                output=exc.response.text,
                error=ErrorInfo(type=exc.type_name, message=redact(exc.message)),
                usage=exc.response.usage,
                cost_usd=cost_usd(llm.pricing_provider, exc.response.model or agent.model, exc.response.usage),
            )
        except LlmError as exc:
            return finish(
                ExecutionStatus.FAILED,
                error=ErrorInfo(type=exc.type_name, message=redact(exc.message)),
                output=exc.partial_text,
            )
        except Exception as exc:  # a provider bug must not take the run down
            return finish(
                ExecutionStatus.FAILED,
                error=ErrorInfo(type="internal", message=redact(f"{type(exc).__name__}: {exc}")),
            )

        return finish(
            ExecutionStatus.SUCCESS,
            output=response.text,
            parsed=parsed,
            usage=response.usage,
            model=response.model or agent.model,
            provider=response.provider,
            time_to_first_token_s=response.time_to_first_token_s,
            cost_usd=cost_usd(llm.pricing_provider, response.model or agent.model, response.usage),
        )


class _no_scope:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _streamed(llm: BaseLlm, messages: Sequence[Message], options: dict[str, Any]) -> Awaitable[LlmResponse]:
    """The answer, streamed so that time to first token is measured."""
    return collect_stream(llm.stream_content_async(messages, **options), provider=llm.provider, model=llm.model_name)


async def _call(llm: BaseLlm, agent: AgentConfig, messages: Sequence[Message], options: dict[str, Any]) -> LlmResponse:
    """One model call under the agent's per-call timeout."""
    if agent.timeout_s is None:
        return await _streamed(llm, messages, options)
    try:
        with anyio.fail_after(agent.timeout_s):
            return await _streamed(llm, messages, options)
    except TimeoutError:
        raise LlmTimeoutError(f"call timed out after {agent.timeout_s} s", provider=agent.agent_type) from None

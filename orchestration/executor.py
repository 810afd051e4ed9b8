"""``TaskExecutor``: one task, one agent (or its fallbacks), one result.

It resolves the task's agent to a ``BaseLlm`` (one instance per agent, reused by
every task and closed at the end), renders the prompts, and calls the model
in-process through a chain of wrappers:

``FallbackLlm`` over the agent and its fallbacks, each a ``RetryingLlm`` around the
agent's shared ``CircuitBreakerLlm(LimitedLlm(TimeoutLlm(StreamedLlm(client))))``, whose
breaker and limits belong to the agent's endpoint (layers with nothing to do are left out:
no ``FallbackLlm`` without fallbacks, no ``TimeoutLlm`` without a timeout, no ``StreamedLlm``
for a client that cannot stream, no limits or breaker for an in-process client whose endpoint
has neither limits nor call timeouts). Answers are streamed so that time to
first token is measured; json tasks are validated (with one repair call) by
``generate_json``. Whatever happens becomes an ``ExecutionResult``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from datetime import datetime
from functools import partial
from typing import Any

import anyio

from agent_registry import AgentRegistry
from llm_abstractions import BaseLlm, LlmError, LlmResponse, Message, create_llm, redact
from llm_abstractions.pricing import cost_usd
from llm_abstractions.structured import InvalidOutputError, generate_json
from llm_abstractions.wrappers import CircuitBreakerLlm, FallbackLlm, LimitedLlm, StreamedLlm, TimeoutLlm
from orchestration.endpoints import Endpoints
from orchestration.models import (
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    OutputFormat,
    complete_records,
    utc_now,
)
from orchestration.project import CompiledTask
from orchestration.retry import Attempt, RetryingLlm, attempt_log
from orchestration.templates import TemplateError

__all__ = ["TaskExecutor"]

_NO_DEADLINE = nullcontext()
"""The scope of a task without a timeout (reusable)."""


class TaskExecutor:
    """Executes compiled tasks against the agents of a registry."""

    def __init__(self, registry: AgentRegistry) -> None:
        self.registry = registry
        self.endpoints = Endpoints(registry)
        self._llms: dict[str, BaseLlm] = {}
        self._guarded: dict[str, BaseLlm] = {}
        self._chains: dict[tuple[str, int], BaseLlm] = {}
        self._building: dict[tuple[str, int], anyio.Event] = {}
        """Chains being built, each set once its building ended (so its waiters wake in one turn)."""

    def llm_for(self, agent: str) -> BaseLlm:
        """The shared client of ``agent``, created on first use."""
        llm = self._llms.get(agent)
        if llm is None:
            llm = self._llms[agent] = create_llm(self.registry.get(agent).llm_config())
        return llm

    def guarded_llm(self, agent: str) -> BaseLlm:
        """The client of ``agent`` behind its per-call timeout and its endpoint's limits and breaker."""
        llm = self._guarded.get(agent)
        if llm is None:
            endpoint = self.endpoints.for_agent(self.registry.get(agent))
            client = self.llm_for(agent)
            in_process = client.in_process
            # Layers that would do nothing are left out: they cost a coroutine frame (or a whole
            # stream-and-collect round) on every call of every task. An in-process client is never
            # rate-limited and fails only on a call timeout, so without limits or call timeouts on
            # its endpoint neither limits nor breaker could ever act.
            if type(client)._stream is not BaseLlm._stream:  # streams for real: time its first token
                client = StreamedLlm(client)
            if client.config.timeout_s is not None:
                client = TimeoutLlm(client)
            if not (in_process and endpoint.limits.settings.unlimited):
                client = LimitedLlm(client, endpoint.limits)
            if not (in_process and not endpoint.call_timeouts):
                client = CircuitBreakerLlm(client, endpoint.breaker)
            llm = self._guarded[agent] = client
        return llm

    async def chain_for(self, agent: str, retries: int) -> BaseLlm:
        """``agent``, then its fallbacks, each retried on its own (shared by tasks with these settings).

        Built once, and its clients prepared (SDK imported, client built) before the first call,
        so that no call timeout counts that work. A chain whose building fails is not kept: each
        later task builds it again and meets the same error.
        """
        key = (agent, retries)
        while (chain := self._chains.get(key)) is None:
            building = self._building.get(key)
            if building is not None:  # another task builds it: wait with all the others, then look again
                await building.wait()
                continue
            self._building[key] = built = anyio.Event()
            try:
                chain = self._chains[key] = await self._build_chain(agent, retries)
            finally:
                del self._building[key]
                built.set()
        return chain

    async def _build_chain(self, agent: str, retries: int) -> BaseLlm:
        names = list(dict.fromkeys([agent, *self.registry.get(agent).fallbacks]))
        last = len(names) - 1
        links = [
            RetryingLlm(self.guarded_llm(name), retries, self.registry.get(name).retry, has_fallback=position < last)
            for position, name in enumerate(names)
        ]
        chain = FallbackLlm(links) if len(links) > 1 else links[0]
        await chain.prepare()
        return chain

    async def aclose(self) -> None:
        """Close every client created by this executor."""
        llms, self._llms, self._guarded, self._chains = list(self._llms.values()), {}, {}, {}
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
        self,
        task: CompiledTask,
        inputs: dict[str, Any],
        upstream: Mapping[str, ExecutionResult],
        *,
        started_at: datetime | None = None,
    ) -> ExecutionResult:
        """Run ``task`` to a final result (started at ``started_at``, or now); never raises except on cancellation."""
        started_at = started_at or utc_now()
        start = time.perf_counter()
        log: list[Attempt] = []
        try:
            messages = self.messages_for(task, inputs, upstream)
        except TemplateError as exc:
            error = ErrorInfo(type="template_error", message=redact(str(exc)))
            return self._result(task, log, started_at, start, ExecutionStatus.FAILED, error=error)

        parsed = None
        recording = attempt_log.set(log)
        try:
            # Building the chain creates and prepares the clients (SDK import, client set-up):
            # a failure there fails this task only, and the next task tries again.
            chain = self._chains.get((task.agent, task.retries)) or await self.chain_for(task.agent, task.retries)
            with anyio.fail_after(task.timeout_s) if task.timeout_s else _NO_DEADLINE:
                if task.task.output_format is OutputFormat.JSON:
                    call = partial(chain.generate_content_async, **task.options)
                    answer = await generate_json(call, messages, task.task.output_schema)
                    response, parsed = answer.response, answer.value
                else:
                    response = await chain.generate_content_async(messages, **task.options)
        except TimeoutError:
            error = ErrorInfo(type="timeout", message=f"task timed out after {task.timeout_s} s")
            return self._result(task, log, started_at, start, ExecutionStatus.FAILED, error=error)
        except InvalidOutputError as exc:
            error = ErrorInfo(type=exc.type_name, message=redact(exc.message))
            return self._result(task, log, started_at, start, ExecutionStatus.FAILED, exc.response, error=error)
        except LlmError as exc:
            error = ErrorInfo(type=exc.type_name, message=redact(exc.message))
            return self._result(
                task, log, started_at, start, ExecutionStatus.FAILED, error=error, output=exc.partial_text
            )
        except Exception as exc:  # a provider bug must not take the run down
            error = ErrorInfo(type="internal", message=redact(f"{type(exc).__name__}: {exc}"))
            return self._result(task, log, started_at, start, ExecutionStatus.FAILED, error=error)
        finally:
            attempt_log.reset(recording)

        return self._result(task, log, started_at, start, ExecutionStatus.SUCCESS, response, parsed=parsed)

    def _result(
        self,
        task: CompiledTask,
        log: list[Attempt],
        started_at: datetime,
        start: float,
        status: ExecutionStatus,
        response: LlmResponse | None = None,
        *,
        error: ErrorInfo | None = None,
        output: str | None = None,
        parsed: Any = None,
    ) -> ExecutionResult:
        """The task's record; ``response`` gives its output, usage and cost (and, on success, its provider)."""
        agent = self.registry.get(log[-1]["agent"] if log else task.agent)
        attempts = len(log)
        if attempts > 1 or status is not ExecutionStatus.SUCCESS:  # a refusal by an open circuit sent nothing
            attempts = sum(1 for a in log if a["error_type"] != "circuit_open")
        provider: str = agent.agent_type
        model = agent.model
        usage = cost = time_to_first_token_s = None
        if response is not None:
            model = response.model or model
            output, usage = response.text, response.usage
            pricing = self.llm_for(agent.name).pricing_provider
            cost = cost_usd(pricing, model, usage) if pricing else None
            if status is ExecutionStatus.SUCCESS:
                provider, time_to_first_token_s = response.provider, response.time_to_first_token_s
        result = ExecutionResult(
            task_id=task.id,
            status=status,
            output=output,
            parsed=parsed,
            error=error,
            agent=agent.name,
            provider=provider,
            model=model,
            attempts=attempts,
            attempt_log=log,
            started_at=started_at,
            completed_at=utc_now(),
            duration_s=time.perf_counter() - start,
            usage=usage,
            cost_usd=cost,
            time_to_first_token_s=time_to_first_token_s,
        )
        # Every field of these records is set (the usage's two counts included): they share fields-sets.
        complete_records(result, usage, *result.attempt_log)
        return result

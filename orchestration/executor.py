"""``TaskExecutor``: one task, one agent (or its fallbacks), one result.

It resolves the task's agent to a ``BaseLlm`` (an instance the registry holds for it, or one
created from its config; one per agent, reused by every task), renders the prompts, and calls
the model in-process through a :class:`~orchestration.call_chain.CallChain`: the agent, then its
fallbacks, each retried on its own, each behind its shared guard
``CircuitBreakerLlm(LimitedLlm(TimeoutLlm(StreamedLlm(client))))`` whose breaker and limits
belong to the agent's endpoint (layers with nothing to do are left out: no ``TimeoutLlm``
without a timeout, no ``StreamedLlm`` for a client that cannot stream, no limits or breaker for
an in-process client whose endpoint has neither limits nor call timeouts). Answers are
streamed so that time to first token is measured; json tasks are validated (with one repair
call) by ``generate_json``. A task's attachments go with its prompt, checked against its agent's
provider before any call (a refusal fails the task, ``invalid_request``, with no request sent).
Whatever happens becomes an ``ExecutionResult``, whose ``request`` holds the attachments' references
only (name, type, size, digest: never their bytes). A batch task's chain starts with its agent behind
:class:`~orchestration.batching.BatchedLlm` (its request goes through a batch job of the run's
:class:`~orchestration.batching.Batches`); an answer from a job is priced at batch prices and its result names the
job (``batch``). A code step
(``type: python``) is handed to :func:`orchestration.code_steps.run_step` instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from agent_registry import AgentRegistry
from llm_abstractions import (
    BaseLlm,
    ErrorType,
    GenerationOptions,
    InvalidOutputError,
    InvalidRequestError,
    LlmError,
    LlmResponse,
    Message,
    OutputTruncatedError,
    Usage,
    create_llm,
    redact,
)
from llm_abstractions.attachments import AttachmentError
from llm_abstractions.errors import REFUSED_BEFORE_SENDING
from llm_abstractions.pricing import cost_usd
from llm_abstractions.structured import generate_json
from llm_abstractions.wrappers import CircuitBreakerLlm, LimitedLlm, StreamedLlm, TimeoutLlm, estimate_tokens
from orchestration.answer_cache import AnswerCache, CacheMode
from orchestration.attachments import refused_attachments
from orchestration.batching import BatchedLlm, Batches, BatchPath, Ticket, current_ticket
from orchestration.budget import BudgetedLlm
from orchestration.call_chain import CallChain, ChainLink
from orchestration.code_steps import invoke_here, run_step
from orchestration.endpoints import Endpoints, PaceCallback
from orchestration.models import (
    AttemptRecord,
    BatchRecord,
    CacheInfo,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    OutputFormat,
    utc_now,
)
from orchestration.project import CompiledTask, served_on_ray
from orchestration.templates import TemplateError

if TYPE_CHECKING:
    from agent_registry import AgentConfig
    from orchestration.budget import BudgetLedger
    from orchestration.remote_steps import RemoteSteps
    from orchestration.telemetry import Tracing

__all__ = ["TaskExecutor"]

_NO_DEADLINE = nullcontext()
"""The scope of a task without a timeout (reusable)."""


class TaskExecutor:
    """Executes compiled tasks against the agents of a registry."""

    def __init__(
        self,
        registry: AgentRegistry,
        *,
        on_pace: PaceCallback | None = None,
        tracing: Tracing | None = None,
        cache: AnswerCache | None = None,
        budget: BudgetLedger | None = None,
        ray: RemoteSteps | None = None,
    ) -> None:
        """``on_pace``: told when an endpoint's pace changes (see :class:`~orchestration.endpoints.Endpoints`);
        ``tracing``: each model call becomes a span; ``cache``: the run's answer cache; ``budget``: the run's
        budget, which each call of a capped agent reserves its worst case in first; ``ray``: the run is on Ray:
        code steps run there (unless ``remote: false``), and local models and ``remote`` agents are served by Ray
        actors (:class:`~llm_abstractions.ray_replicas.ReplicatedLlm`)."""
        self.registry = registry
        self.ray = ray
        self.tracing = tracing
        self.cache = cache
        self.budget = budget
        self.endpoints = Endpoints(registry, on_pace=on_pace)
        self.batches: Batches | None = None
        """The run's batch jobs; ``None``: batch tasks go in real time."""
        self._created: dict[str, BaseLlm] = {}
        """Clients this executor created (closed by :meth:`aclose`); instances given to the registry are not."""
        self._guarded: dict[str, BaseLlm] = {}
        self._chains: dict[tuple[str, int, bool], CallChain] = {}
        self._building: dict[tuple[str, int, bool], anyio.Event] = {}
        """Chains being built, each set once its building ended (so its waiters wake in one turn)."""

    def llm_for(self, agent: str) -> BaseLlm:
        """The client of ``agent``: the instance the registry holds for it, else one created on first use."""
        llm = self.registry.llm_instance(agent) or self._created.get(agent)
        if llm is None:
            config = self.registry.get(agent)
            llm = create_llm(config.llm_config())
            if self.ray is not None and served_on_ray(self.registry, agent):
                llm = _replicated(llm, config)
            self._created[agent] = llm
        return llm

    def guarded_llm(self, agent: str) -> BaseLlm:
        """The client of ``agent`` behind its per-call timeout and its endpoint's limits and breaker."""
        llm = self._guarded.get(agent)
        if llm is None:
            client = self.llm_for(agent)
            in_process = client.in_process
            endpoint = self.endpoints.for_agent(self.registry.get(agent), learns=not in_process)
            # Layers that would do nothing are left out: an in-process client is never rate-limited
            # and fails only on a call timeout, so without limits or call timeouts on its endpoint
            # neither limits nor breaker could ever act.
            if client.streams:  # time its first token
                client = StreamedLlm(client)
            if self.tracing is not None:
                client = self.tracing.traced(client)
            if client.config.timeout_s is not None:
                client = TimeoutLlm(client)
            pricing = self.llm_for(agent).pricing_provider
            if self.budget is not None and self.budget.limits(agent, priced=bool(pricing)):
                client = BudgetedLlm(client, self.budget, agent, self.registry.get(agent).agent_type, pricing)
            if not (in_process and endpoint.limits.settings.unlimited):
                client = LimitedLlm(client, endpoint.limits)
            if not (in_process and not endpoint.call_timeouts):
                client = CircuitBreakerLlm(client, endpoint.breaker)
            llm = self._guarded[agent] = client
        return llm

    def batched_llm(self, agent: str, batches: Batches) -> BaseLlm:
        """``agent``'s guarded client behind the batch path of ``batches`` (within the budget, at batch prices)."""
        path: BaseLlm = BatchPath(batches, agent, self.llm_for(agent))
        if self.budget is not None and self.budget.limits(agent):
            config = self.registry.get(agent)
            path = BudgetedLlm(path, self.budget, agent, config.agent_type, path.pricing_provider, batch=True)
        return BatchedLlm(self.guarded_llm(agent), path, batches.settings.fallback)

    async def chain_for(self, agent: str, retries: int, batch: bool = False) -> CallChain:
        """``agent``, then its fallbacks, each retried on its own (shared by tasks with these settings); ``batch``:
        ``agent`` sends through the run's batch jobs (:meth:`batched_llm`), its fallbacks in real time.

        Built once, and its clients prepared (SDK imported, client built) before the first call,
        so that no call timeout counts that work. A chain whose building fails is not kept: each
        later task builds it again and meets the same error.
        """
        batches = self.batches if batch else None
        key = (agent, retries, batches is not None)
        while (chain := self._chains.get(key)) is None:
            building = self._building.get(key)
            if building is not None:  # another task builds it: wait with all the others, then look again
                await building.wait()
                continue
            self._building[key] = built = anyio.Event()
            try:
                links = [
                    ChainLink(name, self.guarded_llm(name), retries, self.registry.get(name).retry)
                    for name in dict.fromkeys([agent, *self.registry.get(agent).fallbacks])
                ]
                if batches is not None:
                    links[0] = replace(links[0], llm=self.batched_llm(agent, batches))
                chain = CallChain(links)
                await chain.prepare()
                self._chains[key] = chain
            finally:
                del self._building[key]
                built.set()
        return chain

    async def aclose(self) -> None:
        """Close every client this executor created (and the answer cache's connection)."""
        if self.cache is not None:
            self.cache.close()
        llms, self._created, self._guarded, self._chains = list(self._created.values()), {}, {}, {}
        with anyio.CancelScope(shield=True):
            for llm in llms:
                await llm.aclose()

    def estimated_cost(self, task: CompiledTask, messages: list[Message], options: GenerationOptions) -> float | None:
        """What sending ``messages`` with ``options`` to ``task``'s agent would cost at most, in USD: the prompt's
        estimated tokens (four characters each) and ``max_tokens`` (the task's, else the agent's) as output;
        ``None`` when the model has no known price."""
        agent = self.registry.get(task.agent)
        pricing = self.llm_for(agent.name).pricing_provider
        if not pricing:
            return None
        max_tokens = options.max_tokens or agent.options.max_tokens or 0
        usage = Usage(input_tokens=estimate_tokens(messages), output_tokens=max_tokens)
        return cost_usd(pricing, agent.model, usage)

    @staticmethod
    def messages_for(task: CompiledTask, inputs: dict[str, Any], upstream: Mapping[str, Any]) -> list[Message]:
        """Render the task's prompts, its attachments with the prompt; raise ``TemplateError`` or
        :class:`~llm_abstractions.attachments.AttachmentError` (a file it names cannot be sent)."""
        messages = []
        if task.system is not None:
            messages.append(Message(role="system", content=task.system.render(inputs, upstream)))
        prompt = task.prompt.render(inputs, upstream)
        if task.attachments is None:
            messages.append(Message(role="user", content=prompt))
        else:
            attachments = task.attachments.render(inputs, task.upstream(upstream), task.variables)
            messages.append(Message(role="user", content=prompt, attachments=attachments))
        return messages

    def check_attachments(self, task: CompiledTask, messages: Sequence[Message]) -> None:
        """Raise ``InvalidRequestError`` when the provider of ``task``'s agent would refuse the attachments of
        ``messages`` (their types, URLs, sizes): the task fails before any request."""
        attachments = [a for m in messages for a in m.attachments]
        text_bytes = sum(len(m.content.encode()) for m in messages)
        llm = self.llm_for(task.agent)
        problems = refused_attachments(llm, attachments, text_bytes)
        if problems:
            raise InvalidRequestError("; ".join(problems), provider=llm.provider)

    async def execute(
        self,
        task: CompiledTask,
        inputs: dict[str, Any],
        upstream: Mapping[str, ExecutionResult],
        *,
        started_at: datetime | None = None,
        request: tuple[list[Message], GenerationOptions] | None = None,
    ) -> ExecutionResult:
        """Run ``task`` to a final result (started at ``started_at``, or now); never raises except on cancellation.

        ``request``: the messages and options to send instead of the task's own (a reviewed request). A code step
        calls its function (:mod:`orchestration.code_steps`): no client, no call chain."""
        started_at = started_at or utc_now()
        if task.step is not None:
            settings = self.registry.get(task.agent).retry
            invoke = self.ray.invoke if self.ray is not None and task.task.remote is not False else invoke_here
            return await run_step(task, inputs, upstream, started_at=started_at, settings=settings, invoke=invoke)
        start = time.perf_counter()
        attempts: list[AttemptRecord] = []
        options = task.options
        if request is not None:
            messages, options = request
        else:
            try:
                if task.attachments is not None and task.attachments.dynamic:  # files to read: not on the loop
                    messages = await anyio.to_thread.run_sync(self.messages_for, task, inputs, upstream)
                else:
                    messages = self.messages_for(task, inputs, upstream)
            except TemplateError as exc:
                error = ErrorInfo(type=ErrorType.TEMPLATE_ERROR, message=redact(str(exc)))
                return self._result(task, attempts, started_at, start, error=error)
            except AttachmentError as exc:
                error = ErrorInfo(type=ErrorType.INVALID_REQUEST, message=redact(str(exc)))
                return self._result(task, attempts, started_at, start, error=error)
        outcome = partial(self._result, task, attempts, started_at, start, request=messages)
        try:
            if task.attachments is not None:
                self.check_attachments(task, messages)
            # Building the chain creates and prepares the clients (SDK import, client set-up):
            # a failure there fails this task only, and the next task tries again.
            chain = await self.chain_for(task.agent, task.retries, task.batch)
            cache = self.cache
            if (
                cache is not None
                and (mode := cache.mode(task)) is not CacheMode.OFF
                and self.llm_for(task.agent).cacheable
            ):
                key = cache.key(self.registry, task, messages, options)
                if mode.reads and (hit := cache.lookup(task, key, started_at, messages)) is not None:
                    return hit
                if mode.writes:
                    outcome = partial(outcome, cache_key=key)
            call = partial(_call, chain, task, options, attempts)
            ticket = Ticket(task.id) if task.batch and self.batches is not None else None
            current_ticket.set(ticket)  # read by this task's chain only (a worker's next task sets its own)
            if ticket is not None:
                outcome = partial(outcome, batch=ticket)
            with anyio.fail_after(task.timeout_s) if task.timeout_s else _NO_DEADLINE:
                if task.task.output_format is OutputFormat.JSON:
                    answer = await generate_json(call, messages, task.task.output_schema)
                    return outcome(answer.response, parsed=answer.value, json_repair=answer.repaired)
                return outcome(await call(messages))
        except TimeoutError:
            return outcome(error=ErrorInfo(type=ErrorType.TIMEOUT, message=f"task timed out after {task.timeout_s} s"))
        except InvalidOutputError as exc:
            return outcome(exc.response, error=ErrorInfo(type=exc.type_name, message=redact(exc.message)))
        except LlmError as exc:
            error = ErrorInfo(type=exc.type_name, message=redact(exc.message))
            return outcome(error=error, output=exc.partial_text, usage=exc.usage)
        except Exception as exc:  # a provider bug must not take the run down
            return outcome(error=ErrorInfo(type=ErrorType.INTERNAL, message=redact(f"{type(exc).__name__}: {exc}")))

    def _result(
        self,
        task: CompiledTask,
        attempts: list[AttemptRecord],
        started_at: datetime,
        start: float,
        response: LlmResponse | None = None,
        *,
        error: ErrorInfo | None = None,
        output: str | None = None,
        usage: Usage | None = None,
        parsed: Any = None,
        json_repair: str | None = None,
        request: list[Message] | None = None,
        cache_key: str | None = None,
        batch: Ticket | None = None,
    ) -> ExecutionResult:
        """The task's record: a success without ``error``; ``response`` gives its output, usage and cost (at batch
        prices when a batch job answered: ``batch``'s record)."""
        agent = self.registry.get(attempts[-1].agent if attempts else task.agent)
        provider: str = agent.agent_type
        model = agent.model
        time_to_first_token_s = finish_reason = None
        if response is not None:
            model = response.model or model
            output, usage, finish_reason = response.text, response.usage, response.finish_reason
            if error is None:
                provider, time_to_first_token_s = response.provider, response.time_to_first_token_s
        pricing = self.llm_for(agent.name).pricing_provider if usage is not None else None
        record: BatchRecord | None = batch.record if batch is not None and response is not None else None
        return ExecutionResult(
            task_id=task.id,
            status=ExecutionStatus.SUCCESS if error is None else ExecutionStatus.FAILED,
            output=output,
            parsed=parsed,
            error=error,
            agent=agent.name,
            provider=provider,
            model=model,
            attempts=sum(1 for a in attempts if a.error_type not in REFUSED_BEFORE_SENDING),
            attempt_log=attempts,
            started_at=started_at,
            completed_at=utc_now(),
            duration_s=time.perf_counter() - start,
            usage=usage,
            cost_usd=cost_usd(pricing, model, usage, batch=record is not None)
            if pricing and usage is not None
            else None,
            time_to_first_token_s=time_to_first_token_s,
            finish_reason=finish_reason,
            metadata=task.task.metadata,
            json_repair=json_repair,
            request=_without_attachment_bytes(request),
            cache=CacheInfo(hit=False, key=cache_key) if cache_key is not None else None,
            batch=record,
        )


def _replicated(llm: BaseLlm, config: AgentConfig) -> BaseLlm:
    """``llm`` served by ``config.replicas`` Ray actors (its ``num_gpus`` each, else the runtime's need)."""
    from llm_abstractions.local import LocalLlm
    from llm_abstractions.ray_replicas import ReplicaSettings, ReplicatedLlm

    gpus = config.num_gpus
    if gpus is None:
        gpus = llm.gpus_per_replica if isinstance(llm, LocalLlm) else 0
    return ReplicatedLlm(llm, ReplicaSettings(config.replicas, gpus, config.max_restarts))


def _without_attachment_bytes(messages: list[Message] | None) -> list[Message] | None:
    """``messages`` with each attachment as its reference (no bytes): results go to events, the store, listeners."""
    if messages is None or not any(m.attachments for m in messages):
        return messages
    return [m.model_copy(update={"attachments": tuple(a.reference for a in m.attachments)}) for m in messages]


async def _call(
    chain: CallChain,
    task: CompiledTask,
    options: GenerationOptions,
    attempts: list[AttemptRecord],
    messages: Sequence[Message],
) -> LlmResponse:
    """One answer of ``task``'s chain; an answer cut off by ``max_tokens`` fails unless the task accepts it."""
    response = await chain.call(messages, options, attempts)
    if response.finish_reason == "length" and (not response.text.strip() or task.task.fails_when_truncated):
        what = "empty: the model spent its max_tokens before answering" if not response.text.strip() else "cut off"
        raise OutputTruncatedError(
            f"the answer was {what} (finish_reason: length); raise max_tokens"
            + ("" if not response.text.strip() else " or set on_truncated: accept"),
            provider=response.provider,
            partial_text=response.text or None,
            usage=response.usage,
        )
    return response

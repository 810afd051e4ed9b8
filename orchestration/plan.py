"""``orchestrate plan``: what a run would do and what it would cost, without calling any model.

Tasks are planned in dependency order. Each one is ``kept`` (``--resume``: a success of the run being resumed
that would not rerun), ``cache`` (its request, rendered exactly, has an answer in the answer cache) or ``call``.
Its request is rendered with the outputs its templates read: kept and cached answers as they are, and for tasks
that would be called a stand-in of the expected length (the plan then says ``estimated``). Input tokens are
counted with the model's tokenizer where one is available offline (:mod:`llm_abstractions.tokens`), else
estimated; with ``count_tokens`` (``--count-tokens``) by the provider's free token-counting endpoint where it has one
(Anthropic's ``messages.count_tokens``, Gemini's ``models.count_tokens``: exact, images and PDFs included; OpenAI has
none, its offline tokenizer is exact already): the only requests a plan ever sends, and only when asked. Output
tokens are a range: the median and 90th percentile of the task's past answers in the store
(else its agent's), capped by ``max_tokens``; without history, ``max_tokens`` itself. Costs are priced with
genai-prices; a model without a known price has none. A task that would go by batch (:mod:`orchestration.batching`)
is priced at batch prices, and says how long its answer may take: from the collection window to the provider's
batch window (or ``max_wait_s``, when shorter).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llm_abstractions import LlmError, Message, Usage
from llm_abstractions.batch import BatchLlm
from llm_abstractions.pricing import cost_usd
from llm_abstractions.tokens import count_input_tokens
from orchestration.answer_cache import CacheMode, mode_of, request_key, sample_indices
from orchestration.budget import attachment_tokens
from orchestration.executor import TaskExecutor
from orchestration.models import ExecutionResult, ExecutionStatus, MappedResult, OutputFormat
from orchestration.project import CompiledTask, Project
from orchestration.templates import TemplateError

if TYPE_CHECKING:
    from orchestration.store import RunStore

__all__ = ["RunPlan", "TaskPlan", "plan_run"]

Action = Literal["call", "cache", "kept"]
CountedBy = Literal["provider", "tokenizer", "estimate"]
"""Who counted a task's input tokens: the provider's counting endpoint, the model's tokenizer offline, or an
estimate."""
Range = tuple[float, float]

_STAND_IN_WORD = " lorem"
"""Stands in for an output that does not exist yet: about one token per word."""


@dataclass
class TaskPlan:
    agent: str
    action: Action
    input_tokens: int | None = None
    output_tokens: tuple[int, int] | None = None
    cost_usd: Range | None = None
    estimated: bool = False
    """The input tokens are an estimate (no tokenizer, or upstream outputs that do not exist yet)."""
    counted_by: CountedBy | None = None
    notes: list[str] = field(default_factory=list)
    calls: int = 1
    """Calls the task makes (a mapped task's: one per item to run); tokens and cost are theirs together."""
    batch_wait_s: Range | None = None
    """For a task that would go by batch: how long its answer may take, at least and at most (seconds)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "action": self.action,
            "input_tokens": self.input_tokens,
            "output_tokens": list(self.output_tokens) if self.output_tokens is not None else None,
            "cost_usd": list(self.cost_usd) if self.cost_usd is not None else None,
            "estimated": self.estimated,
            "input_counted_by": self.counted_by,
            "notes": self.notes,
            "calls": self.calls,
            "batch": {"wait_s": list(self.batch_wait_s)} if self.batch_wait_s is not None else None,
        }


@dataclass
class Totals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: tuple[int, int] = (0, 0)
    cost_usd: Range = (0.0, 0.0)
    unpriced: int = 0
    """Calls whose cost is unknown (not in the totals)."""

    def add(self, plan: TaskPlan) -> None:
        if plan.action != "call":
            return
        self.calls += plan.calls
        self.input_tokens += plan.input_tokens or 0
        if plan.output_tokens is not None:
            self.output_tokens = (
                self.output_tokens[0] + plan.output_tokens[0],
                self.output_tokens[1] + plan.output_tokens[1],
            )
        if plan.cost_usd is None:
            self.unpriced += plan.calls
        else:
            self.cost_usd = (self.cost_usd[0] + plan.cost_usd[0], self.cost_usd[1] + plan.cost_usd[1])

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": list(self.output_tokens),
            "cost_usd": list(self.cost_usd),
            "unpriced_calls": self.unpriced,
        }


@dataclass
class RunPlan:
    tasks: dict[str, TaskPlan]

    @property
    def providers_contacted(self) -> bool:
        """Whether a provider's token-counting endpoint was asked (``--count-tokens``); no model is ever called."""
        return any(plan.counted_by == "provider" for plan in self.tasks.values())

    def totals(self) -> tuple[Totals, dict[str, Totals]]:
        """The run's totals and each agent's."""
        total, per_agent = Totals(), dict[str, Totals]()
        for plan in self.tasks.values():
            total.add(plan)
            per_agent.setdefault(plan.agent, Totals()).add(plan)
        return total, per_agent

    def to_json(self) -> dict[str, Any]:
        total, per_agent = self.totals()
        return {
            "tasks": {task_id: plan.to_json() for task_id, plan in self.tasks.items()},
            "total": total.to_json(),
            "agents": {agent: totals.to_json() for agent, totals in sorted(per_agent.items())},
            "providers_contacted": self.providers_contacted,
        }


async def plan_run(
    project: Project,
    store: RunStore | None,
    *,
    kept: Mapping[str, ExecutionResult] | None = None,
    cache_override: CacheMode | None = None,
    count_tokens: bool = False,
) -> RunPlan:
    """Plan ``project``: ``kept`` are the results a resume would keep; ``store`` gives the answer cache and the
    history of output tokens; ``count_tokens``: ask the providers' free token-counting endpoints."""
    kept = kept or {}
    history: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
    fingerprints: list[str] = []
    reader = None
    if store is not None and store.path.exists():
        from orchestration.store import fingerprints as task_fingerprints

        history = store.output_tokens(project.name)
        fingerprints = task_fingerprints(project)
        reader = store.answer_reader()
    samples = sample_indices(project)
    executor = TaskExecutor(project.registry)
    outputs: dict[str, ExecutionResult] = {}
    exact: set[str] = set()
    """Tasks whose output the plan knows (kept or cached): their dependents render exactly."""
    plans: dict[str, TaskPlan] = {}
    try:
        for task in project.in_dependency_order():
            if task.id in kept:
                plans[task.id] = TaskPlan(agent=task.agent, action="kept")
                outputs[task.id] = kept[task.id]
                exact.add(task.id)
                continue
            by_task = history[0].get(fingerprints[task.index], []) if fingerprints else []
            expected = _output_range(task, project, by_task or history[1].get(task.agent, []))
            upstream_known = all(project.tasks[p].id in exact for p in task.parents)
            if task.fan_out is not None:  # a mapped task: its items' calls, from its first item's request
                plans[task.id], outputs[task.id] = await _plan_mapped(
                    task, project, executor, outputs, expected, kept, count_tokens
                )
                continue
            plan = await _plan_call(task, project, executor, outputs, expected, upstream_known, count_tokens)
            llm = executor.llm_for(task.agent)
            mode = mode_of(task, project, cache_override)
            if reader is not None and upstream_known and mode.reads and llm.cacheable and plan.input_tokens is not None:
                messages = executor.messages_for(task, project.inputs, outputs)
                hit = reader(request_key(project.registry, task, messages, task.options, samples[task.index]))
                if hit is not None:
                    plans[task.id] = TaskPlan(agent=task.agent, action="cache", input_tokens=plan.input_tokens)
                    outputs[task.id] = _answer(task, hit.answer.get("output"))
                    exact.add(task.id)
                    continue
            plans[task.id] = plan
            outputs[task.id] = _answer(task, _stand_in(expected))
    finally:
        if reader is not None:
            reader.close()
        await executor.aclose()
    return RunPlan({task.id: plans[task.id] for task in project.tasks})


async def _plan_call(
    task: CompiledTask,
    project: Project,
    executor: TaskExecutor,
    outputs: Mapping[str, ExecutionResult],
    expected: tuple[int, int] | None,
    upstream_known: bool,
    count_tokens: bool,
) -> TaskPlan:
    agent = project.registry.get(task.agent)
    plan = TaskPlan(agent=task.agent, action="call", output_tokens=expected, estimated=not upstream_known)
    if not upstream_known:
        plan.notes.append("upstream outputs estimated from history")
    try:
        messages = executor.messages_for(task, project.inputs, outputs)
    except TemplateError:  # a stand-in the template cannot read (a field of a json answer)
        plan.notes.append("request estimated from the templates' length")
        plan.estimated = True
        source = len(task.prompt.source) + (len(task.system.source) if task.system else 0)
        plan.input_tokens = source // 4 + 1
        plan.counted_by = "estimate"
    else:
        counted = await _provider_count(executor, task, messages, plan) if count_tokens else None
        if counted is not None:
            plan.input_tokens, plan.counted_by = counted, "provider"
        else:
            _count_offline(plan, agent.agent_type, agent.model, messages)
    llm = executor.llm_for(task.agent)
    if task.batch and isinstance(llm, BatchLlm):
        settings = project.spec.defaults.batch
        plan.batch_wait_s = (settings.window_s, min(settings.max_wait_s, settings.window_s + llm.batch_window_s))
        plan.notes.append("by batch: at batch prices, answered within the provider's batch window")
    pricing = llm.pricing_provider
    if pricing and expected is not None:
        batch = plan.batch_wait_s is not None
        low = cost_usd(
            pricing, agent.model, Usage(input_tokens=plan.input_tokens, output_tokens=expected[0]), batch=batch
        )
        high = cost_usd(
            pricing, agent.model, Usage(input_tokens=plan.input_tokens, output_tokens=expected[1]), batch=batch
        )
        if low is not None and high is not None:
            plan.cost_usd = (low, high)
    return plan


async def _provider_count(
    executor: TaskExecutor, task: CompiledTask, messages: Sequence[Message], plan: TaskPlan
) -> int | None:
    """The input tokens the provider's counting endpoint gives; ``None``: it has none, or it failed (noted)."""
    try:
        return await executor.llm_for(task.agent).count_tokens_async(messages, task.options)
    except LlmError as exc:
        plan.notes.append(f"the provider could not count the tokens ({exc.type_name}): {exc.message}")
        return None


def _count_offline(plan: TaskPlan, provider: str, model: str | None, messages: Sequence[Message]) -> None:
    count = count_input_tokens(provider, model, messages)
    plan.input_tokens, plan.counted_by = count.tokens, "tokenizer" if count.exact else "estimate"
    if not count.exact:
        plan.estimated = True
        plan.notes.append("input tokens estimated (four characters a token)")
    attached = [a for m in messages for a in m.attachments]
    if attached:
        plan.input_tokens += sum(attachment_tokens(a) for a in attached)
        plan.estimated = True
        plan.notes.append("images and PDFs counted at their upper bound")


async def _plan_mapped(
    task: CompiledTask,
    project: Project,
    executor: TaskExecutor,
    outputs: Mapping[str, ExecutionResult],
    expected: tuple[int, int] | None,
    kept: Mapping[str, ExecutionResult],
    count_tokens: bool,
) -> tuple[TaskPlan, ExecutionResult]:
    """A mapped task's plan (its first item's request, once per item to run; no cache look-up) and a stand-in of
    its own result for downstream templates. Items that come from an answer count as one call."""
    from dataclasses import replace

    from orchestration.fan_out import ItemPrompt
    from orchestration.items import instance_id

    fan = task.fan_out
    assert fan is not None
    items, keys = fan.items, fan.keys
    first = task
    if items and keys is not None:
        variables = {"item": items[0], "index": 0}
        system = ItemPrompt.bind(task.system, variables, {}) if task.system is not None else None
        first = replace(task, prompt=ItemPrompt.bind(task.prompt, variables, {}), system=system)
    plan = await _plan_call(first, project, executor, outputs, expected, True, count_tokens)
    if items is None:
        plan.notes.append(f"mapped over {fan.source}: items known only when it answers; planned as one call")
        count = 1
    else:
        count = sum(1 for key in keys or () if instance_id(task.id, key) not in kept)
        plan.notes.append(f"mapped over {len(items)} items, {count} to run: the first item's request, {count} times")
    plan.calls = count
    if plan.input_tokens is not None:
        plan.input_tokens *= count
    if plan.output_tokens is not None:
        plan.output_tokens = (plan.output_tokens[0] * count, plan.output_tokens[1] * count)
    if plan.cost_usd is not None:
        plan.cost_usd = (plan.cost_usd[0] * count, plan.cost_usd[1] * count)
    stand_in = _stand_in(expected)
    size = len(items) if items is not None else 1
    standing = MappedResult(
        task_id=task.id, status=ExecutionStatus.SUCCESS, outputs=[stand_in] * size, parsed=[None] * size
    )
    return plan, standing


def _output_range(task: CompiledTask, project: Project, past: list[int]) -> tuple[int, int] | None:
    """The median and 90th percentile of ``past`` output tokens, capped by ``max_tokens``; else ``max_tokens``."""
    max_tokens = task.options.max_tokens or project.registry.get(task.agent).options.max_tokens
    if not past:
        return (max_tokens, max_tokens) if max_tokens is not None else None
    ordered = sorted(past)
    median = int(statistics.median(ordered))
    high = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    if max_tokens is not None:
        median, high = min(median, max_tokens), min(high, max_tokens)
    return median, high


def _stand_in(expected: tuple[int, int] | None) -> str:
    return _STAND_IN_WORD * (expected[0] if expected is not None else 0)


def _answer(task: CompiledTask, output: str | None) -> ExecutionResult:
    """An output as downstream templates read it."""
    parsed = None
    if task.task.output_format is OutputFormat.JSON and output is not None:
        import json

        try:
            parsed = json.loads(output)
        except ValueError:
            parsed = None
    return ExecutionResult(task_id=task.id, status=ExecutionStatus.SUCCESS, output=output, parsed=parsed)

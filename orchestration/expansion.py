"""Running mapped tasks (``for_each``): the DAG grows when a mapped task's items are known.

A mapped task ``M`` is two nodes of the scheduler's DAG. Its *expansion node* (after the compiled tasks) waits
for ``M``'s dependencies; when it runs, ``M``'s items are read (a list or an input: read when the project was
validated; an upstream answer: read now) and the DAG grows by one node per item, ``M[key]``
(:meth:`~orchestration.scheduler.DagScheduler.grow`). ``M``'s own node (its compiled index, in state EXPANDED)
waits for all of them, then collects their results into ``M``'s own result (a
:class:`~orchestration.models.MappedResult`: ``items``, and ``outputs``, ``parsed``, ``results`` in item
order); the tasks that depend on ``M`` wait for that node. A per-item dependency (``{task: P, per_item:
true}``) waits for ``P``'s expansion node rather than for all of ``P``, and joins ``P[i]`` to ``M[i]``: item
17's instance of ``M`` starts when item 17's instance of ``P`` ended as ``M``'s trigger rule needs.

Trigger rules and conditions: the expansion node follows ``M``'s trigger rule and reads ``M``'s ``when`` once,
unless the ``when`` reads ``item``, ``index`` or a per-item dependency: then each instance reads it when it is
ready (a false one skips that instance alone). Each instance follows ``M``'s trigger rule over its per-item
dependencies. ``M``'s own node waits for the expansion node and every instance (``all_done``), and
:meth:`FanOutLifecycle.ready` decides how ``M`` ended.

Instances are scheduler nodes (a few list slots each) from the moment their items are known; the
:class:`~orchestration.project.CompiledTask` of an instance (its templates bound to its item) is made when the
instance starts (or is skipped), renders its prompts as it runs, and is dropped once its result is recorded.

Each instance is a task of its own: retried, limited by its agent, recorded in the run store (``M[key]``),
announced in events. Its fingerprint (:func:`instance_fingerprint`) is ``M``'s with its key and item, so a
resumed run keeps the instances whose item is unchanged and runs the others (:func:`plan_items`). ``M``'s own
result is made again in each session from its instances: it is never kept.

``M`` fails when its items (or its ``when``) cannot be read, or once its instances ended with one failed (the
others go on); it is skipped when it did not expand (its condition was false, or a dependency did not succeed) or
when an instance did not run because something upstream failed; instances skipped by their own condition leave it
a success. Its dependents then follow their trigger rules.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from llm_abstractions import ErrorType, redact
from orchestration.events import EventKind, RunEvent
from orchestration.fan_out import FanOut, ItemPrompt
from orchestration.items import Instance, ItemsError, instance_id
from orchestration.lifecycle import Execute, TaskLifecycle, TaskState
from orchestration.models import (
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    MappedResult,
    OutputFormat,
    TriggerRule,
    utc_now,
)
from orchestration.project import CompiledTask, Project
from orchestration.scheduler import Outcome
from orchestration.templates import TemplateError

if TYPE_CHECKING:
    from orchestration.scheduler import DagScheduler
    from orchestration.store.resume import ResumePlan
    from orchestration.store.run_store import StoredRun

__all__ = ["FanOutLifecycle", "instance_fingerprint", "plan_items", "scheduler_graph"]

_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)


def instance_fingerprint(task_print: str, key: str, item: Any, index: int | None) -> str:
    """The fingerprint of an instance: its mapped task's, its key and its item (and its index, when the task's
    templates read it)."""
    text = _ENCODER.encode([task_print, key, item] if index is None else [task_print, key, item, index])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def scheduler_graph(
    project: Project, groups: Sequence[int], durations: Sequence[float | None] | None
) -> tuple[list[list[int]], list[int], list[float | None] | None, list[TriggerRule], int]:
    """The scheduler's DAG of a project with mapped tasks: its children, groups, known durations, trigger rules,
    and the group of the mapped tasks' own nodes and expansion nodes.

    Nodes ``0..n-1`` are the tasks (a mapped task's node collects its instances), then one expansion node per
    mapped task (in :attr:`Project.mapped` order). A dependency on a mapped task waits for its node; a mapped
    task's expansion node waits for its dependencies (a per-item one: for that task's expansion node) and follows
    the mapped task's trigger rule; the mapped task's own node waits for its expansion node and all its instances
    to end (``all_done``), then the lifecycle decides how it ended (see :meth:`FanOutLifecycle.ready`). Mapped
    tasks' own nodes and expansion nodes make a group of their own (their work is a few list operations: the
    scheduler does not time them, see ``untimed``, so a project of one agent keeps its ranks static).
    """
    tasks, mapped = project.tasks, project.mapped
    n = len(tasks)
    expansion = {task.index: n + offset for offset, task in enumerate(mapped)}
    own_group = max(groups, default=-1) + 1
    children: list[list[int]] = []
    per_item_children: dict[int, list[int]] = {}
    for task in tasks:
        kids = []
        for child in task.children:
            fan = tasks[child].fan_out
            if fan is not None and task.index in fan.per_item:
                per_item_children.setdefault(task.index, []).append(expansion[child])
            else:
                kids.append(expansion.get(child, child))
        children.append(kids)
    children.extend([task.index, *per_item_children.get(task.index, [])] for task in mapped)
    all_groups = [own_group if index in expansion else group for index, group in enumerate(groups)]
    all_groups.extend([own_group] * len(mapped))
    known = None
    if durations is not None:
        known = [None if index in expansion else d for index, d in enumerate(durations)]
        known.extend([None] * len(mapped))
    triggers = [TriggerRule.ALL_DONE if task.index in expansion else task.trigger for task in tasks]
    triggers.extend(task.trigger for task in mapped)
    return children, all_groups, known, triggers, own_group


@dataclass(eq=False)
class _Map:
    """One mapped task in a run."""

    task: int
    """Its node: the mapped task's own (its compiled index)."""
    node: int
    """Its expansion node."""
    fan_out: FanOut
    first: int = -1
    """The node of its first instance (once expanded)."""
    items: list[Any] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    """Its instances' ids, in item order."""
    started_at: datetime | None = None
    error: ErrorInfo | None = None
    """Why its items could not be read (or its condition could not be evaluated)."""
    not_run: tuple[ErrorType, str] | None = None
    """Why the mapped task did not expand, when its expansion node did not run: its condition was false, or a
    dependency did not succeed."""
    when_per_item: bool = False
    """Whether each instance reads the task's ``when`` (it reads ``item``, ``index`` or a per-item dependency); else
    it is read once, before the items."""
    templates: tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]] | None = None
    """What its instances' templates copy of the task's (:meth:`ItemPrompt.fields_of`), and what its instances'
    tasks copy of the task's (:func:`_init_fields`), once one was made."""


class FanOutLifecycle(TaskLifecycle):
    """The lifecycle of a run with mapped tasks: the tasks', the expansion nodes' and the instances' states.

    Instances are nodes after the tasks and expansion nodes (see :func:`scheduler_graph`); their states follow
    the task lifecycle (``kept`` instances start as SUCCESS). Expansion nodes are not tasks: no result, no
    event; their states are set here directly. :meth:`attach` gives it the run's scheduler.
    """

    def __init__(
        self,
        project: Project,
        run_id: str,
        tasks: Sequence[CompiledTask],
        execute: Execute,
        *,
        kept: Mapping[str, ExecutionResult] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(run_id, tasks, execute, kept=kept, **kwargs)
        self.project = project
        self.scheduler: DagScheduler | None = None
        """The run's scheduler, which grows as mapped tasks expand (see :meth:`attach`)."""
        self._kept = kept or {}
        n = len(project.tasks)
        self._maps = [
            _Map(task.index, n + offset, task.fan_out) for offset, task in enumerate(project.mapped) if task.fan_out
        ]
        self._map_of = {m.task: m for m in self._maps}
        for mapped in self._maps:
            mapped.when_per_item = _when_per_item(project.tasks[mapped.task], project)
        self._first_instance = n + len(self._maps)
        self._states.extend([TaskState.BLOCKED] * len(self._maps))
        self._prints: list[str | None] = [*self._fingerprints, *[None] * (len(self._states) - len(self._fingerprints))]
        self._fingerprints = self._prints
        self._nodes: list[CompiledTask] = [*tasks, *(project.tasks[m.task] for m in self._maps)]
        """Each node's task, as :class:`TaskLifecycle` reads it: an expansion node's is its mapped task; an
        instance's is made when it starts or is skipped (see :meth:`_made`), its mapped task until then."""
        self.tasks = self._nodes
        self._firsts: list[int] = []
        self._expanded: list[_Map] = []
        """Maps expanded so far and their first nodes, in node order (an instance's map: a bisection)."""
        self._groups: Sequence[int] = ()

    def attach(self, scheduler: DagScheduler, groups: Sequence[int]) -> None:
        """Grow ``scheduler`` as mapped tasks expand; ``groups``: each task's scheduler group (its agent's), which
        its instances join."""
        self.scheduler, self._groups = scheduler, groups

    # -- the scheduler's view ---------------------------------------------------------------

    def is_blocked(self, index: int) -> bool:
        state = self._states[index]
        return state is TaskState.BLOCKED or state is TaskState.EXPANDED

    def ready(self, index: int) -> Outcome | None:
        expansion = self._expansion(index)
        if expansion is not None:
            return self._expansion_ready(expansion)
        mapped = self._map_of.get(index)
        if mapped is not None:
            return self._collect(mapped)
        if index < self._first_instance:
            return super().ready(index)
        if not self._map_at(index).when_per_item:  # no condition, or one read before the expansion
            self._move(index, TaskState.READY)
            return None
        self._made(index)  # its condition reads its item
        return super().ready(index)

    def _expansion_ready(self, mapped: _Map) -> Outcome | None:
        """A mapped task's expansion node may run: its condition, unless that reads ``item`` (then each instance
        reads it), decides whether it does; when it does not, the mapped task is skipped once its node is ready."""
        condition = self.project.tasks[mapped.task].condition
        if condition is not None and not mapped.when_per_item:
            try:
                holds = condition.holds(self._inputs, self.results)
            except TemplateError as exc:
                mapped.error = ErrorInfo(type=ErrorType.TEMPLATE_ERROR, message=redact(f"when: {exc}"))
                self._states[mapped.node] = TaskState.FAILED
                return Outcome.FAILED
            if not holds:
                mapped.not_run = (ErrorType.CONDITION_FALSE, f"its condition is false: {condition.source}")
                self._states[mapped.node] = TaskState.SKIPPED
                return Outcome.SKIPPED
        self._states[mapped.node] = TaskState.READY
        return None

    def _collect(self, mapped: _Map) -> Outcome | None:
        """The mapped task's node is ready: its expansion node and every instance ended. ``None`` when it expanded
        and none of its instances failed (:meth:`run` collects their results); else it is settled now: FAILED when
        its items could not be read or an instance failed (``items_failed``), SKIPPED when it did not expand or an
        instance did not run because something upstream failed (outcome FAILED then: its dependents see a
        failure)."""
        state, outcome, error = TaskState.SKIPPED, Outcome.FAILED, mapped.error
        if error is not None:
            state = TaskState.FAILED
        elif self._states[mapped.task] is not TaskState.EXPANDED:
            error_type, message = mapped.not_run or (ErrorType.UPSTREAM_FAILED, "a dependency did not succeed")
            error = ErrorInfo(type=error_type, message=message)
            if error_type != ErrorType.UPSTREAM_FAILED:
                outcome = Outcome.SKIPPED
        else:
            error = self._instances_error(mapped)
            if error is None:
                return None
            if error.type == ErrorType.ITEMS_FAILED:
                state = TaskState.FAILED
        task = self.project.tasks[mapped.task]
        self._settle(mapped.task, state, self._mapped_result(mapped, task, ExecutionStatus(state.value), error))
        return outcome

    def _instances_error(self, mapped: _Map) -> ErrorInfo | None:
        """Why the instances of ``mapped`` (all ended) do not make a success: the first that failed, else the first
        skipped because something upstream failed; ``None``: they succeeded or were skipped by conditions."""
        unrun: int | None = None
        states = self._states
        for node in range(mapped.first, mapped.first + len(mapped.ids)):
            state = states[node]
            if state is TaskState.FAILED:
                return ErrorInfo(
                    type=ErrorType.ITEMS_FAILED, message=f"item '{self.node_id(node)}' failed{self._why(node)}"
                )
            if unrun is None and state is TaskState.SKIPPED and not self._branch_skipped(node):
                unrun = node
        if unrun is None:
            return None
        return ErrorInfo(
            type=ErrorType.UPSTREAM_FAILED, message=f"item '{self.node_id(unrun)}' did not run{self._why(unrun)}"
        )

    def _why(self, node: int) -> str:
        result = self.results.get(self.node_id(node))
        return f": {result.error.message}" if result is not None and result.error is not None else ""

    def skip(self, index: int, cause: int) -> None:
        expansion = self._expansion(index)
        if expansion is not None:  # the mapped task's node follows it (see _collect)
            self._states[index] = TaskState.SKIPPED
            if self._branch_skipped(cause):
                message = f"dependency '{self.node_id(cause)}' was skipped (its condition is false)"
                expansion.not_run = (ErrorType.UPSTREAM_SKIPPED, message)
            else:
                expansion.not_run = (ErrorType.UPSTREAM_FAILED, f"dependency '{self.node_id(cause)}' did not succeed")
            return
        if index >= self._first_instance:
            self._made(index)
        super().skip(index, cause)

    async def run(self, index: int) -> bool:
        expansion = self._expansion(index)
        if expansion is not None:
            expanded = self._expand(expansion)
            # the workers that start or wake for the new instances begin on the next turn of the loop: this one
            # joins them there, so that their writes share group commits (see orchestration.store.writer)
            await anyio.lowlevel.checkpoint()
            return expanded
        mapped = self._map_of.get(index)
        if mapped is not None and self._states[index] is TaskState.EXPANDED:
            task = self.project.tasks[index]
            result = self._mapped_result(mapped, task, ExecutionStatus.SUCCESS)
            self._settle(index, TaskState.SUCCESS, result)
            return True
        if index < self._first_instance:
            return await super().run(index)
        self._made(index)
        try:
            return await super().run(index)
        finally:  # its result is recorded: its task (templates bound to its item) is made again if ever needed
            self._nodes[index] = self.project.tasks[self._map_at(index).task]
            self._prints[index] = None

    def cancel_unfinished(self) -> None:
        for mapped in self._maps:
            if not self._states[mapped.node].final:
                self._states[mapped.node] = TaskState.CANCELLED
            if not self._states[mapped.task].final:
                task = self.project.tasks[mapped.task]
                message = "the run was cancelled before this task's instances finished"
                error = ErrorInfo(type=ErrorType.CANCELLED, message=message)
                self._settle(mapped.task, TaskState.CANCELLED, self._mapped_result(mapped, task, "cancelled", error))
        for node in range(self._first_instance, len(self._states)):
            if not self._states[node].final:
                self._made(node)
        super().cancel_unfinished()

    # -- mapped tasks --------------------------------------------------------------------

    def _expansion(self, node: int) -> _Map | None:
        """The map whose expansion node ``node`` is, if it is one."""
        offset = node - len(self.project.tasks)
        return self._maps[offset] if 0 <= offset < len(self._maps) else None

    def _expand(self, mapped: _Map) -> bool:
        """Read the mapped task's items and grow the DAG by one node per item; ``False`` when they cannot be
        read (the mapped task then fails)."""
        scheduler = self.scheduler
        assert scheduler is not None, "FanOutLifecycle.attach(scheduler, groups) before the run"
        task = self.project.tasks[mapped.task]
        inputs = self.project.inputs
        try:
            items = mapped.fan_out.items_of(inputs, self.results)
            keys = mapped.fan_out.keys_of(items, inputs)
        except (ItemsError, TemplateError) as exc:
            mapped.error = ErrorInfo(type=ErrorType.INVALID_ITEMS, message=redact(f"for_each: {exc}"))
            self._states[mapped.node] = TaskState.FAILED
            return False
        mapped.items, mapped.keys = items, keys
        mapped.ids = ids = [instance_id(task.id, key) for key in keys]
        mapped.started_at = utc_now()
        mapped.first = first = scheduler.size
        self._firsts.append(first)
        self._expanded.append(mapped)
        states, kept = self._states, self._kept
        parent_maps = [self._map_of[parent] for parent in mapped.fan_out.per_item]
        parents: list[list[int]] = []
        to_run = 0
        for position, node_id in enumerate(ids):
            if node_id in kept:
                states.append(TaskState.SUCCESS)
                parents.append([])
                continue
            states.append(TaskState.BLOCKED)
            to_run += 1
            parents.append([m.first + position for m in parent_maps if position < len(m.ids)])
        self._prints.extend([None] * len(ids))
        self._nodes.extend([task] * len(ids))
        self._index.update(zip(ids, range(first, first + len(ids)), strict=True))  # for batched(): by instance id
        self._move(mapped.task, TaskState.EXPANDED)
        if self._events.active:
            self._events.emit(RunEvent(EventKind.TASK_EXPANDED, self.run_id, task.id, task.agent, items=to_run))
        collector = [mapped.task]  # shared: the scheduler copies a node's list before adding to it
        scheduler.grow([collector] * len(ids), parents, self._groups[mapped.task], task.trigger)
        self._states[mapped.node] = TaskState.SUCCESS
        return True

    def _mapped_result(
        self,
        mapped: _Map,
        task: CompiledTask,
        status: ExecutionStatus | str,
        error: ErrorInfo | None = None,
    ) -> MappedResult:
        """The mapped task's own result: its instances' ids, and their outputs when they all succeeded."""
        now = utc_now()
        ids = mapped.ids if mapped.first >= 0 else None
        ended = ids is not None and all(i in self.results for i in ids)  # each instance's result, once they ended
        results = [self.results[i] for i in ids] if ids is not None and ended else []
        json_task = task.task.output_format is OutputFormat.JSON
        return MappedResult(
            task_id=task.id,
            status=ExecutionStatus(status),
            agent=task.agent,
            error=error,
            started_at=mapped.started_at,
            completed_at=now,
            duration_s=(now - mapped.started_at).total_seconds() if mapped.started_at is not None else None,
            metadata=task.task.metadata,
            items=ids,
            outputs=[r.output for r in results],
            parsed=[r.parsed for r in results] if json_task else None,
            results=results,
        )

    # -- instances ---------------------------------------------------------------------------

    def node_id(self, node: int) -> str:
        """The id a node stands for: a task's, an instance's, or (an expansion node) its mapped task's."""
        if node >= self._first_instance:
            mapped = self._map_at(node)
            return mapped.ids[node - mapped.first]
        return self._nodes[node].id

    def _map_at(self, node: int) -> _Map:
        """The map an instance node belongs to."""
        return self._expanded[bisect_right(self._firsts, node) - 1]

    def _made(self, node: int) -> CompiledTask:
        """Make the task of an instance (unless it is made): the mapped task with its templates bound to the item
        (and to the instances of the same item of its per-item dependencies), and its fingerprint."""
        mapped = self._map_at(node)
        position = node - mapped.first
        node_id = mapped.ids[position]
        made = self._nodes[node]
        if made.id == node_id:
            return made
        base = self.project.tasks[mapped.task]
        item, key = mapped.items[position], mapped.keys[position]
        variables = {"item": item, "index": position}
        per_item = {}
        for parent in mapped.fan_out.per_item:
            parent_map = self._map_of[parent]
            if position < len(parent_map.ids):
                per_item[self.project.tasks[parent].id] = parent_map.ids[position]
        if mapped.templates is None:
            system_fields = ItemPrompt.fields_of(base.system) if base.system is not None else None
            mapped.templates = (ItemPrompt.fields_of(base.prompt), system_fields, _init_fields(base))
        prompt_fields, system_fields, task_fields = mapped.templates
        prompt = ItemPrompt.bind(prompt_fields, variables, per_item)
        system = ItemPrompt.bind(system_fields, variables, per_item) if system_fields is not None else None
        made = CompiledTask(  # dataclasses.replace, without reading every field of the task again
            **{
                **task_fields,
                "prompt": prompt,
                "system": system,
                "fan_out": None,
                "instance": Instance(position, key, item),
                "per_item": per_item or None,
                # a condition that does not read the item was read once, before the expansion
                "condition": base.condition if mapped.when_per_item else None,
            }
        )
        made.id = node_id
        self._nodes[node] = made
        task_print = self._prints[mapped.task]
        if task_print is not None:
            index = position if mapped.fan_out.reads_index else None
            self._prints[node] = instance_fingerprint(task_print, key, item, index)
        return made

    def ordered(self, results: Mapping[str, ExecutionResult]) -> dict[str, ExecutionResult]:
        """``results`` in the project's task order, each mapped task followed by its instances in item order
        (then any other result, such as kept instances of a task that did not expand this time)."""
        ordered: dict[str, ExecutionResult] = {}
        for task in self.project.tasks:
            ordered[task.id] = results[task.id]
            mapped = self._map_of.get(task.index)
            if mapped is not None:
                for node_id in mapped.ids:
                    if node_id in results:
                        ordered[node_id] = results[node_id]
        if len(ordered) < len(results):
            ordered.update((node_id, r) for node_id, r in results.items() if node_id not in ordered)
        return ordered


def _init_fields(task: CompiledTask) -> dict[str, Any]:
    """What :class:`CompiledTask` is made of (its fields set by its constructor), as ``task`` has them."""
    return {f.name: getattr(task, f.name) for f in fields(CompiledTask) if f.init}


def _when_per_item(task: CompiledTask, project: Project) -> bool:
    """Whether ``task``'s ``when`` reads what differs per instance: ``item``, ``index``, a per-item dependency."""
    condition = task.condition
    if condition is None or condition.template is None:
        return False
    if condition.reads_item:
        return True
    assert task.fan_out is not None
    return any(project.tasks[parent].id in condition.template.task_refs for parent in task.fan_out.per_item)


def plan_items(project: Project, stored: StoredRun, prints: Sequence[str], plan: ResumePlan, invalid: set[int]) -> None:
    """The resume plan of mapped tasks: an instance is kept when it succeeded, its mapped task is not rerun as a
    whole (``invalid``: changed, or downstream of a change), its fingerprint (its item) is unchanged, and its
    per-item dependencies' instances are kept. A mapped task any of whose instances is not kept, or whose
    instances are not those of the stored run, makes its dependents rerun (added to ``invalid`` and to the
    plan's ``downstream``; changed instances go to its ``changed``)."""
    tasks = project.tasks
    seen: dict[str, ExecutionResult] = {}
    """What sources read: results kept so far (and mapped tasks whose instances are all kept)."""
    instances: dict[int, list[str]] = {}
    for task in project.in_dependency_order():
        if task.index in invalid:
            continue
        entry = stored.tasks.get(task.id)
        fan = task.fan_out
        if fan is None:
            if entry is not None and entry.result.succeeded:
                seen[task.id] = entry.result
            continue
        kept = _kept_instances(task, fan, project.inputs, stored, prints, plan, seen, instances)
        if kept is not None and entry is not None and entry.result.succeeded and entry.result.items == list(kept):
            results = list(kept.values())
            json_task = task.task.output_format is OutputFormat.JSON
            seen[task.id] = MappedResult(
                task_id=task.id,
                status=ExecutionStatus.SUCCESS,
                items=list(kept),
                outputs=[r.output for r in results],
                parsed=[r.parsed for r in results] if json_task else None,
                results=results,
            )
            continue
        stack = [c for c in task.children if not _per_item(tasks[c], task.index)]
        while stack:  # its dependents rerun (those per item are planned instance by instance)
            node = stack.pop()
            if node in invalid:
                continue
            invalid.add(node)
            downstream = stored.tasks.get(tasks[node].id)
            if downstream is not None and downstream.result.succeeded:
                plan.downstream.append(tasks[node].id)
            stack.extend(tasks[node].children)


def _kept_instances(
    task: CompiledTask,
    fan: FanOut,
    inputs: Mapping[str, Any],
    stored: StoredRun,
    prints: Sequence[str],
    plan: ResumePlan,
    seen: Mapping[str, ExecutionResult],
    instances: dict[int, list[str]],
) -> dict[str, ExecutionResult] | None:
    """Add the instances of ``task`` a resume keeps to ``plan`` (and their ids, in item order, to ``instances``);
    all of them by id in item order when every instance is kept, else ``None``."""
    try:
        items = fan.items_of(inputs, seen)
        keys = fan.keys_of(items, inputs)
    except (ItemsError, TemplateError):
        return None
    ids = instances[task.index] = [instance_id(task.id, key) for key in keys]
    parents = [instances.get(parent, []) for parent in fan.per_item]
    every: dict[str, ExecutionResult] | None = {}
    for position, (item, key, node_id) in enumerate(zip(items, keys, ids, strict=True)):
        entry = stored.tasks.get(node_id)
        if entry is None or not entry.result.succeeded:
            every = None
            continue
        expected = instance_fingerprint(prints[task.index], key, item, position if fan.reads_index else None)
        if entry.fingerprint != expected:
            plan.changed.append(node_id)
            every = None
        elif all(position < len(parent) and parent[position] in plan.kept for parent in parents):
            plan.kept[node_id] = entry.result
            if every is not None:
                every[node_id] = entry.result
        else:  # its instance of a per-item dependency runs again
            every = None
    return every


def _per_item(child: CompiledTask, parent: int) -> bool:
    return child.fan_out is not None and parent in child.fan_out.per_item

"""A validated, compiled project: tasks indexed, templates parsed, graph checked, ranks computed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_registry import AgentConfigError, AgentRegistry, StructuredFile, UnknownAgentError
from llm_abstractions import BaseLlm, GenerationOptions
from llm_abstractions.structured import schema_problem
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.models import AgentTask, OutputFormat, ProjectSpec
from orchestration.templates import PromptTemplate, TemplateError

__all__ = ["CompiledTask", "Project", "compile_project"]


@dataclass(slots=True)
class CompiledTask:
    """A task ready for the scheduler: resolved agent, templates, limits, graph edges."""

    task: AgentTask
    index: int
    agent: str
    prompt: PromptTemplate
    system: PromptTemplate | None
    options: GenerationOptions
    """Per-call options over the agent's defaults: the task's options and its output schema."""
    retries: int
    timeout_s: float | None
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    id: str = field(init=False)
    """The task's id (read on every step of a run: a slot, not a property)."""

    def __post_init__(self) -> None:
        self.id = self.task.id


@dataclass
class Project:
    """A project that passed validation."""

    spec: ProjectSpec
    registry: AgentRegistry
    """The project's own agents (and model instances), layered over the registry it was compiled against."""
    tasks: list[CompiledTask]
    index: dict[str, int]
    inputs: dict[str, Any]
    file: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def task(self, task_id: str) -> CompiledTask:
        return self.tasks[self.index[task_id]]

    def used_agents(self) -> set[str]:
        """Agents the tasks name, and their fallbacks, transitively."""
        used: set[str] = set()
        pending = [t.agent for t in self.tasks]
        while pending:
            name = pending.pop()
            if name in used or name not in self.registry:
                continue
            used.add(name)
            pending.extend(self.registry.get(name).fallbacks)
        return used


class _Issues:
    def __init__(self, source: StructuredFile | None) -> None:
        self.source = source
        self.items: list[ValidationIssue] = []
        self._positions: dict[str, int] = {}

    def set_positions(self, tasks: Sequence[AgentTask]) -> None:
        for position, task in enumerate(tasks):
            self._positions.setdefault(task.id, position)

    def add(
        self,
        message: str,
        task: str | None = None,
        field: str | None = None,
        agent: str | None = None,
        position: int | None = None,
    ) -> None:
        """Record an issue; ``position`` (index in the file's task list) defaults to the task's first entry."""
        line = None
        if position is None and task is not None:
            position = self._positions.get(task)
        if self.source is not None:
            if position is not None:
                loc: tuple[str | int, ...] = ("tasks", position)
                line = self.source.line_of((*loc, field) if field else loc)
            elif agent is not None:
                line = self.source.line_of(("agents", agent, field) if field else ("agents", agent))
        self.items.append(ValidationIssue(message, self.source.path if self.source else None, task, agent, field, line))


def _cycle_messages(edges: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """One (first task, "a -> b -> a") per cycle-bearing strongly connected component."""
    import networkx as nx

    graph: nx.DiGraph[str] = nx.DiGraph()
    for child, parents in edges.items():
        graph.add_node(child)
        for parent in parents:
            graph.add_edge(parent, child)
    messages = []
    for component in nx.strongly_connected_components(graph):
        first = next(iter(component))
        if len(component) == 1 and not graph.has_edge(first, first):
            continue
        cycle = nx.find_cycle(graph.subgraph(component), source=min(component))
        path = [edge[0] for edge in cycle] + [cycle[0][0]]
        messages.append((path[0], " -> ".join(path)))
    return sorted(messages)


def _ancestors_of(index: int, tasks: list[CompiledTask]) -> set[int]:
    seen: set[int] = set()
    stack = list(tasks[index].parents)
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(tasks[node].parents)
    return seen


def compile_project(
    spec: ProjectSpec,
    registry: AgentRegistry,
    *,
    inputs: Mapping[str, Any] | None = None,
    source: StructuredFile | None = None,
    check_agents: bool = True,
    llms: Mapping[str, BaseLlm] | None = None,
) -> Project:
    """Validate ``spec`` against ``registry``; raise :class:`ProjectValidationError` listing every issue.

    The spec's agents, then ``llms`` (model instances by agent name, see
    :meth:`AgentRegistry.register_llm_instance`), go into a layer over ``registry``: the
    project's :attr:`Project.registry`. ``registry`` itself is left unchanged.
    """
    issues = _Issues(source)
    issues.set_positions(spec.tasks)
    all_inputs = {**spec.inputs, **(inputs or {})}

    registry = AgentRegistry(parent=registry)  # the project's layer: the given registry stays as it is
    try:
        registry.load_mapping(spec.agents, source, ("agents",))
    except AgentConfigError as exc:
        for issue in exc.issues:
            issues.items.append(
                ValidationIssue(
                    issue.message,
                    issue.source or (source.path if source else None),
                    agent=issue.agent,
                    field=issue.field,
                    line=issue.line,
                )
            )
    for name, llm in (llms or {}).items():
        registry.register_llm_instance(name, llm)
    default_agent = spec.defaults.agent or "offline"

    index: dict[str, int] = {}
    for position, task in enumerate(spec.tasks):
        if task.id in index:
            issues.add("duplicate task id", task.id, "id", position=position)
        else:
            index[task.id] = len(index)

    compiled: list[CompiledTask] = []
    for task in spec.tasks:
        if index.get(task.id) != len(compiled):
            continue  # a later duplicate: already reported
        agent = task.agent or default_agent
        if agent not in registry:
            issues.add(str(UnknownAgentError(agent, registry.names())), task.id, "agent" if task.agent else None)
        if task.output_schema is not None and task.output_format is not OutputFormat.JSON:
            issues.add("output_schema needs output_format: json", task.id, "output_schema")
        elif task.output_schema is not None and (problem := schema_problem(task.output_schema)):
            issues.add(problem, task.id, "output_schema")
        templates: list[PromptTemplate | None] = []
        for field_name, text in (("description", task.description), ("system_prompt", task.system_prompt)):
            if text is None:
                templates.append(None)
                continue
            try:
                template = PromptTemplate.compile(text)
            except TemplateError as exc:
                issues.add(f"template error: {exc}", task.id, field_name)
                template = PromptTemplate(text)
            for name in sorted(template.unknown_names):
                issues.add(f"template uses unknown name '{name}' (use inputs.<key> or tasks.<id>)", task.id, field_name)
            for key in sorted(template.input_refs - all_inputs.keys()):
                issues.add(
                    f"template uses input '{key}', which is neither in 'inputs' nor given with --input",
                    task.id,
                    field_name,
                )
            templates.append(template)
        options = task.options
        if task.output_format is OutputFormat.JSON:
            options = options.model_copy(update={"json_schema": task.output_schema or {"type": "object"}})
        agent_retry = registry.get(agent).retry.retries if agent in registry else None
        retries = next(r for r in (task.retries, agent_retry, spec.defaults.retries) if r is not None)
        prompt, system = templates
        assert prompt is not None
        compiled.append(
            CompiledTask(
                task, len(compiled), agent, prompt, system, options, retries, task.timeout_s or spec.defaults.timeout_s
            )
        )

    for item in compiled:
        for dep in item.task.depends_on:
            parent = index.get(dep)
            if parent is None:
                issues.add(f"depends on unknown task '{dep}'", item.id, "depends_on")
            elif parent == item.index:
                issues.add("depends on itself", item.id, "depends_on")
            elif parent not in item.parents:
                item.parents.append(parent)
                compiled[parent].children.append(item.index)

    if compiled and not _is_acyclic(compiled):
        for first, cycle in _cycle_messages({t.id: [compiled[p].id for p in t.parents] for t in compiled}):
            issues.add(f"dependency cycle: {cycle}", first, "depends_on")

    for item in compiled:
        for compiled_template, field_name in ((item.prompt, "description"), (item.system, "system_prompt")):
            if compiled_template is None or not compiled_template.task_refs:
                continue
            refs = compiled_template.task_refs - {compiled[p].id for p in item.parents}
            if not refs:
                continue
            ancestors = {compiled[a].id for a in _ancestors_of(item.index, compiled)}
            for ref in sorted(refs - ancestors):
                why = "no such task" if ref not in index else "it is not an ancestor (add it to depends_on)"
                issues.add(f"template reads tasks.{ref}: {why}", item.id, field_name)

    used = {t.agent for t in compiled if t.agent in registry}
    for name in sorted(used):
        for fallback in registry.get(name).fallbacks:
            if fallback not in registry:
                issues.add(f"fallback {UnknownAgentError(fallback, registry.names())!s}", agent=name, field="fallbacks")
    project = Project(spec, registry, compiled, index, all_inputs, source.path if source else None)
    if check_agents and not issues.items:
        for name in sorted(project.used_agents()):
            for problem in registry.check(name):
                issues.add(problem, agent=name)
    if issues.items:
        raise ProjectValidationError(issues.items)
    return project


def _is_acyclic(tasks: list[CompiledTask]) -> bool:
    """Kahn's algorithm over the compiled edges (no networkx needed when there is no cycle)."""
    indegree = [len(t.parents) for t in tasks]
    stack = [t.index for t in tasks if not t.parents]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        for child in tasks[node].children:
            indegree[child] -= 1
            if indegree[child] == 0:
                stack.append(child)
    return seen == len(tasks)

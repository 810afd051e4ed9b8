"""A validated, compiled project: tasks indexed, templates parsed, graph checked, ranks computed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_registry import AgentConfigError, AgentRegistry, StructuredFile, UnknownAgentError
from llm_abstractions import BaseLlm, GenerationOptions, LlmConfig, UnknownProviderError, get_llm_class
from llm_abstractions.structured import schema_problem
from orchestration.fan_out import ITEM_NAMES, MAPPED_ATTRIBUTES, FanOut, compile_fan_out, per_item_problems
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.items import Instance
from orchestration.models import AgentTask, Dependency, OutputFormat, ProjectSpec
from orchestration.review import ReviewSpec
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
    review: ReviewSpec | None = None
    """The task's review gate (its own ``review``, else the project's default); ``None``: no gate."""
    fan_out: FanOut | None = None
    """A mapped task's ``for_each`` (see :mod:`orchestration.fan_out`); ``None``: not mapped."""
    instance: Instance | None = None
    """Set on the instances of a mapped task (made at run time): the item each one is for."""
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
    folder: Path = field(default_factory=Path.cwd)
    """The project file's folder (absolute), else the current folder: files of items are read inside it."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mapped(self) -> list[CompiledTask]:
        """The tasks mapped over items (``for_each``)."""
        return [task for task in self.tasks if task.fan_out is not None]

    def task(self, task_id: str) -> CompiledTask:
        return self.tasks[self.index[task_id]]

    def used_agents(self) -> set[str]:
        """Agents the tasks name (as their agent or reviewer), and their fallbacks, transitively."""
        used: set[str] = set()
        pending = [t.agent for t in self.tasks]
        pending.extend(t.review.reviewer for t in self.tasks if t.review is not None and t.review.reviewer)
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
        loc: tuple[str | int, ...] | None = None,
    ) -> None:
        """Record an issue; its line is that of ``loc`` (a location in the file) if given, else of the
        task's entry (``position`` in the file's task list, by default its first) or of the agent."""
        line = None
        if position is None and task is not None:
            position = self._positions.get(task)
        if self.source is not None:
            if loc is not None:
                line = self.source.line_of(loc)
            elif position is not None:
                at: tuple[str | int, ...] = ("tasks", position)
                parts = (int(p) if p.isdigit() else p for p in field.split(".")) if field else ()
                line = self.source.line_of((*at, *parts))
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
    folder: Path | None = None,
) -> Project:
    """Validate ``spec`` against ``registry``; raise :class:`ProjectValidationError` listing every issue.

    The spec's agents, then ``llms`` (model instances by agent name, see
    :meth:`AgentRegistry.register_llm_instance`), go into a layer over ``registry``: the
    project's :attr:`Project.registry`. ``registry`` itself is left unchanged.

    ``folder``: where files of items (``for_each``) are read (default: the source file's folder, else the
    current one).
    """
    if folder is None:
        folder = source.path.parent if source is not None else Path.cwd()
    return _compile(spec, registry, inputs, source, check_agents, llms, folder.absolute())


def _compile(
    spec: ProjectSpec,
    registry: AgentRegistry,
    inputs: Mapping[str, Any] | None,
    source: StructuredFile | None,
    check_agents: bool,
    llms: Mapping[str, BaseLlm] | None,
    folder: Path,
) -> Project:
    issues = _Issues(source)
    issues.set_positions(spec.tasks)
    all_inputs = {**spec.inputs, **(inputs or {})}

    registry = AgentRegistry(parent=registry)  # the project's layer: the given registry stays as it is
    invalid_agents: set[str] = set()  # reported once as invalid: tasks and fallbacks that name them add nothing
    try:
        registry.load_mapping(spec.agents, source, ("agents",))
    except AgentConfigError as exc:
        for issue in exc.issues:
            invalid_agents.add(issue.agent)
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
        invalid_agents.discard(name)
    default_agent = spec.defaults.agent or "offline"
    known = registry.names()
    if default_agent not in registry and default_agent not in invalid_agents:
        if spec.defaults.agent is not None:
            issues.add(str(UnknownAgentError(default_agent, known)), field="defaults.agent", loc=("defaults", "agent"))
        elif any(task.agent is None for task in spec.tasks):
            message = f"tasks without an agent use '{default_agent}', which is not registered: set defaults.agent"
            issues.add(f"{message}; known agents: {', '.join(sorted(known)) or 'none'}", field="defaults.agent")
        invalid_agents.add(default_agent)
    configs = {config.name: config for config in registry.list()}
    reviews = _ReviewChecks(issues, registry, invalid_agents)
    default_review = reviews.checked(spec.defaults.review)
    option_checks = _OptionChecks(registry)

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
        config = configs.get(agent)
        if config is None and agent not in invalid_agents:
            issues.add(str(UnknownAgentError(agent, known)), task.id, "agent")
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
            unknown = template.unknown_names - ITEM_NAMES if task.for_each is not None else template.unknown_names
            for name in sorted(unknown) if unknown else ():
                hint = (
                    "only a mapped task (for_each) has it" if name in ITEM_NAMES else "use inputs.<key> or tasks.<id>"
                )
                issues.add(f"template uses unknown name '{name}' ({hint})", task.id, field_name)
            for key in sorted(missing) if (missing := template.input_refs - all_inputs.keys()) else ():
                issues.add(
                    f"template uses input '{key}', which is neither in 'inputs' nor given with --input",
                    task.id,
                    field_name,
                )
            templates.append(template)
        options = task.options
        if task.output_format is OutputFormat.JSON:
            options = options.model_copy(update={"json_schema": task.output_schema or {"type": "object"}})
        if config is not None:
            for problem in option_checks.problems(agent, options):
                issues.add(problem, task.id, "options")
        agent_retry = config.retry.retries if config is not None else None
        retries = next(r for r in (task.retries, agent_retry, spec.defaults.retries) if r is not None)
        review = default_review if task.review is None else reviews.checked(task.review, task)
        prompt, system = templates
        assert prompt is not None
        timeout_s = task.timeout_s or spec.defaults.timeout_s
        compiled.append(CompiledTask(task, len(compiled), agent, prompt, system, options, retries, timeout_s, review))

    for item in compiled:
        linked: set[int] = set()  # a set: a task with 100,000 dependencies is not quadratic
        for dep in item.task.dependency_ids:
            parent = index.get(dep)
            if parent is None:
                issues.add(f"depends on unknown task '{dep}'", item.id, "depends_on")
            elif parent == item.index:
                issues.add("depends on itself", item.id, "depends_on")
            elif parent not in linked:
                linked.add(parent)
                item.parents.append(parent)
                compiled[parent].children.append(item.index)

    if compiled and not _is_acyclic(compiled):
        for first, cycle in _cycle_messages({t.id: [compiled[p].id for p in t.parents] for t in compiled}):
            issues.add(f"dependency cycle: {cycle}", first, "depends_on")
    elif any(_uses_fan_out(task) for task in spec.tasks):
        _fan_outs(compiled, index, all_inputs, folder, issues)

    for item in compiled:
        for compiled_template, field_name in ((item.prompt, "description"), (item.system, "system_prompt")):
            if compiled_template is None or not compiled_template.task_refs:
                continue
            for ref in sorted({ref for ref, attribute in compiled_template.task_attrs if attribute == "parsed"}):
                if ref in index and compiled[index[ref]].task.output_format is not OutputFormat.JSON:
                    issues.add(
                        f"template reads tasks.{ref}.parsed, but '{ref}' is a text task: parsed is set only for "
                        f"output_format: json (read tasks.{ref}.output, or make '{ref}' a json task)",
                        item.id,
                        field_name,
                    )
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
            if fallback not in registry and fallback not in invalid_agents:
                issues.add(f"fallback {UnknownAgentError(fallback, known)!s}", agent=name, field="fallbacks")
    project = Project(spec, registry, compiled, index, all_inputs, source.path if source else None, folder)
    if check_agents and not issues.items:
        for name in sorted(project.used_agents()):
            for problem in registry.check(name):
                issues.add(problem, agent=name)
    if issues.items:
        raise ProjectValidationError(issues.items)
    return project


def _uses_fan_out(task: AgentTask) -> bool:
    """Whether ``task`` sets anything of ``for_each`` (its own, or a per-item dependency)."""
    return task.for_each is not None or task.key is not None or any(isinstance(d, Dependency) for d in task.depends_on)


def _fan_outs(
    compiled: list[CompiledTask], index: dict[str, int], inputs: Mapping[str, Any], folder: Path, issues: _Issues
) -> None:
    """Compile and check each mapped task's ``for_each`` (see :mod:`orchestration.fan_out`), its per-item
    dependencies, and what templates read of mapped tasks (lists: ``outputs``, ``parsed``, ``results``)."""
    files: dict[Path, list[Any]] = {}
    for item in compiled:
        item.fan_out, problems = compile_fan_out(
            item, compiled, index, inputs, folder, lambda at: _ancestors_of(at, compiled), files
        )
        for message, field_name in problems:
            issues.add(message, item.id, field_name)
    for item in compiled:
        for message, field_name in per_item_problems(item, compiled, index):
            issues.add(message, item.id, field_name)
    for item in compiled:
        per_item = {dep.task for dep in item.task.depends_on if isinstance(dep, Dependency) and dep.per_item}
        for template, field_name in ((item.prompt, "description"), (item.system, "system_prompt")):
            for ref, attribute in sorted(template.task_attrs) if template is not None else ():
                read = index.get(ref)
                if read is None:
                    continue
                if ref in per_item:  # a per-item dependency reads as its instance of the item
                    if attribute in MAPPED_ATTRIBUTES - {"parsed"}:
                        issues.add(
                            f"template reads tasks.{ref}.{attribute}, but '{ref}' is a per-item dependency: "
                            f"tasks.{ref} is its instance of this item (read its output or parsed)",
                            item.id,
                            field_name,
                        )
                    continue
                mapped = compiled[read].task.for_each is not None
                if mapped and attribute not in MAPPED_ATTRIBUTES:
                    issues.add(
                        f"template reads tasks.{ref}.{attribute}, but '{ref}' is mapped (for_each): read its "
                        "outputs, parsed or results (lists in item order)",
                        item.id,
                        field_name,
                    )
                elif not mapped and attribute in MAPPED_ATTRIBUTES - {"parsed"}:
                    issues.add(
                        f"template reads tasks.{ref}.{attribute}, but only a mapped task (for_each) has "
                        f"{attribute}: read tasks.{ref}.output",
                        item.id,
                        field_name,
                    )


class _ReviewChecks:
    """Problems of a ``review`` setting (see :meth:`ReviewSpec.problems`) and its reviewer."""

    def __init__(self, issues: _Issues, registry: AgentRegistry, invalid_agents: set[str]) -> None:
        self.issues = issues
        self.registry = registry
        self.invalid_agents = invalid_agents

    def checked(self, review: ReviewSpec | None, task: AgentTask | None = None) -> ReviewSpec | None:
        """Report the problems of ``review``, that of ``task`` or else of the project's defaults; the
        review as the task runs it (``None``: no gate)."""
        if review is None:
            return None
        found = list(review.problems())
        if review.reviewer is not None:
            name = review.reviewer
            if name not in self.registry and name not in self.invalid_agents:
                found.append((("reviewer",), str(UnknownAgentError(name, self.registry.names()))))
        json_task = task is None or task.output_format is OutputFormat.JSON  # the defaults: json tasks use it
        if review.thresholds is not None and review.thresholds.invalid_json and not json_task:
            message = "invalid_json needs output_format: json (a text answer has no schema to fail)"
            found.append((("thresholds", "invalid_json"), message))
        for where, message in found:
            if task is not None:
                self.issues.add(message, task.id, ".".join(("review", *where)))
            else:
                field = ".".join(("defaults", "review", *where))
                self.issues.add(message, field=field, loc=("defaults", "review", *where))
        return review if review.gated else None


class _OptionChecks:
    """The providers' own objections to a task's options (``BaseLlm.option_problems``), per agent."""

    def __init__(self, registry: AgentRegistry) -> None:
        self.registry = registry
        self._agents: dict[str, tuple[type[BaseLlm], LlmConfig, GenerationOptions] | None] = {}

    def problems(self, agent: str, options: GenerationOptions) -> list[str]:
        """What the agent's model would reject in ``options`` applied over the agent's own."""
        if agent not in self._agents:
            self._agents[agent] = self._agent(agent)
        found = self._agents[agent]
        if found is None:
            return []
        cls, config, base = found
        return cls.option_problems(config, base.merged(options))

    def _agent(self, agent: str) -> tuple[type[BaseLlm], LlmConfig, GenerationOptions] | None:
        """The agent's class, config and options; ``None``: its class checks nothing."""
        llm = self.registry.llm_instance(agent)
        if llm is not None:
            cls, config, base = type(llm), llm.config, llm.base_options
        else:
            config = self.registry.get(agent).llm_config()
            try:
                cls = get_llm_class(config.provider)
            except UnknownProviderError:
                return None  # reported with the agent
            base = config.options
        if cls.option_problems.__func__ is BaseLlm.option_problems.__func__:  # type: ignore[attr-defined]
            return None  # the default finds nothing: no need to merge each task's options
        return cls, config, base


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

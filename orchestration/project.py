"""A validated, compiled project: tasks indexed, templates parsed, graph checked, ranks computed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent_registry import AgentConfig, AgentConfigError, AgentRegistry, StructuredFile, UnknownAgentError
from llm_abstractions import BaseLlm, GenerationOptions, LlmConfig, UnknownProviderError, get_llm_class
from llm_abstractions.attachments import Attachment, AttachmentError
from llm_abstractions.batch import supports_batch
from llm_abstractions.structured import schema_problem
from orchestration.attachments import (
    AttachmentRoots,
    AttachmentSlot,
    TaskAttachments,
    load_attachment,
    refused_attachments,
)
from orchestration.code_steps import (
    PYTHON_AGENT,
    CodeStep,
    StepImportError,
    call_ref,
    check_call,
    import_path,
    resolve_call,
)
from orchestration.conditions import Condition
from orchestration.fan_out import MAPPED_ATTRIBUTES, MAPPED_FIELDS, FanOut, PerItem, compile_fan_out, per_item_problems
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.items import Instance
from orchestration.models import AgentTask, Dependency, OutputFormat, ProjectSpec, TriggerRule
from orchestration.output_files import OutputFileError, resolve_output_path
from orchestration.review import GateStage, ReviewSpec
from orchestration.templates import ITEM_NAMES, PromptTemplate, TemplateError, has_template_syntax

__all__ = ["CompiledTask", "Project", "compile_project", "served_on_ray"]


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
    attachments: TaskAttachments | None = None
    """The task's ``attachments``; ``None``: it has none."""
    trigger: TriggerRule = TriggerRule.ALL_SUCCESS
    condition: Condition | None = None
    """The task's ``when``; ``None``: it runs whenever its trigger rule allows."""
    output_file: PromptTemplate | None = None
    """The path template of the task's ``output_file``."""
    step: CodeStep | None = None
    """A code step's function and parameters; ``None`` for a model task."""
    fan_out: FanOut | None = None
    """A mapped task's ``for_each`` (see :mod:`orchestration.fan_out`); ``None``: not mapped."""
    instance: Instance | None = None
    """Set on the instances of a mapped task (made at run time): the item each one is for."""
    per_item: Mapping[str, str] | None = None
    """An instance's per-item dependencies: task id -> the id of its instance of the same item."""
    batch: bool = False
    """Its request goes through its agent's batch API (:mod:`orchestration.batching`)."""
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    id: str = field(init=False)
    """The task's id (read on every step of a run: a slot, not a property)."""

    def __post_init__(self) -> None:
        self.id = self.task.id

    @property
    def variables(self) -> dict[str, Any] | None:
        """The names an instance of a mapped task renders with besides ``inputs`` and ``tasks``: ``item`` and
        ``index`` (``None`` for a task that is not an instance)."""
        instance = self.instance
        return None if instance is None else {"item": instance.item, "index": instance.index}

    def upstream(self, results: Mapping[str, Any]) -> Mapping[str, Any]:
        """``results`` as the task's templates read them: for an instance, a per-item dependency's id gives its
        instance of the same item."""
        return PerItem(results, self.per_item) if self.per_item else results


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
    """Where output files go, code steps' modules are imported from and files of items (``for_each``) are read:
    the project file's folder (absolute), else the current folder."""
    allow_outside: bool = False
    """Whether output files may be written outside :attr:`folder`."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def mapped(self) -> list[CompiledTask]:
        """The tasks mapped over items (``for_each``)."""
        return [task for task in self.tasks if task.fan_out is not None]

    def task(self, task_id: str) -> CompiledTask:
        return self.tasks[self.index[task_id]]

    def in_dependency_order(self) -> list[CompiledTask]:
        """The tasks, each after all of its dependencies (Kahn's algorithm; validation refused cycles)."""
        indegree = [len(t.parents) for t in self.tasks]
        order = [t for t in self.tasks if not t.parents]
        for task in order:  # grows while iterating
            for child in task.children:
                indegree[child] -= 1
                if indegree[child] == 0:
                    order.append(self.tasks[child])
        return order

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
    attachment_dirs: Sequence[Path] = (),
    folder: Path | None = None,
    allow_outside: bool = False,
    on_ray: bool = False,
) -> Project:
    """Validate ``spec`` against ``registry``; raise :class:`ProjectValidationError` listing every issue.

    The spec's agents, then ``llms`` (model instances by agent name, see
    :meth:`AgentRegistry.register_llm_instance`), go into a layer over ``registry``: the
    project's :attr:`Project.registry`. ``registry`` itself is left unchanged.

    ``folder``: where attachment paths start, output files go, files of items (``for_each``) are read and code
    steps' modules are imported from (default: the source file's folder, else the current one); attachments must
    stay in it or in one of ``attachment_dirs``; ``allow_outside``: output files may lead outside it. Code steps'
    functions are imported (their modules' code runs) unless ``check_agents`` is false. ``on_ray``: the run is on
    Ray, so the agents whose calls Ray replicas make (local models, ``remote: true``) are checked here for their
    settings only (a runtime or model files missing on this machine are the replicas' to report).
    """
    if folder is None:
        folder = source.path.parent if source is not None else Path.cwd()
    folder = folder.absolute()
    roots = AttachmentRoots.of(folder, attachment_dirs)
    if any(task.is_step for task in spec.tasks):
        with import_path(folder):
            return _compile(spec, registry, inputs, source, check_agents, llms, roots, folder, allow_outside, on_ray)
    return _compile(spec, registry, inputs, source, check_agents, llms, roots, folder, allow_outside, on_ray)


def _compile(
    spec: ProjectSpec,
    registry: AgentRegistry,
    inputs: Mapping[str, Any] | None,
    source: StructuredFile | None,
    check_agents: bool,
    llms: Mapping[str, BaseLlm] | None,
    roots: AttachmentRoots,
    folder: Path,
    allow_outside: bool,
    on_ray: bool,
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
    if PYTHON_AGENT not in registry and any(task.is_step and task.agent is None for task in spec.tasks):
        registry.register(AgentConfig.model_validate({"name": PYTHON_AGENT, "type": PYTHON_AGENT}))
    default_agent = spec.defaults.agent or "offline"
    known = registry.names()
    if default_agent not in registry and default_agent not in invalid_agents:
        if spec.defaults.agent is not None:
            issues.add(str(UnknownAgentError(default_agent, known)), field="defaults.agent", loc=("defaults", "agent"))
        elif any(task.agent is None and not task.is_step for task in spec.tasks):
            message = f"tasks without an agent use '{default_agent}', which is not registered: set defaults.agent"
            issues.add(f"{message}; known agents: {', '.join(sorted(known)) or 'none'}", field="defaults.agent")
        invalid_agents.add(default_agent)
    configs = {config.name: config for config in registry.list()}
    reviews = _ReviewChecks(issues, registry, invalid_agents)
    default_review = reviews.checked(spec.defaults.review)
    option_checks = _OptionChecks(registry)
    attachment_checks = _AttachmentChecks(issues, registry, all_inputs, roots)

    index: dict[str, int] = {}
    for position, task in enumerate(spec.tasks):
        if task.id in index:
            issues.add("duplicate task id", task.id, "id", position=position)
        else:
            index[task.id] = len(index)

    def read_checks(template: PromptTemplate, task: AgentTask, field_name: str) -> None:
        """Names a template reads that no task could give it: unknown names, inputs nobody sets."""
        _report_reads(issues, template, task, field_name, all_inputs)

    def compiled_template(text: str, task: AgentTask, field_name: str) -> PromptTemplate:
        try:
            template = PromptTemplate.compile(text)
        except TemplateError as exc:
            issues.add(f"template error: {exc}", task.id, field_name)
            return PromptTemplate(text)
        read_checks(template, task, field_name)
        return template

    steps = _StepChecks(issues, resolve=check_agents)
    compiled: list[CompiledTask] = []
    for task in spec.tasks:
        if index.get(task.id) != len(compiled):
            continue  # a later duplicate: already reported
        is_step = task.is_step
        agent = task.agent or (PYTHON_AGENT if is_step else default_agent)
        config = configs.get(agent)
        if config is None and agent not in invalid_agents:
            issues.add(str(UnknownAgentError(agent, known)), task.id, "agent")
        elif config is not None and (config.agent_type == PYTHON_AGENT) != is_step:
            issues.add(_agent_kind_problem(agent, config, is_step), task.id, "agent")
        if task.output_schema is not None and task.output_format is not OutputFormat.JSON:
            issues.add("output_schema needs output_format: json", task.id, "output_schema")
        elif task.output_schema is not None and (problem := schema_problem(task.output_schema)):
            issues.add(problem, task.id, "output_schema")
        step: CodeStep | None = None
        if is_step:
            step = steps.checked(task)
            prompt, system = PromptTemplate(task.description), None  # a code step's description is not rendered
        else:
            if task.call is not None:
                issues.add("call is for code steps: set type: python (or remove call)", task.id, "call")
            if task.params:
                issues.add("params are given to code steps (type: python) only", task.id, "params")
            for name in ("remote", "resources"):
                if getattr(task, name) is not None:
                    issues.add(f"{name} is for code steps (type: python); agents set remote themselves", task.id, name)
            if "description" not in task.model_fields_set:
                issues.add("a model task needs a description (its prompt)", task.id, "description")
            prompt = compiled_template(task.description, task, "description")
            system = (
                None if task.system_prompt is None else compiled_template(task.system_prompt, task, "system_prompt")
            )
        condition = None
        if task.when is not None:
            try:
                condition = Condition.compile(task.when)
            except TemplateError as exc:
                issues.add(str(exc), task.id, "when")
            if condition is not None and condition.template is not None:
                read_checks(condition.template, task, "when")
        output_file = None
        if task.output_file is not None:
            output_file = compiled_template(task.output_file, task, "output_file")
            if not has_template_syntax(task.output_file):
                try:
                    resolve_output_path(task.output_file, folder, allow_outside=allow_outside)
                except OutputFileError as exc:
                    issues.add(str(exc), task.id, "output_file")
        options = task.options
        if task.output_format is OutputFormat.JSON and not is_step:
            options = options.model_copy(update={"json_schema": task.output_schema or {"type": "object"}})
        if config is not None and not is_step:
            for problem in option_checks.problems(agent, options):
                issues.add(problem, task.id, "options")
        attachments = attachment_checks.compiled(task, agent if config is not None else None)
        agent_retry = config.retry.retries if config is not None else None
        retries = next(r for r in (task.retries, agent_retry, spec.defaults.retries) if r is not None)
        review = default_review if task.review is None else reviews.checked(task.review, task)
        if is_step and review is not None and review.stage is GateStage.BEFORE:
            if task.review is not None:  # the project's default gates no code step's request: it has none
                issues.add("a code step has no request to review: use stage: after", task.id, "review.stage")
            review = None
        timeout_s = task.timeout_s or spec.defaults.timeout_s
        batch = config is not None and not is_step and (config.batch if task.batch is None else task.batch)
        if batch and (problem := _batch_problem(registry, agent)):
            issues.add(problem, task.id, "batch" if task.batch else "agent")
        elif task.batch and is_step:
            issues.add("a code step calls no model: it cannot go by batch (remove batch)", task.id, "batch")
        compiled.append(
            CompiledTask(
                task,
                len(compiled),
                agent,
                prompt,
                system,
                options,
                retries,
                timeout_s,
                review,
                attachments=attachments,
                trigger=task.trigger,
                condition=condition,
                output_file=output_file,
                step=step,
                batch=batch,
            )
        )

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
        if item.step is not None:  # its context holds the results of its ancestors
            upstream = frozenset(compiled[a].id for a in _ancestors_of(item.index, compiled))
            item.step = replace(item.step, upstream=upstream)
        read: list[tuple[PromptTemplate | None, str]] = [
            (item.prompt, "description"),
            (item.system, "system_prompt"),
            (item.condition.template if item.condition is not None else None, "when"),
            (item.output_file, "output_file"),
        ]
        if item.attachments is not None:
            read += [(slot.template, f"attachments.{n}") for n, slot in enumerate(item.attachments.slots)]
        for template, field_name in read:
            if template is None or not template.task_refs:
                continue
            for ref in sorted({ref for ref, attribute in template.task_attrs if attribute == "parsed"}):
                if ref in index and compiled[index[ref]].task.output_format is not OutputFormat.JSON:
                    issues.add(
                        f"template reads tasks.{ref}.parsed, but '{ref}' is a text task: parsed is set only for "
                        f"output_format: json (read tasks.{ref}.output, or make '{ref}' a json task)",
                        item.id,
                        field_name,
                    )
            refs = template.task_refs - {compiled[p].id for p in item.parents}
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
    file = source.path if source else None
    project = Project(spec, registry, compiled, index, all_inputs, file, folder, allow_outside)
    if check_agents and not issues.items:
        for name in sorted(project.used_agents()):
            here = not (on_ray and served_on_ray(registry, name))
            for problem in registry.check(name, here=here):
                issues.add(problem, agent=name)
    if issues.items:
        raise ProjectValidationError(issues.items)
    return project


def served_on_ray(registry: AgentRegistry, name: str) -> bool:
    """Whether agent ``name``'s calls are made by Ray replicas in a run on Ray: a local model (``mlx``, ``vllm``, a
    :class:`~llm_abstractions.local.LocalLlm`) or ``remote: true``; never a model instance passed in."""
    if registry.llm_instance(name) is not None:
        return False
    config = registry.get(name)
    if config.remote:
        return True
    from llm_abstractions import get_llm_class
    from llm_abstractions.local import LocalLlm

    return issubclass(get_llm_class(config.agent_type), LocalLlm)


def _checked_template(
    issues: _Issues, task: AgentTask, field_name: str, text: str, inputs: Mapping[str, Any]
) -> PromptTemplate:
    """``text`` compiled, its syntax, unknown names and missing inputs reported (as for prompts, above)."""
    try:
        template = PromptTemplate.compile(text)
    except TemplateError as exc:
        issues.add(f"template error: {exc}", task.id, field_name)
        template = PromptTemplate(text)
    _report_reads(issues, template, task, field_name, inputs)
    return template


def _report_reads(
    issues: _Issues, template: PromptTemplate, task: AgentTask, field_name: str, inputs: Mapping[str, Any]
) -> None:
    """Names ``template`` reads that nothing gives it: unknown names (``item`` and ``index`` are known in a mapped
    task), inputs nobody sets."""
    unknown = template.unknown_names - ITEM_NAMES if task.for_each is not None else template.unknown_names
    for name in sorted(unknown) if unknown else ():
        hint = "only a mapped task (for_each) has it" if name in ITEM_NAMES else "use inputs.<key> or tasks.<id>"
        issues.add(f"template uses unknown name '{name}' ({hint})", task.id, field_name)
    for key in sorted(missing) if (missing := template.input_refs - inputs.keys()) else ():
        issues.add(
            f"template uses input '{key}', which is neither in 'inputs' nor given with --input", task.id, field_name
        )


class _AttachmentChecks:
    """A task's ``attachments`` compiled: templates checked, sources known now read, the agent's limits applied."""

    def __init__(self, issues: _Issues, registry: AgentRegistry, inputs: Mapping[str, Any], roots: AttachmentRoots):
        self.issues = issues
        self.registry = registry
        self.inputs = dict(inputs)
        self.roots = roots

    def compiled(self, task: AgentTask, agent: str | None) -> TaskAttachments | None:
        """The task's attachments (``None``: it has none), each problem reported; ``agent``: the task's agent,
        whose provider must take those read now (``None``: an unknown agent, reported already)."""
        if not task.attachments:
            return None
        slots = []
        for position, entry in enumerate(task.attachments):
            field_name = f"attachments.{position}"
            source, media_type = (entry, None) if isinstance(entry, str) else (entry.source, entry.media_type)
            before = len(self.issues.items)
            template = _checked_template(self.issues, task, field_name, source, self.inputs)
            attachment = None
            per_item = bool(template.unknown_names & ITEM_NAMES)  # read as each instance runs
            if not template.task_refs and not per_item and len(self.issues.items) == before:  # known now: read it
                attachment = self._read(task, field_name, template, media_type)
            slots.append(AttachmentSlot(template, media_type, attachment))
        known = [slot.attachment for slot in slots if slot.attachment is not None]
        if agent is not None and known:
            for problem in self._problems(agent, known):
                self.issues.add(problem, task.id, "attachments")
        return TaskAttachments(tuple(slots), self.roots)

    def _read(
        self, task: AgentTask, field_name: str, template: PromptTemplate, media_type: str | None
    ) -> Attachment | None:
        try:
            return load_attachment(template.render(self.inputs, {}), media_type, self.roots)
        except TemplateError as exc:
            self.issues.add(f"template error: {exc}", task.id, field_name)
        except AttachmentError as exc:
            self.issues.add(str(exc), task.id, field_name)
        return None

    def _problems(self, agent: str, attachments: list[Attachment]) -> list[str]:
        """What the agent's provider would refuse in ``attachments`` (its types, URLs and size limits)."""
        llm = self.registry.llm_instance(agent)
        if llm is not None:
            return refused_attachments(llm, attachments)
        config = self.registry.get(agent).llm_config()
        try:
            cls = get_llm_class(config.provider)
        except UnknownProviderError:
            return []  # reported with the agent
        return cls.attachment_problems(config, attachments)


def _agent_kind_problem(agent: str, config: AgentConfig, is_step: bool) -> str:
    """Why ``agent`` cannot do a code step's work (``is_step``), or a model task's."""
    if is_step:
        return (
            f"agent '{agent}' is not a python agent (its type is {config.agent_type}): a code step (type: python)"
            " names a python agent (type: python, for its limits) or none"
        )
    return f"agent '{agent}' is a python agent: it runs code steps (type: python, call: ...), not prompts"


class _StepChecks:
    """Problems of a code step's fields; its function, imported (``resolve``) and checked."""

    _MODEL_FIELDS = ("system_prompt", "on_truncated")

    def __init__(self, issues: _Issues, *, resolve: bool) -> None:
        self.issues = issues
        self.resolve = resolve

    def checked(self, task: AgentTask) -> CodeStep | None:
        """The task's code step, or ``None`` (its problems reported)."""
        for name in self._MODEL_FIELDS:
            if getattr(task, name) is not None:
                self.issues.add(f"{name} is for model tasks: a code step has no prompt", task.id, name)
        if task.options.model_dump(exclude_defaults=True):
            self.issues.add("options are for model tasks: a code step has no model", task.id, "options")
        call = task.call
        if call is None:
            self.issues.add("a code step (type: python) needs call: 'package.module:function'", task.id, "call")
            return None
        if not isinstance(call, str):
            return CodeStep(call_ref(call), call, task.params)
        function = None
        try:
            if self.resolve:
                function = resolve_call(call)
            else:
                check_call(call)
        except StepImportError as exc:
            self.issues.add(str(exc), task.id, "call")
            return None
        return CodeStep(call, function, task.params)


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
        if item.fan_out is not None and item.output_file is not None and _same_file_per_item(item, compiled, issues):
            issues.add(
                f"output_file '{item.task.output_file}' is the same path for every item: the instances would "
                'overwrite each other\'s file; make it read the item ("out/{{ item.id }}.md" or "out/{{ index }}.md")',
                item.id,
                "output_file",
            )
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
                if mapped and attribute not in MAPPED_FIELDS:
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


def _same_file_per_item(task: CompiledTask, compiled: Sequence[CompiledTask], issues: _Issues) -> bool:
    """Whether a mapped task's ``output_file`` names the same path for every instance: its template reads neither
    ``item`` nor ``index`` nor a per-item dependency (its instance of the item). ``False`` when the template was
    reported already (it did not compile)."""
    template = task.output_file
    assert template is not None and task.fan_out is not None
    if not template.unknown_names.isdisjoint(ITEM_NAMES):
        return False
    if not template.task_refs.isdisjoint(compiled[parent].id for parent in task.fan_out.per_item):
        return False
    return not any(issue.task == task.id and issue.field == "output_file" for issue in issues.items)


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


def _batch_problem(registry: AgentRegistry, agent: str) -> str | None:
    """Why ``agent``'s requests cannot go by batch (its provider has no batch API); ``None``: they can."""
    llm = registry.llm_instance(agent)
    if llm is not None:
        cls: type[BaseLlm] = type(llm)
    else:
        try:
            cls = get_llm_class(registry.get(agent).agent_type)
        except UnknownProviderError:
            return None  # reported with the agent
    if supports_batch(cls):
        return None
    return f"agent '{agent}' ({cls.provider}) has no batch API: set batch: false, or use a provider that has one"


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

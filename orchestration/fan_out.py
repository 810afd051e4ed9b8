"""``for_each`` compiled: a mapped task's source of items, its key and its per-item dependencies.

A mapped task's items come from a list in the task file, from an input (a list, or a file of items: see
:mod:`orchestration.items`) or from an upstream json task's parsed answer. Items known before the run (a list,
an input) are read, and their keys rendered and checked, when the project is validated; items from an answer
are read when that answer arrives (:mod:`orchestration.expansion`). Everything else is checked before the run:
the source's syntax, that an upstream source is an ancestor json task whose ``output_schema`` has an array at
the path read, the ``key`` template, and that ``per_item`` dependencies join two tasks mapped over the same
items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.items import ItemsError, item_file, kind_of, read_items, unique_keys
from orchestration.models import Dependency, OutputFormat
from orchestration.templates import ITEM_NAMES, PromptTemplate, TemplateError, lookup_of, lookup_value

if TYPE_CHECKING:
    from orchestration.project import CompiledTask

__all__ = [
    "MAPPED_ATTRIBUTES",
    "MAPPED_FIELDS",
    "FanOut",
    "ItemPrompt",
    "PerItem",
    "compile_fan_out",
    "per_item_problems",
]

MAPPED_ATTRIBUTES = frozenset({"outputs", "parsed", "results"})
"""What a mapped task gives downstream templates: lists in item order."""
MAPPED_FIELDS = MAPPED_ATTRIBUTES | {"status", "error", "items"}
"""Everything downstream templates may read of a mapped task: the lists, its own status and error (for trigger
rules), its instances' ids."""

Lookup = tuple[str, tuple[tuple[bool, str], ...]]
Problem = tuple[str, str]
"""A problem of a task: its message and the field it is about."""


@dataclass(slots=True)
class FanOut:
    """A mapped task's ``for_each``, compiled."""

    source: str
    """Where the items come from, for messages and the graph: ``inputs.tickets``, ``tasks.plan.parsed.sections``,
    ``a list``."""
    lookup: Lookup | None = None
    """The lookup giving the items (``None``: a list in the task file)."""
    items: list[Any] | None = None
    """The items, when known before the run (a list or an input); ``None``: read from an upstream answer."""
    keys: list[str] | None = None
    """The items' keys, when the items are known before the run."""
    key: PromptTemplate | None = None
    """The ``key`` template; ``None``: the index."""
    source_task: int | None = None
    """The upstream task whose answer gives the items."""
    file: Path | None = None
    """The file the items were read from."""
    per_item: list[int] = field(default_factory=list)
    """Mapped tasks this one depends on per item (their instance of the same item, not all of them)."""
    reads_index: bool = False
    """Whether the task's templates read ``index`` (the instances' fingerprints then hold it)."""

    def items_of(self, inputs: Mapping[str, Any], tasks: Mapping[str, Any]) -> list[Any]:
        """The items (read from ``tasks``, the results so far, when they come from an answer); raise
        :class:`ItemsError` or :class:`TemplateError`."""
        if self.items is not None:
            return self.items
        assert self.lookup is not None
        name, steps = self.lookup
        value: Any = inputs if name == "inputs" else tasks
        for step in steps:
            if isinstance(value, Mapping) and step[1] in value:  # a key before an attribute: inputs.items is an input
                value = value[step[1]]
            else:  # as a template reads it (an attribute, a list's index...)
                value = lookup_value(("value", (step,)), {}, {}, {"value": value})
        if not isinstance(value, list | tuple):
            raise ItemsError(f"{self.source} is {_a(kind_of(value))}, not a list: there is nothing to map over")
        return list(value)

    def keys_of(self, items: Sequence[Any], inputs: Mapping[str, Any]) -> list[str]:
        """The items' keys (their indices without a ``key`` template); raise :class:`ItemsError` when one cannot
        be rendered, is empty, or is another item's too."""
        if self.keys is not None and items is self.items:
            return self.keys
        if self.key is None:
            return [str(index) for index in range(len(items))]
        render, keys = self.key.render, []
        no_tasks: Mapping[str, Any] = {}
        for index, item in enumerate(items):
            try:
                keys.append(render(inputs, no_tasks, {"item": item, "index": index}).strip())
            except TemplateError as exc:
                raise ItemsError(f"the key of item {index}: {exc}") from None
        unique_keys(keys)
        return keys

    def describe(self) -> str:
        """``for each of inputs.tickets (1,000 items)``."""
        count = f" ({len(self.items):,} items)" if self.items is not None else ""
        return f"for each of {self.source}{count}"


@dataclass(frozen=True, slots=True)
class ItemPrompt(PromptTemplate):
    """A mapped task's template bound to one instance: it renders with ``item`` and ``index``, and reads the
    instances of its per-item dependencies as ``tasks.<id>``."""

    variables: Mapping[str, Any] = field(default_factory=dict)
    per_item: Mapping[str, str] = field(default_factory=dict)
    """Task id -> the id of its instance of this item."""

    @staticmethod
    def fields_of(template: PromptTemplate) -> dict[str, Any]:
        """What :meth:`bind` copies of ``template`` (computed once per mapped task)."""
        return {f.name: getattr(template, f.name) for f in fields(PromptTemplate)}

    @classmethod
    def bind(
        cls,
        template: PromptTemplate | Mapping[str, Any],
        variables: Mapping[str, Any],
        per_item: Mapping[str, str],
    ) -> ItemPrompt:
        """``template`` (or its :meth:`fields_of`) bound to an instance's ``variables`` and per-item instances."""
        values = ItemPrompt.fields_of(template) if isinstance(template, PromptTemplate) else template
        return cls(**values, variables=variables, per_item=per_item)

    def render(
        self, inputs: Mapping[str, Any], tasks: Mapping[str, Any], variables: Mapping[str, Any] | None = None
    ) -> str:
        if self.per_item:
            tasks = PerItem(tasks, self.per_item)
        return PromptTemplate.render(self, inputs, tasks, self.variables)


class PerItem(Mapping[str, Any]):
    """The results as an instance's templates see them: a per-item dependency's id gives its instance."""

    __slots__ = ("_instances", "_results")

    def __init__(self, results: Mapping[str, Any], instances: Mapping[str, str]) -> None:
        self._results = results
        self._instances = instances

    def __getitem__(self, task_id: str) -> Any:
        return self._results[self._instances.get(task_id, task_id)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)


def compile_fan_out(
    task: CompiledTask,
    tasks: Sequence[CompiledTask],
    index: Mapping[str, int],
    inputs: Mapping[str, Any],
    folder: Path,
    ancestors: Callable[[int], set[int]],
    files: dict[Path, list[Any]],
) -> tuple[FanOut | None, list[Problem]]:
    """``task``'s :class:`FanOut` (``None`` when it is not mapped) and its problems. ``ancestors`` gives a task's
    ancestors; ``files`` caches the item files read (by path)."""
    spec = task.task
    problems: list[Problem] = []
    if spec.for_each is None:
        if spec.key is not None:
            problems.append(("key needs for_each (it names each item's instance)", "key"))
        return None, problems
    key, key_problems = _key_template(spec.key, inputs)
    problems += key_problems
    reads = set().union(*(t.unknown_names for t in (task.prompt, task.system) if t is not None))
    fan = FanOut(source="a list", key=key, reads_index="index" in reads)
    if isinstance(spec.for_each, list):
        fan.items = spec.for_each
    else:
        lookup = lookup_of(spec.for_each)
        if lookup is None or lookup[0] not in ("inputs", "tasks") or not lookup[1]:
            message = "for_each must be a list or one lookup: {{ inputs.<key> }} or {{ tasks.<id>.parsed }}"
            return None, [*problems, (message, "for_each")]
        fan.lookup = lookup
        fan.source = _path(lookup)
        if lookup[0] == "inputs":
            problem = _input_items(fan, lookup, inputs, folder, files)
        else:
            problem = _upstream_source(fan, task, lookup, tasks, index, ancestors)
        if problem is not None:
            return None, [*problems, (problem, "for_each")]
    if fan.items is not None and not key_problems:
        try:
            fan.keys = fan.keys_of(fan.items, inputs)
        except ItemsError as exc:
            problems.append((str(exc), "key" if spec.key is not None else "for_each"))
    return fan, problems


def _key_template(text: str | None, inputs: Mapping[str, Any]) -> tuple[PromptTemplate | None, list[Problem]]:
    if text is None:
        return None, []
    try:
        template = PromptTemplate.compile(text)
    except TemplateError as exc:
        return None, [(f"template error: {exc}", "key")]
    problems = [
        (f"key uses unknown name '{name}' (it reads item, index and inputs)", "key")
        for name in sorted(template.unknown_names - ITEM_NAMES)
    ]
    if template.task_refs:
        problems.append(("key reads tasks: it may read only item, index and inputs", "key"))
    problems += [
        (f"key uses input '{name}', which is neither in 'inputs' nor given with --input", "key")
        for name in sorted(template.input_refs - inputs.keys())
    ]
    return (None if problems else template), problems


def _input_items(
    fan: FanOut, lookup: Lookup, inputs: Mapping[str, Any], folder: Path, files: dict[Path, list[Any]]
) -> str | None:
    """Read the items of an input source into ``fan``; the problem, if any."""
    name = lookup[1][0][1]
    if name not in inputs:
        return f"for_each reads input '{name}', which is neither in 'inputs' nor given with --input"
    value = inputs[name]
    view = inputs
    if isinstance(value, str):
        try:
            path = item_file(value, folder)
            if path not in files:
                files[path] = read_items(path)
        except ItemsError as exc:
            return f"input '{name}': {exc}"
        fan.file = path
        view = {**inputs, name: files[path]}
    elif not isinstance(value, list | tuple) and len(lookup[1]) == 1:
        return (
            f"input '{name}' is {_a(kind_of(value))}: for_each needs a list or the path of a .jsonl, .json or .csv file"
        )
    try:
        fan.items = fan.items_of(view, {})
    except (ItemsError, TemplateError) as exc:
        return f"for_each: {exc}"
    return None


def _upstream_source(
    fan: FanOut,
    task: CompiledTask,
    lookup: Lookup,
    tasks: Sequence[CompiledTask],
    index: Mapping[str, int],
    ancestors: Callable[[int], set[int]],
) -> str | None:
    """Check an upstream source: an ancestor json task with an array at the path read (or a mapped task's lists)."""
    steps = lookup[1]
    source_id = steps[0][1]
    source = index.get(source_id)
    if source is None:
        return f"for_each reads tasks.{source_id}: no such task"
    fan.source_task = source
    if source not in ancestors(task.index):
        return f"for_each reads tasks.{source_id}: it is not an ancestor (add it to depends_on)"
    upstream = tasks[source]
    attribute = steps[1][1] if len(steps) > 1 else None
    if upstream.task.for_each is not None:
        if attribute in MAPPED_ATTRIBUTES:
            return None
        return f"for_each reads tasks.{source_id}: '{source_id}' is mapped: read its outputs, parsed or results"
    if attribute != "parsed":
        return f"for_each needs a list: read the parsed answer of a json task ({{{{ tasks.{source_id}.parsed }}}})"
    where = "its answer" if len(steps) == 2 else _path(("parsed", steps[2:]))
    if upstream.task.output_format is not OutputFormat.JSON:
        return f"for_each reads tasks.{source_id}.parsed, but '{source_id}' is a text task: make it a json task"
    schema = upstream.task.output_schema
    if schema is None:
        return f"for_each reads {fan.source}: give '{source_id}' an output_schema in which {where} is an array"
    found = _array_at(schema, steps[2:])
    if found is False:
        return f"for_each reads {fan.source}, but the output_schema of '{source_id}' does not make {where} an array"
    return None


def _array_at(schema: Any, steps: Sequence[tuple[bool, str]]) -> bool | None:
    """Whether ``schema`` makes the value at ``steps`` an array; ``None`` when it cannot tell (``$ref``,
    ``anyOf``...)."""
    node = schema
    for _, key in steps:
        if not isinstance(node, dict) or _combined(node):
            return None
        properties = node.get("properties")
        if isinstance(properties, dict) and key in properties:
            node = properties[key]
        elif _is(node, "array") and key.isdigit() and isinstance(node.get("items"), dict):
            node = node["items"]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    if not isinstance(node, dict) or _combined(node):
        return None
    return _is(node, "array")


def _combined(node: Mapping[str, Any]) -> bool:
    return any(word in node for word in ("$ref", "anyOf", "oneOf", "allOf"))


def _is(node: Mapping[str, Any], kind: str) -> bool:
    declared = node.get("type")
    return declared == kind or (isinstance(declared, list) and kind in declared)


def per_item_problems(task: CompiledTask, tasks: Sequence[CompiledTask], index: Mapping[str, int]) -> list[Problem]:
    """Check ``task``'s per-item dependencies (once every task's :class:`FanOut` is compiled) and record them in
    its ``fan_out``."""
    problems: list[Problem] = []
    for dep in task.task.depends_on:
        if not isinstance(dep, Dependency) or not dep.per_item or dep.task not in index:
            continue
        parent = tasks[index[dep.task]]
        if task.task.for_each is None:
            problems.append((f"per_item needs for_each: '{task.id}' is not mapped", "depends_on"))
        elif parent.task.for_each is None:
            problems.append((f"per_item needs '{dep.task}' to be mapped too (for_each)", "depends_on"))
        elif not _same_source(task, parent):
            message = f"per_item needs '{dep.task}' mapped over the same items: it maps over {_source(parent)}"
            problems.append((f"{message}, '{task.id}' over {_source(task)}", "depends_on"))
        elif task.fan_out is not None and parent.index not in task.fan_out.per_item:
            task.fan_out.per_item.append(parent.index)
    return problems


def _same_source(a: CompiledTask, b: CompiledTask) -> bool:
    source_a, source_b = a.task.for_each, b.task.for_each
    if isinstance(source_a, str) and isinstance(source_b, str):
        lookup_a = lookup_of(source_a)
        return lookup_a is not None and lookup_a == lookup_of(source_b)
    return source_a == source_b


def _source(task: CompiledTask) -> str:
    return task.fan_out.source if task.fan_out is not None else repr(task.task.for_each)


def _path(lookup: Lookup) -> str:
    """A lookup as written with dots (``tasks.plan.parsed.sections``)."""
    name, steps = lookup
    return name + "".join(f".{key}" if is_attr or key.isidentifier() else f"[{key!r}]" for is_attr, key in steps)


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"

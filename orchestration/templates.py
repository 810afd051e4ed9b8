"""Prompt templates: jinja2's sandbox with strict undefined, compiled once per task.

Prompts without template syntax skip jinja2 entirely. Prompts whose only syntax is
lookups such as ``{{ tasks.plan.output }}``, ``{{ inputs['topic'] }}`` or ``{{ item.text }}`` (the common case)
are read with a regular expression and rendered with the sandbox's own ``getattr``/``getitem``
and ``str``, exactly as jinja2's compiled code does: a project of many tasks validates without
compiling a template per task. Upstream outputs are passed as values, so template
syntax inside a model's answer is inserted as text, never evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "ITEM_NAMES",
    "PromptTemplate",
    "TemplateError",
    "environment",
    "has_template_syntax",
    "lookup_of",
    "lookup_value",
    "template_names",
]


class TemplateError(ValueError):
    """A template does not parse, or does not render."""


def has_template_syntax(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@cache
def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def environment() -> SandboxedEnvironment:
    """The sandbox every template, condition and output path is rendered in (strict undefined)."""
    return _environment()


ITEM_NAMES = frozenset({"item", "index"})
"""The names a mapped task's templates read besides ``inputs`` and ``tasks``: its instance's item and index."""


def template_names(
    inputs: Mapping[str, Any], tasks: Mapping[str, Any], variables: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The names a task's conditions, output path, attachments and code step see, built in this one place:
    ``inputs``, ``tasks`` (task id -> result: ``output``, ``parsed``, ``status``, ``error``...) and
    ``variables``: an instance of a mapped task's ``item`` and ``index`` (``for_each``)."""
    if variables:
        return {"inputs": inputs, "tasks": tasks, **variables}
    return {"inputs": inputs, "tasks": tasks}


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = rf"\.{_NAME}|\['[^'\\\r\n]*'\]|\[\"[^\"\\\r\n]*\"\]"
_LOOKUP = re.compile(rf"\{{\{{\s*(tasks|inputs|item|index)((?:{_STEP})*)\s*\}}\}}")
"""``{{ tasks.attr['key'] }}``: the name and its steps (other names are jinja2's: its globals, ``self``...);
``item`` and ``index`` are the variables of a mapped task's instance (``for_each``)."""
_STEPS = re.compile(rf"\.({_NAME})|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_NEWLINE = re.compile(r"\r\n|\r")

_Lookup = tuple[str, tuple[tuple[bool, str], ...]]
"""``tasks.a['b']``: the name and its steps, ``(True, attr)`` or ``(False, key)``."""


def _simple_parts(source: str) -> tuple[list[str | _Lookup], _Reads] | None:
    """Text and lookups of a template made only of ``{{ lookup }}`` expressions, and what it reads;
    ``None`` for any other template (jinja2 parses those)."""
    pieces = _LOOKUP.split(source)  # text, name, steps, text, name, steps, ..., text
    parts: list[str | _Lookup] = []
    reads = _Reads()
    for at in range(0, len(pieces) - 1, 3):
        text, name, steps = pieces[at : at + 3]
        if has_template_syntax(text) or text.endswith("{"):
            return None  # with "{" before "{{", jinja2's expression starts one character earlier
        keys = [(True, attr) if attr else (False, single or double) for attr, single, double in _STEPS.findall(steps)]
        reads.add(name, [key for _, key in keys])
        if text:
            parts.append(_NEWLINE.sub("\n", text) if "\r" in text else text)
        parts.append((name, tuple(keys)))
    tail = pieces[-1]
    if has_template_syntax(tail):
        return None
    if tail:
        parts.append(_NEWLINE.sub("\n", tail) if "\r" in tail else tail)
    return parts, reads


@dataclass
class _Reads:
    """What a template reads: ``tasks.<id>`` (and which attribute), ``inputs.<key>``, other free names."""

    tasks: set[str] = field(default_factory=set)
    task_attrs: set[tuple[str, str]] = field(default_factory=set)
    inputs: set[str] = field(default_factory=set)
    free: set[str] = field(default_factory=set)

    def add(self, name: str, keys: list[str]) -> None:
        """A lookup of ``name`` followed by the constant ``keys`` (as far as they are known)."""
        if name not in ("tasks", "inputs"):
            self.free.add(name)
        elif keys and name == "inputs":
            self.inputs.add(keys[0])
        elif keys:
            self.tasks.add(keys[0])
            if len(keys) > 1:
                self.task_attrs.add((keys[0], keys[1]))


def _ast_reads(ast: Any) -> _Reads:
    from jinja2 import meta, nodes

    def key_of(node: Any) -> str | None:
        if isinstance(node, nodes.Getattr):
            return str(node.attr)
        if isinstance(node.arg, nodes.Const):
            return str(node.arg.value)
        return None

    reads = _Reads()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if isinstance(target, nodes.Name) and target.name in ("tasks", "inputs") and (key := key_of(node)) is not None:
            reads.add(target.name, [key])
        elif isinstance(target, nodes.Getattr | nodes.Getitem) and isinstance(target.node, nodes.Name):
            outer, inner = key_of(node), key_of(target)
            if target.node.name == "tasks" and inner is not None and outer is not None:
                reads.add("tasks", [inner, outer])
    reads.free = set(meta.find_undeclared_variables(ast)) - {"tasks", "inputs"}
    return reads


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A compiled prompt and what it reads: ``tasks.<id>`` and ``inputs.<key>``."""

    source: str
    task_refs: frozenset[str] = frozenset()
    input_refs: frozenset[str] = frozenset()
    unknown_names: frozenset[str] = frozenset()
    """Free names other than ``tasks`` and ``inputs`` (always an error)."""
    task_attrs: frozenset[tuple[str, str]] = frozenset()
    """``(task id, attribute)`` for each ``tasks.<id>.<attribute>`` read, e.g. ``("plan", "parsed")``."""
    _template: Template | None = field(default=None, repr=False, compare=False)
    _parts: tuple[str | _Lookup, ...] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def compile(cls, source: str) -> PromptTemplate:
        """Parse ``source``; raise :class:`TemplateError` on bad syntax."""
        if not has_template_syntax(source):
            return cls(source)
        simple = _simple_parts(source)
        if simple is not None:
            return cls(source, *_frozen(simple[1]), _parts=tuple(simple[0]))
        from jinja2 import TemplateSyntaxError

        env = _environment()
        try:
            ast = env.parse(source)
            template = env.from_string(ast)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"line {exc.lineno} of the template: {exc.message}") from None
        return cls(source, *_frozen(_ast_reads(ast)), _template=template)

    def render(
        self, inputs: Mapping[str, Any], tasks: Mapping[str, Any], variables: Mapping[str, Any] | None = None
    ) -> str:
        """Render with ``inputs`` and ``tasks`` (task id -> object with ``output``/``parsed``), and ``variables``
        (other names: a mapped task's ``item`` and ``index``)."""
        try:
            if self._parts is not None:
                return self._render_parts(self._parts, inputs, tasks, variables)
            if self._template is not None:
                if variables:
                    return self._template.render(variables, inputs=inputs, tasks=tasks)
                return self._template.render(inputs=inputs, tasks=tasks)
        except Exception as exc:  # jinja2 raises many types: all are template errors here
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None
        return self.source

    @staticmethod
    def _render_parts(
        parts: tuple[str | _Lookup, ...],
        inputs: Mapping[str, Any],
        tasks: Mapping[str, Any],
        variables: Mapping[str, Any] | None,
    ) -> str:
        """What jinja2's compiled code does for ``{{ lookup }}``: sandboxed lookups, then ``str``."""
        env = _environment()
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            name, steps = part
            value = _value_of(env, name, steps, inputs, tasks, variables)
            out.append(str(value))
        return "".join(out)


def _value_of(
    env: SandboxedEnvironment,
    name: str,
    steps: tuple[tuple[bool, str], ...],
    inputs: Mapping[str, Any],
    tasks: Mapping[str, Any],
    variables: Mapping[str, Any] | None,
) -> Any:
    """The value of a lookup, as jinja2 finds it (an undefined name is jinja2's strict undefined)."""
    if name == "tasks":
        value: Any = tasks
    elif name == "inputs":
        value = inputs
    elif variables is not None and name in variables:
        value = variables[name]
    else:
        value = env.undefined(name=name)
    for is_attr, key in steps:
        value = env.getattr(value, key) if is_attr else env.getitem(value, key)
    return value


def lookup_of(source: str) -> tuple[str, tuple[tuple[bool, str], ...]] | None:
    """The name and steps of a template that is one lookup and nothing else (``"{{ tasks.plan.parsed.items }}"``:
    ``("tasks", ((True, "plan"), (True, "parsed"), (True, "items")))``, ``True`` for an attribute, ``False`` for
    a key); ``None`` for any other template."""
    simple = _simple_parts(source.strip())
    if simple is None or len(simple[0]) != 1 or isinstance(simple[0][0], str):
        return None
    return simple[0][0]


def lookup_value(
    lookup: tuple[str, tuple[tuple[bool, str], ...]],
    inputs: Mapping[str, Any],
    tasks: Mapping[str, Any],
    variables: Mapping[str, Any] | None = None,
) -> Any:
    """The value a lookup (see :func:`lookup_of`) reads, not turned into text; raise :class:`TemplateError`."""
    try:
        return _value_of(_environment(), *lookup, inputs, tasks, variables)
    except Exception as exc:  # jinja2 raises many types: all are template errors here
        raise TemplateError(f"{type(exc).__name__}: {exc}") from None


def _frozen(
    reads: _Reads,
) -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[tuple[str, str]]]:
    """The fields of :class:`PromptTemplate` after ``source``, in order."""
    return frozenset(reads.tasks), frozenset(reads.inputs), frozenset(reads.free), frozenset(reads.task_attrs)

"""Prompt templates: jinja2's sandbox with strict undefined, compiled once per task.

Prompts without template syntax skip jinja2 entirely. Upstream outputs are passed
as values, so template syntax inside a model's answer is inserted as text, never
evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

__all__ = ["PromptTemplate", "TemplateError", "has_template_syntax"]


class TemplateError(ValueError):
    """A template does not parse, or does not render."""


def has_template_syntax(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@cache
def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _references(ast: Any) -> tuple[set[str], set[str], set[str]]:
    """(task ids, input keys, other free names) that a template's AST reads."""
    from jinja2 import meta, nodes

    tasks: set[str] = set()
    inputs: set[str] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not isinstance(target, nodes.Name) or target.name not in ("tasks", "inputs"):
            continue
        if isinstance(node, nodes.Getattr):
            key: object = node.attr
        elif isinstance(node.arg, nodes.Const):
            key = node.arg.value
        else:
            continue
        (tasks if target.name == "tasks" else inputs).add(str(key))
    free = set(meta.find_undeclared_variables(ast)) - {"tasks", "inputs"}
    return tasks, inputs, free


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A compiled prompt and what it reads: ``tasks.<id>`` and ``inputs.<key>``."""

    source: str
    task_refs: frozenset[str] = frozenset()
    input_refs: frozenset[str] = frozenset()
    unknown_names: frozenset[str] = frozenset()
    """Free names other than ``tasks`` and ``inputs`` (always an error)."""
    _template: Template | None = field(default=None, repr=False, compare=False)

    @classmethod
    def compile(cls, source: str) -> PromptTemplate:
        """Parse ``source``; raise :class:`TemplateError` on bad syntax."""
        if not has_template_syntax(source):
            return cls(source)
        from jinja2 import TemplateSyntaxError

        env = _environment()
        try:
            ast = env.parse(source)
            template = env.from_string(ast)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"line {exc.lineno} of the template: {exc.message}") from None
        tasks, inputs, free = _references(ast)
        return cls(source, frozenset(tasks), frozenset(inputs), frozenset(free), template)

    def render(self, inputs: dict[str, Any], tasks: dict[str, Any]) -> str:
        """Render with ``inputs`` and ``tasks`` (task id -> object with ``output``/``parsed``)."""
        if self._template is None:
            return self.source
        try:
            return self._template.render(inputs=inputs, tasks=tasks)
        except Exception as exc:  # jinja2 raises many types: all are template errors here
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None

"""``when`` conditions: a template expression over a task's inputs and upstream results, true or false.

``when: "{{ tasks.triage.parsed.urgent }}"`` is read once the task's dependencies allow it to run
(see :class:`~orchestration.models.TriggerRule`). A condition that is one ``{{ expression }}`` is
evaluated as a jinja2 expression in the same sandbox as prompts, and its value's truth is Python's,
except for text: ``""``, ``false``, ``no``, ``off``, ``0``, ``none`` and ``null`` (any case, spaces
around) are false, so that a model's ``"No"`` or ``"false"`` reads as false. Any other template is
rendered and its text read the same way. A name or attribute that does not exist is an error
(strict undefined), never false: the task then fails with ``template_error``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestration.templates import ITEM_NAMES, PromptTemplate, TemplateError, has_template_syntax, template_names

__all__ = ["FALSE_TEXTS", "Condition", "truth"]

FALSE_TEXTS = frozenset({"", "false", "no", "off", "0", "none", "null"})
"""Texts (stripped, lower-cased) a condition reads as false."""

_ONE_EXPRESSION = re.compile(r"\A\s*\{\{(?P<expression>.*)\}\}\s*\Z", re.DOTALL)


def truth(value: Any) -> bool:
    """Whether a condition's ``value`` holds: Python's truth, but text as :data:`FALSE_TEXTS` says."""
    if isinstance(value, str):
        return value.strip().lower() not in FALSE_TEXTS
    return bool(value)


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled ``when``: what it reads (:attr:`template`) and how it is evaluated."""

    source: str | bool
    template: PromptTemplate | None = None
    """The condition as a template (what it reads: ``tasks.<id>``, ``inputs.<key>``); ``None`` for a constant."""
    _expression: Callable[..., Any] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def compile(cls, source: str | bool) -> Condition:
        """Parse ``source`` (a template, or a constant ``True``/``False``); raise :class:`TemplateError`."""
        if isinstance(source, bool):
            return cls(source)
        if not has_template_syntax(source):
            raise TemplateError(
                "a condition is a template expression, such as '{{ tasks.triage.parsed.urgent }}' (or true / false)"
            )
        template = PromptTemplate.compile(source)
        match = _ONE_EXPRESSION.match(source)
        inner = match["expression"] if match else None
        if inner is None or any(mark in inner for mark in ("{{", "}}", "{%", "%}", "{#")):
            return cls(source, template)
        from jinja2 import TemplateSyntaxError

        from orchestration.templates import environment

        try:
            expression = environment().compile_expression(inner, undefined_to_none=False)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{exc.message}") from None
        return cls(source, template, expression)

    @property
    def reads_item(self) -> bool:
        """Whether it reads ``item`` or ``index``: in a mapped task, it is then read for each instance."""
        return self.template is not None and not self.template.unknown_names.isdisjoint(ITEM_NAMES)

    def holds(
        self, inputs: Mapping[str, Any], tasks: Mapping[str, Any], variables: Mapping[str, Any] | None = None
    ) -> bool:
        """Whether the condition is true for ``inputs``, ``tasks`` (task id -> result) and ``variables`` (an
        instance's ``item`` and ``index``); raise :class:`TemplateError` when it cannot be evaluated."""
        if isinstance(self.source, bool):
            return self.source
        try:
            if self._expression is not None:
                return truth(self._expression(**template_names(inputs, tasks, variables)))
            assert self.template is not None
            return truth(self.template.render(inputs, tasks, variables))
        except TemplateError:
            raise
        except Exception as exc:  # jinja2 raises many types (and bool() of an undefined value raises)
            raise TemplateError(f"{type(exc).__name__}: {exc}") from None

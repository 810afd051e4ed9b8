"""Templates made only of ``{{ lookup }}`` skip jinja2's compiler: they must read and render exactly as jinja2 does."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestration.templates import (
    PromptTemplate,
    TemplateError,
    _ast_reads,
    _environment,
    _simple_parts,
    has_template_syntax,
)

INPUTS: dict[str, Any] = {"k": "v", "n": 3, "none": None}
TASKS: dict[str, Any] = {
    "a": SimpleNamespace(output="alpha", parsed={"n": 1, "items": [1, 2]}),
    "a.b": SimpleNamespace(output="dotted", parsed=None),
}


def by_jinja(source: str) -> str:
    """What jinja2's compiled template renders, or its error as :meth:`PromptTemplate.render` words it."""
    try:
        return _environment().from_string(source).render(inputs=INPUTS, tasks=TASKS)
    except Exception as exc:
        return f"error: {type(exc).__name__}: {exc}"


def by_template(template: PromptTemplate) -> str:
    try:
        return template.render(INPUTS, TASKS)
    except TemplateError as exc:
        return f"error: {exc}"


def assert_same_as_jinja(source: str) -> None:
    from jinja2 import TemplateSyntaxError

    try:
        _environment().parse(source)
    except TemplateSyntaxError:
        with pytest.raises(TemplateError):
            PromptTemplate.compile(source)
        return
    template = PromptTemplate.compile(source)
    assert by_template(template) == by_jinja(source)
    reads = _ast_reads(_environment().parse(source))
    assert template.task_refs == reads.tasks
    assert template.task_attrs == reads.task_attrs
    assert template.input_refs == reads.inputs
    assert template.unknown_names == reads.free


SIMPLE = [
    "{{ inputs.k }}",
    "x {{inputs.k}} y {{ tasks.a.output }}\n",
    "{{ tasks['a.b'].output }} and {{ tasks[\"a\"].parsed['n'] }}",
    "{{ tasks.a.parsed.items }}",  # a key of the parsed value, not dict.items: as jinja2 says
    "{{ inputs.items }}",
    "{{ inputs.none }}",
    "{{ tasks.a.missing }}",
    "{{ tasks.zz.output }}",
    "{{ tasks.a.__class__ }}",
    "line\r\nbreaks\r{{ inputs.k }}\r\n",
    "{{ inputs.k }}}",
    "{ {{ inputs.k }}",
    "{{\n  inputs.n\n}}",
]


@pytest.mark.parametrize("source", SIMPLE)
def test_simple_templates_skip_jinja_and_match_it(source: str) -> None:
    assert _simple_parts(source) is not None
    assert_same_as_jinja(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{{ inputs.k }}",
        "{{ none }}",
        "{{ range }}",
        "{{ self }}",
        "{{ other.thing }}",
        "{{- inputs.k }}",
        "{{ inputs.k|upper }}",
        "{{ tasks.a.output[0] }}",
    ],
)
def test_other_templates_are_left_to_jinja(source: str) -> None:
    assert _simple_parts(source) is None
    assert_same_as_jinja(source)


FRAGMENTS = [
    "{{", "}}", " ", "\n", "\r\n", "inputs", "tasks", ".", "k", "a", "n", "output", "parsed", "['a.b']", '["n"]',
    "[0]", "{", "}", "x", "{%", "%}", "{#", "#}", "-", "none", "self", "'", "|upper", "__class__",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join))
def test_any_template_the_fast_path_takes_renders_as_jinja_does(source: str) -> None:
    if has_template_syntax(source) and _simple_parts(source) is not None:
        assert_same_as_jinja(source)

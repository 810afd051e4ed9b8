"""Templates: model output is inserted as text, and templates cannot reach Python internals."""

from __future__ import annotations

from typing import Any

import pytest

from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec, ProjectValidationError
from tests.reliability.doubles import Scripts

AGENTS = {"s": {"type": "scripted"}}
TRICKY = "{{ 7 * 7 }} {% for i in range(3) %}X{% endfor %} {{ inputs.secret }} {# hidden #} {{ ''.__class__ }}"


def orchestrator(tasks: list[dict[str, Any]]) -> ProjectOrchestrator:
    spec = {"name": "sandbox", "agents": AGENTS, "defaults": {"agent": "s", "retries": 0}, "tasks": tasks}
    return ProjectOrchestrator(ProjectSpec.model_validate(spec), inputs={"secret": "s3cr3t"})


async def test_template_syntax_in_model_output_is_inserted_as_text(scripts: Scripts) -> None:
    scripts["s"].respond = lambda prompt: TRICKY if prompt == "make trouble" else "fine"
    results = await orchestrator(
        [
            {"id": "a", "description": "make trouble"},
            {"id": "b", "description": "got: {{ tasks.a.output }} | {{ tasks.a.output | upper }}", "depends_on": ["a"]},
        ]
    ).run()
    assert results["b"].succeeded
    assert scripts["s"].calls[1].prompt == f"got: {TRICKY} | {TRICKY.upper()}"
    assert "49" not in scripts["s"].calls[1].prompt and "s3cr3t" not in scripts["s"].calls[1].prompt


ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ tasks.a.__class__.__init__.__globals__ }}",
    "{{ tasks.a.output.__class__.__base__.__subclasses__() }}",
    "{{ inputs.__class__.__init__.__globals__['os'] }}",
    "{{ tasks.a.output.format.__globals__ }}",
    "{{ tasks.a.model_dump.__func__.__globals__ }}",
    "{{ inputs.__init__.__globals__.__builtins__.open('/etc/passwd').read() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{% set x = namespace() %}{{ x.__class__ }}",
]


@pytest.mark.parametrize("template", ESCAPES)
async def test_templates_cannot_reach_python_internals(scripts: Scripts, template: str) -> None:
    tasks: list[dict[str, Any]] = [
        {"id": "a", "description": "first"},
        {"id": "b", "description": template, "depends_on": ["a"]},
    ]
    try:
        results = await orchestrator(tasks).run()
    except ProjectValidationError as exc:  # refused before running (unknown names or inputs)
        assert [issue.task for issue in exc.issues] == ["b"]
        assert scripts["s"].calls == []
        return
    assert results["b"].status is ExecutionStatus.FAILED
    assert results["b"].error is not None and results["b"].error.type == "template_error"
    assert [call.prompt for call in scripts["s"].calls] == ["first"]  # nothing rendered reached a model

"""Load a project task file (YAML, TOML or JSON) into a :class:`ProjectSpec`.

Pydantic locations such as ``tasks.2.depends_on`` are translated to the task's id
and the field, with the line where the format gives one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent_registry import FileFormatError, StructuredFile, field_problems, read_structured_file
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.models import AgentTask, ProjectSpec

__all__ = ["load_project_file", "spec_issues", "task_issues"]


def _task_name(data: Any, index: int) -> str:
    tasks = data.get("tasks") if isinstance(data, Mapping) else None
    if isinstance(tasks, list) and index < len(tasks):
        entry = tasks[index]
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str | int):
            return str(entry["id"])
    return f"#{index + 1}"


def spec_issues(exc: ValidationError, data: Any, source: StructuredFile | None) -> list[ValidationIssue]:
    """Translate pydantic errors about a project mapping into validation issues."""
    issues = []
    file = source.path if source else None
    for problem in field_problems(exc, data, ProjectSpec):
        loc = problem.loc
        line = source.line_of(loc) if source else None
        if len(loc) >= 2 and loc[0] == "tasks" and isinstance(loc[1], int):
            field = ".".join(str(p) for p in loc[2:]) or None
            task = _task_name(data, loc[1])
            issues.append(ValidationIssue(problem.message, file, task=task, field=field, line=line))
        else:
            issues.append(ValidationIssue(problem.message, file, field=problem.field, line=line))
    return issues


def task_issues(exc: ValidationError, task_id: str, fields: Mapping[str, Any]) -> list[ValidationIssue]:
    """Translate pydantic errors about one task's ``fields`` (the Python API's ``add_task``)."""
    return [
        ValidationIssue(problem.message, task=task_id, field=problem.field)
        for problem in field_problems(exc, fields, model=AgentTask)
    ]


def load_project_file(path: Path) -> tuple[ProjectSpec, StructuredFile]:
    """Parse and validate the schema of a task file; raise :class:`ProjectValidationError`."""
    try:
        source = read_structured_file(path)
    except FileFormatError as exc:
        raise ProjectValidationError([ValidationIssue(exc.reason, path, line=exc.line)]) from None
    data = source.data
    if not isinstance(data, Mapping):
        raise ProjectValidationError([ValidationIssue("a project file must be a mapping with a 'tasks' list", path)])
    try:
        spec = ProjectSpec.model_validate(data)
    except ValidationError as exc:
        raise ProjectValidationError(spec_issues(exc, data, source)) from None
    except RecursionError:
        raise ProjectValidationError([ValidationIssue("nested too deeply", path)]) from None
    return spec, source

"""Render a project's task graph as Mermaid or Graphviz DOT."""

from __future__ import annotations

import json

from orchestration.project import Project

__all__ = ["to_dot", "to_mermaid"]


def _mermaid_id(index: int) -> str:
    return f"t{index}"


def to_mermaid(project: Project) -> str:
    """A Mermaid ``flowchart TD``; node labels are the task ids and agents."""
    lines = ["flowchart TD"]
    for task in project.tasks:
        label = f"{task.id}<br/><i>{task.agent}</i>".replace('"', "'")
        lines.append(f'    {_mermaid_id(task.index)}["{label}"]')
    for task in project.tasks:
        for parent in task.parents:
            lines.append(f"    {_mermaid_id(parent)} --> {_mermaid_id(task.index)}")
    return "\n".join(lines)


def to_dot(project: Project) -> str:
    """A Graphviz ``digraph``."""
    lines = [f"digraph {json.dumps(project.name)} {{", "    rankdir=TB;"]
    for task in project.tasks:
        label = json.dumps(task.id + "\n" + task.agent)
        lines.append(f"    {json.dumps(task.id)} [label={label}];")
    for task in project.tasks:
        for parent in task.parents:
            lines.append(f"    {json.dumps(project.tasks[parent].id)} -> {json.dumps(task.id)};")
    lines.append("}")
    return "\n".join(lines)

"""Render a project's task graph as Mermaid or Graphviz DOT.

A mapped task (``for_each``) is one node that says where its items come from; a per-item dependency is a dashed
edge labelled ``per item``.
"""

from __future__ import annotations

import json

from orchestration.project import CompiledTask, Project

__all__ = ["to_dot", "to_mermaid"]


def _mermaid_id(index: int) -> str:
    return f"t{index}"


def _per_item(task: CompiledTask, parent: int) -> bool:
    return task.fan_out is not None and parent in task.fan_out.per_item


def to_mermaid(project: Project) -> str:
    """A Mermaid ``flowchart TD``; node labels are the task ids and agents (and a mapped task's item source)."""
    lines = ["flowchart TD"]
    for task in project.tasks:
        label = f"{task.id}<br/><i>{task.agent}</i>"
        if task.fan_out is not None:
            label += f"<br/>{task.fan_out.describe()}"
        label = label.replace('"', "'")
        lines.append(f'    {_mermaid_id(task.index)}["{label}"]')
    for task in project.tasks:
        for parent in task.parents:
            arrow = "-. per item .->" if _per_item(task, parent) else "-->"
            lines.append(f"    {_mermaid_id(parent)} {arrow} {_mermaid_id(task.index)}")
    return "\n".join(lines)


def to_dot(project: Project) -> str:
    """A Graphviz ``digraph``."""
    lines = [f"digraph {json.dumps(project.name)} {{", "    rankdir=TB;"]
    for task in project.tasks:
        text = task.id + "\n" + task.agent
        if task.fan_out is not None:
            text += "\n" + task.fan_out.describe()
        shape = ", shape=box3d" if task.fan_out is not None else ""
        lines.append(f"    {json.dumps(task.id)} [label={json.dumps(text)}{shape}];")
    for task in project.tasks:
        for parent in task.parents:
            style = ' [style=dashed, label="per item"]' if _per_item(task, parent) else ""
            lines.append(f"    {json.dumps(project.tasks[parent].id)} -> {json.dumps(task.id)}{style};")
    lines.append("}")
    return "\n".join(lines)

"""What a resumed run may keep: task fingerprints and the resume plan.

A task's fingerprint hashes what decides its answer apart from upstream outputs:
its prompt and system templates (their source), the values of the inputs they read,
its output format and schema, its generation options, its agent's provider,
model, base URL, default options and provider settings, and its attachments (the digest
of each file's bytes, each URL, and the source of each template rendered only when it runs);
for a code step, its ``call``, its ``params`` and the inputs instead of prompts and options.
A finished task whose fingerprint changed reruns, and so does everything downstream of it.

The instances of a mapped task (``for_each``) are planned one by one (see
:func:`orchestration.expansion.plan_items`): an instance whose item changed reruns alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_registry import AgentConfig
from orchestration.models import ExecutionResult
from orchestration.project import CompiledTask, Project
from orchestration.store.run_store import StoredRun

__all__ = ["ResumePlan", "agent_fingerprint", "fingerprints", "plan_resume", "project_hash", "task_fingerprint"]


_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
"""``json.dumps`` with these options, without building an encoder per call."""


def _digest(value: Any) -> str:
    return hashlib.sha256(_ENCODER.encode(value).encode()).hexdigest()[:32]


def agent_fingerprint(agent: AgentConfig) -> str:
    """A hash of what in an agent's config shapes its answers (not keys, limits or retries)."""
    return _digest(
        {
            "type": agent.agent_type,
            "model": agent.model,
            "base_url": agent.base_url,
            "options": agent.options.model_dump(exclude_none=True),
            "settings": agent.provider_settings,
        }
    )


def task_fingerprint(project: Project, task: CompiledTask, agent_print: str | None = None) -> str:
    """A stable hash of everything (but upstream outputs) that shapes ``task``'s answer.

    ``agent_print`` is the task agent's :func:`agent_fingerprint`, when already known. A code step's hashes its
    ``call`` and ``params`` and every input (its function sees them all) instead of prompts and options.
    """
    step = task.step
    if step is not None:
        return _digest(
            [
                "python",
                step.ref,
                dict(step.params),
                project.inputs,
                task.task.output_format,
                task.task.output_schema,
                agent_print or agent_fingerprint(project.registry.get(task.agent)),
            ]
        )
    refs = task.prompt.input_refs | (task.system.input_refs if task.system else frozenset())
    attachments = task.attachments
    if attachments is not None:
        refs |= attachments.input_refs
    shaping: list[Any] = [
        task.prompt.source,
        task.system.source if task.system else None,
        {key: project.inputs.get(key) for key in refs},
        task.task.output_format,
        task.task.output_schema,
        task.options.model_dump(exclude_none=True),
        agent_print or agent_fingerprint(project.registry.get(task.agent)),
    ]
    if attachments is not None:  # only then: the fingerprints of tasks without attachments stay as they were
        shaping.append(attachments.fingerprint())
    return _digest(shaping)


def fingerprints(project: Project) -> list[str]:
    """Every task's fingerprint, in task order (each agent hashed once)."""
    agents = {name: agent_fingerprint(project.registry.get(name)) for name in {t.agent for t in project.tasks}}
    return [task_fingerprint(project, task, agents[task.agent]) for task in project.tasks]


def project_hash(project: Project, prints: list[str] | None = None) -> str:
    """A hash of the project file's bytes or, for a project built in code, of its name, tasks and edges.

    A task counts through its id, its dependencies and its fingerprint (``prints``, when already known).
    """
    file: Path | None = project.file
    if file is not None and file.is_file():
        return hashlib.sha256(file.read_bytes()).hexdigest()[:32]
    digest = hashlib.sha256(project.name.encode())
    for task, fingerprint in zip(project.tasks, prints or fingerprints(project), strict=True):
        digest.update(f"\n{task.id} {fingerprint} {' '.join(task.task.dependency_ids)}".encode())
    return digest.hexdigest()[:32]


@dataclass
class ResumePlan:
    """Which tasks a resumed run keeps and which it runs again, and why."""

    kept: dict[str, ExecutionResult] = field(default_factory=dict)
    """Succeeded tasks whose fingerprint still matches: not called again (instances of mapped tasks included;
    a mapped task's own result is never kept: it is collected again from its instances)."""
    changed: list[str] = field(default_factory=list)
    """Succeeded tasks whose prompt or agent changed since (or instances whose item did): they rerun."""
    downstream: list[str] = field(default_factory=list)
    """Succeeded tasks that rerun because a changed task is upstream of them."""


def plan_resume(project: Project, stored: StoredRun, fingerprints: list[str]) -> ResumePlan:
    """Keep the succeeded tasks whose fingerprint (and every ancestor's) is unchanged."""
    plan = ResumePlan()
    invalid: set[int] = set()
    for task in project.tasks:  # compile order is not topological: walk changed tasks' descendants
        entry = stored.tasks.get(task.id)
        if entry is not None and entry.result.succeeded and entry.fingerprint != fingerprints[task.index]:
            plan.changed.append(task.id)
            invalid.add(task.index)
    stack = [c for i in invalid for c in project.tasks[i].children]
    while stack:
        node = stack.pop()
        if node in invalid:
            continue
        invalid.add(node)
        task_id = project.tasks[node].id
        entry = stored.tasks.get(task_id)
        if entry is not None and entry.result.succeeded:
            plan.downstream.append(task_id)
        stack.extend(project.tasks[node].children)
    if project.mapped:  # instances of mapped tasks: kept one by one
        from orchestration.expansion import plan_items

        plan_items(project, stored, fingerprints, plan, invalid)
    for task in project.tasks:
        entry = stored.tasks.get(task.id)
        if task.index not in invalid and entry is not None and entry.result.succeeded and task.fan_out is None:
            plan.kept[task.id] = entry.result
    return plan

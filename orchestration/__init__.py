"""What runs when: tasks, results, the DAG scheduler, the orchestrator and the CLI.

Names are imported on first access, so ``import orchestration`` (and the CLI's
``--help``) stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestration.code_steps import RetryableStepError, StepContext
    from orchestration.events import EventBus, EventKind, RunEvent
    from orchestration.executor import TaskExecutor
    from orchestration.issues import ProjectValidationError, ValidationIssue
    from orchestration.lifecycle import TaskState
    from orchestration.models import (
        AgentTask,
        Dependency,
        ErrorInfo,
        ExecutionResult,
        ExecutionStatus,
        MappedResult,
        OutputFormat,
        ProjectDefaults,
        ProjectSpec,
        TaskType,
        TriggerRule,
    )
    from orchestration.orchestrator import ProjectOrchestrator
    from orchestration.project import Project
    from orchestration.store import RunStore

_EXPORTS = {
    "AgentTask": "orchestration.models",
    "Dependency": "orchestration.models",
    "ErrorInfo": "orchestration.models",
    "EventBus": "orchestration.events",
    "EventKind": "orchestration.events",
    "ExecutionResult": "orchestration.models",
    "ExecutionStatus": "orchestration.models",
    "MappedResult": "orchestration.models",
    "OutputFormat": "orchestration.models",
    "Project": "orchestration.project",
    "ProjectDefaults": "orchestration.models",
    "ProjectOrchestrator": "orchestration.orchestrator",
    "ProjectSpec": "orchestration.models",
    "ProjectValidationError": "orchestration.issues",
    "RetryableStepError": "orchestration.code_steps",
    "RunEvent": "orchestration.events",
    "RunStore": "orchestration.store",
    "StepContext": "orchestration.code_steps",
    "TaskExecutor": "orchestration.executor",
    "TaskState": "orchestration.lifecycle",
    "TaskType": "orchestration.models",
    "TriggerRule": "orchestration.models",
    "ValidationIssue": "orchestration.issues",
}

__all__ = [
    "AgentTask",
    "Dependency",
    "ErrorInfo",
    "EventBus",
    "EventKind",
    "ExecutionResult",
    "ExecutionStatus",
    "MappedResult",
    "OutputFormat",
    "Project",
    "ProjectDefaults",
    "ProjectOrchestrator",
    "ProjectSpec",
    "ProjectValidationError",
    "RetryableStepError",
    "RunEvent",
    "RunStore",
    "StepContext",
    "TaskExecutor",
    "TaskState",
    "TaskType",
    "TriggerRule",
    "ValidationIssue",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestration' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

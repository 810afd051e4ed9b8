"""What runs when: tasks, results, the DAG scheduler, the orchestrator and the CLI."""

from orchestration.events import EventBus, EventKind, RunEvent
from orchestration.executor import TaskExecutor
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.models import (
    AgentTask,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    OutputFormat,
    ProjectDefaults,
    ProjectSpec,
)
from orchestration.orchestrator import ProjectOrchestrator
from orchestration.project import Project

__all__ = [
    "AgentTask",
    "ErrorInfo",
    "EventBus",
    "EventKind",
    "ExecutionResult",
    "ExecutionStatus",
    "OutputFormat",
    "Project",
    "ProjectDefaults",
    "ProjectOrchestrator",
    "ProjectSpec",
    "ProjectValidationError",
    "RunEvent",
    "TaskExecutor",
    "ValidationIssue",
]

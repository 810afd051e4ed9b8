"""Who does the work: agent configs and the registry that loads them."""

from agent_registry.config import AgentConfig, AgentLimits, BudgetLimits, RetrySettings, StoreBudgets
from agent_registry.files import (
    MAX_ALIAS_FACTOR,
    MAX_FILE_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    FileFormatError,
    StructuredFile,
    read_structured_file,
)
from agent_registry.problems import FieldProblem, field_problems
from agent_registry.registry import (
    AgentConfigError,
    AgentIssue,
    AgentRegistry,
    UnknownAgentError,
    default_agents_file,
)

__all__ = [
    "MAX_ALIAS_FACTOR",
    "MAX_FILE_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "AgentConfig",
    "AgentConfigError",
    "AgentIssue",
    "AgentLimits",
    "AgentRegistry",
    "BudgetLimits",
    "FieldProblem",
    "FileFormatError",
    "RetrySettings",
    "StoreBudgets",
    "StructuredFile",
    "UnknownAgentError",
    "default_agents_file",
    "field_problems",
    "read_structured_file",
]

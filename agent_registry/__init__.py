"""Who does the work: agent configs and the registry that loads them."""

from agent_registry.config import AgentConfig, AgentLimits, RetrySettings
from agent_registry.files import FileFormatError, StructuredFile, read_structured_file
from agent_registry.registry import (
    AgentConfigError,
    AgentIssue,
    AgentRegistry,
    UnknownAgentError,
    default_agents_file,
)

__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "AgentIssue",
    "AgentLimits",
    "AgentRegistry",
    "FileFormatError",
    "RetrySettings",
    "StructuredFile",
    "UnknownAgentError",
    "default_agents_file",
    "read_structured_file",
]

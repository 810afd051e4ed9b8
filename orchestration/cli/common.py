"""Pieces shared by CLI commands: options, exit codes, input parsing, loading a project with clean errors."""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from agent_registry import AgentRegistry
    from orchestration.orchestrator import ProjectOrchestrator

__all__ = [
    "AgentsOpt",
    "ExitCode",
    "FileArg",
    "InputsOpt",
    "LogFormatOpt",
    "LogLevelOpt",
    "MaxConcurrencyOpt",
    "QuietOpt",
    "ResultsOpt",
    "StoreOpt",
    "fail_invalid",
    "load_orchestrator",
    "load_registry",
    "parse_inputs",
    "stderr_console",
]

FileArg = Annotated[Path, typer.Argument(help="Project task file (.yaml, .yml, .toml or .json).")]
AgentsOpt = Annotated[Path | None, typer.Option("--agents", help="Agents file to load.")]
InputsOpt = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="Override an input: KEY=VALUE (repeatable).")
]
MaxConcurrencyOpt = Annotated[
    int | None, typer.Option("--max-concurrency", min=1, help="Tasks running at once (overrides the file).")
]
StoreOpt = Annotated[
    Path | None,
    typer.Option("--store", help="Run store (SQLite) [default: $ORCHESTRATE_STORE or .orchestrate/runs.db]."),
]
ResultsOpt = Annotated[Path | None, typer.Option("--results", help="Write the run as JSON to this path.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display: only the run id, on stderr.")]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")]
LogFormatOpt = Annotated[str, typer.Option("--log-format", help="console or json.")]


class ExitCode(IntEnum):
    OK = 0
    TASKS_FAILED = 1
    INVALID_INPUT = 2
    INTERRUPTED = 130


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def fail_invalid(lines: list[str]) -> NoReturn:
    """Print validation problems (no traceback) and exit 2."""
    console = stderr_console()
    console.print(f"[bold red]error:[/] {len(lines)} problem{'s' if len(lines) != 1 else ''} found", markup=True)
    for line in lines:
        console.print(f"  - {line}", markup=False, soft_wrap=True)
    raise typer.Exit(ExitCode.INVALID_INPUT)


def parse_inputs(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values stay strings."""
    inputs: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail_invalid([f"--input {pair!r}: expected KEY=VALUE"])
        inputs[key.strip()] = value
    return inputs


def load_orchestrator(
    file: Path,
    *,
    inputs: dict[str, Any],
    agents_file: Path | None,
    check_agents: bool = True,
    **kwargs: Any,
) -> ProjectOrchestrator:
    """Load and validate ``file``; on any problem print it and exit 2."""
    from agent_registry import AgentConfigError, AgentRegistry
    from orchestration.issues import ProjectValidationError
    from orchestration.orchestrator import ProjectOrchestrator

    try:
        registry = AgentRegistry.default(agents_file)
        orchestrator = ProjectOrchestrator.from_file(file, registry=registry, inputs=inputs, **kwargs)
        orchestrator.validate(check_agents=check_agents)
    except ProjectValidationError as exc:
        fail_invalid([str(issue) for issue in exc.issues])
    except AgentConfigError as exc:
        fail_invalid([str(issue) for issue in exc.issues])
    return orchestrator


def load_registry(file: Path | None, agents_file: Path | None) -> AgentRegistry:
    """The agents a command sees: defaults and the agents file, plus ``file``'s own agents; exit 2 on errors."""
    from agent_registry import AgentConfigError, AgentRegistry

    if file is not None:
        orchestrator = load_orchestrator(file, inputs={}, agents_file=agents_file, check_agents=False)
        return orchestrator.validate(check_agents=False).registry
    try:
        return AgentRegistry.default(agents_file)
    except AgentConfigError as exc:
        fail_invalid([str(issue) for issue in exc.issues])

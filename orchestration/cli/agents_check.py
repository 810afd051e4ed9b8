"""``orchestrate agents check [FILE]``: a minimal real call per agent, with a verdict each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestration.cli.common import AgentsOpt, ExitCode

__all__ = ["agents_check"]


def agents_check(
    file: Annotated[Path | None, typer.Argument(help="Also check the agents of this project file.")] = None,
    agents_file: AgentsOpt = None,
    only: Annotated[list[str] | None, typer.Option("--agent", "-a", help="Check only this agent (repeatable).")] = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each agent.")] = 30.0,
) -> None:
    """Prove each agent's credentials and model name with one short real call (exit 1 if any fails)."""
    import anyio
    from rich.table import Table
    from rich.text import Text

    from agent_registry import UnknownAgentError
    from orchestration.agent_check import check_agents
    from orchestration.cli.common import console, fail_invalid, load_registry

    registry = load_registry(file, agents_file)
    unknown = [name for name in only or [] if name not in registry]
    if unknown:
        fail_invalid([str(UnknownAgentError(name, registry.names())) for name in unknown])
    results = anyio.run(lambda: check_agents(registry, only or None, timeout_s=timeout_s))
    table = Table(show_edge=False)
    for column in ("agent", "type", "model", "verdict", "detail"):
        table.add_column(column)
    for result in results:
        mark = "[green]ok[/]" if result.ok else f"[red]{result.verdict}[/]"
        table.add_row(result.agent, result.provider, result.model or "-", mark, Text(result.detail))
    console().print(table)
    if not all(result.ok for result in results):
        raise typer.Exit(ExitCode.TASKS_FAILED)

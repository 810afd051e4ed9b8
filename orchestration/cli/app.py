"""The ``orchestrate`` application: commands are registered here, implemented in sibling modules.

Heavy imports (the engine, rich tables, networkx) happen inside commands so that
``orchestrate --help`` stays fast; help and usage errors are click's plain text (typer's rich
help would import rich's markdown and traceback renderers first, about 100 ms).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from orchestration.cli.agents_check import agents_check
from orchestration.cli.cache import cache_app
from orchestration.cli.choices import format_option
from orchestration.cli.common import (
    AgentsOpt,
    AllowOutsideOpt,
    AttachmentDirsOpt,
    FileArg,
    InputsOpt,
    load_orchestrator,
    load_registry,
    parse_inputs,
)
from orchestration.cli.plan import plan
from orchestration.cli.reviews import review, reviews
from orchestration.cli.run import run
from orchestration.cli.runs import results, resume, runs_app
from orchestration.cli.serve import serve
from orchestration.cli.show import show
from orchestration.cli.watch import watch

__all__ = ["app", "main"]

app = typer.Typer(
    name="orchestrate",
    help="Run DAGs of LLM tasks across Gemini, Claude, GPT, OpenAI-compatible and local models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"orchestrate {version('orchestrate-llm')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run DAGs of LLM tasks across Gemini, Claude, GPT, OpenAI-compatible and local models."""


agents_app = typer.Typer(help="Inspect configured agents.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(agents_app, name="agents")
agents_app.command("check")(agents_check)
app.command()(run)
app.command()(resume)
app.add_typer(runs_app, name="runs")
app.add_typer(cache_app, name="cache")
app.command()(results)
app.command()(watch)
app.command()(show)
app.command()(reviews)
app.command()(review)
app.command()(plan)
app.command()(serve)


@app.command()
def validate(
    file: FileArg,
    inputs: InputsOpt = None,
    agents_file: AgentsOpt = None,
    attachment_dirs: AttachmentDirsOpt = None,
    allow_outside: AllowOutsideOpt = False,
) -> None:
    """Check a project file without running it (exit 2 when invalid).

    Code steps' modules are imported to check their functions: their top-level code runs."""
    from orchestration.cli.common import stderr_console

    orchestrator = load_orchestrator(
        file,
        inputs=parse_inputs(inputs),
        agents_file=agents_file,
        attachment_dirs=attachment_dirs or (),
        allow_outside=allow_outside,
    )
    project = orchestrator.validate()
    agents = sorted({t.agent for t in project.tasks})
    console = stderr_console()
    console.print(
        f"[green]valid[/]: {file}: project '{project.name}', {len(project.tasks)} tasks, agents: {', '.join(agents)}"
    )
    for task in project.mapped:  # one task, one instance per item at run time
        assert task.fan_out is not None
        console.print(f"  {task.id}: {task.fan_out.describe()}", markup=False, highlight=False)


class GraphFormat(StrEnum):
    MERMAID = "mermaid"
    DOT = "dot"


@app.command()
def graph(
    file: FileArg,
    fmt: Annotated[GraphFormat, format_option(GraphFormat, "mermaid or dot.")] = GraphFormat.MERMAID,
    agents_file: AgentsOpt = None,
) -> None:
    """Print the task graph as Mermaid or Graphviz DOT."""
    from orchestration.graph_export import to_dot, to_mermaid

    orchestrator = load_orchestrator(file, inputs={}, agents_file=agents_file, check_agents=False)
    project = orchestrator.validate(check_agents=False)
    typer.echo(to_mermaid(project) if fmt is GraphFormat.MERMAID else to_dot(project))


@app.command()
def schema() -> None:
    """Print the JSON Schema of project task files."""
    from orchestration.schema import project_json_schema

    typer.echo(json.dumps(project_json_schema(), indent=2))


@agents_app.command("list")
def agents_list(
    file: Annotated[Path | None, typer.Argument(help="Also list the agents of this project file.")] = None,
    agents_file: AgentsOpt = None,
) -> None:
    """List configured agents (keys are never shown, only where they come from)."""
    from rich.table import Table

    from orchestration.cli.common import console

    registry = load_registry(file, agents_file)
    table = Table(show_edge=False)
    for column in ("name", "type", "model", "base url", "key", "fallbacks"):
        table.add_column(column)
    for agent in registry.list():
        key = "config" if agent.api_key is not None else "env/none"
        table.add_row(
            agent.name, agent.agent_type, agent.model or "-", agent.base_url or "-", key, ", ".join(agent.fallbacks)
        )
    console().print(table)


def main() -> None:
    """Console-script entry point."""
    from orchestration.cli.common import ray_address_argument
    from orchestration.cli.streams import protect_standard_streams

    protect_standard_streams()
    app(ray_address_argument(sys.argv[1:]))

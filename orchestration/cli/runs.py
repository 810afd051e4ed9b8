"""Run-store commands: ``orchestrate resume``, ``orchestrate runs`` and ``orchestrate results``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestration.cli.common import (
    AgentsOpt,
    LogFormatOpt,
    LogLevelOpt,
    MaxConcurrencyOpt,
    QuietOpt,
    ResultsOpt,
    StoreOpt,
)
from orchestration.cli.run import configure_cli_logging, execute_run

__all__ = ["results", "resume", "runs"]

RunIdArg = Annotated[str, typer.Argument(help="The run's id (see `orchestrate runs`).")]


def resume(
    run_id: RunIdArg,
    results: ResultsOpt = None,
    store: StoreOpt = None,
    agents_file: AgentsOpt = None,
    max_concurrency: MaxConcurrencyOpt = None,
    quiet: QuietOpt = False,
    log_level: LogLevelOpt = "warning",
    log_format: LogFormatOpt = "console",
) -> None:
    """Continue a run: rerun only the tasks that did not succeed, with the project file as it is now.

    The agents file is the one the run was started with, unless ``--agents`` names another.
    """
    from orchestration.cli.common import fail_invalid, load_orchestrator
    from orchestration.store import RunStore

    configure_cli_logging(log_level, log_format)
    run_store = RunStore(store)
    try:
        record = run_store.get_run(run_id)
    except (KeyError, FileNotFoundError) as exc:
        fail_invalid([str(exc).strip("'\"")])
    if record.file is None:
        fail_invalid([f"run '{run_id}' was not started from a project file: resume it with the Python API"])
    orchestrator = load_orchestrator(
        record.file,
        inputs=record.inputs,
        agents_file=agents_file or record.agents_file,
        max_concurrency=max_concurrency,
        store=run_store,
    )
    execute_run(orchestrator, lambda: orchestrator.resume(run_id), results=results, quiet=quiet)


def runs(
    store: StoreOpt = None,
    project: Annotated[str | None, typer.Option("--project", help="Only this project's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest runs to show.")] = 20,
) -> None:
    """List the runs in the store, newest first."""
    from rich.console import Console
    from rich.table import Table

    from orchestration.store import RunStore

    table = Table(show_edge=False)
    for column in ("run id", "project", "status", "tasks", "started (UTC)", "finished (UTC)", "sessions"):
        table.add_column(column)
    for record in RunStore(store).list_runs(project, limit):
        table.add_row(
            record.run_id,
            record.project,
            record.status.value,
            str(len(record.task_ids)),
            f"{record.started_at:%Y-%m-%d %H:%M:%S}",
            f"{record.finished_at:%Y-%m-%d %H:%M:%S}" if record.finished_at else "-",
            str(record.sessions),
        )
    Console(width=200).print(table)


def results(
    run_id: RunIdArg,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, jsonl or md.")] = "json",
    store: StoreOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Export a run's results as JSON (the results document), JSON Lines or Markdown."""
    from orchestration.cli.common import fail_invalid
    from orchestration.store import ExportFormat, RunStore, export_run

    if fmt not in tuple(ExportFormat):
        fail_invalid([f"--format must be one of {', '.join(ExportFormat)}"])
    try:
        text = export_run(RunStore(store).load_run(run_id), fmt)
    except (KeyError, FileNotFoundError) as exc:
        fail_invalid([str(exc).strip("'\"")])
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")

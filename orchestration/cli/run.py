"""``orchestrate run``: execute a project with live progress; exit 0, 1, 2 or 130."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import ExitCode, load_orchestrator, parse_inputs

if TYPE_CHECKING:
    from orchestration.models import ExecutionResult
    from orchestration.orchestrator import ProjectOrchestrator

__all__ = ["run"]

FileArg = Annotated[Path, typer.Argument(help="Project task file (.yaml, .yml, .toml or .json).")]


async def _run_until_interrupted(orchestrator: ProjectOrchestrator) -> bool:
    """Run the project; return True if SIGINT/SIGTERM interrupted it (finished results are kept)."""
    import anyio

    interrupted = False
    async with anyio.create_task_group() as group:

        async def watch_signals() -> None:
            nonlocal interrupted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch_signals)
        await orchestrator.run()
        group.cancel_scope.cancel()
    return interrupted


def run(
    file: FileArg,
    results: Annotated[Path | None, typer.Option("--results", help="Write the run as JSON to this path.")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", min=1, help="Tasks running at once (overrides the file).")
    ] = None,
    inputs: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="Override an input: KEY=VALUE (repeatable).")
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Cancel running tasks once one fails.")] = False,
    agents_file: Annotated[Path | None, typer.Option("--agents", help="Agents file to load.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "warning",
    log_format: Annotated[str, typer.Option("--log-format", help="console or json.")] = "console",
) -> None:
    """Run a project file."""
    import anyio

    from llm_abstractions.local import add_load_listener, remove_load_listener
    from orchestration.cli.common import fail_invalid, stderr_console
    from orchestration.cli.progress import ProgressView, print_summary
    from orchestration.log import configure_logging, get_logger, log_events
    from orchestration.models import ExecutionStatus
    from orchestration.results import write_results

    if log_format not in ("console", "json") or log_level.lower() not in ("debug", "info", "warning", "error"):
        fail_invalid(["--log-format must be console or json; --log-level debug, info, warning or error"])
    configure_logging(log_level, "json" if log_format == "json" else "console")
    orchestrator = load_orchestrator(
        file,
        inputs=parse_inputs(inputs),
        agents_file=agents_file,
        max_concurrency=max_concurrency,
        fail_fast=fail_fast or None,
    )
    console = stderr_console()
    orchestrator.on_event(log_events(get_logger("orchestrate")))
    total = len(orchestrator.spec.tasks)
    start = time.monotonic()
    view = ProgressView(console, total)
    if not quiet:
        orchestrator.on_event(view)
        add_load_listener(view.model_load)
    try:
        with view if not quiet else _nothing():
            interrupted = anyio.run(_run_until_interrupted, orchestrator)
    finally:
        if not quiet:
            remove_load_listener(view.model_load)
    final: dict[str, ExecutionResult] = orchestrator.results
    if results is not None and orchestrator.run_id is not None:
        write_results(results, orchestrator.spec.name, orchestrator.run_id, final)
    if not quiet:
        print_summary(console, final, time.monotonic() - start)
        if results is not None:
            console.print(f"results written to {results}")
    if interrupted:
        console.print("[magenta]interrupted[/]: finished results were kept")
        raise typer.Exit(ExitCode.INTERRUPTED)
    if any(r.status is not ExecutionStatus.SUCCESS for r in final.values()):
        raise typer.Exit(ExitCode.TASKS_FAILED)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

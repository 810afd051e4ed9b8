"""Run-store commands: ``orchestrate resume``, ``orchestrate runs [list|delete|prune]`` and ``orchestrate results``.

A run is named by its id, a unique prefix of it, or ``latest`` (:meth:`~orchestration.store.RunStore.resolve_run_id`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestration.cli.choices import format_option
from orchestration.cli.common import (
    AgentsOpt,
    AllowOutsideOpt,
    AttachmentDirsOpt,
    BudgetOpt,
    LogFormatOpt,
    LogLevelOpt,
    MaxConcurrencyOpt,
    NoCacheOpt,
    NoWaitOpt,
    OtelOpt,
    QuietOpt,
    RayAddressOpt,
    RayOpt,
    RefreshCacheOpt,
    ResultsOpt,
    RunRefArg,
    StoreOpt,
    apply_cache_flags,
    open_store,
    ray_options,
)
from orchestration.cli.run import configure_cli_logging, execute_run
from orchestration.export_format import ExportFormat

__all__ = ["results", "resume", "runs", "runs_app"]

ProjectOpt = Annotated[str | None, typer.Option("--project", help="Only this project's runs.")]


def resume(
    run_ref: RunRefArg,
    results: ResultsOpt = None,
    store: StoreOpt = None,
    agents_file: AgentsOpt = None,
    max_concurrency: MaxConcurrencyOpt = None,
    quiet: QuietOpt = False,
    log_level: LogLevelOpt = "warning",
    log_format: LogFormatOpt = "console",
    no_wait: NoWaitOpt = False,
    otel: OtelOpt = False,
    no_cache: NoCacheOpt = False,
    refresh_cache: RefreshCacheOpt = False,
    budget_usd: BudgetOpt = None,
    attachment_dirs: AttachmentDirsOpt = None,
    allow_outside: AllowOutsideOpt = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Continue a run: rerun only the tasks that did not succeed, with the project file as it is now.

    The agents file is the one the run was started with, unless ``--agents`` names another.
    """
    from orchestration.cli.common import fail_invalid, load_orchestrator, open_run

    log_events_too = configure_cli_logging(log_level, log_format)
    run_store, run_id = open_run(store, run_ref)
    record = run_store.get_run(run_id)
    if record.file is None:
        fail_invalid([f"run '{run_id}' was not started from a project file: resume it with the Python API"])
    orchestrator = load_orchestrator(
        record.file,
        inputs=record.inputs,
        agents_file=agents_file or record.agents_file,
        max_concurrency=max_concurrency,
        store=run_store,
        attachment_dirs=attachment_dirs or (),
        allow_outside=allow_outside,
        **ray_options(ray, ray_address),
    )
    orchestrator.wait_for_reviews = not no_wait
    apply_cache_flags(orchestrator, no_cache, refresh_cache)
    orchestrator.budget_usd = budget_usd
    execute_run(
        orchestrator,
        lambda: orchestrator.resume(run_id),
        results=results,
        quiet=quiet,
        log_events_too=log_events_too,
        otel=otel,
    )


runs_app = typer.Typer(invoke_without_command=True, rich_markup_mode=None)


@runs_app.callback()
def runs(
    ctx: typer.Context,
    store: StoreOpt = None,
    project: ProjectOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest runs to show.")] = 20,
) -> None:
    """List the runs in the store, newest first (as `runs list` does); delete or prune them."""
    if ctx.invoked_subcommand is None:
        runs_list(store, project, limit)


@runs_app.command("list")
def runs_list(
    store: StoreOpt = None,
    project: ProjectOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest runs to show.")] = 20,
) -> None:
    """List the runs in the store, newest first."""
    from rich.table import Table

    from orchestration.cli.common import console, store_path

    run_store = open_store(store_path(store))
    records = run_store.list_runs(project, limit)
    if not records:
        typer.echo(f"no runs{f' of project {project!r}' if project else ''} in {run_store.path}", err=True)
        return
    table = Table(show_edge=False)
    for column in ("run id", "project", "status", "tasks", "started (UTC)", "finished (UTC)", "sessions"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.run_id,
            record.project,
            record.status.value,
            str(len(record.task_ids)),
            f"{record.started_at:%Y-%m-%d %H:%M:%S}",
            f"{record.finished_at:%Y-%m-%d %H:%M:%S}" if record.finished_at else "-",
            str(record.sessions),
        )
    console().print(table)


@runs_app.command("delete")
def runs_delete(
    ctx: typer.Context,
    run_refs: Annotated[
        list[str], typer.Argument(metavar="RUN", help="Runs to delete: ids, unique prefixes or `latest`.")
    ],
    store: StoreOpt = None,
) -> None:
    """Delete runs and their results, then compact the store (nothing is deleted if one is not found)."""
    from orchestration.cli.common import open_runs

    run_store, run_ids = open_runs(_group_store(ctx, store), run_refs)
    run_store.delete_runs(run_ids)
    for run_id in run_ids:
        typer.echo(f"deleted run {run_id}", err=True)


@runs_app.command("prune")
def runs_prune(
    ctx: typer.Context,
    keep: Annotated[int | None, typer.Option("--keep", min=0, help="Keep the newest N runs.")] = None,
    older_than: Annotated[
        float | None, typer.Option("--older-than", min=0, help="Delete runs started more than DAYS days ago.")
    ] = None,
    project: ProjectOpt = None,
    store: StoreOpt = None,
) -> None:
    """Delete old runs and their results, then compact the store.

    With both options a run is deleted only when both say so (outside the newest N and older than DAYS).
    """
    from datetime import timedelta

    from orchestration.cli.common import fail_invalid, store_path

    if keep is None and older_than is None:
        fail_invalid(["runs prune: give --keep N, --older-than DAYS, or both"])
    run_store = open_store(store_path(_group_store(ctx, store)))
    age = timedelta(days=older_than) if older_than is not None else None
    deleted = run_store.prune(keep=keep, older_than=age, project=project)
    typer.echo(f"deleted {len(deleted)} run{'' if len(deleted) == 1 else 's'} from {run_store.path}", err=True)


def _group_store(ctx: typer.Context, store: Path | None) -> Path | None:
    """A subcommand's ``--store``, else the one given to ``runs`` itself (``runs --store PATH prune ...``)."""
    if store is None and ctx.parent is not None:
        parent: Path | None = ctx.parent.params.get("store")
        return parent
    return store


def results(
    run_ref: RunRefArg,
    fmt: Annotated[ExportFormat, format_option(ExportFormat, "json, jsonl or md.")] = ExportFormat.JSON,
    store: StoreOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    max_chars: Annotated[
        int | None, typer.Option("--max-chars", min=1, help="md: cut outputs and errors to N characters.")
    ] = None,
) -> None:
    """Export a run's results as JSON (the results document), JSON Lines or Markdown (outputs whole unless
    ``--max-chars``)."""
    from orchestration.cli.common import fail_invalid, open_run
    from orchestration.store import export_run

    if max_chars is not None and fmt is not ExportFormat.MD:
        fail_invalid(["--max-chars applies to --format md only"])
    run_store, run_id = open_run(store, run_ref)
    text = export_run(run_store.load_run(run_id), fmt, max_chars=max_chars)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")

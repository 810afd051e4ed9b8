"""``orchestrate run``: execute a project with live progress; exit 0, 1, 2, 3 (``--no-wait``: waiting for a
review decision) or 130."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import (
    AgentsOpt,
    AllowOutsideOpt,
    AttachmentDirsOpt,
    BudgetOpt,
    ExitCode,
    FileArg,
    InputsOpt,
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
    StoreOpt,
    apply_cache_flags,
    load_orchestrator,
    open_store,
    parse_inputs,
    ray_options,
    store_path,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from rich.console import Console

    from orchestration.cli.progress import ProgressView
    from orchestration.events import RunEvent
    from orchestration.models import ExecutionResult
    from orchestration.orchestrator import ProjectOrchestrator

__all__ = ["configure_cli_logging", "execute_run", "run"]


async def _run_until_interrupted(start: Callable[[], Awaitable[object]]) -> bool:
    """Run ``start()``; return True if SIGINT/SIGTERM interrupted it (finished results are kept)."""
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
        await start()
        group.cancel_scope.cancel()
    return interrupted


def _tracer_provider(otel: bool) -> TracerProvider | None:
    """``--otel`` or ``ORCHESTRATE_OTEL``: a provider exporting with OTLP (exit 2 without the otel extra)."""
    from orchestration.telemetry import wanted

    if not (otel or wanted()):
        return None
    try:
        from orchestration.telemetry import otlp_provider

        return otlp_provider()
    except ImportError:
        from orchestration.cli.common import fail_invalid

        fail_invalid(["--otel needs OpenTelemetry: pip install 'orchestrate-llm[otel]'"])


def configure_cli_logging(log_level: str, log_format: str) -> bool:
    """Validate ``--log-level`` / ``--log-format`` (exit 2) and configure logging; whether to log task events."""
    from orchestration.cli.common import fail_invalid
    from orchestration.log import configure_logging

    if log_format not in ("console", "json") or log_level.lower() not in ("debug", "info", "warning", "error"):
        fail_invalid(["--log-format must be console or json; --log-level debug, info, warning or error"])
    configure_logging(log_level, "json" if log_format == "json" else "console")
    return log_format == "json" or log_level.lower() in ("debug", "info")


def run(
    file: FileArg,
    results: ResultsOpt = None,
    max_concurrency: MaxConcurrencyOpt = None,
    inputs: InputsOpt = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Cancel running tasks once one fails.")] = False,
    agents_file: AgentsOpt = None,
    quiet: QuietOpt = False,
    log_level: LogLevelOpt = "warning",
    log_format: LogFormatOpt = "console",
    run_id: Annotated[str | None, typer.Option("--run-id", help="Id of the new run [default: time + random].")] = None,
    store: StoreOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the latest unfinished run of this project instead.")
    ] = False,
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
    """Run a project file (recorded in the run store, so that it can be resumed).

    A project with code steps (type: python) runs their Python code, as a Makefile runs its commands."""
    from orchestration.cli.common import fail_invalid

    log_events_too = configure_cli_logging(log_level, log_format)
    orchestrator = load_orchestrator(
        file,
        inputs=parse_inputs(inputs),
        agents_file=agents_file,
        max_concurrency=max_concurrency,
        fail_fast=fail_fast or None,
        store=open_store(store_path(store, file)),
        attachment_dirs=attachment_dirs or (),
        allow_outside=allow_outside,
        **ray_options(ray, ray_address),
    )
    orchestrator.wait_for_reviews = not no_wait
    apply_cache_flags(orchestrator, no_cache, refresh_cache)
    orchestrator.budget_usd = budget_usd
    if not resume:
        execute_run(
            orchestrator,
            lambda: orchestrator.run(run_id=run_id),
            results=results,
            quiet=quiet,
            log_events_too=log_events_too,
            otel=otel,
        )
        return
    assert orchestrator.store is not None
    name = orchestrator.spec.name
    unfinished = orchestrator.store.latest_unfinished(name)
    if unfinished is None:
        fail_invalid([f"--resume: no unfinished run of project '{name}' in {orchestrator.store.path}"])
    if run_id is not None and run_id != unfinished.run_id:
        fail_invalid([f"--resume picks run '{unfinished.run_id}'; do not pass a different --run-id"])
    execute_run(
        orchestrator,
        lambda: orchestrator.resume(unfinished.run_id),
        results=results,
        quiet=quiet,
        log_events_too=log_events_too,
        otel=otel,
    )


def execute_run(
    orchestrator: ProjectOrchestrator,
    work: Callable[[], Awaitable[object]],
    *,
    results: Path | None,
    quiet: bool,
    log_events_too: bool = False,
    otel: bool = False,
) -> None:
    """Run ``work()`` (a run or a resume) with progress, write results, exit with the right code.

    ``otel`` (or ``ORCHESTRATE_OTEL``): trace it, exporting the spans with OTLP before returning.

    Task outcomes are logged only when ``log_events_too`` (``--log-level info`` or ``--log-format json``):
    otherwise the progress display and the summary show each failure once. A run another process is running
    (it holds the run's lease) exits 2; a run whose lease another process took over meanwhile stops and exits 1,
    each with its message and no traceback.
    """
    import anyio

    from llm_abstractions.local import add_load_listener, remove_load_listener
    from orchestration.cli.common import stderr_console
    from orchestration.cli.progress import ProgressView, print_summary
    from orchestration.log import get_logger, log_events
    from orchestration.results import RunStatus, write_results

    console = stderr_console()
    provider = _tracer_provider(otel)
    orchestrator.otel = provider or False
    view = ProgressView(console, len(orchestrator.spec.tasks))
    if log_events_too:
        orchestrator.on_event(log_events(get_logger("orchestrate")))
    orchestrator.on_event(lambda event: _report_start(console, orchestrator, view, event, quiet=quiet))
    orchestrator.on_event(lambda event: _report_budget(console, event))
    start = time.monotonic()
    if not quiet:
        orchestrator.on_event(view)
        add_load_listener(view.model_load)
    try:
        with view if not quiet else _nothing():
            interrupted = anyio.run(_run_until_interrupted, work)
    except Exception as exc:
        _exit_if_refused(exc)
        raise
    finally:
        if not quiet:
            remove_load_listener(view.model_load)
        if provider is not None:
            provider.shutdown()  # exports what is batched
    final: dict[str, ExecutionResult] = orchestrator.results
    if results is not None and orchestrator.run_id is not None:
        status = RunStatus.WAITING if orchestrator.stopped_waiting else None
        write_results(results, orchestrator.spec.name, orchestrator.run_id, final, status)
    if not quiet:
        kept = orchestrator.resume_plan.kept if orchestrator.resume_plan is not None else {}
        print_summary(console, final, time.monotonic() - start, kept=kept, failures_shown=view.failures_shown)
        if results is not None:
            console.print(f"results written to {results}", markup=False)
    if interrupted:
        console.print("interrupted: finished results were kept", markup=False)
        raise typer.Exit(ExitCode.INTERRUPTED)
    if orchestrator.stopped_waiting:
        run_id = orchestrator.run_id
        console.print(
            f"waiting for review decisions: orchestrate reviews {run_id}; then orchestrate resume {run_id}",
            markup=False,
        )
        raise typer.Exit(ExitCode.WAITING)
    if RunStatus.of(final) is not RunStatus.SUCCESS:  # a branch a false condition skipped fails nothing
        raise typer.Exit(ExitCode.TASKS_FAILED)


def _exit_if_refused(exc: BaseException) -> None:
    """When the run's lease stopped it, or it was refused before it started (a run owned by another session, a
    budget a task's calls could exceed), also inside a task group's exception group: say so and exit."""
    from orchestration.cli.common import fail_invalid, stderr_console
    from orchestration.issues import ProjectValidationError
    from orchestration.ray_cluster import RayUnavailableError
    from orchestration.store import LeaseLostError, RunOwnedError

    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            _exit_if_refused(inner)
    elif isinstance(exc, RunOwnedError | RayUnavailableError):
        fail_invalid([str(exc)])
    elif isinstance(exc, ProjectValidationError):
        fail_invalid([str(issue) for issue in exc.issues])
    elif isinstance(exc, LeaseLostError):
        from rich.markup import escape

        stderr_console().print(f"[bold red]error:[/] {escape(str(exc))}", markup=True)
        raise typer.Exit(ExitCode.TASKS_FAILED)


def _report_start(
    console: Console, orchestrator: ProjectOrchestrator, view: ProgressView, event: RunEvent, *, quiet: bool
) -> None:
    """When the run starts: name it when ``quiet`` (the progress view does otherwise); after a resume, count
    from what this invocation runs and say what reruns because the project changed."""
    if event.kind != "run_started":
        return
    plan = orchestrator.resume_plan
    if quiet:
        console.print(f"run {event.run_id}", markup=False, highlight=False)
    if plan is None:
        return
    from orchestration.items import mapped_task_of

    view.kept = len(plan.kept)
    kept_tasks = sum(1 for task_id in plan.kept if mapped_task_of(task_id) is None)  # instances count once expanded
    view.total = len(orchestrator.spec.tasks) - kept_tasks
    if plan.changed:
        console.print(f"rerun because the project changed: {_listed(plan.changed)}", markup=False)
    if plan.downstream:
        console.print(f"rerun because an upstream task changed: {_listed(plan.downstream)}", markup=False)


def _listed(task_ids: list[str], most: int = 20) -> str:
    """Task ids joined with commas: the first ``most`` of them, then how many more."""
    shown = ", ".join(task_ids[:most])
    return shown if len(task_ids) <= most else f"{shown} and {len(task_ids) - most} more"


def _report_budget(console: Console, event: RunEvent) -> None:
    """A line when a budget account crosses its warning share, and when it has no room left."""
    status = event.budget
    if status is None:
        return
    caps = [f"${status.spent_usd:.4f} of ${status.cap_usd:g}" if status.cap_usd is not None else None]
    caps.append(f"{status.spent_tokens} of {status.cap_tokens} tokens" if status.cap_tokens is not None else None)
    spent = ", ".join(cap for cap in caps if cap)
    what = "spent" if event.kind == "budget_warning" else "exhausted: no new call starts;"
    console.print(f"budget ({status.account}) {what} {spent}", markup=False)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

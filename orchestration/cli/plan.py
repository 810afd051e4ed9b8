"""``orchestrate plan``: what a run of a project would do and cost, with no model call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import (
    AgentsOpt,
    FileArg,
    InputsOpt,
    NoCacheOpt,
    RefreshCacheOpt,
    StoreOpt,
    apply_cache_flags,
    load_orchestrator,
    open_store,
    parse_inputs,
    store_path,
)

if TYPE_CHECKING:
    from orchestration.plan import Range, RunPlan

__all__ = ["plan"]


def plan(
    file: FileArg,
    inputs: InputsOpt = None,
    agents_file: AgentsOpt = None,
    store: StoreOpt = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Plan a resume of the latest unfinished run: its successes are kept.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    no_cache: NoCacheOpt = False,
    refresh_cache: RefreshCacheOpt = False,
    count_tokens: Annotated[
        bool,
        typer.Option(
            "--count-tokens",
            help="Ask the providers' free token-counting endpoints for exact input counts (Anthropic, Gemini;"
            " OpenAI's are counted offline). No model is called.",
        ),
    ] = False,
) -> None:
    """Show what a run would do (call, answer from the cache, keep) and cost, per task, agent and in all.

    No provider is contacted: input tokens are counted with the model's tokenizer where one is available offline
    (else estimated, and marked ~), output tokens come from the store's history (else max_tokens). With
    --count-tokens the providers' free token-counting endpoints count them, and the plan says so."""
    import json

    import anyio

    from orchestration.plan import plan_run
    from orchestration.store import plan_resume

    orchestrator = load_orchestrator(
        file, inputs=parse_inputs(inputs), agents_file=agents_file, store=open_store(store_path(store, file))
    )
    apply_cache_flags(orchestrator, no_cache, refresh_cache)
    project = orchestrator.validate()
    run_store = orchestrator.store
    assert run_store is not None
    kept = {}
    if resume:
        unfinished = run_store.latest_unfinished(project.name)
        if unfinished is None:
            from orchestration.cli.common import fail_invalid

            fail_invalid([f"--resume: no unfinished run of project '{project.name}' in {run_store.path}"])
        stored = run_store.load_run(unfinished.run_id)
        kept = plan_resume(project, stored, orchestrator._fingerprints(project)).kept
    planned = anyio.run(
        lambda: plan_run(
            project, run_store, kept=kept, cache_override=orchestrator.cache_override, count_tokens=count_tokens
        )
    )
    if as_json:
        typer.echo(json.dumps(planned.to_json(), indent=2))
    else:
        _print(planned)


def _print(planned: RunPlan) -> None:
    from rich.table import Table

    from orchestration.cli.common import console

    table = Table(show_edge=False)
    for column in ("task", "agent", "action", "input tokens", "output tokens", "cost (USD)"):
        table.add_column(column, justify="left" if column in ("task", "agent", "action") else "right")
    for task_id, task in planned.tasks.items():
        tokens_in = "-" if task.input_tokens is None else f"{'~' if task.estimated else ''}{task.input_tokens}"
        tokens_out = "-" if task.output_tokens is None else _span(task.output_tokens)
        cost = _money(task.cost_usd) if task.action == "call" else "0"
        action = f"{task.action} x{task.calls}" if task.calls != 1 else task.action  # a mapped task's items
        if task.batch_wait_s is not None:
            action += " (batch)"
        table.add_row(task_id, task.agent, action, tokens_in, tokens_out, cost)
    console().print(table)
    total, per_agent = planned.totals()
    for name, totals in [*sorted(per_agent.items()), ("total", total)]:
        unpriced = f" ({totals.unpriced} without a known price)" if totals.unpriced else ""
        line = (
            f"{name}: {totals.calls} calls, {totals.input_tokens} input tokens, "
            f"{_span(totals.output_tokens)} output tokens, ${_money(totals.cost_usd)}{unpriced}"
        )
        typer.echo(line)
    counted = sum(task.counted_by == "provider" for task in planned.tasks.values())
    if counted:
        typer.echo(f"input tokens of {counted} tasks counted by the providers' token-counting endpoints (free)")
    waits = [task.batch_wait_s for task in planned.tasks.values() if task.batch_wait_s is not None]
    if waits:
        low, high = min(w[0] for w in waits), max(w[1] for w in waits)
        typer.echo(
            f"batch: {len(waits)} calls at batch prices; their answers come after {_duration(low)} to {_duration(high)}"
            " (most batch jobs end within an hour)"
        )
    typer.echo("~: estimated; no model was called")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def _span(values: tuple[int, int]) -> str:
    low, high = values
    return str(low) if low == high else f"{low}-{high}"


def _money(values: Range | None) -> str:
    if values is None:
        return "-"
    low, high = values
    return f"{low:.4f}" if abs(high - low) < 5e-5 else f"{low:.4f}-{high:.4f}"

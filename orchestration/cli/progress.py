"""Live progress while a run executes, and the summary after it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from llm_abstractions.errors import REFUSED_BEFORE_SENDING
from llm_abstractions.wrappers import PaceReason, PacingStatus
from orchestration.events import EventKind, RunEvent
from orchestration.models import ExecutionResult, ExecutionStatus

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from llm_abstractions.local import LoadEvent

__all__ = ["ProgressView", "print_summary"]

_STYLE = {
    ExecutionStatus.SUCCESS: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.SKIPPED: "yellow",
    ExecutionStatus.CANCELLED: "magenta",
}


_WHY_PACED = {
    PaceReason.CONFIGURED: "its configured limit",
    PaceReason.HEADERS: "the provider's rate-limit headers",
    PaceReason.RATE_LIMITED: "429 answers",
}


def describe_batch(job: Mapping[str, Any]) -> str:
    """A batch job in a line: its id at the provider, agent, tasks, state and the provider's counts."""
    counts = ", ".join(f"{count} {name}" for name, count in (job.get("counts") or {}).items() if count)
    name = job.get("batch_id") or job["job_id"]
    return f"batch job {name} ({job['agent']}, {job['tasks']} tasks): {job['state']}" + (
        f"; {counts}" if counts else ""
    )


def describe_pace(endpoint: str, pace: PacingStatus) -> str:
    """One line on an endpoint's pace, e.g. ``gpt api.openai.com/v1 paced at 2,940 requests/min (...)``."""
    if pace.reason is PaceReason.UNLIMITED:
        return f"{endpoint} no longer paced"
    rates = [
        f"{rate:,.0f} {unit}/min"
        for rate, unit in ((pace.requests_per_minute, "requests"), (pace.tokens_per_minute, "tokens"))
        if rate is not None
    ]
    paused = f", paused {pace.paused_s:.1f}s" if pace.paused_s > 0 else ""
    return f"{endpoint} paced at {' and '.join(rates) or 'a pause'} (following {_WHY_PACED[pace.reason]}{paused})"


LINE_PER_TASK_UP_TO = 100
"""Without a terminal, projects of up to this many tasks get a line per finished task; larger ones a
one-line summary every :data:`SUMMARY_EVERY_S` seconds (and a line for each task that fails)."""
SUMMARY_EVERY_S = 5.0


class ProgressView:
    """Consumes run events: a live panel on a terminal; plain lines otherwise (see :data:`LINE_PER_TASK_UP_TO`).

    Plain lines are written whole (never wrapped), for CI logs and files.
    """

    def __init__(self, console: Console, total: int, *, kept: int = 0) -> None:
        """``total``: the tasks this invocation runs; ``kept``: the run's tasks kept from an earlier session."""
        self.console = console
        self.total = total
        self.kept = kept
        self.failures_shown: set[str] = set()
        """Failed tasks whose error was printed as it happened (the summary does not repeat it)."""
        self.counts: Counter[ExecutionStatus] = Counter()
        self.running: dict[str, float] = {}
        self.batched: set[str] = set()
        """Tasks whose requests wait in batch jobs."""
        self.jobs: dict[str, dict[str, Any]] = {}
        """Each batch job's latest state (a ``batch_status`` event's ``batch``), by job id."""
        self.paced: dict[str, PacingStatus] = {}
        """Each endpoint's latest pace."""
        self.started = time.monotonic()
        self.live: Any = None
        self.per_task = total <= LINE_PER_TASK_UP_TO
        self.next_summary = self.started + SUMMARY_EVERY_S

    def __enter__(self) -> ProgressView:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self, console=self.console, refresh_per_second=8, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def __call__(self, event: RunEvent) -> None:
        if event.kind is EventKind.RUN_STARTED:
            if self.kept:
                whole, kept = self.total + self.kept, self.kept
                self._write(f"run {event.run_id} resumed: {whole} tasks, {kept} kept from before, {self.total} to run")
            else:
                self._write(f"run {event.run_id} started: {self.total} tasks")
        elif event.kind is EventKind.TASK_STARTED and event.task_id is not None:
            self.running[event.task_id] = time.monotonic()
        elif event.kind is EventKind.TASK_EXPANDED and event.items is not None:
            self.total += event.items  # a mapped task's instances: tasks of their own
            self.per_task = self.per_task and self.total <= LINE_PER_TASK_UP_TO
            if self.live is None and self.per_task:
                self._write(f"{event.task_id}: {event.items} items to run")
        elif event.kind is EventKind.TASK_BATCHED and event.task_id is not None:
            self.running.pop(event.task_id, None)
            self.batched.add(event.task_id)
        elif event.batch is not None:
            self.batch_job(event.batch.as_json())
        elif event.pace is not None and event.endpoint is not None:
            before = self.paced.get(event.endpoint)
            self.paced[event.endpoint] = event.pace
            if self.live is None and (before is None or before.reason is not event.pace.reason):
                self._write(describe_pace(event.endpoint, event.pace))
        elif event.kind is EventKind.REVIEW_REQUESTED and event.task_id is not None:
            run, task = event.run_id, event.task_id
            self.console.print(
                f"review: task {task} waits for a decision: orchestrate review {run} {task} approve"
                f" | reject --message TEXT | edit (orchestrate reviews {run} lists them)",
                markup=False,
                highlight=False,
            )
        elif event.kind is EventKind.REVIEW_DECIDED and event.gate is not None:
            gate = event.gate
            self.console.print(
                f"review: task {event.task_id}: {gate.decision} by {gate.actor}", markup=False, highlight=False
            )
        elif event.result is not None:
            result = event.result
            self.running.pop(result.task_id, None)
            self.batched.discard(result.task_id)
            self.counts[result.status] += 1
            if self.live is not None:
                return
            if self.per_task or result.status is ExecutionStatus.FAILED:
                self._print_line(result)
                if result.status is ExecutionStatus.FAILED:
                    self.failures_shown.add(result.task_id)
            elif (now := time.monotonic()) >= self.next_summary:
                self.next_summary = now + SUMMARY_EVERY_S
                self._write(self._summary_line(now))

    def batch_job(self, job: Mapping[str, Any]) -> None:
        """Show where a batch job is (a ``batch_status`` event's ``batch``: live, or read from the store)."""
        if job["state"] == "in_progress":
            self.jobs[str(job["job_id"])] = dict(job)
        else:
            self.jobs.pop(str(job["job_id"]), None)
        if self.live is None:
            self._write(describe_batch(job))

    def model_load(self, event: LoadEvent) -> None:
        """Show local models loading: the first task of a local agent waits for it."""
        if event.phase == "loading":
            self.console.print(f"loading {event.runner} model {event.model} ...", highlight=False)
        elif event.phase == "loaded":
            self.console.print(f"loaded {event.model} in {event.elapsed_s or 0:.1f}s", highlight=False)
        elif event.phase == "failed":
            self.console.print(f"[red]could not load[/] {event.model}: {event.error}", highlight=False)

    def _write(self, line: str) -> None:
        """One plain line, unwrapped and unstyled."""
        self.console.file.write(line + "\n")

    def _print_line(self, result: ExecutionResult) -> None:
        detail = f"{result.duration_s:.2f}s" if result.duration_s is not None else ""
        if result.error is not None:
            detail = f"{detail} {result.error.type}: {result.error.message}".strip()
        done = sum(self.counts.values())
        self._write(f"[{done}/{self.total}] {result.status.value:<9} {result.task_id} {detail}".rstrip())

    def _summary_line(self, now: float) -> str:
        counts = ", ".join(f"{self.counts[s]} {s.value}" for s in _STYLE if self.counts[s])
        done = sum(self.counts.values())
        batched = f" {len(self.batched)} batched;" if self.batched else ""
        return f"[{done}/{self.total}] {counts}; {len(self.running)} running;{batched} {now - self.started:.1f}s"

    def __rich__(self) -> RenderableType:
        from rich.markup import escape
        from rich.table import Table

        elapsed = time.monotonic() - self.started
        done = sum(self.counts.values())
        table = Table.grid(padding=(0, 2))
        counts = "  ".join(f"[{_STYLE[s]}]{s.value} {self.counts[s]}[/]" for s in _STYLE if self.counts[s])
        table.add_row(f"[bold]{done}/{self.total}[/] done", f"running {len(self.running)}", counts, f"{elapsed:.1f}s")
        now = time.monotonic()
        for task_id, since in sorted(self.running.items(), key=lambda item: item[1])[:10]:
            table.add_row(f"  [cyan]{task_id}[/]", f"{now - since:.1f}s", "", "")
        if len(self.running) > 10:
            table.add_row(f"  ... and {len(self.running) - 10} more", "", "", "")
        for job in self.jobs.values():
            table.add_row(f"  [magenta]{escape(describe_batch(job))}[/]", "", "", "")
        for endpoint, pace in self.paced.items():
            if pace.reason is not PaceReason.UNLIMITED:
                table.add_row(f"  [blue]{escape(describe_pace(endpoint, pace))}[/]", "", "", "")
        return table


def print_summary(
    console: Console,
    results: Mapping[str, ExecutionResult],
    elapsed_s: float,
    *,
    kept: Collection[str] = (),
    failures_shown: Collection[str] = (),
) -> None:
    """This invocation's counts (and, after a resume, the whole run's), the failures not shown yet with their
    errors, and calls (every attempt), tokens and cost per agent.

    ``kept``: tasks kept from an earlier session of the run; ``failures_shown``: failures already printed.
    """
    from rich.table import Table

    ran = {task_id: r for task_id, r in results.items() if task_id not in kept}
    console.print(f"{len(ran)} tasks in {elapsed_s:.2f}s: {_counts(ran)}", markup=False)
    if kept:
        console.print(f"whole run: {len(results)} tasks: {_counts(results)}", markup=False)
    failed = [r for r in ran.values() if r.status is ExecutionStatus.FAILED and r.error is not None]
    for result in failed:
        if result.task_id not in failures_shown and result.error is not None:
            console.print(f"  x {result.task_id}: {result.error.type}: {result.error.message}", markup=False)
    shown = [r.task_id for r in failed if r.task_id in failures_shown]
    if shown:
        console.print(f"  failed (errors above): {', '.join(shown)}", markup=False)
    hits = [r for r in ran.values() if r.cache is not None and r.cache.hit]
    if hits:
        saved = sum(r.cache.saved_usd or 0.0 for r in hits if r.cache is not None)
        console.print(f"answer cache: {len(hits)} hits, no call made, {_money(saved)} USD saved", markup=False)
    per_agent: dict[str, list[float]] = {}
    costs: dict[str, float | None] = {}
    for result in ran.values():
        for attempt in result.attempt_log:
            if attempt.error_type not in REFUSED_BEFORE_SENDING:  # an open circuit or a spent budget sent nothing
                per_agent.setdefault(attempt.agent, [0, 0, 0])[0] += 1
        if result.agent is None or result.usage is None:
            continue
        row = per_agent.setdefault(result.agent, [0, 0, 0])
        row[1] += result.usage.input_tokens
        row[2] += result.usage.output_tokens
        if result.cost_usd is not None:
            costs[result.agent] = (costs.get(result.agent) or 0.0) + result.cost_usd
    if not per_agent:
        return
    table = Table(title=None, show_edge=False)
    for column in ("agent", "calls", "input tokens", "output tokens", "cost (USD)"):
        table.add_column(column, justify="left" if column == "agent" else "right")
    total = [0.0, 0.0, 0.0]
    total_cost: float | None = None
    for agent, (calls, tokens_in, tokens_out) in sorted(per_agent.items()):
        cost = costs.get(agent)
        table.add_row(agent, f"{calls:.0f}", f"{tokens_in:.0f}", f"{tokens_out:.0f}", _money(cost))
        total = [total[0] + calls, total[1] + tokens_in, total[2] + tokens_out]
        if cost is not None:
            total_cost = (total_cost or 0.0) + cost
    table.add_row("total", f"{total[0]:.0f}", f"{total[1]:.0f}", f"{total[2]:.0f}", _money(total_cost))
    console.print(table)


def _counts(results: Mapping[str, ExecutionResult]) -> str:
    counts = Counter(r.status for r in results.values())
    return ", ".join(f"{counts[s]} {s.value}" for s in _STYLE if counts[s]) or "nothing to run"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"

"""``orchestrate show``: one task of a stored run, whole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from orchestration.cli.common import RunRefArg, StoreOpt

if TYPE_CHECKING:
    from orchestration.models import BatchRecord
    from orchestration.store import StoredTask

__all__ = ["show"]

_ROLE_TITLES = {"system": "system prompt", "user": "prompt"}


def show(
    run_ref: RunRefArg,
    task_id: Annotated[str, typer.Argument(metavar="TASK", help="The task's id.")],
    store: StoreOpt = None,
) -> None:
    """Print one task of a run: status, the prompts as sent (attachments by name, size and digest), the whole output,
    usage, cost, attempts, timings."""
    from orchestration.cli.common import fail_invalid, open_run

    run_store, run_id = open_run(store, run_ref)
    stored = run_store.load_task(run_id, task_id)
    if stored is None:
        from orchestration.items import mapped_task_of

        task_ids = run_store.get_run(run_id).task_ids
        if task_id in task_ids or mapped_task_of(task_id) in task_ids:
            fail_invalid([f"task '{task_id}' of run '{run_id}' has no result yet"])
        fail_invalid([f"run '{run_id}' has no task '{task_id}'; its tasks: {', '.join(task_ids)}"])
    typer.echo(_render(run_id, stored))


def _batch(batch: BatchRecord) -> str:
    """The job that answered, submitted and finished when (its cost is at batch prices)."""
    submitted = batch.submitted_at.isoformat() if batch.submitted_at else "-"
    finished = batch.finished_at.isoformat() if batch.finished_at else "-"
    return f"{batch.id} (submitted {submitted}, finished {finished}; batch prices)"


def _render(run_id: str, stored: StoredTask) -> str:
    """The task as plain text: a field per line, then the messages as sent and the output, each under a rule."""
    import json

    from orchestration.models import OutputFormat

    result = stored.result
    fields: list[tuple[str, object]] = [
        ("run", run_id),
        ("task", result.task_id),
        ("status", result.status.value),
        ("error", f"{result.error.type}: {result.error.message}" if result.error else None),
        ("agent", result.agent),
        ("provider", result.provider),
        ("model", result.model),
        ("attempts", result.attempts),
    ]
    if result.items is not None:  # a mapped task: its instances are tasks of their own
        shown = ", ".join(result.items[:5]) + (", ..." if len(result.items) > 5 else "")
        fields.append(("items", f"{len(result.items)}: {shown}" if result.items else "0"))
    fields += [
        (f"  attempt {number}", f"{attempt.agent}: {attempt.error_type or 'answered'} in {attempt.duration_s:.3f}s")
        for number, attempt in enumerate(result.attempt_log, 1)
    ]
    fields += [
        ("started", result.started_at.isoformat() if result.started_at else None),
        ("completed", result.completed_at.isoformat() if result.completed_at else None),
        ("duration", f"{result.duration_s:.3f}s" if result.duration_s is not None else None),
        ("first token", f"{result.time_to_first_token_s:.3f}s" if result.time_to_first_token_s is not None else None),
        ("usage", f"{result.usage.input_tokens} in, {result.usage.output_tokens} out tokens" if result.usage else None),
        ("cost", f"${result.cost_usd:.6f}" if result.cost_usd is not None else None),
        ("batch", _batch(result.batch) if result.batch is not None else None),
        ("finish reason", result.finish_reason),
        ("metadata", json.dumps(result.metadata, ensure_ascii=False) if result.metadata else None),
    ]
    lines = [f"{name + ':':<16}{'-' if value is None else value}" for name, value in fields]
    if result.request is None:
        lines += ["", "--- prompt ---", "(not recorded)"]
    for message in result.request or []:
        lines += ["", f"--- {_ROLE_TITLES.get(message.role, message.role)} ---"]
        lines += [f"[attachment: {attachment.label}]" for attachment in message.attachments]  # sent before the text
        lines.append(message.content)
    output = result.output
    if stored.output_format is OutputFormat.JSON and result.succeeded:
        output = json.dumps(result.parsed, indent=2, ensure_ascii=False)
    lines += ["", f"--- output{' (json)' if stored.output_format is OutputFormat.JSON else ''} ---"]
    lines.append("(none)" if output is None else output)
    return "\n".join(lines)

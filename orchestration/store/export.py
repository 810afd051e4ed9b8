"""Export a stored run: ``json`` (the results document), ``jsonl`` (one result per line) or ``md`` (a table
with every output whole, unless cut to ``max_chars``)."""

from __future__ import annotations

import json
from typing import Any

from orchestration.export_format import ExportFormat
from orchestration.models import ExecutionResult
from orchestration.results import RunStatus, results_document
from orchestration.store.run_store import RunRecord, StoredRun

__all__ = ["ExportFormat", "export_run", "run_document"]


def run_document(record: RunRecord, results: dict[str, ExecutionResult]) -> dict[str, Any]:
    """The results document (:func:`~orchestration.results.results_document`) plus the run's record."""
    return {
        **results_document(
            record.project, record.run_id, results, record.status if record.status is RunStatus.WAITING else None
        ),
        "project_hash": record.project_hash,
        "file": str(record.file) if record.file else None,
        "run_status": record.status.value,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "sessions": record.sessions,
    }


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", "<br>")


def _markdown(stored: StoredRun, max_chars: int | None) -> str:
    record = stored.record
    lines = [
        f"# Run {record.run_id}",
        "",
        f"Project **{_cell(record.project)}**, status **{record.status.value}**,"
        f" started {record.started_at:%Y-%m-%d %H:%M:%S} UTC.",
        "",
        "| task | status | agent | attempts | duration (s) | output or error |",
        "|---|---|---|---|---|---|",
    ]
    for result in stored.results().values():
        detail = result.output if result.error is None else f"{result.error.type}: {result.error.message}"
        duration = f"{result.duration_s:.3f}" if result.duration_s is not None else ""
        if detail is not None and max_chars is not None and len(detail) > max_chars:
            detail = detail[:max_chars] + "..."
        lines.append(
            f"| {_cell(result.task_id)} | {result.status.value} | {_cell(result.agent)} | {result.attempts}"
            f" | {duration} | {_cell(detail)} |"
        )
    return "\n".join(lines) + "\n"


def export_run(stored: StoredRun, fmt: ExportFormat | str, *, max_chars: int | None = None) -> str:
    """The run as text in ``fmt``; ``max_chars`` cuts each output or error in ``md`` (whole by default)."""
    fmt = ExportFormat(fmt)
    if fmt is ExportFormat.JSON:
        return json.dumps(run_document(stored.record, stored.results()), indent=2, ensure_ascii=False) + "\n"
    if fmt is ExportFormat.JSONL:
        run_id = stored.record.run_id
        return "".join(
            json.dumps({"run_id": run_id, **r.model_dump(mode="json")}, ensure_ascii=False) + "\n"
            for r in stored.results().values()
        )
    return _markdown(stored, max_chars)

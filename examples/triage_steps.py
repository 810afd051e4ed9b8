"""The code step of ``triage.yaml``: called once per ticket, with the ticket as ``context.item``."""

from __future__ import annotations

from typing import Any

from orchestration import StepContext


def label(context: StepContext) -> dict[str, Any]:
    """Sync: runs in a worker thread. ``tasks["classify"]`` is this ticket's classification (a per-item
    dependency)."""
    classified = context.tasks["classify"].parsed
    priority = "P1" if classified["urgent"] else "P3"
    return {
        "ticket": context.item["id"],
        "position": context.index,
        "priority": priority,
        "queue": context.params["queues"][classified["area"]],
    }

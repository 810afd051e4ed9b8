"""The code steps of ``support_pipeline.yaml``: plain functions, each called with a ``StepContext``."""

from __future__ import annotations

from typing import Any

from orchestration import StepContext


def stats(context: StepContext) -> dict[str, Any]:
    """Sync: runs in a worker thread. A stand-in for a query against a ticket database."""
    area = context.tasks["classify"].parsed["area"]
    days = context.params["window_days"]
    similar = sum(word in context.inputs["ticket"].lower() for word in ("invoice", "export", "crash"))
    return {"area": area, "window_days": days, "similar": similar}


async def audit(context: StepContext) -> str:
    """Async: awaited on the event loop. How every earlier task ended."""
    return "\n".join(f"{task}: {result.status}" for task, result in sorted(context.tasks.items())) + "\n"

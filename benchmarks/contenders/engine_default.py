"""This engine configured as the CLI runs it: a durable run store (SQLite) and an event subscriber."""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

from benchmarks.contenders import Trace, Unavailable
from benchmarks.contenders.engine import execute as execute_engine
from benchmarks.workloads import Workload
from orchestration import ProjectOrchestrator, RunEvent

__all__ = ["execute"]


def execute(workload: Workload) -> Trace:
    if "store" not in inspect.signature(ProjectOrchestrator).parameters:
        raise Unavailable("this checkout has no run store")
    events: list[int] = [0]

    def count(event: RunEvent) -> None:
        events[0] += 1

    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-store-") as tmp:
        return execute_engine(workload, store=Path(tmp) / "runs.db", on_event=count)

"""This engine running a project for the second time with the run store: each task weighs what it took the first time.

The first run (not timed) records every task's duration; the second, timed, reads them back from the store
and ranks ready tasks by the longest remaining path with those durations (see ``DagScheduler``'s
``durations``). Zero-latency workloads are left out: there is no duration to learn.
"""

from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

from benchmarks.contenders import Trace, Unavailable
from benchmarks.contenders.engine import execute as execute_engine
from benchmarks.workloads import Workload
from orchestration.scheduler import DagScheduler

__all__ = ["execute"]


def execute(workload: Workload) -> Trace:
    if "durations" not in inspect.signature(DagScheduler).parameters:
        raise Unavailable("this checkout does not learn durations from earlier runs")
    if workload.family == "overhead":
        raise Unavailable("latency workloads only")
    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-rerun-") as tmp:
        store = Path(tmp) / "runs.db"
        execute_engine(workload, store=store)
        return execute_engine(workload, store=store)

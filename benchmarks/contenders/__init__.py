"""The contenders. Each module has ``execute(workload) -> Trace`` and is imported only in its own subprocess."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONTENDERS", "Trace", "Unavailable"]

CONTENDERS = {
    "reference": "benchmarks.contenders.reference",
    "gather": "benchmarks.contenders.gather_levels",
    "langgraph": "benchmarks.contenders.langgraph_graph",
    "engine": "benchmarks.contenders.engine",
    "engine_default": "benchmarks.contenders.engine_default",
    "engine_rerun": "benchmarks.contenders.engine_rerun",
    "engine_cli": "benchmarks.contenders.engine_cli",
}
"""Name -> module, in the order they run (and are shown)."""


@dataclass
class Trace:
    """What one run did: setup and run wall times, and each task's start and end (any one clock)."""

    setup_s: float
    run_s: float
    starts: list[float]
    ends: list[float]


class Unavailable(RuntimeError):
    """This contender cannot run in this checkout (a feature it needs does not exist yet)."""

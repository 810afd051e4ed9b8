"""Which workloads a run measures, and how many repetitions, in quick and full mode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.workloads import Workload, heavy_tailed, wfcommons, wfcommons_dir, zero_latency

__all__ = ["Plan", "plan"]

QUICK_TRACES = ("srasearch-chameleon-50a-001",)


@dataclass
class Plan:
    """Workloads with their repetition counts; the child timeout in seconds."""

    workloads: list[tuple[Workload, int]]
    timeout_s: float


def plan(quick: bool, traces: Path | None = None) -> Plan:
    traces = traces or wfcommons_dir()
    items: list[tuple[Workload, int]] = []
    if quick:
        items += [(zero_latency(1_000), 2), (zero_latency(10_000), 1)]
        items += [(heavy_tailed(300, 64), 1)]
        items += [(wfcommons(traces / f"{name}.json", 16), 1) for name in QUICK_TRACES]
        return Plan(items, timeout_s=60)
    items += [(zero_latency(size), 5) for size in (1_000, 10_000)] + [(zero_latency(100_000), 3)]
    items += [(heavy_tailed(size, cap), 3) for size in (300, 1_000) for cap in (16, 64)]
    items += [(wfcommons(path, cap), 2) for cap in (16, 64) for path in sorted(traces.glob("*.json"))]
    return Plan(items, timeout_s=240)

"""Checks of an execution log: dependencies respected and the concurrency cap never exceeded."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_log"]


def check_log(parents: Sequence[Sequence[int]], starts: Sequence[float], ends: Sequence[float], cap: int) -> list[str]:
    """Problems found in the log (empty when it is valid)."""
    problems: list[str] = []
    for node, deps in enumerate(parents):
        if ends[node] < starts[node]:
            problems.append(f"task {node} ended before it started")
        late = [p for p in deps if starts[node] < ends[p]]
        if late:
            problems.append(f"task {node} started before its dependency {late[0]} finished")
        if len(problems) >= 5:
            return problems
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])  # at equal times, ends first
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    if peak > cap:
        problems.append(f"{peak} tasks ran at once, over the cap of {cap}")
    return problems

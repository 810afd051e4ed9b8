"""The benchmark's makespan bounds: valid for every schedule, and tight where the answer is known."""

from __future__ import annotations

import heapq
import random

import pytest

from benchmarks.workloads import Workload, layered_dag


def workload(parents: list[list[int]], latency: list[float], cap: int) -> Workload:
    n = len(parents)
    return Workload("w", "heavy_tailed", parents, latency, [0] * n, ["a"], cap)


def list_schedule(w: Workload, priority: list[float]) -> float:
    """Makespan of greedy list scheduling: whenever a slot is free, start the ready task of highest priority."""
    kids = w.children()
    waiting = [len(p) for p in w.parents]
    ready = [(-priority[node], node) for node in range(w.size) if not waiting[node]]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < w.cap:
            _, node = heapq.heappop(ready)
            heapq.heappush(running, (now + w.latency_s[node], node))
        now, node = heapq.heappop(running)
        for kid in kids[node]:
            waiting[kid] -= 1
            if not waiting[kid]:
                heapq.heappush(ready, (-priority[kid], kid))
    return now


def test_a_fan_in_behind_a_long_task_is_bounded_by_its_optimum() -> None:
    # a 2 s task, then four 1 s tasks on 2 slots, then a 1 s join: no schedule beats 2 + 2 + 1
    w = workload([[], [0], [0], [0], [0], [1, 2, 3, 4]], [2.0, 1.0, 1.0, 1.0, 1.0, 1.0], cap=2)
    assert w.lower_bound_s() == 4.0  # the critical path
    assert w.tight_lower_bound_s() == 5.0 == list_schedule(w, [0.0] * w.size)


@pytest.mark.parametrize("seed", range(20))
def test_no_schedule_beats_the_tight_bound(seed: int) -> None:
    rng = random.Random(seed)
    parents = layered_dag(60, seed)
    w = workload(parents, [rng.lognormvariate(0, 1) for _ in parents], cap=rng.choice([2, 4, 8]))
    tight = w.tight_lower_bound_s()
    assert tight >= w.lower_bound_s()
    for _ in range(10):  # random priorities: every order's makespan is at least the bound
        assert list_schedule(w, [rng.random() for _ in parents]) >= tight - 1e-9

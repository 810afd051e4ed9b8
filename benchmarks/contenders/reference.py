"""The practical limit: a pure-asyncio event-driven scheduler (a semaphore and in-degree counters, nothing else).

Ready tasks queue on the semaphore in the order they became ready: FIFO.
"""

from __future__ import annotations

import asyncio
import time

from benchmarks.contenders import Trace
from benchmarks.workloads import Workload

__all__ = ["execute"]


async def _run(workload: Workload, children: list[list[int]], starts: list[float], ends: list[float]) -> None:
    clock = time.perf_counter
    latency = workload.latency_s
    indegree = [len(p) for p in workload.parents]
    semaphore = asyncio.Semaphore(workload.cap)
    done = asyncio.Event()
    remaining = workload.size
    running: set[asyncio.Task[None]] = set()

    async def task(node: int) -> None:
        nonlocal remaining
        async with semaphore:
            starts[node] = clock()
            await asyncio.sleep(latency[node])
            ends[node] = clock()
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                spawn(child)
        remaining -= 1
        if remaining == 0:
            done.set()

    def spawn(node: int) -> None:
        handle = asyncio.create_task(task(node))
        running.add(handle)
        handle.add_done_callback(running.discard)

    for node in range(workload.size):
        if indegree[node] == 0:
            spawn(node)
    await done.wait()


def execute(workload: Workload) -> Trace:
    start = time.perf_counter()
    children = workload.children()
    starts = [0.0] * workload.size
    ends = [0.0] * workload.size
    setup = time.perf_counter() - start
    start = time.perf_counter()
    asyncio.run(_run(workload, children, starts, ends))
    return Trace(setup, time.perf_counter() - start, starts, ends)

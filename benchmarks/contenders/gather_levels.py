"""What people write by hand: ``asyncio.gather`` over each of ``networkx.topological_generations`` in turn."""

from __future__ import annotations

import asyncio
import time

import networkx as nx

from benchmarks.contenders import Trace
from benchmarks.workloads import Workload

__all__ = ["execute"]


async def _run(graph: nx.DiGraph, workload: Workload, starts: list[float], ends: list[float]) -> None:
    clock = time.perf_counter
    latency = workload.latency_s
    semaphore = asyncio.Semaphore(workload.cap)

    async def task(node: int) -> None:
        async with semaphore:
            starts[node] = clock()
            await asyncio.sleep(latency[node])
            ends[node] = clock()

    for generation in nx.topological_generations(graph):
        await asyncio.gather(*(task(node) for node in generation))


def execute(workload: Workload) -> Trace:
    start = time.perf_counter()
    graph = nx.DiGraph()
    graph.add_nodes_from(range(workload.size))
    graph.add_edges_from((parent, child) for child, parents in enumerate(workload.parents) for parent in parents)
    starts = [0.0] * workload.size
    ends = [0.0] * workload.size
    setup = time.perf_counter() - start
    start = time.perf_counter()
    asyncio.run(_run(graph, workload, starts, ends))
    return Trace(setup, time.perf_counter() - start, starts, ends)

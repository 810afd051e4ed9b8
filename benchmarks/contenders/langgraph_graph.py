"""LangGraph: a ``StateGraph`` with one node per task; a join edge makes each node wait for all its dependencies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph

from benchmarks.contenders import Trace
from benchmarks.workloads import Workload

__all__ = ["execute"]


class _State(TypedDict, total=False):
    unused: int


def _node(node: int, latency: float, starts: list[float], ends: list[float]) -> Callable[[_State], Awaitable[None]]:
    clock = time.perf_counter

    async def run(state: _State) -> None:
        starts[node] = clock()
        await asyncio.sleep(latency)
        ends[node] = clock()

    return run


def execute(workload: Workload) -> Trace:
    start = time.perf_counter()
    starts = [0.0] * workload.size
    ends = [0.0] * workload.size
    builder: Any = StateGraph(_State)
    for node in range(workload.size):
        builder.add_node(f"t{node}", _node(node, workload.latency_s[node], starts, ends))
    for node, parents in enumerate(workload.parents):
        if not parents:
            builder.add_edge(START, f"t{node}")
        elif len(parents) == 1:
            builder.add_edge(f"t{parents[0]}", f"t{node}")
        else:
            builder.add_edge([f"t{p}" for p in parents], f"t{node}")
    graph = builder.compile()
    setup = time.perf_counter() - start
    config = {"max_concurrency": workload.cap, "recursion_limit": workload.size + 10}
    start = time.perf_counter()
    asyncio.run(graph.ainvoke({}, config=config))
    return Trace(setup, time.perf_counter() - start, starts, ends)

"""Event-driven DAG scheduling onto a fixed pool of workers.

A task becomes ready the moment its last dependency succeeds (in-degree counters,
O(1) per edge); ready tasks wait in a heap ordered by priority (longest remaining
path first, FIFO among equals). ``max_concurrency`` workers pull from it, so there
is no superstep barrier and no task object per node. Optional per-group limits
(an agent's ``max_concurrent``) park a ready task until its group has room.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Sequence

import anyio

__all__ = ["DagScheduler"]

Execute = Callable[[int], Awaitable[bool]]
OnSkip = Callable[[int, int], None]

_PENDING, _STARTED, _SKIPPED = 0, 1, 2


class DagScheduler:
    """Runs node indices ``0..n-1`` of a DAG given each node's children and priority."""

    def __init__(
        self,
        children: Sequence[Sequence[int]],
        priority: Sequence[float],
        max_concurrency: int,
        *,
        groups: Sequence[int] | None = None,
        group_limits: Sequence[int | None] = (),
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._children = children
        self._priority = priority
        self._max_concurrency = max_concurrency
        self._groups = groups if any(limit is not None for limit in group_limits) else None
        self._group_limits = list(group_limits)
        self._group_running = [0] * len(group_limits)
        self._parked: list[list[tuple[float, int, int]]] = [[] for _ in group_limits]
        self._ready: list[tuple[float, int, int]] = []
        self._seq = 0
        self._idle: list[anyio.Event] = []
        self._remaining = 0
        self._state: list[int] = []
        self._indegree: list[int] = []
        self._on_skip: OnSkip = lambda node, cause: None
        self._fail_fast = False
        self._scope: anyio.CancelScope | None = None

    def _push(self, node: int) -> None:
        self._seq += 1
        heapq.heappush(self._ready, (-self._priority[node], self._seq, node))

    def _pop(self) -> int | None:
        ready = self._ready
        groups = self._groups
        while ready:
            entry = heapq.heappop(ready)
            node = entry[2]
            if groups is not None:
                group = groups[node]
                limit = self._group_limits[group]
                if limit is not None and self._group_running[group] >= limit:
                    heapq.heappush(self._parked[group], entry)
                    continue
                self._group_running[group] += 1
            return node
        return None

    def _wake(self, count: int) -> None:
        idle = self._idle
        while count > 0 and idle:
            idle.pop().set()
            count -= 1

    def _finish(self, node: int, succeeded: bool) -> None:
        self._remaining -= 1
        woken = 0
        if self._groups is not None:
            group = self._groups[node]
            self._group_running[group] -= 1
            if self._parked[group]:
                heapq.heappush(self._ready, heapq.heappop(self._parked[group]))
                woken += 1
        if succeeded:
            indegree = self._indegree
            for child in self._children[node]:
                indegree[child] -= 1
                if indegree[child] == 0 and self._state[child] == _PENDING:
                    self._push(child)
                    woken += 1
        else:
            self._skip_descendants(node)
            if self._fail_fast and self._scope is not None:
                self._scope.cancel()
        if self._remaining == 0:
            self._wake(len(self._idle))
        else:
            self._wake(woken - 1)  # this worker takes one itself

    def _skip_descendants(self, node: int) -> None:
        stack = list(self._children[node])
        state = self._state
        while stack:
            child = stack.pop()
            if state[child] != _PENDING:
                continue
            state[child] = _SKIPPED
            self._remaining -= 1
            self._on_skip(child, node)
            stack.extend(self._children[child])

    async def _worker(self, execute: Execute) -> None:
        state = self._state
        while True:
            node = self._pop()
            if node is None:
                if self._remaining <= 0:
                    return
                event = anyio.Event()
                self._idle.append(event)
                await event.wait()
                continue
            state[node] = _STARTED
            succeeded = await execute(node)
            self._finish(node, succeeded)

    async def run(
        self,
        execute: Execute,
        *,
        on_skip: OnSkip | None = None,
        completed: Sequence[int] = (),
        fail_fast: bool = False,
    ) -> None:
        """Run every node not in ``completed`` (already succeeded, e.g. on resume).

        ``execute(node)`` returns whether the node succeeded and must not raise;
        descendants of a failed node are passed to ``on_skip(node, failed_node)``.
        With ``fail_fast`` the first failure cancels the nodes in flight.
        """
        n = len(self._children)
        self._indegree = [0] * n
        for kids in self._children:
            for child in kids:
                self._indegree[child] += 1
        self._state = [_PENDING] * n
        self._remaining = n
        self._on_skip = on_skip or self._on_skip
        self._fail_fast = fail_fast
        for node in completed:
            self._state[node] = _STARTED
            self._remaining -= 1
            for child in self._children[node]:
                self._indegree[child] -= 1
        for node in range(n):
            if self._indegree[node] == 0 and self._state[node] == _PENDING:
                self._push(node)
        if self._remaining == 0:
            return
        workers = min(self._max_concurrency, self._remaining)
        async with anyio.create_task_group() as group:
            self._scope = group.cancel_scope
            for _ in range(workers):
                group.start_soon(self._worker, execute)

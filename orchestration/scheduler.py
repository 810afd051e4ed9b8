"""Event-driven DAG scheduling onto a fixed pool of workers, critical path first.

A task becomes ready the moment its last dependency succeeds (in-degree counters, O(1)
per edge), or, for a task with another trigger rule (:class:`~orchestration.models.TriggerRule`),
once its dependencies ended as the rule needs; a task whose rule can no longer be met is skipped
at once, and its dependents follow their own rules. Ready tasks wait in a heap ordered by
*upward rank*: the longest remaining path from the task to the end of the DAG, each task
weighted by the observed mean duration of its group (its agent) — the critical-path / HEFT
priority; FIFO among equals. Until a group's duration is known its tasks weigh the mean of the known groups
(all weigh 1 at the start: ranks in tasks). A task whose own duration is known in
advance (``durations``, e.g. from an earlier run) weighs that duration instead, and
counts as an observation of its group. Nodes of the ``untimed`` group (a mapped task's, which only
keep books) are never observed. Every ``n / _RERANKS`` completions, if a group's
mean has become known or moved by more than ``_DRIFT`` since the last ranking, the ranks
are recomputed in one O(n + e) pass: at most ``_RERANKS`` passes per run, so the work per
task stays O(1) amortised.

``max_concurrency`` workers pull from the heap, so there is no superstep barrier and no
task object per node. Optional per-group limits (an agent's ``max_concurrent``) park a
ready task until its group has room. A node that waits on something other than work (a
review decision, a batch job) gives its slot away with :meth:`DagScheduler.lend`: an extra worker starts,
and the waiting node's worker retires when the node is done; it keeps its group's slot while it waits for a
review, and gives it away too while it waits in a batch job.

The DAG may grow while it runs (:meth:`DagScheduler.grow`): a node that learns of new work (a mapped
task whose items became known) adds nodes and edges to nodes that have not finished, and more workers start
if the pool is not full.

The scheduler decides *what* runs next; the nodes' states belong to a :class:`Lifecycle`
(:class:`orchestration.lifecycle.TaskLifecycle` in a run), which runs each node and is told
when a node becomes ready (it may then settle it at once: a false condition) or must be skipped.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Protocol

import anyio
import anyio.abc

from orchestration.models import TriggerRule

__all__ = ["DagScheduler", "Lifecycle", "Outcome"]


class Outcome(IntEnum):
    """How a node ended, as its dependents' trigger rules see it (worse outcomes compare greater)."""

    SUCCEEDED = 0
    SKIPPED = 1
    """It did not run, and nothing failed upstream of it (a false condition decided)."""
    FAILED = 2
    """It failed, or did not run because something upstream of it failed."""


_SUCCEEDED, _SKIPPED, _FAILED = Outcome.SUCCEEDED, Outcome.SKIPPED, Outcome.FAILED
"""The members as module constants (read on every step of a run: no enum attribute lookup)."""
_OUTCOMES = (_SUCCEEDED, _SKIPPED, _FAILED)
"""The members by value (a tuple index, not an enum call, per node that ends)."""
_PENDING = 3
"""A node's outcome before it ended."""


Entry = tuple[float, int, int]
"""A heap entry: (minus the rank, FIFO sequence number, node)."""


class Lifecycle(Protocol):
    """What the scheduler needs from the owner of the nodes' states."""

    def is_blocked(self, node: int) -> bool:
        """Whether ``node`` still waits for its dependencies (neither ready, started nor settled)."""

    def ready(self, node: int) -> Outcome | None:
        """``node``'s dependencies ended as its trigger rule needs: ``None`` when it is ready to run, else how it
        ended at once (skipped by a false condition, failed when its condition could not be read)."""

    def skip(self, node: int, cause: int) -> None:
        """``node`` will not run: ``cause``, an ancestor, did not succeed (it failed, or its condition was false)."""

    async def run(self, node: int) -> bool:
        """Run ``node`` to its outcome: whether it succeeded. Raising stops the whole run."""


_DRIFT = 1.25
"""Re-rank when a group's weight moved by more than this factor since the last ranking."""
_RERANKS = 16
"""At most this many re-rankings per run (a check every ``n / _RERANKS`` completions)."""
_FLOOR_S = 0.001
"""Added to every weight: near-zero durations are noise and must not reorder the DAG."""


class DagScheduler:
    """Runs node indices ``0..n-1`` of a DAG given each node's children and group."""

    def __init__(
        self,
        children: Sequence[Sequence[int]],
        max_concurrency: int,
        *,
        groups: Sequence[int] | None = None,
        group_limits: Sequence[int | None] = (),
        durations: Sequence[float | None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        triggers: Sequence[TriggerRule] | None = None,
        untimed: int | None = None,
    ) -> None:
        """``durations``: each node's expected duration in seconds where known, else ``None``; ``triggers``:
        each node's trigger rule (default: all ``all_success``); ``untimed``: a group whose nodes only keep books
        (a mapped task's nodes): they are not timed, and do not make the ranking adaptive."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        n = len(children)
        self._children = children
        self._max_concurrency = max_concurrency
        self._groups: Sequence[int] = groups if groups is not None else [0] * n
        group_count = max(len(group_limits), max(self._groups, default=-1) + 1, 1)
        self._group_limits: list[int | None] = [*group_limits, *[None] * (group_count - len(group_limits))]
        self._limited = any(limit is not None for limit in self._group_limits)
        self._adaptive = len(set(self._groups) - {untimed}) > 1
        self._untimed = untimed
        self._clock = clock
        self._group_running = [0] * group_count
        self._parked: list[list[Entry]] = [[] for _ in range(group_count)]
        self._total_s = [0.0] * group_count
        self._count = [0] * group_count
        self._ranked_weight: list[float | None] = [None] * group_count
        self._since_check = 0
        self._ready: list[Entry] = []
        self._order = _topological_order(children)
        self._rank = [0.0] * n
        self._node_weight: list[float | None] | None = None
        if durations is not None and any(d is not None for d in durations):
            self._know(durations)
        else:
            self._compute_ranks([1.0] * group_count)
        self._seq = 0
        self._workers = 0
        """Workers started and not retired from a lent node (the others stop only once the run ends)."""
        self._idle: list[anyio.Event] = []
        self._remaining = 0
        self._indegree: list[int] = []
        self._triggers = triggers if triggers and set(triggers) - {TriggerRule.ALL_SUCCESS} else None
        self._worst = bytearray()
        """Per node, the worst :class:`Outcome` among its dependencies that ended."""
        self._any_success = bytearray()
        """Per node, whether a dependency succeeded (read by ``one_success``)."""
        self._cause: dict[int, int] = {}
        """Per node, the cause of its worst outcome so far: the dependency that gave it, or for a dependency that
        was skipped, the task that made it skip (a failure, or a false condition)."""
        self._skipped_by: dict[int, int] = {}
        """Per node the scheduler skipped, the cause it was skipped for."""
        self._outcome = bytearray()
        """Per node, its :class:`Outcome` once it ended (``_PENDING`` until then; a node kept from an earlier session
        of the run succeeded)."""
        self._fail_fast = False
        self._scope: anyio.CancelScope | None = None
        self._error: BaseException | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._lifecycle: Lifecycle | None = None
        self._lent: set[int] = set()
        """Nodes whose worker was replaced while they wait (:meth:`lend`): it retires when they finish."""
        self._group_lent: set[int] = set()
        """Nodes that gave their group's slot away while they wait (:meth:`lend` with ``group``)."""

    @property
    def ranks(self) -> Sequence[float]:
        """Each node's current priority: its weighted longest path to the end of the DAG."""
        return self._rank

    def weights(self) -> list[float]:
        """Each group's current weight: its mean duration so far (plus a floor), or the mean of the known ones."""
        known = [total / count for total, count in zip(self._total_s, self._count, strict=True) if count]
        if not known:
            return [1.0] * len(self._count)
        default = sum(known) / len(known)
        return [
            (total / count if count else default) + _FLOOR_S
            for total, count in zip(self._total_s, self._count, strict=True)
        ]

    def _know(self, durations: Sequence[float | None]) -> None:
        """Weigh each node whose duration is known by it, count it as an observation of its group, and rank."""
        if len(durations) != len(self._rank):
            raise ValueError(f"{len(durations)} durations for {len(self._rank)} nodes")
        # whole milliseconds: tasks that took about as long keep their FIFO order
        self._node_weight = [None if d is None else round(d, 3) + _FLOOR_S for d in durations]
        for node, duration in enumerate(durations):
            if duration is not None:
                self._total_s[self._groups[node]] += duration
                self._count[self._groups[node]] += 1
        self._rerank(self.weights())

    def _compute_ranks(self, weights: Sequence[float]) -> None:
        rank, children, groups, known = self._rank, self._children, self._groups, self._node_weight
        if len(self._order) != len(children):  # the DAG grew
            self._order = _topological_order(children)
        for node in reversed(self._order):
            longest = 0.0
            for child in children[node]:
                if rank[child] > longest:
                    longest = rank[child]
            weight = known[node] if known is not None else None
            rank[node] = (weights[groups[node]] if weight is None else weight) + longest

    def _rerank(self, weights: list[float]) -> None:
        self._ranked_weight = [w if count else None for w, count in zip(weights, self._count, strict=True)]
        self._compute_ranks(weights)
        rank = self._rank
        for heap in (self._ready, *self._parked):
            heap[:] = [(-rank[node], seq, node) for _, seq, node in heap]
            heapq.heapify(heap)

    def _observe(self, node: int, duration_s: float) -> None:
        group = self._groups[node]
        if group == self._untimed:
            return
        self._total_s[group] += duration_s
        self._count[group] += 1
        self._since_check += 1
        if self._since_check * _RERANKS < len(self._rank):
            return
        self._since_check = 0
        weights = self.weights()
        for weight, ranked, count in zip(weights, self._ranked_weight, self._count, strict=True):
            if count and (ranked is None or weight > ranked * _DRIFT or weight * _DRIFT < ranked):
                self._rerank(weights)
                return

    def _push(self, node: int) -> None:
        self._seq += 1
        heapq.heappush(self._ready, (-self._rank[node], self._seq, node))

    def _pop(self) -> int | None:
        ready = self._ready
        while ready:
            entry = heapq.heappop(ready)
            node = entry[2]
            if self._limited:
                group = self._groups[node]
                limit = self._group_limits[group]
                if limit is not None and self._group_running[group] >= limit:
                    heapq.heappush(self._parked[group], entry)
                    continue
                self._group_running[group] += 1
            return node
        return None

    def _wake(self, count: int) -> None:
        """Wake ``count`` idle workers for new ready tasks, or all of them once nothing remains."""
        idle = self._idle
        if self._remaining <= 0:
            count = len(idle)
        while count > 0 and idle:
            idle.pop().set()
            count -= 1

    def _free_slot(self, node: int) -> int:
        """Give ``node``'s group slot back; the number of parked tasks that became ready (0 or 1)."""
        group = self._groups[node]
        self._group_running[group] -= 1
        if self._parked[group]:
            heapq.heappush(self._ready, heapq.heappop(self._parked[group]))
            return 1
        return 0

    def _stop(self, error: BaseException) -> None:
        """End the run: cancel the nodes in flight; :meth:`run` raises ``error``."""
        if self._error is None:
            self._error = error
        if self._scope is not None:
            self._scope.cancel()

    def _finish(self, node: int, outcome: Outcome, lifecycle: Lifecycle) -> int:
        """``node`` ended with ``outcome``: release or skip its dependents as their trigger rules say, and theirs
        in turn for each one skipped or settled at once; the number of workers to wake."""
        return self._cascade([(node, outcome)], lifecycle)

    def _cascade(self, ended: list[tuple[int, Outcome]], lifecycle: Lifecycle) -> int:
        """The nodes in ``ended`` ended (and the dependents they skip or settle, in turn): see :meth:`_finish`."""
        woken = 0
        children, indegree, worst, outcomes = self._children, self._indegree, self._worst, self._outcome
        while ended:
            node, outcome = ended.pop()
            self._remaining -= 1
            outcomes[node] = outcome
            if outcome is _SUCCEEDED and self._triggers is None:  # the common case: all_success only
                for child in children[node]:
                    indegree[child] -= 1
                    if indegree[child] == 0 and lifecycle.is_blocked(child):
                        if worst[child]:  # a dependency was skipped (a failed one would have skipped it)
                            self._skip(child, lifecycle)
                            ended.append((child, _SKIPPED))
                        elif (settled := lifecycle.ready(child)) is None:
                            self._push(child)
                            woken += 1
                        else:
                            self._settled(child, settled, ended)
                continue
            for child in children[node]:
                indegree[child] -= 1
                if not lifecycle.is_blocked(child):  # skipped already (or settled another way)
                    continue
                self._ended_parent(child, node, outcome)
                verdict = self._verdict(child)
                if verdict is None:
                    continue
                if verdict is _SUCCEEDED:
                    woken += self._release(child, lifecycle, ended)
                else:
                    self._skip(child, lifecycle)
                    ended.append((child, verdict))
        return woken

    def _ended_parent(self, node: int, parent: int, outcome: Outcome) -> None:
        """Count ``parent``'s ``outcome`` in ``node``'s trigger rule."""
        if outcome > self._worst[node]:
            self._worst[node] = outcome
            self._cause[node] = self._skipped_by.get(parent, parent)
        elif outcome is _SUCCEEDED:
            self._any_success[node] = 1

    def _skip(self, node: int, lifecycle: Lifecycle) -> None:
        cause = self._skipped_by[node] = self._cause[node]
        lifecycle.skip(node, cause)

    def _verdict(self, node: int) -> Outcome | None:
        """What ``node``'s trigger rule says now: ``None`` to wait for more dependencies, ``SUCCEEDED`` to run it,
        else the outcome it is skipped with."""
        rule = self._triggers[node] if self._triggers is not None else TriggerRule.ALL_SUCCESS
        worst = _OUTCOMES[self._worst[node]]
        if worst is Outcome.FAILED and rule in (TriggerRule.ALL_SUCCESS, TriggerRule.NONE_FAILED):
            return Outcome.FAILED  # no need to wait for the others
        if self._indegree[node]:
            return None
        if rule is TriggerRule.ALL_SUCCESS:
            return worst
        if rule is TriggerRule.ONE_SUCCESS and not self._any_success[node] and worst:
            return worst
        return Outcome.SUCCEEDED

    def _release(self, node: int, lifecycle: Lifecycle, ended: list[tuple[int, Outcome]]) -> int:
        """Tell the lifecycle ``node`` may run: queue it (1: a worker to wake), or add it to ``ended`` if it ended
        at once (0)."""
        settled = lifecycle.ready(node)
        if settled is None:
            self._push(node)
            return 1
        self._settled(node, settled, ended)
        return 0

    def _settled(self, node: int, outcome: Outcome, ended: list[tuple[int, Outcome]]) -> None:
        """``node`` ended as soon as it was ready (its condition): its dependents follow; a failure is one."""
        ended.append((node, outcome))
        if outcome is _FAILED and self._fail_fast and self._scope is not None:
            self._scope.cancel()

    def lend(self, node: int, group: bool = False) -> None:
        """``node`` (running) waits without working: start another worker in its place; ``node``'s worker
        retires once ``node`` finishes, so the number of working nodes stays ``max_concurrency``. With ``group``,
        ``node`` gives its group's slot away too (a parked node of its group may start)."""
        if self._tasks is None or self._lifecycle is None:
            return
        if group and self._limited and node not in self._group_lent:
            self._group_lent.add(node)
            self._wake(self._free_slot(node))
        if node not in self._lent:
            self._lent.add(node)
            self._start_worker(self._tasks, self._lifecycle)

    @property
    def size(self) -> int:
        """The number of nodes: the next one :meth:`grow` adds gets this index."""
        return len(self._children)

    def grow(
        self,
        children: Sequence[list[int]],
        parents: Sequence[Sequence[int]],
        group: int,
        trigger: TriggerRule = TriggerRule.ALL_SUCCESS,
    ) -> None:
        """Add nodes ``size .. size + len(children) - 1`` to the running DAG (from a node's :meth:`Lifecycle.run`,
        between two awaits).

        The ``j``-th new node releases ``children[j]`` (nodes that are blocked, or new nodes after it) and depends
        on ``parents[j]`` (nodes from before); it belongs to ``group`` and follows ``trigger``. The lifecycle knows
        the new nodes already: a new node that is not blocked counts as succeeded (kept from an earlier session of
        the run), as at the start of :meth:`run`. A parent that ended already counts at once in the new node's
        trigger rule, as if it had just ended: the new nodes whose rule is met are ready (or settled at once by
        the lifecycle), those whose rule cannot be met are skipped, and their dependents follow. More workers
        start while there are fewer than ``max_concurrency``. A ``children`` list may be shared by many new
        nodes: edges added later from a node copy its list first.
        """
        lifecycle, tasks = self._lifecycle, self._tasks
        if lifecycle is None or tasks is None:
            raise RuntimeError("grow is for a running DAG: call it from Lifecycle.run")
        first, count = len(self._children), len(children)
        if not isinstance(self._children, list):
            self._children = list(self._children)
        if not isinstance(self._groups, list):
            self._groups = list(self._groups)
        self._children.extend(children)
        self._groups.extend([group] * count)
        self._indegree.extend([0] * count)
        self._worst.extend(bytes(count))
        self._any_success.extend(bytes(count))
        self._outcome.extend(bytes(count))
        if self._triggers is not None or trigger is not TriggerRule.ALL_SUCCESS:
            triggers = list(self._triggers or [TriggerRule.ALL_SUCCESS] * first)
            triggers.extend([trigger] * count)
            self._triggers = triggers
        if self._node_weight is not None:
            self._node_weight.extend([None] * count)
        weight = self.weights()[group]
        rank = self._rank
        rank.extend([0.0] * count)
        for node in range(first + count - 1, first - 1, -1):  # children after their parents: ranked first
            rank[node] = weight + max((rank[child] for child in self._children[node]), default=0.0)
        indegree, all_children, outcomes = self._indegree, self._children, self._outcome
        for node in range(first, first + count):
            if not lifecycle.is_blocked(node):
                continue
            self._remaining += 1
            outcomes[node] = _PENDING
            for child in all_children[node]:
                indegree[child] += 1
            for parent in parents[node - first]:
                if outcomes[parent] == _PENDING:
                    all_children[parent] = [*all_children[parent], node]
                    indegree[node] += 1
                else:
                    self._ended_parent(node, parent, _OUTCOMES[outcomes[parent]])
        woken = 0
        ended: list[tuple[int, Outcome]] = []
        for node in range(first, first + count):
            if not lifecycle.is_blocked(node):
                continue
            verdict = self._verdict(node)
            if verdict is _SUCCEEDED:
                woken += self._release(node, lifecycle, ended)
            elif verdict is not None:
                self._skip(node, lifecycle)
                ended.append((node, verdict))
        woken += self._cascade(ended, lifecycle)
        for _ in range(min(self._max_concurrency, self._remaining) - (self._workers - len(self._lent))):
            self._start_worker(tasks, lifecycle)
        self._wake(woken)

    def _start_worker(self, tasks: anyio.abc.TaskGroup, lifecycle: Lifecycle) -> None:
        self._workers += 1
        tasks.start_soon(self._worker, lifecycle)

    async def _worker(self, lifecycle: Lifecycle) -> None:
        clock = self._clock if self._adaptive else None
        while True:
            node = self._pop()
            if node is None:
                if self._remaining <= 0:
                    return
                event = anyio.Event()
                self._idle.append(event)
                await event.wait()
                continue
            started = clock() if clock is not None else 0.0
            try:
                succeeded = await lifecycle.run(node)
            except Exception as exc:  # the outcome could not be recorded (the store failed): stop everything
                self._stop(exc)
                return
            if clock is not None:
                self._observe(node, clock() - started)
            woken = 0
            if self._limited:
                if node in self._group_lent:
                    self._group_lent.discard(node)
                else:
                    woken = self._free_slot(node)
            if succeeded:
                woken += self._finish(node, _SUCCEEDED, lifecycle)
            else:
                woken += self._finish(node, _FAILED, lifecycle)
                if self._fail_fast and self._scope is not None:
                    self._scope.cancel()
            if node in self._lent:  # another worker took this one's place while the node waited
                self._lent.discard(node)
                self._workers -= 1
                self._wake(woken)
                return
            self._wake(woken - 1)  # this worker takes one itself

    async def run(self, lifecycle: Lifecycle, *, fail_fast: bool = False) -> None:
        """Run every node that is blocked when the run starts; the others have succeeded already (a resume).

        A node whose dependencies did not end as its trigger rule needs is skipped, and so on downstream.
        With ``fail_fast`` the first failure cancels the nodes in flight. If ``lifecycle.run`` raises,
        the nodes in flight are cancelled and this raises the same error.
        """
        n = len(self._children)
        self._indegree = [0] * n
        self._worst, self._any_success, self._cause, self._skipped_by = bytearray(n), bytearray(n), {}, {}
        self._outcome = bytearray(n)
        self._remaining = 0
        for node, kids in enumerate(self._children):
            blocked = lifecycle.is_blocked(node)
            self._remaining += blocked
            if blocked:
                self._outcome[node] = _PENDING
            for child in kids:
                self._indegree[child] += blocked
                if not blocked:  # succeeded in an earlier session of the run
                    self._any_success[child] = 1
        self._fail_fast = fail_fast
        self._lifecycle, self._lent = lifecycle, set()
        async with anyio.create_task_group() as group:
            self._scope, self._tasks = group.cancel_scope, group
            ended: list[tuple[int, Outcome]] = []
            for node in range(n):
                if self._indegree[node] == 0 and lifecycle.is_blocked(node):
                    self._release(node, lifecycle, ended)
            self._cascade(ended, lifecycle)  # settled at once (a false condition): their dependents follow
            for _ in range(min(self._max_concurrency, self._remaining)):
                self._start_worker(group, lifecycle)
        self._tasks = self._lifecycle = None
        if self._error is not None:
            raise self._error


def _topological_order(children: Sequence[Sequence[int]]) -> list[int]:
    """Kahn's algorithm; the graph must be acyclic (the project validated it)."""
    indegree = [0] * len(children)
    for kids in children:
        for child in kids:
            indegree[child] += 1
    order = [node for node, degree in enumerate(indegree) if degree == 0]
    for node in order:  # grows while iterating
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                order.append(child)
    return order

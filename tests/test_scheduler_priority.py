"""Critical-path priority of the scheduler: ranks, re-ranking from observed durations, caps, no barrier.

Durations come from a fake clock that each task advances, so nothing here depends on timing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel
import pytest

from orchestration.scheduler import DagScheduler


def children_of(parents: Sequence[Sequence[int]]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parents]
    for child, deps in enumerate(parents):
        for parent in deps:
            kids[parent].append(child)
    return kids


class Nodes:
    """A minimal lifecycle for the scheduler: each node's state, and ``execute`` to run one."""

    def __init__(self, execute: Callable[[int], Awaitable[bool]], count: int, done: Sequence[int] = ()) -> None:
        self.execute = execute
        self.states = ["blocked"] * count
        for node in done:
            self.states[node] = "success"
        self.skipped: list[tuple[int, int]] = []

    def is_blocked(self, node: int) -> bool:
        return self.states[node] == "blocked"

    def ready(self, node: int) -> None:
        assert self.states[node] == "blocked"
        self.states[node] = "ready"

    def skip(self, node: int, cause: int) -> None:
        assert self.states[node] == "blocked"
        self.states[node] = "skipped"
        self.skipped.append((node, cause))

    async def run(self, node: int) -> bool:
        assert self.states[node] == "ready"
        self.states[node] = "running"
        succeeded = await self.execute(node)
        self.states[node] = "success" if succeeded else "failed"
        return succeeded


class Recorder:
    """Runs nodes on a fake clock: node ``i`` advances it by ``durations[i]``; logs starts and ends."""

    def __init__(self, parents: Sequence[Sequence[int]], durations: Sequence[float]) -> None:
        self.parents = parents
        self.durations = durations
        self.now = 0.0
        self.log: list[tuple[str, int]] = []
        self.running = 0
        self.peak = 0
        self.done: set[int] = set()
        self.violations: list[int] = []

    def clock(self) -> float:
        return self.now

    def nodes(self) -> Nodes:
        return Nodes(self.execute, len(self.parents))

    def starts(self) -> list[int]:
        return [node for kind, node in self.log if kind == "start"]

    async def execute(self, node: int) -> bool:
        if any(parent not in self.done for parent in self.parents[node]):
            self.violations.append(node)
        self.log.append(("start", node))
        self.running += 1
        self.peak = max(self.peak, self.running)
        await anyio.lowlevel.checkpoint()
        self.now += self.durations[node]
        self.running -= 1
        self.done.add(node)
        self.log.append(("end", node))
        return True


def test_unit_ranks_are_longest_path_in_tasks() -> None:
    # 0 -> 1 -> 2, and a lone leaf 3
    scheduler = DagScheduler(children_of([[], [0], [1], []]), 4)
    assert list(scheduler.ranks) == [3.0, 2.0, 1.0, 1.0]


async def test_one_slot_starts_the_longest_chain_first() -> None:
    parents: list[list[int]] = [[], [], [1], [2]]  # leaf 0; chain 1 -> 2 -> 3
    recorder = Recorder(parents, [1.0] * 4)
    await DagScheduler(children_of(parents), 1, clock=recorder.clock).run(recorder.nodes())
    assert recorder.starts() == [1, 2, 0, 3]  # 2 (rank 2) beats the leaf; then equal ranks go oldest first
    assert recorder.violations == []


# Warm-up tasks 0 (group 0) and 1 (group 1) run first; then 2 -> 3 -> 4 (group 0) and 5 (group 1) are ready.
PARENTS: list[list[int]] = [[], [], [0, 1], [2], [3], [0, 1]]
GROUPS = [0, 1, 0, 0, 0, 1]


async def test_observed_durations_put_the_slow_agent_first() -> None:
    durations = [1.0 if group == 0 else 100.0 for group in GROUPS]  # group 1 is a hundred times slower
    recorder = Recorder(PARENTS, durations)
    scheduler = DagScheduler(children_of(PARENTS), 1, groups=GROUPS, clock=recorder.clock)
    await scheduler.run(recorder.nodes())
    # By unit ranks the three-task chain (rank 3) would go before task 5 (rank 1); weighted, 5 weighs ~100.
    assert recorder.starts() == [0, 1, 5, 2, 3, 4]
    assert scheduler.ranks[5] > scheduler.ranks[2]


async def test_an_untimed_group_is_neither_observed_nor_ranked_by() -> None:
    # group 1 keeps books only (a mapped task's nodes): its hundred-times-slower nodes are not observed, so unit ranks
    # decide as with one group, and its weight stays the mean of the timed group's
    durations = [1.0 if group == 0 else 100.0 for group in GROUPS]
    recorder = Recorder(PARENTS, durations)
    scheduler = DagScheduler(children_of(PARENTS), 1, groups=GROUPS, clock=recorder.clock, untimed=1)
    await scheduler.run(recorder.nodes())
    assert recorder.starts() == [0, 1, 2, 3, 5, 4]
    assert scheduler.weights()[1] == scheduler.weights()[0]


async def test_without_observations_unit_ranks_decide() -> None:
    recorder = Recorder(PARENTS, [1.0] * len(PARENTS))
    await DagScheduler(children_of(PARENTS), 1, clock=recorder.clock).run(recorder.nodes())  # one group
    assert recorder.starts() == [0, 1, 2, 3, 5, 4]  # the chain first; then equal ranks oldest first


async def test_equal_ranks_start_in_ready_order() -> None:
    parents: list[list[int]] = [[] for _ in range(6)]
    recorder = Recorder(parents, [1.0] * 6)
    await DagScheduler(children_of(parents), 1, clock=recorder.clock).run(recorder.nodes())
    assert recorder.starts() == list(range(6))


async def test_known_durations_start_the_longest_work_first() -> None:
    # independent tasks of one agent: known durations order them longest first (FIFO without them)
    parents: list[list[int]] = [[] for _ in range(5)]
    durations = [1.0, 5.0, 3.0, None, 4.0]  # 3 is unknown: it weighs its agent's mean of the known, 3.25
    recorder = Recorder(parents, [d or 3.25 for d in durations])
    scheduler = DagScheduler(children_of(parents), 1, durations=durations, clock=recorder.clock)
    await scheduler.run(recorder.nodes())
    assert recorder.starts() == [1, 4, 3, 2, 0]


async def test_known_durations_weigh_paths_and_seed_their_agent() -> None:
    # one task of each agent is known (0 took 1 s, 5 took 100 s); the others weigh their agent's mean
    known: list[float | None] = [1.0, None, None, None, None, 100.0]
    scheduler = DagScheduler(children_of(PARENTS), 1, groups=GROUPS, durations=known)
    assert scheduler.weights() == pytest.approx([1.0, 100.0], rel=0.01)
    assert scheduler.ranks[1] > scheduler.ranks[0] and scheduler.ranks[5] > scheduler.ranks[2]
    with pytest.raises(ValueError, match="2 durations for 6 nodes"):
        DagScheduler(children_of(PARENTS), 1, durations=[1.0, 2.0])


def random_dag(size: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [sorted(rng.sample(range(node), k=min(node, rng.randint(0, 3)))) for node in range(size)]


async def test_reranking_runs_every_task_once_within_caps() -> None:
    rng = random.Random(7)
    parents = random_dag(300, seed=7)
    groups = [rng.randrange(3) for _ in parents]
    durations = [rng.lognormvariate(0.0, 1.5) * (10.0 if g == 2 else 1.0) for g in groups]
    recorder = Recorder(parents, durations)
    per_group: dict[int, int] = {}
    peak_per_group: dict[int, int] = {}

    async def execute(node: int) -> bool:
        group = groups[node]
        per_group[group] = per_group.get(group, 0) + 1
        peak_per_group[group] = max(peak_per_group.get(group, 0), per_group[group])
        try:
            return await recorder.execute(node)
        finally:
            per_group[group] -= 1

    scheduler = DagScheduler(children_of(parents), 5, groups=groups, group_limits=[None, None, 2], clock=recorder.clock)
    await scheduler.run(Nodes(execute, len(parents)))
    assert sorted(recorder.starts()) == list(range(len(parents)))
    assert recorder.violations == []
    assert recorder.peak <= 5
    assert peak_per_group[2] <= 2
    assert scheduler.weights()[2] > scheduler.weights()[0]  # group 2 was observed to be slower


async def count_reranks(parents: list[list[int]], cap: int, groups: list[int], recorder: Recorder) -> int:
    """Run the DAG on the recorder's clock; how many times the scheduler re-ranked."""
    reranks = 0

    class Counting(DagScheduler):
        def _rerank(self, weights: list[float]) -> None:
            nonlocal reranks
            reranks += 1
            super()._rerank(weights)

    await Counting(children_of(parents), cap, groups=groups, clock=recorder.clock).run(recorder.nodes())
    return reranks


async def test_reranking_is_bounded() -> None:
    """Durations that keep drifting re-rank at most 16 times per run (O(1) amortised per task)."""
    parents = random_dag(400, seed=3)
    groups = [node % 2 for node in range(len(parents))]
    durations = [float(2 ** (node // 25)) if groups[node] else 1.0 for node in range(len(parents))]
    reranks = await count_reranks(parents, 4, groups, Recorder(parents, durations))
    assert 2 <= reranks <= 16


async def test_no_barrier_between_levels() -> None:
    """A child starts as soon as its own parent is done, while an unrelated slow task still runs."""
    slow = anyio.Event()
    child_started = anyio.Event()
    log: list[str] = []
    # 0: slow root, 1: fast root, 2: child of 1
    names = {0: "slow", 1: "fast", 2: "child"}

    async def execute(node: int) -> bool:
        log.append(f"start {names[node]}")
        if node == 0:
            await slow.wait()
        elif node == 2:
            child_started.set()
        await anyio.lowlevel.checkpoint()
        log.append(f"end {names[node]}")
        return True

    async def release() -> None:
        await child_started.wait()
        slow.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(release)
            await DagScheduler(children_of([[], [], [1]]), 4).run(Nodes(execute, 3))
    assert log.index("start child") < log.index("end slow")


async def test_steady_durations_rank_once() -> None:
    """Once every group is known and nothing drifts, the ranks are left alone."""
    parents = random_dag(320, seed=5)
    groups = [node % 2 for node in range(len(parents))]
    reranks = await count_reranks(parents, 1, groups, Recorder(parents, [1.0 if group else 3.0 for group in groups]))
    assert reranks == 1


async def test_descendants_of_a_failure_are_skipped_and_kept_nodes_do_not_run() -> None:
    # 0 -> 1 -> 2, 0 -> 3, and 4 -> 5 where 4 succeeded in an earlier session
    scheduler = DagScheduler(children_of([[], [0], [1], [0], [], [4]]), 2)
    ran: list[int] = []

    async def execute(node: int) -> bool:
        ran.append(node)
        await anyio.lowlevel.checkpoint()
        return node != 0

    nodes = Nodes(execute, 6, done=[4])
    with anyio.fail_after(5):
        await scheduler.run(nodes)
    assert sorted(ran) == [0, 5]
    assert sorted(nodes.skipped) == [(1, 0), (2, 0), (3, 0)]
    assert nodes.states == ["failed", "skipped", "skipped", "skipped", "success", "success"]


async def test_an_error_from_the_lifecycle_cancels_the_run_and_is_raised() -> None:
    scheduler = DagScheduler([[2], [], []], 2)
    started: list[int] = []
    cancelled: list[int] = []

    async def execute(node: int) -> bool:
        started.append(node)
        if node == 0:
            await anyio.lowlevel.checkpoint()
            raise OSError("disk full")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(node)
            raise
        return True

    with anyio.fail_after(5), pytest.raises(OSError, match="disk full"):
        await scheduler.run(Nodes(execute, 3))
    assert started == [0, 1] and cancelled == [1]

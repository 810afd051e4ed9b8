"""Benchmark workloads: task DAGs with per-task simulated latencies, agents and a concurrency cap.

Three families: zero-latency layered random DAGs (per-task overhead), the same shapes with
heavy-tailed lognormal latencies (makespan), and the WfCommons traces of real workflows with
runtimes scaled so the makespan lower bound is a few seconds.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "Workload",
    "heavy_tailed",
    "layered_dag",
    "wfcommons",
    "wfcommons_dir",
    "zero_latency",
]

WFCOMMONS_ENV = "ORCHESTRATE_WFCOMMONS_DIR"
REPO_ROOT = Path(__file__).resolve().parent.parent

LATENCY_MEDIAN_S = 0.040
LATENCY_SIGMA = 1.0
LATENCY_CAP_S = 2.0
AGENT_SPEEDS = (0.5, 1.0, 2.0)
"""Heavy-tailed workloads mix three agents whose latencies differ by these factors (median overall ~40 ms)."""


@dataclass
class Workload:
    """A DAG to run: ``parents[i]`` are task ``i``'s dependencies (all ``< i``), ``latency_s[i]`` its duration."""

    name: str
    family: str
    """``overhead``, ``heavy_tailed`` or ``wfcommons``."""
    parents: list[list[int]]
    latency_s: list[float]
    agents: list[int]
    """Index into ``agent_names`` of the agent that runs each task."""
    agent_names: list[str]
    cap: int

    @property
    def size(self) -> int:
        return len(self.parents)

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in self.parents]
        for child, parents in enumerate(self.parents):
            for parent in parents:
                kids[parent].append(child)
        return kids

    def critical_path_s(self) -> float:
        finish = [0.0] * self.size
        for node, parents in enumerate(self.parents):  # parents come first: index order is topological
            finish[node] = self.latency_s[node] + max((finish[p] for p in parents), default=0.0)
        return max(finish, default=0.0)

    def lower_bound_s(self) -> float:
        """No schedule with ``cap`` slots and no overhead can finish sooner."""
        return max(self.critical_path_s(), sum(self.latency_s) / self.cap)

    def tight_lower_bound_s(self) -> float:
        """A tighter bound than :meth:`lower_bound_s`, also valid for every schedule with ``cap`` slots.

        A task starts only after all its ancestors ended, and those ancestors that cannot start before
        time ``h`` (their longest path from a source) need at least their work / ``cap`` after ``h``; the
        task then needs its own longest path to the end. On a fan-in behind a long task (bwa's index,
        soykb's merge) this shows how far above max(critical path, work / cap) even the best order stays.
        O(n^2): meant for the latency workloads (a few thousand tasks).
        """
        n, latency, cap = self.size, self.latency_s, self.cap
        head = [0.0] * n  # longest path from a source to the task's start
        ancestors = [0] * n  # as bit sets
        for node, parents in enumerate(self.parents):
            head[node] = max((head[p] + latency[p] for p in parents), default=0.0)
            for parent in parents:
                ancestors[node] |= ancestors[parent] | (1 << parent)
        tail = [0.0] * n  # longest path from the task's start to the end
        for node, kids in reversed(list(enumerate(self.children()))):
            tail[node] = latency[node] + max((tail[kid] for kid in kids), default=0.0)
        latest_first = sorted(range(n), key=lambda node: -head[node])
        best, work = self.lower_bound_s(), 0.0
        for node in latest_first:  # the whole DAG: what starts at h or later needs its work / cap after h
            work += latency[node]
            best = max(best, head[node] + work / cap)
        for node in range(n):
            start, work = head[node], 0.0
            for ancestor in latest_first:
                if ancestors[node] >> ancestor & 1:
                    work += latency[ancestor]
                    start = max(start, head[ancestor] + work / cap)
            best = max(best, start + tail[node])
        return best

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), separators=(",", ":")))

    @classmethod
    def load(cls, path: Path) -> Workload:
        return cls(**json.loads(path.read_text()))


def layered_dag(size: int, seed: int) -> list[list[int]]:
    """A random layered DAG: layers about sqrt(size) wide, 1-3 parents in the previous layer, sometimes one older."""
    rng = random.Random(seed)
    width = max(4, round(math.sqrt(size)))
    parents: list[list[int]] = []
    previous: list[int] = []
    layer: list[int] = []
    target = rng.randint(width // 2, width * 3 // 2)
    for node in range(size):
        chosen: set[int] = set()
        if previous:
            chosen.update(rng.sample(previous, min(len(previous), rng.randint(1, 3))))
            if node > len(previous) + len(layer) and rng.random() < 0.2:
                chosen.add(rng.randrange(0, node - len(previous) - len(layer)))
        parents.append(sorted(chosen))
        layer.append(node)
        if len(layer) >= target:
            previous, layer = layer, []
            target = rng.randint(width // 2, width * 3 // 2)
    return parents


def zero_latency(size: int, cap: int = 64, seed: int = 1) -> Workload:
    parents = layered_dag(size, seed)
    return Workload(f"zero-{size}", "overhead", parents, [0.0] * size, [0] * size, ["bench"], cap)


def heavy_tailed(size: int, cap: int, seed: int = 2) -> Workload:
    """Lognormal latencies (median ~40 ms, sigma 1, capped at 2 s) over three agents of different speeds."""
    parents = layered_dag(size, seed)
    rng = random.Random(seed * 7919 + size)
    agents = [rng.randrange(len(AGENT_SPEEDS)) for _ in range(size)]
    latency = [
        min(LATENCY_CAP_S, LATENCY_MEDIAN_S * AGENT_SPEEDS[a] * math.exp(rng.gauss(0.0, LATENCY_SIGMA))) for a in agents
    ]
    names = [f"speed{speed:g}x" for speed in AGENT_SPEEDS]
    return Workload(f"lognormal-{size}-cap{cap}", "heavy_tailed", parents, latency, agents, names, cap)


def wfcommons_dir() -> Path:
    """``$ORCHESTRATE_WFCOMMONS_DIR``, else ``shared/benchmarks/wfcommons`` inside or next to the repository."""
    if env := os.environ.get(WFCOMMONS_ENV):
        return Path(env)
    for candidate in (REPO_ROOT / "shared", REPO_ROOT.parent / "shared", Path("/work/shared")):
        if (candidate / "benchmarks" / "wfcommons").is_dir():
            return candidate / "benchmarks" / "wfcommons"
    return REPO_ROOT.parent / "shared" / "benchmarks" / "wfcommons"


def wfcommons(path: Path, cap: int, lower_bound_s: float = 3.0) -> Workload:
    """A WfCommons trace; one agent per program, runtimes scaled so the lower bound at ``cap`` is ``lower_bound_s``."""
    data = json.loads(path.read_text())
    tasks = data["tasks"]
    index = {task["id"]: i for i, task in enumerate(tasks)}
    parents = [sorted(index[p] for p in task["depends_on"]) for task in tasks]
    programs = [task["id"].rsplit("_", 1)[0] for task in tasks]
    names = sorted(set(programs))
    agent_of = {name: i for i, name in enumerate(names)}
    raw = [float(task["runtime_s"]) for task in tasks]
    short = "-".join(part for part in data["name"].split("-") if part not in ("chameleon", "001"))
    workload = Workload(
        f"{short}-cap{cap}",
        "wfcommons",
        parents,
        raw,
        [agent_of[p] for p in programs],
        names,
        cap,
    )
    scale = lower_bound_s / workload.lower_bound_s()
    workload.latency_s = [r * scale for r in raw]
    return workload

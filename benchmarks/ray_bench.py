"""Running on Ray: what a task costs on a local Ray cluster against in-process, and replicas' throughput.

1. Per-task overhead, zero work: N independent code steps that return at once, run in-process and as Ray tasks
   (``executor="ray"``); N model tasks of a local model that answers at once (the ``ticks`` stand-in runtime of the
   tests, one token), in-process and through a pool of one Ray actor. The figure is the run's wall time over N
   (validation excluded; the cluster, the model and the replica started before the timed runs, which share them).
2. Throughput of a CPU-bound simulated model: each call spins the CPU for ``--spin-ms`` (in steps of 10 ms, the
   replica's event loop blocked meanwhile, as a model's forward pass blocks it), served by 1 and by 2 replicas;
   calls per second over M calls, 8 at once.

One local cluster (``--cpus`` CPUs, on 127.0.0.1) for everything, started by this process. Run ``python
benchmarks/ray_bench.py`` (``--quick``: fewer tasks); writes ``benchmarks/results/ray.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))

import anyio  # noqa: E402

from llm_abstractions import BaseLlm, GenerationOptions, LlmConfig, register_llm  # noqa: E402
from llm_abstractions.local import register_runner  # noqa: E402
from llm_abstractions.ray_replicas import ReplicaSettings, ReplicatedLlm  # noqa: E402
from orchestration import ProjectOrchestrator, ProjectSpec, StepContext  # noqa: E402
from orchestration.ray_cluster import LOCAL_SETTINGS  # noqa: E402
from tests.ray.runners import TickLlm, TickRunner  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "ray.json"


def nothing(context: StepContext) -> str:
    return ""


def steps_spec(tasks: int) -> ProjectSpec:
    return ProjectSpec.model_validate(
        {"name": "steps", "defaults": {"max_concurrency": 16}, "tasks": [{"id": f"s{i}"} for i in range(tasks)]}
    )


async def model(folder: Path, *, replicas: int | None, spin_ms: float) -> BaseLlm:
    """The simulated model, loaded: in-process (``replicas=None``) or a started pool of Ray actors."""
    steps = max(1, round(spin_ms / 10))
    settings = {"step_s": spin_ms / 1000 / steps, "work": "spin"}
    options = GenerationOptions(max_tokens=steps if spin_ms else 1)
    llm: BaseLlm = TickLlm(
        LlmConfig(name="ticks", provider="ticks", model=str(folder), settings=settings, options=options)
    )
    if replicas is not None:
        llm = ReplicatedLlm(llm, ReplicaSettings(replicas=replicas))
    await llm.prepare()
    return llm


def model_run(llm: BaseLlm, tasks: int, *, concurrency: int, executor: str) -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate(
        {
            "name": "model",
            "defaults": {"agent": "ticks", "max_concurrency": concurrency},
            "tasks": [{"id": f"m{i}", "description": "go"} for i in range(tasks)],
        }
    )
    return ProjectOrchestrator(spec, llms={"ticks": llm}, executor=executor)  # type: ignore[arg-type]


async def timed_run(run: ProjectOrchestrator) -> float:
    """Seconds of ``run.run()`` (validated first)."""
    run.validate()
    start = time.perf_counter()
    results = await run.run()
    elapsed = time.perf_counter() - start
    assert all(r.succeeded for r in results.values()), [r.error for r in results.values() if not r.succeeded]
    return elapsed


def step_run(tasks: int, executor: str) -> ProjectOrchestrator:
    run = ProjectOrchestrator(steps_spec(0), executor=executor)  # type: ignore[arg-type]
    for i in range(tasks):
        run.add_step(f"s{i}", nothing)
    return run


async def overhead(folder: Path, tasks: int, repeats: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, executor in (("code step", "local"), ("code step", "ray")):
        times = [await timed_run(step_run(tasks, executor)) for _ in range(repeats)]
        rows.append({"work": name, "where": "in-process" if executor == "local" else "Ray task", "seconds": times})
    for executor in ("local", "ray"):
        llm = await model(folder, replicas=None if executor == "local" else 1, spin_ms=0)
        times = [await timed_run(model_run(llm, tasks, concurrency=16, executor=executor)) for _ in range(repeats)]
        await llm.aclose()
        where = "in-process" if executor == "local" else "Ray actor (1 replica)"
        rows.append({"work": "local-model call", "where": where, "seconds": times})
    for row in rows:
        row["us_per_task"] = statistics.median(row["seconds"]) / tasks * 1e6
    return rows


async def throughput(folder: Path, calls: int, spin_ms: float, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for replicas in (1, 2):
        llm = await model(folder, replicas=replicas, spin_ms=spin_ms)
        times = [await timed_run(model_run(llm, calls, concurrency=8, executor="ray")) for _ in range(repeats)]
        await llm.aclose()
        rows.append({"replicas": replicas, "seconds": times, "calls_per_s": calls / statistics.median(times)})
    return rows


def print_tables(report: dict[str, Any]) -> None:
    print(f"\nRay {report['ray']}, {report['cpus']} CPUs; per-task overhead, zero work ({report['tasks']} tasks)")
    print("| work | where | µs per task (median) |")
    print("|---|---|--:|")
    for row in report["overhead"]:
        print(f"| {row['work']} | {row['where']} | {row['us_per_task']:,.0f} |")
    print(f"\nCPU-bound simulated model, {report['spin_ms']} ms of CPU per call, {report['calls']} calls, 8 at once")
    print("| replicas | calls/s (median) | x 1 replica |")
    print("|--:|--:|--:|")
    base = report["throughput"][0]["calls_per_s"]
    for row in report["throughput"]:
        print(f"| {row['replicas']} | {row['calls_per_s']:.1f} | {row['calls_per_s'] / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and repetitions")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--spin-ms", type=float, default=100)
    arguments = parser.parse_args()
    tasks, calls, repeats = (100, 20, 1) if arguments.quick else (500, 60, 3)

    for key, value in LOCAL_SETTINGS.items():
        os.environ.setdefault(key, value)
    import ray

    register_runner("ticks", TickRunner)
    register_llm("ticks", TickLlm)
    with tempfile.TemporaryDirectory(prefix="ray", dir="/tmp") as temp:
        ray.init(
            num_cpus=arguments.cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=temp,
        )
        try:
            folder = Path(temp)
            report = {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "ray": ray.__version__,
                "python": platform.python_version(),
                "cpus": arguments.cpus,
                "machine_cpus": os.cpu_count(),
                "tasks": tasks,
                "calls": calls,
                "spin_ms": arguments.spin_ms,
                "overhead": anyio.run(overhead, folder, tasks, repeats),
                "throughput": anyio.run(throughput, folder, calls, arguments.spin_ms, repeats),
            }
        finally:
            ray.shutdown()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print_tables(report)


if __name__ == "__main__":
    main()

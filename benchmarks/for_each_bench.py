"""Fan-out over data: a ``for_each`` over a JSONL file of N items against the same work written out as N tasks.

Both projects run through ``orchestrate run`` (in-process, with the run store and a results file, output
redirected as in CI), with an offline agent that answers at once: the figures are the engine's own cost.
``mapped`` is one task mapped over ``items.jsonl`` (keys from the items) and a task reading all its outputs;
``written`` is N tasks, each with its item's text in its prompt, and a task depending on all of them. Each
contender runs in a fresh interpreter (``python -m benchmarks.for_each_bench --child ...``), so that its
peak memory is its own. Reported: validation time (loading and checking the project file), the run's wall
time and per item, its CPU time (all threads) and per item (steadier than wall time on a shared machine), and
the peak memory growth of the run (resident set, from before loading the project to
the run's end) in all and per item.

``python -m benchmarks.for_each_bench`` (10,000 items, about a minute) or ``--items 100000`` (several minutes);
writes ``benchmarks/results/for_each.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "for_each.json"
CONTENDERS = ("mapped", "written")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_project(contender: str, items: int, folder: Path) -> Path:
    """The project of ``contender`` over ``items`` items, in ``folder``."""
    texts = [f"ticket {i}: the printer on floor {i % 7} says error {i % 13}" for i in range(items)]
    head: dict[str, Any] = {
        "name": f"for-each-{contender}",
        "agents": {"fast": {"type": "offline"}},
        "defaults": {"agent": "fast", "max_concurrency": 16},
    }
    if contender == "mapped":
        with (folder / "items.jsonl").open("w") as lines:
            for i, text in enumerate(texts):
                lines.write(json.dumps({"id": f"t{i}", "text": text}) + "\n")
        tasks: list[dict[str, Any]] = [
            {
                "id": "classify",
                "for_each": "{{ inputs.items }}",
                "key": "{{ item.id }}",
                "description": "Classify: {{ item.text }}",
            },
            {
                "id": "report",
                "depends_on": ["classify"],
                "description": "{{ tasks.classify.outputs | length }} tickets",
            },
        ]
        document = {**head, "inputs": {"items": "items.jsonl"}, "tasks": tasks}
    else:
        tasks = [{"id": f"classify_{i}", "description": f"Classify: {text}"} for i, text in enumerate(texts)]
        tasks.append({"id": "report", "depends_on": [f"classify_{i}" for i in range(items)], "description": "report"})
        document = {**head, "tasks": tasks}
    path = folder / "project.json"
    path.write_text(json.dumps(document))
    return path


def child(contender: str, items: int) -> dict[str, Any]:
    """One measured run in this (fresh) interpreter."""
    from benchmarks.contenders.engine_cli import orchestrate_run
    from orchestration.orchestrator import ProjectOrchestrator

    with tempfile.TemporaryDirectory(prefix="orchestrate-for-each-") as tmp:
        folder = Path(tmp)
        path = write_project(contender, items, folder)
        gc.collect()
        baseline = _rss_bytes()
        start = time.perf_counter()
        ProjectOrchestrator.from_file(path).validate(check_agents=False)
        validate_s = time.perf_counter() - start
        results = folder / "results.json"
        start, cpu_start = time.perf_counter(), time.process_time()
        orchestrate_run(path, results, folder)
        run_s, run_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        document = json.loads(results.read_text())
    succeeded = sum(1 for r in document["results"].values() if r["status"] == "success")
    expected = items + 2 if contender == "mapped" else items + 1
    return {
        "contender": contender,
        "items": items,
        "validate_s": validate_s,
        "run_s": run_s,
        "us_per_item": run_s / items * 1e6,
        "run_cpu_s": run_cpu_s,
        "cpu_us_per_item": run_cpu_s / items * 1e6,
        "peak_growth_bytes": max(0, peak - baseline),
        "bytes_per_item": max(0, peak - baseline) / items,
        "results": len(document["results"]),
        "ok": document["status"] == "success" and succeeded == expected == len(document["results"]),
    }


def measure(contender: str, items: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.for_each_bench", "--child", contender, "--items", str(items)]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"contender": contender, "items": items, "ok": False, "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000, help="items to map over (default 10,000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each contender (the fastest is kept)")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.items)))
        return
    rows: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for contender in CONTENDERS:  # interleaved
            run = measure(contender, args.items)
            best = rows.get(contender)
            if best is None or (run.get("ok") and run["run_s"] < best.get("run_s", float("inf"))):
                rows[contender] = run
    document = {
        "items": args.items,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "contenders": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(f"for_each over {args.items:,} items vs the same work written out as {args.items:,} tasks")
    header = (
        f"{'contender':<10} {'validate':>10} {'run':>10} {'per item':>10} {'run CPU':>10} {'per item':>10}"
        f" {'peak memory':>13} {'per item':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        if not row.get("ok"):
            print(f"{name:<10} failed: {row.get('error')}")
            continue
        print(
            f"{name:<10} {row['validate_s']:>9.2f}s {row['run_s']:>9.2f}s {row['us_per_item']:>8.0f}µs"
            f" {row['run_cpu_s']:>9.2f}s {row['cpu_us_per_item']:>8.0f}µs"
            f" {row['peak_growth_bytes'] / 1e6:>10.1f} MB {row['bytes_per_item']:>8.0f} B"
        )
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

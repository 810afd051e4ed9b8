"""Reliability figures: request rate under 429 pressure, and the run store's cost per task.

1. Rate under 429 pressure. A fake provider (the test suite's wire-compatible server on
   127.0.0.1, called through the real OpenAI SDK) enforces a requests-per-minute limit
   with a small burst and answers 429 + ``Retry-After`` beyond it. The agent is configured
   with the same RPM. Reported: achieved successful requests per minute against the
   limit (goal: at least 95% with no failed task), 429s seen, endpoint-wide backoffs.
2. Store overhead. The same project of offline tasks, run with the SQLite run store and
   without: per task (median of interleaved repetitions) for zero-latency tasks (the worst
   case: dependents wait for their parents' commits, and commits cannot hide behind calls)
   and for tasks whose calls take 5-15 ms; and how many results each group commit held.

Run ``python benchmarks/reliability_bench.py --quick`` (about 20 s) or without ``--quick``.
Writes ``benchmarks/results/reliability.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import anyio  # noqa: E402

from agent_registry import AgentRegistry  # noqa: E402
from orchestration import ProjectOrchestrator, ProjectSpec  # noqa: E402
from orchestration.store import RunStore  # noqa: E402
from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply, Response  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "reliability.json"


@dataclass
class RateLimitedServer:
    """Server side of an RPM limit: a token bucket with a small burst; 429 + Retry-After beyond it."""

    per_minute: float
    burst: float
    latency_s: float
    tokens: float = 0.0
    updated: float = field(default_factory=time.monotonic)
    ok: list[float] = field(default_factory=list)
    limited: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def __call__(self, request: RecordedRequest) -> Response:
        rate = self.per_minute / 60.0
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * rate)
            self.updated = now
            if self.tokens < 1.0:
                self.limited += 1
                wait = (1.0 - self.tokens) / rate
                return Fault.rate_limited(retry_after=f"{wait:.3f}")
            self.tokens -= 1.0
            self.ok.append(now)
        return Reply(text="ok", delay_s=self.latency_s)


async def _run_project(orchestrator: ProjectOrchestrator) -> dict[str, Any]:
    return await orchestrator.run()


def rate_under_pressure(per_minute: float, seconds: float, concurrency: int) -> dict[str, Any]:
    """Achieved successful request rate against the configured RPM limit."""
    tasks = int(per_minute / 60.0 * seconds)
    server_side = RateLimitedServer(per_minute=per_minute, burst=max(1.0, per_minute / 60.0 / 5), latency_s=0.02)
    with FakeProviderServer(server_side) as server:
        spec = ProjectSpec.model_validate(
            {
                "name": "rate",
                "agents": {
                    "llm": {
                        "type": "gpt",
                        "model": "bench",
                        "api_key": "bench-key",
                        "base_url": server.openai_base_url,
                        "retry": {"retries": 20, "initial_backoff_s": 0.01, "max_backoff_s": 0.2},
                        "limits": {"requests_per_minute": per_minute, "max_concurrent": concurrency},
                    }
                },
                "defaults": {"agent": "llm", "max_concurrency": concurrency},
                "tasks": [{"id": f"t{i}", "description": f"request {i}"} for i in range(tasks)],
            }
        )
        orchestrator = ProjectOrchestrator(spec, registry=AgentRegistry())
        start = time.monotonic()
        results = anyio.run(_run_project, orchestrator)
        elapsed = time.monotonic() - start
        first_request = server.requests[0].received_at
    successes = server_side.ok
    failed = sum(1 for r in results.values() if not r.succeeded)
    window = successes[-1] - first_request
    # the first request may use the server's burst: count the rate over the steady part
    achieved = (len(successes) - server_side.burst) / window * 60.0 if window > 0 else 0.0
    return {
        "configured_rpm": per_minute,
        "tasks": tasks,
        "failed_tasks": failed,
        "achieved_rpm": round(achieved, 1),
        "achieved_share": round(achieved / per_minute, 4),
        "responses_429": server_side.limited,
        "requests": len(server.requests),
        "wall_s": round(elapsed, 2),
    }


def _store_run(tasks: int, store: RunStore | None, latency_ms: list[float]) -> tuple[float, int]:
    spec = ProjectSpec.model_validate(
        {
            "name": "store-bench",
            "agents": {"sim": {"type": "offline", "latency_ms": latency_ms}},
            "defaults": {"agent": "sim"},
            "tasks": [{"id": f"t{i}", "description": f"task {i}"} for i in range(tasks)],
        }
    )
    orchestrator = ProjectOrchestrator(spec, registry=AgentRegistry.default(env={}), store=store)
    orchestrator.validate()
    start = time.perf_counter()
    anyio.run(_run_project, orchestrator)
    elapsed = time.perf_counter() - start
    commits = store.writer.commits if store is not None else 0
    return elapsed, commits


def store_overhead(tasks: int, repeats: int, latency_ms: list[float]) -> dict[str, Any]:
    """Per-task cost of the run store: the same project with the store on and off (16 tasks at once)."""
    off: list[float] = []
    on: list[float] = []
    commits: list[int] = []
    with tempfile.TemporaryDirectory() as folder:
        _store_run(tasks, None, latency_ms)  # warm-up: imports and caches
        for repeat in range(repeats):  # interleaved, so that machine noise hits both alike
            off.append(_store_run(tasks, None, latency_ms)[0])
            store = RunStore(Path(folder) / f"runs-{repeat}.db")
            elapsed, count = _store_run(tasks, store, latency_ms)
            store.close()
            on.append(elapsed)
            commits.append(count)
    per_task_off = statistics.median(off) / tasks * 1e6
    per_task_on = statistics.median(on) / tasks * 1e6
    return {
        "tasks": tasks,
        "call_latency_ms": latency_ms,
        "repeats": repeats,
        "per_task_us_store_off": round(per_task_off, 1),
        "per_task_us_store_on": round(per_task_on, 1),
        "store_overhead_us_per_task": round(per_task_on - per_task_off, 1),
        "results_per_commit": round(tasks / statistics.median(commits), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads (about 20 s)")
    args = parser.parse_args()
    quick = args.quick
    rate = rate_under_pressure(per_minute=3000.0, seconds=5.0 if quick else 20.0, concurrency=32)
    store = store_overhead(tasks=2000 if quick else 10000, repeats=3 if quick else 5, latency_ms=[0, 0])
    slow = store_overhead(tasks=500 if quick else 2000, repeats=3, latency_ms=[5, 15])
    document = {
        "quick": quick,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "rate_under_429_pressure": rate,
        "store_overhead": store,
        "store_overhead_with_latency": slow,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    rows = [
        ("configured limit (requests/min)", f"{rate['configured_rpm']:.0f}"),
        ("achieved (requests/min)", f"{rate['achieved_rpm']:.0f} ({rate['achieved_share']:.1%} of the limit)"),
        ("tasks / failed", f"{rate['tasks']} / {rate['failed_tasks']}"),
        ("429 responses / requests", f"{rate['responses_429']} / {rate['requests']}"),
        ("zero-latency calls: per task, store off (µs)", f"{store['per_task_us_store_off']}"),
        ("zero-latency calls: per task, store on (µs)", f"{store['per_task_us_store_on']}"),
        ("zero-latency calls: store overhead (µs)", f"{store['store_overhead_us_per_task']}"),
        ("results per group commit", f"{store['results_per_commit']}"),
        ("5-15 ms calls: per task off / on (µs)", f"{slow['per_task_us_store_off']} / {slow['per_task_us_store_on']}"),
        ("5-15 ms calls: store overhead (µs)", f"{slow['store_overhead_us_per_task']}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

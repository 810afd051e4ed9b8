"""Reliability figures: pacing against rate limits the agent is not told, and the run store's cost per task.

1. Pacing. A fake provider (the test suite's wire-compatible server on 127.0.0.1, called
   through the real OpenAI, Anthropic and Gemini SDKs) enforces a requests-per-minute and/or a
   tokens-per-minute limit with token buckets holding one second of each rate, and answers 429
   + ``Retry-After`` beyond them; with ``headers`` its answers state what is left, as OpenAI's and
   Anthropic's do. The agent sets only ``max_concurrent`` (32), except in the ``configured``
   scenario (the reference: the limit told, as before pacing existed). Reported per scenario: the
   share of the binding limit achieved over the steady part of the run, the share of requests
   answered 429, failed tasks, and for a limit that halves mid-run, how long the client kept
   sending above the new limit.
2. Store overhead. The same project of offline tasks, run with the SQLite run store and
   without: per task (median of interleaved repetitions) for zero-latency tasks (the worst
   case: dependents wait for their parents' commits, and commits cannot hide behind calls)
   and for tasks whose calls take 5-15 ms; and how many results each group commit held.

Run ``python benchmarks/reliability_bench.py --quick`` (about 2 minutes) or without ``--quick``
(about 8). Writes ``benchmarks/results/reliability.json`` and prints a table.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import anyio  # noqa: E402

from agent_registry import AgentRegistry  # noqa: E402
from orchestration import ProjectOrchestrator, ProjectSpec  # noqa: E402
from orchestration.store import RunStore  # noqa: E402
from tests.fakes.provider_server import FakeProviderServer  # noqa: E402
from tests.fakes.rate_limited import RateLimitedProvider  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "reliability.json"

_AGENT_TYPE = {"openai": "gpt", "anthropic": "claude", "gemini": "gemini"}
_PROMPT_WORDS = 20
"""Words of each task's prompt beyond its name: what the token limits count."""


@dataclass(frozen=True)
class PacingScenario:
    name: str
    api: str
    requests_per_minute: float | None
    tokens_per_minute: float | None = None
    headers: bool = True
    configured: bool = False
    """The agent is told the limits (the reference)."""
    halve_after_s: float | None = None
    """The provider's limits halve this long into the run (the key is shared elsewhere)."""


SCENARIOS = [
    PacingScenario("headers, 600 rpm", "openai", 600),
    PacingScenario("headers, 3,000 rpm", "openai", 3000),
    PacingScenario("headers, tokens bind first", "openai", 3000, tokens_per_minute=30_000),
    PacingScenario("anthropic headers, 600 rpm", "anthropic", 600),
    PacingScenario("no headers, 600 rpm", "gemini", 600, headers=False),
    PacingScenario("no headers, 3,000 rpm", "gemini", 3000, headers=False),
    PacingScenario("configured (reference), 600 rpm", "openai", 600, configured=True),
    PacingScenario("headers, 1,200 rpm halving mid-run", "openai", 1200, halve_after_s=0.5),
    PacingScenario("no headers, 1,200 rpm halving mid-run", "gemini", 1200, headers=False, halve_after_s=0.5),
]


def _project(scenario: PacingScenario, server: FakeProviderServer, tasks: int) -> ProjectSpec:
    base_url = {
        "openai": server.openai_base_url,
        "anthropic": server.anthropic_base_url,
        "gemini": server.gemini_base_url,
    }[scenario.api]
    limits: dict[str, Any] = {"max_concurrent": 32}
    if scenario.configured:
        limits |= {"requests_per_minute": scenario.requests_per_minute, "tokens_per_minute": scenario.tokens_per_minute}
    padding = " ".join(["word"] * _PROMPT_WORDS)
    return ProjectSpec.model_validate(
        {
            "name": "pacing",
            "agents": {
                "llm": {
                    "type": _AGENT_TYPE[scenario.api],
                    "model": "bench",
                    "api_key": "bench-key",
                    "base_url": base_url,
                    "retry": {"retries": 50, "initial_backoff_s": 0.01, "max_backoff_s": 0.5},
                    "limits": limits,
                }
            },
            "defaults": {"agent": "llm", "max_concurrency": 32},
            "tasks": [{"id": f"t{i}", "description": f"request {i} {padding}"} for i in range(tasks)],
        }
    )


_SETTLE_S = 2.0
"""The first seconds of a run (or after a change of limits) are left out of the achieved rate: they
hold the provider's burst and the pacer's learning."""


def _share_achieved(
    provider: RateLimitedProvider, scenario: PacingScenario, start: float, end: float, tokens: float
) -> float:
    """Achieved share of the binding limit from ``_SETTLE_S`` after ``start`` to ``end`` (server clock);
    ``tokens``: what each request costs."""
    start += _SETTLE_S
    accepted = sum(1 for t in provider.accepted if start <= t <= end)
    if end <= start or not accepted:
        return 0.0
    limits = [(scenario.requests_per_minute, 1.0), (scenario.tokens_per_minute, tokens)]
    return max(accepted * cost / (end - start) * 60.0 / per_minute for per_minute, cost in limits if per_minute)


def _sent_above_after(provider: RateLimitedProvider, change: float, limit_per_s: float) -> float:
    """Seconds after ``change`` until the client last sent over 1.2x ``limit_per_s`` in a one-second window."""
    arrivals = [t for t in provider.arrivals if t >= change]
    last_over = change
    j = 0
    for i, t in enumerate(arrivals):
        while arrivals[j] < t - 1.0:
            j += 1
        if t - change >= 1.0 and i - j + 1 > 1.2 * limit_per_s:
            last_over = t
    return last_over - change


def pacing_scenario(scenario: PacingScenario, seconds: float) -> dict[str, Any]:
    """Run a project sized to last about ``seconds`` at the limit; the figures of the run."""
    rpm = scenario.requests_per_minute or 60_000.0
    provider = RateLimitedProvider(
        scenario.requests_per_minute, scenario.tokens_per_minute, headers=scenario.headers, latency_s=0.02
    )
    words = 3 + _PROMPT_WORDS  # "request", its number and the padding, plus the answer's "ok"
    per_minute = min(rpm, (scenario.tokens_per_minute or float("inf")) / words)
    tasks = int(per_minute / 60.0 * seconds)
    halve_at: list[float] = []
    with FakeProviderServer(provider) as server:
        orchestrator = ProjectOrchestrator(_project(scenario, server, tasks), registry=AgentRegistry())
        timer = None
        if scenario.halve_after_s is not None:

            def halve() -> None:
                halve_at.append(time.monotonic())
                provider.set_limits(
                    requests_per_minute=rpm / 2,
                    tokens_per_minute=scenario.tokens_per_minute and scenario.tokens_per_minute / 2,
                )

            timer = threading.Timer(seconds * scenario.halve_after_s, halve)
            timer.start()
        start = time.monotonic()
        results = anyio.run(orchestrator.run)
        elapsed = time.monotonic() - start
        if timer is not None:
            timer.cancel()
        tokens = float(provider.charge(server.requests[0]))
    failed = sum(1 for r in results.values() if not r.succeeded)
    requests = len(provider.arrivals)
    first = provider.arrivals[0]
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "api": scenario.api,
        "requests_per_minute": scenario.requests_per_minute,
        "tokens_per_minute": scenario.tokens_per_minute,
        "headers": scenario.headers,
        "configured": scenario.configured,
        "tasks": tasks,
        "failed_tasks": failed,
        "requests": requests,
        "responses_429": provider.limited,
        "share_429": round(provider.limited / requests, 4),
        "wall_s": round(elapsed, 2),
    }
    if halve_at:
        change = halve_at[0]
        row["achieved_share_before_change"] = round(_share_achieved(provider, scenario, first, change, tokens), 4)
        halved = PacingScenario(
            scenario.name,
            scenario.api,
            rpm / 2,
            scenario.tokens_per_minute and scenario.tokens_per_minute / 2,
        )
        row["achieved_share_after_change"] = round(
            _share_achieved(provider, halved, change, provider.accepted[-1], tokens), 4
        )
        row["sent_above_new_limit_for_s"] = round(_sent_above_after(provider, change, rpm / 2 / 60.0), 2)
    else:
        row["achieved_share"] = round(_share_achieved(provider, scenario, first, provider.accepted[-1], tokens), 4)
    return row


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
    anyio.run(orchestrator.run)
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


def _pacing_line(row: dict[str, Any]) -> str:
    if "achieved_share" in row:
        achieved = f"{row['achieved_share']:.1%} of the limit"
    else:
        achieved = (
            f"{row['achieved_share_before_change']:.1%} before, {row['achieved_share_after_change']:.1%} after;"
            f" above the new limit for {row['sent_above_new_limit_for_s']:.1f}s"
        )
    return f"{achieved}; 429s {row['share_429']:.1%} of {row['requests']}; failed {row['failed_tasks']}/{row['tasks']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes)")
    parser.add_argument("--only", help="run only the pacing scenarios whose name contains this")
    args = parser.parse_args()
    quick = args.quick
    pacing = [
        pacing_scenario(scenario, seconds=15.0 if quick else 60.0)
        for scenario in SCENARIOS
        if args.only is None or args.only in scenario.name
    ]
    document: dict[str, Any] = {
        "quick": quick,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "pacing": pacing,
    }
    rows = [(f"pacing: {row['scenario']}", _pacing_line(row)) for row in pacing]
    if args.only is None:
        store = store_overhead(tasks=2000 if quick else 10000, repeats=3 if quick else 5, latency_ms=[0, 0])
        slow = store_overhead(tasks=500 if quick else 2000, repeats=3, latency_ms=[5, 15])
        document |= {"store_overhead": store, "store_overhead_with_latency": slow}
        rows += [
            ("zero-latency calls: per task, store off (µs)", f"{store['per_task_us_store_off']}"),
            ("zero-latency calls: per task, store on (µs)", f"{store['per_task_us_store_on']}"),
            ("zero-latency calls: store overhead (µs)", f"{store['store_overhead_us_per_task']}"),
            ("results per group commit", f"{store['results_per_commit']}"),
            (
                "5-15 ms calls: per task off / on (µs)",
                f"{slow['per_task_us_store_off']} / {slow['per_task_us_store_on']}",
            ),
            ("5-15 ms calls: store overhead (µs)", f"{slow['store_overhead_us_per_task']}"),
        ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"written to {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()

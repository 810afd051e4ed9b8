"""Spend-control figures: what the answer cache costs per task, and what it saves on a second run.

1. Lookup cost. What the executor adds to a task with the cache on, before any call: the request's key
   (:func:`orchestration.answer_cache.request_key`, sha256 of the request: canonical JSON, the texts as they are)
   and its lookup in the store (:class:`orchestration.store.answers.AnswerReader`), for tasks of a project whose
   prompts are about ``--prompt-chars`` long, in a store already holding ``--entries`` answers: every key a hit,
   then every key a miss. Medians over the repetitions, in µs per task.
2. Savings. ``examples/research_pipeline.yaml`` (Gemini, Claude, OpenAI agents) run twice on the same store against
   the fake provider server (the test suite's, on 127.0.0.1, through the real SDKs), its agents' endpoints and keys
   pointed there; answers of about ``--answer-words`` words (the fake's tokens). Reported per run: requests the
   server received, the cost of the results (genai-prices at the usage the server reported) and the dollars the
   cache says it saved, and the run's wall time.

Run ``python benchmarks/cache_bench.py`` (under a minute). Writes ``benchmarks/results/cache.json`` and prints the
tables (``report.py`` makes the section of ``RESULTS.md`` from the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import anyio  # noqa: E402

from agent_registry import AgentRegistry  # noqa: E402
from benchmarks.report import cache_tables, machine, show  # noqa: E402
from orchestration import ExecutionResult, ProjectOrchestrator, ProjectSpec  # noqa: E402
from orchestration.answer_cache import request_key, sample_indices  # noqa: E402
from orchestration.executor import TaskExecutor  # noqa: E402
from orchestration.loader import load_project_file  # noqa: E402
from orchestration.models import ExecutionStatus, utc_now  # noqa: E402
from orchestration.project import Project  # noqa: E402
from orchestration.store import RunStore  # noqa: E402
from orchestration.store.answers import put_statement  # noqa: E402
from tests.fakes.agents import base_url_for  # noqa: E402
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "cache.json"
PIPELINE = REPO_ROOT / "examples" / "research_pipeline.yaml"


# -- 1. the cost of a lookup ------------------------------------------------------------------------


def lookup_project(tasks: int, prompt_chars: int) -> Project:
    """A project of ``tasks`` independent tasks on one OpenAI agent, each prompt about ``prompt_chars`` long."""
    filler = ("lorem ipsum dolor sit amet " * (prompt_chars // 27 + 1))[:prompt_chars]
    spec = ProjectSpec.model_validate(
        {
            "name": "lookups",
            "agents": {
                "writer": {"type": "gpt", "model": "gpt-4.1-mini", "api_key": "k", "options": {"max_tokens": 300}}
            },
            "defaults": {"agent": "writer"},
            "tasks": [
                {"id": f"t{i:05d}", "description": f"Task {i} on {{{{ inputs.topic }}}}. {filler}"}
                for i in range(tasks)
            ],
            "inputs": {"topic": "otters"},
        }
    )
    return ProjectOrchestrator(spec, registry=AgentRegistry()).validate(check_agents=False)


def fill_store(store: RunStore, keys: list[str]) -> None:
    """Keep an answer of ~200 words under each key."""
    answer = ExecutionResult(task_id="t", status=ExecutionStatus.SUCCESS, output="word " * 200, agent="writer")
    statements = [put_statement(key, answer, "filler", utc_now()) for key in keys]

    def insert(connection: sqlite3.Connection) -> None:
        for sql, parameters in statements:
            connection.execute(sql, parameters)

    store.writer.transaction(insert)


def lookup_costs(entries: int, tasks: int, prompt_chars: int, repeats: int) -> dict[str, Any]:
    project = lookup_project(tasks, prompt_chars)
    samples = sample_indices(project)
    messages = [TaskExecutor.messages_for(task, project.inputs, {}) for task in project.tasks]

    def keys(salt: int) -> list[str]:
        return [
            request_key(project.registry, task, messages[task.index], task.options, samples[task.index] + salt)
            for task in project.tasks
        ]

    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(Path(folder) / "runs.db")
        store.cache_stats()  # creates the schema
        fill_store(store, keys(0) + [f"{i:064x}" for i in range(max(0, entries - tasks))])
        reader = store.answer_reader()
        figures: dict[str, list[float]] = {"key": [], "hit": [], "miss": []}
        for _ in range(repeats):
            for name, salt in (("hit", 0), ("miss", 1_000_000)):
                started = time.perf_counter()
                found = 0
                for task in project.tasks:
                    key = request_key(
                        project.registry, task, messages[task.index], task.options, samples[task.index] + salt
                    )
                    found += reader(key) is not None
                figures[name].append((time.perf_counter() - started) / tasks * 1e6)
                assert found == (tasks if name == "hit" else 0)
            started = time.perf_counter()
            keys(0)
            figures["key"].append((time.perf_counter() - started) / tasks * 1e6)
        reader.close()
        store.close()
    return {
        "entries": entries,
        "tasks": tasks,
        "prompt_chars": prompt_chars,
        "repeats": repeats,
        "us_per_task": {name: statistics.median(values) for name, values in figures.items()},
    }


# -- 2. what a second run saves ---------------------------------------------------------------------


def pipeline_spec(server: FakeProviderServer) -> ProjectSpec:
    """``examples/research_pipeline.yaml`` with its agents pointed at ``server``."""
    spec, _ = load_project_file(PIPELINE)
    data = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for agent in data["agents"].values():
        agent.update(base_url=base_url_for(agent["type"], server), api_key=f"test-{agent['type']}-key")
    return ProjectSpec.model_validate(data)


def answering(words: int) -> Any:
    def reply(request: RecordedRequest) -> Reply:
        if request.api == "anthropic" and request.json.get("tool_choice"):  # the outline's forced JSON
            outline = {"title": "Small reactors", "sections": [f"Section {i}" for i in range(6)]}
            return Reply(text=json.dumps(outline))
        return Reply(text=" ".join(f"w{i}" for i in range(words)))

    return reply


def savings(answer_words: int) -> dict[str, Any]:
    runs = []
    with FakeProviderServer() as server, tempfile.TemporaryDirectory() as folder:
        server.handler = answering(answer_words)
        store = Path(folder) / "runs.db"
        for _ in range(2):
            before = len(server.requests)
            orchestrator = ProjectOrchestrator(pipeline_spec(server), registry=AgentRegistry(), store=store)
            started = time.perf_counter()
            results = anyio.run(orchestrator.run)
            wall = time.perf_counter() - started
            assert all(r.succeeded for r in results.values()), {k: r.error for k, r in results.items()}
            runs.append(
                {
                    "requests": len(server.requests) - before,
                    "cost_usd": sum(r.cost_usd or 0.0 for r in results.values()),
                    "saved_usd": sum(r.cache.saved_usd or 0.0 for r in results.values() if r.cache and r.cache.hit),
                    "hits": sum(bool(r.cache and r.cache.hit) for r in results.values()),
                    "tasks": len(results),
                    "wall_s": wall,
                }
            )
    return {"answer_words": answer_words, "runs": runs}


# -- report ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000, help="answers kept in the store")
    parser.add_argument("--tasks", type=int, default=1_000, help="tasks looked up per repetition")
    parser.add_argument("--prompt-chars", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--answer-words", type=int, default=400)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = {
        "when": utc_now().isoformat(timespec="seconds"),
        "machine": {"cpu": machine()["cpu"], "cores": os.cpu_count()},
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
        "lookup": lookup_costs(args.entries, args.tasks, args.prompt_chars, args.repeats),
        "savings": savings(args.answer_words),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    show(cache_tables(result))


if __name__ == "__main__":
    main()

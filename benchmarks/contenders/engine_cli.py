"""This engine as a user runs it: ``orchestrate run FILE --results PATH`` with the defaults, output to a file.

The default configuration: a run store (SQLite, in a temporary folder), the progress display and the
event log on, stdout and stderr going to a file as in CI. The CLI runs in this process (so that its
memory is measured) with its output redirected; the run's time is measured as the issue defines it,
from the results file: last ``completed_at`` minus first ``started_at``.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.contenders import Trace
from benchmarks.workloads import Workload
from orchestration.cli.app import app

__all__ = ["execute", "orchestrate_run"]


def _task_file(workload: Workload, path: Path) -> None:
    """The workload as a JSON task file (offline agents replaying each task's latency)."""
    agents: dict[str, dict[str, object]] = {name: {"type": "offline"} for name in workload.agent_names}
    for node, latency in enumerate(workload.latency_s):
        if latency > 0:
            settings = agents[workload.agent_names[workload.agents[node]]]
            settings.setdefault("latency_by_prompt_ms", {})[f"t{node}"] = latency * 1000.0  # type: ignore[index]
    tasks = [
        {
            "id": f"t{node}",
            "description": f"t{node}",
            "agent": workload.agent_names[workload.agents[node]],
            "depends_on": [f"t{p}" for p in parents],
        }
        for node, parents in enumerate(workload.parents)
    ]
    document = {"name": workload.name, "agents": agents, "defaults": {"max_concurrency": workload.cap}, "tasks": tasks}
    path.write_text(json.dumps(document))


def orchestrate_run(project: Path, results: Path, folder: Path) -> None:
    """``orchestrate run PROJECT --results RESULTS`` in this process, its run store and output (stdout and
    stderr, as in CI) in ``folder``; a failed run raises with its output."""
    argv = ["run", str(project), "--results", str(results), "--store", str(folder / "runs.db")]
    with (
        open(folder / "output.txt", "w") as output,
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(output),
    ):
        try:
            app(argv, prog_name="orchestrate")
        except SystemExit as exc:
            if exc.code not in (0, None):
                output_text = (folder / "output.txt").read_text()
                raise RuntimeError(f"orchestrate run exited {exc.code}: {output_text}") from None


def execute(workload: Workload) -> Trace:
    with tempfile.TemporaryDirectory(prefix="orchestrate-bench-cli-") as tmp:
        folder = Path(tmp)
        _task_file(workload, folder / "project.json")
        results = folder / "results.json"
        start = time.perf_counter()
        orchestrate_run(folder / "project.json", results, folder)
        wall = time.perf_counter() - start
        document = json.loads(results.read_text())
    starts, ends = [], []
    for node in range(workload.size):
        result = document["results"][f"t{node}"]
        starts.append(datetime.fromisoformat(result["started_at"]).timestamp())
        ends.append(datetime.fromisoformat(result["completed_at"]).timestamp())
    run = max(ends) - min(starts)
    return Trace(wall - run, run, starts, ends)

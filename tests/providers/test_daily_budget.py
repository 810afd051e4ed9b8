"""The per-project daily cap of the agents file (``budgets: {project_daily_usd: X}``), through the real OpenAI SDK
against the fake server: what every run of the project spends in a day, together, never goes above it, even with two
processes running the project at once; what could not run ends ``budget_exhausted``."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from orchestration.cli.app import app
from orchestration.store import RunStore
from tests.fakes.agents import agent_settings
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply
from tests.providers.test_budget import counted, server_cost

REPO = Path(__file__).resolve().parents[2]
TASKS = 12


def agents_file(tmp_path: Path, server: FakeProviderServer, daily_usd: float | None) -> Path:
    writer = agent_settings("gpt", server, options={"max_tokens": 50})
    lines = ["agents:", "  writer:", *(f"    {key}: {value}" for key, value in writer.items() if key != "options")]
    lines.append("    options: {max_tokens: 50}")
    if daily_usd is not None:
        lines += ["budgets:", f"  project_daily_usd: {daily_usd!r}"]
    path = tmp_path / f"agents-{daily_usd}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def project_file(tmp_path: Path, label: str) -> Path:
    """Project ``daily`` (the name the cap is counted by); ``label`` tells its runs' requests apart."""
    tasks = [f"  - {{id: t{i:02d}, description: '{label}: a line about topic {i}'}}" for i in range(TASKS)]
    path = tmp_path / f"daily-{label}.yaml"
    path.write_text(
        "name: daily\ndefaults: {agent: writer, cache: false, max_concurrency: 4}\ntasks:\n" + "\n".join(tasks)
    )
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def one_run_cost(tmp_path: Path, server: FakeProviderServer) -> float:
    """What one run of the project costs, with no cap (a store of its own)."""
    path, agents = project_file(tmp_path, "A"), agents_file(tmp_path, server, None)
    code, output = invoke("run", str(path), "--agents", str(agents), "--store", str(tmp_path / "free.db"), "-q")
    assert code == 0, output
    cost = server_cost(server)
    server.clear()
    return cost


def test_runs_of_one_project_share_its_daily_cap(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    fake_server.handler = counted
    cost = one_run_cost(tmp_path, fake_server)
    cap = 1.5 * cost
    agents, store = agents_file(tmp_path, fake_server, cap), str(tmp_path / "runs.db")
    code, output = invoke("run", str(project_file(tmp_path, "A")), "--agents", str(agents), "--store", store, "-q")
    assert code == 0, output  # the first run fits
    code, output = invoke("run", str(project_file(tmp_path, "B")), "--agents", str(agents), "--store", store)
    assert code == 1, output
    assert server_cost(fake_server) <= cap, "the project spent more than its daily cap"
    second = RunStore(store).list_runs()[0]
    assert second.status == "budget_exhausted"
    results = RunStore(store).load_results(second.run_id).values()
    refused = [r for r in results if not r.succeeded]
    assert refused and all(r.error is not None and r.error.type == "budget_exhausted" for r in refused)
    assert all("project 'daily''s daily budget" in (r.error.message if r.error else "") for r in refused)
    assert any(r.succeeded for r in results)

    other = tmp_path / "other.yaml"  # another project has a day of its own
    other.write_text(project_file(tmp_path, "C").read_text().replace("name: daily", "name: other"))
    code, output = invoke("run", str(other), "--agents", str(agents), "--store", store, "-q")
    assert code == 0, output


def test_a_bad_daily_cap_is_reported_with_its_file_and_line(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    agents = agents_file(tmp_path, fake_server, -1.0)
    code, output = invoke(
        "run", str(project_file(tmp_path, "A")), "--agents", str(agents), "--store", str(tmp_path / "r.db")
    )
    assert code == 2
    assert f"{agents}:" in output and "budgets.project_daily_usd" in output and "greater than or equal to 0" in output
    assert fake_server.requests == []


def test_two_processes_running_the_project_at_once_stay_under_the_cap(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    fake_server.handler = counted
    cost = one_run_cost(tmp_path, fake_server)
    arrived: set[str] = set()

    def together(request: RecordedRequest) -> Reply:
        """Slow answers (2 s) until both runs called, so that neither can take the whole cap before the other starts."""
        arrived.add(request.body["messages"][-1]["content"][0])
        return dataclasses.replace(counted(request), delay_s=0.2 if len(arrived) == 2 else 2.0)

    fake_server.handler = together
    cap = 0.75 * cost  # not even one run fits: each process must leave room to the other
    agents, store = agents_file(tmp_path, fake_server, cap), str(tmp_path / "runs.db")
    run = [sys.executable, "-m", "orchestration", "run", "--agents", str(agents), "--store", store, "-q"]
    processes = [
        subprocess.Popen(
            [*run, str(project_file(tmp_path, label))],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for label in ("A", "B")
    ]
    codes = [process.wait(timeout=120) for process in processes]
    assert sorted(codes) in ([0, 1], [1, 1]), [p.stderr.read() if p.stderr else b"" for p in processes]
    for process in processes:
        if process.stderr:
            process.stderr.close()

    assert server_cost(fake_server) <= cap, "the two runs together spent more than the project's daily cap"
    runs = RunStore(store).list_runs()
    assert sum(RunStore(store).spent(run.run_id)[""][0] for run in runs) <= cap
    arrivals = {
        label: [r.received_at for r in fake_server.requests if r.body["messages"][-1]["content"].startswith(label)]
        for label in ("A", "B")
    }
    assert arrivals["A"] and arrivals["B"], "one process got none of the cap"
    overlap = min(arrivals["A"]) < max(arrivals["B"]) and min(arrivals["B"]) < max(arrivals["A"])
    assert overlap, "the two runs did not call the model at the same time"

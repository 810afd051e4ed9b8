"""``orchestrate run --ray`` and ``resume --ray`` as real processes on the test cluster: the same results as without
Ray (apart from timings), and a driver killed with ``kill -9`` mid-run resumed on Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from orchestration.store import LEASE_ENV, RunStatus, RunStore
from tests.ray.conftest import Cluster

REPO = Path(__file__).resolve().parents[2]
TIMINGS = {"started_at", "completed_at", "duration_s", "time_to_first_token_s", "run_id"}

STEPS = """
import time
from pathlib import Path

HERE = Path(__file__).parent

def double(context):
    with open(HERE / "calls.log", "a") as log:
        log.write(f"{context.task_id}\\n")
    return {"n": context.params["n"] * 2}

def hold(context):
    with open(HERE / "calls.log", "a") as log:
        log.write(f"{context.task_id}\\n")
    while not (HERE / "release.flag").exists():
        time.sleep(0.01)
    return str(sum(context.parsed[f"d{n}"]["n"] for n in range(4)))
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "ray_steps.py").write_text(STEPS)
    lines = ["name: on-ray", "agents: {echo: {type: offline}}", "tasks:"]
    lines += [f"  - {{id: d{n}, call: 'ray_steps:double', params: {{n: {n}}}, output_format: json}}" for n in range(4)]
    lines += [
        "  - {id: hold, call: 'ray_steps:hold', depends_on: [d0, d1, d2, d3]}",
        "  - {id: say, agent: echo, depends_on: [hold], description: 'total {{ tasks.hold.output }}'}",
    ]
    path = tmp_path / "on_ray.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def orchestrate(cluster: Cluster, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestration", *args, "-q"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**cluster.env, LEASE_ENV: "0.5", "PYTHONPATH": str(REPO)},
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items() if key not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def finish(process: subprocess.Popen[bytes]) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()


def test_a_run_on_ray_writes_the_results_a_local_run_writes(ray_cluster: Cluster, tmp_path: Path) -> None:
    path = project(tmp_path)
    (tmp_path / "release.flag").touch()
    store = str(tmp_path / "runs.db")
    finish(orchestrate(ray_cluster, "run", str(path), "--store", store, "--results", str(tmp_path / "local.json")))
    on_ray = ["--ray-address", ray_cluster.address, "--results", str(tmp_path / "ray.json")]
    finish(orchestrate(ray_cluster, "run", str(path), "--store", store, "--no-cache", *on_ray))
    local, ray = (json.loads((tmp_path / name).read_text()) for name in ("local.json", "ray.json"))
    assert without_timings(ray) == without_timings(local)
    assert local["results"]["say"]["output"].endswith("total 12")


def test_kill_9_of_the_driver_then_resume_on_ray(ray_cluster: Cluster, tmp_path: Path) -> None:
    path = project(tmp_path)
    store = RunStore(tmp_path / "runs.db")
    on_ray = ["--ray-address", ray_cluster.address, "--store", str(store.path)]
    driver = orchestrate(ray_cluster, "run", str(path), "--run-id", "k9", *on_ray)
    deadline = time.monotonic() + 60
    while "hold" not in calls(tmp_path):  # the four steps before it are recorded: kill the driver inside hold
        assert driver.poll() is None and time.monotonic() < deadline, "the run did not reach 'hold'"
        time.sleep(0.01)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=30)
    assert {t for t, e in store.load_run("k9").tasks.items() if e.result.succeeded} == {"d0", "d1", "d2", "d3"}
    (tmp_path / "release.flag").touch()
    deadline = time.monotonic() + 30
    while (lease := store.lease("k9")) is not None and not lease.expired() and time.monotonic() < deadline:
        time.sleep(0.01)  # the killed driver's lease (0.5 s) must expire first
    finish(orchestrate(ray_cluster, "resume", "k9", *on_ray))
    record = store.get_run("k9")
    assert record.status is RunStatus.SUCCESS and record.sessions == 2
    assert sorted(calls(tmp_path)) == sorted(["d0", "d1", "d2", "d3", "hold", "hold"])  # succeeded steps kept
    assert store.load_results("k9")["say"].output is not None


def processes_under(folder: Path) -> list[str]:
    """Command lines of the processes that name ``folder`` (a Ray cluster's session folder is under it)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if str(folder) in command:
            found.append(command)
    return found


def test_ray_without_an_address_starts_a_cluster_for_the_run_and_stops_it(ray_cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "ray_steps.py").write_text(STEPS)
    path = tmp_path / "alone.yaml"
    path.write_text("name: alone\ntasks:\n  - {id: d, call: 'ray_steps:double', params: {n: 2}, output_format: json}\n")
    folder = Path(ray_cluster.env["RAY_TMPDIR"]) / "own"
    folder.mkdir()
    command = [
        sys.executable,
        "-m",
        "orchestration",
        "run",
        str(path),
        "--ray",
        "-q",
        "--results",
        str(tmp_path / "r.json"),
    ]
    env = {**ray_cluster.env, "RAY_TMPDIR": str(folder), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["results"]["d"]["output"] == '{"n": 4}'
    assert processes_under(folder) == []  # the run's own cluster was stopped with it

"""Code steps as Ray tasks: results, process ids, retries, errors, resources, the driver as the store's only writer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestration import ProjectOrchestrator, RetryableStepError, StepContext
from orchestration.store import RunStore
from tests.ray.conftest import Cluster

STEPS = """
import asyncio, os

def square(context):
    return {"pid": os.getpid(), "value": context.params["n"] ** 2}

async def total(context):
    await asyncio.sleep(0)
    values = [context.parsed[f"sq{n}"]["value"] for n in range(4)]
    return {"pid": os.getpid(), "value": sum(values)}

def broken(context):
    raise ValueError("no luck")

def local(context):
    return {"pid": os.getpid(), "value": 0}
"""


def project(tmp_path: Path, executor: str = "ray") -> Path:
    (tmp_path / "steps.py").write_text(STEPS)
    tasks = [f"  - {{id: sq{n}, call: 'steps:square', params: {{n: {n}}}, output_format: json}}" for n in range(4)]
    tasks += [
        "  - {id: total, call: 'steps:total', depends_on: [sq0, sq1, sq2, sq3], output_format: json,"
        " resources: {num_cpus: 2, memory_gb: 0.1}}",
        "  - {id: here, call: 'steps:local', remote: false, output_format: json}",
        "  - {id: broken, call: 'steps:broken', retries: 0}",
    ]
    path = tmp_path / "remote.yaml"
    path.write_text("\n".join(["name: remote", f"defaults: {{executor: {executor}}}", "tasks:", *tasks]) + "\n")
    return path


async def test_steps_run_in_ray_workers_and_the_driver_records_them(ray_cluster: Cluster, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run = ProjectOrchestrator.from_file(project(tmp_path), store=store)
    results = await run.run(run_id="r1")
    values = {task: r.parsed["value"] for task, r in results.items() if r.succeeded}
    assert values == {"sq0": 0, "sq1": 1, "sq2": 4, "sq3": 9, "total": 14, "here": 0}
    pids = {task: r.parsed["pid"] for task, r in results.items() if r.succeeded}
    assert pids["here"] == os.getpid()
    assert all(pid != os.getpid() for task, pid in pids.items() if task != "here")
    broken = results["broken"]
    assert broken.error is not None and (broken.error.type, broken.error.message) == (
        "code_error",
        "ValueError: no luck",
    )
    lease = store.lease("r1")
    assert lease is not None and lease.pid == os.getpid()  # the run's only session (the store's writer): the driver
    assert store.get_run("r1").sessions == 1
    assert store.load_results("r1")["total"].parsed == results["total"].parsed


async def test_a_retryable_step_error_is_retried_in_another_ray_task(ray_cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "attempts"

    def flaky(context: StepContext) -> str:
        with marker.open("a") as attempts:
            attempts.write(f"{os.getpid()}\n")
        if len(marker.read_text().splitlines()) < 3:
            raise RetryableStepError("not yet", retry_after=0.001)
        return "done"

    run = ProjectOrchestrator(executor="ray")
    run.add_step("flaky", flaky, retries=3)
    results = await run.run()
    assert results["flaky"].output == "done" and results["flaky"].attempts == 3
    assert os.getpid() not in {int(pid) for pid in marker.read_text().split()}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{num_cpus: -1}", "field 'resources.num_cpus': Input should be greater than or equal to 0"),
        ("{memory_gb: lots}", "field 'resources.memory_gb': Input should be a valid number"),
        ("{gpus: 1}", "field 'resources.gpus': unknown field; allowed: num_cpus, memory_gb"),
    ],
)
def test_bad_resources_are_refused_with_file_line_task_and_field(tmp_path: Path, resources: str, message: str) -> None:
    from typer.testing import CliRunner

    from orchestration.cli.app import app

    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\ntasks:\n  - id: s\n    call: 'os:getcwd'\n    resources: {resources}\n")
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"bad.yaml:5: task 's', {message}" in result.output


def test_remote_and_resources_are_for_code_steps_only(tmp_path: Path) -> None:
    from orchestration.issues import ProjectValidationError

    run = ProjectOrchestrator()
    run.add_task({"id": "m", "description": "hi", "remote": True, "resources": {"num_cpus": 1}})
    with pytest.raises(ProjectValidationError) as caught:
        run.validate()
    fields = [(issue.task, issue.field) for issue in caught.value.issues]
    assert fields == [("m", "remote"), ("m", "resources")]


async def test_a_step_asking_more_than_the_cluster_has_is_not_run_for_ever(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    def anything(context: StepContext) -> Any:
        return "ran"

    run = ProjectOrchestrator(executor="ray")
    run.add_step("huge", anything, resources={"num_cpus": 64}, timeout_s=1)
    results = await run.run()
    error = results["huge"].error
    assert error is not None and error.type == "timeout"

"""Runs over HTTP: started here (posted or by path), started by ``orchestrate run`` in another process, cancelled
and resumed; every one listed and streamed from the store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestration.store import RunStore
from tests.reliability.processes import orchestrate
from tests.serve.conftest import (
    GATED,
    Served,
    events,
    poll,
    project,
    run_of,
    start,
    task_status,
    wait_for_run,
    wait_for_status,
    write_project,
)

CHAIN: list[dict[str, Any]] = [
    {"id": "a", "description": "alpha"},
    {"id": "b", "description": "beta {{ tasks.a.output }}", "depends_on": ["a"]},
    {"id": "c", "description": "gamma"},
    {"id": "d", "description": "{{ tasks.b.output }} and {{ tasks.c.output }}", "depends_on": ["b", "c"]},
]


def test_a_posted_run_is_listed_detailed_and_streamed(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("posted", CHAIN), inputs={"topic": "x"}, run_id="posted-1")
        assert run_id == "posted-1"
        detail = wait_for_run(client, run_id, "success")
        assert [t["task_id"] for t in detail["tasks"]] == ["a", "b", "c", "d"]
        assert {t["task_id"]: t["depends_on"] for t in detail["tasks"]} == {
            "a": [],
            "b": ["a"],
            "c": [],
            "d": ["b", "c"],
        }
        assert detail["counts"]["success"] == 4 and detail["tasks"] and detail["inputs"] == {"topic": "x"}
        assert all(t["status"] == "success" and t["attempts"] == 1 for t in detail["tasks"])
        listed = client.get("/api/runs").json()["runs"]
        assert [r["run_id"] for r in listed] == [run_id] and listed[0]["project"] == "posted"

        stream = events(client, f"/api/runs/{run_id}/events")
        kinds = [event.event for event in stream]
        assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
        assert kinds.count("task_started") == 4 and kinds.count("task_succeeded") == 4
        ids = [int(event.id) for event in stream]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        last = json.loads(stream[-1].data)
        assert last["run_status"] == "success" and last["id"] == ids[-1] and last["run_id"] == run_id
        done = json.loads(next(e.data for e in stream if e.event == "task_succeeded"))
        assert done["status"] == "success" and done["attempts"] == 1 and done["agent"] == "sim"
        assert set(done) >= {"id", "kind", "run_id", "task_id", "timestamp", "cost_usd", "duration_s", "gate"}

        document = client.get(f"/api/runs/{run_id}/results").json()
        assert document["run_id"] == run_id and document["status"] == "success"
        assert list(document["results"]) == ["a", "b", "c", "d"]
        task = client.get(f"/api/runs/{run_id}/tasks/b").json()
        assert task["status"] == "success" and task["output"] == "beta alpha" and task["depends_on"] == ["a"]
        assert task["request"] == [{"role": "user", "content": "beta alpha"}] and task["provider"] == "offline"
        assert client.get(f"/api/runs/{run_id}/tasks/nope").status_code == 404
        assert client.get("/api/runs/nope").status_code == 404


def test_a_run_of_a_file_under_projects(served: Served) -> None:
    write_project(served.projects, "team/chain.json", project("by-path", CHAIN))
    with served.client() as client:
        assert client.get("/api/projects").json() == {"projects": [{"path": "team/chain.json", "name": "by-path"}]}
        run_id = start(client, path="team/chain.json")
        assert wait_for_run(client, run_id, "success")["project"] == "by-path"
        assert run_of(client, run_id)["counts"]["success"] == 4


def test_an_invalid_project_is_422_with_its_issues(served: Served) -> None:
    broken = project("broken", [{"id": "a", "description": "x", "depends_on": ["ghost"]}, {"id": "b"}])
    with served.client() as client:
        response = client.post("/api/runs", json={"project": broken})
        assert response.status_code == 422
        issues = response.json()["issues"]
        assert any(i["task"] == "b" and i["field"] == "description" for i in issues), issues
        assert set(issues[0]) == {"message", "file", "line", "task", "agent", "field"}
        unknown = project("unknown", [{"id": "a", "description": "x", "depends_on": ["ghost"]}])
        response = client.post("/api/runs", json={"project": unknown})
        assert response.status_code == 422 and "ghost" in json.dumps(response.json()["issues"])
        both = client.post("/api/runs", json={"project": unknown, "path": "x.yaml"})
        assert both.status_code == 422 and both.json()["issues"]
        assert client.post("/api/runs", json={"project": unknown, "run_id": "../x"}).status_code == 422
        assert client.get("/api/runs").json() == {"runs": []}


def test_a_run_of_another_process_is_listed_and_streamed(served: Served, tmp_path: Path) -> None:
    tasks: list[dict[str, Any]] = [
        {"id": "one", "description": "one"},
        {"id": "two", "description": "two {{ tasks.one.output }}", "depends_on": ["one"]},
        {"id": "three", "description": "three {{ tasks.two.output }}", "depends_on": ["two"]},
    ]
    file = write_project(tmp_path, "elsewhere.json", project("elsewhere", tasks, latency_ms=300))
    process = orchestrate("run", str(file), "--store", str(served.store), "--run-id", "from-cli")
    try:
        with served.client() as client:
            poll(lambda: client.get("/api/runs/from-cli").status_code == 200, what="the CLI's run in the store")
            assert run_of(client, "from-cli")["status"] == "running"  # followed while it runs
            stream = events(client, "/api/runs/from-cli/events")
            assert process.wait(timeout=60) == 0
            kinds = [event.event for event in stream]
            assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
            assert kinds.count("task_succeeded") == 3
            assert json.loads(stream[-1].data)["run_status"] == "success"
            detail = run_of(client, "from-cli")
            assert detail["status"] == "success" and detail["counts"]["success"] == 3
            assert {t["task_id"]: t["depends_on"] for t in detail["tasks"]}["three"] == ["two"]
            assert "from-cli" in [r["run_id"] for r in client.get("/api/runs").json()["runs"]]
    finally:
        process.kill()
        process.wait()


def test_cancel_then_resume_over_http(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("gated", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        detail = run_of(client, run_id)
        assert detail["status"] == "running" and detail["open_reviews"] == 1
        gated = next(t for t in detail["tasks"] if t["task_id"] == "gated")
        assert gated["waiting_since"] is not None and task_status(client, run_id, "after") == "pending"
        started, waiting = (datetime.fromisoformat(gated[key]) for key in ("started_at", "waiting_since"))
        assert started < waiting  # it started, then answered, then began to wait
        assert client.get(f"/api/runs/{run_id}/tasks/gated").json()["started_at"] == gated["started_at"]

        cancelled = client.post(f"/api/runs/{run_id}/cancel")
        assert cancelled.status_code == 202 and cancelled.json() == {"run_id": run_id, "status": "cancelled"}
        detail = run_of(client, run_id)
        assert detail["status"] == "cancelled"
        assert {t["task_id"]: t["status"] for t in detail["tasks"]} == {
            "a": "success",
            "b": "success",
            "gated": "cancelled",
            "after": "cancelled",
        }
        assert client.post(f"/api/runs/{run_id}/cancel").status_code == 409  # not running here any more

        resumed = client.post(f"/api/runs/{run_id}/resume")
        assert resumed.status_code == 202 and resumed.json() == {"run_id": run_id}
        wait_for_status(client, run_id, "gated", "waiting")
        assert task_status(client, run_id, "after") == "pending" and task_status(client, run_id, "a") == "success"
        assert client.post(f"/api/runs/{run_id}/resume").status_code == 409  # running here
        decided = client.post(f"/api/runs/{run_id}/tasks/gated/review", json={"decision": "approve"})
        assert decided.status_code == 200, decided.text
        detail = wait_for_run(client, run_id, "success")
        assert detail["counts"]["success"] == 4

        kinds = [event.event for event in events(client, f"/api/runs/{run_id}/events")]
        assert kinds.count("run_started") == 2 and kinds.count("run_finished") == 2 and kinds[-1] == "run_finished"
        assert kinds.count("task_started") == 3 + 2  # a, b, gated; then gated and after
        assert client.post(f"/api/runs/{run_id}/resume").status_code == 409  # it succeeded
        assert client.post("/api/runs/nope/resume").status_code == 404
        assert client.post("/api/runs/nope/cancel").status_code == 409


def test_resume_of_a_run_a_live_process_owns_is_409(served: Served, tmp_path: Path) -> None:
    file = write_project(tmp_path, "waits.json", project("waits", GATED))
    process = orchestrate("run", str(file), "--store", str(served.store), "--run-id", "owned")
    try:
        with served.client() as client:
            poll(lambda: RunStore(served.store).open_gates("owned"), what="the CLI's run to wait for a review")
            refused = client.post("/api/runs/owned/resume")
            assert refused.status_code == 409 and "owned" in refused.json()["detail"], refused.text
            assert client.post("/api/runs/owned/cancel").status_code == 409  # not this server's
            approved = client.post("/api/runs/owned/tasks/gated/review", json={"decision": "approve", "actor": "t"})
            assert approved.status_code == 200
            assert process.wait(timeout=60) == 0  # the other process picked the decision up
            assert wait_for_run(client, "owned", "success")["counts"]["success"] == 4
    finally:
        process.kill()
        process.wait()


def test_orchestrate_and_its_runs_never_import_the_server(tmp_path: Path) -> None:
    file = write_project(tmp_path, "plain.json", project("plain", CHAIN))
    code = (
        "import sys\n"
        "from orchestration.cli.app import app\n"
        f"try:\n    app(['run', {str(file)!r}, '--store', {str(tmp_path / 'runs.db')!r}, '-q'])\n"
        "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        "import orchestration\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn', 'sse_starlette')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_mapped_run_lists_streams_and_details_each_instance(served: Served) -> None:
    tasks: list[dict[str, Any]] = [
        {"id": "pick", "for_each": [{"k": "x"}, {"k": "y"}], "key": "{{ item.k }}", "description": "pick {{ item.k }}"},
        {"id": "sum", "description": "{{ tasks.pick.outputs | join(', ') }}", "depends_on": ["pick"]},
    ]
    with served.client() as client:
        run_id = start(client, project=project("mapped", tasks))
        detail = wait_for_run(client, run_id, "success")
        rows = {t["task_id"]: t for t in detail["tasks"]}
        assert list(rows) == ["pick", "sum", "pick[x]", "pick[y]"]
        assert all(t["status"] == "success" for t in rows.values())
        assert rows["pick[y]"]["depends_on"] == [] and rows["sum"]["depends_on"] == ["pick"]
        assert rows["pick[x]"]["agent"] == "sim" and rows["pick[x]"]["attempts"] == 1

        stream = [json.loads(event.data) for event in events(client, f"/api/runs/{run_id}/events")]
        started = [e["task_id"] for e in stream if e["kind"] == "task_started"]
        assert sorted(started) == ["pick[x]", "pick[y]", "sum"]
        assert [e["task_id"] for e in stream if e["kind"] == "task_expanded"] == ["pick"]

        task = client.get(f"/api/runs/{run_id}/tasks/pick[y]").json()
        assert task["status"] == "success" and task["output"] == "pick y" and task["provider"] == "offline"
        assert list(client.get(f"/api/runs/{run_id}/results").json()["results"]) == [
            "pick",
            "pick[x]",
            "pick[y]",
            "sum",
        ]

"""The run store's events and task graph, and the event streams over HTTP: resumed with ``Last-Event-ID`` (or
``?after=``) without a gap or a repeat, every run's events on ``/api/events``, heartbeats while idle."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx

from orchestration import ProjectOrchestrator, ProjectSpec
from orchestration.store import RunStore
from tests.serve.conftest import (
    GATED,
    Served,
    events,
    poll,
    project,
    serving,
    start,
    wait_for_run,
    wait_for_status,
)

CHAIN: list[dict[str, Any]] = [
    {"id": "a", "description": "alpha"},
    {"id": "b", "description": "beta {{ tasks.a.output }}", "depends_on": ["a"]},
    {"id": "c", "description": "gamma {{ tasks.b.output }}", "depends_on": ["b"]},
]


def run_in(store: RunStore, run_id: str, tasks: list[dict[str, Any]] = CHAIN) -> None:
    spec = ProjectSpec.model_validate(project("stored", tasks))
    anyio.run(lambda: ProjectOrchestrator(spec, store=store).run(run_id=run_id))


def test_a_run_keeps_its_events_and_graph(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_in(store, "r1")
    run_in(store, "r2")
    record = store.get_run("r1")
    assert record.depends_on == {"a": [], "b": ["a"], "c": ["b"]}
    kept = store.events("r1")
    assert kept[0].kind == "run_started" and kept[-1].kind == "run_finished"
    assert kept[-1].data == {"run_status": "success"}
    assert [e.task_id for e in kept if e.kind == "task_succeeded"] == ["a", "b", "c"]
    succeeded = next(e for e in kept if e.kind == "task_succeeded")
    assert succeeded.data["status"] == "success" and succeeded.data["attempts"] == 1 and "output" not in succeeded.data
    everything = store.events()
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert {e.run_id for e in everything} == {"r1", "r2"}
    middle = kept[3].seq
    assert [e.seq for e in store.events("r1", after=middle)] == [e.seq for e in kept[4:]]
    assert [e.seq for e in store.events("r1", after=middle, limit=2)] == [e.seq for e in kept[4:6]]

    store.delete_runs(["r1"])
    assert store.events("r1") == [] and {e.run_id for e in store.events()} == {"r2"}
    assert store.prune(keep=0, older_than=timedelta(0)) == ["r2"]
    assert store.events() == []
    run_in(store, "r3")
    assert store.events("r3")[0].seq > everything[-1].seq  # numbers are never used again


def test_a_store_from_before_gains_the_table_and_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:  # the runs table as stores made before had it
        connection.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, project TEXT NOT NULL, project_hash TEXT NOT NULL, file TEXT,"
            " inputs TEXT NOT NULL, task_ids TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL,"
            " finished_at TEXT, sessions INTEGER NOT NULL DEFAULT 1)"
        )
        connection.execute(
            "INSERT INTO runs VALUES ('old', 'p', 'h', NULL, '{}', '[\"a\"]', 'success', '2024-01-01T00:00:00+00:00',"
            " NULL, 1)"
        )
    store = RunStore(path)
    assert store.get_run("old").depends_on == {} and store.events("old") == []
    run_in(store, "new")
    assert store.get_run("new").depends_on["b"] == ["a"] and store.events("new")


def test_resuming_a_stream_after_an_id_has_no_gap_and_no_repeat(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("resumed", CHAIN))
        wait_for_run(client, run_id, "success")
        whole = events(client, f"/api/runs/{run_id}/events")
        ids = [int(event.id) for event in whole]
        assert len(ids) == 8 and ids == sorted(set(ids))
        for cut in range(len(ids)):
            rest = events(client, f"/api/runs/{run_id}/events", **{"Last-Event-ID": str(ids[cut])})
            assert [int(event.id) for event in rest] == ids[cut + 1 :]
            assert [event.data for event in rest] == [event.data for event in whole[cut + 1 :]]
        after = events(client, f"/api/runs/{run_id}/events?after={ids[2]}")
        assert [int(event.id) for event in after] == ids[3:]
        assert client.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": "x"}).status_code == 422
        assert client.get("/api/runs/nope/events").status_code == 404


def test_a_stream_resumed_while_the_run_goes_on(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("live", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        seen: list[int] = []
        with client.stream("GET", f"/api/runs/{run_id}/events") as first:  # dropped mid-run
            for line in first.iter_lines():
                if line.startswith("id: "):
                    seen.append(int(line[4:]))
                if line == "event: review_requested":
                    break
        assert client.post(f"/api/runs/{run_id}/tasks/gated/review", json={"decision": "approve"}).status_code == 200
        rest = events(client, f"/api/runs/{run_id}/events", **{"Last-Event-ID": str(seen[-1])})
        ids = seen + [int(event.id) for event in rest]
        assert ids == sorted(set(ids)) and rest[-1].event == "run_finished"
        assert ids == [int(event.id) for event in events(client, f"/api/runs/{run_id}/events")]


def test_every_runs_events_on_one_stream(served: Served) -> None:
    with served.client() as client:
        first = start(client, project=project("one", CHAIN))
        wait_for_run(client, first, "success")
        second = start(client, project=project("two", CHAIN))
        wait_for_run(client, second, "success")
        finished: dict[str, int] = {}
        ids: list[int] = []
        with client.stream("GET", "/api/events") as stream:
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "run_finished":
                    finished[json.loads(line[6:])["run_id"]] = ids[-1]
                    if len(finished) == 2:
                        break
        assert set(finished) == {first, second} and ids == sorted(set(ids))
        with client.stream("GET", "/api/events", headers={"Last-Event-ID": str(finished[first])}) as stream:
            line = next(line for line in stream.iter_lines() if line.startswith("id: "))
            assert int(line[4:]) == finished[first] + 1


def test_idle_streams_get_heartbeats(tmp_path: Path) -> None:
    with serving(tmp_path, ping_s=0.2) as served, served.client() as client:
        run_id = start(client, project=project("idle", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
            lines = stream.iter_lines()
            assert poll(lambda: next(lines) == ": ping", what="a heartbeat", timeout_s=10)
        response = client.post(f"/api/runs/{run_id}/cancel")
        assert response.status_code == 202


def test_the_stream_of_a_run_that_stopped_ends(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("stops", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        assert client.post(f"/api/runs/{run_id}/cancel").json()["status"] == "cancelled"
        stream = events(client, f"/api/runs/{run_id}/events")
        assert stream[-1].event == "run_finished" and json.loads(stream[-1].data)["run_status"] == "cancelled"
        with httpx.Client(base_url=served.url, timeout=10) as anonymous:
            assert anonymous.get(f"/api/runs/{run_id}/events").status_code == 401


def test_budget_and_cache_fields_reach_the_streams() -> None:
    from orchestration.serve.views import event_json
    from orchestration.store.events import StoredEvent

    budget = {"account": "run", "spent_usd": 0.4, "spent_tokens": 9, "cap_usd": 0.5, "cap_tokens": None}
    warned = StoredEvent(1, "r", "budget_warning", None, 0.0, {"budget": budget | {"exhausted": False}})
    hit = StoredEvent(2, "r", "task_succeeded", "t", 0.0, {"status": "success", "cache_hit": True, "saved_usd": 0.2})
    assert event_json(warned)["budget"] == budget | {"exhausted": False}
    assert (event_json(hit)["cache_hit"], event_json(hit)["saved_usd"]) == (True, 0.2)
    assert event_json(warned)["cache_hit"] is None and event_json(hit)["budget"] is None

"""``GET /api/runs/{run_id}``: the documented RunDetail, built once per change of the run, with an ETag that gets
304 while nothing of the run changed; ``GET /api/runs`` builds the summaries of the runs that changed only."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import anyio

from orchestration import ProjectOrchestrator
from orchestration.serve.details import RunDetails
from orchestration.serve.views import FollowedRuns, run_view, runs_view
from orchestration.store import RunStore
from tests.serve.conftest import GATED, Served, project, start, wait_for_run, wait_for_status, write_project
from tests.serve.test_events import CHAIN, run_in


def test_the_view_is_built_once_per_change_of_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_in(store, "r1")
    details = RunDetails(store)
    version, etag = details.version("r1")
    body = details.body("r1", version)
    assert json.loads(body) == run_view(store, "r1")  # the same shape and values as built directly
    assert details.body("r1", details.version("r1")[0]) == body and details.version("r1")[1] == etag
    assert details.builds == 1
    run_in(store, "r2")  # another run changes nothing of r1
    assert details.version("r1")[1] == etag
    store.delete_runs(["r1"])
    run_in(store, "r1")  # the same id, run again: new events, a new version
    version, changed = details.version("r1")
    assert changed != etag and json.loads(details.body("r1", version)) == run_view(store, "r1")
    assert details.builds == 2


def test_the_project_file_is_part_of_the_version(tmp_path: Path) -> None:
    file = write_project(tmp_path, "p.json", project("filed", CHAIN))
    store = RunStore(tmp_path / "runs.db")
    anyio.run(lambda: ProjectOrchestrator.from_file(file, store=store).run(run_id="r"))
    details = RunDetails(store)
    _, etag = details.version("r")
    os.utime(file, ns=(1, 1))
    assert details.version("r")[1] != etag


def test_if_none_match_gets_304_until_the_run_changes(served: Served) -> None:
    with served.client() as client:
        run_id = start(client, project=project("tagged", GATED))
        wait_for_status(client, run_id, "gated", "waiting")
        first = client.get(f"/api/runs/{run_id}")
        etag = first.headers["ETag"]
        assert etag.startswith('W/"') and first.headers["Cache-Control"] == "no-cache"
        assert first.headers["Content-Type"] == "application/json"
        again = client.get(f"/api/runs/{run_id}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
        assert client.get(f"/api/runs/{run_id}", headers={"If-None-Match": 'W/"other"'}).status_code == 200
        assert client.post(f"/api/runs/{run_id}/tasks/gated/review", json={"decision": "approve"}).status_code == 200
        done = wait_for_run(client, run_id, "success")
        final = client.get(f"/api/runs/{run_id}", headers={"If-None-Match": etag})
        assert final.status_code == 200 and final.headers["ETag"] != etag and final.json() == done
        assert final.json() == run_view(RunStore(served.store), run_id)
        assert client.get(f"/api/runs/{run_id}", headers={"If-None-Match": final.headers["ETag"]}).status_code == 304
        assert client.get("/api/runs/nope").status_code == 404


def test_the_runs_list_rebuilds_only_the_runs_that_changed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_in(store, "r1")
    run_in(store, "r2")
    followed = FollowedRuns()

    def listed() -> list[dict[str, Any]]:
        shown: list[dict[str, Any]] = runs_view(store, project=None, status=None, limit=50, followed=followed)["runs"]
        assert shown == runs_view(store, project=None, status=None, limit=50)["runs"]  # as built from scratch
        return shown

    first = listed()
    assert [run["run_id"] for run in first] == ["r2", "r1"]
    assert listed() == first
    store.delete_runs(["r1"])
    assert [run["run_id"] for run in listed()] == ["r2"]  # a deleted run is not shown from what was kept
    run_in(store, "r1", CHAIN[:2])  # the same id again, another project: a new version
    again = listed()
    assert [run["run_id"] for run in again] == ["r1", "r2"] and again[0]["tasks"] == 2


def test_large_answers_are_compressed_and_event_streams_are_not(served: Served) -> None:
    tasks = [{"id": f"t{i}", "description": f"task {i}"} for i in range(40)]
    with served.client() as client:
        run_id = start(client, project=project("compressed", tasks))
        done = wait_for_run(client, run_id, "success")
        raw = client.get(f"/api/runs/{run_id}", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["Content-Encoding"] == "gzip" and raw.json() == done
        assert raw.headers["Vary"] == "Accept-Encoding" and "ETag" in raw.headers
        assert int(raw.headers["Content-Length"]) < len(json.dumps(done)) / 3
        plain = client.get(f"/api/runs/{run_id}", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers and plain.json() == done
        with client.stream("GET", f"/api/runs/{run_id}/events", headers={"Accept-Encoding": "gzip"}) as stream:
            assert "Content-Encoding" not in stream.headers
            assert stream.headers["Content-Type"].startswith("text/event-stream")


def test_a_finished_runs_detail_is_compressed_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    run_in(store, "r1")
    details = RunDetails(store)
    version, _ = details.version("r1")
    compressed = details.gzipped("r1", version)
    assert gzip.decompress(compressed) == details.body("r1", version)
    assert details.gzipped("r1", version) is compressed and details.builds == 1

"""The serve benchmark's own pieces: its SSE id reader, its quantiles, its project, its tables."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("httpx")

from benchmarks.report import serve_tables
from benchmarks.serve_bench import percentile, project, read_ids


def test_ids_are_read_from_complete_events_only() -> None:
    stream = b": ping\r\n\r\nid: 7\r\nevent: task_started\r\ndata: {}\r\n\r\nid: 8\r\nevent: task_succeeded\r\nda"
    ids, rest = read_ids(stream)
    assert ids == [7]
    assert rest == b"id: 8\r\nevent: task_succeeded\r\nda"
    ids, rest = read_ids(rest + b'ta: {"id": 9}\r\n\r\n')
    assert ids == [8]  # an "id" inside the data is not an event's id
    assert rest == b""


@pytest.mark.parametrize("cut", range(1, 40))
def test_an_event_split_anywhere_is_read_once(cut: int) -> None:
    stream = b"id: 41\nevent: a\ndata: {}\n\nid: 42\nevent: b\ndata: {}\n\n"
    first, rest = read_ids(stream[:cut])
    second, rest = read_ids(rest + stream[cut:])
    assert first + second == [41, 42]
    assert rest == b""


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0


def test_every_task_waits_for_the_gate() -> None:
    document = project(200)
    tasks = document["tasks"]
    assert len(tasks) == 200
    assert tasks[0] == {"id": "gate", "description": "gate", "review": "require_human"}
    ids = {task["id"]: index for index, task in enumerate(tasks)}
    ancestors_reach_gate = {"gate"}
    for task in tasks[1:]:
        assert task["depends_on"], task
        assert all(ids[parent] < ids[task["id"]] for parent in task["depends_on"])  # acyclic, in order
        assert any(parent in ancestors_reach_gate for parent in task["depends_on"])
        ancestors_reach_gate.add(task["id"])


def test_the_tables_show_each_number_of_watchers() -> None:
    watched = {
        "events": 2002.0,
        "per_task_us": 300.0,
        "delivered_per_s": 5000.0,
        "needed_per_s": 9000.0,
        "lag_median_ms": 250.0,
        "lag_p99_ms": 900.0,
        "lag_median_first_tenth_ms": 200.0,
        "lag_median_last_tenth_ms": 800.0,
        "last_delivery_after_run_s": 1.5,
        "complete_watchers": 2.0,
        "server_cpu_us_per_delivery": 150.0,
        "client_cpu_s": 0.5,
        "watch_wall_s": 4.0,
        "server_busy_share_while_waiting": 0.25,
    }
    latency: dict[str, Any] = {
        "route": "/api/health",
        "path": "/api/health",
        "response_bytes": 33,
        "alone_new_connection_median_ms": 2.0,
        "alone_median_ms": 2.0,
        "median_ms": 3.0,
        "p99_ms": 9.0,
        "answered": 10,
        "requests": 10,
        "errors": {},
        "client_started_late_p99_ms": 1.0,
    }
    unanswered = latency | {"route": "/api/runs/{id}", "answered": 0, "median_ms": None, "errors": {"timeout": 10}}
    document = {
        "sizes": {"tasks": 1000, "rate": 200.0, "seconds": 5.0},
        "by_watchers": {"0": {"events": 2002.0, "per_task_us": 250.0}, "1": watched, "2": watched},
        "latency": {"health": latency, "run": unanswered},
    }
    runs, requests = serve_tables(document)
    assert [row[0] for row in runs[2]] == ["0", "1", "2"]
    assert runs[2][0][2] == "-"
    assert runs[2][2][2:4] == ["25%", "5,000 (9,000)"]
    assert runs[2][2][7] == "2 of 2"
    assert requests[2] == [
        ["GET /api/health", "33 B", "2.0", "2.0", "3.0 / 9.0", "10 of 10", "0", "1"],
        ["GET /api/runs/{id}", "33 B", "2.0", "2.0", "-", "0 of 10", "10 timeout", "1"],
    ]

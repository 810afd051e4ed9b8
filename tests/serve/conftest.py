"""A real ``orchestrate serve`` for each test: uvicorn in a thread on a free loopback port, waited for by polling
``/api/health``, stopped when the test ends; helpers that poll the API with deadlines (never fixed sleeps)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from httpx_sse import ServerSentEvent, connect_sse

from orchestration.serve import create_app

TOKEN = "test-token-0123456789"
SECRET = "sk-test-SECRET0123456789abcdefXYZ"
"""A fake API key: no answer, event or log of the server may show it."""

T = TypeVar("T")


@dataclass
class Served:
    """A running server and what it serves."""

    url: str
    token: str
    store: Path
    projects: Path
    app: FastAPI

    def client(self, token: str | None = TOKEN, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **options)


@contextmanager
def serving(tmp_path: Path, **options: Any) -> Iterator[Served]:
    """``create_app`` served by uvicorn in a thread on 127.0.0.1 (a free port), until the block ends."""
    store, projects = tmp_path / "store" / "runs.db", tmp_path / "projects"
    projects.mkdir(parents=True, exist_ok=True)
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(64)
    port = listening.getsockname()[1]
    options.setdefault("poll_s", 0.05)
    app = create_app(store, projects, TOKEN, **options)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, name="serve", daemon=True)
    thread.start()
    served = Served(f"http://127.0.0.1:{port}", TOKEN, store, projects, app)
    try:
        with served.client(None) as client:
            poll(lambda: client.get("/api/health").status_code == 200 or None, what="the server to answer")
        yield served
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        listening.close()
    assert not thread.is_alive(), "the server did not stop"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as running:
        yield running


def poll(check: Callable[[], T | None], *, what: str, timeout_s: float = 30.0) -> T:
    """``check()`` again every 20 ms until it gives something true (a connection refused counts as not yet); fail
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except httpx.TransportError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def project(name: str, tasks: list[dict[str, Any]], **agent: Any) -> dict[str, Any]:
    """A task file as JSON whose agent ``sim`` is offline (no network), with a fake key."""
    return {
        "name": name,
        "agents": {"sim": {"type": "offline", "api_key": SECRET, **agent}},
        "defaults": {"agent": "sim"},
        "tasks": tasks,
    }


GATED: list[dict[str, Any]] = [
    {"id": "a", "description": "first"},
    {"id": "b", "description": "then {{ tasks.a.output }}", "depends_on": ["a"]},
    {"id": "gated", "description": "check me", "review": "require_human"},
    {"id": "after", "description": "after {{ tasks.gated.output }}", "depends_on": ["gated"]},
]
"""A project whose task ``gated`` waits for a review decision (``after`` waits on it)."""


def write_project(folder: Path, name: str, document: dict[str, Any]) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    return path


def start(client: httpx.Client, **body: Any) -> str:
    response = client.post("/api/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def run_of(client: httpx.Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def task_status(client: httpx.Client, run_id: str, task_id: str) -> str:
    return str(next(t["status"] for t in run_of(client, run_id)["tasks"] if t["task_id"] == task_id))


def wait_for_status(client: httpx.Client, run_id: str, task_id: str, status: str) -> None:
    poll(lambda: task_status(client, run_id, task_id) == status, what=f"task {task_id} to be {status}")


def wait_for_run(client: httpx.Client, run_id: str, *statuses: str) -> dict[str, Any]:
    return poll(
        lambda: detail if (detail := run_of(client, run_id))["status"] in statuses else None,
        what=f"run {run_id} to be {' or '.join(statuses)}",
    )


def events(client: httpx.Client, path: str, **headers: str) -> list[ServerSentEvent]:
    """Every event of a stream that ends (a run's), in order."""
    with connect_sse(client, "GET", path, headers=headers) as source:
        assert source.response.status_code == 200, source.response.read()
        return list(source.iter_sse())

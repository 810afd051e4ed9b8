"""What the server refuses: requests without the token (every ``/api`` route but health), paths that leave
``--projects``, bodies over 1 MiB, binding beyond loopback without a token; and what it never shows: API keys."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import BaseRoute, Route

from tests.reliability.processes import REPO
from tests.serve.conftest import (
    GATED,
    SECRET,
    Served,
    poll,
    project,
    serving,
    start,
    wait_for_run,
    wait_for_status,
    write_project,
)


def routes(candidates: Iterable[BaseRoute]) -> Iterator[Route]:
    """The app's routes, those of included routers too (FastAPI keeps an included router whole)."""
    for route in candidates:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from routes(included.routes)
        elif isinstance(route, Route):
            yield route


def api_requests(served: Served) -> list[tuple[str, str]]:
    """Every method and path of the app's ``/api`` routes (path parameters filled in), read from the app itself so
    that a route added later is checked too."""
    found: list[tuple[str, str]] = []
    for route in routes(served.app.routes):
        if route.path.startswith("/api"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            found.extend((method, path) for method in sorted(route.methods or ()) if method != "HEAD")
    return found


def test_every_api_route_but_health_needs_the_token(served: Served) -> None:
    requests = api_requests(served)
    paths = {path for _, path in requests}
    expected = {"/api/health", "/api/runs", "/api/events", "/api/runs/x/events", "/api/openapi.json", "/api/docs"}
    assert expected <= paths
    assert len(requests) >= 14
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {served.token}"}):
        with httpx.Client(base_url=served.url, headers=headers, timeout=10) as client:
            for method, path in requests:
                response = client.request(method, path, json={} if method == "POST" else None)
                if path == "/api/health":
                    assert response.status_code == 200 and response.json()["status"] == "ok"
                else:
                    assert response.status_code == 401, (method, path, headers)
                    assert response.headers["www-authenticate"] == "Bearer"
            assert client.get("/api/no-such-route").status_code == 401  # nothing to learn without it
    with served.client() as client:
        schema = client.get("/api/openapi.json").json()
        assert "/api/runs/{run_id}/tasks/{task_id}/review" in schema["paths"]
        assert client.get("/api/docs").json() == schema
        assert client.get("/api/no-such-route").status_code == 404
    with httpx.Client(base_url=served.url) as anonymous:  # the page carries no data: it loads without a token
        page = anonymous.get("/")
        assert page.status_code == 200 and "html" in page.headers["content-type"]


def test_paths_must_stay_inside_projects(served: Served, tmp_path: Path) -> None:
    outside = write_project(tmp_path / "outside", "secret.json", project("outside", [{"id": "a", "description": "x"}]))
    (served.projects / "link.json").symlink_to(outside)
    (served.projects / "linked-folder").symlink_to(outside.parent, target_is_directory=True)
    write_project(served.projects, "inside.json", project("inside", [{"id": "a", "description": "x"}]))
    with served.client() as client:
        for path in (
            "../outside/secret.json",
            str(outside),
            "link.json",
            "linked-folder/secret.json",
            "a/../../x.json",
        ):
            response = client.post("/api/runs", json={"path": path})
            assert response.status_code == 422, path
            (issue,) = response.json()["issues"]
            assert issue["field"] == "path" and (path == str(outside) or str(outside) not in issue["message"]), issue
        for path in ("missing.json", "inside.txt", ""):
            assert client.post("/api/runs", json={"path": path}).status_code == 422
        assert client.get("/api/projects").json()["projects"] == [{"path": "inside.json", "name": "inside"}]
        assert client.get("/api/runs").json() == {"runs": []}
        run_id = start(client, path="inside.json")
        assert wait_for_run(client, run_id, "success")["project"] == "inside"


def test_bodies_over_a_mebibyte_are_413(served: Served) -> None:
    big = {"project": {"name": "big", "tasks": [{"id": "a", "description": "x" * (1024 * 1024)}]}}
    with served.client() as client:
        assert client.post("/api/runs", json=big).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"project": {"name": "big", "tasks": [{"id": "a", "description": "'
            for _ in range(80):
                yield b"y" * 16384
            yield b'"}]}}'

        response = client.post("/api/runs", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert client.get("/api/runs").json() == {"runs": []}


def test_no_answer_or_event_shows_an_api_key(served: Served) -> None:
    texts: list[str] = []
    with served.client() as client:

        def get(path: str, **params: str) -> httpx.Response:
            response = client.get(path, params=params)
            texts.append(response.text)
            return response

        invalid = client.post("/api/runs", json={"project": project("bad", [{"id": "a"}])})
        texts.append(invalid.text)
        assert invalid.status_code == 422
        mixed = client.post("/api/runs", json={"project": project("bad", GATED), "path": f"{SECRET}.json"})
        texts.append(mixed.text)
        assert mixed.status_code == 422
        tasks = [*GATED, {"id": "echo", "description": "key {{ inputs.key }}"}]
        run_id = start(client, project=project("keys", tasks), inputs={"key": SECRET})
        wait_for_status(client, run_id, "gated", "waiting")
        get("/api/reviews")
        approved = client.post(f"/api/runs/{run_id}/tasks/gated/review", json={"decision": "approve"})
        texts.append(approved.text)
        wait_for_run(client, run_id, "success")
        get("/api/runs")
        get(f"/api/runs/{run_id}")
        get(f"/api/runs/{run_id}/results")
        for task in ("a", "b", "gated", "after", "echo"):
            get(f"/api/runs/{run_id}/tasks/{task}")
        assert "[REDACTED]" in get(f"/api/runs/{run_id}/tasks/echo").json()["output"]
        with client.stream("GET", f"/api/runs/{run_id}/events") as stream:
            texts.append(stream.read().decode())
        with client.stream("GET", "/api/events") as stream:  # never ends: read until this run's end
            seen = ""
            for line in stream.iter_lines():
                seen += line + "\n"
                if "run_finished" in line:
                    break
            texts.append(seen)
        get("/api/projects")
        texts.append(client.get("/api/openapi.json").text)
    assert all(SECRET not in text and "SECRET0123" not in text for text in texts)
    assert any("run_finished" in text for text in texts)
    assert not any(SECRET in path.read_text(errors="replace") for path in served.store.parent.glob("runs.db*"))


def test_the_page_address_and_a_made_token_are_printed_once(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATE_TOKEN"}
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration", "serve", "--port", "0", "--store", str(tmp_path / "runs.db")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"orchestrate serve: (http://127\.0\.0\.1:\d+/)#token=([A-Za-z0-9_-]{40,})\n", line)
        assert match, line
        url, token = match.groups()
        with httpx.Client(base_url=url, timeout=10) as client:
            poll(lambda: client.get("/api/health").status_code == 200, what="the server to answer")
            assert client.get("/api/runs").status_code == 401
            answer = client.get("/api/runs", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200 and answer.json() == {"runs": []}
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    assert token not in rest, rest  # printed once: never logged
    assert process.returncode in (0, 130)  # uvicorn stops on SIGINT, then raises it again


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--host", "0.0.0.0"], "give a token"),
        (["--host", "192.168.1.20", "--port", "0"], "give a token"),
        (["--projects", "no/such/folder"], "not a folder"),
    ],
)
def test_refused_at_start(arguments: list[str], message: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATE_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestration", "serve", "--store", str(tmp_path / "runs.db"), *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "runs.db").exists()


def test_without_the_serve_extra_it_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None  # as if the serve extra were not installed\n"
        "from orchestration.cli.app import app\n"
        f"app(['serve', '--port', '0', '--store', {str(tmp_path / 'runs.db')!r}])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "pip install 'orchestrate-llm[serve]'" in done.stderr, done.stderr


def test_a_token_from_the_environment_is_not_printed(tmp_path: Path) -> None:
    token = "env-token-0123456789"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestration", "serve", "--port", "0", "--store", str(tmp_path / "runs.db")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "ORCHESTRATE_TOKEN": token},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert token not in line and "$ORCHESTRATE_TOKEN" in line, line
        url = line.split()[2]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            assert poll(lambda: client.get("/api/runs").status_code == 200, what="the server to answer")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_cors_is_off_unless_origins_are_given(tmp_path: Path) -> None:
    preflight = {"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "GET"}
    with serving(tmp_path / "off") as served, httpx.Client(base_url=served.url) as client:
        response = client.options("/api/runs", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    with serving(tmp_path / "on", cors_origins=["http://elsewhere.test"]) as served, served.client() as client:
        allowed = client.options("/api/runs", headers={**preflight, "Access-Control-Request-Headers": "authorization"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://elsewhere.test"
        assert client.get("/api/runs", headers={"Origin": "http://elsewhere.test"}).status_code == 200

"""A recognisable API key, driven through every failure path, never shows up in any output.

Scanned: structured logs (a real ``orchestrate`` process at debug level), run events,
results and their JSON, exception messages, the results file, every export format and
the bytes of the SQLite store (database, WAL and shared-memory files).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_registry import AgentRegistry
from orchestration import ProjectOrchestrator, ProjectSpec, RunEvent
from orchestration.store import RunStore, export_run
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer, Fault, RecordedRequest, Reply, Response
from tests.reliability.fault_plan import last_user_text

__all__ = ["fake_server"]

REPO = Path(__file__).resolve().parents[2]
KEY = "ZQ9X-plum-7741-recognisable-secret"
"""Matches none of the generic credential patterns: only its registration can redact it."""


def leaky(status: int) -> Fault:
    body = {"error": {"message": f"request with key {KEY} refused", "type": "error", "code": "leak"}}
    return Fault(status=status, body=json.dumps(body), headers={"x-echo-key": KEY})


FAULTS: dict[str, Response] = {
    "auth": leaky(401),
    "bad": leaky(400),
    "boom": leaky(500),
    "limited": leaky(429),
    "hang": Fault(status=500, body=KEY, delay_s=2.0),
    "reset": Fault.reset(),
    "garbled": Fault.malformed_json(),
}


def handler(request: RecordedRequest) -> Response:
    task = last_user_text(request).split()[0]
    return FAULTS.get(task) or Reply(text=f"fine {task}")


def agents(server: FakeProviderServer, provider: str) -> dict[str, Any]:
    url = {"gpt": server.openai_base_url, "claude": server.anthropic_base_url, "gemini": server.gemini_base_url}
    common = {"type": provider, "model": "m", "api_key": KEY, "base_url": url[provider], "timeout_s": 1.0}
    retry = {"retries": 1, "initial_backoff_s": 0.01, "max_backoff_s": 0.01}
    return {
        "main": {**common, "retry": retry},
        "first": {**common, "retry": retry, "fallbacks": ["second"], "base_url": url[provider] + "/"},
        "second": {**common, "retry": retry},
    }


def tasks() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [{"id": name, "description": f"{name} please"} for name in FAULTS]
    items += [
        {"id": "ok", "description": "ok please"},
        {"id": "after", "description": "after {{ tasks.auth.output }}", "depends_on": ["auth"]},
        {"id": "chain", "description": "auth via fallback", "agent": "first"},
        {"id": "template", "description": "{{ inputs.nested.missing }}"},
    ]
    return items


def project(server: FakeProviderServer, provider: str) -> dict[str, Any]:
    return {
        "name": "leaky",
        "inputs": {"nested": {}},
        "agents": agents(server, provider),
        "defaults": {"agent": "main", "retries": 1},
        "tasks": tasks(),
    }


def assert_clean(text: str, where: str) -> None:
    assert KEY not in text, f"the API key leaked into {where}"


def store_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


@pytest.mark.parametrize("provider", ["gpt", "claude", "gemini"])
async def test_key_never_leaks_through_the_python_api(
    fake_server: FakeProviderServer, tmp_path: Path, provider: str
) -> None:
    fake_server.handler = handler
    store = RunStore(tmp_path / "runs.db")
    events: list[RunEvent] = []
    orchestrator = ProjectOrchestrator(
        ProjectSpec.model_validate(project(fake_server, provider)), registry=AgentRegistry(), store=store
    )
    orchestrator.on_event(events.append)
    results = await orchestrator.run(run_id="leak")

    failed = {t for t, r in results.items() if not r.succeeded}
    assert failed >= {*FAULTS, "after", "chain", "template"} - {"garbled"}  # a garbled stream is the provider's call
    assert results["ok"].output == "fine ok"
    assert any(KEY in "".join(r.headers.values()) for r in fake_server.requests)  # the key was really used
    assert [a.agent for a in results["chain"].attempt_log] == ["first", "second"]  # 401: no retry, fallback

    for result in results.values():
        assert_clean(result.model_dump_json(), f"the result of {result.task_id}")
        assert_clean(repr(result), f"the repr of {result.task_id}")
    for event in events:
        assert_clean(repr(event), f"event {event.kind}")
    stored = store.load_run("leak")
    for fmt in ("json", "jsonl", "md"):
        assert_clean(export_run(stored, fmt), f"the {fmt} export")
    store.close()
    assert KEY.encode() not in store_bytes(store.path)
    assert "refused" in (results["auth"].error.message if results["auth"].error else "")  # the message survived


def test_key_never_leaks_through_the_cli(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    fake_server.handler = handler
    project_file = tmp_path / "leaky.json"
    project_file.write_text(json.dumps(project(fake_server, "gpt")))
    store, results_file = tmp_path / "runs.db", tmp_path / "results.json"

    def orchestrate(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "orchestration", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)

    run = orchestrate(
        "run", str(project_file), "--run-id", "cli-leak", "--store", str(store), "--results", str(results_file),
        "--log-level", "debug", "--log-format", "json",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    assert "authentication" in run.stderr and "cli-leak" in run.stderr  # failures were logged
    assert_clean(run.stdout + run.stderr, "the logs and console output")
    assert_clean(results_file.read_text(), "the results file")
    for fmt in ("json", "jsonl", "md"):
        exported = orchestrate("results", "cli-leak", "--store", str(store), "--format", fmt)
        assert exported.returncode == 0 and "auth" in exported.stdout
        assert_clean(exported.stdout + exported.stderr, f"`orchestrate results --format {fmt}`")
    listed = orchestrate("runs", "--store", str(store))
    assert_clean(listed.stdout, "`orchestrate runs`")
    assert KEY.encode() not in store_bytes(store)

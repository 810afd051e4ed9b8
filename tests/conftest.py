"""Shared fixtures: a probe model that records what the scheduler does and lets tests gate calls; subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import pytest

from llm_abstractions import BaseLlm, GenerationOptions, LlmError, LlmResponse, Message, Usage, register_llm
from llm_abstractions.factory import unregister_llm
from orchestration import AgentTask, ProjectOrchestrator, ProjectSpec


@dataclass
class Probe:
    """Shared state of every ``probe`` model call in a test.

    The prompt of a probe task is its task id (optionally followed by ``|`` and
    upstream text). ``log`` records ``("start", id)`` / ``("end", id)`` in the order
    they happened; ``gates[id]`` holds a call until the test sets it; ``started[id]``
    is set when the call begins; ``errors[id]`` lists exceptions to raise, one per call.
    """

    log: list[tuple[str, str]] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    gates: dict[str, anyio.Event] = field(default_factory=dict)
    started: dict[str, anyio.Event] = field(default_factory=dict)
    errors: dict[str, list[BaseException]] = field(default_factory=dict)
    options_seen: dict[str, GenerationOptions] = field(default_factory=dict)

    def gate(self, task_id: str) -> anyio.Event:
        self.gates[task_id] = anyio.Event()
        self.started[task_id] = anyio.Event()
        return self.gates[task_id]

    def order(self, kind: str) -> list[str]:
        return [task for k, task in self.log if k == kind]


class ProbeLlm(BaseLlm):
    provider = "probe"
    probe: ClassVar[Probe]

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        prompt = messages[-1].content
        task_id = prompt.split("|", 1)[0].strip()
        probe = self.probe
        probe.calls[task_id] = probe.calls.get(task_id, 0) + 1
        probe.options_seen[task_id] = options
        probe.log.append(("start", task_id))
        probe.running += 1
        probe.max_running = max(probe.max_running, probe.running)
        try:
            if task_id in probe.started:
                probe.started[task_id].set()
            if task_id in probe.gates:
                await probe.gates[task_id].wait()
            else:
                await anyio.lowlevel.checkpoint()
            pending = probe.errors.get(task_id)
            if pending:
                raise pending.pop(0)
        finally:
            probe.running -= 1
            probe.log.append(("end", task_id))
        return LlmResponse(text=f"out:{prompt}", provider="probe", model="probe-1", usage=Usage(input_tokens=1))


@pytest.fixture
def probe() -> Iterator[Probe]:
    state = Probe()
    cls = type("BoundProbeLlm", (ProbeLlm,), {"probe": state})
    register_llm("probe", cls)
    yield state
    unregister_llm("probe")


def probe_project(tasks: list[dict[str, Any]], **defaults: Any) -> ProjectOrchestrator:
    """An orchestrator whose tasks (``{"id", "depends_on"?, ...}``) run on the probe agent."""
    spec = ProjectSpec(
        name="probe-project",
        agents={"p": {"type": "probe"}},
        defaults={"agent": "p", **defaults},  # type: ignore[arg-type]
        tasks=[AgentTask.model_validate({"description": t["id"], **t}) for t in tasks],
    )
    return ProjectOrchestrator(spec)


def errors(*items: LlmError) -> list[BaseException]:
    return list(items)


@pytest.fixture(autouse=True)
def _run_store_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI runs record into a throwaway run store, never into the repository's ``.orchestrate/``."""
    monkeypatch.setenv("ORCHESTRATE_STORE", str(tmp_path_factory.mktemp("store") / "runs.db"))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses a test starts (append them): killed and reaped when it ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()

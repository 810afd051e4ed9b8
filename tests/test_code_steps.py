"""Code steps (``type: python``): sync and async functions, their context, outputs, errors, retries, limits,
import from the project's folder, resume."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, Message
from orchestration import (
    AgentTask,
    ExecutionResult,
    ProjectOrchestrator,
    ProjectSpec,
    RetryableStepError,
    StepContext,
)
from orchestration.store import RunStatus, RunStore, fingerprints

REPO = Path(__file__).resolve().parents[1]
FAST_RETRY = {"initial_backoff_s": 0.001, "max_backoff_s": 0.001}


def registry() -> AgentRegistry:
    return AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])


def orchestrator(
    tasks: list[dict[str, Any] | AgentTask],
    *,
    agents: dict[str, Any] | None = None,
    inputs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ProjectOrchestrator:
    spec = ProjectSpec.model_validate({"name": "steps", "inputs": inputs or {}, "agents": agents or {}})
    run = ProjectOrchestrator(spec, registry=registry(), **kwargs)
    for task in tasks:
        run.add_task(task)
    return run


def error_of(result: ExecutionResult) -> tuple[str, str]:
    assert result.error is not None, result
    return result.error.type, result.error.message


async def test_sync_steps_run_in_a_worker_thread_and_async_ones_on_the_loop() -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def sync_step(context: StepContext) -> str:
        seen["sync"] = threading.get_ident()
        return f"sync {context.task_id}"

    async def async_step(context: StepContext) -> str:
        seen["async"] = threading.get_ident()
        await anyio.lowlevel.checkpoint()
        return f"async after {context.tasks['s'].output}"

    run = orchestrator([])
    run.add_step("s", sync_step)
    run.add_task(AgentTask(id="a", call=async_step, depends_on=["s"]))
    results = await run.run()
    assert results["s"].output == "sync s" and results["a"].output == "async after sync s"
    assert seen["sync"] != loop_thread and seen["async"] == loop_thread
    for result in results.values():
        assert result.agent == "python" and result.provider == "python" and result.model is None
        assert result.attempts == 1 and result.attempt_log[0].error_type is None and result.usage is None


async def test_the_context_holds_inputs_ancestors_params_and_no_item() -> None:
    contexts: list[StepContext] = []

    def look(context: StepContext) -> dict[str, Any]:
        contexts.append(context)
        return {"plan": context.parsed["plan"], "draft": context.outputs["draft"], "n": context.params["n"]}

    answers = FunctionLlm(lambda messages, options: '{"steps": 2}' if "plan" in messages[-1].content else "text")
    run = orchestrator(
        [
            {"id": "plan", "description": "plan {{ inputs.topic }}", "output_format": "json", "agent": "m"},
            {"id": "draft", "description": "draft", "depends_on": ["plan"], "agent": "m"},
            {"id": "unrelated", "description": "other", "agent": "m"},
        ],
        inputs={"topic": "otters"},
        llms={"m": answers},
    )
    run.add_step("look", look, depends_on=["draft"], params={"n": 3}, output_format="json")
    run.add_task({"id": "use", "depends_on": ["look"], "description": "n={{ tasks.look.parsed.n }}", "agent": "m"})
    results = await run.run()
    assert results["look"].parsed == {"plan": {"steps": 2}, "draft": "text", "n": 3}
    assert results["look"].output == '{"plan": {"steps": 2}, "draft": "text", "n": 3}'
    context = contexts[0]
    assert set(context.tasks) == {"plan", "draft"}  # its ancestors, not the unrelated task
    assert dict(context.inputs) == {"topic": "otters"} and context.item is None and context.index is None
    with pytest.raises(TypeError):
        context.params["n"] = 4  # type: ignore[index]
    with pytest.raises(TypeError):
        context.inputs["topic"] = "x"  # type: ignore[index]


async def test_outputs_text_none_json_and_schema() -> None:
    run = orchestrator(
        [
            AgentTask(id="none", call=lambda context: None),
            AgentTask(id="number", call=lambda context: 42),
            AgentTask(id="list", call=lambda context: [1, "ü"], output_format="json"),
            AgentTask(id="not_json", call=lambda context: {1, 2}, output_format="json"),
            AgentTask(
                id="schema",
                call=lambda context: {"n": "x"},
                output_format="json",
                output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
            ),
        ]
    )
    results = await run.run()
    assert results["none"].succeeded and results["none"].output == ""
    assert error_of(results["number"]) == (
        "code_error",
        "the step returned a int, not text: return a str, or set output_format: json",
    )
    assert results["list"].output == '[1, "ü"]' and results["list"].parsed == [1, "ü"]
    assert error_of(results["not_json"])[0] == "code_error" and "not JSON" in error_of(results["not_json"])[1]
    assert error_of(results["schema"])[0] == "invalid_output"


async def test_an_exception_fails_the_step_at_once_with_code_error() -> None:
    calls: list[int] = []

    def broken(context: StepContext) -> str:
        calls.append(1)
        raise KeyError("customer 17")

    run = orchestrator([AgentTask(id="broken", call=broken, retries=3), {"id": "after", "description": "x"}])
    run.add_task({"id": "child", "description": "never", "depends_on": ["broken"]})
    results = await run.run()
    assert error_of(results["broken"]) == ("code_error", "KeyError: 'customer 17'")
    assert calls == [1] and results["broken"].attempts == 1  # not a retryable error
    assert results["broken"].attempt_log[0].error_type == "code_error"
    assert error_of(results["child"])[0] == "upstream_failed" and results["after"].succeeded


async def test_a_retryable_error_is_retried_with_the_agents_backoff() -> None:
    calls: list[int] = []

    async def flaky(context: StepContext) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableStepError("busy, try again")
        return "done"

    def always(context: StepContext) -> str:
        raise RetryableStepError("still busy")

    agents = {"crunch": {"type": "python", "retry": FAST_RETRY}}
    run = orchestrator(
        [
            AgentTask(id="flaky", call=flaky, agent="crunch", retries=5),
            AgentTask(id="always", call=always, agent="crunch", retries=2),
        ],
        agents=agents,
    )
    results = await run.run()
    assert results["flaky"].output == "done" and results["flaky"].attempts == 3
    assert [a.error_type for a in results["flaky"].attempt_log] == ["code_error", "code_error", None]
    assert error_of(results["always"]) == ("code_error", "RetryableStepError: still busy")
    assert results["always"].attempts == 3 and results["always"].agent == "crunch"


async def test_a_task_timeout_stops_waiting_for_a_step() -> None:
    async def stuck(context: StepContext) -> str:
        await anyio.sleep(30)
        return "late"

    def raises_timeout(context: StepContext) -> str:
        raise TimeoutError("the socket timed out")

    run = orchestrator([AgentTask(id="stuck", call=stuck, timeout_s=0.05), AgentTask(id="own", call=raises_timeout)])
    with anyio.fail_after(5):
        results = await run.run()
    assert error_of(results["stuck"]) == ("timeout", "task timed out after 0.05 s")
    assert error_of(results["own"]) == ("code_error", "TimeoutError: the socket timed out")  # its own, not the task's


async def test_steps_use_the_global_cap_and_their_python_agents_limit() -> None:
    running = {"crunch": 0, "any": 0}
    peak = {"crunch": 0, "any": 0}

    def step(group: str) -> Any:
        async def work(context: StepContext) -> str:
            running[group] += 1
            peak[group] = max(peak[group], running[group])
            await anyio.sleep(0.01)
            running[group] -= 1
            return "ok"

        return work

    tasks: list[dict[str, Any] | AgentTask] = [
        AgentTask(id=f"c{i}", call=step("crunch"), agent="crunch") for i in range(8)
    ]
    agents = {"crunch": {"type": "python", "limits": {"max_concurrent": 2}}}
    results = await orchestrator(tasks, agents=agents, max_concurrency=6).run()
    assert all(r.succeeded for r in results.values())
    assert peak["crunch"] == 2

    tasks = [AgentTask(id=f"p{i}", call=step("any")) for i in range(8)]
    results = await orchestrator(tasks, max_concurrency=3).run()
    assert all(r.succeeded for r in results.values()) and peak["any"] == 3


async def test_a_code_step_never_builds_a_model_client(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client(*args: Any) -> Any:
        raise AssertionError("a code step asked for a model client")

    monkeypatch.setattr("orchestration.executor.create_llm", no_client)
    monkeypatch.setattr("orchestration.executor.TaskExecutor.chain_for", no_client)
    results = await orchestrator([AgentTask(id="s", call=lambda context: "x")]).run()
    assert results["s"].output == "x"


def write_module(folder: Path, name: str, source: str) -> None:
    (folder / f"{name}.py").write_text(source)


async def test_a_project_files_folder_is_on_the_import_path_while_it_is_validated_and_run(tmp_path: Path) -> None:
    write_module(
        tmp_path,
        "pipeline_steps_a",
        "import sys\n"
        "def shout(context):\n"
        "    import pipeline_helpers_a\n"  # imported while the run runs: the folder is still on the path
        "    return pipeline_helpers_a.loud(context.params['word'])\n",
    )
    write_module(tmp_path, "pipeline_helpers_a", "def loud(word):\n    return word.upper() + '!'\n")
    project = tmp_path / "steps.yaml"
    project.write_text(
        "name: folder\n"
        "tasks:\n"
        "  - {id: shout, call: 'pipeline_steps_a:shout', params: {word: hey}, output_file: out/shout.txt}\n"
    )
    before = list(sys.path)
    run = ProjectOrchestrator.from_file(project, registry=registry())
    run.validate()
    assert sys.path == before  # taken off again after validating
    results = await run.run()
    assert results["shout"].output == "HEY!"
    assert (tmp_path / "out" / "shout.txt").read_text() == "HEY!"
    assert sys.path == before


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestration", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
    )


def test_a_resumed_run_does_not_call_a_succeeded_step_again(tmp_path: Path) -> None:
    """Real processes: the first run fails at ``check``; ``orchestrate resume`` reruns only ``check``."""
    write_module(
        tmp_path,
        "resume_steps",
        "from pathlib import Path\n"
        "HERE = Path(__file__).parent\n"
        "def count(context):\n"
        "    with open(HERE / 'count.log', 'a') as log:\n"
        "        log.write('called\\n')\n"
        "    return {'n': context.params['n']}\n"
        "def check(context):\n"
        "    with open(HERE / 'check.log', 'a') as log:\n"
        "        log.write('called\\n')\n"
        "    if not (HERE / 'ready.flag').exists():\n"
        "        raise RuntimeError('not ready yet')\n"
        "    return f\"checked {context.tasks['count'].parsed['n']}\"\n",
    )
    project = tmp_path / "resume.yaml"
    project.write_text(
        "name: resumable\n"
        "tasks:\n"
        "  - {id: count, call: 'resume_steps:count', params: {n: 7}, output_format: json}\n"
        "  - {id: check, call: 'resume_steps:check', depends_on: [count]}\n"
        "  - {id: summary, depends_on: [check], description: 'summary: {{ tasks.check.output }}'}\n"
    )
    store = tmp_path / "runs.db"
    first = cli("run", str(project), "--run-id", "r1", "--store", str(store), "-q")
    assert first.returncode == 1, first.stderr
    run_store = RunStore(store)
    failed = run_store.load_results("r1")["check"]
    assert failed.error is not None and failed.error.message == "RuntimeError: not ready yet"
    run_store.close()
    (tmp_path / "ready.flag").write_text("")
    second = cli("resume", "r1", "--store", str(store), "-q")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "count.log").read_text() == "called\n"  # kept from the first run: not called again
    assert (tmp_path / "check.log").read_text() == "called\ncalled\n"
    run_store = RunStore(store)
    results = run_store.load_results("r1")
    assert results["summary"].output == "summary: checked 7"
    assert run_store.get_run("r1").status is RunStatus.SUCCESS
    run_store.close()


def test_a_steps_fingerprint_follows_its_call_and_params() -> None:
    def fingerprint(call: str, params: dict[str, Any]) -> str:
        spec = ProjectSpec.model_validate({"name": "f", "tasks": [{"id": "s", "call": call, "params": params}]})
        project = ProjectOrchestrator(spec, registry=registry()).validate()
        return fingerprints(project)[0]

    base = fingerprint("os.path:join", {"a": 1})
    assert fingerprint("os.path:join", {"a": 1}) == base
    assert fingerprint("os.path:join", {"a": 2}) != base
    assert fingerprint("os.path:split", {"a": 1}) != base


async def test_a_step_waits_on_its_dependencies_and_a_model_reads_its_output() -> None:
    def answer(messages: Sequence[Message], options: GenerationOptions) -> str:
        return messages[-1].content

    async def total(context: StepContext) -> int:
        return sum(int(result.output or 0) for result in context.tasks.values())

    run = orchestrator(
        [{"id": f"n{i}", "description": str(i), "agent": "m"} for i in range(4)],
        llms={"m": FunctionLlm(answer)},
    )
    run.add_step("total", total, depends_on=[f"n{i}" for i in range(4)], output_format="json")
    run.add_task({"id": "say", "description": "total {{ tasks.total.parsed }}", "depends_on": ["total"], "agent": "m"})
    results = await run.run()
    assert results["say"].output == "total 6"


async def test_a_steps_answer_can_wait_for_review_and_a_reviewer_agent(tmp_path: Path) -> None:
    from orchestration.store import Decision, DecisionKind, Gate

    judged: list[str] = []

    def judge(messages: Sequence[Message], options: GenerationOptions) -> str:
        judged.append(messages[-1].content)
        return '{"verdict": "approve", "reason": "numbers look right"}'

    def human(gate: Gate) -> Decision:
        return Decision(DecisionKind.EDIT, actor="alice", edit={"output": f"edited {gate.payload['output']}"})

    store = RunStore(tmp_path / "runs.db")
    run = orchestrator(
        [
            AgentTask(id="judged", call=lambda context: "42", review={"policy": "require_human", "reviewer": "judge"}),
            AgentTask(id="edited", call=lambda context: "7", review="require_human"),
        ],
        llms={"judge": FunctionLlm(judge)},
        store=store,
        on_review=human,
    )
    with anyio.fail_after(10):
        results = await run.run()
    judged_result, edited = results["judged"], results["edited"]
    assert judged_result.output == "42" and judged_result.review is not None
    assert judged_result.review.actor == "reviewer:judge" and len(judged) == 1 and "42" in judged[0]
    assert edited.output == "edited 7" and edited.review is not None and edited.review.actor == "alice"
    store.close()


def test_a_run_without_ray_never_imports_ray(tmp_path: Path) -> None:
    """Ray is the ``ray`` extra: a run that does not ask for it (no ``--ray``, ``defaults.executor: local``) leaves
    it unimported, code steps and all."""
    write_module(tmp_path, "plain_steps", "def hello(context):\n    return 'hello'\n")
    project = tmp_path / "plain.yaml"
    project.write_text("name: plain\ntasks:\n  - {id: hello, call: 'plain_steps:hello', remote: true}\n")
    script = (
        "import sys, anyio\n"
        "from orchestration import ProjectOrchestrator\n"
        f"run = ProjectOrchestrator.from_file({str(project)!r})\n"
        "assert anyio.run(run.run)['hello'].output == 'hello'\n"
        "print('ray' in sys.modules, any(name.startswith('ray.') for name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]

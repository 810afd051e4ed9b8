"""The answer cache through the real OpenAI SDK against the fake server, counting requests at the server."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from agent_registry import AgentRegistry
from orchestration import ExecutionResult, ProjectOrchestrator, ProjectSpec
from orchestration.answer_cache import CacheMode
from orchestration.cli.app import app
from orchestration.store import RunStore
from tests.fakes.agents import agent_settings, agent_yaml
from tests.fakes.provider_server import FakeProviderServer, RecordedRequest, Reply


def project(server: FakeProviderServer, tasks: list[dict[str, Any]], **defaults: Any) -> ProjectSpec:
    writer = agent_settings("gpt", server, retry={"initial_backoff_s": 0, "max_backoff_s": 0})
    return ProjectSpec.model_validate(
        {"name": "cached", "agents": {"writer": writer}, "defaults": {"agent": "writer", **defaults}, "tasks": tasks}
    )


def pipeline(size: int = 30) -> list[dict[str, Any]]:
    """A fan-out and fan-in: ``root``, then ``t1..t{size-2}`` reading it, then ``end`` reading them all."""
    middle = [
        {"id": f"t{i}", "description": f"part {i} of {{{{ tasks.root.output }}}}", "depends_on": ["root"]}
        for i in range(1, size - 1)
    ]
    joined = " ".join(f"{{{{ tasks.t{i}.output }}}}" for i in range(1, size - 1))
    end = {"id": "end", "description": f"join {joined}", "depends_on": [t["id"] for t in middle]}
    return [{"id": "root", "description": "the topic"}, *middle, end]


def run(spec: ProjectSpec, store: Path, override: CacheMode | None = None, **kwargs: Any) -> dict[str, ExecutionResult]:
    orch = ProjectOrchestrator(spec, registry=AgentRegistry(), store=store, **kwargs)
    orch.cache_override = override
    return anyio.run(orch.run)


def outputs(results: dict[str, ExecutionResult]) -> dict[str, str | None]:
    return {task_id: result.output for task_id, result in results.items()}


def test_a_rerun_of_an_unchanged_project_makes_no_call(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    spec = project(fake_server, pipeline(30))
    first = run(spec, store)
    assert len(fake_server.requests) == 30
    assert all(r.cache is not None and not r.cache.hit for r in first.values())
    second = run(spec, store)
    assert len(fake_server.requests) == 30, "the rerun called a model"
    assert outputs(second) == outputs(first)
    end = second["end"]
    assert end.cache is not None and end.cache.hit and end.cost_usd == 0 and end.usage is None and end.attempts == 0
    assert end.cache.from_run is not None and end.cache.from_run != RunStore(store).list_runs()[0].run_id
    assert end.cache.usage == first["end"].usage and end.cache.saved_usd == first["end"].cost_usd
    stats = RunStore(store).cache_stats()
    assert (stats.entries, stats.hits) == (30, 30)
    rerun = RunStore(store).list_runs()[0].run_id
    done = [e for e in RunStore(store).events(rerun) if e.kind == "task_succeeded"]
    assert len(done) == 30 and all(e.data["cache_hit"] is True for e in done)  # followers see hits and savings
    assert sum(e.data["saved_usd"] for e in done) == pytest.approx(sum(r.cost_usd or 0.0 for r in first.values()))


def test_a_changed_prompt_calls_that_task_and_the_descendants_whose_requests_changed(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    store = tmp_path / "runs.db"
    tasks = pipeline(6)  # root, t1..t4, end
    run(project(fake_server, tasks), store)
    fake_server.clear()
    tasks[2] = {**tasks[2], "description": "part two, reworded, of {{ tasks.root.output }}"}  # t2
    results = run(project(fake_server, tasks), store)
    sent = sorted(request.body["messages"][-1]["content"].split(" ")[0] for request in fake_server.requests)
    assert sent == ["join", "part"]  # t2 and end (which reads t2's new answer); nothing else
    assert [t for t, r in results.items() if r.cache is not None and not r.cache.hit] == ["t2", "end"]


def numbered(server: FakeProviderServer) -> None:
    counter = itertools.count(1)

    def answer(request: RecordedRequest) -> Reply:
        return Reply(text=f"idea {next(counter)}")

    server.handler = answer


def test_alike_requests_are_samples_called_once_each_and_served_back_in_place(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    numbered(fake_server)
    store = tmp_path / "runs.db"
    ideas = [{"id": f"idea{i}", "description": "an idea", "options": {"temperature": 0.9}} for i in range(5)]
    first = run(project(fake_server, ideas), store)
    assert len(fake_server.requests) == 5 and len(set(outputs(first).values())) == 5
    second = run(project(fake_server, ideas), store)
    assert len(fake_server.requests) == 5 and outputs(second) == outputs(first)
    more = run(
        project(fake_server, [*ideas, {"id": "idea5", "description": "an idea", "options": {"temperature": 0.9}}]),
        store,
    )
    assert len(fake_server.requests) == 6  # only the sixth sample is new
    assert {k: v for k, v in outputs(more).items() if k != "idea5"} == outputs(first)


@pytest.mark.parametrize("where", ["override", "defaults", "task", "agent"])
def test_false_neither_uses_nor_keeps(fake_server: FakeProviderServer, tmp_path: Path, where: str) -> None:
    store = tmp_path / "runs.db"
    task: dict[str, Any] = {"id": "t", "description": "x"}
    defaults: dict[str, Any] = {}
    if where == "task":
        task["cache"] = False
    elif where == "defaults":
        defaults["cache"] = False
    spec = project(fake_server, [task], **defaults)
    if where == "agent":
        writer = {**agent_settings("gpt", fake_server), "cache": False}
        spec = ProjectSpec.model_validate(
            {"agents": {"writer": writer}, "defaults": {"agent": "writer"}, "tasks": [task]}
        )
    override = CacheMode.OFF if where == "override" else None
    run(spec, store, override)
    run(spec, store, override)
    assert len(fake_server.requests) == 2 and RunStore(store).cache_stats().entries == 0


def test_read_uses_but_does_not_keep_and_refresh_calls_and_replaces(
    fake_server: FakeProviderServer, tmp_path: Path
) -> None:
    numbered(fake_server)
    store = tmp_path / "runs.db"
    spec = project(fake_server, [{"id": "t", "description": "x"}])
    read = project(fake_server, [{"id": "t", "description": "x"}], cache="read")
    assert run(read, store)["t"].output == "idea 1"  # a miss: called, not kept
    assert RunStore(store).cache_stats().entries == 0
    assert run(spec, store)["t"].output == "idea 2"  # kept now
    assert run(read, store)["t"].output == "idea 2"  # read: served
    assert run(spec, store, CacheMode.REFRESH)["t"].output == "idea 3"  # called again, replaced
    assert run(spec, store)["t"].output == "idea 3"
    assert len(fake_server.requests) == 3


def test_cut_off_and_failed_answers_are_not_kept(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    fake_server.script(
        "openai", Reply(text="cut", finish_reason="length"), Reply(text="cut again", finish_reason="length")
    )
    spec = project(fake_server, [{"id": "t", "description": "x", "on_truncated": "accept"}])
    assert run(spec, store)["t"].finish_reason == "length"
    assert run(spec, store)["t"].output == "cut again"  # not served from the cache
    assert RunStore(store).cache_stats().entries == 0


def test_offline_and_function_agents_never_use_it(tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    spec = ProjectSpec.model_validate({"tasks": [{"id": "t", "description": "x"}]})
    results = anyio.run(ProjectOrchestrator(spec, store=store).run)
    assert results["t"].cache is None and RunStore(store).cache_stats().entries == 0


def test_the_cli_flags_and_cache_commands(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(
        "name: cli\nagents:\n  writer: {"
        + agent_yaml("gpt", fake_server)
        + "}\ndefaults: {agent: writer}\ntasks:\n  - {id: a, description: one}\n  - {id: b, description: two}\n"
    )
    store = str(tmp_path / "runs.db")
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    invoke("run", str(file), "--store", store, "-q")
    invoke("run", str(file), "--store", store, "-q", "--no-cache")
    assert len(fake_server.requests) == 4
    summary = invoke("run", str(file), "--store", store)
    assert len(fake_server.requests) == 4 and "answer cache: 2 hits" in summary
    stats = invoke("cache", "stats", "--store", store)
    assert "2 answers" in stats and "2 hits" in stats
    invoke("run", str(file), "--store", store, "-q", "--refresh-cache")
    assert len(fake_server.requests) == 6
    assert "0 hits" in invoke("cache", "stats", "--store", store)  # refreshed answers start afresh
    contradiction = runner.invoke(app, ["run", str(file), "--store", store, "--no-cache", "--refresh-cache"])
    assert contradiction.exit_code == 2 and "contradict" in contradiction.output
    assert "deleted 0 answers" in invoke("cache", "clear", "--agent", "nobody", "--store", store)
    assert "deleted 2 answers" in invoke("cache", "clear", "--store", store)
    assert "0 answers" in invoke("cache", "stats", "--store", store)


def test_a_json_answer_is_served_parsed(fake_server: FakeProviderServer, tmp_path: Path) -> None:
    store = tmp_path / "runs.db"
    fake_server.script("openai", Reply(text='{"city": "Paris"}'))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    spec = project(fake_server, [{"id": "t", "description": "x", "output_format": "json", "output_schema": schema}])
    run(spec, store)
    hit = run(spec, store)["t"]
    assert hit.cache is not None and hit.cache.hit and hit.parsed == {"city": "Paris"}
    assert len(fake_server.requests) == 1


def test_only_the_model_s_own_complete_answers_are_kept() -> None:
    from orchestration.answer_cache import keeps
    from orchestration.models import CacheInfo, ExecutionStatus, ReviewRecord

    answer = ExecutionResult(task_id="t", status=ExecutionStatus.SUCCESS, cache=CacheInfo(hit=False, key="k"))
    assert keeps(answer)
    assert keeps(answer.model_copy(update={"review": ReviewRecord(decision="approve", actor="ann")}))
    assert not keeps(answer.model_copy(update={"review": ReviewRecord(decision="edit", actor="ann", edited=True)}))
    assert not keeps(answer.model_copy(update={"finish_reason": "content_filter"}))
    assert not keeps(answer.model_copy(update={"status": ExecutionStatus.FAILED}))
    assert not keeps(answer.model_copy(update={"cache": CacheInfo(hit=True, key="k")}))
    assert not keeps(answer.model_copy(update={"cache": None}))


def test_a_key_tells_apart_texts_that_move_between_messages() -> None:
    from llm_abstractions import Message
    from orchestration.answer_cache import request_key

    spec = ProjectSpec.model_validate(
        {
            "agents": {"w": {"type": "gpt", "model": "gpt-4.1-mini", "api_key": "k"}},
            "tasks": [{"id": "a", "agent": "w", "description": "x"}],
        }
    )
    project = ProjectOrchestrator(spec, registry=AgentRegistry()).validate(check_agents=False)
    task = project.tasks[0]

    def key(*texts: str, sample: int = 0) -> str:
        messages = [
            Message(role="system" if i == 0 and len(texts) > 1 else "user", content=t) for i, t in enumerate(texts)
        ]
        return request_key(project.registry, task, messages, task.options, sample)

    assert key("ab", "c") == key("ab", "c")
    assert len({key("ab", "c"), key("a", "bc"), key("abc"), key("ab", "c", sample=1), key("ab", "d")}) == 5

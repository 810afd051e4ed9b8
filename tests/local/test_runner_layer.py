"""The runner layer without a runtime: registry, shared pool, LocalLlm defaults and checks, stop scanning."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from agent_registry import AgentRegistry
from llm_abstractions import GenerationOptions, LlmChunk, LlmConfig, Message, Usage, create_llm, register_llm
from llm_abstractions.errors import InvalidRequestError
from llm_abstractions.factory import unregister_llm
from llm_abstractions.local import (
    LOCAL_DEFAULT_OPTIONS,
    LoadEvent,
    LocalLlm,
    LocalRunner,
    Prompt,
    RunnerPool,
    UnknownRunnerError,
    get_runner,
    known_runners,
    register_runner,
)
from llm_abstractions.local.registry import unregister_runner
from llm_abstractions.local.stops import StopScanner
from orchestration import ProjectOrchestrator, ProjectSpec
from orchestration.issues import ProjectValidationError


class WordRunner(LocalRunner):
    """A runtime stand-in: answers with the prompt's words, one per chunk."""

    name = "words"
    loads: ClassVar[list[str]] = []
    closed: ClassVar[list[str]] = []
    load_gate: ClassVar[anyio.Event | None] = None
    fail_load: ClassVar[bool] = False

    async def load(self, model: str, **device_options: Any) -> None:
        WordRunner.loads.append(model)
        self.model = model
        if WordRunner.load_gate is not None:
            await WordRunner.load_gate.wait()
        if WordRunner.fail_load:
            raise InvalidRequestError("no such weights")

    async def stream(self, prompt: Prompt, options: GenerationOptions) -> AsyncGenerator[LlmChunk, None]:
        text = prompt if isinstance(prompt, str) else " ".join(m.content for m in prompt)
        words = text.split()[: options.max_tokens]
        for word in words:
            yield LlmChunk(text=word + " ")
        yield LlmChunk(finish_reason="length", usage=Usage(input_tokens=len(text.split()), output_tokens=len(words)))

    async def close(self) -> None:
        WordRunner.closed.append(self.model)


class WordLlm(LocalLlm):
    provider = "words"
    runner_name = "words"
    runtime_modules: ClassVar[tuple[str, ...]] = ("json",)
    install_command = "pip install words"


@pytest.fixture(autouse=True)
def words() -> Iterator[None]:
    register_runner("words", WordRunner)
    register_llm("words", WordLlm)
    WordRunner.loads, WordRunner.closed, WordRunner.load_gate, WordRunner.fail_load = [], [], None, False
    yield
    unregister_runner("words")
    unregister_llm("words")


def test_runners_resolve_by_name_and_builtins_lazily() -> None:
    assert get_runner("words") is WordRunner
    assert {"mlx", "vllm", "words"} <= set(known_runners())
    with pytest.raises(UnknownRunnerError, match="unknown local runner 'nope'"):
        get_runner("nope")
    register_runner("dotted", "tests.local.test_runner_layer:WordRunner")
    try:
        assert get_runner("dotted") is WordRunner
    finally:
        unregister_runner("dotted")
    register_runner("not-a-runner", "tests.local.test_runner_layer:WordLlm")
    try:
        with pytest.raises(TypeError, match="not a LocalRunner"):
            get_runner("not-a-runner")
    finally:
        unregister_runner("not-a-runner")


async def test_pool_loads_once_for_concurrent_users_and_closes_with_the_last() -> None:
    pool = RunnerPool()
    events: list[LoadEvent] = []
    pool.add_listener(events.append)
    WordRunner.load_gate = gate = anyio.Event()
    got: list[LocalRunner] = []

    async def use() -> None:
        got.append(await pool.acquire("words", "m", {"a": 1}))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(use)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert WordRunner.loads == ["m"]
    assert len({id(r) for r in got}) == 1
    other = await pool.acquire("words", "m", {"a": 2})  # other device options: another runner
    assert other is not got[0]
    for runner in got[:-1]:
        await pool.release(runner)
    assert WordRunner.closed == []
    await pool.release(got[-1])
    assert WordRunner.closed == ["m"]
    assert pool.loaded() == [("words", "m")]
    await pool.release(other)
    assert pool.loaded() == []
    assert [e.phase for e in events] == ["loading", "loaded", "loading", "loaded", "closed", "closed"]


async def test_cancelling_the_task_that_started_a_load_does_not_abort_it() -> None:
    pool = RunnerPool()
    WordRunner.load_gate = gate = anyio.Event()
    scopes: list[anyio.CancelScope] = []
    got: list[LocalRunner] = []

    async def first() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            got.append(await pool.acquire("words", "m", {}))

    async def second() -> None:
        got.append(await pool.acquire("words", "m", {}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        scopes[0].cancel()  # e.g. the first task's timeout fires while the model loads
        await anyio.wait_all_tasks_blocked()
        assert got == []
        gate.set()
    assert WordRunner.loads == ["m"]
    assert len(got) == 2 and got[0] is got[1]
    await pool.release(got[0])
    await pool.release(got[1])
    assert WordRunner.closed == ["m"]


async def test_a_waiter_cancelled_before_the_load_ends_lets_go_of_the_model() -> None:
    pool = RunnerPool()
    WordRunner.load_gate = gate = anyio.Event()
    got: list[LocalRunner] = []

    async def first() -> None:
        got.append(await pool.acquire("words", "m", {}))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        with anyio.move_on_after(0):
            await pool.acquire("words", "m", {})
        gate.set()
    await pool.release(got[0])
    assert WordRunner.closed == ["m"]


async def test_a_failed_load_reaches_every_waiter_and_is_not_cached() -> None:
    pool = RunnerPool()
    WordRunner.fail_load = True
    WordRunner.load_gate = gate = anyio.Event()
    errors: list[BaseException] = []

    async def use() -> None:
        try:
            await pool.acquire("words", "m", {})
        except InvalidRequestError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(use)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert len(errors) == 3 and all("no such weights" in str(e) for e in errors)
    assert pool.loaded() == []
    WordRunner.fail_load = False
    assert await pool.acquire("words", "m", {}) is not None
    assert WordRunner.loads == ["m", "m"]


async def test_local_llm_applies_documented_defaults_under_agent_and_call_options() -> None:
    llm = create_llm(LlmConfig(name="w", provider="words", model="m", options=GenerationOptions(max_tokens=3)))
    assert llm.resolve_options({}) == LOCAL_DEFAULT_OPTIONS.merged(GenerationOptions(max_tokens=3))
    assert llm.resolve_options({"max_tokens": 2}).max_tokens == 2
    async with llm:
        response = await llm.generate_content_async([Message.user("one two three four five")])
    assert response.text == "one two three "
    assert response.usage == Usage(input_tokens=5, output_tokens=3)
    assert WordRunner.closed == ["m"]


def test_check_config_reports_runtime_and_model_problems(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    assert WordLlm.check_config(LlmConfig(name="w", provider="words", model=str(folder))) == []
    assert WordLlm.check_config(LlmConfig(name="w", provider="words", model=str(tmp_path / "gone"))) == [
        f"model path '{tmp_path / 'gone'}' does not exist"
    ]
    WordLlm.runtime_modules = ("no_such_runtime_module",)
    try:
        problems = WordLlm.check_config(LlmConfig(name="w", provider="words", model=str(folder)))
    finally:
        WordLlm.runtime_modules = ("json",)
    assert problems == ["the words runtime is not installed (no_such_runtime_module is missing): pip install words"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_validation_names_the_vllm_install_command_before_any_run(tmp_path: Path) -> None:
    spec = ProjectSpec.model_validate(
        {
            "agents": {"gpu": {"type": "vllm", "model": str(tmp_path / "missing-model")}},
            "tasks": [{"id": "a", "description": "hi", "agent": "gpu"}],
        }
    )
    with pytest.raises(ProjectValidationError) as caught:
        ProjectOrchestrator(spec, registry=AgentRegistry.default()).validate()
    message = str(caught.value)
    assert 'pip install "orchestrate-llm[vllm]"' in message
    assert f"model path '{tmp_path / 'missing-model'}' does not exist" in message


@pytest.mark.parametrize(
    ("pieces", "stops", "expected", "stopped"),
    [
        (["hello wor", "ld. end"], ["world"], "hello ", True),
        (["abc", "def"], ["xyz"], "abcdef", False),
        (["ab", "c##", "#d"], ["###"], "abc", True),
        (["a#", "b"], ["##"], "a#b", False),
        (["tail #"], ["##"], "tail #", False),
        (["x"], None, "x", False),
    ],
)
def test_stop_scanner_holds_back_possible_stops(
    pieces: list[str], stops: list[str] | None, expected: str, stopped: bool
) -> None:
    scanner = StopScanner(stops)
    out = []
    found = False
    for piece in pieces:
        text, found = scanner.feed(piece)
        out.append(text)
        if found:
            break
    if not found:
        out.append(scanner.flush())
    assert "".join(out) == expected
    assert found is stopped


def test_stop_scanner_emits_safe_text_early() -> None:
    scanner = StopScanner(["STOP"])
    assert scanner.feed("abcST") == ("abc", False)
    assert scanner.feed("x") == ("STx", False)


async def test_prepare_loads_ahead_of_the_first_call_and_leaves_failures_to_it() -> None:
    async with create_llm(LlmConfig(name="w", provider="words", model="m")) as llm:
        await llm.prepare()
        assert WordRunner.loads == ["m"]
        await llm.generate_content_async([Message.user("a b")])
        assert WordRunner.loads == ["m"]
    WordRunner.fail_load = True
    async with create_llm(LlmConfig(name="w", provider="words", model="bad")) as broken:
        await broken.prepare()
        with pytest.raises(InvalidRequestError, match="no such weights"):
            await broken.generate_content_async([Message.user("a b")])

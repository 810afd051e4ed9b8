"""MLX agents on a tiny random llama: real generation through mlx-lm on CPU."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("mlx.core")
pytest.importorskip("mlx_lm")

from agent_registry import AgentRegistry
from llm_abstractions import LlmConfig, Message, ProviderUnavailableError, create_llm
from llm_abstractions.local import LOCAL_DEFAULT_OPTIONS, LoadEvent, add_load_listener, mailbox, remove_load_listener
from llm_abstractions.local.local_llm import LocalLlm
from llm_abstractions.local.mlx_runner import MlxRunner
from orchestration import ProjectOrchestrator, ProjectSpec

pytestmark = pytest.mark.mlx


def mlx_llm(model: Path, **options: Any) -> LocalLlm:
    llm = create_llm(LlmConfig(name="local", provider="mlx", model=str(model), options=options))
    assert isinstance(llm, LocalLlm)
    return llm


def tokenizer(model: Path) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(model))


@pytest.fixture
def load_events() -> Any:
    events: list[LoadEvent] = []
    add_load_listener(events.append)
    yield events
    remove_load_listener(events.append)


async def test_generate_reports_token_counts_and_respects_max_tokens(mlx_model: Path) -> None:
    async with mlx_llm(mlx_model, temperature=0) as llm:
        response = await llm.generate_content_async([Message.user("the quick brown fox")], max_tokens=7)
    assert response.provider == "mlx"
    assert response.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.output_tokens == 7
    assert response.usage.input_tokens == len(tokenizer(mlx_model).encode("the quick brown fox"))
    assert response.text
    assert response.time_to_first_token_s is not None


async def test_chat_template_is_applied_when_the_tokenizer_has_one(mlx_model: Path, mlx_chat_model: Path) -> None:
    messages = [Message.system("be brief"), Message.user("hello world")]
    async with mlx_llm(mlx_chat_model, temperature=0) as chat, mlx_llm(mlx_model, temperature=0) as plain:
        templated = await chat.generate_content_async(messages, max_tokens=2)
        untemplated = await plain.generate_content_async(messages, max_tokens=2)
    rendered = tokenizer(mlx_chat_model).apply_chat_template(
        [m.model_dump() for m in messages], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert templated.usage is not None and untemplated.usage is not None
    assert templated.usage.input_tokens == len(rendered)
    assert untemplated.usage.input_tokens == len(tokenizer(mlx_model).encode("be brief\n\nhello world"))


async def test_stream_yields_text_then_a_last_chunk_with_usage(
    mlx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailbox, "TEXT_INTERVAL_S", 0.0)  # hand text over at every step
    async with mlx_llm(mlx_model, temperature=0) as llm:
        chunks = [c async for c in llm.stream_content_async([Message.user("stream me")], max_tokens=24)]
        whole = await llm.generate_content_async([Message.user("stream me")], max_tokens=24)
    assert len(chunks) > 1
    assert all(c.finish_reason is None and c.usage is None for c in chunks[:-1])
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 24
    assert "".join(c.text for c in chunks) == whole.text


async def test_seed_makes_sampling_reproducible(mlx_model: Path) -> None:
    prompt = [Message.user("tell me something")]
    async with mlx_llm(mlx_model, temperature=1.0, max_tokens=24) as llm:
        first = await llm.generate_content_async(prompt, seed=7)
        again = await llm.generate_content_async(prompt, seed=7)
        other = await llm.generate_content_async(prompt, seed=8)
    assert first.text == again.text
    assert first.text != other.text


async def test_top_k_one_tiny_top_p_and_full_min_p_sample_the_greedy_answer(mlx_model: Path) -> None:
    prompt = [Message.user("a local model")]
    async with mlx_llm(mlx_model, max_tokens=16) as llm:
        greedy = await llm.generate_content_async(prompt, temperature=0)
        top_k = await llm.generate_content_async(prompt, temperature=1.5, top_k=1, top_p=1.0)
        top_p = await llm.generate_content_async(prompt, temperature=1.5, top_p=1e-6)
        min_p = await llm.generate_content_async(prompt, temperature=1.5, top_p=1.0, min_p=1.0)
        free = await llm.generate_content_async(prompt, temperature=1.5, top_p=1.0, seed=3)
    assert top_k.text == greedy.text
    assert top_p.text == greedy.text
    assert min_p.text == greedy.text
    assert free.text != greedy.text


async def test_repetition_penalty_changes_the_greedy_answer(mlx_model: Path) -> None:
    prompt = [Message.user("hello hello hello")]
    async with mlx_llm(mlx_model, temperature=0, max_tokens=40) as llm:
        plain = await llm.generate_content_async(prompt)
        penalised = await llm.generate_content_async(prompt, repetition_penalty=50.0)
    assert penalised.text != plain.text


async def test_stop_sequence_ends_the_answer_before_it(mlx_model: Path) -> None:
    prompt = [Message.user("where does it stop")]
    async with mlx_llm(mlx_model, temperature=0) as llm:
        full = await llm.generate_content_async(prompt, max_tokens=40)
        stop = full.text[len(full.text) // 2 :][:3]
        assert stop.strip() and stop in full.text
        stopped = await llm.generate_content_async(prompt, max_tokens=40, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.index(stop)]
    assert stopped.usage is not None and stopped.usage.output_tokens < 40


async def test_defaults_bound_an_answer_when_no_option_is_given(mlx_model: Path) -> None:
    async with mlx_llm(mlx_model) as llm:
        assert llm.resolve_options({}) == LOCAL_DEFAULT_OPTIONS
    async with mlx_llm(mlx_model, temperature=0) as greedy:  # greedy never picks the suppressed end token
        response = await greedy.generate_content_async([Message.user("go on")])
    assert response.usage is not None
    assert response.usage.output_tokens == LOCAL_DEFAULT_OPTIONS.max_tokens


async def test_cancelled_stream_leaves_the_batch(mlx_model: Path) -> None:
    async with mlx_llm(mlx_model, temperature=0) as llm:
        runner = await llm.runner()
        assert isinstance(runner, MlxRunner)
        before = runner.stats.generated_tokens
        received = 0
        async with contextlib.aclosing(llm.stream_content_async([Message.user("never ends")], max_tokens=100_000)) as s:
            async for _ in s:
                received += 1
                if received == 3:
                    break
        # Commands are handled in order: once this answer is back, the cancel was handled.
        await llm.generate_content_async([Message.user("next")], max_tokens=2)
        assert runner.stats.cancelled == 1
        assert runner.stats.active == 0
        assert runner.stats.generated_tokens - before < 1_000


async def test_a_task_timeout_cancels_its_generation(mlx_model: Path) -> None:
    async with mlx_llm(mlx_model, temperature=0) as llm:
        runner = await llm.runner()
        assert isinstance(runner, MlxRunner)
        with anyio.move_on_after(0.3):
            await llm.generate_content_async([Message.user("long")], max_tokens=1_000_000)
        await llm.generate_content_async([Message.user("next")], max_tokens=2)
        assert runner.stats.cancelled == 1
        assert runner.stats.active == 0


def project(model: Path, tasks: int, **agent: Any) -> ProjectSpec:
    return ProjectSpec.model_validate(
        {
            "agents": {"local": {"type": "mlx", "model": str(model), "options": {"temperature": 0}, **agent}},
            "defaults": {"agent": "local", "max_concurrency": tasks, "retries": 0},
            "tasks": [
                {"id": f"t{i}", "description": f"task number {i}", "options": {"max_tokens": 8 + i}}
                for i in range(tasks)
            ],
        }
    )


async def test_a_run_loads_its_model_once_and_closes_it_at_the_end(
    mlx_model: Path, load_events: list[LoadEvent]
) -> None:
    orchestrator = ProjectOrchestrator(project(mlx_model, 6), registry=AgentRegistry.default())
    results = await orchestrator.run()
    assert all(r.succeeded for r in results.values()), [r.error for r in results.values()]
    for i, result in enumerate(results.values()):
        assert result.provider == "mlx"
        assert result.usage is not None and result.usage.output_tokens == 8 + i
    assert [(e.phase, e.model) for e in load_events] == [
        ("loading", str(mlx_model)),
        ("loaded", str(mlx_model)),
        ("closed", str(mlx_model)),
    ]


async def test_concurrent_tasks_are_decoded_in_one_batch(mlx_model: Path, load_events: list[LoadEvent]) -> None:
    async with mlx_llm(mlx_model) as holder:  # same model and settings: the run shares this runner
        runner = await holder.runner()
        assert isinstance(runner, MlxRunner)
        orchestrator = ProjectOrchestrator(project(mlx_model, 6), registry=AgentRegistry.default())
        results = await orchestrator.run()
        assert all(r.succeeded for r in results.values())
        assert runner.stats.requests == 6
        assert runner.stats.max_batch > 1
        assert runner.stats.steps < sum(8 + i for i in range(6))  # fewer steps than one task at a time
        still_loaded = await holder.generate_content_async([Message.user("after the run")], max_tokens=2)
        assert still_loaded.usage is not None and still_loaded.usage.output_tokens == 2
    assert [e.phase for e in load_events] == ["loading", "loaded", "closed"]


async def test_closed_model_refuses_requests(mlx_model: Path) -> None:
    llm = mlx_llm(mlx_model)
    runner = await llm.runner()
    await llm.aclose()
    with pytest.raises(ProviderUnavailableError):
        async with contextlib.aclosing(runner.stream("hello", LOCAL_DEFAULT_OPTIONS)) as chunks:
            async for _ in chunks:
                pass


def test_check_config_reports_a_missing_model_path(tmp_path: Path, mlx_model: Path) -> None:
    from llm_abstractions.local.mlx_llm import MlxLlm

    missing = tmp_path / "nowhere"
    assert MlxLlm.check_config(LlmConfig(name="a", provider="mlx", model=str(mlx_model))) == []
    assert MlxLlm.check_config(LlmConfig(name="a", provider="mlx", model=str(missing))) == [
        f"model path '{missing}' does not exist"
    ]
    assert "needs 'model'" in MlxLlm.check_config(LlmConfig(name="a", provider="mlx"))[0]


async def test_a_folder_without_weights_fails_to_load_for_good(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    async with mlx_llm(tmp_path) as llm:
        with pytest.raises(ProviderUnavailableError, match="loading failed") as caught:
            await llm.generate_content_async([Message.user("hi")])
    assert caught.value.retryable is False


_EXIT_SCRIPT = """
import anyio
from llm_abstractions import LlmConfig, Message, create_llm

async def main(model):
    closed = create_llm(LlmConfig(name="a", provider="mlx", model=model, options={"temperature": 0}))
    async with closed:
        await closed.generate_content_async([Message.user("one")], max_tokens=4)
    left_open = create_llm(LlmConfig(name="b", provider="mlx", model=model, options={"temperature": 0}))
    await left_open.generate_content_async([Message.user("two")], max_tokens=4)
    print("done", flush=True)

anyio.run(main, {model!r})
"""


def test_the_process_exits_cleanly_after_mlx_work(mlx_model: Path) -> None:
    """MLX's thread-local state aborts the process at exit if its thread ended or woke during shutdown."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT.replace("{model!r}", repr(str(mlx_model)))],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert "terminate called" not in done.stderr
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("done")

"""vLLM agents on a tiny random llama, in-process on a GPU (``pytest -m gpu``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

pytestmark = pytest.mark.gpu

vllm = pytest.importorskip("vllm")

from agent_registry import AgentRegistry  # noqa: E402
from llm_abstractions import LlmConfig, Message, create_llm  # noqa: E402
from llm_abstractions.local import LoadEvent, LocalLlm, add_load_listener, remove_load_listener  # noqa: E402
from orchestration import ProjectOrchestrator, ProjectSpec  # noqa: E402
from tests.local.vllm_model import ENGINE, hf_model  # noqa: E402

__all__ = ["hf_model"]


def vllm_llm(model: Path, **options: Any) -> LocalLlm:
    llm = create_llm(LlmConfig(name="gpu", provider="vllm", model=str(model), options=options, settings=ENGINE))
    assert isinstance(llm, LocalLlm)
    return llm


async def test_vllm_generates_streams_and_maps_options(hf_model: Path) -> None:
    async with vllm_llm(hf_model, temperature=0) as llm:
        response = await llm.generate_content_async([Message.user("the quick brown fox")], max_tokens=9)
        chunks = [c async for c in llm.stream_content_async([Message.user("the quick brown fox")], max_tokens=9)]
        seeded = [
            (await llm.generate_content_async([Message.user("hi")], temperature=1.0, seed=s, max_tokens=16)).text
            for s in (5, 5, 6)
        ]
        stop = response.text[len(response.text) // 2 :][:3]
        stopped = await llm.generate_content_async([Message.user("the quick brown fox")], max_tokens=9, stop=[stop])
    assert response.finish_reason == "length"
    assert response.usage is not None and response.usage.output_tokens == 9 and response.usage.input_tokens > 0
    assert len(chunks) > 1 and chunks[-1].usage == response.usage
    assert "".join(c.text for c in chunks) == response.text
    assert seeded[0] == seeded[1] != seeded[2]
    assert stopped.finish_reason == "stop"
    assert stopped.text == response.text[: response.text.index(stop)]


async def test_vllm_structured_output_follows_the_schema(hf_model: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    async with vllm_llm(hf_model, temperature=0.8, max_tokens=64) as llm:
        response = await llm.generate_content_async([Message.user("yes or no?")], json_schema=schema)
    assert json.loads(response.text)["answer"] in ("yes", "no")


async def test_vllm_cancelled_stream_is_aborted_and_the_engine_goes_on(hf_model: Path) -> None:
    async with vllm_llm(hf_model, temperature=0) as llm:
        async with contextlib.aclosing(llm.stream_content_async([Message.user("x")], max_tokens=900)) as stream:
            async for _ in stream:
                break
        with anyio.move_on_after(0.2):
            await llm.generate_content_async([Message.user("y")], max_tokens=900)
        after = await llm.generate_content_async([Message.user("z")], max_tokens=3)
    assert after.usage is not None and after.usage.output_tokens == 3


async def test_vllm_project_runs_concurrent_tasks_on_one_engine(hf_model: Path) -> None:
    events: list[LoadEvent] = []
    add_load_listener(events.append)
    try:
        spec = ProjectSpec.model_validate(
            {
                "agents": {"gpu": {"type": "vllm", "model": str(hf_model), "options": {"temperature": 0}, **ENGINE}},
                "defaults": {"agent": "gpu", "max_concurrency": 8, "retries": 0},
                "tasks": [
                    {"id": f"t{i}", "description": f"task {i}", "options": {"max_tokens": 4 + i}} for i in range(8)
                ],
            }
        )
        results = await ProjectOrchestrator(spec, registry=AgentRegistry.default()).run()
    finally:
        remove_load_listener(events.append)
    assert all(r.succeeded for r in results.values()), [r.error for r in results.values()]
    assert [r.usage.output_tokens for r in results.values() if r.usage] == [4 + i for i in range(8)]
    assert [e.phase for e in events] == ["loading", "loaded", "closed"]

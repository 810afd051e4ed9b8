"""A stand-in local runtime for the Ray tests: ``ticks`` streams its process id, then a tick per step.

Each call appends ``start <pid>`` to the file its agent names (``log``), so a test can see where calls run.
A step's work is either a sleep (``work: sleep``) or a busy loop (``work: spin``, for throughput figures).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from llm_abstractions import GenerationOptions, LlmChunk, Usage
from llm_abstractions.local import LocalLlm, LocalRunner, Prompt


class TickSettings(BaseModel, extra="forbid"):
    log: str | None = None
    step_s: float = 0.0
    work: Literal["sleep", "spin"] = "sleep"


def _note_start(log: Path) -> None:
    with log.open("a") as lines:
        lines.write(f"start {os.getpid()}\n")


class TickRunner(LocalRunner):
    name = "ticks"

    async def load(self, model: str, **device_options: Any) -> None:
        self.settings = TickSettings.model_validate(device_options)

    async def stream(self, prompt: Prompt, options: GenerationOptions) -> AsyncGenerator[LlmChunk, None]:
        settings = self.settings
        if settings.log is not None:
            _note_start(Path(settings.log))
        yield LlmChunk(text=f"{os.getpid()}")
        steps = options.max_tokens or 1
        for _ in range(steps):
            if settings.work == "spin":
                end = time.perf_counter() + settings.step_s
                while time.perf_counter() < end:
                    pass
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(settings.step_s)
            yield LlmChunk(text=" tick")
        yield LlmChunk(finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=steps + 1))

    async def close(self) -> None:
        return None


class TickLlm(LocalLlm):
    provider = "ticks"
    runner_name = "ticks"
    settings_model = TickSettings
    runtime_modules: ClassVar[tuple[str, ...]] = ("json",)
    install_command = "nothing to install"

"""``LocalLlm``: a ``BaseLlm`` whose calls stream from a shared, lazily loaded ``LocalRunner``."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import anyio

from llm_abstractions.config import LlmConfig
from llm_abstractions.errors import InvalidRequestError, LlmError
from llm_abstractions.local.models import model_problems
from llm_abstractions.local.pool import RunnerPool, runner_pool
from llm_abstractions.local.runner import LocalRunner
from llm_abstractions.messages import GenerationOptions, LlmChunk, Message
from llm_abstractions.streaming import StreamingLlm

__all__ = ["LOCAL_DEFAULT_OPTIONS", "LocalLlm"]

LOCAL_DEFAULT_OPTIONS = GenerationOptions(max_tokens=512, temperature=0.7, top_p=0.95)
"""Options of a local agent before its own ``options`` and the task's: at most 512 new
tokens, temperature 0.7, nucleus 0.95 (the runtimes' own defaults are greedy and short)."""


class LocalLlm(StreamingLlm):
    """A local model: loaded on first call, shared through a :class:`RunnerPool`, released by :meth:`aclose`.

    Subclasses name their runner, the modules the runtime needs and its install
    command; ``settings`` (the agent's extra keys) are the runner's device options.
    """

    runner_name: ClassVar[str]
    """The :func:`~llm_abstractions.local.get_runner` key."""
    runtime_modules: ClassVar[tuple[str, ...]]
    """Modules that must import for the runtime to work."""
    install_command: ClassVar[str]
    """What to run when the runtime is missing."""
    default_options: ClassVar[GenerationOptions] = LOCAL_DEFAULT_OPTIONS

    def __init__(self, config: LlmConfig, *, pool: RunnerPool | None = None) -> None:
        super().__init__(config)
        self._pool = pool or runner_pool
        self._runner: LocalRunner | None = None
        self._lock = anyio.Lock()

    @classmethod
    def runtime_problem(cls) -> str | None:
        """Why the runtime cannot be used here, with the install command; ``None`` when it can."""
        for module in cls.runtime_modules:
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if not found:
                return f"the {cls.provider} runtime is not installed ({module} is missing): {cls.install_command}"
        return None

    @classmethod
    def check_config(cls, config: LlmConfig) -> list[str]:
        problems = super().check_config(config)
        runtime = cls.runtime_problem()
        if runtime is not None:
            problems.append(runtime)
        return problems + model_problems(config.model)

    @property
    def base_options(self) -> GenerationOptions:
        """The local defaults (:data:`LOCAL_DEFAULT_OPTIONS`), then the agent's options."""
        return self.default_options.merged(self.config.options)

    @property
    def gpus_per_replica(self) -> float:
        """GPUs one replica of this model holds on Ray when its agent does not say (``num_gpus``)."""
        return 0

    @property
    def device_options(self) -> dict[str, Any]:
        """Keyword arguments of the runner's ``load``: the validated settings."""
        return self.settings.model_dump()

    async def runner(self) -> LocalRunner:
        """The loaded runner, loading (or joining a load in progress) on first use."""
        if self._runner is None:
            async with self._lock:
                if self._runner is None:
                    if not self.config.model:
                        raise InvalidRequestError(f"agent '{self.config.name}' has no model", provider=self.provider)
                    self._runner = await self._pool.acquire(self.runner_name, self.config.model, self.device_options)
        return self._runner

    async def prepare(self) -> None:
        """Load the model (or join its load) before the first call; a failed load is reported by the call."""
        with contextlib.suppress(LlmError):
            await self.runner()

    async def _stream(self, messages: Sequence[Message], options: GenerationOptions) -> AsyncIterator[LlmChunk]:
        runner = await self.runner()
        async with contextlib.aclosing(runner.stream(messages, options)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await self._pool.release(runner)

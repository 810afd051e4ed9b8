"""``RunnerPool``: each (runner, model, device options) loaded once, shared, closed with its last user."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from llm_abstractions.errors import LlmError, ProviderUnavailableError
from llm_abstractions.local.registry import get_runner
from llm_abstractions.local.runner import LocalRunner

__all__ = ["LoadEvent", "LoadListener", "RunnerPool", "add_load_listener", "remove_load_listener", "runner_pool"]

LoadPhase = Literal["loading", "loaded", "failed", "closed"]


@dataclass(frozen=True)
class LoadEvent:
    """A local model started or finished loading, failed to load, or was closed."""

    runner: str
    model: str
    phase: LoadPhase
    elapsed_s: float | None = None
    """Seconds the load took (``loaded``, ``failed``)."""
    error: str | None = None


LoadListener = Callable[[LoadEvent], None]

_Key = tuple[str, str, str]


@dataclass(eq=False)
class _Entry:
    runner: LocalRunner
    users: int = 0
    ready: anyio.Event = field(default_factory=anyio.Event)
    error: LlmError | None = None


class RunnerPool:
    """Loaded runners by (runner name, model, device options), with user counts.

    :meth:`acquire` loads on first use (concurrent callers wait for the same load);
    :meth:`release` closes the runner when its last user lets go. Listeners see
    :class:`LoadEvent`\\ s (the CLI shows them; they are also logged with structlog).
    """

    def __init__(self) -> None:
        self._entries: dict[_Key, _Entry] = {}
        self._listeners: list[LoadListener] = []

    def add_listener(self, listener: LoadListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: LoadListener) -> None:
        self._listeners.remove(listener)

    def _emit(self, event: LoadEvent) -> None:
        import structlog

        structlog.get_logger("orchestrate.local").info(
            f"local_model_{event.phase}",
            runner=event.runner,
            model=event.model,
            elapsed_s=event.elapsed_s,
            error=event.error,
        )
        for listener in list(self._listeners):
            listener(event)

    def loaded(self) -> list[tuple[str, str]]:
        """(runner, model) of every runner loaded or loading now."""
        return [(key[0], key[1]) for key in self._entries]

    async def acquire(self, runner: str, model: str, device_options: dict[str, Any]) -> LocalRunner:
        """The shared runner for this model, loading it on first use."""
        key = (runner, model, json.dumps(device_options, sort_keys=True, default=str))
        entry = self._entries.get(key)
        if entry is not None:
            entry.users += 1
            await entry.ready.wait()
            if entry.error is not None:
                entry.users -= 1
                raise type(entry.error)(entry.error.message, provider=runner, retryable=entry.error.retryable)
            return entry.runner
        entry = self._entries[key] = _Entry(get_runner(runner)(), users=1)
        self._emit(LoadEvent(runner, model, "loading"))
        start = time.perf_counter()
        try:
            await entry.runner.load(model, **device_options)
        except BaseException as exc:
            del self._entries[key]
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            entry.error = (
                exc
                if isinstance(exc, LlmError)
                else ProviderUnavailableError(
                    "loading was cancelled" if cancelled else f"loading {model!r} failed: {exc}",
                    provider=runner,
                    retryable=cancelled,
                )
            )
            entry.ready.set()
            with anyio.CancelScope(shield=True):
                await entry.runner.close()
            self._emit(LoadEvent(runner, model, "failed", time.perf_counter() - start, entry.error.message))
            if cancelled or isinstance(exc, LlmError):
                raise
            raise entry.error from exc
        entry.ready.set()
        self._emit(LoadEvent(runner, model, "loaded", time.perf_counter() - start))
        return entry.runner

    async def release(self, runner: LocalRunner) -> None:
        """One user is done with ``runner``; the last one closes it."""
        for key, entry in list(self._entries.items()):
            if entry.runner is runner:
                entry.users -= 1
                if entry.users == 0:
                    del self._entries[key]
                    with anyio.CancelScope(shield=True):
                        await runner.close()
                    self._emit(LoadEvent(key[0], key[1], "closed"))
                return


runner_pool = RunnerPool()
"""The process-wide pool that local agents use."""


def add_load_listener(listener: LoadListener) -> None:
    """Call ``listener(event)`` whenever a local model starts or finishes loading, fails, or is closed."""
    runner_pool.add_listener(listener)


def remove_load_listener(listener: LoadListener) -> None:
    runner_pool.remove_listener(listener)

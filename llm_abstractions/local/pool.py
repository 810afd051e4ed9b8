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
        """The shared runner for this model, loading it on first use.

        The load itself is shielded from cancellation: a task that times out while the
        model loads does not abort the load that the other tasks are waiting for.
        """
        key = (runner, model, json.dumps(device_options, sort_keys=True, default=str))
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(get_runner(runner)(), users=1)
            await self._load(key, entry, model, device_options)
        else:
            entry.users += 1
            try:
                await entry.ready.wait()
            except BaseException:
                await self._drop(key, entry)
                raise
        error = entry.error
        if error is not None:
            raise type(error)(error.message, provider=runner, retryable=error.retryable) from error
        return entry.runner

    async def _load(self, key: _Key, entry: _Entry, model: str, device_options: dict[str, Any]) -> None:
        runner = key[0]
        self._emit(LoadEvent(runner, model, "loading"))
        start = time.perf_counter()
        try:
            with anyio.CancelScope(shield=True):
                await entry.runner.load(model, **device_options)
        except Exception as exc:
            del self._entries[key]
            entry.error = (
                exc
                if isinstance(exc, LlmError)
                else ProviderUnavailableError(f"loading {model!r} failed: {exc}", provider=runner, retryable=False)
            )
            with anyio.CancelScope(shield=True):
                await entry.runner.close()
            self._emit(LoadEvent(runner, model, "failed", time.perf_counter() - start, entry.error.message))
        else:
            self._emit(LoadEvent(runner, model, "loaded", time.perf_counter() - start))
        finally:
            entry.ready.set()

    async def release(self, runner: LocalRunner) -> None:
        """One user is done with ``runner``; the last one closes it."""
        for key, entry in list(self._entries.items()):
            if entry.runner is runner:
                await self._drop(key, entry)
                return

    async def _drop(self, key: _Key, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0 and self._entries.get(key) is entry:
            del self._entries[key]
            with anyio.CancelScope(shield=True):
                await entry.runner.close()
            self._emit(LoadEvent(key[0], key[1], "closed"))


runner_pool = RunnerPool()
"""The process-wide pool that local agents use."""


def add_load_listener(listener: LoadListener) -> None:
    """Call ``listener(event)`` whenever a local model starts or finishes loading, fails, or is closed."""
    runner_pool.add_listener(listener)


def remove_load_listener(listener: LoadListener) -> None:
    runner_pool.remove_listener(listener)

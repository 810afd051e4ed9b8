"""``ReplicatedLlm``: a model served by a pool of Ray actors, one client (a loaded local model) in each.

Each replica is an async Ray actor (:class:`LlmReplica`) holding one client of the model: for a local model
(``mlx``, ``vllm``) its runner, loaded once and batching the replica's concurrent requests as it does in-process;
for an API agent (``remote: true``) its SDK client. The driver sends each call to the replica with the fewest calls
in flight and streams the chunks back: the first at once (time to first token is measured on the driver, as for any
stream), the others in batches of what was made within :data:`BATCH_S`. A replica that dies is restarted by Ray
(``max_restarts``); the calls it had in flight fail with a retryable
:class:`~llm_abstractions.errors.ReplicaLostError` (``provider_unavailable``, not counted by the endpoint's circuit
breaker: the other replicas are fine), and the replica takes no new call until it answers
again, so the retries go to the others. Limits, breaker and budget wrap this client in the driver, as any other.

Ray is imported by :meth:`ReplicatedLlm.prepare` only (the ``ray`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm_abstractions.base import BaseLlm, _per_call
from llm_abstractions.config import LlmConfig
from llm_abstractions.errors import LlmError, ProviderUnavailableError, ReplicaLostError
from llm_abstractions.local.registry import get_runner, register_runner
from llm_abstractions.local.runner import LocalRunner
from llm_abstractions.messages import GenerationOptions, LlmChunk, LlmResponse, Message
from llm_abstractions.streaming import collect_stream
from llm_abstractions.wrappers.wrapper import WrapperLlm

__all__ = ["BATCH_S", "LlmReplica", "ReplicaSettings", "ReplicatedLlm"]

BATCH_S = 0.02
"""After a stream's first chunk, a replica sends the chunks made within this many seconds together."""


class LlmReplica:
    """The Ray actor of one replica: a client made from the driver's client class and config."""

    def __init__(self, llm_class: type[BaseLlm], config: LlmConfig, runners: Mapping[str, type[LocalRunner]]) -> None:
        for name, runner in runners.items():  # the driver's runners, also those registered at run time
            register_runner(name, runner)
        self.problems = llm_class.check_config(config)
        """What this machine lacks for the model (its runtime, its files): the driver checked only the settings."""
        self.llm = llm_class(config)

    async def start(self) -> int:
        """Get the client ready (load the model); return this replica's process id. Raise
        ``ProviderUnavailableError`` (not retryable) for what this machine lacks."""
        if self.problems:
            raise ProviderUnavailableError("; ".join(self.problems), provider=self.llm.provider, retryable=False)
        await self.llm.prepare()
        return os.getpid()

    async def stream(
        self, messages: Sequence[Message], options: GenerationOptions | None
    ) -> AsyncIterator[list[LlmChunk]]:
        """One call's chunks, as a Ray streaming generator: the first chunk alone as soon as it is made (time to first
        token), then the chunks made within :data:`BATCH_S` of the last item sent, together (one Ray object per
        item: a token each would cost the driver about a millisecond apiece)."""
        chunks = self.llm.stream_content_async(messages, options)
        batch: list[LlmChunk] = []
        due = 0.0
        try:
            async for chunk in chunks:
                batch.append(chunk)
                now = time.monotonic()
                if now >= due:
                    yield batch
                    batch, due = [], now + BATCH_S
            if batch:
                yield batch
        finally:  # a call cancelled by the driver stops its generation here too
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def close(self) -> None:
        await self.llm.aclose()


@dataclass(frozen=True, slots=True)
class ReplicaSettings:
    """How a model's replicas are placed on the cluster."""

    replicas: int = 1
    num_gpus: float = 0
    """GPUs each replica holds."""
    max_restarts: int = 3
    """How often Ray restarts a replica that died (``-1``: always)."""


@dataclass(eq=False, slots=True)
class _Replica:
    index: int
    actor: Any
    in_flight: int = 0
    up: bool = True
    """``False`` from its death until it answers again: it gets no calls meanwhile."""


class ReplicatedLlm(WrapperLlm):
    """``wrapped``'s calls served by Ray actors; ``wrapped`` itself (in the driver) is never called.

    It gives the pool its identity (config, provider, pricing, attachment limits), and its class and config
    make each replica's client."""

    def __init__(self, wrapped: BaseLlm, settings: ReplicaSettings) -> None:
        super().__init__(wrapped)
        # the answers are the wrapped provider's (results, messages): this pool is its own kind of client only here
        self.provider = wrapped.provider  # type: ignore[misc]
        self.cacheable = wrapped.cacheable  # type: ignore[misc]
        self.placement = settings
        self._replicas: list[_Replica] = []
        self._starting: asyncio.Future[None] | None = None
        self._revivals: set[asyncio.Task[None]] = set()
        self._pids: list[int | None] = []

    @property
    def streams(self) -> bool:
        return self.wrapped.streams

    @property
    def pids(self) -> list[int | None]:
        """Each replica's process id, as last seen (for tests and diagnostics)."""
        return list(self._pids)

    async def prepare(self) -> None:
        """Start the replicas (each loads the model) ahead of the first call; a failure is reported by the call."""
        with contextlib.suppress(LlmError):
            await self._started()

    async def _started(self) -> None:
        """Start the replicas once (concurrent callers wait for the same start); a failed start fails every call."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._starting)
        except Exception as exc:
            cause = getattr(exc, "cause", exc)  # a replica's own error, out of Ray's RayTaskError
            why = cause.message if isinstance(cause, LlmError) else f"{type(cause).__name__}: {cause}"
            message = f"starting the replicas of '{self.config.name}' on Ray failed: {why}"
            raise ProviderUnavailableError(message, provider=self.wrapped.provider, retryable=False) from None

    async def _start(self) -> None:
        import ray

        from llm_abstractions.local.local_llm import LocalLlm

        wrapped = self.wrapped
        gpus = ray.cluster_resources().get("GPU", 0)  # type: ignore[no-untyped-call]
        if self.placement.num_gpus > gpus:  # the replica could never be placed: say so instead of waiting for ever
            raise ProviderUnavailableError(
                f"a replica needs {self.placement.num_gpus:g} GPUs and the Ray cluster has {gpus:g} (set num_gpus, or"
                " add GPU machines to the cluster)",
                provider=wrapped.provider,
                retryable=False,
            )
        runners = {wrapped.runner_name: get_runner(wrapped.runner_name)} if isinstance(wrapped, LocalLlm) else {}
        actor_class = ray.remote(LlmReplica).options(
            num_gpus=self.placement.num_gpus,
            max_restarts=self.placement.max_restarts,
            max_task_retries=0,  # a call in flight on a dead replica is retried by the engine, on another one
            max_concurrency=1000,
        )
        actors: list[Any] = [
            actor_class.remote(type(wrapped), wrapped.config, runners) for _ in range(self.placement.replicas)
        ]
        self._replicas = [_Replica(index, actor) for index, actor in enumerate(actors)]
        self._pids = list(await asyncio.gather(*(actor.start.remote() for actor in actors)))

    def _pick(self) -> _Replica:
        """The replica that is up with the fewest calls in flight (the first of equals)."""
        up = [replica for replica in self._replicas if replica.up]
        if not up:
            raise ProviderUnavailableError(
                f"no replica of '{self.config.name}' is up (restarting)", provider=self.provider, retryable=True
            )
        return min(up, key=lambda replica: replica.in_flight)

    def _lost(self, replica: _Replica, exc: Exception) -> ReplicaLostError:
        """``replica`` died: no calls until it answers again (Ray restarts it); the error for the call it broke."""
        if replica.up:
            replica.up = False
            revival = asyncio.ensure_future(self._revive(replica))
            self._revivals.add(revival)
            revival.add_done_callback(self._revivals.discard)
        message = f"replica {replica.index} of '{self.config.name}' died ({type(exc).__name__}); retry on another"
        return ReplicaLostError(message, provider=self.wrapped.provider)

    async def _revive(self, replica: _Replica) -> None:
        import ray

        try:
            self._pids[replica.index] = await replica.actor.start.remote()
        except ray.exceptions.RayActorError:  # out of restarts: it stays down
            return
        replica.up = True

    async def stream_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> AsyncIterator[LlmChunk]:
        import ray

        await self._started()
        replica = self._pick()
        replica.in_flight += 1
        chunks = replica.actor.stream.options(num_returns="streaming").remote(messages, _per_call(options, overrides))
        finished = False
        try:
            async for ref in chunks:
                for chunk in await ref:
                    yield chunk
            finished = True
        except ray.exceptions.RayTaskError as exc:
            finished = True
            cause = exc.cause
            if isinstance(cause, LlmError):
                raise cause from None
            raise ProviderUnavailableError(
                f"{type(cause).__name__}: {cause}", provider=self.wrapped.provider, retryable=False
            ) from None
        except ray.exceptions.RayActorError as exc:
            finished = True
            raise self._lost(replica, exc) from None
        finally:
            replica.in_flight -= 1
            if not finished:  # closed early or cancelled: stop the replica's generation
                with contextlib.suppress(Exception):
                    ray.cancel(chunks)

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        wrapped = self.wrapped
        stream = self.stream_content_async(messages, options, **overrides)
        return await collect_stream(stream, provider=wrapped.provider, model=wrapped.model_name)

    async def aclose(self) -> None:
        """Stop the replicas (their models' memory is freed with their processes)."""
        if self._starting is None:
            return
        import ray

        for revival in list(self._revivals):
            revival.cancel()
        replicas, self._replicas, self._starting = self._replicas, [], None
        for replica in replicas:
            with contextlib.suppress(Exception):
                ray.kill(replica.actor, no_restart=True)

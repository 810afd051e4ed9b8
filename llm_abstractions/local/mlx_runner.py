"""``MlxRunner``: mlx-lm models served from one dedicated MLX thread, concurrent requests batched.

MLX is not thread-safe, so every MLX call of the process happens in one worker
thread that this module starts on the first load: it loads models, decodes, and
frees models at :meth:`MlxRunner.close` (model dropped, ``mx.synchronize()``, cache
cleared). The thread is never joined: a thread that has run MLX must not exit
before the process does. On this machine a joined mlx-lm thread made the process
abort at exit (``terminate called without an active exception``, from MLX's
thread-local state) in 10 of 12 runs, and so did a daemon thread woken during
interpreter shutdown (3 of 10), while a thread blocked waiting at exit never did.
So at exit an ``atexit`` hook frees what is still loaded and parks the thread in
a blocking wait before the interpreter shuts down.

Each model feeds its waiting requests into one mlx-lm ``BatchGenerator`` (continuous
batching: a request that arrives while others decode joins the batch at the next
step). New text goes to the callers through :class:`~llm_abstractions.local.mailbox.Reply`
streams, which never make the worker wait for an event loop. A caller that stops
reading (cancellation, early close) queues a cancel that removes its request from
the batch.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
from pydantic import BaseModel, ConfigDict, Field

from llm_abstractions.errors import InvalidRequestError, LlmError, ProviderUnavailableError
from llm_abstractions.local.local_llm import LOCAL_DEFAULT_OPTIONS
from llm_abstractions.local.mailbox import Reply
from llm_abstractions.local.models import resolve_model_path
from llm_abstractions.local.runner import LocalRunner, Prompt
from llm_abstractions.local.stops import StopScanner
from llm_abstractions.messages import GenerationOptions, LlmChunk, Usage

if TYPE_CHECKING:
    from llm_abstractions.local.mlx_sampling import SamplerCache

__all__ = ["MlxRunner", "MlxSettings", "MlxStats"]


@dataclass
class MlxStats:
    """Counters of one model, written by the MLX thread."""

    requests: int = 0
    """Requests admitted into the batch."""
    cancelled: int = 0
    """Requests removed from the batch because their caller stopped reading."""
    active: int = 0
    """Requests in the batch after the last step."""
    steps: int = 0
    """Decoding steps (one token for every sequence in the batch)."""
    generated_tokens: int = 0
    max_batch: int = 0
    """The most sequences decoded together in one step."""


@dataclass(eq=False)
class _Load:
    runner: MlxRunner
    path: Path
    generator_options: dict[str, Any]
    reply: Reply


@dataclass(eq=False)
class _Request:
    runner: MlxRunner
    prompt: Prompt
    options: GenerationOptions
    reply: Reply


@dataclass(eq=False)
class _Cancel:
    request: _Request


@dataclass(eq=False)
class _Close:
    runner: MlxRunner
    reply: Reply


class _Park:
    """Free everything and block forever: the last command, sent at interpreter exit."""


_Command = _Load | _Request | _Cancel | _Close | _Park


@dataclass(eq=False)
class _Active:
    request: _Request
    prompt_tokens: int
    detokenizer: Any
    stops: StopScanner
    generated: int = 0


class _Model:
    """A loaded model in the MLX thread: its batch generator and the requests in it."""

    def __init__(self, runner: MlxRunner, model: Any, tokenizer: Any, generator: Any) -> None:
        from llm_abstractions.local.mlx_sampling import SamplerCache

        self.runner = runner
        self.model = model
        self.tokenizer = tokenizer
        self.generator = generator
        self.samplers: SamplerCache = SamplerCache()
        self.active: dict[int, _Active] = {}
        self.uids: dict[_Request, int] = {}

    def admit(self, request: _Request) -> None:
        from llm_abstractions.local.mlx_sampling import logits_processors_for

        tokens = _encode(self.tokenizer, request.prompt)
        if not tokens:
            raise InvalidRequestError("the prompt is empty", provider=MlxRunner.name)
        options = request.options
        (uid,) = self.generator.insert(
            [tokens],
            max_tokens=[options.max_tokens or LOCAL_DEFAULT_OPTIONS.max_tokens],
            samplers=[self.samplers.sampler(options)],
            logits_processors=[logits_processors_for(options)],
        )
        self.active[uid] = _Active(request, len(tokens), self.tokenizer.detokenizer, StopScanner(options.stop))
        self.uids[request] = uid
        self.runner.stats.requests += 1

    def cancel(self, request: _Request) -> None:
        uid = self.uids.pop(request, None)
        if uid is not None:
            self.generator.remove([uid])
            del self.active[uid]
            self.runner.stats.cancelled += 1
            self.runner.stats.active = len(self.active)

    def fail_all(self, error: LlmError) -> None:
        for state in self.active.values():
            state.request.reply.finish(error)
        if self.active:
            with contextlib.suppress(Exception):  # the generator may be what failed
                self.generator.remove(list(self.active))
        self.active.clear()
        self.uids.clear()

    def step(self) -> None:
        """Decode one token for every sequence in the batch and queue the new text."""
        try:
            self._step()
        except Exception as exc:
            self.fail_all(_llm_error(exc))

    def _step(self) -> None:
        _, responses = self.generator.next()
        stats = self.runner.stats
        stats.steps += 1
        stats.generated_tokens += len(responses)
        stats.max_batch = max(stats.max_batch, len(responses))
        finished: list[tuple[_Active, LlmChunk]] = []
        stopped_early: list[int] = []
        for response in responses:
            state = self.active.get(response.uid)
            if state is None:
                continue
            last = self._emit(state, response)
            if last is not None:
                finished.append((state, last))
                del self.active[response.uid]
                del self.uids[state.request]
                if response.finish_reason is None:
                    stopped_early.append(response.uid)
        if stopped_early:
            self.generator.remove(stopped_early)
        stats.active = len(self.active)
        for state, last in finished:  # after the counters: a caller may read them as soon as it has its answer
            state.request.reply.finish(last)

    def _emit(self, state: _Active, response: Any) -> LlmChunk | None:
        """Queue the text of one new token; return the last chunk when the request is finished."""
        state.generated += 1
        if response.finish_reason != "stop":  # an end-of-sequence token is not text
            state.detokenizer.add_token(response.token)
        if response.finish_reason is not None:
            state.detokenizer.finalize()
        text, stopped = state.stops.feed(state.detokenizer.last_segment)
        if not stopped and response.finish_reason is None:
            if text:
                state.request.reply.post(text)
            return None
        if not stopped:
            text += state.stops.flush()
        return LlmChunk(
            text=text,
            finish_reason="stop" if stopped else response.finish_reason,
            usage=Usage(input_tokens=state.prompt_tokens, output_tokens=state.generated),
            model=self.runner.model,
        )

    def free(self) -> None:
        import mlx.core as mx

        stream = self.generator.stream
        self.generator.close()
        self.generator = self.model = self.tokenizer = None
        gc.collect()
        mx.synchronize(stream)
        mx.clear_cache()


class _MlxThread:
    """The process's one MLX thread: a daemon that serves every MLX model, never joined."""

    def __init__(self) -> None:
        self.commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self.models: dict[MlxRunner, _Model] = {}
        self.parked = threading.Event()
        self.thread = threading.Thread(target=self._run, name="mlx-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            busy = any(model.active for model in self.models.values())
            commands = [] if busy else [self.commands.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    commands.append(self.commands.get_nowait())
            for command in commands:
                if isinstance(command, _Park):
                    self._park()
                try:
                    self._handle(command)
                except Exception as exc:  # the thread must survive anything a command does
                    if not isinstance(command, _Cancel):
                        command.reply.finish(_llm_error(exc))
            for model in list(self.models.values()):
                if model.active:
                    model.step()
                    for request in [r for r in model.uids if r.reply.unreachable]:
                        model.cancel(request)

    def _park(self) -> NoReturn:
        for model in self.models.values():
            model.free()
        self.models.clear()
        forever = threading.Lock()
        forever.acquire()
        self.parked.set()
        while True:
            forever.acquire()  # never released: the thread waits here until the process ends

    def _handle(self, command: _Load | _Request | _Cancel | _Close) -> None:
        if isinstance(command, _Load):
            self.models[command.runner] = _load(command)
            command.reply.finish(True)
        elif isinstance(command, _Request):
            model = self.models.get(command.runner)
            if model is None:
                raise ProviderUnavailableError("the MLX model is not loaded", provider="mlx")
            model.admit(command)
        elif isinstance(command, _Cancel):
            model = self.models.get(command.request.runner)
            if model is not None:
                model.cancel(command.request)
        else:
            model = self.models.pop(command.runner, None)
            if model is not None:
                model.fail_all(ProviderUnavailableError("the MLX model was closed", provider="mlx"))
                model.free()
            command.reply.finish(True)


def _load(command: _Load) -> _Model:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import BatchGenerator

    try:
        loaded = load(str(command.path))
        model, tokenizer = loaded[0], loaded[1]
        generator = BatchGenerator(
            model,
            stop_tokens=[[token] for token in tokenizer.eos_token_ids],
            stream=mx.default_stream(mx.default_device()),
            **command.generator_options,
        )
    except Exception as exc:
        raise ProviderUnavailableError(f"loading failed: {exc}", provider="mlx", retryable=False) from exc
    return _Model(command.runner, model, tokenizer, generator)


_worker: _MlxThread | None = None
_worker_lock = threading.Lock()


def _mlx_thread() -> _MlxThread:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _MlxThread()
            atexit.register(_park_at_exit, _worker)
        return _worker


def _park_at_exit(worker: _MlxThread) -> None:
    """Free MLX models still loaded and leave the MLX thread blocked before the interpreter shuts down."""
    worker.commands.put(_Park())
    if worker.parked.wait(timeout=30.0):
        time.sleep(0.05)  # let the thread reach its blocking wait


class MlxSettings(BaseModel):
    """Device options of an MLX model: the keys an ``mlx`` agent accepts besides the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(default=32, gt=0)
    """Sequences decoded together; more concurrent tasks wait for a slot."""
    prefill_batch_size: int = Field(default=8, gt=0)
    """Prompts processed together."""
    prefill_step_size: int = Field(default=2048, gt=0)
    """Prompt tokens per forward pass."""
    max_kv_size: int | None = Field(default=None, gt=0)
    """Bound the KV cache (a rotating cache) to this many tokens."""


class MlxRunner(LocalRunner):
    """An mlx-lm model; its device options are :class:`MlxSettings`."""

    name = "mlx"

    def __init__(self) -> None:
        self.model: str | None = None
        self.stats = MlxStats()

    async def load(self, model: str, **device_options: Any) -> None:
        settings = MlxSettings.model_validate(device_options)
        path = resolve_model_path(model)
        self.model = model
        generator_options = {
            "completion_batch_size": settings.max_batch_size,
            "prefill_batch_size": settings.prefill_batch_size,
            "prefill_step_size": settings.prefill_step_size,
            "max_kv_size": settings.max_kv_size,
        }
        await self._call(lambda reply: _Load(self, path, generator_options, reply))

    async def stream(self, prompt: Prompt, options: GenerationOptions) -> AsyncGenerator[LlmChunk, None]:
        reply, receive = Reply.open()
        request = _Request(self, prompt, options, reply)
        worker = _mlx_thread()
        worker.commands.put(request)
        finished = False
        try:
            async with receive:
                async for item in receive:
                    if isinstance(item, LlmError):
                        finished = True
                        raise item
                    if isinstance(item, str):
                        yield LlmChunk(text=item)
                    elif isinstance(item, LlmChunk):
                        finished = True
                        yield item
        finally:
            if not finished:
                worker.commands.put(_Cancel(request))

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._call(lambda reply: _Close(self, reply))

    async def _call(self, command: Callable[[Reply], _Load | _Close]) -> None:
        """Send a load or close to the MLX thread and wait for its answer."""
        reply, receive = Reply.open()
        _mlx_thread().commands.put(command(reply))
        async with receive:
            outcome = await receive.receive()
        if isinstance(outcome, LlmError):
            raise outcome


def _encode(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of a plain prompt, or of chat messages through the chat template when there is one."""
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt))
    if tokenizer.has_chat_template:
        messages = [{"role": m.role, "content": m.content} for m in prompt]
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    return list(tokenizer.encode("\n\n".join(m.content for m in prompt)))


def _llm_error(exc: Exception) -> LlmError:
    if isinstance(exc, LlmError):
        return exc
    return LlmError(f"{type(exc).__name__}: {exc}", provider="mlx")

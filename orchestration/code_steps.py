"""Code steps: tasks that call a Python function instead of a model (``type: python``, ``call:``).

``call: "package.module:function"`` names a function of an importable module (the project file's
folder is put on ``sys.path`` while the project is validated and while it runs: :func:`import_path`);
in Python, ``AgentTask(id=..., call=function)`` passes the function itself. Validation imports the
module and checks that the attribute is callable, so a task file with code steps runs that code when
it is validated or run, as a Makefile does.

The function is called with one argument, a :class:`StepContext`: the run's ``inputs``, the results of
the task's ancestors (``tasks``: outputs, parsed values, statuses), the task's ``params``. An async
function is awaited on the event loop; a sync one runs in a worker thread (a task timeout then stops
waiting for it, but Python cannot stop the thread: it runs on until it returns). Its return value is the
task's output: a ``str`` (``None`` is ``""``), or with ``output_format: json`` any JSON-serialisable
value (checked against ``output_schema`` if given). An exception fails the task with ``code_error`` and
its message; :class:`RetryableStepError` (and any retryable :class:`~llm_abstractions.LlmError`) is
retried like a model call, with the task's ``retries`` and its agent's ``retry`` backoff.

Code steps never touch the model call chain: no client, no endpoint limits, no circuit breaker. They
count against ``max_concurrency``, and against ``limits.max_concurrent`` of their agent: a ``type:
python`` agent (the built-in ``python`` agent when the task names none).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio

from agent_registry import RetrySettings
from llm_abstractions import ErrorType, LlmError, redact
from orchestration.models import (
    AttemptRecord,
    ErrorInfo,
    ExecutionResult,
    ExecutionStatus,
    OutputFormat,
    StepFunction,
    utc_now,
)
from orchestration.templates import template_names

if TYPE_CHECKING:
    from orchestration.project import CompiledTask

__all__ = [
    "CALL_PATTERN",
    "PYTHON_AGENT",
    "CodeStep",
    "RemoteStepError",
    "RetryableStepError",
    "StepContext",
    "StepImportError",
    "StepInvoker",
    "call_ref",
    "check_call",
    "describe_error",
    "import_path",
    "invoke_here",
    "resolve_call",
    "run_step",
    "step_context",
]

PYTHON_AGENT = "python"
"""The agent (and agent type) of code steps: the built-in one, used by python tasks that name none."""

CALL_PATTERN = re.compile(r"\A[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")
"""``package.module:function`` (or ``module:Class.method``)."""


class RetryableStepError(LlmError):
    """Raise it from a code step to have the step called again (with the task's ``retries`` and its agent's
    ``retry`` backoff; ``retry_after``: seconds to wait at least). Any other exception fails the task at once."""

    type_name = ErrorType.CODE_ERROR
    default_retryable = True


class RemoteStepError(LlmError):
    """A code step's function raised where it ran (a Ray worker); the message tells the exception as
    :func:`describe_error` does."""

    type_name = ErrorType.CODE_ERROR


def describe_error(exc: BaseException) -> str:
    """How a code step's exception is told in its result: ``Type: message``."""
    if isinstance(exc, RemoteStepError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


class StepImportError(ValueError):
    """A code step's ``call`` cannot be imported, or is not callable."""


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a code step's function is called with."""

    task_id: str
    inputs: Mapping[str, Any]
    """The run's inputs (read-only)."""
    tasks: Mapping[str, ExecutionResult]
    """The results of the task's ancestors that have ended, by task id (``.output``, ``.parsed``, ``.status``)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The task's ``params`` (read-only)."""
    item: Any = None
    """The item of a mapped task (``None`` otherwise)."""
    index: int | None = None
    """The index of :attr:`item` (``None`` outside a mapped task)."""

    @property
    def outputs(self) -> dict[str, str | None]:
        """Each ancestor's output, by task id."""
        return {task_id: result.output for task_id, result in self.tasks.items()}

    @property
    def parsed(self) -> dict[str, Any]:
        """Each ancestor's parsed value (json tasks; ``None`` for others), by task id."""
        return {task_id: result.parsed for task_id, result in self.tasks.items()}


@dataclass(frozen=True, slots=True)
class CodeStep:
    """A compiled code step: its function and what it is given."""

    ref: str
    """``module:function`` as written, or the module and qualified name of a function passed in."""
    function: StepFunction | None
    """``None`` when the project was compiled without importing (``check_agents=False``)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    upstream: frozenset[str] = frozenset()
    """The task's ancestors: the results its context holds."""

    @property
    def is_async(self) -> bool:
        function = self.function
        return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
            getattr(function, "__call__", None)  # noqa: B004 (an object with an async __call__)
        )


def call_ref(call: str | StepFunction) -> str:
    """How a ``call`` is named in messages and fingerprints: the string, or the function's module and name."""
    if isinstance(call, str):
        return call
    module = getattr(call, "__module__", None) or "?"
    return f"{module}:{getattr(call, '__qualname__', type(call).__qualname__)}"


def check_call(ref: str) -> None:
    """Raise :class:`StepImportError` unless ``ref`` is written ``package.module:function``."""
    if not CALL_PATTERN.match(ref):
        raise StepImportError(f"call must be 'package.module:function' (a module path, a colon, a name), not {ref!r}")


def resolve_call(ref: str) -> StepFunction:
    """Import ``module:attribute`` and return it; raise :class:`StepImportError` saying what is wrong."""
    check_call(ref)
    module_name, _, attribute = ref.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = "the project file's folder and the installed packages"
        raise StepImportError(f"cannot import module '{module_name}': {exc} (modules are found in {where})") from None
    except (Exception, SystemExit) as exc:  # the module's own code failed
        raise StepImportError(f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise StepImportError(f"module '{module_name}' has no attribute '{attribute}'") from None
    if not callable(value):
        raise StepImportError(f"'{ref}' is not callable (it is a {type(value).__name__})")
    function: StepFunction = value
    return function


_path_lock = threading.Lock()
_path_users: dict[str, tuple[int, bool]] = {}
"""Folders :func:`import_path` put on ``sys.path``: how many users each has, and whether it added the entry."""


@contextmanager
def import_path(folder: Path) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` while the block runs (unless it is there already), then take it off
    again; concurrent users of the same folder share the entry."""
    entry = str(folder)
    with _path_lock:
        users, added = _path_users.get(entry, (0, False))
        if users == 0:
            added = entry not in sys.path
            if added:
                sys.path.insert(0, entry)
                importlib.invalidate_caches()
        _path_users[entry] = (users + 1, added)
    try:
        yield
    finally:
        with _path_lock:
            users, added = _path_users.pop(entry)
            if users > 1:
                _path_users[entry] = (users - 1, added)
            elif added and entry in sys.path:
                sys.path.remove(entry)


class _OutputError(Exception):
    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _output(task: CompiledTask, value: Any) -> tuple[str, Any]:
    """The task's output text (and parsed value) for a function's return ``value``."""
    if task.task.output_format is OutputFormat.JSON:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise _OutputError(ErrorType.CODE_ERROR, f"the step returned a value that is not JSON ({exc})") from None
        from llm_abstractions.structured import parse_json_answer

        try:
            return text, parse_json_answer(text, task.task.output_schema)
        except ValueError as exc:
            raise _OutputError(ErrorType.INVALID_OUTPUT, f"the step's return value is invalid: {exc}") from None
    if value is None:
        return "", None
    if isinstance(value, str):
        return value, None
    message = f"the step returned a {type(value).__name__}, not text: return a str, or set output_format: json"
    raise _OutputError(ErrorType.CODE_ERROR, message)


StepInvoker = Callable[["CompiledTask", StepContext], Awaitable[Any]]
"""Calls a code step's function with its context, somewhere: in this process (:func:`invoke_here`) or on Ray."""


async def invoke_here(task: CompiledTask, context: StepContext) -> Any:
    """Call ``task``'s function in this process: an async one on the event loop, a sync one in a worker thread."""
    step = task.step
    assert step is not None
    function = step.function
    assert function is not None, "a code step compiled without importing its function cannot run"
    if step.is_async:
        return await function(context)
    value = await anyio.to_thread.run_sync(function, context, abandon_on_cancel=True)
    if inspect.isawaitable(value):  # a sync callable that returned an awaitable (a partial of an async function)
        value = await value
    return value


async def _attempt(task: CompiledTask, invoke: StepInvoker, context: StepContext, attempts: list[AttemptRecord]) -> Any:
    """One call of the step's function, appended to ``attempts``."""
    start = time.perf_counter()
    try:
        value = await invoke(task, context)
    except Exception:
        attempts.append(
            AttemptRecord(agent=task.agent, error_type=ErrorType.CODE_ERROR, duration_s=time.perf_counter() - start)
        )
        raise
    attempts.append(AttemptRecord(agent=task.agent, error_type=None, duration_s=time.perf_counter() - start))
    return value


def _retryable(exc: LlmError) -> bool:
    return exc.retryable


async def _call(
    task: CompiledTask,
    invoke: StepInvoker,
    context: StepContext,
    settings: RetrySettings,
    attempts: list[AttemptRecord],
) -> Any:
    """The function's return value, retried after a :class:`RetryableStepError` as the task's retries allow."""
    started = time.monotonic()
    try:
        return await _attempt(task, invoke, context, attempts)
    except LlmError as exc:
        if task.retries == 0 or not exc.retryable:
            raise
        error = exc
    from orchestration.retry import retry_after_failure  # tenacity is imported on the first retry

    return await retry_after_failure(
        error,
        partial(_attempt, task, invoke, context, attempts),
        retries=task.retries,
        settings=settings,
        retryable=_retryable,
        started=started,
    )


def step_context(task: CompiledTask, inputs: Mapping[str, Any], upstream: Mapping[str, ExecutionResult]) -> StepContext:
    """The context ``task``'s function is called with: read-only inputs and params, its ancestors' results."""
    step = task.step
    assert step is not None
    seen = task.upstream(upstream)  # an instance's per-item dependencies: their instances of its item
    ended = {task_id: seen[task_id] for task_id in step.upstream if task_id in seen}
    names = template_names(MappingProxyType(dict(inputs)), MappingProxyType(ended), task.variables)
    return StepContext(task.id, params=MappingProxyType(dict(step.params)), **names)


async def run_step(
    task: CompiledTask,
    inputs: Mapping[str, Any],
    upstream: Mapping[str, ExecutionResult],
    *,
    started_at: datetime,
    settings: RetrySettings,
    invoke: StepInvoker = invoke_here,
) -> ExecutionResult:
    """Call ``task``'s function (a code step) to a final result; never raises except on cancellation.

    ``invoke`` makes each call (:func:`invoke_here`, or Ray's :meth:`~orchestration.remote_steps.RemoteSteps.invoke`);
    retries, the timeout and the result are made here either way."""
    step = task.step
    assert step is not None
    start = time.perf_counter()
    attempts: list[AttemptRecord] = []
    error: ErrorInfo | None = None
    output: str | None = None
    parsed: Any = None
    context = step_context(task, inputs, upstream)
    try:
        with anyio.move_on_after(task.timeout_s) as deadline:
            value = await _call(task, invoke, context, settings, attempts)
        if deadline.cancelled_caught:
            error = ErrorInfo(type=ErrorType.TIMEOUT, message=f"task timed out after {task.timeout_s} s")
        else:
            output, parsed = _output(task, value)
    except _OutputError as exc:
        error = ErrorInfo(type=exc.error_type, message=redact(exc.message))
    except Exception as exc:
        error = ErrorInfo(type=ErrorType.CODE_ERROR, message=redact(describe_error(exc)))
    return ExecutionResult(
        task_id=task.id,
        status=ExecutionStatus.SUCCESS if error is None else ExecutionStatus.FAILED,
        output=output,
        parsed=parsed,
        error=error,
        agent=task.agent,
        provider=PYTHON_AGENT,
        attempts=len(attempts),
        attempt_log=attempts,
        started_at=started_at,
        completed_at=utc_now(),
        duration_s=time.perf_counter() - start,
        metadata=task.task.metadata,
    )

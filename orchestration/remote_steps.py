"""Code steps as Ray tasks: a step's function called in a Ray worker with the resources the step declares.

The driver keeps everything else of a step (:func:`orchestration.code_steps.run_step`): its retries after a
:class:`~orchestration.code_steps.RetryableStepError`, its timeout, its result and its record in the store. The worker
only calls the function: it imports ``module:function`` with the project's folder first on ``sys.path`` (the folder
must be readable at the same path on the cluster's machines, or shipped with Ray's ``runtime_env``), runs an async
function with ``asyncio.run`` (Ray tasks cannot be ``async def``), and sends back the return value or the error.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine, Mapping
from contextlib import nullcontext
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from llm_abstractions import LlmError
from orchestration.code_steps import RemoteStepError, StepContext, describe_error, import_path, resolve_call
from orchestration.models import StepFunction
from orchestration.ray_cluster import import_ray

if TYPE_CHECKING:
    from orchestration.project import CompiledTask

__all__ = ["RemoteSteps"]

_GIB = 2**30


async def _awaited(value: Any) -> Any:
    return await value


def _call_in_worker(call: str | StepFunction, folder: str | None, context: Mapping[str, Any]) -> Any:
    """Run in a Ray worker: the step's return value; an error comes back as an ``LlmError`` (picklable)."""
    try:
        with import_path(Path(folder)) if folder is not None else nullcontext():
            function = resolve_call(call) if isinstance(call, str) else call
            value = function(_step_context(context))
            if inspect.isawaitable(value):
                coroutine: Coroutine[Any, Any, Any] = value if inspect.iscoroutine(value) else _awaited(value)
                value = asyncio.run(coroutine)
            return value
    except LlmError:
        raise
    except Exception as exc:
        raise RemoteStepError(describe_error(exc)) from None


def _step_context(fields: Mapping[str, Any]) -> StepContext:
    read_only = {key: MappingProxyType(fields[key]) for key in ("inputs", "tasks", "params")}
    return StepContext(fields["task_id"], **read_only, item=fields["item"], index=fields["index"])


class RemoteSteps:
    """Calls code steps' functions as Ray tasks (one per attempt) on the connected cluster."""

    def __init__(self, folder: Path | None) -> None:
        ray = import_ray()
        self._ray = ray
        self._folder = None if folder is None else str(folder)
        self._task = ray.remote(_call_in_worker)

    @staticmethod
    def resources(task: CompiledTask) -> dict[str, Any]:
        """Ray's options for ``task``'s Ray tasks (``num_cpus``, ``memory`` in bytes)."""
        declared = task.task.resources
        if declared is None:
            return {}
        options: dict[str, Any] = {"num_cpus": declared.num_cpus}
        if declared.memory_gb is not None:
            options["memory"] = int(declared.memory_gb * _GIB)
        return options

    async def invoke(self, task: CompiledTask, context: StepContext) -> Any:
        """``task``'s function called with ``context`` in a Ray worker; its return value, or its error raised here.

        Cancelling the call (the task's timeout, the run's end) cancels the Ray task."""
        step = task.step
        assert step is not None and step.function is not None
        call: str | StepFunction = task.task.call if isinstance(task.task.call, str) else step.function
        fields = {
            "task_id": context.task_id,
            "inputs": dict(context.inputs),
            "tasks": dict(context.tasks),
            "params": dict(context.params),
            "item": context.item,
            "index": context.index,
        }
        ref = self._task.options(**self.resources(task)).remote(call, self._folder, fields)
        try:
            return await ref
        except self._ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, LlmError):
                raise cause from None
            raise RemoteStepError(describe_error(cause if isinstance(cause, Exception) else exc)) from None
        except BaseException:
            self._ray.cancel(ref)
            raise

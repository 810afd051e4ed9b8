"""Local models in-process: the ``LocalRunner`` interface, its registry, the shared runner pool.

Importing this package imports no runtime; MLX and vLLM load on first use.
"""

from llm_abstractions.local.local_llm import LOCAL_DEFAULT_OPTIONS, LocalLlm
from llm_abstractions.local.pool import (
    LoadEvent,
    LoadListener,
    RunnerPool,
    add_load_listener,
    remove_load_listener,
    runner_pool,
)
from llm_abstractions.local.registry import (
    UnknownRunnerError,
    get_runner,
    known_runners,
    register_runner,
    unregister_runner,
)
from llm_abstractions.local.runner import LocalRunner, Prompt

__all__ = [
    "LOCAL_DEFAULT_OPTIONS",
    "LoadEvent",
    "LoadListener",
    "LocalLlm",
    "LocalRunner",
    "Prompt",
    "RunnerPool",
    "UnknownRunnerError",
    "add_load_listener",
    "get_runner",
    "known_runners",
    "register_runner",
    "remove_load_listener",
    "runner_pool",
    "unregister_runner",
]

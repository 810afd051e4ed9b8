"""Runner registry: name -> ``LocalRunner`` subclass, imported lazily.

The built-in runners are those of the local providers in
:data:`~llm_abstractions.factory.BUILTIN_PROVIDERS`, under the provider's key. They are
registered by dotted path, so importing this module imports no runtime. Third-party
packages add runners through the entry-point group ``orchestrate.runners``
(name = runner key, value = ``"module:Class"``).
"""

from __future__ import annotations

from llm_abstractions.factory import BUILTIN_PROVIDERS
from llm_abstractions.lazy_registry import LazyRegistry
from llm_abstractions.local.runner import LocalRunner

__all__ = [
    "ENTRY_POINT_GROUP",
    "UnknownRunnerError",
    "get_runner",
    "known_runners",
    "register_runner",
    "unregister_runner",
]

ENTRY_POINT_GROUP = "orchestrate.runners"


class UnknownRunnerError(LookupError):
    """No runner is registered under this name."""


_runners: LazyRegistry[LocalRunner] = LazyRegistry(
    LocalRunner,
    ENTRY_POINT_GROUP,
    {key: provider.runner for key, provider in BUILTIN_PROVIDERS.items() if provider.runner is not None},
    what="local runner",
    error=UnknownRunnerError,
)


def register_runner(name: str, target: str | type[LocalRunner]) -> None:
    """Register a runner class, or its ``"module:Class"`` path for lazy import."""
    _runners.register(name, target)


def unregister_runner(name: str) -> None:
    """Forget a runner (no error if it is unknown)."""
    _runners.unregister(name)


def known_runners() -> list[str]:
    """Every runner name that can be resolved."""
    return _runners.known()


def get_runner(name: str) -> type[LocalRunner]:
    """Resolve (and cache) the class of a runner; imports its module, not its runtime."""
    return _runners.get(name)

"""Runner registry: name -> ``LocalRunner`` subclass, imported lazily.

Built-in runners are registered by dotted path, so importing this module imports
no runtime. Third-party packages add runners through the entry-point group
``orchestrate.runners`` (name = runner key, value = ``"module:Class"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from llm_abstractions.local.runner import LocalRunner

__all__ = ["ENTRY_POINT_GROUP", "UnknownRunnerError", "get_runner", "known_runners", "register_runner"]

ENTRY_POINT_GROUP = "orchestrate.runners"

_BUILTIN: dict[str, str] = {
    "mlx": "llm_abstractions.local.mlx_runner:MlxRunner",
    "vllm": "llm_abstractions.local.vllm_runner:VllmRunner",
}

_registry: dict[str, str | type[LocalRunner]] = dict(_BUILTIN)
_entry_points_loaded = False


class UnknownRunnerError(LookupError):
    """No runner is registered under this name."""


def register_runner(name: str, target: str | type[LocalRunner]) -> None:
    """Register a runner class, or its ``"module:Class"`` path for lazy import."""
    _registry[name] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _registry.setdefault(ep.name, ep.value)


def known_runners() -> list[str]:
    """Every runner name that can be resolved."""
    _load_entry_points()
    return sorted(_registry)


def get_runner(name: str) -> type[LocalRunner]:
    """Resolve (and cache) the class of a runner; imports its module, not its runtime."""
    target = _registry.get(name)
    if target is None:
        _load_entry_points()
        target = _registry.get(name)
    if target is None:
        raise UnknownRunnerError(f"unknown local runner {name!r}; known: {', '.join(known_runners())}")
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, LocalRunner)):
            raise TypeError(f"{target} is not a LocalRunner subclass")
        _registry[name] = cls
        return cls
    return target

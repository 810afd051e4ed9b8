"""A name -> class registry whose classes are imported on first use.

Entries are classes or ``"module:Class"`` paths; importing a registry imports none of
them. Third-party packages add entries through an entry-point group (name = key,
value = ``"module:Class"``), read once, on the first lookup that needs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Generic, TypeVar, cast

__all__ = ["LazyRegistry"]

T = TypeVar("T")


class LazyRegistry(Generic[T]):
    """Classes of kind ``base`` by name, resolved lazily and cached.

    ``base`` may be abstract (``BaseLlm``): it is only used to check what a path imports.
    """

    def __init__(
        self,
        base: type[Any],
        group: str,
        builtin: Mapping[str, str],
        *,
        what: str,
        error: type[LookupError],
    ) -> None:
        self.base = base
        self.group = group
        """The entry-point group third-party packages register under."""
        self._entries: dict[str, str | type[T]] = dict(builtin)
        self._what = what
        self._error = error
        self._entry_points_loaded = False

    def register(self, name: str, target: str | type[T]) -> None:
        """Register a class, or its ``"module:Class"`` path for lazy import."""
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        """Forget ``name`` (no error if it is unknown)."""
        self._entries.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib.metadata import entry_points  # costly to import, and only needed on a miss

        for ep in entry_points(group=self.group):
            self._entries.setdefault(ep.name, ep.value)

    def known(self) -> list[str]:
        """Every name that can be resolved."""
        self._load_entry_points()
        return sorted(self._entries)

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; imports its module on first use."""
        target = self._entries.get(name)
        if target is None:
            self._load_entry_points()
            target = self._entries.get(name)
        if target is None:
            raise self._error(f"unknown {self._what} {name!r}; known: {', '.join(self.known())}")
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            cls = getattr(importlib.import_module(module_name), attr)
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{target} is not a {self.base.__name__} subclass")
            self._entries[name] = cls
            return cast(type[T], cls)
        return target

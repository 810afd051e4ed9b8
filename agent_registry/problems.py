"""Pydantic validation errors as our messages: the field as written in the file, and what is allowed.

The one place that reads pydantic's errors, for task files, defaults and agents alike. Pydantic's
locations name the union member that was tried (``latency_ms.constrained-float``,
``tuple[constrained-float, constrained-float]``); :func:`field_problems` keeps only the keys
and indexes present in the data, keeps the member that got furthest into the value, says
each field once, and drops pydantic's prefixes (``Value error, ``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["FieldProblem", "field_problems"]

Location = tuple[str | int, ...]

_PREFIXES = ("Value error, ", "Assertion failed, ")
_NOT_GIVEN: Any = object()


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: where it is in the data (as written) and what is wrong."""

    loc: Location
    message: str

    @property
    def field(self) -> str | None:
        """The dotted field, e.g. ``options.temperature`` or ``latency_ms.0``; ``None``: the whole value."""
        return ".".join(str(part) for part in self.loc) or None


def field_problems(
    exc: ValidationError,
    data: Any = _NOT_GIVEN,
    model: type[BaseModel] | None = None,
    also_allowed: Collection[str] = (),
    unknown: str = "field",
) -> list[FieldProblem]:
    """Our messages for ``exc``, raised validating ``data`` (when given) with ``model`` (when given).

    ``model`` lets an unknown key's message list the allowed ones; ``also_allowed``: keys accepted
    at the top level besides the model's (an agent's common settings, for its provider's);
    ``unknown``: what a key is called (``unknown field``, ``unknown setting``).
    """
    found: list[tuple[Location, bool, str, str]] = []  # (location, a union member was named, type, message)
    for error in exc.errors(include_url=False):
        loc, branched = _as_written(tuple(error["loc"]), data, error["type"] == "missing")
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            allowed = [*(_allowed_keys(model, loc[:-1]) if model else []), *also_allowed]
            message = f"unknown {unknown}; allowed: {', '.join(allowed)}" if allowed else f"unknown {unknown}"
        for prefix in _PREFIXES:
            message = message.removeprefix(prefix)
        found.append((loc, branched, error["type"], message))
    deeper = {loc[:end] for loc, branched, _, _ in found if branched for end in range(len(loc))}
    merged: dict[Location, list[tuple[str, str]]] = {}
    for loc, branched, kind, message in found:
        if not (branched and loc in deeper):  # a union member that got further into the value says more
            merged.setdefault(loc, []).append((kind, message))
    problems = []
    for loc, errors in merged.items():
        if any(not _wrong_kind(kind) for kind, _ in errors):
            errors = [(kind, message) for kind, message in errors if not _wrong_kind(kind)]
        messages = list(dict.fromkeys(message for _, message in errors))
        problems.append(FieldProblem(loc, "; or ".join(messages)))
    return problems


def _wrong_kind(error_type: str) -> bool:
    """An error of a value of the wrong kind (a union member that does not apply), not of a bad value."""
    return error_type.endswith(("_type", "_parsing")) or error_type == "model_attributes_type"


def _as_written(loc: Location, data: Any, missing: bool) -> tuple[Location, bool]:
    """``loc`` without the parts that are not keys or indexes in ``data`` (the last one too if it is
    ``missing``); whether any part was dropped."""
    if data is _NOT_GIVEN:
        return loc, False
    kept: list[str | int] = []
    value = data
    for position, part in enumerate(loc):
        in_list = isinstance(value, list | tuple) and isinstance(part, int) and 0 <= part < len(value)
        if in_list or (isinstance(value, Mapping) and part in value):
            value = value[part]
        elif not (missing and position == len(loc) - 1):
            continue
        kept.append(part)
    return tuple(kept), len(kept) < len(loc)


def _allowed_keys(model: type[BaseModel], loc: Location) -> list[str]:
    """The keys of the model found at ``loc`` inside ``model`` (none if there is no model there)."""
    annotation: Any = model
    for part in loc:
        annotation = _inside(annotation, part)
    cls = _model_in(annotation)
    if cls is None:
        return []
    return [info.alias or name for name, info in cls.model_fields.items()]


def _inside(annotation: Any, part: str | int) -> Any:
    """The annotation of ``part`` (a field, key or index) inside a value of ``annotation``."""
    cls = _model_in(annotation)
    if cls is not None:
        for name, info in cls.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    for arg in reversed(typing.get_args(annotation)):  # dict[K, V], list[V], tuple[V, ...]: V
        if arg is not Ellipsis:
            return arg
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class that ``annotation`` is, or is one of (``Model | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (cls := _model_in(arg)) is not None:
                return cls
    return None

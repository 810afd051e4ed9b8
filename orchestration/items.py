"""The items of a mapped task (``for_each``): item files, keys, instance ids.

An input a ``for_each`` reads is a list, or the path of a file of items relative to the project file's folder
(never outside it): ``.jsonl`` (a JSON value per line, blank lines skipped), ``.json`` (an array) or ``.csv``
(a row per item, as a mapping of the header's names to the row's texts). A mapped task's instance of the
item with key ``k`` is ``<task id>[k]``: task ids cannot hold ``[``, so instance ids never meet task ids.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ITEM_SUFFIXES",
    "Instance",
    "ItemsError",
    "instance_id",
    "item_file",
    "kind_of",
    "mapped_task_of",
    "read_items",
    "unique_keys",
]

ITEM_SUFFIXES = (".jsonl", ".json", ".csv")
"""The files an input of items may name."""


class ItemsError(ValueError):
    """A mapped task's items cannot be read: a missing or malformed file, a value that is not a list, keys
    missing or repeated."""


@dataclass(frozen=True, slots=True)
class Instance:
    """What makes an instance of a mapped task its own: its item, its place among the items and its key."""

    index: int
    """The item's place in the list (from 0)."""
    key: str
    """Its key: the ``key`` template rendered with the item, else the index."""
    item: Any


def instance_id(task_id: str, key: str) -> str:
    """The id of the instance of ``task_id`` with ``key``: ``classify[17]``."""
    return f"{task_id}[{key}]"


def mapped_task_of(task_id: str) -> str | None:
    """The mapped task an instance id belongs to (``classify`` for ``classify[17]``); ``None`` for a task id."""
    at = task_id.find("[")
    return task_id[:at] if at > 0 and task_id.endswith("]") else None


def item_file(value: str, folder: Path) -> Path:
    """The file of items ``value`` names, relative to ``folder``; raise :class:`ItemsError` when it leads outside
    ``folder``, is not a ``.jsonl``, ``.json`` or ``.csv`` file, or does not exist."""
    path = Path(value).expanduser()
    if path.suffix.lower() not in ITEM_SUFFIXES:
        raise ItemsError(f"'{value}' is not a list, nor a .jsonl, .json or .csv file of items")
    resolved = (folder / path).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise ItemsError(f"'{value}' is outside the project's folder ({folder}): items are read only inside it")
    if not resolved.is_file():
        raise ItemsError(f"no file of items '{value}' (looked for {resolved})")
    return resolved


def read_items(path: Path) -> list[Any]:
    """The items of a ``.jsonl``, ``.json`` or ``.csv`` file; raise :class:`ItemsError` saying what and where."""
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8", newline="" if suffix == ".csv" else None) as handle:
            if suffix == ".jsonl":
                return _jsonl(handle, path.name)
            if suffix == ".csv":
                return [dict(row) for row in csv.DictReader(handle)]
            try:
                value = json.load(handle)
            except json.JSONDecodeError as exc:
                raise ItemsError(f"{path.name} line {exc.lineno}: not JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ItemsError(f"{path.name}: {exc}") from None
    if not isinstance(value, list):
        raise ItemsError(f"{path.name} holds a JSON {_kind(value)}, not an array of items")
    return value


def _jsonl(lines: Iterable[str], name: str) -> list[Any]:
    items = []
    loads = json.loads
    for number, line in enumerate(lines, 1):
        if line.isspace() or not line:
            continue
        try:
            items.append(loads(line))
        except json.JSONDecodeError as exc:
            raise ItemsError(f"{name} line {number}: not JSON ({exc.msg})") from None
    return items


def unique_keys(keys: Sequence[str]) -> None:
    """Raise :class:`ItemsError` naming the first key two items share, or an empty one."""
    seen: dict[str, int] = {}
    for index, key in enumerate(keys):
        if not key:
            raise ItemsError(f"the key of item {index} is empty")
        first = seen.setdefault(key, index)
        if first != index:
            raise ItemsError(f"items {first} and {index} have the same key '{key}': keys must be unique")


def _kind(value: Any) -> str:
    """A JSON value's kind, in JSON's words."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def kind_of(value: Any) -> str:
    """A value's kind in JSON's words (``object``, ``string``...), for messages."""
    return "array" if isinstance(value, list | tuple) else _kind(value)

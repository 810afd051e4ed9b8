"""Read YAML, TOML or JSON files into plain data, with line numbers where the format gives them.

Files are refused, with a message, when they could make reading them expensive:

- over :data:`MAX_FILE_BYTES` bytes;
- YAML whose aliases expand it to more than :data:`MAX_YAML_NODES` nodes, or to more than
  :data:`MAX_ALIAS_FACTOR` times the nodes written in the file if that is more ("billion
  laughs": every use of an alias counts the whole node it names);
- YAML nested more than :data:`MAX_YAML_DEPTH` levels deep.

YAML is read from the parser's events in one pass that builds the data, resolving
scalars exactly as PyYAML's safe loader does; files with merge keys (``<<``) or tagged
collections (``!!set``...) are then loaded by PyYAML itself. Line numbers are only
worked out when a message needs one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_ALIAS_FACTOR",
    "MAX_FILE_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "FileFormatError",
    "StructuredFile",
    "read_structured_file",
]

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest file read: 64 MiB."""
MAX_YAML_NODES = 1_000_000
"""Nodes a YAML file may expand to with its aliases, whatever its size."""
MAX_ALIAS_FACTOR = 10
"""A YAML file may also expand to this many times the nodes written in it."""
MAX_YAML_DEPTH = 200
"""Deepest nesting of mappings and lists in a YAML file."""

Path_ = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "binary", "timestamp")
)
_PLAIN_COLLECTIONS = (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_NO_KEY = object()


class FileFormatError(ValueError):
    """The file cannot be read or does not parse."""

    def __init__(self, path: Path, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.reason = message


@dataclass
class StructuredFile:
    """Parsed content of a file and, for YAML, the line of each key and list item."""

    path: Path
    data: Any
    yaml_text: str | None = field(default=None, repr=False)
    """The YAML source, parsed again for line numbers the first time a message needs one."""
    _lines: Any = field(default=_NO_KEY, init=False, repr=False)

    def line_of(self, location: Path_) -> int | None:
        """The line of ``location`` or of its closest parent that has one."""
        if self.yaml_text is None:
            return None
        if self._lines is _NO_KEY:
            self._lines = _line_tree(self.yaml_text)
        node, line = self._lines, None
        for part in location:
            if isinstance(node, dict):
                entry = node.get(str(part))
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                entry = node[part]
            else:
                break
            if entry is None:
                break
            line, node = entry
        return line


def _loader(text: str) -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)


def _build_yaml(path: Path, loader: Any) -> tuple[Any, bool]:
    """The document's data from ``loader``'s events, and whether it needs PyYAML's own loader.

    Aliases share the object of their anchor (as in PyYAML); the nodes they stand for are
    counted, and the file refused past the limits. One loop with the open collection in
    local variables: it runs once per event of files of millions of events.
    """
    from yaml import events
    from yaml.nodes import ScalarNode

    scalar_event, alias_event = events.ScalarEvent, events.AliasEvent
    map_start, seq_start = events.MappingStartEvent, events.SequenceStartEvent
    ends = (events.MappingEndEvent, events.SequenceEndEvent)
    get_event, resolve, constructors = loader.get_event, loader.resolve, loader.yaml_constructors
    resolved_starts = loader.yaml_implicit_resolvers.keys()  # first characters of plain scalars that may not be text
    plain: dict[str, Any] = {}  # plain scalars that may not be text, as constructed (all immutable)
    pyyaml_tags: list[str] = []
    anchors: dict[str, tuple[Any, int | None]] = {}
    stack: list[tuple[Any, bool, Any, int, str | None]] = []  # the enclosing collections, saved
    container: Any = None  # the open collection, with what follows
    is_list, key, nodes, anchor = False, _NO_KEY, 0, None
    data: Any = None
    written, documents = 0, 0

    def fail(message: str, event: Any) -> FileFormatError:
        return FileFormatError(path, message, event.start_mark.line + 1)

    def construct(tag: str, event: Any) -> Any:
        """A scalar of a tag other than text; one that PyYAML's loader must handle (``<<``...) stays text."""
        if tag in _SCALAR_TAGS:
            return constructors[tag](
                loader, ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
            )
        if tag != _STR:
            pyyaml_tags.append(tag)
        return event.value

    while (event := get_event()) is not None:
        kind = event.__class__
        obj: Any
        if kind is scalar_event:
            written += 1
            obj, tag = event.value, event.tag
            if tag is None and event.implicit[0]:  # a plain scalar: its text says what it is
                if obj[:1] in resolved_starts:
                    found = plain.get(obj, _NO_KEY)
                    if found is _NO_KEY:
                        found = plain[obj] = construct(resolve(ScalarNode, obj, (True, False)), event)
                    obj = found
            elif tag is not None and tag != "!" and tag != _STR:
                obj = construct(tag, event)
            if event.anchor:
                anchors[event.anchor] = (obj, 1)
            if container is None:
                data = obj
            elif is_list:
                container.append(obj)
            elif key is _NO_KEY:
                key = obj
            else:
                container[key] = obj
                key = _NO_KEY
            nodes += 1
            continue
        if kind is map_start or kind is seq_start:
            written += 1
            if len(stack) >= MAX_YAML_DEPTH:
                raise fail(f"nested more than {MAX_YAML_DEPTH} levels deep", event)
            if event.tag not in _PLAIN_COLLECTIONS:
                pyyaml_tags.append(event.tag)
            stack.append((container, is_list, key, nodes, anchor))
            is_list = kind is seq_start
            container, key, nodes, anchor = [] if is_list else {}, _NO_KEY, 1, event.anchor
            if anchor:
                anchors[anchor] = (container, None)
            continue
        if kind in ends:
            obj, size = container, nodes
            if anchor:
                anchors[anchor] = (obj, size)
            container, is_list, key, nodes, anchor = stack.pop()
        elif kind is alias_event:
            obj, alias_size = anchors.get(event.anchor) or (None, -1)
            if alias_size == -1:
                raise fail(f"invalid YAML: found undefined alias {event.anchor!r}", event)
            if alias_size is None:
                raise fail(f"invalid YAML: alias {event.anchor!r} is used inside the node it names", event)
            size = alias_size
        elif kind is events.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise fail("invalid YAML: expected a single document in the stream", event)
            continue
        else:
            continue
        nodes += size
        if container is None:
            data = obj
        elif is_list:
            container.append(obj)
        elif key is _NO_KEY:
            if isinstance(obj, list | dict):
                raise fail("invalid YAML: a mapping key must be a scalar", event)
            key = obj
        else:
            container[key] = obj
            key = _NO_KEY
    limit = max(MAX_YAML_NODES, MAX_ALIAS_FACTOR * written)
    if nodes > limit:
        raise FileFormatError(
            path,
            f"YAML aliases expand this file to more than {limit:,} nodes (the limit is {MAX_YAML_NODES:,}, "
            f"or {MAX_ALIAS_FACTOR} times the nodes written in the file): write the repeated parts out",
        )
    return data, bool(pyyaml_tags)


def _line_tree(text: str) -> Any:
    """Lines of a YAML document as nested ``{key: (line, subtree)}`` and ``[(line, subtree)]``."""
    from yaml import events

    loader = _loader(text)
    get_event = loader.get_event
    scalar_event, alias_event = events.ScalarEvent, events.AliasEvent
    map_start, seq_start = events.MappingStartEvent, events.SequenceStartEvent
    ends = (events.MappingEndEvent, events.SequenceEndEvent)
    anchors: dict[str, Any] = {}
    stack: list[tuple[Any, Any, int, int]] = []  # the enclosing collections, saved
    tree: Any = None  # the open collection's lines, with what follows
    key, key_line, own_line = _NO_KEY, 0, 0
    root: Any = None
    try:
        while (event := get_event()) is not None:
            kind = event.__class__
            if kind is scalar_event:
                subtree, name, line = None, event.value, event.start_mark.line + 1
                if event.anchor:
                    anchors[event.anchor] = None
            elif kind is map_start or kind is seq_start:
                stack.append((tree, key, key_line, own_line))
                tree, key, own_line = {} if kind is map_start else [], _NO_KEY, event.start_mark.line + 1
                if event.anchor:
                    anchors[event.anchor] = tree
                continue
            elif kind in ends:
                subtree, name, line = tree, None, own_line
                tree, key, key_line, own_line = stack.pop()
            elif kind is alias_event:
                subtree, name, line = anchors.get(event.anchor or ""), None, event.start_mark.line + 1
            else:
                continue
            if tree is None:
                root = subtree
            elif type(tree) is list:
                tree.append((line, subtree))
            elif key is _NO_KEY:
                key, key_line = name, line
            else:
                if key is not None:
                    tree[key] = (key_line, subtree)
                key = _NO_KEY
    finally:
        loader.dispose()
    return root


def _read_yaml(path: Path, text: str) -> StructuredFile:
    import yaml

    loader = _loader(text)
    try:
        data, needs_pyyaml = _build_yaml(path, loader)
        if needs_pyyaml:  # merge keys or tagged collections: PyYAML's loader (the aliases are within limits)
            data = yaml.load(text, Loader=type(loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise FileFormatError(path, f"invalid YAML: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise FileFormatError(path, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return StructuredFile(path, data, text)


def read_structured_file(path: Path) -> StructuredFile:
    """Parse ``path`` by its extension (``.yaml``/``.yml``, ``.toml``, ``.json``)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileFormatError(path, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise FileFormatError(path, f"file is larger than {MAX_FILE_BYTES // 2**20} MiB, the most that is read")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomllib  # like yaml, only imported to read such a file

        try:
            return StructuredFile(path, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise FileFormatError(path, f"invalid TOML: {exc}") from None
    if suffix == ".json":
        try:
            return StructuredFile(path, json.loads(text))
        except json.JSONDecodeError as exc:
            raise FileFormatError(path, f"invalid JSON: {exc.msg}", exc.lineno) from None
        except RecursionError:
            raise FileFormatError(path, "invalid JSON: nested too deeply") from None
    if suffix in (".yaml", ".yml"):
        return _read_yaml(path, text)
    raise FileFormatError(path, f"unknown file type {suffix!r}: use .yaml, .yml, .toml or .json")

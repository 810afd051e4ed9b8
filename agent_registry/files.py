"""Read YAML, TOML or JSON files into plain data, with line numbers where the format gives them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FileFormatError", "StructuredFile", "read_structured_file"]

Path_ = tuple[str | int, ...]


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
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, location: Path_) -> int | None:
        """The line of ``location`` or of its closest parent that has one."""
        for end in range(len(location), 0, -1):
            line = self.lines.get(location[:end])
            if line is not None:
                return line
        return None


def _yaml_lines(node: Any, prefix: Path_, out: dict[Path_, int]) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            path = (*prefix, key)
            out[path] = key_node.start_mark.line + 1
            _yaml_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            out[path] = item.start_mark.line + 1
            _yaml_lines(item, path, out)


def _read_yaml(path: Path, text: str) -> StructuredFile:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise FileFormatError(path, f"invalid YAML: {exc.problem or exc}", line) from None
    except yaml.YAMLError as exc:
        raise FileFormatError(path, f"invalid YAML: {exc}") from None
    lines: dict[Path_, int] = {}
    if node is not None:
        _yaml_lines(node, (), lines)
    return StructuredFile(path, data, lines)


def read_structured_file(path: Path) -> StructuredFile:
    """Parse ``path`` by its extension (``.yaml``/``.yml``, ``.toml``, ``.json``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FileFormatError(path, f"cannot read file: {exc.strerror or exc}") from None
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
        try:
            return _read_yaml(path, text)
        except RecursionError:
            raise FileFormatError(path, "invalid YAML: nested too deeply") from None
    raise FileFormatError(path, f"unknown file type {suffix!r}: use .yaml, .yml, .toml or .json")

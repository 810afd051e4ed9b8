"""``output_file``: a task's output written to a file once its success is committed.

The path is a template (``"reports/{{ inputs.topic }}.md"``) rendered with the task's inputs and upstream
results, relative to the project's folder (the project file's; the current folder for a project built in
Python), and refused when it leads outside that folder (``..``, an absolute path, a symbolic link out)
unless ``allow_outside`` (the CLI's ``--allow-outside``). The file is written atomically: a temporary
file in the same folder, then ``os.replace``, so a reader never sees half an output.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestration.templates import TemplateError

if TYPE_CHECKING:
    from orchestration.project import CompiledTask

__all__ = ["OutputFileError", "OutputFiles", "resolve_output_path", "write_atomically"]


class OutputFileError(ValueError):
    """An output file's path is invalid (or outside the project's folder), or the file could not be written."""


def resolve_output_path(text: str, folder: Path, *, allow_outside: bool = False) -> Path:
    """The absolute path ``text`` names, relative to ``folder`` (absolute); raise :class:`OutputFileError`."""
    if not text.strip():
        raise OutputFileError("the output file's path is empty")
    if "\0" in text:
        raise OutputFileError("the output file's path contains a NUL character")
    path = (folder / text).resolve()
    if not allow_outside and not path.is_relative_to(folder.resolve()):
        raise OutputFileError(
            f"the output file '{text}' is outside the project's folder {folder} (--allow-outside allows it)"
        )
    if path == folder.resolve() or text.endswith(("/", os.sep)):
        raise OutputFileError(f"the output file '{text}' names a folder, not a file")
    return path


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (UTF-8), creating its folder: a temporary file beside it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class OutputFiles:
    """Where a run's output files go: ``folder`` (absolute), and whether paths may lead outside it."""

    folder: Path
    allow_outside: bool = False

    def path_for(self, task: CompiledTask, inputs: Mapping[str, Any], upstream: Mapping[str, Any]) -> Path:
        """``task``'s output file, rendered and checked; raise :class:`OutputFileError`."""
        template = task.output_file
        assert template is not None
        try:
            text = template.render(inputs, task.upstream(upstream), task.variables)
        except TemplateError as exc:
            raise OutputFileError(f"the output file's path does not render: {exc}") from None
        return resolve_output_path(text, self.folder, allow_outside=self.allow_outside)

    @staticmethod
    def write(path: Path, text: str) -> None:
        """Write an output file; raise :class:`OutputFileError` saying why it could not be written."""
        try:
            write_atomically(path, text)
        except OSError as exc:
            raise OutputFileError(f"could not write the output file {path}: {exc.strerror or exc}") from None

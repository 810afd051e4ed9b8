"""Task files under ``--projects``: listing them, and resolving a requested path so that it cannot leave the folder
(no absolute path, no ``..``, no symlink that points outside), and projects posted as documents."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.models import ProjectSpec

__all__ = [
    "MAX_LISTED",
    "PROJECT_SUFFIXES",
    "ListedProject",
    "list_projects",
    "posted_spec",
    "resolve_project",
    "save_posted",
]

PROJECT_SUFFIXES = frozenset({".yaml", ".yml", ".toml", ".json"})
MAX_LISTED = 500
"""The most task files ``GET /api/projects`` lists (the first found, in path order)."""


@dataclass(frozen=True)
class ListedProject:
    path: str
    """Relative to the projects folder, with ``/`` separators."""
    name: str | None
    """The project's name; ``None`` when the file does not parse as a task file."""


def resolve_project(root: Path | None, requested: str) -> Path:
    """The task file ``requested`` names under ``root``; raise :class:`ProjectValidationError` (field ``path``) when
    there is no ``root``, the path is absolute or has a ``..``, leads outside ``root`` (through a symlink too), is
    not a task file, or does not exist."""
    if root is None:
        raise _path_issue("this server has no projects folder (orchestrate serve --projects DIR): post the project")
    if not requested or "\0" in requested:
        raise _path_issue("give the task file's path relative to the projects folder")
    parts = PurePosixPath(requested.replace("\\", "/"))
    if parts.is_absolute() or PureWindowsPath(requested).is_absolute() or PureWindowsPath(requested).drive:
        raise _path_issue(f"'{requested}' is absolute: give a path relative to the projects folder")
    if ".." in parts.parts:
        raise _path_issue(f"'{requested}' has '..': give a path inside the projects folder")
    base = root.resolve()
    path = (base / parts).resolve()
    if not path.is_relative_to(base):
        raise _path_issue(f"'{requested}' leads outside the projects folder")
    if path.suffix.lower() not in PROJECT_SUFFIXES:
        raise _path_issue(f"'{requested}' is not a task file (.yaml, .yml, .toml or .json)")
    if not path.is_file():
        raise _path_issue(f"no task file '{requested}' in the projects folder")
    return path


def list_projects(root: Path | None) -> list[ListedProject]:
    """The task files under ``root`` (symlinks that lead outside it left out), by path; at most :data:`MAX_LISTED`."""
    if root is None:
        return []
    from orchestration.loader import load_project_file

    base = root.resolve()
    found: list[Path] = []
    for folder, folders, files in os.walk(base):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(Path(folder) / name for name in sorted(files) if Path(name).suffix.lower() in PROJECT_SUFFIXES)
        if len(found) >= MAX_LISTED:
            break
    listed = []
    for path in found[:MAX_LISTED]:
        if not path.resolve().is_relative_to(base):
            continue
        try:
            name: str | None = load_project_file(path)[0].name
        except ProjectValidationError:
            name = None
        listed.append(ListedProject(path.relative_to(base).as_posix(), name))
    return listed


def posted_spec(document: Mapping[str, Any]) -> ProjectSpec:
    """A project posted as a document (a task file's content as JSON); raise :class:`ProjectValidationError`."""
    from pydantic import ValidationError

    from orchestration.loader import spec_issues

    try:
        return ProjectSpec.model_validate(document)
    except ValidationError as exc:
        raise ProjectValidationError(spec_issues(exc, document, None)) from None
    except RecursionError:
        raise ProjectValidationError([ValidationIssue("the project is nested too deeply")]) from None


def save_posted(folder: Path, run_id: str, document: Mapping[str, Any]) -> Path:
    """Keep a posted project as ``<folder>/<run_id>.json`` (readable by its owner only: it may hold API keys), the
    file the run records, so that it can be resumed (here or with ``orchestrate resume``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def _path_issue(message: str) -> ProjectValidationError:
    return ProjectValidationError([ValidationIssue(message, field="path")])

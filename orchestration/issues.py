"""Validation issues: what is wrong, in which file, task, field and line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProjectValidationError", "ValidationIssue"]


@dataclass(frozen=True)
class ValidationIssue:
    """One problem found before anything runs."""

    message: str
    file: Path | None = None
    task: str | None = None
    agent: str | None = None
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            parts.append(f"{self.file}:{self.line}" if self.line else str(self.file))
        subject = []
        if self.task is not None:
            subject.append(f"task '{self.task}'")
        if self.agent is not None:
            subject.append(f"agent '{self.agent}'")
        if self.field:
            subject.append(f"field '{self.field}'")
        if subject:
            parts.append(", ".join(subject))
        parts.append(self.message)
        return ": ".join(parts)


class ProjectValidationError(ValueError):
    """The project is invalid; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[ValidationIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))

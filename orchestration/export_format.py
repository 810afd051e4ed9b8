"""``ExportFormat``: the formats a stored run is exported in (a module of its own, cheap for the CLI to import)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ExportFormat"]


class ExportFormat(StrEnum):
    JSON = "json"
    JSONL = "jsonl"
    MD = "md"

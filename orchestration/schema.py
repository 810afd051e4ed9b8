"""The JSON Schema of project task files, generated from the pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestration.models import ProjectSpec

__all__ = ["SCHEMA_PATH", "project_json_schema"]

SCHEMA_PATH = Path(__file__).with_name("schema") / "project.schema.json"
"""Where the published copy lives (kept in sync by a test)."""


def project_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for YAML, TOML and JSON project files."""
    schema = ProjectSpec.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}

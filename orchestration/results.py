"""The results document: the stable JSON contract other tools read.

``{"project": name, "run_id": id, "status": ..., "results": {task_id: result}}``;
fields are only ever added, never renamed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestration.models import ExecutionResult, ExecutionStatus

__all__ = ["results_document", "run_status", "write_results"]


def run_status(results: Mapping[str, ExecutionResult]) -> str:
    """``success`` when every task succeeded, else ``failed``."""
    if all(r.status is ExecutionStatus.SUCCESS for r in results.values()):
        return "success"
    return "failed"


def results_document(project: str, run_id: str, results: Mapping[str, ExecutionResult]) -> dict[str, Any]:
    """The run as a JSON-ready mapping."""
    return {
        "project": project,
        "run_id": run_id,
        "status": run_status(results),
        "results": {task_id: result.model_dump(mode="json") for task_id, result in results.items()},
    }


def write_results(path: Path, project: str, run_id: str, results: Mapping[str, ExecutionResult]) -> None:
    """Write the results document atomically (a crash never leaves half a file)."""
    document = results_document(project, run_id, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

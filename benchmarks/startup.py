"""Start-up figures, each measured in fresh interpreters: ``import orchestration`` and ``orchestrate --help``."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.workloads import REPO_ROOT

__all__ = ["help_command", "measure_startup"]

_IMPORT = "import time; t = time.perf_counter(); import orchestration; print(time.perf_counter() - t)"


def help_command() -> list[str] | None:
    """How to run ``orchestrate --help`` from this checkout, or ``None`` while the CLI does not exist."""
    package = REPO_ROOT / "orchestration"
    if (package / "__main__.py").exists():
        return [sys.executable, "-m", "orchestration", "--help"]
    if (package / "cli" / "app.py").exists():
        return [sys.executable, "-c", "from orchestration.cli.app import main; main()", "--help"]
    return None


def _wall(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def measure_startup(repeats: int) -> dict[str, float | None]:
    """Medians over ``repeats`` fresh interpreters, in seconds (``None``: not available)."""
    imports = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _IMPORT], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
        imports.append(float(out.stdout))
    bare = statistics.median(_wall([sys.executable, "-c", "pass"], REPO_ROOT) for _ in range(repeats))
    command = help_command()
    help_s = statistics.median(_wall(command, REPO_ROOT) for _ in range(repeats)) if command else None
    return {"import_orchestration_s": statistics.median(imports), "help_s": help_s, "bare_interpreter_s": bare}

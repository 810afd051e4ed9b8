"""Start-up figures, each measured in fresh interpreters: importing the engine and ``orchestrate --help``.

Bytecode caching is allowed (as in an installed package) and one warm-up run writes the caches.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.workloads import REPO_ROOT

__all__ = ["help_command", "measure_startup"]

_TIMED = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
IMPORTS = {
    "import_orchestration_s": "import orchestration",
    "import_orchestrator_s": "from orchestration import ProjectOrchestrator",
}


def help_command() -> list[str] | None:
    """How to run ``orchestrate --help`` from this checkout, or ``None`` while the CLI does not exist."""
    package = REPO_ROOT / "orchestration"
    if (package / "__main__.py").exists():
        return [sys.executable, "-m", "orchestration", "--help"]
    if (package / "cli" / "app.py").exists():
        return [sys.executable, "-c", "from orchestration.cli.app import main; main()", "--help"]
    return None


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _wall(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=_environment())
    return time.perf_counter() - start


def _timed_import(statement: str) -> float:
    command = [sys.executable, "-c", _TIMED.format(statement=statement)]
    done = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True, env=_environment())
    return float(done.stdout)


def measure_startup(repeats: int) -> dict[str, float | None]:
    """Medians over ``repeats`` fresh interpreters, in seconds (``None``: not available)."""
    figures: dict[str, float | None] = {}
    for key, statement in IMPORTS.items():
        _timed_import(statement)  # warm-up: writes the bytecode caches
        figures[key] = statistics.median(_timed_import(statement) for _ in range(repeats))
    figures["bare_interpreter_s"] = statistics.median(
        _wall([sys.executable, "-c", "pass"], REPO_ROOT) for _ in range(repeats)
    )
    command = help_command()
    figures["help_s"] = statistics.median(_wall(command, REPO_ROOT) for _ in range(repeats)) if command else None
    return figures

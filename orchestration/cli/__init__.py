"""The ``orchestrate`` command line (typer + rich)."""

from orchestration.cli.app import app, main

__all__ = ["app", "main"]

"""Project files of the cross-process tests: one ``gpt`` agent ``llm`` talking to the fake provider server."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.provider_server import FakeProviderServer

__all__ = ["RETRYING", "gpt_project"]

RETRYING = "timeout_s: 0.5, retry: {retries: 8, initial_backoff_s: 0.01, max_backoff_s: 0.05}"
"""Agent settings that ride out a fault plan's faults and hangs: short timeouts, many quick retries."""


def gpt_project(path: Path, server: FakeProviderServer, *lines: str, agent: str = "") -> Path:
    """Write a project file to ``path``: the agent ``llm`` (more settings in ``agent``, as YAML flow-mapping
    items), then ``lines`` (the rest of the project: name, defaults, tasks...)."""
    settings = f"type: gpt, model: test-model, api_key: test-key-123456, base_url: '{server.openai_base_url}'"
    llm = f"{settings}, {agent}" if agent else settings
    path.write_text("\n".join(["agents:", f"  llm: {{{llm}}}", *lines]) + "\n")
    return path

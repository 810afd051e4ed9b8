"""Pytest fixtures around the fake provider server.

Use them from a ``conftest.py`` (``from tests.fakes.fixtures import fake_server, provider_env``):

- ``fake_server``: a started :class:`~tests.fakes.provider_server.FakeProviderServer`, stopped
  after the test. It runs in its own thread, so sync, asyncio and trio tests can all use it.
- ``provider_env``: clears every provider key and base-URL variable from the environment and
  points ``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL`` and ``GOOGLE_GEMINI_BASE_URL`` at
  ``fake_server`` with dummy keys ``test-openai-key``, ``test-anthropic-key``,
  ``test-google-key``; returns the server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.provider_server import FakeProviderServer

__all__ = ["PROVIDER_ENV_VARS", "fake_server", "provider_env"]

PROVIDER_ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "GOOGLE_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GROQ_API_KEY",
    "XAI_API_KEY",
)


@pytest.fixture
def fake_server() -> Iterator[FakeProviderServer]:
    with FakeProviderServer() as server:
        yield server


@pytest.fixture
def provider_env(fake_server: FakeProviderServer, monkeypatch: pytest.MonkeyPatch) -> FakeProviderServer:
    for name in PROVIDER_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-openai-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.openai_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_server.anthropic_base_url)
    monkeypatch.setenv("GOOGLE_API_KEY", "test-google-key")
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_server.gemini_base_url)
    return fake_server

"""Fixtures of the local-model tests: tiny random models built here, offline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local-model tests never download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def mlx_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tiny random llama without a chat template (prompts are plain text)."""
    pytest.importorskip("mlx.core")
    pytest.importorskip("mlx_lm")
    from tests.local.tiny_models import build_tiny_llama

    yield build_tiny_llama(tmp_path_factory.mktemp("mlx-plain"))


@pytest.fixture(scope="session")
def mlx_chat_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same kind of model with a chat template."""
    pytest.importorskip("mlx.core")
    pytest.importorskip("mlx_lm")
    from tests.local.tiny_models import CHAT_TEMPLATE, build_tiny_llama

    yield build_tiny_llama(tmp_path_factory.mktemp("mlx-chat"), chat_template=CHAT_TEMPLATE)

"""What the vLLM tests (``pytest -m gpu``) share: a tiny random llama, and engine settings that let it share a GPU.

A test module imports the ``hf_model`` fixture from here (and names it in its ``__all__``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ENGINE", "hf_model"]

ENGINE: dict[str, Any] = {"gpu_memory_utilization": 0.25, "max_model_len": 1024, "enforce_eager": True}
"""vLLM engine settings for the tiny model: a quarter of the GPU's memory, a short context, no CUDA graphs."""


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny random llama in Hugging Face format, built once per module."""
    from tests.local.tiny_models import build_tiny_hf_llama

    yield build_tiny_hf_llama(tmp_path_factory.mktemp("vllm-model"))

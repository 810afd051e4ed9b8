"""Where a local model's files are: a local folder, or a model id already in the Hugging Face cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llm_abstractions.errors import InvalidRequestError

__all__ = ["model_problems", "resolve_model_path"]


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def _cached_snapshot(model: str) -> Path | None:
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        return None


def model_problems(model: str | None) -> list[str]:
    """Why ``model`` cannot be loaded without a download (empty when it can)."""
    if not model:
        return ["a local agent needs 'model': a model folder or a model id already in the Hugging Face cache"]
    path = Path(model).expanduser()
    if path.exists():
        return [] if path.is_dir() else [f"model path '{model}' is not a folder"]
    if _looks_like_path(model):
        return [f"model path '{model}' does not exist"]
    if _cached_snapshot(model) is None:
        return [
            f"model '{model}' is neither a local folder nor in the Hugging Face cache; "
            f"download it first (huggingface-cli download {model}) or give its folder"
        ]
    return []


def resolve_model_path(model: str) -> Path:
    """The local folder of ``model``; raise ``InvalidRequestError`` instead of downloading."""
    problems = model_problems(model)
    if problems:
        raise InvalidRequestError(problems[0])
    path = Path(model).expanduser()
    if path.exists():
        return path
    snapshot = _cached_snapshot(model)
    assert snapshot is not None
    return snapshot

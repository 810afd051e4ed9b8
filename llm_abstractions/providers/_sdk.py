"""Lazy SDK imports with an install hint, and the API-key lookup the providers share."""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from types import ModuleType

from llm_abstractions.config import LlmConfig

__all__ = [
    "MissingSdkError",
    "config_key",
    "env_key",
    "import_sdk",
    "install_hint",
    "missing_key_message",
    "sdk_installed",
]


class MissingSdkError(ImportError):
    """A provider's SDK is not installed."""


def install_hint(package: str, extra: str, provider: str) -> str:
    return f"the {provider} provider needs the '{package}' package: pip install 'orchestrate-llm[{extra}]'"


def sdk_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def import_sdk(module: str, *, package: str, extra: str, provider: str) -> ModuleType:
    """Import an SDK module, failing with the exact install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingSdkError(install_hint(package, extra, provider)) from exc


def env_key(variables: Sequence[str]) -> str | None:
    """The first non-empty of these environment variables."""
    for name in variables:
        value = os.environ.get(name)
        if value:
            return value
    return None


def missing_key_message(variables: Sequence[str]) -> str:
    return f"no API key: set {' or '.join(variables)}, or api_key in the agent's config"


def config_key(config: LlmConfig) -> str | None:
    return config.api_key.get_secret_value() if config.api_key is not None else None

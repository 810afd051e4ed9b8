"""``AgentType``: the built-in provider keys."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AgentType"]


class AgentType(StrEnum):
    """Built-in agent types. Third-party providers add more keys through entry points."""

    GOOGLE_GEMINI = "gemini"
    ANTHROPIC_CLAUDE = "claude"
    OPENAI_GPT = "gpt"
    OPENAI_COMPATIBLE = "openai_compatible"
    LOCAL_MLX = "mlx"
    LOCAL_VLLM = "vllm"
    OFFLINE = "offline"

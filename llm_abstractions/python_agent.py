"""``PythonAgentLlm``: the provider key ``python``, for agents that run code steps, never prompts.

An orchestrate project's code steps (tasks with ``type: python`` and ``call:``) are plain
functions, run by the engine without any model; an agent of type ``python`` only names a
group of them and its settings (``limits.max_concurrent``, ``retry``). This class makes that
type a known provider key, so that agents files and task files validate it like any other;
asking it to answer a prompt is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from llm_abstractions.base import BaseLlm
from llm_abstractions.errors import InvalidRequestError
from llm_abstractions.messages import GenerationOptions, LlmResponse, Message

__all__ = ["PythonAgentLlm"]


class PythonAgentLlm(BaseLlm):
    """The agent of code steps: it holds their limits and retry settings and answers no prompt."""

    provider = "python"
    in_process = True

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        raise InvalidRequestError(
            f"agent '{self.config.name}' is a python agent: it runs code steps (type: python, call: ...), "
            "it does not answer prompts",
            provider=self.provider,
        )

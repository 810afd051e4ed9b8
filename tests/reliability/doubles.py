"""Small ``BaseLlm`` test doubles for the reliability tests: scripted outcomes, gates, call records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from llm_abstractions import BaseLlm, GenerationOptions, LlmConfig, LlmResponse, Message, Usage

__all__ = ["Call", "Script", "ScriptedLlm", "Scripts", "scripted"]

Outcome = str | BaseException


@dataclass
class Call:
    prompt: str
    options: GenerationOptions
    started: float
    """``anyio.current_time()`` when the call began."""


@dataclass
class Script:
    """Outcomes handed out in order (then ``default``), and a record of every call."""

    outcomes: list[Outcome] = field(default_factory=list)
    default: Outcome = "ok"
    respond: Callable[[str], Outcome] | None = None
    """Decides the outcome from the prompt when ``outcomes`` is empty (instead of ``default``)."""
    calls: list[Call] = field(default_factory=list)
    gate: anyio.Event | None = None
    """When set, every call waits for it before answering."""
    running: int = 0
    max_running: int = 0
    cancelled: int = 0
    usage: Usage | None = None
    delay_s: float = 0.0
    """How long each call takes (when no gate holds it)."""


class ScriptedLlm(BaseLlm):
    """Answers from its :class:`Script`; an exception outcome is raised instead."""

    provider = "scripted"

    def __init__(self, config: LlmConfig, script: Script) -> None:
        super().__init__(config)
        self.script = script

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        script = self.script
        script.calls.append(Call(messages[-1].content, options, anyio.current_time()))
        prompt = messages[-1].content
        if script.outcomes:
            outcome = script.outcomes.pop(0)
        else:
            outcome = script.default if script.respond is None else script.respond(prompt)
        script.running += 1
        script.max_running = max(script.max_running, script.running)
        try:
            if script.gate is not None:
                await script.gate.wait()
            else:
                await anyio.sleep(script.delay_s)
        except anyio.get_cancelled_exc_class():
            script.cancelled += 1
            raise
        finally:
            script.running -= 1
        if isinstance(outcome, BaseException):
            raise outcome
        return LlmResponse(text=outcome, provider="scripted", model=self.model_name, usage=script.usage)


def scripted(name: str = "a", *outcomes: Outcome, **config: Any) -> ScriptedLlm:
    """A scripted model named ``name`` (the agent name it reports)."""
    return ScriptedLlm(LlmConfig(name=name, provider="scripted", **config), Script(list(outcomes)))


class Scripts(dict[str, Script]):
    """Scripts by agent name for ``scripted`` agents created by the factory (see ``conftest.py``)."""

    def __missing__(self, name: str) -> Script:
        script = self[name] = Script()
        return script

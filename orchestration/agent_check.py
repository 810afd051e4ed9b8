"""``check_agents``: one minimal real call per agent that proves its credentials and model name.

Used by ``orchestrate agents check``. Each agent gets a verdict: ``ok`` (it answered; the
served model name is reported), ``config`` (a problem found before calling: missing key,
SDK, base URL...), or the typed error of the failed call (``authentication``,
``invalid_request`` for an unknown model, ``connection``, ``timeout``...).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import BaseLlm, ErrorType, LlmError, Message, create_llm, redact
from llm_abstractions.python_agent import PythonAgentLlm

__all__ = ["CHECK_PROMPT", "AgentCheck", "check_agent", "check_agents"]

CHECK_PROMPT = "Reply with the single word: ok"


@dataclass(frozen=True)
class AgentCheck:
    """The verdict on one agent."""

    agent: str
    provider: str
    model: str | None
    verdict: str
    """``ok``, ``config``, or the error type of the failed call."""
    detail: str
    served_model: str | None = None
    latency_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


async def check_agent(
    registry: AgentRegistry, name: str, *, timeout_s: float = 30.0, max_tokens: int = 16
) -> AgentCheck:
    """Check one agent: its configuration, then one short call."""
    return await _Check.prepare(registry, name).run(timeout_s, max_tokens)


async def check_agents(
    registry: AgentRegistry,
    names: Sequence[str] | None = None,
    *,
    timeout_s: float = 30.0,
    max_tokens: int = 16,
) -> list[AgentCheck]:
    """Check ``names`` (default: every agent of ``registry``) concurrently; results in the same order.

    Every client is built (and its SDK imported) before any call starts, so that one
    agent's SDK import does not eat into another agent's timeout.
    """
    checks = [_Check.prepare(registry, name) for name in (names if names is not None else registry.names())]
    results: list[AgentCheck | None] = [None] * len(checks)

    async def one(index: int) -> None:
        results[index] = await checks[index].run(timeout_s, max_tokens)

    async with anyio.create_task_group() as tg:
        for index in range(len(checks)):
            tg.start_soon(one, index)
    return [result for result in results if result is not None]


@dataclass
class _Check:
    agent: AgentConfig
    llm: BaseLlm | None
    problem: AgentCheck | None

    @classmethod
    def prepare(cls, registry: AgentRegistry, name: str) -> _Check:
        agent = registry.get(name)
        if agent.agent_type == PythonAgentLlm.provider:  # code steps' agent: there is no model to call
            return cls(agent, None, _verdict(agent, "ok", "runs code steps (type: python): nothing to call"))
        problems = registry.check(name)
        if problems:
            return cls(agent, None, _verdict(agent, "config", "; ".join(problems)))
        try:
            return cls(agent, create_llm(agent.llm_config()), None)
        except Exception as exc:  # a broken provider is a verdict, not a crash
            return cls(agent, None, _verdict(agent, ErrorType.INTERNAL, redact(f"{type(exc).__name__}: {exc}")))

    async def run(self, timeout_s: float, max_tokens: int) -> AgentCheck:
        if self.llm is None:
            assert self.problem is not None
            return self.problem
        start = time.perf_counter()
        try:
            async with self.llm as llm:
                with anyio.fail_after(timeout_s):
                    response = await llm.generate_content_async([Message.user(CHECK_PROMPT)], max_tokens=max_tokens)
        except TimeoutError:
            return _verdict(self.agent, ErrorType.TIMEOUT, f"no answer within {timeout_s:g} s")
        except LlmError as exc:
            return _verdict(self.agent, exc.type_name, redact(exc.message), latency_s=time.perf_counter() - start)
        except Exception as exc:  # a broken provider is a verdict, not a crash
            return _verdict(self.agent, ErrorType.INTERNAL, redact(f"{type(exc).__name__}: {exc}"))
        served = response.model or self.agent.model
        return _verdict(
            self.agent, "ok", f"answered as {served}", served_model=served, latency_s=time.perf_counter() - start
        )


def _verdict(
    agent: AgentConfig, kind: str, detail: str, served_model: str | None = None, latency_s: float | None = None
) -> AgentCheck:
    return AgentCheck(agent.name, agent.agent_type, agent.model, kind, detail, served_model, latency_s)

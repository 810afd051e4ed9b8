"""The answer cache's rules: which tasks use it, the key of a request, and which answers are kept.

A request's key is the sha256 of everything that can change its answer: every agent of the task's chain (provider,
model, base URL, provider settings but ``prompt_cache``, which changes the price, not the answer), the rendered
messages (system prompt included, and each attachment's digest or URL), the options as sent (the agent's with the
task's applied, seed included), the output format and schema, and a *sample index*. All but the messages' texts go
in as canonical JSON; each text follows it as UTF-8 bytes behind its length (hashed as it is: escaping a long
prompt for JSON would cost several times its hashing; keys of version 1, all JSON, no longer match). Tasks of one
run whose requests are alike (same agent, templates, options and output) get the indices 0, 1, 2, ... in task-id
order, so five tasks asking the same question at temperature 0.9 still make five calls, and a rerun gets the same
five answers back in the same places. The instances of a mapped task (``for_each``) add their key to their task's
index (``"0:17"``): two items that render the same request are still two calls.

Modes (``cache`` of a task, else of its agent, else ``defaults.cache``; the CLI's ``--no-cache`` and
``--refresh-cache`` override them all): ``true`` use and keep answers, ``read`` use them but keep none,
``refresh`` always call and keep the new answer, ``false`` neither. Clients whose answers cost nothing to make
again (offline, functions: :attr:`llm_abstractions.BaseLlm.cacheable`) never use it. Only complete answers are
kept: successes not cut off (``length``) or filtered (``content_filter``), and for a task whose answer had a
review gate only an approved one (never an edit or a rejected answer).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from agent_registry import AgentRegistry
from llm_abstractions import GenerationOptions, Message, Usage
from llm_abstractions.structured import parse_json_answer
from orchestration.models import CacheInfo, CacheSetting, ExecutionResult, ExecutionStatus, OutputFormat, utc_now
from orchestration.project import CompiledTask, Project

if TYPE_CHECKING:
    from orchestration.store import RunStore
    from orchestration.store.answers import CachedAnswer

__all__ = ["AnswerCache", "CacheMode", "keeps", "mode_of", "request_key", "sample_indices"]

_INCOMPLETE = frozenset({"length", "content_filter"})
"""Finish reasons of answers that are never kept."""


class CacheMode(StrEnum):
    ON = "true"
    OFF = "false"
    READ = "read"
    REFRESH = "refresh"

    @classmethod
    def of(cls, setting: CacheSetting) -> CacheMode:
        if setting is True:
            return cls.ON
        if setting is False:
            return cls.OFF
        return cls(setting)

    @property
    def reads(self) -> bool:
        return self in (CacheMode.ON, CacheMode.READ)

    @property
    def writes(self) -> bool:
        return self in (CacheMode.ON, CacheMode.REFRESH)


def mode_of(task: CompiledTask, project: Project, override: CacheMode | None = None) -> CacheMode:
    """The task's cache mode: ``override`` (the CLI's), else the task's, its agent's, the project's."""
    if override is not None:
        return override
    for setting in (task.task.cache, project.registry.get(task.agent).cache, project.spec.defaults.cache):
        if setting is not None:
            return CacheMode.of(setting)
    return CacheMode.ON


def sample_indices(project: Project) -> list[int]:
    """Each task's sample index: how many tasks with a smaller id make a request alike (see the module)."""
    seen: dict[str, int] = {}
    indices = [0] * len(project.tasks)
    for task in sorted(project.tasks, key=lambda t: t.id):
        alike = _digest(
            [
                task.agent,
                task.prompt.source,
                task.system.source if task.system else None,
                task.options.model_dump(mode="json", exclude_none=True),
                str(task.task.output_format),
            ]
        )
        indices[task.index] = seen.get(alike, 0)
        seen[alike] = indices[task.index] + 1
    return indices


def request_key(
    registry: AgentRegistry,
    task: CompiledTask,
    messages: Sequence[Message],
    options: GenerationOptions,
    sample: int | str,
) -> str:
    """The key of ``task``'s request (``messages`` with ``options``, the ``sample``-th alike request)."""
    agent = registry.get(task.agent)
    chain = [registry.get(name) for name in dict.fromkeys([task.agent, *agent.fallbacks])]
    digest = hashlib.sha256(
        _canonical(
            {
                "v": 2,
                "agents": [[a.agent_type, a.model, a.base_url, _answer_settings(a.provider_settings)] for a in chain],
                "messages": [[m.role, [a.sha256 or a.url for a in m.attachments]] for m in messages],
                "options": agent.options.merged(options).model_dump(mode="json", exclude_none=True),
                "output": [str(task.task.output_format), task.task.output_schema],
                "sample": sample,
            }
        ).encode()
    )
    for message in messages:  # the header fixes how many texts follow; each is length-prefixed
        text = message.content.encode()
        digest.update(b"\n%d:" % len(text))
        digest.update(text)
    return digest.hexdigest()


def _answer_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The provider settings that can change an answer."""
    return {name: value for name, value in settings.items() if name != "prompt_cache"}


def keeps(result: ExecutionResult) -> bool:
    """Whether ``result``'s answer goes into the cache: a complete answer of the model, as it said it."""
    review = result.review
    return (
        result.cache is not None
        and not result.cache.hit
        and result.status is ExecutionStatus.SUCCESS
        and result.finish_reason not in _INCOMPLETE
        and (review is None or review.decision == "approve")
    )


class AnswerCache:
    """One run's use of the store's answer cache."""

    def __init__(self, store: RunStore, project: Project, override: CacheMode | None = None) -> None:
        self.store = store
        self._read = store.answer_reader()
        self._modes = [mode_of(task, project, override) for task in project.tasks]
        self._samples = sample_indices(project)
        self.hits = 0
        self.saved_usd = 0.0

    def mode(self, task: CompiledTask) -> CacheMode:
        return self._modes[task.index]

    def key(
        self, registry: AgentRegistry, task: CompiledTask, messages: Sequence[Message], options: GenerationOptions
    ) -> str:
        sample = self._samples[task.index]
        instance = task.instance
        return request_key(
            registry, task, messages, options, sample if instance is None else f"{sample}:{instance.key}"
        )

    def lookup(self, task: CompiledTask, key: str, started_at: Any, messages: list[Message]) -> ExecutionResult | None:
        """The kept answer of ``key`` as ``task``'s result (a hit, counted; ``messages``: the request), or ``None``."""
        kept = self._read(key)
        if kept is None:
            return None
        result = _hit_result(task, kept, started_at, messages)
        if result is None:  # a kept answer this task cannot use (a json answer that no longer fits its schema)
            return None
        saved = result.cache.saved_usd if result.cache is not None else None
        self.store.count_hit(key, saved)
        self.hits += 1
        self.saved_usd += saved or 0.0
        return result

    def close(self) -> None:
        self._read.close()


def _hit_result(
    task: CompiledTask, kept: CachedAnswer, started_at: Any, messages: list[Message]
) -> ExecutionResult | None:
    answer: Mapping[str, Any] = kept.answer
    output = answer.get("output")
    parsed = None
    if task.task.output_format is OutputFormat.JSON:
        try:
            parsed = parse_json_answer(str(output), task.task.output_schema)
        except ValueError:
            return None
    usage = answer.get("usage")
    info = CacheInfo(
        hit=True,
        key=kept.key,
        from_run=kept.run_id,
        saved_usd=answer.get("cost_usd"),
        usage=Usage.model_validate(usage) if usage is not None else None,
    )
    return ExecutionResult(
        task_id=task.id,
        status=ExecutionStatus.SUCCESS,
        output=output,
        parsed=parsed,
        agent=answer.get("agent") or task.agent,
        provider=answer.get("provider"),
        model=answer.get("model"),
        attempts=0,
        started_at=started_at,
        completed_at=utc_now(),
        duration_s=0.0,
        cost_usd=0.0,
        finish_reason=answer.get("finish_reason"),
        metadata=task.task.metadata,
        cache=info,
        request=[m.model_copy(update={"attachments": tuple(a.reference for a in m.attachments)}) for m in messages],
    )


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()

"""Review settings of a task file: whether a task's request or answer waits for a decision, and when.

``review: require_human`` (a policy name) is short for a gate on the answer; the mapping form chooses the
stage, the policy, thresholds, a reviewing agent and a timeout. A task's own ``review`` replaces the
project's ``defaults.review``; ``auto`` (the default) opens no gate.

What pydantic can check of one value is checked when the file is read (unknown thresholds, a regular
expression that does not compile, a finish reason that is not a lower-case name, ``timeout_s`` not above 0);
what depends on the other settings is :meth:`ReviewSpec.problems`, and what depends on the task or the
project's agents is checked by :func:`orchestration.project.compile_project`.

The stages and timeout actions are defined here, not in :mod:`orchestration.store.gates` (which uses these):
importing the store would load SQLite and the run store into task-file loading, and the store's package
imports :mod:`orchestration.project`, which imports this module.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator

__all__ = [
    "FINISH_REASON_PATTERN",
    "GateStage",
    "ReviewPolicy",
    "ReviewSetting",
    "ReviewSpec",
    "ReviewThresholds",
    "TimeoutAction",
]

FINISH_REASON_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
"""A normalised finish reason (:attr:`llm_abstractions.LlmResponse.finish_reason`): ``stop``, ``length``,
``content_filter``, ``tool_calls``, or a provider's own reason, lower-cased."""


class GateStage(StrEnum):
    BEFORE = "before"
    """The rendered request (system prompt, prompt, options), before the model is called."""
    AFTER = "after"
    """The answer (with usage and cost), before it is committed."""


class TimeoutAction(StrEnum):
    """What a gate's timeout decides (its value is the decision recorded)."""

    APPROVE = "approve"
    REJECT = "reject"
    FAIL = "fail"


class ReviewPolicy(StrEnum):
    AUTO = "auto"
    """No gate."""
    REQUIRE_HUMAN = "require_human"
    """Every request (or answer) waits for a decision."""
    AUTO_WITH_THRESHOLDS = "auto_with_thresholds"
    """A human decides when any threshold is crossed; otherwise approved automatically."""


def _finish_reason(value: str) -> str:
    if not FINISH_REASON_PATTERN.fullmatch(value):
        raise ValueError(
            f"'{value}' is not a finish reason: stop, length, content_filter, tool_calls, "
            "or a provider's own reason in lower case"
        )
    return value


FinishReason = Annotated[
    str,
    AfterValidator(_finish_reason),
    WithJsonSchema({"type": "string", "pattern": f"^{FINISH_REASON_PATTERN.pattern}$"}),
]


class ReviewThresholds(BaseModel):
    """Limits of ``auto_with_thresholds``: any that is crossed asks a human."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    max_cost_usd: float | None = Field(default=None, ge=0)
    """Before: the request's estimated cost (its prompt's estimated tokens, and ``max_tokens`` as output);
    after: the answer's cost. A model without a known price never crosses it."""
    max_output_tokens: int | None = Field(default=None, ge=0)
    """Before: the request's ``max_tokens``; after: the answer's output tokens."""
    finish_reasons: list[FinishReason] | None = None
    """After only: the answer ended for one of these reasons (``length``, ``content_filter``...)."""
    output_matches: str | None = None
    """After only: a regular expression (Python syntax) found in the answer."""
    invalid_json: bool = False
    """After only, json tasks: the answer did not match its schema (before the repair call)."""

    @field_validator("output_matches")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    def after_only(self) -> list[str]:
        """The thresholds set here that only an answer has."""
        given = [name for name in ("finish_reasons", "output_matches") if getattr(self, name) is not None]
        return [*given, "invalid_json"] if self.invalid_json else given

    def any_set(self) -> bool:
        return self.max_cost_usd is not None or self.max_output_tokens is not None or bool(self.after_only())


class ReviewSpec(BaseModel):
    """A task's review gate (the task file's ``review``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    stage: GateStage = GateStage.AFTER
    """``before``: the rendered request waits; ``after``: the answer waits, before it is committed."""
    policy: ReviewPolicy = ReviewPolicy.REQUIRE_HUMAN
    thresholds: ReviewThresholds | None = None
    """With ``auto_with_thresholds`` only."""
    reviewer: str | None = None
    """An agent that reviews first: it approves, or asks a human with its reason."""
    timeout_s: float | None = Field(default=None, gt=0)
    """How long the gate waits for a decision; ``None``: without limit."""
    on_timeout: TimeoutAction = TimeoutAction.FAIL
    """The decision recorded when the time is up."""

    @property
    def gated(self) -> bool:
        """Whether a gate opens (any policy but ``auto``)."""
        return self.policy is not ReviewPolicy.AUTO

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Settings that contradict each other: (location inside the review, message) pairs."""
        found: list[tuple[tuple[str, ...], str]] = []
        thresholds = self.thresholds
        if self.policy is ReviewPolicy.AUTO_WITH_THRESHOLDS:
            if thresholds is None or not thresholds.any_set():
                found.append((("thresholds",), "policy auto_with_thresholds needs at least one threshold"))
        elif thresholds is not None:
            found.append((("thresholds",), f"thresholds need policy auto_with_thresholds (this is {self.policy})"))
        if thresholds is not None and self.stage is GateStage.BEFORE:
            for name in thresholds.after_only():
                found.append((("thresholds", name), f"{name} is a threshold of an answer: it needs stage: after"))
        if not self.gated:
            for name in ("reviewer", "timeout_s"):
                if getattr(self, name) is not None:
                    found.append(((name,), f"policy auto opens no gate: {name} has no effect"))
        return found


def _shorthand(value: Any) -> Any:
    """``review: require_human`` means ``review: {policy: require_human}`` (a gate on the answer)."""
    return {"policy": value} if isinstance(value, str) else value


ReviewSetting = Annotated[
    ReviewSpec | None,
    BeforeValidator(_shorthand, json_schema_input_type=ReviewPolicy | ReviewSpec | None),
]
"""A ``review`` field: a :class:`ReviewSpec`, a policy name for short, or ``None`` (unset)."""

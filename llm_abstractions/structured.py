"""Structured output: parse a JSON answer, validate it against a JSON Schema, repair once.

Providers ask for JSON natively (``GenerationOptions.json_schema``); this module checks
what came back. :func:`generate_json` makes the call and, when the answer is not valid
JSON or does not match the schema, makes ONE repair call that shows the model its answer
and the validation error. A second invalid answer raises :class:`InvalidOutputError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from llm_abstractions.errors import InvalidOutputError
from llm_abstractions.messages import LlmResponse, Message, Usage

__all__ = [
    "REPAIR_PROMPT",
    "JsonAnswer",
    "generate_json",
    "parse_json_answer",
    "schema_problem",
]

REPAIR_PROMPT = (
    "Your answer above is not valid: {problem}\n"
    "Reply again with only the corrected JSON value, with no explanation and no code fence."
)


@dataclass(frozen=True)
class JsonAnswer:
    """A valid structured answer."""

    response: LlmResponse
    """The answer that validated; its usage and latency cover the repair call too."""
    value: Any
    """The parsed JSON value."""
    repaired: str | None = None
    """Why the first answer was refused, when a repair call gave this one."""


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or ``None``."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        return f"invalid JSON Schema: {exc.message}"
    return None


def _strip_fence(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and "\n" in stripped:
        return stripped[stripped.index("\n") + 1 : -3].strip()
    return stripped


def parse_json_answer(text: str, schema: dict[str, Any] | None) -> Any:
    """The JSON value of ``text`` (a surrounding code fence is allowed); ``ValueError`` says what is wrong."""
    try:
        value = json.loads(_strip_fence(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"it is not valid JSON ({exc})") from None
    if schema:
        from jsonschema.exceptions import best_match
        from jsonschema.validators import validator_for

        error = best_match(validator_for(schema)(schema).iter_errors(value))
        if error is not None:
            raise ValueError(f"it does not match the JSON Schema: {error.message} (at {error.json_path})")
    return value


def _combined(first: LlmResponse, second: LlmResponse) -> LlmResponse:
    usage: Usage | None = None
    if first.usage is not None or second.usage is not None:
        usage = (first.usage or Usage()) + (second.usage or Usage())
    return second.model_copy(
        update={
            "usage": usage,
            "latency_s": first.latency_s + second.latency_s,
            "time_to_first_token_s": first.time_to_first_token_s,
        }
    )


async def generate_json(
    call: Callable[[Sequence[Message]], Awaitable[LlmResponse]],
    messages: Sequence[Message],
    schema: dict[str, Any] | None,
) -> JsonAnswer:
    """Call the model through ``call`` and return a schema-valid JSON answer, repairing once."""
    first = await call(messages)
    try:
        return JsonAnswer(first, parse_json_answer(first.text, schema))
    except ValueError as exc:
        problem = str(exc)
    repair = [*messages, Message.assistant(first.text), Message.user(REPAIR_PROMPT.format(problem=problem))]
    response = _combined(first, await call(repair))
    try:
        return JsonAnswer(response, parse_json_answer(response.text, schema), repaired=problem)
    except ValueError as exc:
        raise InvalidOutputError(f"the answer is still not valid after one repair: {exc}", response=response) from None

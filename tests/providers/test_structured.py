"""Structured-output checks on their own: parsing, schema validation, schema problems at validation time."""

from __future__ import annotations

import pytest

from agent_registry import AgentRegistry
from llm_abstractions.structured import parse_json_answer, schema_problem
from orchestration import ProjectOrchestrator
from orchestration.issues import ProjectValidationError
from orchestration.models import ProjectSpec

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.mark.parametrize("text", ['{"n": 1}', ' \n{"n": 1}\n', '```json\n{"n": 1}\n```', '```\n{"n": 1}\n```'])
def test_valid_answers_parse(text: str) -> None:
    assert parse_json_answer(text, SCHEMA) == {"n": 1}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"n": 1', "not valid JSON"),
        ('{"n": "one"}', "'one' is not of type 'integer' (at $.n)"),
        ("{}", "'n' is a required property (at $)"),
    ],
)
def test_invalid_answers_say_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_json_answer(text, SCHEMA)
    assert problem in str(caught.value)


def test_without_a_schema_any_json_passes() -> None:
    assert parse_json_answer("[1, 2]", None) == [1, 2]


def test_an_invalid_schema_is_reported_before_running() -> None:
    assert schema_problem(SCHEMA) is None
    assert schema_problem({"type": "integr"}) is not None
    spec = ProjectSpec.model_validate(
        {"tasks": [{"id": "t", "description": "x", "output_format": "json", "output_schema": {"type": "integr"}}]}
    )
    with pytest.raises(ProjectValidationError) as caught:
        ProjectOrchestrator(spec, registry=AgentRegistry.default(env={})).validate()
    assert "task 't', field 'output_schema': invalid JSON Schema" in str(caught.value)

"""The ``review`` setting of task files: its forms, its defaults, and each problem said where it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration import ProjectOrchestrator, ProjectSpec, ProjectValidationError
from orchestration.cli.app import app
from orchestration.project import Project
from orchestration.review import GateStage, ReviewPolicy, ReviewSpec, ReviewThresholds, TimeoutAction
from orchestration.schema import SCHEMA_PATH, project_json_schema

runner = CliRunner()


def compiled(tmp_path: Path, text: str) -> Project:
    path = tmp_path / "project.yaml"
    path.write_text(text)
    return ProjectOrchestrator.from_file(path).validate()


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problem lines ``orchestrate validate`` prints for a task file (it must exit 2)."""
    path = tmp_path / "project.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    return [line.removeprefix("  - ").replace(f"{path}:", "") for line in lines if line.startswith("  - ")]


def test_the_shorthand_is_a_gate_on_the_answer(tmp_path: Path) -> None:
    review = compiled(tmp_path, "tasks:\n  - {id: draft, description: x, review: require_human}\n").task("draft").review
    assert review == ReviewSpec(stage=GateStage.AFTER, policy=ReviewPolicy.REQUIRE_HUMAN)
    assert review.on_timeout is TimeoutAction.FAIL and review.timeout_s is None


def test_the_full_form_is_kept_as_written(tmp_path: Path) -> None:
    text = """\
agents:
  judge: {type: offline}
tasks:
  - id: summary
    description: x
    output_format: json
    review:
      stage: after
      policy: auto_with_thresholds
      thresholds:
        max_cost_usd: 0.05
        max_output_tokens: 800
        finish_reasons: [length, content_filter, pause_turn]
        output_matches: "(?i)confidential|password"
      timeout_s: 86400
      on_timeout: reject
  - id: send_brief
    description: x
    review: {stage: before, policy: require_human}
"""
    project = compiled(tmp_path, text)
    assert project.task("summary").review == ReviewSpec(
        stage=GateStage.AFTER,
        policy=ReviewPolicy.AUTO_WITH_THRESHOLDS,
        thresholds=ReviewThresholds(
            max_cost_usd=0.05,
            max_output_tokens=800,
            finish_reasons=["length", "content_filter", "pause_turn"],
            output_matches="(?i)confidential|password",
        ),
        timeout_s=86400,
        on_timeout=TimeoutAction.REJECT,
    )
    assert project.task("send_brief").review == ReviewSpec(stage=GateStage.BEFORE)


def test_tasks_inherit_the_default_and_their_own_setting_replaces_it(tmp_path: Path) -> None:
    text = """\
defaults:
  review: {stage: before, policy: require_human, timeout_s: 60, on_timeout: approve}
tasks:
  - {id: inherits, description: x}
  - {id: opts_out, description: x, review: auto}
  - id: own
    description: x
    review: {policy: auto_with_thresholds, thresholds: {max_cost_usd: 0.5}}
"""
    project = compiled(tmp_path, text)
    assert project.task("inherits").review == ReviewSpec(
        stage=GateStage.BEFORE, timeout_s=60, on_timeout=TimeoutAction.APPROVE
    )
    assert project.task("opts_out").review is None
    own = project.task("own").review
    assert own is not None and own.stage is GateStage.AFTER and own.timeout_s is None  # nothing merged
    assert own.thresholds == ReviewThresholds(max_cost_usd=0.5)


def test_no_review_and_auto_open_no_gate(tmp_path: Path) -> None:
    text = "defaults: {review: auto}\ntasks:\n  - {id: a, description: x}\n  - {id: b, description: x, review: auto}\n"
    project = compiled(tmp_path, text)
    assert [t.review for t in project.tasks] == [None, None]
    assert compiled(tmp_path, "tasks:\n  - {id: a, description: x}\n").task("a").review is None


def test_the_python_api_takes_the_same_forms() -> None:
    orchestrator = ProjectOrchestrator(ProjectSpec())
    orchestrator.add_task({"id": "a", "description": "x", "review": "require_human"})
    orchestrator.add_task({"id": "b", "description": "x", "review": ReviewSpec(stage=GateStage.BEFORE)})
    project = orchestrator.validate()
    assert project.task("a").review == ReviewSpec()
    assert project.task("b").review == ReviewSpec(stage=GateStage.BEFORE)
    with pytest.raises(ProjectValidationError) as caught:
        orchestrator.add_task({"id": "c", "description": "x", "review": "sometimes"})
    assert str(caught.value) == (
        "task 'c', field 'review': Input should be 'auto', 'require_human' or 'auto_with_thresholds'"
    )


def test_schema_problems_are_said_where_they_are(tmp_path: Path) -> None:
    text = """\
defaults:
  review: {policy: require_human, timeout_s: 0}
tasks:
  - id: a
    description: x
    review:
      policy: auto_with_thresholds
      thresholds:
        max_cost: 0.05
  - id: b
    description: x
    review:
      policy: auto_with_thresholds
      thresholds:
        finish_reasons: [length, Length]
        output_matches: "(unclosed"
  - {id: c, description: x, review: sometimes}
  - {id: d, description: x, review: {on_timeout: later}}
"""
    assert problems(tmp_path, text) == [
        "2: field 'defaults.review.timeout_s': Input should be greater than 0",
        "9: task 'a', field 'review.thresholds.max_cost': unknown field; allowed: max_cost_usd, max_output_tokens, "
        "finish_reasons, output_matches, invalid_json",
        "15: task 'b', field 'review.thresholds.finish_reasons.1': 'Length' is not a finish reason: stop, length, "
        "content_filter, tool_calls, or a provider's own reason in lower case",
        "16: task 'b', field 'review.thresholds.output_matches': not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "17: task 'c', field 'review': Input should be 'auto', 'require_human' or 'auto_with_thresholds'",
        "18: task 'd', field 'review.on_timeout': Input should be 'approve', 'reject' or 'fail'",
    ]


def test_settings_that_contradict_each_other_are_said_where_they_are(tmp_path: Path) -> None:
    text = """\
tasks:
  - id: before
    description: x
    review:
      stage: before
      policy: auto_with_thresholds
      thresholds:
        max_cost_usd: 0.05
        finish_reasons: [length]
        output_matches: secret
        invalid_json: true
  - id: human
    description: x
    review:
      policy: require_human
      thresholds: {max_cost_usd: 1}
  - id: empty
    description: x
    review:
      policy: auto_with_thresholds
      thresholds: {}
  - id: none
    description: x
    review: {policy: auto_with_thresholds}
  - id: text
    description: x
    review:
      policy: auto_with_thresholds
      thresholds:
        invalid_json: true
  - id: auto
    description: x
    review:
      policy: auto
      reviewer: offline
      timeout_s: 5
"""
    assert problems(tmp_path, text) == [
        "9: task 'before', field 'review.thresholds.finish_reasons': finish_reasons is a threshold of an answer: "
        "it needs stage: after",
        "10: task 'before', field 'review.thresholds.output_matches': output_matches is a threshold of an answer: "
        "it needs stage: after",
        "11: task 'before', field 'review.thresholds.invalid_json': invalid_json is a threshold of an answer: "
        "it needs stage: after",
        "11: task 'before', field 'review.thresholds.invalid_json': invalid_json needs output_format: json "
        "(a text answer has no schema to fail)",
        "16: task 'human', field 'review.thresholds': thresholds need policy auto_with_thresholds "
        "(this is require_human)",
        "21: task 'empty', field 'review.thresholds': policy auto_with_thresholds needs at least one threshold",
        "24: task 'none', field 'review.thresholds': policy auto_with_thresholds needs at least one threshold",
        "30: task 'text', field 'review.thresholds.invalid_json': invalid_json needs output_format: json "
        "(a text answer has no schema to fail)",
        "35: task 'auto', field 'review.reviewer': policy auto opens no gate: reviewer has no effect",
        "36: task 'auto', field 'review.timeout_s': policy auto opens no gate: timeout_s has no effect",
    ]


def test_an_unknown_reviewer_is_said_where_it_is_named(tmp_path: Path) -> None:
    text = """\
agents:
  judge: {type: offline}
defaults:
  review:
    reviewer: jduge
tasks:
  - {id: a, description: x, review: {reviewer: judge}}
  - id: b
    description: x
    review:
      reviewer: nobody
"""
    assert problems(tmp_path, text) == [
        "5: field 'defaults.review.reviewer': unknown agent 'jduge'; known agents: judge, offline",
        "11: task 'b', field 'review.reviewer': unknown agent 'nobody'; known agents: judge, offline",
    ]


def test_every_setting_of_a_review_is_accepted_where_it_fits(tmp_path: Path) -> None:
    text = """\
agents:
  judge: {type: offline}
tasks:
  - id: data
    description: x
    output_format: json
    review:
      policy: auto_with_thresholds
      thresholds:
        max_cost_usd: 0.05
        max_output_tokens: 800
        finish_reasons: [length, content_filter]
        output_matches: "(?i)confidential"
        invalid_json: true
      reviewer: judge
      timeout_s: 86400
      on_timeout: reject
  - id: brief
    description: x
    review:
      stage: before
      policy: auto_with_thresholds
      thresholds: {max_cost_usd: 0.1, max_output_tokens: 100}
      reviewer: judge
"""
    path = tmp_path / "project.yaml"
    path.write_text(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "2 tasks" in result.output


def test_the_published_schema_describes_review() -> None:
    schema = project_json_schema()
    assert json.loads(SCHEMA_PATH.read_text()) == schema
    task_review = schema["$defs"]["AgentTask"]["properties"]["review"]
    assert task_review == schema["$defs"]["ProjectDefaults"]["properties"]["review"]
    assert task_review["anyOf"] == [
        {"$ref": "#/$defs/ReviewPolicy"},
        {"$ref": "#/$defs/ReviewSpec"},
        {"type": "null"},
    ]
    thresholds = schema["$defs"]["ReviewThresholds"]
    assert thresholds["additionalProperties"] is False
    assert thresholds["properties"]["finish_reasons"]["anyOf"][0]["items"]["pattern"] == "^[a-z][a-z0-9_]*$"

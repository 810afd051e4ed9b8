"""The CLI on pipelines: validation messages of conditions, triggers, code steps and output files (file, line,
task, field, exit 2), ``--allow-outside``, and the exit code of a run whose branch was not taken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli.app import app

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


BAD = """\
name: bad
agents:
  crunch: {type: python, limits: {max_concurrent: 2}}
  writer: {type: offline}
tasks:
  - id: a
    description: "x"
  - id: bad_when
    description: "y"
    when: "{{ tasks.a.output == }}"
    depends_on: [a]
  - id: bare_when
    description: "q"
    when: "tasks.a.output"
  - id: far_when
    description: "q"
    when: "{{ tasks.a.output }}"
  - id: not_a_ref
    call: "not a ref"
  - id: no_module
    call: "no_such_module_anywhere:f"
  - id: no_attribute
    call: "pipeline_cli_steps:missing"
  - id: not_callable
    call: "pipeline_cli_steps:VALUE"
  - id: call_on_llm
    type: llm
    description: "z"
    call: "pipeline_cli_steps:step"
  - id: model_agent_on_step
    call: "pipeline_cli_steps:step"
    agent: writer
  - id: python_agent_on_llm
    description: "q"
    agent: crunch
  - id: no_call
    type: python
  - id: prompt_on_step
    call: "pipeline_cli_steps:step"
    system_prompt: "You are a function"
  - id: escape
    description: "q"
    output_file: "../escape.md"
  - id: params_on_llm
    description: "q"
    params: {n: 1}
  - id: request_review_on_step
    call: "pipeline_cli_steps:step"
    review: {stage: before, policy: require_human}
  - id: no_description
    depends_on: [a]
"""

EXPECTED = [
    ("10", "bad_when", "when", "unexpected 'end of print statement'"),
    ("14", "bare_when", "when", "a condition is a template expression"),
    ("17", "far_when", "when", "template reads tasks.a: it is not an ancestor (add it to depends_on)"),
    ("19", "not_a_ref", "call", "call must be 'package.module:function'"),
    ("21", "no_module", "call", "cannot import module 'no_such_module_anywhere'"),
    ("23", "no_attribute", "call", "module 'pipeline_cli_steps' has no attribute 'missing'"),
    ("25", "not_callable", "call", "'pipeline_cli_steps:VALUE' is not callable (it is a int)"),
    ("29", "call_on_llm", "call", "call is for code steps: set type: python"),
    ("32", "model_agent_on_step", "agent", "agent 'writer' is not a python agent"),
    ("35", "python_agent_on_llm", "agent", "agent 'crunch' is a python agent: it runs code steps"),
    ("36", "no_call", "call", "a code step (type: python) needs call"),
    ("40", "prompt_on_step", "system_prompt", "system_prompt is for model tasks"),
    ("43", "escape", "output_file", "is outside the project's folder"),
    ("46", "params_on_llm", "params", "params are given to code steps (type: python) only"),
    ("49", "request_review_on_step", "review.stage", "a code step has no request to review: use stage: after"),
    ("50", "no_description", "description", "a model task needs a description (its prompt)"),
]


def test_every_problem_is_reported_with_file_line_task_and_field(tmp_path: Path) -> None:
    (tmp_path / "pipeline_cli_steps.py").write_text("VALUE = 3\n\ndef step(context):\n    return 'ok'\n")
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    code, output = invoke("validate", str(path))
    assert code == 2, output
    assert f"{len(EXPECTED)} problems found" in output
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == len(EXPECTED), output
    for number, task, field, message in EXPECTED:
        where = f"- {path}:{number}: task '{task}', field '{field}': "
        assert any(line.startswith(where) and message in line for line in lines), (where, message, output)
    assert "Traceback" not in output


def test_an_unknown_trigger_is_reported_with_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "trigger.yaml"
    path.write_text(
        "tasks:\n  - {id: a, description: x}\n  - {id: b, description: y, depends_on: [a], trigger: often}\n"
    )
    code, output = invoke("validate", str(path))
    assert code == 2
    assert f"{path}:3: task 'b', field 'trigger':" in output
    assert "'all_success', 'all_done', 'none_failed' or 'one_success'" in output


@pytest.mark.parametrize("command", ["validate", "run"])
def test_allow_outside_lets_an_output_file_leave_the_folder(tmp_path: Path, command: str) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "p.yaml"
    path.write_text("tasks:\n  - {id: a, description: hello, output_file: ../shared/a.md}\n")
    code, output = invoke(command, str(path))
    assert code == 2 and "outside the project's folder" in output
    code, output = invoke(command, str(path), "--allow-outside")
    assert code == 0, output
    if command == "run":
        assert (tmp_path / "shared" / "a.md").read_text() == "hello"


def test_a_run_whose_branch_was_not_taken_succeeds(tmp_path: Path) -> None:
    (tmp_path / "pipeline_cli_branch.py").write_text(
        "def triage(context):\n    return {'urgent': context.inputs['level'] == 'high'}\n"
    )
    path = tmp_path / "branch.yaml"
    path.write_text(
        "name: branch\n"
        "inputs: {level: low}\n"
        "tasks:\n"
        "  - {id: triage, call: 'pipeline_cli_branch:triage', output_format: json}\n"
        "  - {id: page, depends_on: [triage], when: '{{ tasks.triage.parsed.urgent }}', description: page}\n"
        "  - {id: log, depends_on: [triage], when: '{{ not tasks.triage.parsed.urgent }}', description: log}\n"
        "  - {id: done, depends_on: [page, log], trigger: none_failed, description: 'done', output_file: done.md}\n"
    )
    results = tmp_path / "results.json"
    code, output = invoke("run", str(path), "--results", str(results))
    assert code == 0, output
    document = json.loads(results.read_text())
    assert document["status"] == "success"
    page = document["results"]["page"]
    assert page["status"] == "skipped" and page["error"]["type"] == "condition_false"
    assert document["results"]["done"]["output_path"] == str(tmp_path / "done.md")
    assert (tmp_path / "done.md").read_text() == "done"
    code, output = invoke("run", str(path), "--input", "level=high", "-q")
    assert code == 0, output


@pytest.mark.parametrize("urgent", ["true", "false"])
def test_the_support_pipeline_example_runs_offline(tmp_path: Path, urgent: str) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    for name in ("support_pipeline.yaml", "support_steps.py"):
        (tmp_path / name).write_text((examples / name).read_text())
    results = tmp_path / "results.json"
    code, output = invoke(
        "run", str(tmp_path / "support_pipeline.yaml"), "-i", f"urgent={urgent}", "--results", str(results)
    )
    assert code == 0, output
    document = json.loads(results.read_text())["results"]
    taken, skipped = ("page_oncall", "backlog") if urgent == "true" else ("backlog", "page_oncall")
    assert document[taken]["status"] == "success" and document[skipped]["error"]["type"] == "condition_false"
    assert json.loads(document["stats"]["output"]) == {"area": "billing", "window_days": 7, "similar": 3}
    assert (tmp_path / "replies" / "billing.md").read_text().startswith("Reply to the customer.")
    assert f"{skipped}: skipped" in (tmp_path / "audit.txt").read_text()


def test_the_ticket_triage_example_runs_every_pipeline_feature_offline(tmp_path: Path) -> None:
    """examples/triage.yaml through the CLI: a map over a JSONL file with an attachment per ticket, a json
    classification, a per-item when, a code step in the map, a none_failed join per item, output files per item
    and an all_done report; a resume calls nothing again."""
    examples = Path(__file__).resolve().parents[1] / "examples"
    for name in ("triage.yaml", "triage_steps.py", "tickets.jsonl"):
        shutil.copy(examples / name, tmp_path / name)
    shutil.copytree(examples / "ticket_logs", tmp_path / "ticket_logs")
    results, store = tmp_path / "results.json", str(tmp_path / "runs.db")
    code, output = invoke("run", str(tmp_path / "triage.yaml"), "--results", str(results), "--store", store)
    assert code == 0, output
    document = json.loads(results.read_text())
    assert document["status"] == "success" and len(document["results"]) == 17
    tasks = document["results"]
    assert tasks["classify"]["items"] == ["classify[T-101]", "classify[T-102]", "classify[T-103]"]
    assert json.loads(tasks["classify[T-103]"]["output"]) == {"urgent": True, "area": "billing"}
    code, shown = invoke("show", "latest", "classify[T-103]", "--store", store)
    assert code == 0 and "[attachment: T-103.txt (text/plain, 64 bytes" in shown  # its own log (by name and digest)
    assert tasks["page[T-102]"]["error"]["type"] == "condition_false" and tasks["page"]["status"] == "success"
    assert json.loads(tasks["label[T-101]"]["output"]) == {
        "ticket": "T-101",
        "position": 0,
        "priority": "P1",
        "queue": "frontend",
    }
    assert tasks["label[T-101]"]["provider"] == "python"
    out = tmp_path / "triage_out"
    assert sorted(p.name for p in (out / "pages").iterdir()) == ["T-101.md", "T-103.md"]
    reply = (out / "replies" / "T-102.md").read_text()
    assert reply.startswith("Draft a reply to T-102 for the frontend queue (on-call paged: False)")
    assert tasks["draft[T-102]"]["output_path"] == str(out / "replies" / "T-102.md")
    assert (out / "report.md").read_text() == "3 tickets, 2 urgent; replies success: success, success, success"

    code, output = invoke("resume", "latest", "--store", store, "-q")
    assert code == 0, output


def test_agents_check_has_nothing_to_call_for_a_python_agent(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("agents:\n  crunch: {type: python, limits: {max_concurrent: 2}}\ntasks: []\n")
    code, output = invoke("agents", "check", str(path), "--agent", "crunch")
    assert code == 0, output
    assert "runs code steps" in output

"""``output_file``: outputs written atomically after the success is committed, paths kept inside the project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm
from orchestration import ExecutionResult, ExecutionStatus, ProjectOrchestrator, ProjectSpec, ProjectValidationError
from orchestration.output_files import OutputFileError, OutputFiles, resolve_output_path
from orchestration.store import RunStore


def registry() -> AgentRegistry:
    return AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])


def project_file(folder: Path, tasks: str, inputs: str = "{}") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "project.yaml"
    path.write_text(f"name: files\ninputs: {inputs}\ntasks:\n{tasks}")
    return path


def error_of(result: ExecutionResult) -> tuple[str, str]:
    assert result.error is not None, result
    return result.error.type, result.error.message


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


async def test_outputs_are_written_where_their_templates_say(tmp_path: Path) -> None:
    path = project_file(
        tmp_path / "project",
        "  - {id: brief, description: 'A brief on {{ inputs.topic }}', output_file: 'reports/{{ inputs.topic }}.md'}\n"
        "  - id: data\n"
        "    description: '{\"n\": 1}'\n"
        "    output_format: json\n"
        '    output_file: \'reports/{{ tasks.brief.output | replace(" ", "_") }}.json\'\n'
        "    depends_on: [brief]\n",
        inputs="{topic: otters}",
    )
    results = await ProjectOrchestrator.from_file(path, registry=registry()).run()
    folder = tmp_path / "project" / "reports"
    assert (folder / "otters.md").read_text() == "A brief on otters"
    assert results["brief"].output_path == str(folder / "otters.md")
    assert (folder / "A_brief_on_otters.json").read_text() == '{"n": 1}'
    assert results["data"].output_path == str(folder / "A_brief_on_otters.json")
    assert leftovers(tmp_path) == []


async def test_the_file_is_written_after_the_success_is_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_path = tmp_path / "runs.db"
    seen: list[ExecutionStatus] = []
    write = OutputFiles.write

    def spy(path: Path, text: str) -> None:
        reader = RunStore(store_path)
        seen.append(reader.load_results("r")["t"].status)
        reader.close()
        write(path, text)

    monkeypatch.setattr(OutputFiles, "write", staticmethod(spy))
    path = project_file(tmp_path, "  - {id: t, description: hello, output_file: out.txt}\n")
    store = RunStore(store_path)
    results = await ProjectOrchestrator.from_file(path, registry=registry(), store=store).run(run_id="r")
    assert seen == [ExecutionStatus.SUCCESS]
    assert (tmp_path / "out.txt").read_text() == "hello" and results["t"].succeeded
    assert store.load_results("r")["t"].output_path == str(tmp_path / "out.txt")
    store.close()


async def test_a_file_that_cannot_be_written_fails_the_task_and_keeps_the_answer(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file where a folder should be")
    path = project_file(
        tmp_path,
        "  - {id: t, description: the answer, output_file: blocked/out.txt}\n"
        "  - {id: after, description: after, depends_on: [t]}\n"
        "  - {id: report, description: 'report {{ tasks.t.status }}', depends_on: [t], trigger: all_done}\n",
    )
    store = RunStore(tmp_path / "runs.db")
    results = await ProjectOrchestrator.from_file(path, registry=registry(), store=store).run(run_id="r")
    kind, message = error_of(results["t"])
    assert kind == "output_file_error" and "could not write the output file" in message
    assert results["t"].status is ExecutionStatus.FAILED and results["t"].output == "the answer"
    assert error_of(results["after"])[0] == "upstream_failed"
    assert results["report"].output == "report failed"
    stored = store.load_results("r")["t"]
    assert stored.status is ExecutionStatus.FAILED and stored.output == "the answer"  # the answer is kept
    store.close()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "output_file",
    ["../outside.md", "/tmp/elsewhere/outside.md", "reports/../../outside.md", "link/outside.md"],
)
def test_a_path_out_of_the_project_folder_is_refused_before_anything_runs(tmp_path: Path, output_file: str) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path, target_is_directory=True)
    path = project_file(folder, f"  - {{id: t, description: x, output_file: '{output_file}'}}\n")
    with pytest.raises(ProjectValidationError) as caught:
        ProjectOrchestrator.from_file(path, registry=registry()).validate()
    (issue,) = caught.value.issues
    assert (issue.task, issue.field, issue.line) == ("t", "output_file", 4)
    assert "outside the project's folder" in issue.message and "--allow-outside" in issue.message
    ProjectOrchestrator.from_file(path, registry=registry(), allow_outside=True).validate()


async def test_a_rendered_path_out_of_the_folder_fails_the_task_unless_allowed(tmp_path: Path) -> None:
    tasks = "  - {id: t, description: x, output_file: '{{ inputs.where }}/out.md'}\n"
    path = project_file(tmp_path / "project", tasks, inputs="{where: ..}")
    results = await ProjectOrchestrator.from_file(path, registry=registry()).run()
    kind, message = error_of(results["t"])
    assert kind == "output_file_error" and "outside the project's folder" in message
    assert not (tmp_path / "out.md").exists()
    results = await ProjectOrchestrator.from_file(path, registry=registry(), allow_outside=True).run()
    assert results["t"].succeeded and (tmp_path / "out.md").read_text() == "x"


def test_paths_that_name_no_file_are_refused(tmp_path: Path) -> None:
    for text in ("", "  ", "reports/", "."):
        with pytest.raises(OutputFileError):
            resolve_output_path(text, tmp_path)
    assert resolve_output_path("a/b.txt", tmp_path) == (tmp_path / "a" / "b.txt").resolve()


async def test_a_code_steps_json_output_and_a_python_built_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a project built in Python writes relative to the current folder
    spec = ProjectSpec(name="py")
    run = ProjectOrchestrator(spec, registry=registry(), llms={"m": FunctionLlm(lambda messages, options: "hi")})
    run.add_step("numbers", lambda context: {"n": [1, 2]}, output_format="json", output_file="out/numbers.json")
    run.add_task({"id": "hello", "description": "x", "agent": "m", "output_file": "out/hello.txt"})
    results = await run.run()
    assert (tmp_path / "out" / "numbers.json").read_text() == '{"n": [1, 2]}'
    assert (tmp_path / "out" / "hello.txt").read_text() == "hi"
    assert results["numbers"].output_path == str(tmp_path / "out" / "numbers.json")


def test_an_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old content that is longer")
    OutputFiles.write(target, "new")
    assert target.read_text() == "new" and leftovers(tmp_path) == []
    inode: Any = os.stat(target).st_ino
    OutputFiles.write(target, "newer")
    assert os.stat(target).st_ino != inode  # a rename, not a rewrite in place


async def test_a_resume_writes_a_kept_tasks_missing_file_again_without_calling_the_model(tmp_path: Path) -> None:
    calls: list[str] = []

    def model(messages: Any, options: Any) -> str:
        calls.append(messages[-1].content)
        return messages[-1].content.upper()

    path = project_file(tmp_path, "  - {id: t, description: hello, agent: m, output_file: out/t.txt}\n")
    store = RunStore(tmp_path / "runs.db")

    def orchestrator() -> ProjectOrchestrator:
        return ProjectOrchestrator.from_file(path, registry=registry(), store=store, llms={"m": FunctionLlm(model)})

    await orchestrator().run(run_id="r")
    (tmp_path / "out" / "t.txt").unlink()  # as if the process died between the commit and the write
    again = orchestrator()
    results = await again.resume("r")
    assert again.resume_plan is not None and set(again.resume_plan.kept) == {"t"}
    assert (tmp_path / "out" / "t.txt").read_text() == "HELLO" and calls == ["hello"]
    assert results["t"].output_path == str(tmp_path / "out" / "t.txt")
    store.close()

"""Task attachments: media types, paths kept inside the project's folder, templates, validation per provider,
refusals before any call, fingerprints, and no bytes in the store, the events or the logs."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_registry import AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, Message
from llm_abstractions.attachments import Attachment, AttachmentError, detect_media_type, inline_text_attachments
from orchestration import ProjectOrchestrator
from orchestration.events import RunEvent
from orchestration.issues import ProjectValidationError, ValidationIssue
from orchestration.models import ExecutionStatus
from orchestration.store import RunStore
from tests.fakes import media
from tests.fakes.agents import agent_settings
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer, Reply

__all__ = ["fake_server"]

MARKER = b"do-not-log-these-pixels"
PNG = media.png(MARKER)
PNG_B64 = base64.b64encode(PNG).decode()


def _registry() -> AgentRegistry:
    """The built-in ``offline`` agent only (nothing from the environment)."""
    return AgentRegistry.default(env={})


def _project(tmp_path: Path, yaml: str, **files: bytes | str) -> Path:
    """``tmp_path/proj/p.yaml`` holding ``yaml``, beside ``files`` (relative name -> content)."""
    folder = tmp_path / "proj"
    for name, content in {"data/dot.png": PNG, "data/notes.md": "Otters hold hands.\n", **files}.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (folder / "p.yaml").write_text(yaml)
    return folder / "p.yaml"


def _issues(path: Path, **kwargs: Any) -> list[ValidationIssue]:
    with pytest.raises(ProjectValidationError) as caught:
        ProjectOrchestrator.from_file(path, registry=_registry(), **kwargs).validate()
    return caught.value.issues


async def _run(path: Path, **kwargs: Any) -> ProjectOrchestrator:
    orchestrator = ProjectOrchestrator.from_file(path, registry=_registry(), **kwargs)
    await orchestrator.run()
    return orchestrator


# -- media types and the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (media.png(), "a.bin", "image/png"),
        (media.jpeg(), "photo.jpg", "image/jpeg"),
        (media.gif(), "anim", "image/gif"),
        (media.webp(), "x.webp", "image/webp"),
        (media.pdf(), "paper", "application/pdf"),
        (media.png(), "misnamed.jpg", "image/png"),  # the bytes win over the extension
        (b"# Title\n", "notes.md", "text/markdown"),
        (b"a,b\n1,2\n", "table.csv", "text/csv"),
        (b'{"a": 1}', "data.json", "application/json"),
        (b"key: value\n", "conf.yaml", "application/yaml"),
        ("caf\u00e9 na\u00efve\n".encode(), "README", "text/plain"),
    ],
)
def test_media_types_come_from_magic_bytes_then_the_extension_then_utf8(data: bytes, name: str, expected: str) -> None:
    assert detect_media_type(data, name) == expected


@pytest.mark.parametrize(
    ("data", "name", "declared", "message"),
    [
        (b"not a png", "fake.png", None, "fake.png does not look like a PNG image"),
        (media.jpeg(), "x", "image/png", "x is declared image/png, but it looks like a JPEG image"),
        (b"PK\x03\x04\x00\x00", "doc.docx", None, "attachments are PNG, JPEG, WebP or GIF images, PDFs"),
        (b"\xff\xfe\x00\x01binary", "blob", None, "neither an image, a PDF nor UTF-8 text"),
        (b"\xe9t\xe9", "latin1.txt", None, "text/plain, but it is not UTF-8 text"),
        (b"ID3\x03", "song.mp3", None, "song.mp3 is audio/mpeg"),
    ],
)
def test_unusable_files_are_refused_by_name(data: bytes, name: str, declared: str | None, message: str) -> None:
    with pytest.raises(AttachmentError, match=re.escape(message)):
        detect_media_type(data, name, declared)


def test_an_attachment_never_shows_or_serialises_its_bytes_or_a_urls_query() -> None:
    image = Attachment.from_bytes(PNG, "dot.png")
    url = Attachment.from_url("https://example.com/a/cat.jpg?X-Amz-Signature=abc123")
    message = Message.user("look", [image, url])
    for text in (repr(message), str(message), message.model_dump_json(), json.dumps(message.model_dump(mode="json"))):
        assert PNG_B64[:40] not in text and "do-not-log" not in text and "abc123" not in text
    assert message.model_dump(mode="json")["attachments"][1]["url"] == "https://example.com/a/cat.jpg"
    assert image.reference.data is None and image.reference.sha256 == image.sha256
    assert url.reference.url == "https://example.com/a/cat.jpg"
    assert image.label == f"dot.png (image/png, {len(PNG)} bytes, sha256 {image.sha256[:12] if image.sha256 else ''})"
    assert Message.model_validate(message.model_dump(mode="json")).attachments == (image.reference, url.reference)
    assert Message.user("plain").model_dump() == {"role": "user", "content": "plain"}  # unchanged without attachments


def test_text_files_are_inlined_before_the_prompt_naming_each_file() -> None:
    notes = Attachment.from_bytes(b"Otters hold hands.\n", "notes.md")
    image = Attachment.from_bytes(PNG, "dot.png")
    [inlined] = inline_text_attachments([Message.user("Summarise.", [notes, image])])
    assert inlined.content == (
        '<attachment name="notes.md" media_type="text/markdown">\nOtters hold hands.\n</attachment>\n\nSummarise.'
    )
    assert inlined.attachments == (image,)


def test_a_url_needs_a_media_type_it_can_tell() -> None:
    with pytest.raises(AttachmentError, match=re.escape("cannot tell the media type of https://example.com/render")):
        Attachment.from_url("https://example.com/render?id=7")
    assert Attachment.from_url("https://example.com/render?id=7", "image/png").name == "render"
    with pytest.raises(AttachmentError, match="only PNG, JPEG, WebP or GIF images and PDFs can be sent by URL"):
        Attachment.from_url("https://example.com/notes.md")
    assert Attachment.from_url("https://user:pw@example.com/a.png?t=1#f").reference.url == "https://example.com/a.png"


# -- a project's attachments ---------------------------------------------------------------------------------

LOOK = """\
name: att
inputs: {picture: data/dot.png}
tasks:
  - id: look
    description: "Describe them."
    attachments:
      - "{{ inputs.picture }}"
      - data/notes.md
      - paper.pdf
      - https://example.com/cat.jpg
      - {source: "https://example.com/render?id=1", media_type: image/webp}
"""


async def test_the_offline_agent_reports_what_arrived(tmp_path: Path) -> None:
    orchestrator = await _run(_project(tmp_path, LOOK, **{"paper.pdf": media.pdf(3)}))
    result = orchestrator.results["look"]
    assert result.status is ExecutionStatus.SUCCESS, result.error
    image, pdf = Attachment.from_bytes(PNG, "dot.png"), Attachment.from_bytes(media.pdf(3), "paper.pdf")
    assert result.output is not None
    assert result.output.startswith('<attachment name="notes.md" media_type="text/markdown">\nOtters hold hands.\n')
    assert result.output.endswith(
        f"Describe them.\n\n[attachments: {image.label}, {pdf.label}, cat.jpg (image/jpeg, by URL "
        "https://example.com/cat.jpg), render (image/webp, by URL https://example.com/render)]"
    )
    assert f"paper.pdf (application/pdf, {len(media.pdf(3))} bytes, 3 pages, sha256 " in pdf.label
    assert result.request is not None
    assert [a.name for a in result.request[0].attachments] == ["dot.png", "notes.md", "paper.pdf", "cat.jpg", "render"]
    assert all(a.data is None for a in result.request[0].attachments)  # the result keeps references only


async def test_a_template_over_an_upstream_output_is_read_when_the_task_runs(tmp_path: Path) -> None:
    path = _project(
        tmp_path,
        """\
agents:
  picker: {type: offline, response: data/dot.png}
tasks:
  - {id: pick, agent: picker, description: "Which picture?"}
  - id: look
    depends_on: [pick]
    description: "Describe it."
    attachments: ["{{ tasks.pick.output }}"]
""",
    )
    orchestrator = await _run(path)
    assert orchestrator.results["look"].output == (
        f"Describe it.\n\n[attachments: {Attachment.from_bytes(PNG, 'dot.png').label}]"
    )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("data/missing.png", "attachments.0: no such file: data/missing.png"),
        ("../outside.png", "attachments.0: ../outside.png is outside"),
        ("data", "attachments.0: " + "{folder}/data is a folder, not a file"),
        ("data/notes.md", None),
    ],
)
async def test_a_file_named_at_run_time_that_cannot_be_sent_fails_the_task(
    tmp_path: Path, answer: str, message: str | None
) -> None:
    (tmp_path / "outside.png").write_bytes(PNG)
    path = _project(
        tmp_path,
        f"""\
agents:
  picker: {{type: offline, response: "{answer}"}}
tasks:
  - {{id: pick, agent: picker, description: "Which file?"}}
  - {{id: look, depends_on: [pick], description: "Read it.", attachments: ["{{{{ tasks.pick.output }}}}"]}}
""",
    )
    result = (await _run(path)).results["look"]
    if message is None:
        assert result.status is ExecutionStatus.SUCCESS
        return
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None and result.error.type == "invalid_request"
    assert message.format(folder=path.parent.resolve()) in result.error.message
    assert result.attempts == 0


def test_paths_that_leave_the_projects_folder_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (tmp_path / "proj" / "data").mkdir(parents=True)
    (tmp_path / "proj" / "data" / "link.txt").symlink_to(outside)
    path = _project(
        tmp_path,
        f"""\
tasks:
  - id: a
    description: "x"
    attachments:
      - ../secret.txt
      - {outside}
      - data/link.txt
      - data/../data/notes.md
""",
    )
    issues = _issues(path)
    assert [(i.task, i.field, i.line, i.file) for i in issues] == [
        ("a", f"attachments.{n}", 5 + n, path) for n in range(3)
    ]
    for issue in issues:
        assert f"is outside {path.parent.resolve()} (resolved to {outside.resolve()})" in issue.message
        assert "--attachment-dir" in issue.message
    # allowed explicitly, by the Python API
    assert ProjectOrchestrator.from_file(path, registry=_registry(), attachment_dirs=[tmp_path]).validate()


def test_the_cli_refuses_with_exit_2_unless_the_folder_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "logo.png").write_bytes(PNG)
    path = _project(tmp_path, 'tasks:\n  - {id: a, description: "x", attachments: [../shared/logo.png]}\n')
    env = {key: value for key, value in os.environ.items() if key != "ORCHESTRATE_ATTACHMENT_DIRS"}

    def validate(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "orchestration", "validate", str(path), *args]
        return subprocess.run(command, capture_output=True, text=True, env={**env, **extra}, timeout=60)

    refused = validate()
    assert refused.returncode == 2
    assert f"{path}:2: task 'a', field 'attachments.0': ../shared/logo.png is outside" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert validate("--attachment-dir", str(tmp_path / "shared")).returncode == 0
    joined = os.pathsep.join([str(tmp_path / "elsewhere"), str(tmp_path / "shared")])
    assert validate(ORCHESTRATE_ATTACHMENT_DIRS=joined).returncode == 0


def test_static_attachments_are_checked_when_the_project_is_validated(tmp_path: Path) -> None:
    path = _project(
        tmp_path,
        """\
name: checks
agents:
  local: {type: mlx, model: some/model}
  gem: {type: gemini, model: gemini-2.5-flash, api_key: k}
  claude: {type: claude, model: claude-sonnet-4-6, api_key: k}
tasks:
  - {id: missing, description: "x", attachments: [data/nope.png]}
  - {id: word, description: "x", attachments: [doc.docx]}
  - {id: lying, description: "x", attachments: [{source: data/dot.png, media_type: image/jpeg}]}
  - {id: unknown, description: "x", attachments: ["{{ inputs.nope }}", "{{ item.path }}"]}
  - {id: later, description: "x", attachments: ["{{ tasks.word.output }}"]}
  - {id: nourl, description: "x", attachments: ["https://example.com/render"]}
  - {id: local, agent: local, description: "x", attachments: [data/dot.png, data/notes.md]}
  - {id: gem, agent: gem, description: "x", attachments: [anim.gif]}
  - {id: big, agent: claude, description: "x", attachments: [big.png]}
  - {id: fine, agent: local, description: "x", attachments: [data/notes.md]}
""",
        **{"doc.docx": b"PK\x03\x04zip", "anim.gif": media.gif(), "big.png": media.padded_png(4 * 1024 * 1024)},
    )
    found = {(i.task, i.field): (i.line, i.message) for i in _issues(path)}
    expected = {
        ("missing", "attachments.0"): (7, "no such file: data/nope.png"),
        ("word", "attachments.0"): (8, "doc.docx is neither an image, a PDF nor UTF-8 text"),
        ("lying", "attachments.0"): (9, "dot.png is declared image/jpeg, but it looks like a PNG image"),
        ("unknown", "attachments.0"): (10, "template uses input 'nope', which is neither in 'inputs' nor given"),
        ("unknown", "attachments.1"): (10, "template uses unknown name 'item'"),
        ("later", "attachments.0"): (11, "template reads tasks.word: it is not an ancestor (add it to depends_on)"),
        ("nourl", "attachments.0"): (
            12,
            "cannot tell the media type of https://example.com/render: give its media_type",
        ),
        ("local", "attachments"): (
            13,
            "mlx takes no images or PDFs (text files only, inlined into the prompt): dot.png",
        ),
        ("gem", "attachments"): (14, "gemini does not take image/gif (anim.gif); it takes application/pdf, image/jpeg"),
        ("big", "attachments"): (15, "big.png is 5.3 MB base64-encoded; claude takes images up to 5.0 MB"),
    }
    assert set(found) == set(expected)
    for key, (line, message) in expected.items():
        assert found[key][0] == line, key
        assert message in found[key][1], (key, found[key][1])


async def test_a_provider_limit_met_at_run_time_fails_the_task_before_any_request(
    tmp_path: Path, fake_server: FakeProviderServer
) -> None:
    # the file is named by an upstream answer: validation cannot see it, the executor refuses it before calling
    claude = json.dumps(agent_settings("claude", fake_server))
    path = _project(
        tmp_path,
        f"""\
agents:
  picker: {{type: offline, response: big.png}}
  claude: {claude}
tasks:
  - {{id: pick, agent: picker, description: "Which?"}}
  - {{id: look, agent: claude, depends_on: [pick], description: "Look.", attachments: ["{{{{ tasks.pick.output }}}}"]}}
""",
        **{"big.png": media.padded_png(4 * 1024 * 1024)},
    )
    result = (await _run(path)).results["look"]
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None and result.error.type == "invalid_request"
    assert "big.png is 5.3 MB base64-encoded; claude takes images up to 5.0 MB" in result.error.message
    assert (result.attempts, result.attempt_log) == (0, [])
    assert fake_server.requests == []


async def test_a_changed_attachment_reruns_its_task_on_resume(tmp_path: Path) -> None:
    path = _project(
        tmp_path,
        """\
name: resumable
tasks:
  - {id: look, description: "Describe.", attachments: [data/dot.png]}
  - {id: later, depends_on: [look], description: "Then {{ tasks.look.output }}"}
  - {id: other, description: "Unrelated."}
""",
    )
    store = tmp_path / "runs.db"
    first = await _run(path, store=store)
    run_id = first.run_id
    assert run_id is not None

    again = ProjectOrchestrator.from_file(path, registry=_registry(), store=store)
    await again.resume(run_id)
    assert again.resume_plan is not None and again.resume_plan.changed == []

    (tmp_path / "proj" / "data" / "dot.png").write_bytes(media.png(b"another picture"))
    changed = ProjectOrchestrator.from_file(path, registry=_registry(), store=store)
    await changed.resume(run_id)
    assert changed.resume_plan is not None
    assert (changed.resume_plan.changed, changed.resume_plan.downstream) == (["look"], ["later"])
    assert sorted(changed.resume_plan.kept) == ["other"]
    new_digest = Attachment.from_bytes(media.png(b"another picture"), "dot.png").sha256
    assert new_digest is not None and new_digest[:12] in (changed.results["look"].output or "")


async def test_bytes_stay_out_of_results_events_and_the_store(tmp_path: Path, fake_server: FakeProviderServer) -> None:
    fake_server.script("anthropic", Reply(text="A red dot."))
    claude = json.dumps(agent_settings("claude", fake_server))
    path = _project(
        tmp_path,
        f"""\
agents:
  claude: {claude}
tasks:
  - {{id: look, agent: claude, description: "Describe.", attachments: [data/dot.png]}}
""",
    )
    events: list[RunEvent] = []
    store = tmp_path / "runs.db"
    orchestrator = ProjectOrchestrator.from_file(path, registry=_registry(), store=store)
    orchestrator.on_event(events.append)
    await orchestrator.run()
    assert orchestrator.results["look"].output == "A red dot."
    [request] = fake_server.requests
    assert PNG_B64 in request.raw_body.decode()  # the provider got the bytes...

    def clean(text: str) -> None:  # ...nothing else did
        assert PNG_B64[:24] not in text and MARKER.decode() not in text

    for event in events:
        clean(repr(event))
        if event.result is not None:
            clean(event.result.model_dump_json())
            for message in event.result.request or []:
                assert all(a.data is None for a in message.attachments)
    with sqlite3.connect(store) as connection:
        for table in ("runs", "results"):
            for row in connection.execute(f"SELECT * FROM {table}"):
                clean(repr(row))
    stored = RunStore(store).load_task(orchestrator.run_id or "", "look")
    assert stored is not None and stored.result.request is not None
    [image] = stored.result.request[0].attachments
    assert (image.name, image.media_type, image.size, image.data) == ("dot.png", "image/png", len(PNG), None)


def test_the_cli_logs_and_shows_names_and_digests_only(tmp_path: Path, fake_server: FakeProviderServer) -> None:
    fake_server.script("openai", Reply(text="A red dot."))
    gpt = json.dumps(agent_settings("gpt", fake_server))
    path = _project(
        tmp_path,
        f"""\
agents:
  gpt: {gpt}
tasks:
  - {{id: look, agent: gpt, description: "Describe.", attachments: [data/dot.png, data/notes.md]}}
""",
    )
    env = {**os.environ, "ORCHESTRATE_STORE": str(tmp_path / "runs.db")}
    command = [sys.executable, "-m", "orchestration", "run", str(path), "--log-level", "debug", "--log-format", "json"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert PNG_B64[:24] not in run.stderr + run.stdout and MARKER.decode() not in run.stderr
    show = subprocess.run(
        [sys.executable, "-m", "orchestration", "show", "latest", "look"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert show.returncode == 0, show.stderr
    image = Attachment.from_bytes(PNG, "dot.png")
    assert f"[attachment: {image.label}]" in show.stdout
    assert "[attachment: notes.md (text/markdown, 19 bytes, sha256 " in show.stdout
    assert "Otters hold hands" not in show.stdout and PNG_B64[:24] not in show.stdout


async def test_a_function_model_gets_text_inlined_and_images_as_attachments() -> None:
    seen: list[Message] = []

    def answer(messages: Any, options: GenerationOptions) -> str:
        seen.extend(messages)
        return "ok"

    notes = Attachment.from_bytes(b"some notes", "n.txt")
    image = Attachment.from_bytes(PNG, "dot.png")
    await FunctionLlm(answer).generate_content_async([Message.user("Hi.", [notes, image])])
    [message] = seen
    assert message.content == '<attachment name="n.txt" media_type="text/plain">\nsome notes\n</attachment>\n\nHi.'
    assert message.attachments == (image,)


def test_a_reviewer_of_the_request_sees_the_attachments_references(tmp_path: Path) -> None:
    from orchestration.executor import TaskExecutor
    from orchestration.gating import request_payload

    path = _project(tmp_path, 'tasks:\n  - {id: look, description: "Describe.", attachments: [data/dot.png]}\n')
    project = ProjectOrchestrator.from_file(path, registry=_registry()).validate()
    task = project.task("look")
    payload = request_payload(task, TaskExecutor.messages_for(task, project.inputs, {}))
    image = Attachment.from_bytes(PNG, "dot.png")
    assert payload["attachments"] == [
        {"name": "dot.png", "media_type": "image/png", "size": len(PNG), "sha256": image.sha256}
    ]
    assert PNG_B64[:24] not in json.dumps(payload)

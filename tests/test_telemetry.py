"""OpenTelemetry traces: a span per run and task, a ``chat {model}`` CLIENT span per model call with the GenAI
attributes, collected in memory (and, from the CLI, exported with OTLP to a collector on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent_registry import AgentConfig, AgentRegistry
from llm_abstractions import FunctionLlm, GenerationOptions, Message, RateLimitedError
from orchestration import ProjectOrchestrator, ProjectSpec
from tests.fakes.fixtures import fake_server
from tests.fakes.provider_server import FakeProviderServer, Reply

__all__ = ["fake_server"]

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(finished: Sequence[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in finished:
        found.setdefault(span.name, []).append(span)
    return found


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


class Flaky:
    """Fails its first call with a rate limit, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        self.calls += 1
        if self.calls == 1:
            raise RateLimitedError("slow down", retry_after=0.0)
        return "ok"


def test_runs_tasks_and_calls_nest(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    spec = ProjectSpec.model_validate(
        {
            "name": "traced",
            "agents": {"m": {"type": "offline", "retry": {"initial_backoff_s": 0.001}}},
            "tasks": [
                {"id": "a", "description": "first", "agent": "m", "options": {"max_tokens": 50, "temperature": 0.2}},
                {"id": "b", "description": "{{ tasks.a.output }}", "agent": "m", "depends_on": ["a"]},
            ],
        }
    )
    registry = AgentRegistry([AgentConfig.model_validate({"name": "offline", "type": "offline"})])
    orch = ProjectOrchestrator(
        spec, registry=registry, llms={"m": FunctionLlm(Flaky(), model="fn-model")}, otel=provider
    )
    results = anyio.run(lambda: orch.run(run_id="r1"))
    assert all(r.succeeded for r in results.values())

    named = by_name(exporter.get_finished_spans())
    (run,) = named["orchestrate run traced"]
    (task_a,) = named["orchestrate task a"]
    (task_b,) = named["orchestrate task b"]
    calls = named["chat fn-model"]
    assert run.parent is None and run.attributes is not None
    assert run.attributes["orchestrate.run.id"] == "r1" and run.attributes["orchestrate.run.status"] == "success"
    assert parent_of(task_a) == parent_of(task_b) == run.context.span_id
    a_calls = [c for c in calls if parent_of(c) == task_a.context.span_id]
    assert len(a_calls) == 2 and len(calls) == 3  # a: a rate limit, then the answer; b: one call
    failed, answered = sorted(a_calls, key=lambda c: c.start_time or 0)
    assert failed.kind is SpanKind.CLIENT and failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["error.type"] == "rate_limited"
    assert answered.attributes is not None and answered.attributes["orchestrate.attempt"] == 2
    assert answered.attributes["gen_ai.operation.name"] == "chat"
    assert answered.attributes["gen_ai.request.model"] == "fn-model"
    assert answered.attributes["gen_ai.request.max_tokens"] == 50
    assert answered.attributes["gen_ai.request.temperature"] == 0.2
    assert "gen_ai.input.messages" not in answered.attributes  # content only when opted in
    assert task_a.attributes is not None and task_a.attributes["orchestrate.task.attempts"] == 2
    assert task_a.attributes["orchestrate.task.status"] == "success"


def test_a_failed_task_and_run_are_errors(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans

    def broken(messages: Sequence[Message], options: GenerationOptions) -> str:
        raise ValueError("no")

    spec = ProjectSpec.model_validate({"name": "bad", "tasks": [{"id": "t", "description": "x", "agent": "m"}]})
    orch = ProjectOrchestrator(spec, llms={"m": FunctionLlm(broken)}, otel=provider)
    anyio.run(orch.run)
    named = by_name(exporter.get_finished_spans())
    (task,) = named["orchestrate task t"]
    (run,) = named["orchestrate run bad"]
    assert task.status.status_code is StatusCode.ERROR and task.attributes is not None
    assert task.attributes["error.type"] == "internal" and run.status.status_code is StatusCode.ERROR


def test_a_real_sdk_call_has_the_gen_ai_attributes(
    spans: tuple[TracerProvider, InMemorySpanExporter], fake_server: FakeProviderServer
) -> None:
    provider, exporter = spans
    fake_server.script("openai", Reply(text="four words of answer", model="gpt-test-2026", finish_reason="stop"))
    spec = ProjectSpec.model_validate(
        {
            "name": "sdk",
            "agents": {
                "writer": {"type": "gpt", "model": "gpt-test", "api_key": KEY, "base_url": fake_server.openai_base_url}
            },
            "tasks": [{"id": "t", "description": "say it", "agent": "writer", "system_prompt": "be brief"}],
        }
    )
    os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    try:
        results = anyio.run(ProjectOrchestrator(spec, otel=provider).run)
    finally:
        del os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"]
    usage = results["t"].usage
    assert usage is not None
    (call,) = by_name(exporter.get_finished_spans())["chat gpt-test"]
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.response.model"] == "gpt-test-2026"
    assert attributes["gen_ai.usage.input_tokens"] == usage.input_tokens
    assert attributes["gen_ai.usage.output_tokens"] == usage.output_tokens == 4
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["server.address"] == "127.0.0.1"
    sent = json.loads(str(attributes["gen_ai.input.messages"]))
    assert [m["role"] for m in sent] == ["system", "user"] and sent[1]["parts"][0]["content"] == "say it"
    assert "four words of answer" in str(attributes["gen_ai.output.messages"])
    everything = json.dumps([dict(s.attributes or {}) for s in exporter.get_finished_spans()], default=str)
    assert KEY not in everything and "SECRET" not in everything


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector: keeps each body posted to /v1/traces."""

    bodies: ClassVar[list[bytes]] = []
    received = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/v1/traces":
            Collector.bodies.append(body)
            Collector.received.set()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_cli_exports_with_otlp_where_the_environment_says(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project = tmp_path / "p.yaml"
    project.write_text("name: exported\ntasks:\n  - {id: one, description: hello}\n  - {id: two, description: hi}\n")
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "OTEL_SERVICE_NAME": "nightly-docs",
    }
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "orchestration",
                "run",
                str(project),
                "--otel",
                "-q",
                "--store",
                str(tmp_path / "s.db"),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert Collector.received.wait(10), "no spans were exported"
    finally:
        server.shutdown()
    names, services = set(), set()
    for body in Collector.bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                names.update(span.name for span in scope.spans)
    assert {"orchestrate run exported", "orchestrate task one", "orchestrate task two"} <= names
    assert services == {"nightly-docs"}


def test_a_run_without_tracing_never_imports_opentelemetry(tmp_path: Path) -> None:
    code = (
        "import sys, anyio\n"
        "from orchestration import ProjectOrchestrator, ProjectSpec\n"
        "spec = ProjectSpec.model_validate({'tasks': [{'id': 't', 'description': 'x'}]})\n"
        "anyio.run(ProjectOrchestrator(spec).run)\n"
        "print(any(name.startswith('opentelemetry') for name in sys.modules))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "ORCHESTRATE_OTEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"

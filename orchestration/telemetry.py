"""OpenTelemetry traces of runs (the ``otel`` extra), following the GenAI semantic conventions.

A run is a span (``orchestrate run {project}``), each task a span inside it (``orchestrate task {id}``, from
start to its final state, review waits included), and each model call a CLIENT span inside its task
(``chat {model}``) with the ``gen_ai.*`` attributes: operation, provider, request options and model, response
model, token usage, finish reasons, time to the first chunk, and ``error.type`` for a failed call. Message
content is recorded only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` is ``true`` (then
``gen_ai.input.messages`` / ``gen_ai.output.messages``, redacted). Our own attributes are under
``orchestrate.*``. No attribute ever holds a key: endpoints are named by host and port.

:func:`otlp_provider` makes the SDK's provider that the CLI's ``--otel`` (or ``ORCHESTRATE_OTEL=1``) installs:
spans batched to OTLP over HTTP, where the standard ``OTEL_EXPORTER_OTLP_*`` variables say, with the service
name of ``OTEL_SERVICE_NAME`` (default ``orchestrate``). OpenTelemetry is imported only once tracing starts.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llm_abstractions import BaseLlm, GenerationOptions, LlmError, LlmResponse, Message, redact
from llm_abstractions.wrappers.wrapper import WrapperLlm
from orchestration.models import ExecutionResult

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span
    from opentelemetry.trace import TracerProvider as AnyTracerProvider

    from orchestration.project import CompiledTask

__all__ = ["CONTENT_ENV", "OTEL_ENV", "TracedLlm", "Tracing", "otlp_provider", "wanted"]

OTEL_ENV = "ORCHESTRATE_OTEL"
"""``1`` (or ``true``): the CLI traces its runs, as with ``--otel``."""
CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""``true``: model calls' spans record the messages sent and the answer (redacted)."""

_PROVIDER_NAMES = {"gpt": "openai", "claude": "anthropic", "gemini": "gcp.gemini"}
"""Our provider keys as the conventions name them (others keep their own name)."""

_attempts: ContextVar[list[int]] = ContextVar("orchestrate_attempts")
"""The model calls made so far in the current task's span (a one-item list, counted by :class:`TracedLlm`)."""


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``ORCHESTRATE_OTEL`` asks for traces."""
    value = (os.environ if env is None else env).get(OTEL_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def otlp_provider() -> TracerProvider:
    """An SDK tracer provider exporting batches of spans with OTLP over HTTP (configured by the environment)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "orchestrate"}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class Tracing:
    """Spans of one orchestrator's runs, from ``provider`` (default: the global tracer provider)."""

    def __init__(self, provider: AnyTracerProvider | None = None, *, capture_content: bool | None = None) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            from opentelemetry import trace
        except ImportError:
            raise ImportError("tracing needs OpenTelemetry: pip install 'orchestrate-llm[otel]'") from None

        try:
            ours: str | None = version("orchestrate-llm")
        except PackageNotFoundError:  # run from a source tree
            ours = None
        self._tracer = trace.get_tracer("orchestrate", ours, tracer_provider=provider)
        if capture_content is None:
            capture_content = os.environ.get(CONTENT_ENV, "").strip().lower() == "true"
        self.capture_content = capture_content

    @contextlib.contextmanager
    def run(self, project: str, run_id: str) -> Iterator[Span]:
        """The run's span, current while the run's tasks start (they become its children)."""
        attributes = {"orchestrate.project": project, "orchestrate.run.id": run_id}
        name = f"orchestrate run {project}"
        with self._tracer.start_as_current_span(name, attributes=attributes, record_exception=False) as span:
            yield span

    @contextlib.contextmanager
    def task(self, task: CompiledTask, run_id: str) -> Iterator[Span]:
        """A task's span, current while it runs (its model calls become its children)."""
        attributes = {"orchestrate.task.id": task.id, "orchestrate.run.id": run_id, "gen_ai.agent.name": task.agent}
        name = f"orchestrate task {task.id}"
        with self._tracer.start_as_current_span(name, attributes=attributes, record_exception=False) as span:
            token = _attempts.set([0])
            try:
                yield span
            finally:
                _attempts.reset(token)

    @staticmethod
    def task_ended(span: Span, result: ExecutionResult | None) -> None:
        """Record ``result`` (the task's final one) on its span."""
        if result is None:
            return
        span.set_attribute("orchestrate.task.status", result.status.value)
        span.set_attribute("orchestrate.task.attempts", result.attempts)
        if result.agent:
            span.set_attribute("gen_ai.agent.name", result.agent)
        if result.cost_usd is not None:
            span.set_attribute("orchestrate.cost_usd", result.cost_usd)
        if result.review is not None:
            span.set_attribute("orchestrate.review.decision", result.review.decision)
            if result.review.waited_s is not None:
                span.set_attribute("orchestrate.review.wait_s", result.review.waited_s)
        if result.error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", str(result.error.type))
            span.set_status(Status(StatusCode.ERROR, redact(result.error.message)))

    @staticmethod
    def run_ended(span: Span, status: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("orchestrate.run.status", status)
        if status == "failed":
            span.set_status(Status(StatusCode.ERROR))

    def traced(self, llm: BaseLlm) -> BaseLlm:
        """``llm`` with a ``chat {model}`` span around each call."""
        return TracedLlm(llm, self)

    def call_span(self, llm: BaseLlm, messages: Sequence[Message], options: GenerationOptions) -> Any:
        """Start the CLIENT span of one call of ``llm`` with ``options`` (resolved: the call's over the model's
        configured ones); a context manager that ends it."""
        model = llm.config.model or "unknown"
        provider = _PROVIDER_NAMES.get(llm.provider) or llm.pricing_provider or llm.provider
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model,
        }
        attributes.update(_request_attributes(options))
        if llm.config.base_url:
            url = urlsplit(llm.config.base_url)
            if url.hostname:
                attributes["server.address"] = url.hostname
            if url.port:
                attributes["server.port"] = url.port
        counter = _attempts.get(None)
        if counter is not None:
            counter[0] += 1
            attributes["orchestrate.attempt"] = counter[0]
        if self.capture_content:
            attributes["gen_ai.input.messages"] = json.dumps([_message(m) for m in messages], ensure_ascii=False)
        from opentelemetry.trace import SpanKind

        return self._tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        )

    def call_ended(self, span: Span, response: LlmResponse) -> None:
        if response.model:
            span.set_attribute("gen_ai.response.model", response.model)
        if response.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [response.finish_reason])
        usage = response.usage
        if usage is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            if usage.cache_read_tokens:
                span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens)
            if usage.cache_write_tokens:
                span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens)
            if usage.reasoning_tokens:
                span.set_attribute("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens)
        if response.time_to_first_token_s is not None:
            span.set_attribute("gen_ai.response.time_to_first_chunk", response.time_to_first_token_s)
        if self.capture_content:
            answer = {"role": "assistant", "parts": [{"type": "text", "content": redact(response.text)}]}
            span.set_attribute("gen_ai.output.messages", json.dumps([answer], ensure_ascii=False))


def _request_attributes(options: GenerationOptions) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, key in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
        ("top_k", "gen_ai.request.top_k"),
        ("seed", "gen_ai.request.seed"),
        ("stop", "gen_ai.request.stop_sequences"),
    ):
        value = getattr(options, name, None)
        if value is not None:
            found[key] = list(value) if isinstance(value, list | tuple) else value
    return found


def _message(message: Message) -> dict[str, Any]:
    return {"role": message.role, "parts": [{"type": "text", "content": redact(str(message.content))}]}


class TracedLlm(WrapperLlm):
    """A model whose every call is a ``chat {model}`` CLIENT span (see :class:`Tracing`)."""

    def __init__(self, wrapped: BaseLlm, tracing: Tracing) -> None:
        super().__init__(wrapped)
        self.tracing = tracing
        client = wrapped
        while isinstance(client, WrapperLlm):  # the provider's own client names the provider
            client = client.wrapped
        self.client = client

    async def generate_content_async(
        self, messages: Sequence[Message], options: GenerationOptions | None = None, **overrides: Any
    ) -> LlmResponse:
        resolved = self.wrapped.resolve_options(options)
        if overrides:
            resolved = resolved.merged(GenerationOptions.model_validate(overrides))
        with self.tracing.call_span(self.client, messages, resolved) as span:
            try:
                response = await self.wrapped.generate_content_async(messages, options, **overrides)
            except LlmError as exc:
                from opentelemetry.trace import Status, StatusCode

                span.set_attribute("error.type", exc.type_name)
                span.set_status(Status(StatusCode.ERROR, redact(exc.message)))
                raise
            self.tracing.call_ended(span, response)
            return response

"""API keys never reach logs or results."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from contextlib import redirect_stderr

import structlog

from llm_abstractions import (
    AuthenticationError,
    BaseLlm,
    GenerationOptions,
    LlmResponse,
    Message,
    redact,
    register_llm,
)
from llm_abstractions.factory import unregister_llm
from orchestration import ExecutionStatus, ProjectOrchestrator, ProjectSpec
from orchestration.log import configure_logging, get_logger, log_events

KEY = "sk-test-RECOGNISABLE-0123456789abcdef"


def test_redact_known_secrets_and_credential_shapes() -> None:
    from llm_abstractions import register_secret

    register_secret("plain-secret-value")
    text = redact(
        "key plain-secret-value; Authorization: Bearer abcdefghijklmnop; x-api-key: zyxwvutsrqponm; "
        "sk-proj-ABCDEFGHIJKLMNOPQRST and AIzaSyA1234567890abcdefghijkLMNOP"
    )
    for secret in ("plain-secret-value", "abcdefghijklmnop", "zyxwvutsrqponm", "ABCDEFGHIJKLMNOPQRST", "AIzaSy"):
        assert secret not in text
    assert text.count("[REDACTED]") == 5


class LeakyLlm(BaseLlm):
    """A provider whose error message echoes the key, as careless SDK errors sometimes do."""

    provider = "leaky"

    async def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> LlmResponse:
        assert self.config.api_key is not None
        raise AuthenticationError(f"invalid key {self.config.api_key.get_secret_value()} for Bearer {KEY}")


async def test_key_in_provider_error_is_redacted_from_results_and_logs() -> None:
    register_llm("leaky", LeakyLlm)
    try:
        spec = ProjectSpec.model_validate(
            {
                "agents": {"l": {"type": "leaky", "api_key": KEY}},
                "tasks": [{"id": "a", "description": "x", "agent": "l"}],
            }
        )
        orchestrator = ProjectOrchestrator(spec)
        buffer = io.StringIO()
        with redirect_stderr(buffer):
            configure_logging("info", "json")
            orchestrator.on_event(log_events(get_logger("test")))
            results = await orchestrator.run()
    finally:
        unregister_llm("leaky")
        structlog.reset_defaults()
    result = results["a"]
    assert result.status is ExecutionStatus.FAILED
    dumped = result.model_dump_json() + repr(result)
    assert KEY not in dumped and "[REDACTED]" in dumped
    logs = buffer.getvalue()
    assert "task_failed" in logs and KEY not in logs
    assert all(json.loads(line) for line in logs.splitlines())
    assert KEY not in repr(orchestrator.validate().registry.get("l"))

"""Retry-after parsing and status-to-error mapping, on their own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llm_abstractions.providers._http_errors import error_for_status, parse_retry_after, transport_error

NOW = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.2"}, 0.2),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "Sat, 21 Nov 2026 10:00:30 GMT"}, 30.0),
        ({"retry-after": "Sat, 21 Nov 2026 09:59:00 GMT"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "message", "type_name", "retryable"),
    [
        (400, "bad field", "invalid_request", False),
        (400, "prompt is too long: 210000 tokens > 200000 maximum", "context_length_exceeded", False),
        (413, "request too large", "invalid_request", False),
        (401, "no", "authentication", False),
        (403, "no", "authentication", False),
        (404, "model not found", "invalid_request", False),
        (408, "slow", "timeout", True),
        (409, "conflict", "provider_unavailable", True),
        (429, "slow down", "rate_limited", True),
        (500, "boom", "provider_unavailable", True),
        (529, "overloaded", "provider_unavailable", True),
    ],
)
def test_error_for_status(status: int, message: str, type_name: str, retryable: bool) -> None:
    error = error_for_status(status, message, provider="p", headers={"retry-after": "1.5"})
    assert (error.type_name, error.retryable, error.status_code, error.retry_after) == (
        type_name,
        retryable,
        status,
        1.5,
    )


def test_error_messages_are_redacted() -> None:
    error = error_for_status(401, "Incorrect API key provided: sk-abcdefghijklmnopqrstuvwx", provider="gpt")
    assert "sk-abc" not in str(error)


def test_transport_errors() -> None:
    import httpx2

    assert transport_error(httpx2.ReadError("reset"), provider="p").type_name == "connection"  # type: ignore[union-attr]
    assert transport_error(httpx2.ReadTimeout("slow"), provider="p").type_name == "timeout"  # type: ignore[union-attr]
    assert transport_error(ConnectionResetError(), provider="p").type_name == "connection"  # type: ignore[union-attr]
    assert transport_error(ValueError("not ours"), provider="p") is None

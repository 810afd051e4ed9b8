"""Keep secrets out of logs, errors, results and stores.

Every API key the process uses is registered here (agent configs do it when they
are built); :func:`redact` replaces registered secrets and common credential
shapes (``Bearer ...``, ``sk-...``, ``x-api-key: ...``) with ``[REDACTED]``, and
:func:`redact_value` does so in every string of a structure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact", "redact_value", "register_secret"]

REDACTED = "[REDACTED]"

_secrets: set[str] = set()
_PATTERNS = re.compile(
    r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|(x-api-key|x-goog-api-key|api[_-]?key|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]{8,}"
    r"|\b(sk|gsk|xai)-[A-Za-z0-9_-]{12,}"
    r"|\bAIza[0-9A-Za-z_-]{20,}"
)


def register_secret(secret: str | None) -> None:
    """Remember ``secret`` so that :func:`redact` removes it wherever it appears."""
    if secret and len(secret) >= 4:
        _secrets.add(secret)


def _replace(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + REDACTED
    if match.group(2):
        return match.group(2) + match.group(3) + REDACTED
    return REDACTED


def redact(text: str) -> str:
    """``text`` with registered secrets and credential-looking tokens replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _PATTERNS.sub(_replace, text)


def redact_value(value: Any) -> Any:
    """``value`` with every string in it redacted.

    Mappings become dicts (keys as strings), lists and tuples become lists, an exception
    becomes ``"Type: message"``; other values are returned as they are.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value

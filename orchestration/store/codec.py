"""JSON columns of the run store: every string redacted on the way in."""

from __future__ import annotations

import json
from typing import Any

from llm_abstractions import redact_value

__all__ = ["to_json"]


def to_json(value: Any) -> str:
    """``value`` as JSON, its strings redacted (values JSON cannot hold written as their ``str``)."""
    return json.dumps(redact_value(value), ensure_ascii=False, default=str)

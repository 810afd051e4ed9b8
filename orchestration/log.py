"""structlog set-up: console or JSON lines on stderr, secrets redacted, levels filtered before formatting."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

from llm_abstractions import redact_value

__all__ = ["configure_logging", "get_logger", "log_events", "redact_event"]

LogFormat = Literal["console", "json"]


def redact_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact API keys and authorization headers from every value."""
    for key, value in event.items():
        event[key] = redact_value(value)
    return event


def configure_logging(level: str = "warning", fmt: LogFormat = "console") -> None:
    """Route structlog output to stderr; calls below ``level`` are dropped before any formatting."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)


def log_events(logger: Any) -> Any:
    """An event callback that logs task outcomes (failures at warning, the rest at info) and endpoints' pace."""
    from orchestration.events import RunEvent
    from orchestration.models import ExecutionStatus

    def callback(event: RunEvent) -> None:
        result = event.result
        failed = result is not None and result.status is ExecutionStatus.FAILED
        if not failed and not logger.is_enabled_for(logging.INFO):
            return
        if event.pace is not None:
            logger.info(
                event.kind.value,
                run_id=event.run_id,
                endpoint=event.endpoint,
                reason=event.pace.reason.value,
                requests_per_minute=event.pace.requests_per_minute,
                tokens_per_minute=event.pace.tokens_per_minute,
            )
            return
        if result is None:
            logger.info(event.kind.value, run_id=event.run_id, task_id=event.task_id, agent=event.agent)
            return
        fields: dict[str, Any] = {
            "run_id": event.run_id,
            "task_id": event.task_id,
            "status": result.status.value,
            "agent": result.agent,
            "attempts": result.attempts,
            "duration_s": result.duration_s,
        }
        if result.error is not None:
            fields["error_type"] = result.error.type
            fields["error"] = result.error.message
        if failed:
            logger.warning(event.kind.value, **fields)
        else:
            logger.info(event.kind.value, **fields)

    return callback

"""structlog set-up: JSON lines in containers (no TTY), readable lines in a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

_SECRET_KEYS = frozenset({"authorization", "token", "api_token", "password", "cookie"})


def _redact(_: object, __: str, event: dict) -> dict:
    # Secrets never reach a log line, whoever passed them.
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


def configure(fmt: str = "auto", level: int = logging.INFO) -> None:
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # httpx logs every request at INFO through the standard library; that is our handlers'
    # business to report, not noise for every line.
    logging.getLogger("httpx").setLevel(logging.WARNING)

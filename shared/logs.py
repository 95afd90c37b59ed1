"""structlog set-up: JSON lines in containers (no TTY), readable lines in a terminal.

Standard-library logging (uvicorn, asyncio, httpx) goes through the same processors and
renderer, so in JSON mode every line LocalFlow writes is one JSON object.

Context: the API binds `request_id` for each request (api/observe.py); the worker binds
`task_id`, `task_type` and `attempt` on every line about a task (worker/pool.py).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import structlog

_SECRET_KEYS = frozenset({
    "authorization", "proxy-authorization", "token", "api_token", "password", "cookie",
    "set-cookie", "secret", "x-api-key",
})
# A credential written inline: "Authorization: Bearer abc", "bearer abc", "Basic dXNlcg==".
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]+")
_REDACTED = "[redacted]"
_MAX_DEPTH = 6
# Exact secret values (the API token) that must never appear, wherever they turn up.
_secret_values: tuple[str, ...] = ()


def _scrub(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        for secret in _secret_values:
            if secret in value:
                value = value.replace(secret, _REDACTED)
        if _CREDENTIAL.search(value):
            value = _CREDENTIAL.sub(rf"\1\2{_REDACTED}", value)
        return value
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {
            k: _REDACTED if isinstance(k, str) and k.lower() in _SECRET_KEYS
            else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v, depth + 1) for v in value]
    return value


def _redact(_: object, __: str, event: dict) -> dict:
    # Secrets never reach a log line, whoever passed them: by key (also inside nested dicts,
    # such as an http task's headers), by the inline "Bearer ..." form, and by value.
    for key, value in event.items():
        if key.lower() in _SECRET_KEYS:
            event[key] = _REDACTED
        elif isinstance(value, str | dict | list | tuple):
            event[key] = _scrub(value)
    return event


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name it was asked for (structlog.get_logger(name)),
    so every line of LocalFlow's own carries a `logger` field, like the standard library's."""

    def __init__(self, name: str) -> None:
        super().__init__(sys.stderr)
        self.name = name


def _named_logger(*args: Any) -> _NamedPrintLogger:
    return _NamedPrintLogger(str(args[0]) if args and args[0] else "localflow")


def _add_logger_name(logger: Any, __: str, event: dict) -> dict:
    event.setdefault("logger", getattr(logger, "name", None) or "localflow")
    return event


# The id of the HTTP request being handled (api/front_door.py sets it). One ContextVar set and
# reset per request, read only when a line is written; binding it into structlog's context
# cost a dictionary copy per request (6% of a submission's CPU).
REQUEST_ID: ContextVar[str | None] = ContextVar("localflow_request_id", default=None)


def _add_request_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def configure(
    fmt: str = "auto", level: int = logging.INFO, secrets: Iterable[str | None] = ()
) -> None:
    """secrets: values (such as the API token) to blank out of every line."""
    global _secret_values
    # Short strings would blank out ordinary words; a real token is long.
    _secret_values = tuple(s for s in secrets if s and len(s) >= 8)
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.processors.add_log_level,
            _add_logger_name,
            timestamper,
            structlog.processors.format_exc_info,
            _redact,  # after format_exc_info: a traceback's text is scrubbed too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_named_logger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                _add_request_id,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _redact,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO through the standard library; that is our handlers'
    # business to report, not noise for every line.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def startup_line(fmt: str, level: str, message: str) -> None:
    """A line about starting (or refusing to start), written before or instead of running.

    With --log-format json it is one JSON object like every other line (logger "localflow",
    scrubbed of secrets); otherwise `localflow: message`, plain, for a person at a terminal
    or a script reading stderr.
    """
    if fmt == "json":
        getattr(structlog.get_logger("localflow"), level)(message)
    else:
        print(f"localflow: {message}", file=sys.stderr, flush=True)

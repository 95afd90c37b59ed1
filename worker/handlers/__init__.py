"""Task handlers by type. A handler gets the validated payload and returns a result dict,
or raises TaskFailed (a failed attempt, retried while attempts remain)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.handlers.base import HandlerContext, TaskFailed, TaskTimedOut
from worker.handlers.http import run_http
from worker.handlers.shell import run_shell

Handler = Callable[[Any, HandlerContext], Awaitable[dict[str, Any]]]

HANDLERS: dict[str, Handler] = {"shell": run_shell, "http": run_http}

__all__ = ["HANDLERS", "Handler", "HandlerContext", "TaskFailed", "TaskTimedOut"]

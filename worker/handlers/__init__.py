"""Task handlers by type. A handler gets the validated payload and returns a result dict,
or raises TaskFailed (a failed attempt, retried while attempts remain)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from worker.handlers.base import HandlerContext, TaskFailed, TaskTimedOut
from worker.handlers.shell import run_shell

if TYPE_CHECKING:
    from shared.schemas import HttpPayload

Handler = Callable[[Any, HandlerContext], Awaitable[dict[str, Any]]]


async def run_http(payload: HttpPayload, ctx: HandlerContext) -> dict[str, Any]:
    # httpx, httpcore and what httpx pulls in (click, rich, pygments when installed) cost a
    # worker ~15 MB of memory; they load with the first http task, not in every worker.
    from worker.handlers import http

    return await http.run_http(payload, ctx)


async def close_http_clients() -> None:
    """Close the http handler's pooled connections, if any http task ever ran here."""
    http = sys.modules.get("worker.handlers.http")
    if http is not None:
        await http.close_client()


HANDLERS: dict[str, Handler] = {"shell": run_shell, "http": run_http}

__all__ = ["HANDLERS", "Handler", "HandlerContext", "TaskFailed", "TaskTimedOut",
           "close_http_clients"]

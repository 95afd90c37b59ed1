"""Around every HTTP request: a request id, metrics by route template, an optional access log.

One plain ASGI layer wrapped around Litestar's whole handler (outside routing and exception
handling), so it also sees 404s, 405s and errors turned into problem+json, and costs one
function call, a clock read and a few dictionary lookups per request.

The request id: an incoming X-Request-ID is kept when it is short and plain (a proxy's or a
client's id correlates their logs with ours), otherwise one is made. It goes back in the
response's X-Request-ID header and is set in shared.logs.REQUEST_ID, so every line logged while
handling the request carries `request_id`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import ApiMetrics
from shared.ids import random_bytes
from shared.logs import REQUEST_ID

log = structlog.get_logger("localflow.api")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED = "unmatched"  # the route label of a path no route matches: never the raw path


def new_request_id() -> str:
    return random_bytes(8).hex()  # an id to correlate lines, not a secret


def incoming_request_id(headers: Any) -> str | None:
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _SANE_ID.fullmatch(value) else None
    return None


class ObserveRequests:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics | None, *, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        id_header = (b"x-request-id", request_id.encode())
        status = 500  # if the app fails before it answers, the server answers 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        bound = REQUEST_ID.set(request_id)
        metrics = self.metrics
        if metrics is not None:
            metrics.requests.in_flight += 1
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - began
            # Routing stored the template ("/api/tasks/{task_id}") in the scope.
            route = scope.get("path_template") or UNMATCHED
            method = scope["method"]
            if metrics is not None:
                metrics.requests.in_flight -= 1
                metrics.observe(method, route, status, seconds)
            if self.access_log or status >= 500:
                (log.warning if status >= 500 else log.info)(
                    "request", method=method, route=route, path=scope["path"], status=status,
                    ms=round(seconds * 1000, 2),
                )
            REQUEST_ID.reset(bound)

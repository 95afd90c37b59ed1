"""Every HTTP request's way in: one plain ASGI layer around Litestar instead of four.

What it does is decided elsewhere, each in its own module; this only calls them in their order,
in one coroutine with one `send` wrapper (four nested layers cost four coroutines, four send
wrappers and a dictionary of decoded headers per request: ~10% of a submission's CPU):

1. a request id and metrics by route template, an optional access log (api/observe.py): outside
   everything else, so refusals below are counted and carry an id too;
2. one spelling of the path (api/canonical_path.py), before any guard looks at it;
3. what a web page may not do (api/browser_guard.py);
4. HEAD as GET without a body, complete Allow headers (api/http_methods.py).

The bearer token is checked after routing (api/auth.py), where a route's opt is known.
"""

from __future__ import annotations

import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.browser_guard import BrowserGuard, send_problem
from api.canonical_path import BAD_PATH, canonical, set_path
from api.http_methods import HttpMethods
from api.metrics import ApiMetrics
from api.observe import UNMATCHED, incoming_request_id, log, new_request_id
from shared.logs import REQUEST_ID
from shared.settings import Settings


class FrontDoor:
    def __init__(
        self, app: ASGIApp, settings: Settings, metrics: ApiMetrics | None,
        allow: dict[str, str], *, access_log: bool,
    ) -> None:
        self.app = app
        self.guard = BrowserGuard(app, settings)
        self.methods = HttpMethods(app, allow)
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        id_header = (b"x-request-id", request_id.encode())
        method = scope["method"]
        status = 500  # if the app fails before it answers, the server answers 500
        inner = scope
        methods = self.methods

        async def send_fixed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The server's own time up to the answer's head (the handler's work: queries,
                # templates), so a client on a busy machine can tell it from queueing and
                # transport (bench/dashboard_volume.py reads it). Standard: Server-Timing.
                took = f"app;dur={(time.perf_counter() - began) * 1000:.2f}"
                headers = [*message.get("headers", ()), id_header, (b"server-timing",
                                                                    took.encode())]
                if status == 405 or (method == "OPTIONS" and status < 300):
                    headers = methods.with_allow(headers, inner)
                message = {**message, "headers": headers}
            elif method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        bound = REQUEST_ID.set(request_id)
        metrics = self.metrics
        if metrics is not None:
            metrics.requests.in_flight += 1
        began = time.perf_counter()
        try:
            path = canonical(scope["path"])
            if path is None:
                await send_problem(send_fixed, 400, BAD_PATH)
                return
            if path != scope["path"]:
                set_path(scope, path)
            refusal = self.guard.refusal_of(scope)
            if refusal is not None:
                await send_problem(send_fixed, *refusal)
                return
            if method == "HEAD":
                inner = {**scope, "method": "GET"}
            try:
                await self.app(inner, receive, send_fixed)
            finally:
                if inner is not scope and "path_template" in inner:
                    scope["path_template"] = inner["path_template"]
        finally:
            seconds = time.perf_counter() - began
            # Routing stored the template ("/api/tasks/{task_id}") in the scope.
            route = scope.get("path_template") or UNMATCHED
            if metrics is not None:
                metrics.requests.in_flight -= 1
                metrics.observe(method, route, status, seconds)
            if self.access_log or status >= 500:
                (log.warning if status >= 500 else log.info)(
                    "request", method=method, route=route, path=scope["path"], status=status,
                    ms=round(seconds * 1000, 2),
                )
            REQUEST_ID.reset(bound)

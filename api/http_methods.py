"""HEAD on every GET route, and a complete `Allow` on OPTIONS and 405 (RFC 9110 9.3.2, 9.3.7).

Litestar answers HEAD only where a handler declares it, and its automatic OPTIONS answer lists
the methods of whichever handler registered a path first (`/api/tasks` -> "GET, OPTIONS", no
POST). Uptime checkers send HEAD; clients and schemathesis read Allow. So, one ASGI layer:

- HEAD runs the GET handler (auth, errors and headers exactly as GET) and sends no body.
- The Allow of OPTIONS and of 405 answers lists every method the path has, with HEAD wherever
  GET is, and OPTIONS.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Message, Receive, Scope, Send

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allow_value(methods: set[str]) -> str:
    methods = {m.upper() for m in methods} | {"OPTIONS"}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods, key=lambda m: (_ORDER.index(m) if m in _ORDER else 99, m)))


def methods_by_template(app: Litestar) -> dict[str, str]:
    """Route template ("/api/tasks/{task_id}") -> its Allow value."""
    found: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            found.setdefault(route.path_format or "/", set()).update(route.methods)
    return {template: allow_value(methods) for template, methods in found.items()}


class HttpMethods:
    def __init__(self, app: ASGIApp, allow: dict[str, str]) -> None:
        self.app = app
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        inner = {**scope, "method": "GET"} if method == "HEAD" else scope

        async def send_fixed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if status == 405 or (method == "OPTIONS" and status < 300):
                    message = {**message, "headers": self.with_allow(
                        list(message.get("headers", ())), inner
                    )}
            elif message["type"] == "http.response.body" and method == "HEAD":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(inner, receive, send_fixed)
        finally:
            if inner is not scope and "path_template" in inner:
                scope["path_template"] = inner["path_template"]  # for the metrics' route label

    def with_allow(
        self, headers: list[tuple[bytes, bytes]], scope: Scope
    ) -> list[tuple[bytes, bytes]]:
        """`headers` with one complete Allow for the path in `scope`."""
        given = next((v for k, v in headers if k.lower() == b"allow"), b"")
        headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
        value = self.allow.get(scope.get("path_template") or "")
        if value is None:  # a 405 from routing (no template): complete what the router says
            value = allow_value({m.strip() for m in given.decode().split(",") if m.strip()})
        headers.append((b"allow", value.encode()))
        return headers

"""One spelling of every path, settled before any guard looks at it.

The router reads `//api//tasks/` as `/api/tasks` (it strips and collapses slashes), and the HTTP
server has already decoded `%2F` and `%74` in the path. A guard that compared the path as sent
(`startswith("/api/")`) could be stepped around by a spelling the router still routes: that is
how `//api/tasks` once took a text/plain body the JSON-only rule refuses. So this layer rewrites
the path to the router's own canonical form, and the browser guard, the bearer-token check, the
dashboard's session check, routing and the logs all see one and the same path.

What has no canonical form is refused (400): `.` and `..` segments (a proxy or a browser may
resolve them, the router does not, so two readers would disagree about which resource is meant)
and control characters (NUL, CR, LF, ...), sent or percent-encoded.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils import normalize_path

from api.browser_guard import send_problem

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BAD_PATH = ("the request path has `.` or `..` segments or control characters; send the path of "
            "the resource itself, e.g. /api/tasks")


def canonical(path: str) -> str | None:
    """The router's spelling of `path` (already percent-decoded), or None if it has none."""
    if _CONTROL.search(path):
        return None
    if any(segment in (".", "..") for segment in path.split("/")):
        return None
    return normalize_path(path)


class CanonicalPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = canonical(scope["path"])
        if path is None:
            await send_problem(send, 400, BAD_PATH)
            return
        if path != scope["path"]:
            set_path(scope, path)
        await self.app(scope, receive, send)


def set_path(scope: Scope, path: str) -> None:
    scope["path"] = path
    scope["raw_path"] = quote(path).encode()

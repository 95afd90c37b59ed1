"""Defences for an API that the user's own web browser can reach.

LocalFlow's default listens on 127.0.0.1 without a token, and runs commands. Any web page the
user visits can make their browser send requests to 127.0.0.1; this layer is what stops that:

- **JSON only.** A body sent to /api must be `application/json`. A page can POST text/plain or a
  form to any address without asking, but JSON needs a CORS preflight, which we never grant.
- **No cross-site writes.** A POST/PUT/PATCH/DELETE that a browser marks as coming from another
  site (`Sec-Fetch-Site`, or an `Origin` that is not this host) is refused, dashboard included.
  Scripts, curl and other containers send neither header and are not affected.
- **Loopback names only, without a token.** DNS rebinding points an attacker's host name at
  127.0.0.1 so the browser thinks it is talking to the attacker's own site; the `Host` header
  still says the attacker's name. Without a token (and without --insecure) only localhost and
  loopback addresses are accepted. With a token, a rebound page still has no token.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from api.errors import PROBLEM_JSON
from shared.settings import Settings, is_loopback

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_READ = frozenset({"host", "sec-fetch-site", "origin", "content-type", "content-length",
                   "transfer-encoding"})


def _host_name(host: str) -> str:
    """"127.0.0.1:8080" -> "127.0.0.1"; "[::1]:8080" -> "::1"; names lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


# Bounded: the Host header is the client's to choose. A hit saves parsing an IP address on
# every request (a few percent of a submission's CPU).
@functools.lru_cache(maxsize=128)
def is_loopback_host(host: str) -> bool:
    name = _host_name(host)
    return is_loopback(name) or name.endswith(".localhost")


def is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and
                                           media.endswith("+json"))


class BrowserGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.loopback_only = not settings.api_token and not settings.insecure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal_of(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await send_problem(send, *refusal)

    def refusal_of(self, scope: Scope) -> tuple[int, str] | None:
        """(status, detail) if the request in `scope` is refused, else None."""
        # Only the headers the rules read are decoded (a request carries many more).
        headers = {
            name: value.decode("latin-1") for key, value in scope["headers"]
            if (name := key.decode("latin-1")) in _READ
        }
        return self.refusal(scope["method"], scope["path"], headers)

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.loopback_only and not is_loopback_host(host):
            return 403, (
                f"Host {host!r} is not a loopback name: without LOCALFLOW_API_TOKEN, LocalFlow "
                "answers only to localhost and 127.0.0.1 (this blocks DNS rebinding)"
            )
        if method in _SAFE_METHODS:
            return None
        if _cross_site(headers, host):
            return 403, "cross-site request refused: a page of another site may not change "\
                "anything here"
        # `path` is canonical (api/canonical_path.py runs first): no other spelling reaches /api.
        to_api = path == "/api" or path.startswith("/api/")
        if (
            to_api and method in _BODY_METHODS and _has_body(headers)
            and not is_json(headers.get("content-type", ""))
        ):
            return 415, "send the request body as JSON, with Content-Type: application/json"
        return None


def _cross_site(headers: dict[str, str], host: str) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("cross-site", "same-site")
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser, or a browser on a same-origin GET-like navigation
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != host.strip().lower()


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length", "").strip()
    return (length not in ("", "0")) or "transfer-encoding" in headers


async def send_problem(send: Send, status: int, detail: str) -> None:
    """A problem+json answer sent before Litestar (and its error handlers) is reached."""
    titles = {400: "Bad Request", 403: "Forbidden", 415: "Unsupported Media Type"}
    body = msgspec.json.encode(
        {"type": "about:blank", "title": titles[status], "status": status, "detail": detail}
    )
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})

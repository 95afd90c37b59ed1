"""Login and CSRF for the dashboard.

With an API token configured, the dashboard asks for it once and then keeps a session: a random
cookie (HttpOnly, SameSite=Strict) naming a session the API process holds in memory (`Sessions`).
Logging out ends the session on the server, so a copy of the cookie saved before is worth
nothing. An API restart ends every session (log in again), and so does changing the token,
which takes a restart. Without a token (the loopback default) there is no login.

Server-side sessions rather than signed cookies: a signed cookie stays valid until it expires
whatever the server does, and revoking one means remembering it somewhere that outlives the
process (a new table, a file). In memory, bounded, and lost on restart is the simple design in
which a logout can never come back to life.

CSRF protection is on either way: a page on another site can make a browser POST to
127.0.0.1:8080, and that browser would run commands. Litestar's CSRF middleware (double-submit
cookie, HMAC-signed) guards every non-GET route of the dashboard; pages put the token in an
`x-csrftoken` header on every htmx request and in `_csrf_token` on plain forms.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from urllib.parse import quote, urlsplit

from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, State
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.response import Redirect, Response

from api.errors import problem
from shared.settings import Settings

SESSION_COOKIE = "localflow_session"
SESSION_SECONDS = 7 * 86400
LOGIN_PATH = "/dashboard/login"
PUBLIC = "dashboard_public"  # handler opt: reachable without a session (the login page)


def _key(token: str, purpose: str) -> bytes:
    return hmac.new(token.encode(), f"localflow dashboard {purpose}".encode(), "sha256").digest()


class Sessions:
    """Live dashboard sessions: the SHA-256 of each cookie value, and when it expires.

    Bounded: at most `max_sessions`; a new login beyond that ends the oldest session. Keyed by
    a digest, so the store never holds a usable cookie and a lookup compares no secrets.
    """

    def __init__(self, lifetime: float = SESSION_SECONDS, max_sessions: int = 1000) -> None:
        self.lifetime, self.max_sessions = lifetime, max_sessions
        self._expires: OrderedDict[bytes, float] = OrderedDict()

    @staticmethod
    def _key(value: str) -> bytes:
        return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()

    def create(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        for key, expires in list(self._expires.items()):  # oldest first: stop at a live one
            if expires > now:
                break
            del self._expires[key]
        while len(self._expires) >= self.max_sessions:
            self._expires.popitem(last=False)
        value = secrets.token_urlsafe(32)
        self._expires[self._key(value)] = now + self.lifetime
        return value

    def valid(self, value: str | None, now: float | None = None) -> bool:
        if not value:
            return False
        expires = self._expires.get(self._key(value))
        return expires is not None and expires > (time.time() if now is None else now)

    def revoke(self, value: str | None) -> None:
        if value:
            self._expires.pop(self._key(value), None)

    def __len__(self) -> int:
        return len(self._expires)


def sessions_of(state: State) -> Sessions:
    if "sessions" not in state:
        state["sessions"] = Sessions()
    return state["sessions"]


def session_valid(connection: ASGIConnection, value: str | None) -> bool:
    """For api.auth.cookie_session: does this cookie name a live session of this process?"""
    return sessions_of(connection.app.state).valid(value)


def session_cookie(request: Request, value: str, max_age: int = SESSION_SECONDS) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE, value=value, max_age=max_age, path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )


def is_logged_in(request: Request, settings: Settings) -> bool:
    """True when no token is configured, or the request carries a valid session cookie."""
    return not settings.api_token or session_valid(request, request.cookies.get(SESSION_COOKIE))


async def require_login(request: Request) -> Response | None:
    """before_request hook: send a visitor without a session to the login page.

    async although it never awaits: Litestar would run a sync hook in a thread pool."""
    settings: Settings = request.app.state.settings
    if request.route_handler.opt.get(PUBLIC) or is_logged_in(request, settings):
        return None
    htmx = request.headers.get("hx-request") == "true"
    # Back to the page the browser shows, never the fragment it was polling (HX-Current-URL).
    back = _page_of(request) if htmx else safe_next(request.url.path + _query(request))
    expired = "&expired=1" if request.cookies.get(SESSION_COOKIE) else ""
    target = LOGIN_PATH + "?next=" + quote(back) + expired
    if htmx:
        # htmx would swap a redirected login page into a fragment; ask it to navigate instead.
        return Response(b"", status_code=401, headers={"HX-Redirect": target})
    if request.method in ("GET", "HEAD"):
        return Redirect(target, status_code=303)
    return problem(401, f"log in to the dashboard first: {LOGIN_PATH}")


def _page_of(request: Request) -> str:
    """The path (and query) of the page an htmx request came from, if it is on this site."""
    current = urlsplit(request.headers.get("hx-current-url", ""))
    if current.netloc and current.netloc != request.url.netloc:
        return "/dashboard"
    return safe_next(current.path + ("?" + current.query if current.query else ""))


def _query(request: Request) -> str:
    query = request.scope.get("query_string", b"").decode("latin-1")
    return "?" + query if query else ""


def safe_next(target: str | None) -> str:
    """Only same-site paths: `next=//evil.example` must not send someone elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard"
    return target


def csrf_config(settings: Settings) -> CSRFConfig:
    # With a token the secret derives from it, so pages stay valid across restarts. Without one,
    # a fresh random secret per process; the cookie name carries a fingerprint of the secret, so
    # a browser's cookie from an earlier run is ignored (and replaced) rather than refused forever.
    token = settings.api_token
    secret = _key(token, "csrf").hex() if token else secrets.token_hex(32)
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:8]
    return CSRFConfig(
        secret=secret,
        cookie_name=f"localflow_csrf_{fingerprint}",
        cookie_samesite="strict",
        header_name="x-csrftoken",
    )


def csrf_middleware(settings: Settings) -> DefineMiddleware:
    return DefineMiddleware(CSRFMiddleware, config=csrf_config(settings))

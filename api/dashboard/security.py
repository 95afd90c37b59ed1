"""Login and CSRF for the dashboard.

With an API token configured, the dashboard asks for it once and then keeps a session: a cookie
holding an expiry time signed with a key derived from the token (HttpOnly, SameSite=Strict). It
needs no server-side store, survives restarts, and stops working the moment the token changes.
Without a token (the loopback default) there is no login.

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
from urllib.parse import quote, urlsplit

from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie
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


def make_session(token: str, now: float | None = None) -> str:
    """A cookie value that proves its holder typed the token: '<expiry>.<signature>'."""
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    signature = hmac.new(_key(token, "session"), str(expires).encode(), "sha256").hexdigest()
    return f"{expires}.{signature}"


def session_valid(value: str | None, token: str, now: float | None = None) -> bool:
    """True for an unexpired cookie signed with this token."""
    if not value or value.count(".") != 1:
        return False
    expires, signature = value.split(".")
    if not expires.isdigit():
        return False
    expected = hmac.new(_key(token, "session"), expires.encode(), "sha256").hexdigest()
    if not hmac.compare_digest(signature, expected):
        return False
    return int(expires) > (time.time() if now is None else now)


def session_cookie(request: Request, value: str, max_age: int = SESSION_SECONDS) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE, value=value, max_age=max_age, path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )


def is_logged_in(request: Request, settings: Settings) -> bool:
    """True when no token is configured, or the request carries a valid session cookie."""
    token = settings.api_token
    return not token or session_valid(request.cookies.get(SESSION_COOKIE), token)


def require_login(request: Request) -> Response | None:
    """before_request hook: send a visitor without a session to the login page."""
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


class LoginThrottle:
    """At most `limit` wrong tokens per client address in `window` seconds: a token can be
    guessed only as fast as this allows. Per process, in memory; bounded in addresses kept."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: dict[str, list[float]] = {}

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        recent = [t for t in self._failures.get(client, ()) if now - t < self.window]
        self._failures[client] = recent
        if len(recent) < self.limit:
            return 0.0
        return self.window - (now - recent[0])

    def failed(self, client: str, now: float) -> None:
        if client not in self._failures and len(self._failures) >= self.max_clients:
            self._failures.pop(next(iter(self._failures)))  # forget the oldest client
        self._failures.setdefault(client, []).append(now)


def login_throttle(request: Request) -> LoginThrottle:
    state = request.app.state
    if "login_throttle" not in state:
        state["login_throttle"] = LoginThrottle()
    return state["login_throttle"]

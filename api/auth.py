"""Bearer-token authentication for everything but /health, the OpenAPI document and the dashboard.

With LOCALFLOW_API_TOKEN set, a request to /api/..., /metrics or /debug/... (and any route added
later: the rule is deny by default) needs `Authorization: Bearer <token>`. Without a token (the
loopback default, enforced by `localflow serve`) everything is open.

401 or 403 (RFC 9110 15.5.2-4, RFC 6750 3.1):
- 401 + `WWW-Authenticate: Bearer ...` when the request does not prove who it is: no credentials,
  or a wrong or malformed token (`error="invalid_token"`). A wrong token is still "not
  authenticated", not "authenticated but forbidden"; 401 tells the client to fix its credentials.
- 403 when the request is authenticated but this kind of credential may not do this: a dashboard
  session cookie may read through the API (GET/HEAD) but never change anything, because a
  browser attaches cookies on its own (CSRF) and never attaches an Authorization header.

Not covered here, each for a reason:
- /health: orchestrators probe it without credentials; it reveals only "ok" and a schema version.
- the OpenAPI document (/schema...): a description of the API, the same as the README.
- the dashboard (/ and /dashboard...): it has its own login page, session cookie and CSRF
  protection (api/dashboard/security.py) and must redirect a browser to the login page, not
  answer 401 JSON.
- a handler with opt `exclude_from_auth=True` takes care of itself.

The token is compared in constant time (shared/tokens.py: hmac.compare_digest over SHA-256
digests, so neither the content nor the length leaks through timing) and never logged or
echoed in an error.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from shared.settings import Settings
from shared.tokens import token_matches

EXCLUDE_OPT = "exclude_from_auth"
REALM = "localflow"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The scheme as OpenAPI describes it; protected controllers set `security=BEARER_SECURITY`.
BEARER_SCHEME_NAME = "bearerAuth"
BEARER_SECURITY = [{BEARER_SCHEME_NAME: []}]

# (connection, api token) -> does it carry a valid dashboard session?
SessionCheck = Callable[[ASGIConnection, str], bool]


def bearer_token(connection: ASGIConnection) -> str | None:
    """The token of an `Authorization: Bearer <token>` header ("" if malformed), else None."""
    header = connection.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None  # Basic or anything else: no bearer credentials were offered
    return token.strip()


def _settings(connection: ASGIConnection) -> Settings:
    return connection.app.state.settings


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path == "/dashboard" or path.startswith("/dashboard/")


def check(connection: ASGIConnection, session_check: SessionCheck | None = None) -> None:
    """Raise 401/403 unless the request may proceed. Usable as a Litestar guard body."""
    token = _settings(connection).api_token
    if not token:
        return
    given = bearer_token(connection)
    if given is not None:
        if given and token_matches(given, token):
            return
        raise NotAuthorizedException(
            detail="the bearer token is not valid for this server",
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
        )
    if session_check is not None and session_check(connection, token):
        if connection.scope.get("method", "GET") in SAFE_METHODS:
            return
        raise PermissionDeniedException(
            detail="a dashboard session may read through the API but not change anything; "
            "send Authorization: Bearer <token> (or use the dashboard's own forms)"
        )
    raise NotAuthorizedException(
        detail="authentication required: send Authorization: Bearer <LOCALFLOW_API_TOKEN>",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'},
    )


def cookie_session(cookie: str, valid: Callable[[str | None, str], bool]) -> SessionCheck:
    """A SessionCheck from a cookie name and a validator of (cookie value, api token)."""

    def check_session(connection: ASGIConnection, token: str) -> bool:
        return valid(connection.cookies.get(cookie), token)

    return check_session


def is_open_path(path: str, openapi_path: str) -> bool:
    """Paths the middleware leaves alone: the OpenAPI document and the dashboard."""
    schema = openapi_path.rstrip("/")
    return path == schema or path.startswith(schema + "/") or is_dashboard_path(path)


def open_operations(app: Litestar, openapi_path: str) -> set[tuple[str, str]]:
    """(OpenAPI path, METHOD) of every operation reachable without the token, for the docs."""
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if handler.opt.get(EXCLUDE_OPT) or is_open_path(route.path_format, openapi_path):
                found.update((route.path_format, m.upper()) for m in handler.http_methods)
    return found


class BearerAuth(ASGIMiddleware):
    """Deny by default: every HTTP route needs the token except those the module doc lists."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)
    exclude_opt_key = EXCLUDE_OPT

    def __init__(self, openapi_path: str = "/schema", session_check: SessionCheck | None = None):
        self.openapi_path = openapi_path.rstrip("/")
        self.session_check = session_check

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not is_open_path(scope["path"], self.openapi_path):
            check(ASGIConnection(scope), self.session_check)
        await next_app(scope, receive, send)

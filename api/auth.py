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

Every answer comes from shared/tokens.py, which the worker's own /metrics uses too: 401 with a
`WWW-Authenticate: Bearer` challenge, 429 with `Retry-After` once an address has sent too many
wrong tokens (API and dashboard login share one count per process), the right token always
accepted. The token is compared in constant time and never logged or echoed in an error.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from shared.settings import Settings
from shared.tokens import FailureThrottle, authenticate, bearer_of, challenge
from shared.tokens import token_matches as token_matches  # the one comparison, re-exported

EXCLUDE_OPT = "exclude_from_auth"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The scheme as OpenAPI describes it; protected controllers set `security=BEARER_SECURITY`.
BEARER_SCHEME_NAME = "bearerAuth"
BEARER_SECURITY = [{BEARER_SCHEME_NAME: []}]

# (connection, api token) -> does it carry a valid dashboard session?
SessionCheck = Callable[[ASGIConnection, str], bool]


def _settings(connection: ASGIConnection) -> Settings:
    return connection.app.state.settings


def throttle_of(state: State) -> FailureThrottle:
    """The process's one count of wrong tokens per address: the API's bearer check and the
    dashboard's login form both add to it and both obey it."""
    if "auth_throttle" not in state:
        state["auth_throttle"] = FailureThrottle(limit=state.settings.auth_failures)
    return state["auth_throttle"]


def client_address(connection: ASGIConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def is_dashboard_path(path: str) -> bool:
    return path == "/" or path == "/dashboard" or path.startswith("/dashboard/")


def check(connection: ASGIConnection, session_check: SessionCheck | None = None) -> None:
    """Raise 401/403/429 unless the request may proceed. Usable as a Litestar guard body."""
    token = _settings(connection).api_token
    if not token:
        return
    header = connection.headers.get("authorization")
    if (
        bearer_of(header) is None and session_check is not None
        and session_check(connection, token)
    ):
        if connection.scope.get("method", "GET") in SAFE_METHODS:
            return
        raise PermissionDeniedException(
            detail="a dashboard session may read through the API but not change anything; "
            "send Authorization: Bearer <token> (or use the dashboard's own forms)",
            headers=challenge("insufficient_scope"),
        )
    denial = authenticate(
        header, token, client_address(connection), throttle_of(connection.app.state),
        time.monotonic(),
    )
    if denial is not None:
        raise HTTPException(
            status_code=denial.status, detail=denial.detail, headers=denial.headers
        )


def cookie_session(
    cookie: str, valid: Callable[[ASGIConnection, str | None], bool]
) -> SessionCheck:
    """A SessionCheck from a cookie name and a validator of (connection, cookie value)."""

    def check_session(connection: ASGIConnection, token: str) -> bool:
        return valid(connection, connection.cookies.get(cookie))

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
        # No token configured: nothing to check, and no connection object to build for it.
        if scope["litestar_app"].state.settings.api_token and not is_open_path(
            scope["path"], self.openapi_path
        ):
            check(ASGIConnection(scope), self.session_check)
        await next_app(scope, receive, send)

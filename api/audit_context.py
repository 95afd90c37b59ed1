"""Who is acting, for the audit trail: set around every request that may change something.

The policy methods that record operator actions (shared/audit.py) read the current Actor; this
plain ASGI layer sets it from the request, so no handler has to pass it along:

- channel: `dashboard` for /dashboard... (its forms), `cli` when the request carries
  `LocalFlow-Client: cli` (the `localflow` command sends it), else `api`. The header is the
  client's word about itself, like a User-Agent: it says through what, not who.
- identity: never a secret. A SHA-256 fingerprint of the bearer token ("token 3f9a1c2e") or of
  the dashboard session cookie ("session 7b2d90aa"); "no token" when the server has none.

Reads (GET, HEAD, OPTIONS) change nothing and pass straight through. A write sets only a
function that works the actor out (headers, fingerprint), called if the request records an
action: a submission, the hot path, never calls it.
"""

from __future__ import annotations

from functools import partial

from litestar.types import ASGIApp, Receive, Scope, Send

from api.dashboard.security import SESSION_COOKIE
from shared.audit import Actor, fingerprint, reset_actor, set_actor
from shared.settings import Settings
from shared.tokens import bearer_of

CLIENT_HEADER = "LocalFlow-Client"
_CLIENT = CLIENT_HEADER.lower().encode()
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuditActor:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        token = set_actor(partial(actor_of, scope, bool(self.settings.api_token)))
        try:
            await self.app(scope, receive, send)
        finally:
            reset_actor(token)


def actor_of(scope: Scope, token_required: bool) -> Actor:
    headers = {k: v for k, v in scope["headers"] if k in (b"authorization", b"cookie", _CLIENT)}
    path = scope["path"]
    if path == "/dashboard" or path.startswith("/dashboard/"):
        session = _cookie(headers.get(b"cookie", b"").decode("latin-1"), SESSION_COOKIE)
        who = (fingerprint("session", session) if session
               else "no login" if not token_required else "no session")
        return Actor(channel="dashboard", identity=who)
    token = bearer_of(headers[b"authorization"].decode("latin-1")
                      if b"authorization" in headers else None)
    who = fingerprint("token", token) if token else "no token"
    cli = headers.get(_CLIENT, b"").decode("latin-1").strip().lower() == "cli"
    return Actor(channel="cli" if cli else "api", identity=who)


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None

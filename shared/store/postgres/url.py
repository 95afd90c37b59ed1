"""Turning a failure to reach PostgreSQL into one line a person can act on: what is wrong
(refused, unknown host, wrong password, no such database), the URL without its password,
and never a traceback. The URL's shape is checked before this by shared.store.check_db."""

from __future__ import annotations

from shared.store import password_of, redact


def explain(url: str, exc: BaseException) -> str:
    shown = redact(url)
    text = " ".join(str(exc).split())
    password = password_of(url)
    if password:
        text = text.replace(password, "***")
    lowered = text.lower()
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        reason = "wrong user name or password"
    elif "no password supplied" in lowered:
        reason = "the server wants a password and the URL has none"
    elif "database" in lowered and "does not exist" in lowered:
        reason = "no such database (create it first, e.g. with createdb)"
    elif "role" in lowered and "does not exist" in lowered:
        reason = "no such user"
    elif "connection refused" in lowered:
        reason = "connection refused: is PostgreSQL running and listening there?"
    elif "translate host name" in lowered or "name or service not known" in lowered:
        reason = "unknown host name"
    elif "timeout" in lowered or "timed out" in lowered:
        reason = "timed out: is the host reachable?"
    elif "invalid" in lowered and ("dsn" in lowered or "option" in lowered or "uri" in lowered):
        reason = "bad database URL"
    elif "shutting down" in lowered or "starting up" in lowered or "terminat" in lowered:
        reason = "the server is restarting or shutting down"
    else:
        reason = "cannot reach the database"
    return f"database {shown}: {reason} ({text})" if text else f"database {shown}: {reason}"

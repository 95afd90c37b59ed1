"""PostgreSQL connection URLs: recognising them, redacting them, and turning a failure to
connect into one line a person can act on (never a traceback, never the password)."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")


class ConnectFailed(RuntimeError):
    """The database cannot be reached at start-up; the message is one redacted line."""


def is_postgres_url(value: str) -> bool:
    return value.split("://", 1)[0].lower() in SCHEMES and "://" in value


def redact(url: str) -> str:
    """The URL with any password replaced by ***: safe for logs, /debug and error lines."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        # Unparseable (say, a port that is not a number): hide everything between :// and @.
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def check(url: str) -> SplitResult:
    """Raise ConnectFailed naming what is wrong with the URL's shape, before connecting."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise ConnectFailed(f"bad database URL {shown}: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise ConnectFailed(f"bad database URL {shown}: expected postgresql:// or postgres://")
    if not parts.hostname and "host=" not in parts.query:
        raise ConnectFailed(
            f"bad database URL {shown}: no host (expected postgresql://user:pass@host:port/db)"
        )
    if not parts.path.strip("/"):
        raise ConnectFailed(f"bad database URL {shown}: no database name after the host")
    del port
    return parts


def explain(url: str, exc: BaseException) -> str:
    """One line for a failure to connect to `url`, password redacted."""
    shown = redact(url)
    text = " ".join(str(exc).split())
    password = urlsplit(url).password if "://" in url else None
    if password:
        text = text.replace(password, "***")
    lowered = text.lower()
    if "password authentication failed" in lowered or "authentication failed" in lowered:
        reason = "wrong user name or password"
    elif "does not exist" in lowered and "database" in lowered:
        reason = "no such database (create it first, e.g. `createdb`)"
    elif "connection refused" in lowered:
        reason = "connection refused: is PostgreSQL running and listening there?"
    elif "could not translate host name" in lowered or "name or service not known" in lowered:
        reason = "unknown host name"
    elif "timeout" in lowered or "timed out" in lowered:
        reason = "timed out connecting: is the host reachable?"
    elif "invalid" in lowered and ("dsn" in lowered or "connection option" in lowered
                                   or "uri" in lowered):
        reason = "bad database URL"
    else:
        reason = "cannot connect"
    return f"cannot use database {shown}: {reason} ({text})"

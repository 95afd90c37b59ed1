"""Choosing and opening the storage backend from `--db` / LOCALFLOW_DB.

`postgresql://user:pass@host:port/dbname` (or `postgres://`) is PostgreSQL; anything else is a
SQLite file path (as it always was). The interface both implement: shared/store/base.py.
PostgreSQL support is an optional extra (`localflow[postgres]`, psycopg 3), imported only when a
PostgreSQL URL is given, so SQLite users never load it.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from shared.errors import BadDatabaseURL, StorageUnavailable
from shared.settings import Settings
from shared.store.base import Backend, Store

POSTGRES_SCHEMES = ("postgresql", "postgres")
_SECRET_PARAMS = {"password", "sslpassword"}


def is_postgres(db: str) -> bool:
    return urlsplit(db).scheme.lower() in POSTGRES_SCHEMES if "://" in db else False


def check_db(db: str) -> str:
    """Raise BadDatabaseURL (one line, no password) unless `db` is usable; returns it.

    A path is checked lightly (not empty); a URL must be postgresql:// or postgres:// with a
    valid port and a database name.
    """
    if not db.strip():
        raise BadDatabaseURL("--db is empty: give a SQLite file path or a postgresql:// URL")
    if "://" not in db:
        return db
    shown = redact(db)
    scheme = db.split("://", 1)[0].lower()
    if scheme not in POSTGRES_SCHEMES:
        raise BadDatabaseURL(
            f"--db {shown}: unsupported scheme {scheme!r}; give a SQLite file path or a "
            "postgresql://user:password@host:port/dbname URL"
        )
    try:
        parts = urlsplit(db)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError as exc:
        raise BadDatabaseURL(f"--db {shown}: {exc}") from None
    if not parts.path.strip("/"):
        raise BadDatabaseURL(
            f"--db {shown}: no database name; expected postgresql://user:password@host:port/dbname"
        )
    return db


def redact(db: str) -> str:
    """`db` without any password: safe for logs, error messages, /debug and the dashboard.

    A path is returned as is. From a URL, the password in user:password@ and any password=
    query parameter are dropped. A string that does not parse is reduced to its scheme.
    """
    if "://" not in db:
        return db
    try:
        parts = urlsplit(db)
        netloc = parts.netloc.rsplit("@", 1)
        if len(netloc) == 2:
            user = netloc[0].split(":", 1)[0]
            host = f"{user}@{netloc[1]}" if user else netloc[1]
        else:
            host = netloc[0]
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k.lower() not in _SECRET_PARAMS]
        )
        return urlunsplit((parts.scheme, host, parts.path, query, ""))
    except ValueError:
        return db.split("://", 1)[0] + "://(unparsable URL)"


def password_of(db: str) -> str | None:
    """The password in a URL, if any: given to the log redactor as a secret to mask."""
    if "://" not in db:
        return None
    try:
        parts = urlsplit(db)
        secrets = [parts.password] + [
            v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS
        ]
    except ValueError:
        return None
    return next((s for s in secrets if s), None)


def backend(settings: Settings) -> Backend:
    """The backend module for settings.db (raises BadDatabaseURL, StorageUnavailable)."""
    check_db(settings.db)
    if not is_postgres(settings.db):
        return cast(Backend, importlib.import_module("shared.store.sqlite"))
    if importlib.util.find_spec("psycopg") is None:
        raise StorageUnavailable(
            "PostgreSQL support needs the postgres extra: install localflow[postgres] "
            "(psycopg 3)"
        )
    try:
        return cast(Backend, importlib.import_module("shared.store.postgres"))
    except ImportError as exc:
        raise StorageUnavailable(f"PostgreSQL support is not available: {exc}") from None


async def migrate(settings: Settings) -> int:
    """Bring settings.db's schema up to date; returns the version."""
    return await backend(settings).migrate(settings)


async def open_store(settings: Settings, *, migrate_first: bool = True) -> Store:
    """Open settings.db (migrating it first unless told not to)."""
    chosen = backend(settings)
    if migrate_first:
        await chosen.migrate(settings)
    return await chosen.open(settings)


__all__ = ["Store", "backend", "check_db", "is_postgres", "migrate", "open_store",
           "password_of", "redact"]

"""Applies migrations/postgres/NNN_name.sql in order; the version is kept in a table.

Safe when several processes (on several hosts) start at the same moment: each takes one
transaction-scoped advisory lock before reading the version, so the others wait and then
find nothing to do. PostgreSQL's DDL is transactional, so a migration that fails halfway
leaves no trace, and the version row is written in the same transaction as the schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg

from shared.errors import SchemaTooNew, StorageUnavailable
from shared.store import check_db, redact
from shared.store.postgres.url import explain


def _find_migrations() -> Path:
    # A source checkout keeps them at the top level; a built wheel carries a copy in shared/.
    shared = Path(__file__).resolve().parents[2]
    for candidate in (shared.parent / "migrations", shared / "migrations_dist"):
        if (candidate / "postgres").is_dir():
            return candidate / "postgres"
    return shared.parent / "migrations" / "postgres"


MIGRATIONS_DIR = _find_migrations()
MIN_SERVER_VERSION = 130000  # libpq's server_version number: 13.0
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# Any constant will do, as long as every LocalFlow uses the same one: "LFmigrat" in ASCII.
_LOCK_KEY = 0x4C466D6967726174
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS localflow_schema (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def available(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration {path.name}: expected a name like 001_init.sql")
        found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def newest_version(directory: Path = MIGRATIONS_DIR) -> int:
    migrations = available(directory)
    return migrations[-1][0] if migrations else 0


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A synchronous connection, or StorageUnavailable with one redacted line."""
    check_db(url)
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.Error as exc:
        raise StorageUnavailable(explain(url, exc)) from None


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> int:
    """Bring the database to the newest schema; return its version."""
    migrations = available(directory)
    newest = migrations[-1][0] if migrations else 0
    try:
        return _migrate(url, migrations, newest)
    except psycopg.OperationalError as exc:  # lost mid-way: the transaction rolled back
        raise StorageUnavailable(explain(url, exc)) from None


def check_server(url: str, server_version: int) -> None:
    """Refuse a server older than the features the queries use (gen_random_uuid,
    pg_current_snapshot, DROP DATABASE ... FORCE in the tests): PostgreSQL 13."""
    if server_version < MIN_SERVER_VERSION:
        major = server_version // 10000 if server_version >= 100000 else server_version / 10000
        raise StorageUnavailable(
            f"database {redact(url)}: PostgreSQL {major:g} is too old; LocalFlow needs 13 or newer"
        )


def _migrate(url: str, migrations: list[tuple[int, Path]], newest: int) -> int:
    with connect(url) as conn, conn.transaction():
        check_server(url, conn.info.server_version)
        # Read first: a current schema needs no lock at all, so start-up never waits behind
        # another process that holds the migration lock (or a long transaction).
        if _current_version(conn) == newest:
            return newest
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(_VERSION_TABLE)
        row = conn.execute("SELECT coalesce(max(version), 0) FROM localflow_schema").fetchone()
        current = row[0] if row else 0
        if current > newest:
            raise SchemaTooNew(
                f"database {redact(url)} has schema version {current}, but this LocalFlow "
                f"knows only up to {newest}: upgrade LocalFlow, or point --db elsewhere"
            )
        for version, path in migrations[current:]:
            # No parameters: psycopg sends the file as one simple query, several statements.
            conn.execute(path.read_text().encode())
            conn.execute(
                "INSERT INTO localflow_schema (version, name) VALUES (%s, %s)",
                (version, path.stem),
            )
    return newest


def _current_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('localflow_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM localflow_schema").fetchone()
    return row[0] if row else 0


def schema_version(url: str) -> int:
    with connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('localflow_schema') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM localflow_schema").fetchone()
        return row[0] if row else 0

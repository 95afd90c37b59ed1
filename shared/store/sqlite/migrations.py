"""Applies migrations/sqlite/NNN_name.sql in order; the schema version is SQLite's user_version.

Safe when the API and the worker start at the same moment on one file: the check and the
migration run inside one BEGIN IMMEDIATE, so the second process waits, then finds nothing to do.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from shared.errors import SchemaTooNew, StorageUnavailable


def _find_migrations() -> Path:
    # A source checkout keeps them at the top level; a built wheel carries a copy in shared/.
    shared = Path(__file__).resolve().parents[2]
    for candidate in (shared.parent / "migrations", shared / "migrations_dist"):
        if (candidate / "sqlite").is_dir():
            return candidate / "sqlite"
    return shared.parent / "migrations" / "sqlite"


MIGRATIONS_DIR = _find_migrations()
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    path: Path

    def statements(self) -> list[str]:
        """Split into statements (executescript would COMMIT our transaction)."""
        statements, current = [], ""
        for line in self.path.read_text().splitlines(keepends=True):
            current += line
            if sqlite3.complete_statement(current):
                statements.append(current.strip())
                current = ""
        if current.strip() and not current.strip().startswith("--"):
            raise ValueError(f"{self.path.name}: unterminated statement at the end")
        return statements


def available(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration {path.name}: expected a name like 001_init.sql")
        found.append(Migration(int(match.group(1)), path))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


def migrate(db_path: str, directory: Path = MIGRATIONS_DIR, busy_seconds: float = 30.0) -> int:
    """Bring the database to the newest schema; return its version.

    Raises SchemaTooNew, or StorageUnavailable when the file cannot be opened or written.
    """
    try:
        return _migrate(db_path, directory, busy_seconds)
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"cannot migrate the database {db_path}: {exc}") from None


def _migrate(db_path: str, directory: Path, busy_seconds: float) -> int:
    migrations = available(directory)
    newest = migrations[-1].version if migrations else 0
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=busy_seconds)
    try:
        # Before any table exists (a new file) this makes SQLite able to hand freed pages back
        # to the file system (PRAGMA incremental_vacuum, after pruning); on a file that has
        # tables already it changes nothing (docs/retention.md).
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        deadline = time.monotonic() + busy_seconds
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current > newest:
                raise SchemaTooNew(
                    f"database {db_path} has schema version {current}, but this LocalFlow knows "
                    f"only up to {newest}: upgrade LocalFlow, or point --db at another file"
                )
            for migration in migrations[current:]:
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return newest
    finally:
        conn.close()


def schema_version(db_path: str) -> int:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def newest_version(directory: Path = MIGRATIONS_DIR) -> int:
    migrations = available(directory)
    return migrations[-1].version if migrations else 0

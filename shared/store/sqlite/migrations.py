"""Applies migrations/sqlite/NNN_name.sql in order; the schema version is SQLite's user_version.

Start-up must never die over a lock another process holds. So the version is read first,
without any write lock (WAL readers never wait for a writer): a current schema means nothing to
do and no lock taken. Only when there is something to migrate does it take the write lock
(switching to WAL, then BEGIN IMMEDIATE), waiting as long as it takes, logging that it waits
and why. The check and the migration run inside one BEGIN IMMEDIATE, so a second process
starting at the same moment waits, then finds nothing to do.

A new database file is created readable by its owner only (0600): it holds every payload and
result. SQLite gives its -wal and -shm files the database file's mode.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from shared.errors import SchemaTooNew, StorageError, StorageUnavailable

T = TypeVar("T")
log = structlog.get_logger("localflow.migrate")
WAIT_LOG_EVERY = 10.0  # seconds between "still waiting for the lock" lines
FILE_MODE = 0o600


class MigrationStopped(StorageError):
    """The process was asked to stop while it waited for the lock to migrate."""


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


def migrate(
    db_path: str, directory: Path = MIGRATIONS_DIR, *, stop: threading.Event | None = None
) -> int:
    """Bring the database to the newest schema; return its version.

    Waits for another process's write lock for as long as it is held (until `stop` is set).
    Raises SchemaTooNew, MigrationStopped, or StorageUnavailable when the file cannot be
    opened or written.
    """
    try:
        return _migrate(db_path, directory, stop or threading.Event())
    except sqlite3.Error as exc:
        raise StorageUnavailable(f"cannot migrate the database {db_path}: {exc}") from None
    except OSError as exc:  # creating the file: a missing folder, no permission
        raise StorageUnavailable(
            f"cannot create the database {db_path}: {exc.strerror or exc}"
        ) from None


def create_private(db_path: str) -> None:
    """Create the database file 0600 if it does not exist (SQLite would make it 0644 less
    the umask); -wal and -shm inherit its mode. An existing file's mode is left alone."""
    if db_path == ":memory:" or db_path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def _migrate(db_path: str, directory: Path, stop: threading.Event) -> int:
    migrations = available(directory)
    newest = migrations[-1].version if migrations else 0
    create_private(db_path)
    # busy_timeout 0: every wait below is ours, so it can log and be stopped.
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=0)
    try:
        current = _user_version(conn, db_path, stop)  # a read: no write lock
        _refuse_too_new(db_path, current, newest)
        if current == newest and _journal_mode(conn, db_path, stop) == "wal":
            return newest  # nothing to do, and no write lock taken
        waiter = _Waiter(db_path, stop)
        # Before any table exists (a new file) this makes SQLite able to hand freed pages back
        # to the file system (PRAGMA incremental_vacuum, after pruning); on a file that has
        # tables already it changes nothing (docs/retention.md).
        waiter.retry(lambda: conn.execute("PRAGMA auto_vacuum=INCREMENTAL").fetchall())
        waiter.retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
        waiter.retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            _refuse_too_new(db_path, current, newest)
            for migration in migrations[current:]:
                for statement in migration.statements():
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if waiter.waited:
            log.info("database migrated after waiting for the lock", db=db_path,
                     waited=round(waiter.waited, 1), version=newest)
        return newest
    finally:
        conn.close()


def _refuse_too_new(db_path: str, current: int, newest: int) -> None:
    if current > newest:
        raise SchemaTooNew(
            f"database {db_path} has schema version {current}, but this LocalFlow knows "
            f"only up to {newest}: upgrade LocalFlow, or point --db at another file"
        )


def _user_version(conn: sqlite3.Connection, db_path: str, stop: threading.Event) -> int:
    # A rollback-journal database (a new file) can be briefly locked for reading while
    # another process switches it to WAL: wait for that too.
    return _Waiter(db_path, stop).retry(
        lambda: conn.execute("PRAGMA user_version").fetchone()[0]
    )


def _journal_mode(conn: sqlite3.Connection, db_path: str, stop: threading.Event) -> str:
    return str(_Waiter(db_path, stop).retry(
        lambda: conn.execute("PRAGMA journal_mode").fetchone()[0]
    )).lower()


class _Waiter:
    """Retries a step while another process holds the lock it needs, logging why it waits."""

    def __init__(self, db_path: str, stop: threading.Event) -> None:
        self.db_path = db_path
        self.stop = stop
        self.waited = 0.0

    def retry(self, step: Callable[[], T]) -> T:
        began = time.monotonic()
        logged = float("-inf")
        while True:
            try:
                return step()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            waited = time.monotonic() - began
            self.waited = max(self.waited, waited)
            if waited - logged >= WAIT_LOG_EVERY:
                logged = waited
                log.warning(
                    "waiting for the database's write lock to migrate it",
                    db=self.db_path, waited=round(waited, 1),
                    why="another process holds the write lock (a long transaction, a backup, "
                        "or another LocalFlow migrating); start-up continues once it is free",
                )
            if self.stop.wait(0.02):
                raise MigrationStopped(
                    f"stopped while waiting for the write lock of {self.db_path} to migrate it"
                )


def schema_version(db_path: str) -> int:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def newest_version(directory: Path = MIGRATIONS_DIR) -> int:
    migrations = available(directory)
    return migrations[-1].version if migrations else 0

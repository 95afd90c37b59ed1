"""migrations/postgres applied by shared/store/postgres/migrate.py against a real server."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from shared.store.postgres import schema as migrate
from tests.pg import Server
from tests.procs import REPO


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrates_an_empty_database_to_the_newest_version(pg_server: Server) -> None:
    with pg_server.database(migrated=False) as url:
        assert migrate.schema_version(url) == 0
        newest = migrate.newest_version()
        assert newest >= 5  # 004: task events, 005: queues
        assert migrate.migrate(url) == newest
        assert migrate.schema_version(url) == newest
        assert {"tasks", "task_attempts", "workers", "schedules", "localflow_schema"} <= (
            _tables(url)
        )
        assert migrate.migrate(url) == newest  # again: nothing to do


def test_same_indexes_as_sqlite(pg_url: str) -> None:
    """Every index the SQLite schema defines exists here too, by the same name."""
    import re

    sqlite_dir = next(
        d for d in (REPO / "migrations" / "sqlite", REPO / "migrations") if any(d.glob("0*.sql"))
    )
    names = set()
    for path in sqlite_dir.glob("0*.sql"):
        names |= set(re.findall(r"CREATE (?:UNIQUE )?INDEX (\w+)", path.read_text()))
    with psycopg.connect(pg_url) as conn:
        found = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'").fetchall()}
    assert names and names <= found


def test_refuses_a_newer_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO localflow_schema (version, name) VALUES (99, '099_future')")
    newest = migrate.newest_version()
    with pytest.raises(migrate.SchemaTooNew, match=rf"schema version 99.*only up to {newest}"):
        migrate.migrate(pg_url)


def test_a_failing_migration_leaves_no_trace(pg_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory)
    newest = migrate.newest_version()
    (directory / f"{newest + 1:03d}_broken.sql").write_text(
        "CREATE TABLE half_done (id integer);\nSELECT no_such_function();\n"
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate.migrate(pg_url, directory)
    assert "half_done" not in _tables(pg_url)
    assert migrate.schema_version(pg_url) == newest


@pytest.mark.e2e  # starts processes
def test_concurrent_migrations_from_several_processes(pg_server: Server) -> None:
    """Six processes migrate one empty database at once: one applies, the rest wait and find
    nothing to do; none fails."""
    with pg_server.database(migrated=False) as url:
        code = (
            "import sys; from shared.store.postgres import schema as migrate; "
            "print(migrate.migrate(sys.argv[1]))"
        )
        procs = [
            subprocess.Popen([sys.executable, "-c", code, url], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(6)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 6, [e.decode() for _, e in results]
        assert [o.decode().strip() for o, _ in results] == [str(migrate.newest_version())] * 6
        with psycopg.connect(url) as conn:
            versions = [r[0] for r in conn.execute(
                "SELECT version FROM localflow_schema ORDER BY version").fetchall()]
        assert versions == list(range(1, migrate.newest_version() + 1))


def test_a_current_schema_is_not_locked_to_be_checked(pg_url: str) -> None:
    """Start-up on a current database takes no lock: another session holding the migration
    lock (say, a process migrating another LocalFlow's schema) does not hold it up."""
    import threading

    holder = psycopg.connect(pg_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate._LOCK_KEY,))
        done = threading.Event()
        result: list[int] = []
        worker = threading.Thread(target=lambda: (result.append(migrate.migrate(pg_url)),
                                                  done.set()), daemon=True)
        worker.start()
        assert done.wait(30), "migrate waited for the lock although nothing was to do"
        assert result == [migrate.newest_version()]
    finally:
        holder.close()

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

NEWEST = len(migrate.available())  # the newest schema version this checkout migrates to


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_migrates_an_empty_database_to_the_newest_version(pg_server: Server) -> None:
    with pg_server.database(migrated=False) as url:
        assert migrate.schema_version(url) == 0
        assert migrate.migrate(url) == migrate.newest_version() == NEWEST
        assert migrate.schema_version(url) == NEWEST
        assert {"tasks", "task_attempts", "workers", "schedules", "localflow_schema"} <= (
            _tables(url)
        )
        assert migrate.migrate(url) == NEWEST  # again: nothing to do


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
    with pytest.raises(migrate.SchemaTooNew, match=rf"schema version 99.*only up to {NEWEST}"):
        migrate.migrate(pg_url)


def test_a_failing_migration_leaves_no_trace(pg_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, directory)
    (directory / f"{NEWEST + 1:03d}_broken.sql").write_text(
        "CREATE TABLE half_done (id integer);\nSELECT no_such_function();\n"
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        migrate.migrate(pg_url, directory)
    assert "half_done" not in _tables(pg_url)
    assert migrate.schema_version(pg_url) == NEWEST


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
        assert [o.decode().strip() for o, _ in results] == [str(NEWEST)] * 6
        with psycopg.connect(url) as conn:
            versions = [r[0] for r in conn.execute(
                "SELECT version FROM localflow_schema ORDER BY version").fetchall()]
        assert versions == list(range(1, NEWEST + 1))

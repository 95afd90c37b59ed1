"""The contract suite runs every case on every backend: `store` (and the `queue`,
`schedules` and `settings` built on it) is parametrized over SQLite (a real file) and
PostgreSQL (a database of the test's own on the session's server, tests/pg.py). Like River's
riverdrivertest and Huey's StorageTests: one suite, every driver.

Cases only one engine has (SQLite's write lock, PRAGMAs, wake sockets; PostgreSQL's
SKIP LOCKED, LISTEN/NOTIFY, reconnects) live in tests/sqlite/ and tests/postgres/.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from shared.settings import Settings
from shared.store import is_postgres, open_store
from shared.store.base import Store

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db(backend: str, request: pytest.FixtureRequest) -> str:
    """--db for this case: a migrated SQLite file, or a migrated PostgreSQL database's URL
    (the PostgreSQL cases skip, saying why, where no server can be had)."""
    if backend == "sqlite":
        return str(request.getfixturevalue("db_path"))
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(db: str) -> Settings:
    return Settings(db=db, lease=30.0, retry_base=2.0, retry_max=3600.0, synchronous="NORMAL")


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    opened = await open_store(settings, migrate_first=False)
    yield opened
    await opened.close()


@pytest.fixture
async def another_store(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """Opens more stores on the same database: what another process (or host) would have."""
    opened: list[Store] = []

    async def open_one() -> Store:
        s = await open_store(settings, migrate_first=False)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        await s.close()


@pytest.fixture
def rows(db: str) -> Callable[..., list[tuple[Any, ...]]]:
    """rows(sql, *params): a raw read for checking what the database holds, written once
    with `?` placeholders and run on whichever engine backs this case."""

    def run(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if is_postgres(db):
            import psycopg

            with psycopg.connect(db) as conn:
                return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params)]
        with sqlite3.connect(db) as conn:
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]

    return run

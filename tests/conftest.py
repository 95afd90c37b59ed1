"""Shared fixtures: real SQLite files built from migrations/sqlite/, the store and queue on
them, a clock tests can move, and real LocalFlow processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from shared.clock import FakeClock
from shared.queue import Queue
from shared.schedules import Schedules
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore, migrations
from tests import procs

# PostgreSQL fixtures (pg_server, pg_url): a throwaway cluster or LOCALFLOW_TEST_PG_URL.
pytest_plugins = ["tests.pg"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "lf.db"
    migrations.migrate(str(path))
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=str(db_path), lease=30.0, retry_base=2.0, retry_max=3600.0)


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    """An opened store on a real, migrated file (the contract tests parametrize this)."""
    opened = await SQLiteStore.open(str(db_path), synchronous="NORMAL")
    yield opened
    await opened.close()


@pytest.fixture
async def queue(store: SQLiteStore, clock: FakeClock, settings: Settings) -> Queue:
    return Queue(store, clock, settings)


@pytest.fixture
def schedules(queue: Queue) -> Schedules:
    return Schedules(queue)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[procs.Proc]:
    """A real `localflow serve` on a free loopback port and its own database file."""
    proc = procs.start("serve", tmp_path / "serve.db")
    yield proc
    proc.stop()


@pytest.fixture
def client(server: procs.Proc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c

"""Shared fixtures: real SQLite files built from migrations/, a clock tests can move, and
real LocalFlow processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from shared import migrate
from shared.clock import FakeClock
from shared.db import Database
from shared.queue import Queue
from shared.settings import Settings
from tests import procs

# PostgreSQL fixtures (pg_server, pg_url): a throwaway cluster or LOCALFLOW_TEST_PG_URL.
pytest_plugins = ["tests.pg"]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "lf.db"
    migrate.migrate(str(path))
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db=str(db_path), lease=30.0, retry_base=2.0, retry_max=3600.0)


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(str(db_path), synchronous="NORMAL")
    yield database
    await database.close()


@pytest.fixture
async def queue(db: Database, clock: FakeClock, settings: Settings) -> Queue:
    return Queue(db, clock, settings)


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

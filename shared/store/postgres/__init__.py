"""The PostgreSQL store: psycopg 3 (async, with its pool), the optional extra
`localflow[postgres]`. Claims use FOR UPDATE SKIP LOCKED, wake-ups LISTEN/NOTIFY; the
queries are in shared/sql/postgres/*.sql, the schema in migrations/postgres/."""

from __future__ import annotations

import asyncio

from shared.settings import Settings
from shared.store.postgres import schema
from shared.store.postgres.store import PostgresStore


async def migrate(settings: Settings) -> int:
    """Bring the schema to the newest version (shared/store/base.py Backend.migrate)."""
    # psycopg's synchronous connection, on a thread: migrate also runs from the CLI, and a
    # few statements once per start need no pool.
    return await asyncio.to_thread(schema.migrate, settings.db)


async def open(settings: Settings) -> PostgresStore:
    """Open a migrated database (shared/store/base.py Backend.open)."""
    return await PostgresStore.open(settings)


__all__ = ["PostgresStore", "migrate", "open"]

"""The SQLite backend (the embedded default): one file, WAL, one writer thread per process.

Module-level `migrate` and `open` are the backend contract of shared/store/base.py (Backend).
"""

from __future__ import annotations

import asyncio

from shared.settings import Settings
from shared.store.sqlite import migrations
from shared.store.sqlite.store import SQLiteStore


async def migrate(settings: Settings) -> int:
    return await asyncio.to_thread(migrations.migrate, settings.db)


async def open(settings: Settings) -> SQLiteStore:
    return await SQLiteStore.open(settings.db, synchronous=settings.synchronous)


__all__ = ["SQLiteStore", "migrate", "open"]
